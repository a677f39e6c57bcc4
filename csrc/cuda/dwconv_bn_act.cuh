// CUDA kernels of dwconv_bn_act, forward and backward, with their launch logic: grid-stride __global__
// shells around the shared bodies of csrc/kernels/dwconv_bn_act.h, the pack-width choice with its
// alignment fallback, kernel selection and dtype dispatch. Built twice from this one text (see
// csrc/cuda/launch.cuh): by nvcc in dwconv_bn_act_cuda.cu, and by the host compiler in
// csrc/emu/dwconv_bn_act_emu.cpp, where the kernels run through the CUDA emulation (backend "cuda_emu").
//
// One thread per output (NCHW) or per 16-byte pack of channels of one output pixel (channels_last,
// vector loads). float64 is not instantiated: it is a checking dtype, served by the cpu and reference
// backends.
#pragma once

#include "cuda/launch.cuh"
#include "kernels/dwconv_bn_act.h"

namespace dlf::DLF_GPU_NS {
namespace dwconv {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 16;

template <typename T, int V, int KT>
__global__ void __launch_bounds__(kThreads) fwd_nhwc_kernel(DwconvParams p, int64_t total) {
  const int64_t packs = p.C / V;
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const int64_t cp = idx % packs;
    int64_t r = idx / packs;
    const int64_t wo = r % p.Wo;
    r /= p.Wo;
    dwconv_fwd_nhwc_body<T, V, KT, 1>(p, r / p.Ho, r % p.Ho, wo, wo + 1, cp * V, cp * V + V);
  }
}

template <typename T, int S>
__global__ void __launch_bounds__(kThreads) fwd_nchw_kernel(DwconvParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const int64_t wo = idx % p.Wo;
    int64_t r = idx / p.Wo;
    const int64_t ho = r % p.Ho;
    r /= p.Ho;
    dwconv_fwd_nchw_body<T, 1, S>(p, r / p.C, r % p.C, ho, wo);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_gpre_kernel(DwconvBwdParams q, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { dwconv_bwd_gpre_body<T>(q, idx); }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_dx_kernel(DwconvBwdParams q, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { dwconv_bwd_dx_body<T>(q, idx); }
}

template <typename T, int S>
__global__ void __launch_bounds__(kThreads) bwd_params_kernel(DwconvBwdParams q, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { dwconv_bwd_params_body<T, S>(q, idx); }
}

template <typename T, int V>
void forward_nhwc(const DwconvParams& p, void* stream) {
  const int64_t total = p.N * p.Ho * p.Wo * (p.C / V);
  const unsigned grid = grid_for(total, kThreads, kMaxBlocks);
  if constexpr (V == 1) {
    // The unaligned fallback: runtime k keeps it small (unrolled k = 7 spilled for 16-bit types).
    launch_kernel(fwd_nhwc_kernel<T, 1, 0>, grid, kThreads, 0, stream, p, total);
  } else if (p.K == 3) {
    // k = 3 (every DeepLab depthwise conv) is unrolled; unrolled k = 5 / 7 spilled on sm_80, so they loop.
    launch_kernel(fwd_nhwc_kernel<T, V, 3>, grid, kThreads, 0, stream, p, total);
  } else {
    launch_kernel(fwd_nhwc_kernel<T, V, 0>, grid, kThreads, 0, stream, p, total);
  }
}

template <typename T>
void forward(const DwconvParams& p, void* stream) {
  if (p.channels_last) {
    // The entry point blocked the weight by the pack width dwconv_bn_act_weight_block chose.
    constexpr int V = DeviceLanes<T>::value;
    if (p.w_block == V) {
      forward_nhwc<T, V>(p, stream);
    } else {
      TORCH_CHECK(p.w_block == 1, "dwconv_bn_act: unexpected weight blocking ", p.w_block);
      forward_nhwc<T, 1>(p, stream);
    }
  } else {
    const int64_t total = p.N * p.C * p.Ho * p.Wo;
    const unsigned grid = grid_for(total, kThreads, kMaxBlocks);
    if (p.stride == 1) {
      launch_kernel(fwd_nchw_kernel<T, 1>, grid, kThreads, 0, stream, p, total);
    } else {
      launch_kernel(fwd_nchw_kernel<T, 2>, grid, kThreads, 0, stream, p, total);
    }
  }
  check_launch("dwconv_bn_act");
}

template <typename T>
void backward(const DwconvBwdParams& q, void* stream) {
  const DwconvParams& p = q.f;
  const int64_t outs = p.N * p.C * p.Ho * p.Wo;
  launch_kernel(bwd_gpre_kernel<T>, grid_for(outs, kThreads, kMaxBlocks), kThreads, 0, stream, q, outs);
  check_launch("dwconv_bn_act_backward");
  const int64_t ins = p.N * p.C * p.H * p.W;
  launch_kernel(bwd_dx_kernel<T>, grid_for(ins, kThreads, kMaxBlocks), kThreads, 0, stream, q, ins);
  check_launch("dwconv_bn_act_backward");
  const int64_t slots = p.C * (static_cast<int64_t>(p.K) * p.K + 2);
  const unsigned grid = grid_for(slots, kThreads, kMaxBlocks);
  if (p.stride == 1) {
    launch_kernel(bwd_params_kernel<T, 1>, grid, kThreads, 0, stream, q, slots);
  } else {
    launch_kernel(bwd_params_kernel<T, 2>, grid, kThreads, 0, stream, q, slots);
  }
  check_launch("dwconv_bn_act_backward");
}

}  // namespace dwconv

int64_t dwconv_bn_act_weight_block(c10::ScalarType dtype, int64_t C, const void* x, const void* y) {
  const int64_t V = 16 / static_cast<int64_t>(c10::elementSize(dtype));
  // Packs must not straddle pixels and must be 16-byte aligned: C % V == 0 and aligned base pointers.
  return (C % V == 0 && aligned(x, 16) && aligned(y, 16)) ? V : 1;
}

void dwconv_bn_act_forward(const DwconvParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "dwconv_bn_act", [&](auto tag) { dwconv::forward<decltype(tag)>(p, stream); });
}

void dwconv_bn_act_backward(const DwconvBwdParams& q, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "dwconv_bn_act_backward",
                       [&](auto tag) { dwconv::backward<decltype(tag)>(q, stream); });
}

}  // namespace dlf::DLF_GPU_NS
