// Shared per-output-element body of the fused depthwise conv + folded BatchNorm + activation.
// Runs unchanged in the CUDA kernel (csrc/cuda/dwconv_bn_act_cuda.cu) and the CPU launcher
// (csrc/cpu/dwconv_bn_act_cpu.cpp).
#pragma once

#include "common/host_device.h"

namespace dlf {

// Layout-agnostic parameters: element strides of x and y in (n, c, h, w) order. The weight is
// (C, K*K) fp32 contiguous; scale/shift are (C,) fp32.
struct DwconvParams {
  const void* x;
  const float* w;
  const float* scale;
  const float* shift;
  void* y;
  int64_t N, C, H, W, Ho, Wo;
  int64_t xs_n, xs_c, xs_h, xs_w;
  int64_t ys_n, ys_c, ys_h, ys_w;
  int K, stride, dilation, pad, act;
  bool channels_last;  // output element order: idx enumerates (n, h, w, c) instead of (n, c, h, w)
};

// One output element. idx enumerates outputs in memory order of y, so consecutive threads write
// consecutive addresses in both layouts.
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_bn_act_body(const DwconvParams& p, int64_t idx) {
  int64_t n, c, ho, wo;
  if (p.channels_last) {
    c = idx % p.C;
    int64_t r = idx / p.C;
    wo = r % p.Wo;
    r /= p.Wo;
    ho = r % p.Ho;
    n = r / p.Ho;
  } else {
    wo = idx % p.Wo;
    int64_t r = idx / p.Wo;
    ho = r % p.Ho;
    r /= p.Ho;
    c = r % p.C;
    n = r / p.C;
  }
  const T* x = static_cast<const T*>(p.x) + n * p.xs_n + c * p.xs_c;
  const float* w = p.w + c * p.K * p.K;
  const int64_t h0 = ho * p.stride - p.pad;
  const int64_t w0 = wo * p.stride - p.pad;
  float acc = 0.f;
  // Taps outside the image are skipped, never loaded (large ASPP rates on small maps).
  for (int i = 0; i < p.K; ++i) {
    const int64_t hi = h0 + static_cast<int64_t>(i) * p.dilation;
    if (hi < 0 || hi >= p.H) continue;
    for (int j = 0; j < p.K; ++j) {
      const int64_t wi = w0 + static_cast<int64_t>(j) * p.dilation;
      if (wi < 0 || wi >= p.W) continue;
      acc += static_cast<float>(x[hi * p.xs_h + wi * p.xs_w]) * w[i * p.K + j];
    }
  }
  const float v = apply_activation(acc * p.scale[c] + p.shift[c], p.act);
  static_cast<T*>(p.y)[n * p.ys_n + c * p.ys_c + ho * p.ys_h + wo * p.ys_w] = static_cast<T>(v);
}

}  // namespace dlf
