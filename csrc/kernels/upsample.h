// Shared bodies of the three bilinear-resize ops: upsample_concat, upsample_argmax and
// upsample_softmax_accumulate. This header is the one source of truth for their math:
//  * the source taps along one axis (indices and weights) and the per-element blend;
//  * the per-pixel class walks (argmax with torch.argmax's rules, softmax + accumulation with
//    torch.softmax's behaviour on non-finite values);
//  * the per-element / per-pixel bodies the CUDA kernels (csrc/cuda/upsample_cuda.cu) run once per thread.
// The CPU launchers (csrc/cpu/upsample_cpu.cpp) run these bodies on their scalar and NCHW paths and call
// the same tap/blend functions from their vectorized row forms, so every backend rounds alike; the AVX2
// fast paths are tested against the scalar ones (tests/test_upsample_*.py).
//
// Coordinate semantics are those of PyTorch's area_pixel_compute_scale / area_pixel_compute_source_index
// / compute_source_index_and_lambda (ATen/native/UpSample.h) with the scale computed from the sizes
// (F.interpolate(size=...)), including the clamping of negative source coordinates for
// align_corners=False and the exact-copy taps when input size == output size. The arithmetic is fixed
// with explicit fmaf so the host compiler and nvcc round the same way as PyTorch's CPU kernel does (its
// generic bilinear path computes the source coordinate and each 1-D blend as one fused multiply-add);
// this is what lets upsample_argmax reproduce the reference's labels bit for bit. Non-finite values
// follow from the same arithmetic: a zero weight times an infinity is NaN, as in F.interpolate (which
// therefore turns inf into NaN even when input and output sizes are equal).
#pragma once

#include <math.h>

#include "common/host_device.h"

// Parameter structs (plain dlf: they cross from the entry points to every launcher).
namespace dlf {

constexpr int kMaxConcatInputs = 8;

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

// Gradient of upsample_concat (the CUDA gather kernel): grad_out (N, Ctot, Ho, Wo) read, the gradient of each
// input j (N, C[j], H[j], W[j]) written. Strides in elements, (n, c, h, w) order.
struct UpsampleConcatBackwardParams {
  void* gx[kMaxConcatInputs];
  int64_t C[kMaxConcatInputs], H[kMaxConcatInputs], W[kMaxConcatInputs];
  int64_t gs_n[kMaxConcatInputs], gs_c[kMaxConcatInputs], gs_h[kMaxConcatInputs], gs_w[kMaxConcatInputs];
  float scale_h[kMaxConcatInputs], scale_w[kMaxConcatInputs];
  int64_t c_begin[kMaxConcatInputs + 1];  // channel offset of each input in grad_out; last = Ctot
  int num_inputs;
  const void* gy;
  int64_t N, Ctot, Ho, Wo;
  int64_t ys_n, ys_c, ys_h, ys_w;
  bool channels_last;
  bool align_corners;
};

struct UpsampleClassParams {
  const void* x;
  int64_t N, K, H, W, Ho, Wo;
  int64_t xs_n, xs_k, xs_h, xs_w;
  float scale_h, scale_w;
  bool align_corners;
  bool flip;        // read the logits mirrored along W (softmax_accumulate only)
  int64_t* labels;  // argmax output (N, Ho, Wo) contiguous
  float* accum;     // softmax_accumulate in/out (N, K, Ho, Wo) contiguous
  float weight;
};

}  // namespace dlf

DLF_BODIES_BEGIN

// ---------------------------------------------------------------------------------------------------
// Taps and blends along one axis.

// Two source indices along one axis and their weights: value = l0 * x[i0] + l1 * x[i1].
struct LinearTap {
  int64_t i0;
  int64_t i1;
  float l0;
  float l1;
};

// Ratio of input to output size along one axis (PyTorch: area_pixel_compute_scale, no scale_factor).
DLF_HOST_DEVICE DLF_FORCEINLINE float bilinear_scale(int64_t in_size, int64_t out_size, bool align_corners) {
  if (align_corners) return out_size > 1 ? static_cast<float>(in_size - 1) / static_cast<float>(out_size - 1) : 0.f;
  return static_cast<float>(in_size) / static_cast<float>(out_size);
}

// Source taps of output index `dst` along one axis.
DLF_HOST_DEVICE DLF_FORCEINLINE LinearTap bilinear_tap(float scale, int64_t dst, int64_t in_size, int64_t out_size,
                                                       bool align_corners) {
  if (in_size == out_size) return LinearTap{dst, dst, 1.f, 0.f};
  float src = align_corners ? scale * static_cast<float>(dst) : fmaf(scale, static_cast<float>(dst) + 0.5f, -0.5f);
  // Output pixels whose centre maps left of the first input centre take the edge value.
  if (!align_corners && src < 0.f) src = 0.f;
  int64_t i0 = static_cast<int64_t>(floorf(src));
  i0 = i0 < in_size - 1 ? i0 : in_size - 1;
  float l1 = src - static_cast<float>(i0);
  l1 = l1 < 0.f ? 0.f : (l1 > 1.f ? 1.f : l1);
  return LinearTap{i0, i0 < in_size - 1 ? i0 + 1 : i0, 1.f - l1, l1};
}

// Source index `i` of an axis of `size` read mirrored when `flip` (softmax_accumulate's flip along W).
DLF_HOST_DEVICE DLF_FORCEINLINE int64_t mirrored_index(int64_t i, int64_t size, bool flip) {
  return flip ? size - 1 - i : i;
}

// One 1-D blend l0 * a + l1 * b, rounded as PyTorch's CPU kernel rounds it.
DLF_HOST_DEVICE DLF_FORCEINLINE float bilinear_blend(float l0, float a, float l1, float b) {
  return fmaf(l0, a, l1 * b);
}

// The 2-D value from the four corners: blend along W first, then along H (PyTorch's order).
DLF_HOST_DEVICE DLF_FORCEINLINE float bilinear_value(const LinearTap& th, const LinearTap& tw, float x00, float x01,
                                                     float x10, float x11) {
  return bilinear_blend(th.l0, bilinear_blend(tw.l0, x00, tw.l1, x01), th.l1, bilinear_blend(tw.l0, x10, tw.l1, x11));
}

// The output indices [*lo, *hi) along one axis whose taps (bilinear_tap) read input index `i`: what the
// gradient of the resize gathers for input i (the backward kernels). The taps' i0 and i1 never decrease with
// the output index, so both ends are found by bisection.
DLF_HOST_DEVICE DLF_FORCEINLINE void bilinear_touching_range(float scale, int64_t i, int64_t in_size, int64_t out_size,
                                                              bool align_corners, int64_t* lo, int64_t* hi) {
  if (in_size == out_size) {
    *lo = i, *hi = i + 1;
    return;
  }
  int64_t a = 0, b = out_size;  // first output whose i1 >= i
  while (a < b) {
    const int64_t m = a + (b - a) / 2;
    if (bilinear_tap(scale, m, in_size, out_size, align_corners).i1 >= i) b = m; else a = m + 1;
  }
  *lo = a;
  b = out_size;  // first output whose i0 > i
  while (a < b) {
    const int64_t m = a + (b - a) / 2;
    if (bilinear_tap(scale, m, in_size, out_size, align_corners).i0 > i) b = m; else a = m + 1;
  }
  *hi = a;
}

// The value F.interpolate gives for a source value `x` when input and output sizes are equal: the taps
// (i, i, 1, 0) along both axes, so x itself when finite and NaN for +-inf (0 * inf) and NaN.
DLF_HOST_DEVICE DLF_FORCEINLINE float bilinear_same_size_value(float x) {
  const LinearTap same{0, 0, 1.f, 0.f};
  return bilinear_value(same, same, x, x, x, x);
}

// ---------------------------------------------------------------------------------------------------
// Per-pixel class walks. `value(k)` gives the resized logit of class k of one output pixel.

// Running argmax update with torch.argmax's rules: the first maximum wins ties, and NaN is the maximum
// (the first NaN wins).
DLF_HOST_DEVICE DLF_FORCEINLINE bool argmax_takes(float v, float best) {
  return v > best || (v != v && best == best);
}

// Index of the maximum of value(0..K-1) under argmax_takes.
template <typename ValueFn>
DLF_HOST_DEVICE DLF_FORCEINLINE int64_t argmax_pixel(const ValueFn& value, int64_t K) {
  float best = value(0);
  int64_t arg = 0;
  for (int64_t k = 1; k < K; ++k) {
    const float v = value(k);
    if (argmax_takes(v, best)) best = v, arg = k;
  }
  return arg;
}

// Running maximum that keeps a NaN (torch.softmax's max over classes propagates it).
DLF_HOST_DEVICE DLF_FORCEINLINE float softmax_max(float m, float v) { return (v > m || v != v) ? v : m; }

// Factor turning the exponentials exp(v_k - m) of one pixel into weight * softmax. Where the maximum m is
// NaN or +-inf, torch.softmax gives NaN for every class (inf - inf, or -inf - -inf, is NaN): m - m is 0 for
// a finite m and NaN otherwise, so those pixels accumulate NaN and finite ones are unchanged.
DLF_HOST_DEVICE DLF_FORCEINLINE float softmax_scale(float weight, float sum, float m) { return weight / sum + (m - m); }

// acc[k * acc_stride] += weight * softmax_k(value) for one pixel: max, sum of exponentials, accumulation.
// value(k) is evaluated three times per class (the CUDA body recomputes it from 4 cached source pixels).
template <typename ValueFn>
DLF_HOST_DEVICE DLF_FORCEINLINE void softmax_accumulate_pixel(const ValueFn& value, int64_t K, float weight,
                                                              float* acc, int64_t acc_stride) {
  float m = value(0);
  for (int64_t k = 1; k < K; ++k) m = softmax_max(m, value(k));
  float sum = 0.f;
  for (int64_t k = 0; k < K; ++k) sum += expf(value(k) - m);
  const float scale = softmax_scale(weight, sum, m);
  for (int64_t k = 0; k < K; ++k) acc[k * acc_stride] += expf(value(k) - m) * scale;
}

// ---------------------------------------------------------------------------------------------------
// upsample_concat: up to 8 inputs resized to (Ho, Wo) and written at channel offsets of one output.
// Strides are in elements, (n, c, h, w) order; the output is NCHW or channels_last (idx order).

// Index of the input that holds output channel c.
DLF_HOST_DEVICE DLF_FORCEINLINE int concat_input_of(const UpsampleConcatParams& p, int64_t c) {
  int j = 0;
  while (j + 1 < p.num_inputs && c >= p.c_begin[j + 1]) ++j;
  return j;
}

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
  const int j = concat_input_of(p, c);
  const LinearTap th = bilinear_tap(p.scale_h[j], ho, p.H[j], p.Ho, p.align_corners);
  const LinearTap tw = bilinear_tap(p.scale_w[j], wo, p.W[j], p.Wo, p.align_corners);
  const float v = upsample_concat_value<T>(p, j, n, c - p.c_begin[j], th, tw);
  static_cast<T*>(p.y)[n * p.ys_n + c * p.ys_c + ho * p.ys_h + wo * p.ys_w] = static_cast<T>(v);
}

// ---------------------------------------------------------------------------------------------------
// upsample_argmax and upsample_softmax_accumulate: logits (N, K, h, w) with strides, resized to (Ho, Wo).



// Resized logit of class k at the pixel of taps (th, tw): the CUDA kernels call it once per class.
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE float upsample_class_value(const UpsampleClassParams& p, const T* xn, int64_t k,
                                                           const LinearTap& th, const LinearTap& tw) {
  const T* x = xn + k * p.xs_k;
  const int64_t r0 = th.i0 * p.xs_h, r1 = th.i1 * p.xs_h;
  const int64_t q0 = mirrored_index(tw.i0, p.W, p.flip) * p.xs_w, q1 = mirrored_index(tw.i1, p.W, p.flip) * p.xs_w;
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
  p.labels[idx] = argmax_pixel([&](int64_t k) { return upsample_class_value<T>(p, xn, k, th, tw); }, p.K);
}

// One output pixel of upsample_softmax_accumulate (idx over (n, ho, wo)). The resized logits are
// recomputed per pass (K is small; the 4 source pixels stay in cache).
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void upsample_softmax_accumulate_body(const UpsampleClassParams& p, int64_t idx) {
  const int64_t wo = idx % p.Wo;
  const int64_t ho = (idx / p.Wo) % p.Ho;
  const int64_t n = idx / (p.Wo * p.Ho);
  const LinearTap th = bilinear_tap(p.scale_h, ho, p.H, p.Ho, p.align_corners);
  const LinearTap tw = bilinear_tap(p.scale_w, wo, p.W, p.Wo, p.align_corners);
  const T* xn = static_cast<const T*>(p.x) + n * p.xs_n;
  float* acc = p.accum + n * p.K * p.Ho * p.Wo + ho * p.Wo + wo;
  softmax_accumulate_pixel([&](int64_t k) { return upsample_class_value<T>(p, xn, k, th, tw); }, p.K, p.weight, acc,
                           p.Ho * p.Wo);
}

DLF_BODIES_END
