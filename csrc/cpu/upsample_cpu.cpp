// CPU launchers of the upsample ops. They run over output rows with at::parallel_for and call the
// shared bodies and tap/blend functions of csrc/kernels/upsample.h, so every path rounds as the CUDA
// kernels do. Two CPU-specific arrangements make them fast, neither changes the arithmetic:
//  * the source taps of every output row and column are computed once into small tables;
//  * channels_last concat blends whole channel vectors (unit stride, the compiler vectorizes the
//    loops for the variant's ISA), and the class ops blend each needed source row along W once into a
//    (K, Wo) row buffer, then blend two such rows along H for all classes with a running
//    max / softmax that is vectorized over output columns.
// The vector code is written once over common/simd.h's SimdF (16 columns with AVX-512 and in the portable
// variant, 8 with AVX2), so the portable variant's tests walk the AVX-512 build's lane and tail logic.
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

#include "common/simd.h"
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
  DLF_FORCEINLINE void add(SimdBits) {}
  DLF_FORCEINLINE void tail(const void*, int64_t) {}
};

// Copy of a channel vector (a few hundred bytes to a few KiB) inline: a libc memcpy call per pixel and
// input cost as much as the copy itself at these sizes. `track` sees every SimdBits block the vector loop
// moves (add) and the bytes copied after it (tail). Memory-bound: the 64-byte blocks of AVX-512 gain nothing
// measurable over 32-byte ones, they are only what the shared type gives.
template <typename Tracker = NoTracking>
DLF_FORCEINLINE void copy_bytes(void* __restrict dst, const void* __restrict src, int64_t n,
                                Tracker&& track = Tracker{}) {
  constexpr int64_t B = SimdBits::kBytes;
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  int64_t i = 0;
  for (; i + 4 * B <= n; i += 4 * B) {
    const SimdBits a = SimdBits::load(s + i), b = SimdBits::load(s + i + B);
    const SimdBits c = SimdBits::load(s + i + 2 * B), e = SimdBits::load(s + i + 3 * B);
    a.store(d + i), b.store(d + i + B), c.store(d + i + 2 * B), e.store(d + i + 3 * B);
    track.add(a), track.add(b), track.add(c), track.add(e);
  }
  for (; i + B <= n; i += B) {
    const SimdBits a = SimdBits::load(s + i);
    a.store(d + i);
    track.add(a);
  }
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
// maximum of the magnitude bits (sign cleared): an and and a max per block, free beside the loads and
// stores; the maximum is compared once per output row.
template <typename T>
struct CopiedMagnitude {
  static_assert(sizeof(T) == 4 || sizeof(T) == 2);
  SimdBits lanes = SimdBits::zero();
  DLF_FORCEINLINE void add(SimdBits v) { lanes.max_magnitude<sizeof(T)>(v); }
  bool scalar_non_finite = false;  // elements copied outside the blocks

  DLF_FORCEINLINE void tail(const void* p, int64_t bytes) {
    const T* x = static_cast<const T*>(p);
    for (int64_t e = 0; e < bytes / static_cast<int64_t>(sizeof(T)); ++e)
      scalar_non_finite |= !(fabsf(ld(x + e)) < INFINITY);
  }

  bool non_finite() const { return scalar_non_finite || lanes.any_at_least<sizeof(T)>(kInfBits<T>); }
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
// line-aligned and SimdF loads at multiples of SimdF::kLanes columns never straddle two lines.
inline int64_t row_stride(int64_t Wo) { return (Wo + 15) / 16 * 16; }


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
        lane_(kGroups * win_.size(), -1),
        d0_(p.Wo), d1_(p.Wo) {
    // A chunk of kWin output columns (SimdF::kLanes) is blended from the staged row with in-register permutes
    // when its taps are close together: when each group of 4 columns takes its taps from 4 consecutive source
    // columns (upsampling by about 1.5 or more), one 4-wide load per group and two in-lane permutes (vpermilps,
    // a third of the cost of the cross-lane vpermps on the AVX2 machine); else when all kWin columns fall in
    // kWin consecutive source columns, one full-width load and two cross-lane permutes. Other chunks
    // (downsampling) take the scalar loop.
    for (int64_t c = 0; c * kWin + kWin <= p.Wo; ++c) {
      int32_t lo[kGroups], hi[kGroups];
      for (int g = 0; g < kGroups; ++g) lo[g] = INT32_MAX, hi[g] = INT32_MIN;
      for (int64_t j = c * kWin; j < c * kWin + kWin; ++j) {
        const int64_t g = (j - c * kWin) / kLane;
        lo[g] = dlf_min(lo[g], dlf_min(i0_[j], i1_[j]));
        hi[g] = dlf_max(hi[g], dlf_max(i0_[j], i1_[j]));
      }
      bool in_lanes = true;
      int32_t lo_all = INT32_MAX, hi_all = INT32_MIN;
      for (int g = 0; g < kGroups; ++g) {
        in_lanes = in_lanes && hi[g] - lo[g] < kLane;
        lo_all = dlf_min(lo_all, lo[g]), hi_all = dlf_max(hi_all, hi[g]);
      }
      if (in_lanes) {
        for (int g = 0; g < kGroups; ++g) lane_[kGroups * c + g] = lo[g];
      } else if (hi_all - lo_all < kWin) {
        win_[c] = lo_all;
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
    const int64_t ws = ws_;  // staged row stride: W plus a pad so kWin-wide window loads stay in bounds
    bool checked = false, wild = false;  // wild: any NaN, inf or |x| > 1e30
    if (sk == 1) {
      int64_t k0 = 0;
      if constexpr (std::is_same_v<T, float>) {
        // kWin pixels x kWin classes at a time through an in-register transpose (a scalar element-by-element
        // transpose was a third of the row's fill time on AVX2). Ragged ends take one more block ending at K or
        // W, overlapping the previous one (it writes the same values again).
        if (p_.K >= kWin && W >= kWin) {
          SimdBits magnitude = SimdBits::zero();
          for (int64_t kb = 0; kb < p_.K; kb += kWin) {
            const int64_t k = dlf_min(kb, p_.K - kWin);
            for (int64_t wb = 0; wb < W; wb += kWin) {
              const int64_t w = dlf_min(wb, W - kWin);
              transpose_block(x + w * sw + k, sw, st + k * ws + w, ws, magnitude);
            }
          }
          wild = magnitude.any_at_least<4>(kTameBound + 1);  // a magnitude > kTameBound
          checked = true;
          k0 = p_.K;
        }
      }
      for (int64_t w = 0; w < W; ++w)
        for (int64_t k = k0; k < p_.K; ++k) st[k * ws + w] = ld(x + w * sw + k);
    } else {
      for (int64_t k = 0; k < p_.K; ++k)
        for (int64_t w = 0; w < W; ++w) st[k * ws + w] = ld(x + k * sk + w * sw);
    }
    for (int64_t k = 0; k < p_.K && !checked; ++k) {
      const float* __restrict s = st + k * ws;
      int64_t w = 0;
      SimdMask bad = SimdMask::none();
      for (; w + kWin <= W; w += kWin)  // not_le: true for |x| > 1e30 and for NaN
        bad = bad | SimdF::not_le(SimdF::abs(SimdF::load(s + w)), SimdF::set1(1e30f));
      wild |= bad.any();
      for (; w < W; ++w) wild |= !(fabsf(s[w]) <= 1e30f);
    }
    const int32_t* __restrict i0 = i0_.data();
    const int32_t* __restrict i1 = i1_.data();
    const float* __restrict l0 = tw_.l0.data();
    const float* __restrict l1 = tw_.l1.data();
    const int64_t K = p_.K, rs = rs_;
    const int64_t wv = Wo - Wo % kWin;  // columns [0, wv) are blended by the chunk loop below
    // Chunk outer, class inner: a chunk's offsets and weights are loaded once for all K classes.
    for (int64_t wo = 0; wo < wv; wo += kWin) {
      const int32_t* lanes = lane_.data() + kGroups * (wo / kWin);
      const int32_t b = win_[wo / kWin];
      const SimdI d0 = SimdI::load(d0_.data() + wo), d1 = SimdI::load(d1_.data() + wo);
      const SimdF w0 = SimdF::load(l0 + wo), w1 = SimdF::load(l1 + wo);
      // fmaf(l0, a, l1 * c), lane by lane: the same rounding as bilinear_blend.
      if (lanes[0] >= 0) {
        for (int64_t k = 0; k < K; ++k) {
          const float* g[kGroups];
          for (int q = 0; q < kGroups; ++q) g[q] = st + k * ws + lanes[q];
          const SimdF window = SimdF::load_groups(g);
          const SimdF a = SimdF::permute_in_groups(window, d0), c = SimdF::permute_in_groups(window, d1);
          SimdF::fma(w0, a, w1 * c).store(out + k * rs + wo);
        }
      } else if (b >= 0) {
        const float* s = st + b;
        for (int64_t k = 0; k < K; ++k) {
          const SimdF window = SimdF::load(s + k * ws);
          const SimdF a = SimdF::permute(window, d0), c = SimdF::permute(window, d1);
          SimdF::fma(w0, a, w1 * c).store(out + k * rs + wo);
        }
      } else {
        for (int64_t k = 0; k < K; ++k)
          for (int64_t j = wo; j < wo + kWin; ++j)
            out[k * rs + j] = bilinear_blend(l0[j], st[k * ws + i0[j]], l1[j], st[k * ws + i1[j]]);
      }
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t wo = wv; wo < Wo; ++wo)
        out[k * rs + wo] = bilinear_blend(l0[wo], st[k * ws + i0[wo]], l1[wo], st[k * ws + i1[wo]]);
    return !wild;
  }

  const UpsampleClassParams& p_;
  const TapTable& tw_;
  static constexpr int64_t kWin = SimdF::kLanes;  // output columns per vector chunk
  static constexpr int64_t kLane = 4;             // columns per in-lane permute group
  static constexpr int kGroups = static_cast<int>(kWin / kLane);
  float* buf() {  // mem_ from its first 64-byte boundary
    const auto a = reinterpret_cast<uintptr_t>(mem_.data());
    return mem_.data() + ((64 - a % 64) % 64) / sizeof(float);
  }
  const int64_t rs_;
  std::vector<float> mem_;
  int64_t ws_;
  std::vector<float> stage_;
  std::vector<int32_t> i0_, i1_;  // 32-bit copies of the W taps (SimdI lane offsets)
  std::vector<int32_t> win_;      // per chunk of kWin output columns: first source column of its window, or -1
  std::vector<int32_t> lane_;     // per group of 4 columns: first source column of its window, or -1
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

// Running argmax over K classes for NC x SimdF::kLanes output columns, kept in registers: NC independent
// chains hide the compare/blend latency. r0/r1 are W-blended source rows (K, Wo) at the first column. With
// kTame (both rows hold only finite logits of magnitude <= 1e30, see RowCache::tame) no blend is NaN,
// so argmax_takes reduces to one ordered compare. Class indices are carried as floats (exact below 2^24,
// kMaxVectorClasses): the whole update then stays in the floating-point domain, where mixing integer blends
// with the FMAs cost about 1.5x on the AVX2 machine.
template <int NC, bool kTame, typename OutT>
DLF_FORCEINLINE void argmax_columns(const float* r0, const float* r1, int64_t rs, int64_t K, const LinearTap& h,
                                    OutT* out) {
  constexpr int L = SimdF::kLanes;
  const SimdF h0 = SimdF::set1(h.l0), h1 = SimdF::set1(h.l1);
  SimdF best[NC], arg[NC];
#pragma GCC unroll 4
  for (int c = 0; c < NC; ++c) {
    best[c] = SimdF::fma(h0, SimdF::load(r0 + L * c), h1 * SimdF::load(r1 + L * c));
    arg[c] = SimdF::zero();
  }
  SimdF kv = SimdF::zero();
  const SimdF one = SimdF::set1(1.f);
  for (int64_t k = 1; k < K; ++k) {
    kv = kv + one;
    const float* s0 = r0 + k * rs;
    const float* s1 = r1 + k * rs;
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
      // fmaf(h0, a, h1 * b): bilinear_blend's rounding.
      const SimdF v = SimdF::fma(h0, SimdF::load(s0 + L * c), h1 * SimdF::load(s1 + L * c));
      if constexpr (kTame) {
        // max(v, best) is `v > best ? v : best`: the same choice as the select, spread over other ports.
        const SimdMask take = SimdF::gt(v, best[c]);
        best[c] = SimdF::max(v, best[c]);
        arg[c] = SimdF::select(take, kv, arg[c]);
      } else {
        // argmax_takes: !(v <= best) is "v > best or either is NaN"; a NaN best is never replaced.
        const SimdMask take = SimdF::not_le(v, best[c]) & SimdF::ordered(best[c]);
        best[c] = SimdF::select(take, v, best[c]);
        arg[c] = SimdF::select(take, kv, arg[c]);
      }
    }
  }
#pragma GCC unroll 4
  for (int c = 0; c < NC; ++c) SimdF::store_trunc(arg[c], out + L * c);  // int32 or int64 labels
}

// All Wo >= SimdF::kLanes columns of `rows` output rows (int64 labels, row r at out + r * Wo) that share the
// source rows r0/r1: strips of 4 vectors of columns go through all the rows before the next strip, so the
// strip's K x 2 source lines stay in L1 while they are reused (an upsampling factor s reuses them s times).
template <bool kTame>
void argmax_run(const float* r0, const float* r1, int64_t rs, int64_t Wo, int64_t K, const TapTable& th, int64_t ho0,
                int64_t rows, int64_t* out, const char* next, int64_t next_bytes) {
  constexpr int64_t L = SimdF::kLanes, kStrip = 4 * L;
  // The source row the next run will stage (next_bytes from next; 0: none), fetched a slice per strip so
  // the loads spread over this run's compute instead of stalling the next fill.
  const int64_t strips = dlf_max<int64_t>(1, Wo / kStrip), lines = (next_bytes + 63) / 64;
  const int64_t per_strip = (lines + strips - 1) / strips;
  int64_t w = 0;
  for (; w + kStrip <= Wo; w += kStrip) {
    for (int64_t l = (w / kStrip) * per_strip; l < dlf_min(lines, (w / kStrip + 1) * per_strip); ++l)
      prefetch_l2(next + 64 * l);
    for (int64_t r = 0; r < rows; ++r) {
      // The labels two strips ahead, fetched for writing now: after a larger op has run, the output's
      // lines are in memory, and their reads for ownership would otherwise stall the stores.
      const int64_t* ahead = out + r * Wo + dlf_min<int64_t>(w + 2 * kStrip, Wo - 1);
      for (int64_t l = 0; l < kStrip / 8; ++l) prefetch_for_write(ahead + 8 * l);
      argmax_columns<4, kTame>(r0 + w, r1 + w, rs, K, th.at(ho0 + r), out + r * Wo + w);
    }
  }
  for (; w + L <= Wo; w += L)
    for (int64_t r = 0; r < rows; ++r)
      argmax_columns<1, kTame>(r0 + w, r1 + w, rs, K, th.at(ho0 + r), out + r * Wo + w);
  if (w < Wo)  // a ragged end: the last L columns, overlapping those already done
    for (int64_t r = 0; r < rows; ++r)
      argmax_columns<1, kTame>(r0 + Wo - L, r1 + Wo - L, rs, K, th.at(ho0 + r), out + r * Wo + Wo - L);
}

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
      // SimdF::kLanes-wide chunks write the int64 labels directly; a ragged end (Wo % kLanes columns) is one
      // more chunk ending at Wo, overlapping the previous one (its overlapping columns get the same labels again).
      if (Wo >= SimdF::kLanes && p.K <= kMaxVectorClasses) {
        // channels_last logits: a source row is one contiguous block, worth fetching ahead
        const int64_t ih_next = dlf_max(i0, i1) + 1;
        const bool ahead = p.xs_k == 1 && p.xs_w == p.K && ih_next < p.H && ho0 + rows < p.Ho;
        const char* next = static_cast<const char*>(p.x) + (n * p.xs_n + ih_next * p.xs_h) * sizeof(T);
        const int64_t next_bytes = ahead ? p.W * p.K * static_cast<int64_t>(sizeof(T)) : 0;
        if (cache.tame(n, i0) && cache.tame(n, i1))
          argmax_run<true>(r0, r1, rs, Wo, p.K, th, ho0, rows, out, next, next_bytes);
        else
          argmax_run<false>(r0, r1, rs, Wo, p.K, th, ho0, rows, out, next, next_bytes);
        row += rows;
        continue;
      }
      for (int64_t r = 0; r < rows; ++r)  // narrow rows: the shared per-pixel walk
        for (int64_t wo = 0; wo < Wo; ++wo)
          out[r * Wo + wo] = argmax_pixel(RowPairValue{r0 + wo, r1 + wo, rs, th.at(ho0 + r)}, p.K);
      row += rows;
    }
  });
}

// exp(x) lane by lane, within about 2 ulp of expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
// for an exact reduction), a degree-6 polynomial for e^r, and 2^n built in the exponent bits. Inputs
// are <= 0 here (logit minus the row max), clamped below where expf underflows to 0 anyway.
// x + n * (-c) fused is x - n * c fused (vfnmadd) bit for bit: negating a constant is exact.
DLF_FORCEINLINE SimdF exp_nonpositive(SimdF x) {
  x = SimdF::max(x, SimdF::set1(-87.3f));
  const SimdF n = SimdF::round_even(x * SimdF::set1(1.44269504088896341f));
  SimdF r = SimdF::mul_add(n, SimdF::set1(-0.693359375f), x);
  r = SimdF::mul_add(n, SimdF::set1(2.12194440e-4f), r);
  SimdF p = SimdF::set1(1.9875691500e-4f);
  p = SimdF::mul_add(p, r, SimdF::set1(1.3981999507e-3f));
  p = SimdF::mul_add(p, r, SimdF::set1(8.3334519073e-3f));
  p = SimdF::mul_add(p, r, SimdF::set1(4.1665795894e-2f));
  p = SimdF::mul_add(p, r, SimdF::set1(1.6666665459e-1f));
  p = SimdF::mul_add(p, r, SimdF::set1(5.0000001201e-1f));
  p = SimdF::mul_add(p, r * r, r + SimdF::set1(1.f));
  return p * SimdF::exp2_int(n);
}

// Narrowest output row the vectorized softmax takes (one SimdF of columns).
constexpr int64_t kMinVectorColumns = SimdF::kLanes;

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
        for (; wo + SimdF::kLanes <= Wo; wo += SimdF::kLanes) {
          const SimdF e = exp_nonpositive(SimdF::load(v + k * Wo + wo) - SimdF::load(m + wo));
          e.store(v + k * Wo + wo);
          (SimdF::load(s + wo) + e).store(s + wo);
        }
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
