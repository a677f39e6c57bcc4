// Bilinear source coordinates and blending: the one source of truth for the coordinate math of every
// resize in deeplab_fast (upsample_concat, upsample_argmax, upsample_softmax_accumulate, CPU and CUDA).
//
// Semantics are those of PyTorch's area_pixel_compute_scale / area_pixel_compute_source_index /
// compute_source_index_and_lambda (ATen/native/UpSample.h) with the scale computed from the sizes
// (F.interpolate(size=...)), including the clamping of negative source coordinates for
// align_corners=False and the exact-copy case input size == output size. The arithmetic is fixed
// with explicit fmaf so the host compiler and nvcc round the same way as PyTorch's CPU kernel does
// (its generic bilinear path computes the source coordinate and each 1-D blend as one fused
// multiply-add); this is what lets upsample_argmax reproduce the reference's labels bit for bit.
#pragma once

#include <math.h>

#include "common/host_device.h"

namespace dlf {

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

// One 1-D blend l0 * a + l1 * b, rounded as PyTorch's CPU kernel rounds it.
DLF_HOST_DEVICE DLF_FORCEINLINE float bilinear_blend(float l0, float a, float l1, float b) {
  return fmaf(l0, a, l1 * b);
}

// The 2-D value from the four corners: blend along W first, then along H (PyTorch's order).
DLF_HOST_DEVICE DLF_FORCEINLINE float bilinear_value(const LinearTap& th, const LinearTap& tw, float x00, float x01,
                                                     float x10, float x11) {
  return bilinear_blend(th.l0, bilinear_blend(tw.l0, x00, tw.l1, x01), th.l1, bilinear_blend(tw.l0, x10, tw.l1, x11));
}

// Running argmax update with torch.argmax's rules: the first maximum wins ties, and NaN is the maximum
// (the first NaN wins).
DLF_HOST_DEVICE DLF_FORCEINLINE bool argmax_takes(float v, float best) {
  return v > best || (v != v && best == best);
}

}  // namespace dlf
