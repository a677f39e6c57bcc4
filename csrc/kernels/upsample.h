// Shared bodies of the three bilinear-resize ops: upsample_concat, upsample_argmax and
// upsample_softmax_accumulate. The CUDA launchers (csrc/cuda/upsample_cuda.cu) run the per-element
// bodies once per thread; the CPU launchers (csrc/cpu/upsample_cpu.cpp) run the same bodies (NCHW
// concat) or the row forms below, which call the same tap/blend helpers (csrc/common/bilinear.h) in
// the same order, so every backend rounds alike.
#pragma once

#include "common/bilinear.h"
#include "common/host_device.h"

namespace dlf {

constexpr int kMaxConcatInputs = 8;

// upsample_concat: up to 8 inputs resized to (Ho, Wo) and written at channel offsets of one output.
// Strides are in elements, (n, c, h, w) order; the output is NCHW or channels_last (idx order).
struct UpsampleConcatParams {
  const void* x[kMaxConcatInputs];
  int64_t C[kMaxConcatInputs], H[kMaxConcatInputs], W[kMaxConcatInputs];
  int64_t xs_n[kMaxConcatInputs], xs_c[kMaxConcatInputs], xs_h[kMaxConcatInputs], xs_w[kMaxConcatInputs];
  float scale_h[kMaxConcatInputs], scale_w[kMaxConcatInputs];
  int64_t c_begin[kMaxConcatInputs + 1];  // channel offset of each input in the output; last = total
  int num_inputs;
  void* y;
  int64_t N, Ctot, Ho, Wo;
  int64_t ys_n, ys_c, ys_h, ys_w;
  bool channels_last;
  bool align_corners;
};

// Value of output channel c (local channel cl of input j) at (n, ho, wo).
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE float upsample_concat_value(const UpsampleConcatParams& p, int j, int64_t n, int64_t cl,
                                                            const LinearTap& th, const LinearTap& tw) {
  const T* x = static_cast<const T*>(p.x[j]) + n * p.xs_n[j] + cl * p.xs_c[j];
  const int64_t r0 = th.i0 * p.xs_h[j], r1 = th.i1 * p.xs_h[j];
  const int64_t q0 = tw.i0 * p.xs_w[j], q1 = tw.i1 * p.xs_w[j];
  return bilinear_value(th, tw, static_cast<float>(x[r0 + q0]), static_cast<float>(x[r0 + q1]),
                        static_cast<float>(x[r1 + q0]), static_cast<float>(x[r1 + q1]));
}

// One output element; idx enumerates the output in its memory order.
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void upsample_concat_body(const UpsampleConcatParams& p, int64_t idx) {
  int64_t n, c, ho, wo;
  if (p.channels_last) {
    c = idx % p.Ctot;
    int64_t r = idx / p.Ctot;
    wo = r % p.Wo;
    r /= p.Wo;
    ho = r % p.Ho;
    n = r / p.Ho;
  } else {
    wo = idx % p.Wo;
    int64_t r = idx / p.Wo;
    ho = r % p.Ho;
    r /= p.Ho;
    c = r % p.Ctot;
    n = r / p.Ctot;
  }
  int j = 0;
  while (j + 1 < p.num_inputs && c >= p.c_begin[j + 1]) ++j;
  const LinearTap th = bilinear_tap(p.scale_h[j], ho, p.H[j], p.Ho, p.align_corners);
  const LinearTap tw = bilinear_tap(p.scale_w[j], wo, p.W[j], p.Wo, p.align_corners);
  const float v = upsample_concat_value<T>(p, j, n, c - p.c_begin[j], th, tw);
  static_cast<T*>(p.y)[n * p.ys_n + c * p.ys_c + ho * p.ys_h + wo * p.ys_w] = static_cast<T>(v);
}

// upsample_argmax and upsample_softmax_accumulate: logits (N, K, h, w) with strides, resized to (Ho, Wo).
struct UpsampleClassParams {
  const void* x;
  int64_t N, K, H, W, Ho, Wo;
  int64_t xs_n, xs_k, xs_h, xs_w;
  float scale_h, scale_w;
  bool align_corners;
  bool flip;      // read the logits mirrored along W (softmax_accumulate only)
  int64_t* labels;  // argmax output (N, Ho, Wo) contiguous
  float* accum;     // softmax_accumulate in/out (N, K, Ho, Wo) contiguous
  float weight;
};

// Source column index after the optional mirror along W.
DLF_HOST_DEVICE DLF_FORCEINLINE int64_t class_src_col(const UpsampleClassParams& p, int64_t i) {
  return p.flip ? p.W - 1 - i : i;
}

// Resized logit of class k at (n, ho, wo): one thread of the CUDA kernels calls it once per class.
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE float upsample_class_value(const UpsampleClassParams& p, const T* xn, int64_t k,
                                                           const LinearTap& th, const LinearTap& tw) {
  const T* x = xn + k * p.xs_k;
  const int64_t r0 = th.i0 * p.xs_h, r1 = th.i1 * p.xs_h;
  const int64_t q0 = class_src_col(p, tw.i0) * p.xs_w, q1 = class_src_col(p, tw.i1) * p.xs_w;
  return bilinear_value(th, tw, static_cast<float>(x[r0 + q0]), static_cast<float>(x[r0 + q1]),
                        static_cast<float>(x[r1 + q0]), static_cast<float>(x[r1 + q1]));
}

// One output pixel of upsample_argmax (idx over (n, ho, wo)).
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void upsample_argmax_body(const UpsampleClassParams& p, int64_t idx) {
  const int64_t wo = idx % p.Wo;
  const int64_t ho = (idx / p.Wo) % p.Ho;
  const int64_t n = idx / (p.Wo * p.Ho);
  const LinearTap th = bilinear_tap(p.scale_h, ho, p.H, p.Ho, p.align_corners);
  const LinearTap tw = bilinear_tap(p.scale_w, wo, p.W, p.Wo, p.align_corners);
  const T* xn = static_cast<const T*>(p.x) + n * p.xs_n;
  float best = upsample_class_value<T>(p, xn, 0, th, tw);
  int64_t arg = 0;
  for (int64_t k = 1; k < p.K; ++k) {
    const float v = upsample_class_value<T>(p, xn, k, th, tw);
    if (argmax_takes(v, best)) best = v, arg = k;
  }
  p.labels[idx] = arg;
}

// One output pixel of upsample_softmax_accumulate: max, sum of exponentials, then the accumulation.
// The resized logits are recomputed per pass (K is small; the 4 source pixels stay in cache).
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void upsample_softmax_accumulate_body(const UpsampleClassParams& p, int64_t idx) {
  const int64_t wo = idx % p.Wo;
  const int64_t ho = (idx / p.Wo) % p.Ho;
  const int64_t n = idx / (p.Wo * p.Ho);
  const LinearTap th = bilinear_tap(p.scale_h, ho, p.H, p.Ho, p.align_corners);
  const LinearTap tw = bilinear_tap(p.scale_w, wo, p.W, p.Wo, p.align_corners);
  const T* xn = static_cast<const T*>(p.x) + n * p.xs_n;
  float m = upsample_class_value<T>(p, xn, 0, th, tw);
  for (int64_t k = 1; k < p.K; ++k) m = dlf_max(m, upsample_class_value<T>(p, xn, k, th, tw));
  float sum = 0.f;
  for (int64_t k = 0; k < p.K; ++k) sum += expf(upsample_class_value<T>(p, xn, k, th, tw) - m);
  const float scale = p.weight / sum;
  float* acc = p.accum + n * p.K * p.Ho * p.Wo + ho * p.Wo + wo;
  for (int64_t k = 0; k < p.K; ++k) {
    acc[k * p.Ho * p.Wo] += expf(upsample_class_value<T>(p, xn, k, th, tw) - m) * scale;
  }
}

}  // namespace dlf
