// CPU launchers of the upsample ops. They run over output rows with at::parallel_for and call the
// shared bodies and tap/blend functions of csrc/kernels/upsample.h, so every path rounds as the CUDA
// kernels do. Two CPU-specific arrangements make them fast, neither changes the arithmetic:
//  * the source taps of every output row and column are computed once into small tables;
//  * channels_last concat blends whole channel vectors (unit stride, the compiler vectorizes the
//    loops for AVX2/FMA), and the class ops blend each needed source row along W once into a
//    (K, Wo) row buffer, then blend two such rows along H for all classes with a running
//    max / softmax that is vectorized over output columns (AVX2).
// The class ops take the per-pixel shared functions (argmax_pixel, softmax_accumulate_pixel) on the row
// buffers for narrow rows and for rows whose source values are not all finite (detected while the rows
// are staged), and the per-pixel bodies straight on the logits when the row buffers would be too large.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <bit>
#include <climits>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "cpu/launchers.h"

namespace dlf::DLF_CPU_NS {
namespace {

// Taps of every output index along one axis, as separate arrays (vectorizer-friendly).
struct TapTable {
  std::vector<int64_t> i0, i1;
  std::vector<float> l0, l1;
  TapTable(int64_t in_size, int64_t out_size, bool align_corners, bool flip = false)
      : i0(out_size), i1(out_size), l0(out_size), l1(out_size) {
    const float scale = bilinear_scale(in_size, out_size, align_corners);
    for (int64_t o = 0; o < out_size; ++o) {
      const LinearTap t = bilinear_tap(scale, o, in_size, out_size, align_corners);
      i0[o] = mirrored_index(t.i0, in_size, flip);
      i1[o] = mirrored_index(t.i1, in_size, flip);
      l0[o] = t.l0;
      l1[o] = t.l1;
    }
  }
  LinearTap at(int64_t o) const { return LinearTap{i0[o], i1[o], l0[o], l1[o]}; }
  // Whether every output index has the same taps and weights (a 1x1 input: a broadcast).
  bool uniform() const {
    for (size_t o = 1; o < i0.size(); ++o)
      if (i0[o] != i0[0] || i1[o] != i1[0] || l0[o] != l0[0] || l1[o] != l1[0]) return false;
    return true;
  }
};

// Rows per parallel chunk: small outputs run on the calling thread (waking threads costs more than
// the work, and far more on a loaded machine).
int64_t rows_grain(int64_t elements_per_row) {
  constexpr int64_t kMinElementsPerChunk = 1 << 16;
  return dlf_max<int64_t>(1, kMinElementsPerChunk / dlf_max<int64_t>(1, elements_per_row));
}

template <typename T>
DLF_FORCEINLINE float ld(const T* p) {
  return static_cast<float>(*p);
}

// y[c] = bilinear value of four channel vectors (unit stride), c in [0, C).
template <typename T>
void blend_channels(const T* __restrict a, const T* __restrict b, const T* __restrict c, const T* __restrict d,
                    T* __restrict y, int64_t C, const LinearTap& th, const LinearTap& tw) {
  const float h0 = th.l0, h1 = th.l1, w0 = tw.l0, w1 = tw.l1;
  for (int64_t i = 0; i < C; ++i) {
    const float top = bilinear_blend(w0, ld(a + i), w1, ld(b + i));
    const float bot = bilinear_blend(w0, ld(c + i), w1, ld(d + i));
    y[i] = static_cast<T>(bilinear_blend(h0, top, h1, bot));
  }
}

// What a copy records about the bytes it moves: nothing (a plain copy), or see CopiedMagnitude below.
struct NoTracking {
#ifdef __AVX2__
  DLF_FORCEINLINE void add(__m256i) {}
#endif
  DLF_FORCEINLINE void tail(const void*, int64_t) {}
};

// Copy of a channel vector (a few hundred bytes to a few KiB) inline: a libc memcpy call per pixel and
// input cost as much as the copy itself at these sizes. `track` sees every 32-byte block the vector loop
// moves (add) and the bytes copied after it (tail).
template <typename Tracker = NoTracking>
DLF_FORCEINLINE void copy_bytes(void* __restrict dst, const void* __restrict src, int64_t n,
                                Tracker&& track = Tracker{}) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  int64_t i = 0;
#ifdef __AVX2__
  for (; i + 128 <= n; i += 128) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i + 32));
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i + 64));
    const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i + 96));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), a);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i + 32), b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i + 64), c);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i + 96), e);
    track.add(a), track.add(b), track.add(c), track.add(e);
  }
  for (; i + 32 <= n; i += 32) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), a);
    track.add(a);
  }
#endif
  if (i < n) {
    std::memcpy(d + i, s + i, n - i);
    track.tail(s + i, n - i);
  }
}

// Bit pattern of +inf in each storage type: a value is inf or NaN exactly when its bits without the sign are
// at least this.
template <typename T>
constexpr uint32_t kInfBits = 0x7f800000u;
template <>
constexpr uint32_t kInfBits<c10::BFloat16> = 0x7f80u;
template <>
constexpr uint32_t kInfBits<c10::Half> = 0x7c00u;

// Whether any value copied by copy_bytes with this tracker was inf or NaN. The copies keep the lane-wise unsigned
// maximum of the magnitude bits (sign cleared): an and and a max per 32 bytes, free beside the loads and
// stores; the maximum is compared once per output row.
template <typename T>
struct CopiedMagnitude {
  static_assert(sizeof(T) == 4 || sizeof(T) == 2);
#ifdef __AVX2__
  __m256i lanes = _mm256_setzero_si256();
  DLF_FORCEINLINE void add(__m256i v) {
    if constexpr (sizeof(T) == 4) {
      lanes = _mm256_max_epu32(lanes, _mm256_and_si256(v, _mm256_set1_epi32(0x7fffffff)));
    } else {
      lanes = _mm256_max_epu16(lanes, _mm256_and_si256(v, _mm256_set1_epi16(0x7fff)));
    }
  }
#endif
  bool scalar_non_finite = false;  // elements copied outside the 32-byte blocks

  DLF_FORCEINLINE void tail(const void* p, int64_t bytes) {
    const T* x = static_cast<const T*>(p);
    for (int64_t e = 0; e < bytes / static_cast<int64_t>(sizeof(T)); ++e)
      scalar_non_finite |= !(fabsf(ld(x + e)) < INFINITY);
  }

  bool non_finite() const {
    bool any = scalar_non_finite;
#ifdef __AVX2__
    __m256i at_least_inf;  // lanes whose maximum is >= inf's bits
    if constexpr (sizeof(T) == 4) {
      const __m256i inf = _mm256_set1_epi32(static_cast<int32_t>(kInfBits<T>));
      at_least_inf = _mm256_cmpeq_epi32(_mm256_max_epu32(lanes, inf), lanes);
    } else {
      const __m256i inf = _mm256_set1_epi16(static_cast<int16_t>(kInfBits<T>));
      at_least_inf = _mm256_cmpeq_epi16(_mm256_max_epu16(lanes, inf), lanes);
    }
    any |= _mm256_movemask_epi8(at_least_inf) != 0;
#endif
    return any;
  }
};

template <typename T>
void concat_channels_last(const UpsampleConcatParams& p) {
  std::vector<TapTable> th, tw;
  for (int j = 0; j < p.num_inputs; ++j) {
    th.emplace_back(p.H[j], p.Ho, p.align_corners);
    tw.emplace_back(p.W[j], p.Wo, p.align_corners);
  }
  // Inputs of one pixel: already at size (a copy), 1x1 (every output pixel is the same blended vector:
  // blended once per row into a buffer, then copied) or resized (blended per pixel).
  enum class Kind { kCopy, kBroadcast, kResize };
  std::vector<Kind> kind(p.num_inputs);
  int64_t broadcast_channels = 0;
  for (int j = 0; j < p.num_inputs; ++j) {
    kind[j] = p.H[j] == p.Ho && p.W[j] == p.Wo       ? Kind::kCopy
              : p.H[j] == 1 && p.W[j] == 1 && tw[j].uniform() ? Kind::kBroadcast
                                                            : Kind::kResize;
    if (kind[j] == Kind::kBroadcast) broadcast_channels += p.C[j];
  }
  at::parallel_for(0, p.N * p.Ho, rows_grain(p.Ctot * p.Wo), [&](int64_t begin, int64_t end) {
    std::vector<T> bcast(static_cast<size_t>(broadcast_channels));
    const T* r0[kMaxConcatInputs];
    const T* r1[kMaxConcatInputs];
    LinearTap h[kMaxConcatInputs];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / p.Ho, ho = row % p.Ho;
      T* yrow = static_cast<T*>(p.y) + n * p.ys_n + ho * p.ys_h;
      T* b = bcast.data();
      CopiedMagnitude<T> copied;
      for (int j = 0; j < p.num_inputs; ++j) {
        const T* x = static_cast<const T*>(p.x[j]) + n * p.xs_n[j];
        h[j] = th[j].at(ho);
        r0[j] = x + h[j].i0 * p.xs_h[j];
        r1[j] = x + h[j].i1 * p.xs_h[j];
        if (kind[j] == Kind::kBroadcast) {
          blend_channels<T>(r0[j], r0[j], r1[j], r1[j], b, p.C[j], h[j], tw[j].at(0));
          r0[j] = b;
          b += p.C[j];
        }
      }
      // Pixel after pixel, each written whole (all inputs' channels), so the output streams out in order.
      for (int64_t wo = 0; wo < p.Wo; ++wo) {
        T* yp = yrow + wo * p.ys_w;
        for (int j = 0; j < p.num_inputs; ++j) {
          const int64_t C = p.C[j], sw = p.xs_w[j];
          T* y = yp + p.c_begin[j];
          if (kind[j] == Kind::kCopy) {
            copy_bytes(y, r0[j] + wo * sw, C * static_cast<int64_t>(sizeof(T)), copied);
          } else if (kind[j] == Kind::kBroadcast) {
            copy_bytes(y, r0[j], C * sizeof(T));
          } else {
            const LinearTap w = tw[j].at(wo);
            blend_channels<T>(r0[j] + w.i0 * sw, r0[j] + w.i1 * sw, r1[j] + w.i0 * sw, r1[j] + w.i1 * sw, y, C, h[j],
                              w);
          }
        }
      }
      // Inputs at the output size are resized by F.interpolate too, with the taps (i, i, 1, 0): a copy of finite
      // values and NaN, but NaN for +-inf. A row whose copies met inf or NaN is redone through the shared body.
      if (copied.non_finite()) {
        for (int j = 0; j < p.num_inputs; ++j) {
          if (kind[j] != Kind::kCopy) continue;
          for (int64_t wo = 0; wo < p.Wo; ++wo) {
            const T* x = r0[j] + wo * p.xs_w[j];
            T* y = yrow + wo * p.ys_w + p.c_begin[j];
            for (int64_t c = 0; c < p.C[j]; ++c) y[c] = static_cast<T>(bilinear_same_size_value(ld(x + c)));
          }
        }
      }
    }
  });
}

template <typename T>
void concat_nchw(const UpsampleConcatParams& p) {
  std::vector<TapTable> th, tw;
  for (int j = 0; j < p.num_inputs; ++j) {
    th.emplace_back(p.H[j], p.Ho, p.align_corners);
    tw.emplace_back(p.W[j], p.Wo, p.align_corners);
  }
  at::parallel_for(0, p.N * p.Ctot * p.Ho, rows_grain(p.Wo), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t ho = row % p.Ho, c = (row / p.Ho) % p.Ctot, n = row / (p.Ho * p.Ctot);
      const int j = concat_input_of(p, c);
      const T* x = static_cast<const T*>(p.x[j]) + n * p.xs_n[j] + (c - p.c_begin[j]) * p.xs_c[j];
      const LinearTap h = th[j].at(ho);
      const T* __restrict r0 = x + h.i0 * p.xs_h[j];
      const T* __restrict r1 = x + h.i1 * p.xs_h[j];
      const int64_t sw = p.xs_w[j];
      T* __restrict y = static_cast<T*>(p.y) + n * p.ys_n + c * p.ys_c + ho * p.ys_h;
      const TapTable& w = tw[j];
      for (int64_t wo = 0; wo < p.Wo; ++wo) {
        const int64_t q0 = w.i0[wo] * sw, q1 = w.i1[wo] * sw;
        const float v = bilinear_value(h, w.at(wo), ld(r0 + q0), ld(r0 + q1), ld(r1 + q0), ld(r1 + q1));
        y[wo * p.ys_w] = static_cast<T>(v);
      }
    }
  });
}

// Class stride of a W-blended row buffer: Wo padded to whole 64-byte lines, so every class starts
// line-aligned and 8-wide loads at multiples of 8 columns never straddle two lines.
inline int64_t row_stride(int64_t Wo) { return (Wo + 15) / 16 * 16; }

#ifdef __AVX2__
// dst[j * ds + i] = src[i * ss + j] for i, j in [0, 8): eight 8-float rows transposed in registers. `magnitude`
// takes the unsigned maximum of the values' bit patterns without sign (see tame_bound).
DLF_FORCEINLINE void transpose8x8(const float* src, int64_t ss, float* dst, int64_t ds, __m256i& magnitude) {
  __m256 r[8], t[8], u[8];
  const __m256i abs_bits = _mm256_set1_epi32(0x7fffffff);
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm256_loadu_ps(src + i * ss);
    magnitude = _mm256_max_epu32(magnitude, _mm256_and_si256(_mm256_castps_si256(r[i]), abs_bits));
  }
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ds, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * ds, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
  }
}
#endif

// Bit pattern of 1e30f: a float x is finite with |x| <= 1e30 exactly when (bits(x) & 0x7fffffff) <= it
// (infinities and NaNs have larger patterns).
constexpr uint32_t kTameBound = 0x7149f2ca;
static_assert(std::bit_cast<uint32_t>(1e30f) == kTameBound, "kTameBound must be the bits of 1e30f");

// Source rows of the logits blended along W into (K, row_stride(Wo)) fp32 buffers, with a two-slot cache: within
// a block of consecutive output rows the needed source rows only move forward.
template <typename T>
class RowCache {
 public:
  RowCache(const UpsampleClassParams& p, const TapTable& tw)
      : p_(p), tw_(tw), rs_(row_stride(p.Wo)), mem_(2 * p.K * rs_ + 16), ws_(p.W + kWin), stage_(p.K * ws_, 0.f),
        i0_(tw.i0.begin(), tw.i0.end()), i1_(tw.i1.begin(), tw.i1.end()), win_((p.Wo + kWin - 1) / kWin, -1),
        lane_(2 * win_.size(), -1),
        d0_(p.Wo), d1_(p.Wo) {
    // A chunk of 8 output columns is blended from the staged row with in-register permutes when its
    // taps are close together: when each half of 4 columns takes its taps from 4 consecutive source
    // columns (upsampling by about 1.5 or more), two 4-wide loads and two in-lane permutes (vpermilps, a
    // third of the cost of the cross-lane vpermps here); else when all 8 columns fall in 8 consecutive
    // source columns, one 8-wide load and two cross-lane permutes. Other chunks (downsampling) take the
    // scalar loop.
    for (int64_t c = 0; c * kWin + kWin <= p.Wo; ++c) {
      int32_t lo[2] = {INT32_MAX, INT32_MAX}, hi[2] = {INT32_MIN, INT32_MIN};
      for (int64_t j = c * kWin; j < c * kWin + kWin; ++j) {
        const int half = (j - c * kWin) / kLane;
        lo[half] = dlf_min(lo[half], dlf_min(i0_[j], i1_[j]));
        hi[half] = dlf_max(hi[half], dlf_max(i0_[j], i1_[j]));
      }
      const bool in_lanes = hi[0] - lo[0] < kLane && hi[1] - lo[1] < kLane;
      if (in_lanes) {
        lane_[2 * c] = lo[0], lane_[2 * c + 1] = lo[1];
      } else if (dlf_max(hi[0], hi[1]) - dlf_min(lo[0], lo[1]) < kWin) {
        win_[c] = dlf_min(lo[0], lo[1]);
      }
      for (int64_t j = c * kWin; j < c * kWin + kWin; ++j) {
        const int32_t base = in_lanes ? lo[(j - c * kWin) / kLane] : win_[c];
        d0_[j] = i0_[j] - base, d1_[j] = i1_[j] - base;
      }
    }
  }

  // fp32 elements a cache holds per class: two W-blended rows and the staged source row.
  static int64_t floats_per_class(const UpsampleClassParams& p) { return 2 * row_stride(p.Wo) + p.W + kWin; }

  const float* get(int64_t n, int64_t ih) { return buf() + slot(n, ih) * p_.K * rs_; }
  void touch(int64_t n, int64_t ih) { last_used_ = n * p_.H + ih; }
  // Whether every logit of source row (n, ih) is finite with |x| <= 1e30: then no blend of it can be
  // NaN or overflow, and a plain `v > best` is exactly argmax_takes (the row must be cached: get() first).
  bool tame(int64_t n, int64_t ih) const { return tame_[key_[0] == n * p_.H + ih ? 0 : 1]; }
 private:
  int slot(int64_t n, int64_t ih) {
    for (int s = 0; s < 2; ++s)
      if (key_[s] == n * p_.H + ih) return s;
    const int s = (key_[0] == last_used_) ? 1 : 0;  // evict the slot not used last
    key_[s] = n * p_.H + ih;
    tame_[s] = fill(buf() + s * p_.K * rs_, n, ih);
    return s;
  }

  // Stage the source row as fp32 (K, W) first (a transpose for channels_last logits), so the blend
  // along W gathers from a small L1-resident buffer with 32-bit indices, whatever the logits' layout.
  bool fill(float* out, int64_t n, int64_t ih) {
    const T* x = static_cast<const T*>(p_.x) + n * p_.xs_n + ih * p_.xs_h;
    const int64_t Wo = p_.Wo, W = p_.W, sw = p_.xs_w, sk = p_.xs_k;
    float* __restrict st = stage_.data();
    const int64_t ws = ws_;  // staged row stride: W plus a pad so 8-wide window loads stay in bounds
    bool checked = false, wild = false;  // wild: any NaN, inf or |x| > 1e30
    if (sk == 1) {
      int64_t k0 = 0;
#ifdef __AVX2__
      if constexpr (std::is_same_v<T, float>) {
        // 8 pixels x 8 classes at a time through an in-register transpose (a scalar element-by-element
        // transpose was a third of the row's fill time). Ragged ends take one more block ending at K or
        // W, overlapping the previous one (it writes the same values again).
        if (p_.K >= 8 && W >= 8) {
          __m256i magnitude = _mm256_setzero_si256();
          for (int64_t kb = 0; kb < p_.K; kb += 8) {
            const int64_t k = dlf_min(kb, p_.K - 8);
            for (int64_t wb = 0; wb < W; wb += 8) {
              const int64_t w = dlf_min(wb, W - 8);
              transpose8x8(x + w * sw + k, sw, st + k * ws + w, ws, magnitude);
            }
          }
          const __m256i over = _mm256_cmpeq_epi32(_mm256_max_epu32(magnitude, _mm256_set1_epi32(kTameBound + 1)),
                                                  magnitude);  // lanes with magnitude > kTameBound
          wild = _mm256_movemask_epi8(over) != 0;
          checked = true;
          k0 = p_.K;
        }
      }
#endif
      for (int64_t w = 0; w < W; ++w)
        for (int64_t k = k0; k < p_.K; ++k) st[k * ws + w] = ld(x + w * sw + k);
    } else {
      for (int64_t k = 0; k < p_.K; ++k)
        for (int64_t w = 0; w < W; ++w) st[k * ws + w] = ld(x + k * sk + w * sw);
    }
    for (int64_t k = 0; k < p_.K && !checked; ++k) {
      const float* __restrict s = st + k * ws;
      int64_t w = 0;
#ifdef __AVX2__
      const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      __m256 bad = _mm256_setzero_ps();
      for (; w + 8 <= W; w += 8)  // NLE_UQ: true for |x| > 1e30 and for NaN
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(s + w), magnitude),
                                              _mm256_set1_ps(1e30f), _CMP_NLE_UQ));
      wild |= _mm256_movemask_ps(bad) != 0;
#endif
      for (; w < W; ++w) wild |= !(fabsf(s[w]) <= 1e30f);
    }
    const int32_t* __restrict i0 = i0_.data();
    const int32_t* __restrict i1 = i1_.data();
    const float* __restrict l0 = tw_.l0.data();
    const float* __restrict l1 = tw_.l1.data();
    const int64_t K = p_.K, rs = rs_;
    int64_t wv = 0;  // columns [0, wv) are blended by the chunk loop below
#ifdef __AVX2__
    wv = Wo - Wo % kWin;
    // Chunk outer, class inner: a chunk's offsets and weights are loaded once for all K classes.
    for (int64_t wo = 0; wo < wv; wo += kWin) {
      const int32_t b0 = lane_[2 * (wo / kWin)], b1 = lane_[2 * (wo / kWin) + 1], b = win_[wo / kWin];
      const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d0_.data() + wo));
      const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d1_.data() + wo));
      const __m256 w0 = _mm256_loadu_ps(l0 + wo), w1 = _mm256_loadu_ps(l1 + wo);
      // fmaf(l0, a, l1 * c), lane by lane: the same rounding as bilinear_blend.
      if (b0 >= 0) {
        const float* s0 = st + b0;
        const float* s1 = st + b1;
        for (int64_t k = 0; k < K; ++k) {
          const __m256 window =
              _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(s0 + k * ws)), _mm_loadu_ps(s1 + k * ws), 1);
          const __m256 a = _mm256_permutevar_ps(window, d0);
          const __m256 c = _mm256_permutevar_ps(window, d1);
          _mm256_store_ps(out + k * rs + wo, _mm256_fmadd_ps(w0, a, _mm256_mul_ps(w1, c)));
        }
      } else if (b >= 0) {
        const float* s = st + b;
        for (int64_t k = 0; k < K; ++k) {
          const __m256 window = _mm256_loadu_ps(s + k * ws);
          const __m256 a = _mm256_permutevar8x32_ps(window, d0);
          const __m256 c = _mm256_permutevar8x32_ps(window, d1);
          _mm256_store_ps(out + k * rs + wo, _mm256_fmadd_ps(w0, a, _mm256_mul_ps(w1, c)));
        }
      } else {
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = wo; j < wo + kWin; ++j)
            out[k * rs + j] = bilinear_blend(l0[j], st[k * ws + i0[j]], l1[j], st[k * ws + i1[j]]);
      }
    }
#endif
    for (int64_t k = 0; k < K; ++k)
      for (int64_t wo = wv; wo < Wo; ++wo)
        out[k * rs + wo] = bilinear_blend(l0[wo], st[k * ws + i0[wo]], l1[wo], st[k * ws + i1[wo]]);
    return !wild;
  }

  const UpsampleClassParams& p_;
  const TapTable& tw_;
  static constexpr int64_t kWin = 8;
  static constexpr int64_t kLane = 4;
  float* buf() {  // mem_ from its first 64-byte boundary
    const auto a = reinterpret_cast<uintptr_t>(mem_.data());
    return mem_.data() + ((64 - a % 64) % 64) / sizeof(float);
  }
  const int64_t rs_;
  std::vector<float> mem_;
  int64_t ws_;
  std::vector<float> stage_;
  std::vector<int32_t> i0_, i1_;  // 32-bit copies of the W taps (AVX2 lane offsets)
  std::vector<int32_t> win_;      // per chunk of 8 output columns: first source column of its window, or -1
  std::vector<int32_t> lane_;     // per half chunk (4 columns): first source column of its window, or -1
  std::vector<int32_t> d0_, d1_;  // per output column: i0/i1 relative to its chunk's window
  int64_t key_[2] = {-1, -1};
  bool tame_[2] = {false, false};
  int64_t last_used_ = -1;
};

// Row buffers above this size per thread (the RowCache, plus softmax's exponentials) buy nothing: the class
// ops then run the per-pixel bodies straight on the logits, with no staging. Realistic shapes stay far below
// (21 classes at 513 columns: about 100 KB; 150 classes at 2048 columns: about 4 MB); 2^24 classes at 8
// columns took 2.6 GB before this bound.
constexpr int64_t kMaxRowStagingBytes = int64_t{16} << 20;

// Whether the row buffers of the class ops fit kMaxRowStagingBytes (64-bit safe for any K).
template <typename T>
bool rows_fit(const UpsampleClassParams& p, int64_t extra_floats_per_class) {
  const int64_t per_class = RowCache<T>::floats_per_class(p) + extra_floats_per_class;
  return p.K <= kMaxRowStagingBytes / (static_cast<int64_t>(sizeof(float)) * per_class);
}

// Output pixels per parallel chunk of the per-pixel bodies (each walks all K classes).
int64_t pixels_grain(int64_t K) {
  constexpr int64_t kMinClassValuesPerChunk = 1 << 16;
  return dlf_max<int64_t>(1, kMinClassValuesPerChunk / dlf_max<int64_t>(1, K));
}

// Calls fn(n, ho, th, r0, r1, tame) for each output row in [begin, end), r0/r1 being the W-blended rows and
// tame whether both hold only finite values of magnitude <= 1e30 (RowCache::tame).
template <typename T, typename Fn>
void for_rows(const UpsampleClassParams& p, const TapTable& th, const TapTable& tw, int64_t begin, int64_t end, Fn fn) {
  RowCache<T> cache(p, tw);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / p.Ho, ho = row % p.Ho;
    const LinearTap h = th.at(ho);
    const float* r0 = cache.get(n, h.i0);
    cache.touch(n, h.i0);
    const float* r1 = cache.get(n, h.i1);
    cache.touch(n, h.i1);
    fn(n, ho, h, r0, r1, cache.tame(n, h.i0) && cache.tame(n, h.i1));
  }
}

// Resized logit of class k at column wo, from the W-blended rows r0/r1 (class stride rs) and the H taps.
struct RowPairValue {
  const float* r0;
  const float* r1;
  int64_t rs;
  LinearTap h;
  DLF_FORCEINLINE float operator()(int64_t k) const { return bilinear_blend(h.l0, r0[k * rs], h.l1, r1[k * rs]); }
};

#ifdef __AVX2__
// Running argmax over K classes for NC x 8 output columns, kept in registers: NC independent chains
// hide the compare/blend latency. r0/r1 are W-blended source rows (K, Wo) at the first column. With
// kTame (both rows hold only finite logits of magnitude <= 1e30, see RowCache::tame) no blend is NaN,
// so argmax_takes reduces to one ordered compare. Class indices are carried as floats (exact below 2^24,
// kMaxVectorClasses): the whole update then stays in the floating-point domain, where mixing integer blends
// with the FMAs cost here about 1.5x.
template <int NC, bool kTame, typename OutT>
DLF_FORCEINLINE void argmax_columns_avx2(const float* r0, const float* r1, int64_t rs, int64_t K, const LinearTap& h,
                                         OutT* out) {
  const __m256 h0 = _mm256_set1_ps(h.l0), h1 = _mm256_set1_ps(h.l1);
  __m256 best[NC], arg[NC];
#pragma GCC unroll 4
  for (int c = 0; c < NC; ++c) {
    best[c] = _mm256_fmadd_ps(h0, _mm256_loadu_ps(r0 + 8 * c), _mm256_mul_ps(h1, _mm256_loadu_ps(r1 + 8 * c)));
    arg[c] = _mm256_setzero_ps();
  }
  __m256 kv = _mm256_setzero_ps();
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t k = 1; k < K; ++k) {
    kv = _mm256_add_ps(kv, one);
    const float* s0 = r0 + k * rs;
    const float* s1 = r1 + k * rs;
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
      // fmaf(h0, a, h1 * b): bilinear_blend's rounding.
      const __m256 v = _mm256_fmadd_ps(h0, _mm256_loadu_ps(s0 + 8 * c), _mm256_mul_ps(h1, _mm256_loadu_ps(s1 + 8 * c)));
      if constexpr (kTame) {
        // max_ps(v, best) is `v > best ? v : best`: the same choice as the blend, spread over other ports.
        const __m256 take = _mm256_cmp_ps(v, best[c], _CMP_GT_OQ);
        best[c] = _mm256_max_ps(v, best[c]);
        arg[c] = _mm256_blendv_ps(arg[c], kv, take);
      } else {
        // argmax_takes: !(v <= best) is "v > best or either is NaN"; a NaN best is never replaced.
        const __m256 take =
            _mm256_and_ps(_mm256_cmp_ps(v, best[c], _CMP_NLE_UQ), _mm256_cmp_ps(best[c], best[c], _CMP_ORD_Q));
        best[c] = _mm256_blendv_ps(best[c], v, take);
        arg[c] = _mm256_blendv_ps(arg[c], kv, take);
      }
    }
  }
#pragma GCC unroll 4
  for (int c = 0; c < NC; ++c) {
    const __m256i labels = _mm256_cvttps_epi32(arg[c]);
    if constexpr (sizeof(OutT) == 8) {  // int64 labels straight from the registers, widened lane by lane
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * c), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(labels)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * c + 4),
                          _mm256_cvtepi32_epi64(_mm256_extracti128_si256(labels, 1)));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * c), labels);
    }
  }
}

// All Wo >= 8 columns of `rows` output rows (int64 labels, row r at out + r * Wo) that share the source rows
// r0/r1: strips of 32 columns go through all the rows before the next strip, so the strip's K x 2
// source lines stay in L1 while they are reused (an upsampling factor s reuses them s times).
template <bool kTame>
void argmax_run_avx2(const float* r0, const float* r1, int64_t rs, int64_t Wo, int64_t K, const TapTable& th,
                     int64_t ho0, int64_t rows, int64_t* out, const char* next, int64_t next_bytes) {
  // The source row the next run will stage (next_bytes from next; 0: none), fetched a slice per strip so
  // the loads spread over this run's compute instead of stalling the next fill.
  const int64_t strips = dlf_max<int64_t>(1, Wo / 32), lines = (next_bytes + 63) / 64;
  const int64_t per_strip = (lines + strips - 1) / strips;
  int64_t w = 0;
  for (; w + 32 <= Wo; w += 32) {
    for (int64_t l = (w / 32) * per_strip; l < dlf_min(lines, (w / 32 + 1) * per_strip); ++l)
      _mm_prefetch(next + 64 * l, _MM_HINT_T1);
    for (int64_t r = 0; r < rows; ++r) {
      // The labels two strips ahead, fetched for writing now: after a larger op has run, the output's
      // lines are in memory, and their reads for ownership would otherwise stall the stores.
      const int64_t* ahead = out + r * Wo + dlf_min<int64_t>(w + 64, Wo - 1);
      for (int l = 0; l < 4; ++l) _mm_prefetch(reinterpret_cast<const char*>(ahead + 8 * l), _MM_HINT_ET0);
      argmax_columns_avx2<4, kTame>(r0 + w, r1 + w, rs, K, th.at(ho0 + r), out + r * Wo + w);
    }
  }
  for (; w + 8 <= Wo; w += 8)
    for (int64_t r = 0; r < rows; ++r)
      argmax_columns_avx2<1, kTame>(r0 + w, r1 + w, rs, K, th.at(ho0 + r), out + r * Wo + w);
  if (w < Wo)  // a ragged end: the last 8 columns, overlapping those already done
    for (int64_t r = 0; r < rows; ++r)
      argmax_columns_avx2<1, kTame>(r0 + Wo - 8, r1 + Wo - 8, rs, K, th.at(ho0 + r), out + r * Wo + Wo - 8);
}
#endif

// The vector argmax carries class indices as floats, exact up to 2^24 (more classes exceed kMaxRowStagingBytes
// anyway and take the per-pixel body).
constexpr int64_t kMaxVectorClasses = int64_t{1} << 24;

// Longest run of output rows computed together.
constexpr int64_t kMaxRunRows = 8;

template <typename T>
void argmax_rows(const UpsampleClassParams& p) {
  if (!rows_fit<T>(p, 0)) {  // huge class counts: the shared body per pixel, no staging
    at::parallel_for(0, p.N * p.Ho * p.Wo, pixels_grain(p.K), [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) upsample_argmax_body<T>(p, idx);
    });
    return;
  }
  const TapTable th(p.H, p.Ho, p.align_corners), tw(p.W, p.Wo, p.align_corners, p.flip);
  at::parallel_for(0, p.N * p.Ho, rows_grain(p.K * p.Wo), [&](int64_t begin, int64_t end) {
    const int64_t Wo = p.Wo, rs = row_stride(Wo);
    RowCache<T> cache(p, tw);
    // Runs of consecutive output rows of one image that blend the same two source rows.
    for (int64_t row = begin; row < end;) {
      const int64_t n = row / p.Ho, ho0 = row % p.Ho;
      const int64_t i0 = th.i0[ho0], i1 = th.i1[ho0];
      int64_t rows = 1;
      while (rows < kMaxRunRows && row + rows < end && ho0 + rows < p.Ho && th.i0[ho0 + rows] == i0 &&
             th.i1[ho0 + rows] == i1)
        ++rows;
      const float* r0 = cache.get(n, i0);
      cache.touch(n, i0);
      const float* r1 = cache.get(n, i1);
      cache.touch(n, i1);
      int64_t* out = p.labels + (n * p.Ho + ho0) * Wo;
#ifdef __AVX2__
      // 8-wide chunks write the int64 labels directly; a ragged end (Wo % 8 columns) is one more chunk
      // ending at Wo, overlapping the previous one (its overlapping columns get the same labels again).
      if (Wo >= 8 && p.K <= kMaxVectorClasses) {
        // channels_last logits: a source row is one contiguous block, worth fetching ahead
        const int64_t ih_next = dlf_max(i0, i1) + 1;
        const bool ahead = p.xs_k == 1 && p.xs_w == p.K && ih_next < p.H && ho0 + rows < p.Ho;
        const char* next = static_cast<const char*>(p.x) + (n * p.xs_n + ih_next * p.xs_h) * sizeof(T);
        const int64_t next_bytes = ahead ? p.W * p.K * static_cast<int64_t>(sizeof(T)) : 0;
        if (cache.tame(n, i0) && cache.tame(n, i1))
          argmax_run_avx2<true>(r0, r1, rs, Wo, p.K, th, ho0, rows, out, next, next_bytes);
        else
          argmax_run_avx2<false>(r0, r1, rs, Wo, p.K, th, ho0, rows, out, next, next_bytes);
        row += rows;
        continue;
      }
#endif
      for (int64_t r = 0; r < rows; ++r)  // narrow rows (or no AVX2): the shared per-pixel walk
        for (int64_t wo = 0; wo < Wo; ++wo)
          out[r * Wo + wo] = argmax_pixel(RowPairValue{r0 + wo, r1 + wo, rs, th.at(ho0 + r)}, p.K);
      row += rows;
    }
  });
}

#ifdef __AVX2__
// exp(x) for 8 floats, within about 2 ulp of expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
// for an exact reduction), a degree-6 polynomial for e^r, and 2^n built in the exponent bits. Inputs
// are <= 0 here (logit minus the row max), clamped below where expf underflows to 0 anyway.
DLF_FORCEINLINE __m256 exp_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

// Narrowest output row the vectorized softmax takes (one AVX2 register of columns).
constexpr int64_t kMinVectorColumns = 8;

template <typename T>
void softmax_accumulate_rows(const UpsampleClassParams& p) {
  if (!rows_fit<T>(p, p.Wo)) {  // huge class counts: the shared body per pixel, no staging
    at::parallel_for(0, p.N * p.Ho * p.Wo, pixels_grain(p.K), [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) upsample_softmax_accumulate_body<T>(p, idx);
    });
    return;
  }
  const TapTable th(p.H, p.Ho, p.align_corners), tw(p.W, p.Wo, p.align_corners, p.flip);
  at::parallel_for(0, p.N * p.Ho, rows_grain(p.K * p.Wo), [&](int64_t begin, int64_t end) {
    const int64_t Wo = p.Wo, K = p.K, rs = row_stride(Wo);
    std::vector<float> val(K * Wo), mx(Wo), scale(Wo);
    for_rows<T>(p, th, tw, begin, end,
                [&](int64_t n, int64_t ho, const LinearTap& h, const float* r0, const float* r1, bool tame) {
      float* acc = p.accum + n * K * p.Ho * Wo + ho * Wo;
      if (!tame || Wo < kMinVectorColumns) {
        // Narrow rows, and rows blended from source rows holding NaN, inf or |x| > 1e30: the shared per-pixel
        // walk, whose max keeps NaN and whose scale is NaN for a non-finite max (torch.softmax's results).
        for (int64_t wo = 0; wo < Wo; ++wo)
          softmax_accumulate_pixel(RowPairValue{r0 + wo, r1 + wo, rs, h}, K, p.weight, acc + wo, p.Ho * Wo);
        return;
      }
      // Tame rows: every resized logit is finite, so the plain max and weight / sum give torch.softmax's results
      // without the NaN rules.
      float* __restrict v = val.data();
      float* __restrict m = mx.data();
      float* __restrict s = scale.data();
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t wo = 0; wo < Wo; ++wo) {
          const float x = bilinear_blend(h.l0, r0[k * rs + wo], h.l1, r1[k * rs + wo]);
          v[k * Wo + wo] = x;
          m[wo] = k == 0 ? x : dlf_max(m[wo], x);
        }
      }
      for (int64_t wo = 0; wo < Wo; ++wo) s[wo] = 0.f;
      for (int64_t k = 0; k < K; ++k) {
        int64_t wo = 0;
#ifdef __AVX2__
        for (; wo + 8 <= Wo; wo += 8) {
          const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(v + k * Wo + wo), _mm256_loadu_ps(m + wo)));
          _mm256_storeu_ps(v + k * Wo + wo, e);
          _mm256_storeu_ps(s + wo, _mm256_add_ps(_mm256_loadu_ps(s + wo), e));
        }
#endif
        for (; wo < Wo; ++wo) {
          const float e = expf(v[k * Wo + wo] - m[wo]);
          v[k * Wo + wo] = e;
          s[wo] += e;
        }
      }
      for (int64_t wo = 0; wo < Wo; ++wo) s[wo] = p.weight / s[wo];
      for (int64_t k = 0; k < K; ++k) {
        float* __restrict a = acc + k * p.Ho * Wo;
        for (int64_t wo = 0; wo < Wo; ++wo) a[wo] += v[k * Wo + wo] * s[wo];
      }
    });
  });
}

template <template <typename> class Fn, typename P>
void dispatch(const P& p, c10::ScalarType dtype, const char* op) {
  switch (dtype) {
    case c10::ScalarType::Float: return Fn<float>::run(p);
    case c10::ScalarType::Half: return Fn<c10::Half>::run(p);
    case c10::ScalarType::BFloat16: return Fn<c10::BFloat16>::run(p);
    default: TORCH_CHECK(false, op, ": unsupported dtype ", dtype);
  }
}

template <typename T>
struct ConcatRun {
  static void run(const UpsampleConcatParams& p) {
    if (p.channels_last) {
      concat_channels_last<T>(p);
    } else {
      concat_nchw<T>(p);
    }
  }
};
template <typename T>
struct ArgmaxRun {
  static void run(const UpsampleClassParams& p) { argmax_rows<T>(p); }
};
template <typename T>
struct SoftmaxRun {
  static void run(const UpsampleClassParams& p) { softmax_accumulate_rows<T>(p); }
};

}  // namespace

void upsample_concat_cpu(const UpsampleConcatParams& p, c10::ScalarType dtype) {
  dispatch<ConcatRun>(p, dtype, "upsample_concat");
}
void upsample_argmax_cpu(const UpsampleClassParams& p, c10::ScalarType dtype) {
  dispatch<ArgmaxRun>(p, dtype, "upsample_argmax");
}
void upsample_softmax_accumulate_cpu(const UpsampleClassParams& p, c10::ScalarType dtype) {
  dispatch<SoftmaxRun>(p, dtype, "upsample_softmax_accumulate");
}

}  // namespace dlf::DLF_CPU_NS
