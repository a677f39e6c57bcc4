// Shared bodies of the fused depthwise conv + folded BatchNorm + activation, forward and backward.
// Each runs unchanged in the CUDA kernels (csrc/cuda/dwconv_bn_act_cuda.cu) and the CPU launchers
// (csrc/cpu/dwconv_bn_act_cpu.cpp); only the extent of work per call differs:
//
//   forward, channels_last:  dwconv_fwd_nhwc_body(n, ho, [wo_begin, wo_end), [c_begin, c_end))
//       CUDA: one pixel and one 16-byte pack of channels per thread (vector loads);
//       CPU:  a row of pixels times a block of channels, 8 (AVX2) or 16 (AVX-512) channels per instruction.
//   forward, NCHW:           dwconv_fwd_nchw_body<TW>(n, c, ho, wo0): outputs [wo0, wo0 + TW) of a row
//       CUDA: TW = 1 (one output per thread, coalesced); CPU: TW = 64 (the loop over wo vectorizes).
//   backward:                gpre (per output), dx (per input element), params (per channel and tap).
//
// Out-of-image taps are never loaded: each body computes the interval of valid taps (or the interval
// of outputs a tap is valid for) and loops over it, which matters for ASPP rates of 12-36 on 33x33 maps.
#pragma once

#include "common/host_device.h"
#include "common/vec.h"

namespace dlf {

// Forward parameters. x and y are contiguous in their memory format (NCHW: w-stride 1; channels_last:
// c-stride 1); strides are in elements, (n, c, h, w) order. w, scale, shift are in the accumulation type.
// The weight is blocked by w_block channels: tap t of channel c is at weight_offset(c, t), so the K*K taps
// of a pack of channels lie together (w_block = 1 is the plain (C, K*K) layout).
struct DwconvParams {
  const void* x;
  const void* w;
  const void* scale;
  const void* shift;
  void* y;
  int64_t N, C, H, W, Ho, Wo;
  int64_t xs_n, xs_c, xs_h, xs_w;
  int64_t ys_n, ys_c, ys_h, ys_w;
  int64_t w_block;
  int64_t dilation, pad;  // 64-bit: any dilation is legal, even one far beyond the image
  int K, stride, act;
  bool channels_last;
};

// Backward parameters; see "Backward" below.
struct DwconvBwdParams {
  DwconvParams f;
  const void* go;
  void* gpre;
  void* gprod;
  void* gx;
  void* gparams;
  // The CUDA kernels only (csrc/cuda/dwconv_bn_act.cuh): deterministic parameter gradients, summed from
  // per-block partials in a fixed order instead of atomics (dwconv_bn_act_backward_partials floats).
  void* partials;
  bool deterministic;
};

}  // namespace dlf

DLF_BODIES_BEGIN

// Offset of the first tap of channel c in the blocked weight; taps follow at a step of w_block.
// w_block is a power of two (make_params checks it): the host masks instead of a 64-bit division per
// channel pack; the device keeps the division (the mask form spilled registers in fwd_nhwc_kernel, sm_80).
DLF_HOST_DEVICE DLF_FORCEINLINE int64_t weight_offset(const DwconvParams& p, int64_t c) {
#if DLF_DEVICE_CODE
  return (c / p.w_block) * p.K * p.K * p.w_block + c % p.w_block;
#else
  const int64_t lane = c & (p.w_block - 1);
  return (c - lane) * p.K * p.K + lane;
#endif
}

// Taps t in [0, K) with 0 <= base + t * d < size form one interval; return it as [lo, hi) by comparing
// positions only (K <= 7 compares; no memory access, no division).
DLF_HOST_DEVICE DLF_FORCEINLINE void valid_taps(int64_t base, int64_t d, int64_t size, int K, int& lo, int& hi) {
  lo = 0;
  while (lo < K && base + lo * d < 0) ++lo;
  hi = K;
  while (hi > lo && base + (hi - 1) * d >= size) --hi;
}

// Outputs o with 0 <= o * S + off < size, intersected with [a, b) in place.
template <int S>
DLF_HOST_DEVICE DLF_FORCEINLINE void valid_outputs(int64_t off, int64_t size, int64_t& a, int64_t& b) {
  const int64_t lo = off >= 0 ? 0 : (-off + S - 1) / S;
  const int64_t hi = size - 1 - off < 0 ? 0 : (size - 1 - off) / S + 1;
  a = a > lo ? a : lo;
  b = b < hi ? b : hi;
}

// U packs of V channels [c, c + U * V) of one channels_last output pixel; xp points at x[n, 0, 0, 0].
// U independent accumulators hide the FMA latency on the host (the GPU uses U = 1 and many threads).
// KT > 0 is the kernel size known at compile time: the tap loops unroll completely and the valid-range
// tests become per-pixel predicates (no loop counters live across the FMAs; on the GPU no local arrays).
// KT == 0 is any odd k at run time.
template <typename T, int V, int KT, int U>
DLF_HOST_DEVICE DLF_FORCEINLINE void nhwc_pack(const DwconvParams& p, const T* xp, T* yp, int64_t c, int64_t h0,
                                               int64_t w0, int i_lo, int i_hi, int j_lo, int j_hi) {
  using A = acc_t<T>;
  using Ops = PackOps<T, A, V>;
  const int K = KT > 0 ? KT : p.K;
  const int64_t w_t = p.w_block;
  const A* w = static_cast<const A*>(p.w) + weight_offset(p, c);
  const T* xc = xp + h0 * p.xs_h + w0 * p.xs_w + c;
  const int64_t dh = p.dilation * p.xs_h, dw = p.dilation * p.xs_w;
  typename Ops::P acc[U];
  DLF_UNROLL
  for (int u = 0; u < U; ++u) acc[u] = Ops::zero();
  auto tap = [&](int i, int j) {
    const T* xt = xc + i * dh + j * dw;
    const A* wt = w + (i * K + j) * w_t;
    DLF_UNROLL
    for (int u = 0; u < U; ++u) Ops::fma(acc[u], Ops::load(xt + u * V), Ops::load_acc(wt + u * V));
  };
  if constexpr (KT > 0) {
    DLF_UNROLL
    for (int i = 0; i < KT; ++i) {
      if (i < i_lo || i >= i_hi) continue;
      DLF_UNROLL
      for (int j = 0; j < KT; ++j) {
        if (j < j_lo || j >= j_hi) continue;
        tap(i, j);
      }
    }
  } else {
    for (int i = i_lo; i < i_hi; ++i)
      for (int j = j_lo; j < j_hi; ++j) tap(i, j);
  }
  const A* sc = static_cast<const A*>(p.scale) + c;
  const A* sh = static_cast<const A*>(p.shift) + c;
  DLF_UNROLL
  for (int u = 0; u < U; ++u) {
    Ops::store(yp + c + u * V, Ops::epilogue(acc[u], Ops::load_acc(sc + u * V), Ops::load_acc(sh + u * V), p.act));
  }
}

// Channels [c, c_end) of one channels_last output pixel after the wide steps: packs of V, then (a tail
// shorter than V) the same code at V / 2, V / 4, ..., 1, each width at most once. A 16-lane build thus ends
// C = 728 (45 x 16 + 8) with one 8-lane pack instead of 8 single channels.
template <typename T, int V, int KT>
DLF_HOST_DEVICE DLF_FORCEINLINE void nhwc_tail(const DwconvParams& p, const T* xp, T* yp, int64_t c, int64_t c_end,
                                               int64_t h0, int64_t w0, int i_lo, int i_hi, int j_lo, int j_hi) {
  for (; c + V <= c_end; c += V) nhwc_pack<T, V, KT, 1>(p, xp, yp, c, h0, w0, i_lo, i_hi, j_lo, j_hi);
  if constexpr (V > 1) nhwc_tail<T, V / 2, KT>(p, xp, yp, c, c_end, h0, w0, i_lo, i_hi, j_lo, j_hi);
}

// channels_last forward: outputs (n, ho, wo in [wo_begin, wo_end), c in [c_begin, c_end)). Channels go
// in groups of U packs of V, then single packs, then the narrower tail packs (nhwc_tail).
template <typename T, int V, int KT, int U>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_fwd_nhwc_body(const DwconvParams& p, int64_t n, int64_t ho,
                                                          int64_t wo_begin, int64_t wo_end, int64_t c_begin,
                                                          int64_t c_end) {
  const T* xp = static_cast<const T*>(p.x) + n * p.xs_n;
  const int64_t h0 = ho * p.stride - p.pad;
  int i_lo, i_hi;
  valid_taps(h0, p.dilation, p.H, p.K, i_lo, i_hi);
  for (int64_t wo = wo_begin; wo < wo_end; ++wo) {
    const int64_t w0 = wo * p.stride - p.pad;
    int j_lo, j_hi;
    valid_taps(w0, p.dilation, p.W, p.K, j_lo, j_hi);
    T* yp = static_cast<T*>(p.y) + n * p.ys_n + ho * p.ys_h + wo * p.ys_w;
    int64_t c = c_begin;
    if constexpr (U > 1) {
      for (; c + U * V <= c_end; c += U * V) nhwc_pack<T, V, KT, U>(p, xp, yp, c, h0, w0, i_lo, i_hi, j_lo, j_hi);
    }
    nhwc_tail<T, V, KT>(p, xp, yp, c, c_end, h0, w0, i_lo, i_hi, j_lo, j_hi);
  }
}

// channels_last, stride 1, 3x3: U packs of V channels [c, c + U * V) of two outputs one dilation apart,
// (ho, wo) and (ho, wo + d). Their taps share the two middle columns, so each row of taps loads the four
// columns w0 + m * d (m in [m_lo, m_hi), the valid ones) once and feeds both outputs from registers:
// 4 input + 3 weight loads for 6 FMAs per pack and row, against 2 loads per FMA one output at a time,
// and a third less input traffic from L2/L3. yp points at output (ho, wo); the pair's second output
// is at yp + d * ys_w.
template <typename T, int V, int U>
DLF_HOST_DEVICE DLF_FORCEINLINE void nhwc_pair_pack(const DwconvParams& p, const T* xp, T* yp, int64_t c, int64_t h0,
                                                    int64_t w0, int i_lo, int i_hi, int m_lo, int m_hi) {
  using A = acc_t<T>;
  using Ops = PackOps<T, A, V>;
  const A* w = static_cast<const A*>(p.w) + weight_offset(p, c);
  const T* xc = xp + h0 * p.xs_h + w0 * p.xs_w + c;
  const int64_t dh = p.dilation * p.xs_h, dw = p.dilation * p.xs_w, w_t = p.w_block;
  typename Ops::P a[U], b[U];
  DLF_UNROLL
  for (int u = 0; u < U; ++u) a[u] = Ops::zero(), b[u] = Ops::zero();
  DLF_UNROLL
  for (int i = 0; i < 3; ++i) {
    if (i < i_lo || i >= i_hi) continue;
    typename Ops::P wr[3][U];
    DLF_UNROLL
    for (int j = 0; j < 3; ++j) {
      DLF_UNROLL
      for (int u = 0; u < U; ++u) wr[j][u] = Ops::load_acc(w + (i * 3 + j) * w_t + u * V);
    }
    const T* xr = xc + i * dh;
    DLF_UNROLL
    for (int m = 0; m < 4; ++m) {
      if (m < m_lo || m >= m_hi) continue;
      DLF_UNROLL
      for (int u = 0; u < U; ++u) {
        const typename Ops::P xv = Ops::load(xr + m * dw + u * V);
        if (m < 3) Ops::fma(a[u], xv, wr[m][u]);
        if (m > 0) Ops::fma(b[u], xv, wr[m - 1][u]);
      }
    }
  }
  const A* sc = static_cast<const A*>(p.scale) + c;
  const A* sh = static_cast<const A*>(p.shift) + c;
  T* yq = yp + p.dilation * p.ys_w;
  DLF_UNROLL
  for (int u = 0; u < U; ++u) {
    const typename Ops::P s = Ops::load_acc(sc + u * V), t = Ops::load_acc(sh + u * V);
    Ops::store(yp + c + u * V, Ops::epilogue(a[u], s, t, p.act));
    Ops::store(yq + c + u * V, Ops::epilogue(b[u], s, t, p.act));
  }
}

// nhwc_tail's walk for the pairs: packs of V, then V / 2, ..., 1.
template <typename T, int V>
DLF_HOST_DEVICE DLF_FORCEINLINE void nhwc_pair_tail(const DwconvParams& p, const T* xp, T* yp, int64_t c,
                                                    int64_t c_end, int64_t h0, int64_t w0, int i_lo, int i_hi,
                                                    int m_lo, int m_hi) {
  for (; c + V <= c_end; c += V) nhwc_pair_pack<T, V, 1>(p, xp, yp, c, h0, w0, i_lo, i_hi, m_lo, m_hi);
  if constexpr (V > 1) nhwc_pair_tail<T, V / 2>(p, xp, yp, c, c_end, h0, w0, i_lo, i_hi, m_lo, m_hi);
}

// channels_last, stride 1, 3x3: the outputs of row (n, ho), channels [c_begin, c_end), as pairs one
// dilation apart (each residue class of wo modulo d paired from its first member); a class with an odd
// number of members ends with one output through nhwc_pack.
template <typename T, int V, int U>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_fwd_nhwc_pair_body(const DwconvParams& p, int64_t n, int64_t ho,
                                                               int64_t c_begin, int64_t c_end) {
  const T* xp = static_cast<const T*>(p.x) + n * p.xs_n;
  T* yrow = static_cast<T*>(p.y) + n * p.ys_n + ho * p.ys_h;
  const int64_t d = p.dilation, h0 = ho - p.pad;
  int i_lo, i_hi;
  valid_taps(h0, d, p.H, 3, i_lo, i_hi);
  const int64_t residues = d < p.Wo ? d : p.Wo;
  for (int64_t r = 0; r < residues; ++r) {
    for (int64_t wo = r; wo < p.Wo; wo += 2 * d) {
      const int64_t w0 = wo - p.pad;
      T* yp = yrow + wo * p.ys_w;
      int64_t c = c_begin;
      if (wo + d >= p.Wo) {  // the class's last member has no partner
        int j_lo, j_hi;
        valid_taps(w0, d, p.W, 3, j_lo, j_hi);
        for (; c + U * V <= c_end; c += U * V) nhwc_pack<T, V, 3, U>(p, xp, yp, c, h0, w0, i_lo, i_hi, j_lo, j_hi);
        nhwc_tail<T, V, 3>(p, xp, yp, c, c_end, h0, w0, i_lo, i_hi, j_lo, j_hi);
        continue;
      }
      int m_lo, m_hi;
      valid_taps(w0, d, p.W, 4, m_lo, m_hi);
      for (; c + U * V <= c_end; c += U * V) nhwc_pair_pack<T, V, U>(p, xp, yp, c, h0, w0, i_lo, i_hi, m_lo, m_hi);
      nhwc_pair_tail<T, V>(p, xp, yp, c, c_end, h0, w0, i_lo, i_hi, m_lo, m_hi);
    }
  }
}

// NCHW forward: outputs wo in [wo0, min(wo0 + TW, Wo)) of row (n, c, ho), stride S. For each valid tap
// the interval of outputs it reaches is computed, so the inner loop has no branches and, with x's
// w-stride 1, vectorizes on the host.
template <typename T, int TW, int S>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_fwd_nchw_body(const DwconvParams& p, int64_t n, int64_t c, int64_t ho,
                                                          int64_t wo0) {
  using A = acc_t<T>;
  const int64_t wo1 = wo0 + TW < p.Wo ? wo0 + TW : p.Wo;
  A acc[TW];
  DLF_UNROLL
  for (int t = 0; t < TW; ++t) acc[t] = A(0);
  const T* xc = static_cast<const T*>(p.x) + n * p.xs_n + c * p.xs_c;
  const A* w = static_cast<const A*>(p.w) + weight_offset(p, c);
  const int64_t h0 = ho * S - p.pad;
  int i_lo, i_hi;
  valid_taps(h0, p.dilation, p.H, p.K, i_lo, i_hi);
  for (int i = i_lo; i < i_hi; ++i) {
    const T* xr = xc + (h0 + i * p.dilation) * p.xs_h;
    for (int j = 0; j < p.K; ++j) {
      const int64_t off = j * p.dilation - p.pad;
      int64_t a = wo0, b = wo1;
      valid_outputs<S>(off, p.W, a, b);
      const A wv = w[(i * p.K + j) * p.w_block];
      const T* xo = xr + off + wo0 * S;
      for (int64_t t = a - wo0; t < b - wo0; ++t) acc[t] += static_cast<A>(xo[t * S]) * wv;
    }
  }
  const A s = static_cast<const A*>(p.scale)[c];
  const A b = static_cast<const A*>(p.shift)[c];
  T* yr = static_cast<T*>(p.y) + n * p.ys_n + c * p.ys_c + ho * p.ys_h;
  for (int64_t wo = wo0; wo < wo1; ++wo) yr[wo] = static_cast<T>(apply_activation(acc[wo - wo0] * s + b, p.act));
}

// ---------------------------------------------------------------------------------------------------
// Backward. With g = grad_y * act'(z), z = conv * scale + shift (conv recomputed, never saved):
//   d shift[c] = sum g;  d scale[c] = sum g * conv;  d w[c, i, j] = scale[c] * sum g * x[tap];
//   d x = scale[c] * (transposed depthwise conv of g with w).
// go, gpre and gprod share y's strides (ys_*); gx shares x's strides (xs_*). gpre = g, gprod = g * conv
// (accumulation type). gparams is (C, K*K + 2): the K*K weight taps, then scale, then shift.


// Decode an index that enumerates a 4-D tensor in its memory order into (n, c, h, w).
DLF_HOST_DEVICE DLF_FORCEINLINE void decode_index(int64_t idx, int64_t C, int64_t H, int64_t W, bool channels_last,
                                                  int64_t& n, int64_t& c, int64_t& h, int64_t& w) {
  if (channels_last) {
    c = idx % C;
    idx /= C;
    w = idx % W;
    idx /= W;
    h = idx % H;
    n = idx / H;
  } else {
    w = idx % W;
    idx /= W;
    h = idx % H;
    idx /= H;
    c = idx % C;
    n = idx / C;
  }
}

// Per output element (memory order of y): recompute conv, then g and g * conv.
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_bwd_gpre_body(const DwconvBwdParams& q, int64_t idx) {
  using A = acc_t<T>;
  const DwconvParams& p = q.f;
  int64_t n, c, ho, wo;
  decode_index(idx, p.C, p.Ho, p.Wo, p.channels_last, n, c, ho, wo);
  const T* xc = static_cast<const T*>(p.x) + n * p.xs_n + c * p.xs_c;
  const A* w = static_cast<const A*>(p.w) + weight_offset(p, c);
  const int64_t h0 = ho * p.stride - p.pad, w0 = wo * p.stride - p.pad;
  int i_lo, i_hi, j_lo, j_hi;
  valid_taps(h0, p.dilation, p.H, p.K, i_lo, i_hi);
  valid_taps(w0, p.dilation, p.W, p.K, j_lo, j_hi);
  A conv = A(0);
  for (int i = i_lo; i < i_hi; ++i) {
    const T* xr = xc + (h0 + i * p.dilation) * p.xs_h;
    for (int j = j_lo; j < j_hi; ++j) {
      conv += static_cast<A>(xr[(w0 + j * p.dilation) * p.xs_w]) * w[(i * p.K + j) * p.w_block];
    }
  }
  const A z = conv * static_cast<const A*>(p.scale)[c] + static_cast<const A*>(p.shift)[c];
  const int64_t off = n * p.ys_n + c * p.ys_c + ho * p.ys_h + wo * p.ys_w;
  const A g = static_cast<A>(static_cast<const T*>(q.go)[off]) * activation_grad_mask(z, p.act);
  static_cast<A*>(q.gpre)[off] = g;
  static_cast<A*>(q.gprod)[off] = g * conv;
}

// Per input element (memory order of x): dx = scale[c] * sum over taps that reach it of gpre * w.
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_bwd_dx_body(const DwconvBwdParams& q, int64_t idx) {
  using A = acc_t<T>;
  const DwconvParams& p = q.f;
  int64_t n, c, h, w;
  decode_index(idx, p.C, p.H, p.W, p.channels_last, n, c, h, w);
  const A* g = static_cast<const A*>(q.gpre) + n * p.ys_n + c * p.ys_c;
  const A* wc = static_cast<const A*>(p.w) + weight_offset(p, c);
  A acc = A(0);
  for (int i = 0; i < p.K; ++i) {
    const int64_t th = h + p.pad - i * p.dilation;
    if (th < 0) break;  // th only decreases with i
    if (th % p.stride != 0 || th / p.stride >= p.Ho) continue;
    const A* gr = g + (th / p.stride) * p.ys_h;
    for (int j = 0; j < p.K; ++j) {
      const int64_t tw = w + p.pad - j * p.dilation;
      if (tw < 0) break;
      if (tw % p.stride != 0 || tw / p.stride >= p.Wo) continue;
      acc += gr[(tw / p.stride) * p.ys_w] * wc[(i * p.K + j) * p.w_block];
    }
  }
  static_cast<T*>(q.gx)[n * p.xs_n + c * p.xs_c + h * p.xs_h + w * p.xs_w] =
      static_cast<T>(acc * static_cast<const A*>(p.scale)[c]);
}

// Per (channel, slot), slot in [0, K*K + 2): one parameter gradient reduced over (n, ho, wo).
template <typename T, int S>
DLF_HOST_DEVICE DLF_FORCEINLINE void dwconv_bwd_params_body(const DwconvBwdParams& q, int64_t idx) {
  using A = acc_t<T>;
  const DwconvParams& p = q.f;
  const int KK = p.K * p.K;
  const int64_t c = idx / (KK + 2);
  const int slot = static_cast<int>(idx % (KK + 2));
  A acc = A(0);
  if (slot >= KK) {
    const A* src = static_cast<const A*>(slot == KK ? q.gprod : q.gpre) + c * p.ys_c;
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t ho = 0; ho < p.Ho; ++ho) {
        const A* r = src + n * p.ys_n + ho * p.ys_h;
        for (int64_t wo = 0; wo < p.Wo; ++wo) acc += r[wo * p.ys_w];
      }
  } else {
    const int i = slot / p.K, j = slot % p.K;
    const int64_t offh = i * p.dilation - p.pad;
    const int64_t offw = j * p.dilation - p.pad;
    int64_t ha = 0, hb = p.Ho, wa = 0, wb = p.Wo;
    valid_outputs<S>(offh, p.H, ha, hb);
    valid_outputs<S>(offw, p.W, wa, wb);
    const A* g = static_cast<const A*>(q.gpre) + c * p.ys_c;
    const T* x = static_cast<const T*>(p.x) + c * p.xs_c;
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t ho = ha; ho < hb; ++ho) {
        const A* gr = g + n * p.ys_n + ho * p.ys_h;
        const T* xr = x + n * p.xs_n + (ho * S + offh) * p.xs_h + offw * p.xs_w;
        for (int64_t wo = wa; wo < wb; ++wo) acc += gr[wo * p.ys_w] * static_cast<A>(xr[wo * S * p.xs_w]);
      }
    acc *= static_cast<const A*>(p.scale)[c];
  }
  static_cast<A*>(q.gparams)[idx] = acc;
}

DLF_BODIES_END
