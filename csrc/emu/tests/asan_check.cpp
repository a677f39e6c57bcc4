// Memory check of every emulated CUDA kernel: a small executable (not part of deeplab_fast._C) built with -fsanitize=address together
// with the emulation build of the kernels (csrc/emu/*_emu.cpp, runtime.cpp) and driven by
// tests/test_cuda_emu_runtime.py. Every buffer is a heap allocation of exactly the size the kernel may touch,
// so a read or write one element outside any of them stops the run with AddressSanitizer's report.
//
//   asan_check           run every kernel path on small inputs; prints "ok <cases>" and exits 0
//   asan_check --broken  the same first case with x one element short: must be caught (the check of the check)
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/launchers.h"

namespace {

using dlf::DwconvBwdParams;
using dlf::DwconvParams;
using dlf::UpsampleClassParams;
using dlf::UpsampleConcatParams;

int g_cases = 0;

template <typename T>
std::vector<T> filled(size_t n, float base) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<T>(base + 0.25f * static_cast<float>(i % 13) - 1.5f);
  return v;
}

// A buffer of `n` elements whose data starts `offset` elements into its allocation (offset 1 breaks the
// 16-byte alignment of vector accesses, as a sliced tensor does); nothing beyond the n elements exists.
template <typename T>
struct Buffer {
  std::vector<T> storage;
  size_t offset;
  Buffer(size_t n, size_t off, float base) : storage(filled<T>(n + off, base)), offset(off) {}
  T* data() { return storage.data() + offset; }
};

int64_t out_size(int64_t size, int64_t stride) { return (size - 1) / stride + 1; }

template <typename T>
void dwconv_case(c10::ScalarType dtype, bool channels_last, int64_t N, int64_t C, int64_t H, int64_t W, int K,
                 int stride, int64_t dilation, size_t x_offset, bool broken) {
  const int64_t Ho = out_size(H, stride), Wo = out_size(W, stride);
  const int64_t d = std::min<int64_t>(dilation, std::max(H, W));
  const size_t nx = static_cast<size_t>(N * C * H * W), ny = static_cast<size_t>(N * C * Ho * Wo);
  Buffer<T> x(broken ? nx - 1 : nx, x_offset, 0.5f);
  Buffer<T> y(ny, x_offset, 0.f);
  const int64_t w_block = channels_last ? dlf::emu::dwconv_bn_act_weight_block(dtype, C, x.data(), y.data()) : 1;
  const int64_t blocks = (C + w_block - 1) / w_block;
  std::vector<float> w = filled<float>(static_cast<size_t>(blocks * K * K * w_block), 0.1f);
  std::vector<float> scale = filled<float>(static_cast<size_t>(C), 1.f), shift = filled<float>(C, 0.f);
  DwconvParams p{};
  p.x = x.data(), p.w = w.data(), p.scale = scale.data(), p.shift = shift.data(), p.y = y.data();
  p.N = N, p.C = C, p.H = H, p.W = W, p.Ho = Ho, p.Wo = Wo;
  if (channels_last) {
    p.xs_n = H * W * C, p.xs_c = 1, p.xs_h = W * C, p.xs_w = C;
    p.ys_n = Ho * Wo * C, p.ys_c = 1, p.ys_h = Wo * C, p.ys_w = C;
  } else {
    p.xs_n = C * H * W, p.xs_c = H * W, p.xs_h = W, p.xs_w = 1;
    p.ys_n = C * Ho * Wo, p.ys_c = Ho * Wo, p.ys_h = Wo, p.ys_w = 1;
  }
  p.w_block = w_block, p.dilation = d, p.pad = d * (K - 1) / 2, p.K = K, p.stride = stride, p.act = 1;
  p.channels_last = channels_last;
  dlf::emu::dwconv_bn_act_forward(p, dtype, nullptr);
  ++g_cases;
  if (broken) return;

  // Backward: the plain (C, K*K) weight, fp32 temporaries per output, gradients per input and parameter.
  std::vector<float> w1 = filled<float>(static_cast<size_t>(C * K * K), 0.1f);
  Buffer<T> go(ny, 0, 0.3f), gx(nx, 0, 0.f);
  std::vector<float> gpre(ny), gprod(ny), gparams(static_cast<size_t>(C * (K * K + 2)));
  DwconvBwdParams q{};
  q.f = p;
  q.f.w = w1.data(), q.f.w_block = 1, q.f.x = x.data();
  q.go = go.data(), q.gpre = gpre.data(), q.gprod = gprod.data(), q.gx = gx.data(), q.gparams = gparams.data();
  dlf::emu::dwconv_bn_act_backward(q, dtype, nullptr);
  ++g_cases;
  // The deterministic mode: per-block partials, then their fixed-order sum.
  q.deterministic = true;
  std::vector<float> partials(static_cast<size_t>(dlf::emu::dwconv_bn_act_backward_partials(q, dtype)));
  q.partials = partials.data();
  std::fill(gparams.begin(), gparams.end(), 0.f);
  dlf::emu::dwconv_bn_act_backward(q, dtype, nullptr);
  ++g_cases;
}

template <typename T>
void upsample_cases(c10::ScalarType dtype, bool channels_last, bool align_corners) {
  // Three inputs as the decoder and ASPP pooling have them: a smaller map, a 1x1 (broadcast), a same-size one.
  const int64_t N = 2, Ho = 9, Wo = 11;
  const int64_t Cs[3] = {5, 3, 4}, Hs[3] = {4, 1, 9}, Ws[3] = {6, 1, 11};
  std::vector<Buffer<T>> xs;
  for (int j = 0; j < 3; ++j) xs.emplace_back(static_cast<size_t>(N * Cs[j] * Hs[j] * Ws[j]), 0, 0.2f * j);
  const int64_t Ctot = 12;
  Buffer<T> y(static_cast<size_t>(N * Ctot * Ho * Wo), 0, 0.f);
  UpsampleConcatParams p{};
  p.num_inputs = 3;
  int64_t c0 = 0;
  for (int j = 0; j < 3; ++j) {
    p.x[j] = xs[j].data();
    p.C[j] = Cs[j], p.H[j] = Hs[j], p.W[j] = Ws[j];
    if (channels_last) {
      p.xs_n[j] = Hs[j] * Ws[j] * Cs[j], p.xs_c[j] = 1, p.xs_h[j] = Ws[j] * Cs[j], p.xs_w[j] = Cs[j];
    } else {
      p.xs_n[j] = Cs[j] * Hs[j] * Ws[j], p.xs_c[j] = Hs[j] * Ws[j], p.xs_h[j] = Ws[j], p.xs_w[j] = 1;
    }
    p.scale_h[j] = dlf::bilinear_scale(Hs[j], Ho, align_corners);
    p.scale_w[j] = dlf::bilinear_scale(Ws[j], Wo, align_corners);
    p.c_begin[j] = c0;
    c0 += Cs[j];
  }
  p.c_begin[3] = c0;
  p.y = y.data(), p.N = N, p.Ctot = Ctot, p.Ho = Ho, p.Wo = Wo;
  if (channels_last) {
    p.ys_n = Ho * Wo * Ctot, p.ys_c = 1, p.ys_h = Wo * Ctot, p.ys_w = Ctot;
  } else {
    p.ys_n = Ctot * Ho * Wo, p.ys_c = Ho * Wo, p.ys_h = Wo, p.ys_w = 1;
  }
  p.channels_last = channels_last, p.align_corners = align_corners;
  dlf::emu::upsample_concat(p, dtype, nullptr);
  ++g_cases;

  // Its gradient: a gather from grad_out (y's shape) into each input's gradient.
  std::vector<Buffer<T>> gxs;
  for (int j = 0; j < 3; ++j) gxs.emplace_back(static_cast<size_t>(N * Cs[j] * Hs[j] * Ws[j]), 0, 0.f);
  dlf::UpsampleConcatBackwardParams b{};
  b.num_inputs = 3;
  for (int j = 0; j < 3; ++j) {
    b.gx[j] = gxs[j].data();
    b.C[j] = Cs[j], b.H[j] = Hs[j], b.W[j] = Ws[j];
    b.gs_n[j] = p.xs_n[j], b.gs_c[j] = p.xs_c[j], b.gs_h[j] = p.xs_h[j], b.gs_w[j] = p.xs_w[j];
    b.scale_h[j] = p.scale_h[j], b.scale_w[j] = p.scale_w[j];
    b.c_begin[j] = p.c_begin[j];
  }
  b.c_begin[3] = p.c_begin[3];
  b.gy = y.data(), b.N = N, b.Ctot = Ctot, b.Ho = Ho, b.Wo = Wo;
  b.ys_n = p.ys_n, b.ys_c = p.ys_c, b.ys_h = p.ys_h, b.ys_w = p.ys_w;
  b.channels_last = channels_last, b.align_corners = align_corners;
  dlf::emu::upsample_concat_backward(b, dtype, nullptr);
  ++g_cases;

  // Class ops: logits (N, K, h, w) resized to (Ho, Wo).
  const int64_t K = 5, h = 4, w = 6;
  Buffer<T> logits(static_cast<size_t>(N * K * h * w), 0, 0.1f);
  std::vector<int64_t> labels(static_cast<size_t>(N * Ho * Wo));
  std::vector<float> accum(static_cast<size_t>(N * K * Ho * Wo));
  UpsampleClassParams c{};
  c.x = logits.data(), c.N = N, c.K = K, c.H = h, c.W = w, c.Ho = Ho, c.Wo = Wo;
  if (channels_last) {
    c.xs_n = h * w * K, c.xs_k = 1, c.xs_h = w * K, c.xs_w = K;
  } else {
    c.xs_n = K * h * w, c.xs_k = h * w, c.xs_h = w, c.xs_w = 1;
  }
  c.scale_h = dlf::bilinear_scale(h, Ho, align_corners), c.scale_w = dlf::bilinear_scale(w, Wo, align_corners);
  c.align_corners = align_corners, c.labels = labels.data(), c.accum = accum.data(), c.weight = 0.5f;
  dlf::emu::upsample_argmax(c, dtype, nullptr);
  for (bool flip : {false, true}) {
    c.flip = flip;
    dlf::emu::upsample_softmax_accumulate(c, dtype, nullptr);
  }
  g_cases += 3;
}

template <typename T>
void all_cases(c10::ScalarType dtype) {
  for (bool cl : {false, true}) {
    // C = 8 and 16 fill whole 16-byte packs (fp32 and 16-bit types); 6 leaves a tail (the V = 1 path).
    for (int64_t C : {8, 16, 6}) {
      for (int K : {3, 5, 7}) {
        for (int stride : {1, 2}) {
          for (int64_t dilation : {1, 2, 40}) {  // 40: beyond the 7x9 map
            dwconv_case<T>(dtype, cl, 2, C, 7, 9, K, stride, dilation, 0, false);
          }
        }
      }
      if (cl) dwconv_case<T>(dtype, cl, 1, C, 5, 6, 3, 1, 1, 1, false);  // unaligned: the fallback path
    }
    for (bool ac : {false, true}) upsample_cases<T>(dtype, cl, ac);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool broken = argc > 1 && std::strcmp(argv[1], "--broken") == 0;
  try {
    if (broken) {
      dwconv_case<float>(c10::ScalarType::Float, true, 1, 8, 5, 6, 3, 1, 1, 0, true);
      std::printf("not caught: the short buffer was read without an error\n");
      return 3;
    }
    all_cases<float>(c10::ScalarType::Float);
    all_cases<c10::Half>(c10::ScalarType::Half);
    all_cases<c10::BFloat16>(c10::ScalarType::BFloat16);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::printf("ok %d cases\n", g_cases);
  return 0;
}
