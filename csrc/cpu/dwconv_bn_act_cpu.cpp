// CPU launchers of dwconv_bn_act: the shared bodies of csrc/kernels/dwconv_bn_act.h over at::parallel_for.
// Work items are coarser than the GPU's (a row of outputs instead of one), so each call amortizes its
// tap-range arithmetic and the inner loops vectorize: over channels (AVX2 packs) for channels_last,
// over a row of outputs for NCHW.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "cpu/launchers.h"
#include "kernels/dwconv_bn_act.h"

namespace dlf::DLF_CPU_NS {
namespace {

// About this many output elements per parallel chunk: large enough to hide the scheduling cost,
// small enough to balance two to a few dozen threads on one DeepLab feature map.
constexpr int64_t kChunkOutputs = 16384;
// Channels per channels_last work item. All of them: a pixel's channels are contiguous, and splitting them
// into blocks makes every tap a short strided access, which thrashes L1/L2 sets when C * 4 bytes is a
// multiple of 4 KiB (C = 256, 2048: measured 2-4x slower).
constexpr int64_t kChannelBlock = int64_t{1} << 40;
// AVX2 packs in flight per channels_last step: independent FMA chains hide the FMA latency.
constexpr int kPacksPerStep = 4;
// Outputs per NCHW work item (the body's accumulator row).
constexpr int kRowTile = 64;

int64_t grain_for(int64_t outputs_per_item) {
  return std::max<int64_t>(1, kChunkOutputs / std::max<int64_t>(1, outputs_per_item));
}

template <typename T, int KT>
void forward_nhwc(const DwconvParams& p) {
  constexpr int V = HostLanes<T>::value;
  TORCH_CHECK(p.w_block == V * kPacksPerStep, "dwconv_bn_act: weight blocked by ", p.w_block, ", expected ",
              V * kPacksPerStep);
  const int64_t blocks = (p.C + kChannelBlock - 1) / kChannelBlock;
  const int64_t items = p.N * p.Ho * blocks;
  at::parallel_for(0, items, grain_for(p.Wo * std::min(p.C, kChannelBlock)), [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      // ho runs fastest: consecutive items of one channel block share input rows (reuse in L1/L2).
      const int64_t ho = it % p.Ho, r = it / p.Ho;
      const int64_t blk = r % blocks, n = r / blocks;
      const int64_t c0 = blk * kChannelBlock, c1 = std::min(p.C, c0 + kChannelBlock);
      dwconv_fwd_nhwc_body<T, V, KT, kPacksPerStep>(p, n, ho, 0, p.Wo, c0, c1);
    }
  });
}

// Packs per step of the paired 3x3 walk: 2 packs x 2 outputs = 4 accumulators, with 6 weight registers.
constexpr int kPairPacks = 2;

template <typename T>
void forward_nhwc_pairs(const DwconvParams& p) {
  constexpr int V = HostLanes<T>::value;
  TORCH_CHECK(p.w_block == V * kPacksPerStep, "dwconv_bn_act: weight blocked by ", p.w_block, ", expected ",
              V * kPacksPerStep);
  at::parallel_for(0, p.N * p.Ho, grain_for(p.Wo * p.C), [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it)
      dwconv_fwd_nhwc_pair_body<T, V, kPairPacks>(p, it / p.Ho, it % p.Ho, 0, p.C);
  });
}

template <typename T, int S>
void forward_nchw(const DwconvParams& p) {
  TORCH_CHECK(p.w_block == 1, "dwconv_bn_act: NCHW expects an unblocked weight");
  const int64_t tiles = (p.Wo + kRowTile - 1) / kRowTile;
  const int64_t items = p.N * p.C * p.Ho * tiles;
  at::parallel_for(0, items, grain_for(std::min<int64_t>(p.Wo, kRowTile)), [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t tile = it % tiles;
      int64_t r = it / tiles;
      const int64_t ho = r % p.Ho;
      r /= p.Ho;
      dwconv_fwd_nchw_body<T, kRowTile, S>(p, r / p.C, r % p.C, ho, tile * kRowTile);
    }
  });
}

template <typename T>
void forward(const DwconvParams& p) {
  if (p.channels_last) {
    // Paired outputs measured faster on dilated and wide (>= 512 channel) maps: 2048x33x33 at rate 12/18
    // 1.2-1.3x, 2048x65x65 rate 12 1.37x, 728x33x33 1.2x; slower on narrow undilated high-resolution maps
    // (128x257x257: 6.8 vs 4.6 ms, 304x129x129: 3.5 vs 2.7 ms), where the per-pixel walk streams better.
    if (p.K == 3 && p.stride == 1 && (p.dilation >= 2 || p.C >= 512)) return forward_nhwc_pairs<T>(p);
    switch (p.K) {
      case 3: return forward_nhwc<T, 3>(p);
      case 5: return forward_nhwc<T, 5>(p);
      case 7: return forward_nhwc<T, 7>(p);
      default: return forward_nhwc<T, 0>(p);
    }
  }
  if (p.stride == 1) return forward_nchw<T, 1>(p);
  return forward_nchw<T, 2>(p);
}

template <typename T>
void backward(const DwconvBwdParams& q) {
  const DwconvParams& p = q.f;
  const int64_t KK = static_cast<int64_t>(p.K) * p.K;
  const int64_t outs = p.N * p.C * p.Ho * p.Wo;
  at::parallel_for(0, outs, grain_for(KK), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dwconv_bwd_gpre_body<T>(q, i);
  });
  const int64_t ins = p.N * p.C * p.H * p.W;
  at::parallel_for(0, ins, grain_for(KK), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dwconv_bwd_dx_body<T>(q, i);
  });
  const int64_t slots = p.C * (KK + 2);
  at::parallel_for(0, slots, grain_for(p.N * p.Ho * p.Wo), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (p.stride == 1) {
        dwconv_bwd_params_body<T, 1>(q, i);
      } else {
        dwconv_bwd_params_body<T, 2>(q, i);
      }
    }
  });
}

}  // namespace

int64_t dwconv_bn_act_cpu_weight_block(c10::ScalarType dtype) {
  return dtype == c10::ScalarType::Double ? HostLanes<double>::value * kPacksPerStep
                                          : HostLanes<float>::value * kPacksPerStep;
}

void dwconv_bn_act_cpu(const DwconvParams& p, c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return forward<float>(p);
    case c10::ScalarType::Double: return forward<double>(p);
    case c10::ScalarType::Half: return forward<c10::Half>(p);
    case c10::ScalarType::BFloat16: return forward<c10::BFloat16>(p);
    default: TORCH_CHECK(false, "dwconv_bn_act: unsupported dtype ", dtype);
  }
}

void dwconv_bn_act_backward_cpu(const DwconvBwdParams& q, c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return backward<float>(q);
    case c10::ScalarType::Double: return backward<double>(q);
    case c10::ScalarType::Half: return backward<c10::Half>(q);
    case c10::ScalarType::BFloat16: return backward<c10::BFloat16>(q);
    default: TORCH_CHECK(false, "dwconv_bn_act_backward: unsupported dtype ", dtype);
  }
}

}  // namespace dlf::DLF_CPU_NS
