// CUDA kernels of dwconv_bn_act, forward and backward, with their launch logic (tile choice, pack width,
// alignment fallback, index width, dtype dispatch). Built twice from this one text (see csrc/cuda/launch.cuh):
// by nvcc in dwconv_bn_act_cuda.cu, and by the host compiler in csrc/emu/dwconv_bn_act_emu.cpp, where the
// kernels run through the CUDA emulation (backend "cuda_emu"). Design notes: docs/kernels.md, section
// "CUDA dwconv_bn_act kernels". No GPU has run them yet: they are compiled and emulated.
//
// Every kernel is tiled the same way. A block owns a channel slab (P packs of V channels: 16-byte packs,
// or single channels for the unaligned fallback and NCHW) of one image over a 2-D tile of its map, and
// stages in shared memory, once per block:
//   * the slab's K*K weights, scale and shift (16-byte loads from the blocked fp32 weight);
//   * the input the tile needs: for each tap row i the band of input rows the tile's outputs read through
//     that tap, clipped to the image, the K bands laid out densely (overlapping bands merge; for a large
//     dilation they stay apart and the rows between them are never loaded); columns alike. For the
//     ASPP and decoder maps a block holds its whole slab, so each input element is read from global
//     memory once.
// Then a thread owns one pack over a strided set of the tile's outputs, with the weights of its pack in
// registers for k = 3 (from shared memory otherwise), and reads each valid tap from shared memory;
// out-of-image taps are skipped, never loaded. Index math inside an image is 32-bit when the tensors
// allow it (chosen at launch).
//
// Backward: one kernel recomputes the conv on the staged tile, forms g = grad_y * act'(z) (grad_y or 0, so
// exact in x's dtype), writes g (the one full-size temporary, x's dtype) and reduces the parameter gradients
// of its slab over its tile in shared memory (fixed order), then adds them with one atomicAdd per block,
// channel and parameter, or, when deterministic algorithms are on, stores per-block partials that a second
// kernel sums in a fixed order. A third kernel computes dx = scale * (the depthwise conv of g with the
// flipped taps), tiled the same way over the input map.
//
// float64 is not instantiated: it is a checking dtype, served by the cpu and reference backends.
#pragma once

#include <algorithm>
#include <limits>

#include "common/memory.h"
#include "cuda/launch.cuh"
#include "kernels/dwconv_bn_act.h"

#if !defined(DLF_DYNAMIC_SHARED)
// The block's dynamic shared memory (extern __shared__), as the emulation spells it.
#define DLF_DYNAMIC_SHARED(T, name)                                   \
  extern __shared__ __align__(16) unsigned char dlf_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(dlf_dynamic_smem_)
#endif

namespace dlf::DLF_GPU_NS {
namespace dwconv {

constexpr int kThreads = 256;
constexpr int64_t kSmemBudget = 48 * 1024;  // without the opt-in attribute, the limit of every GPU
constexpr int kSlabBytes = 32;              // channels per block: one 32-byte sector per pixel

// ---------------------------------------------------------------------------------------------------
// Bands: which rows (or columns) a tile stages, and where each lies in shared memory.

// floor(a / s) for the strides the op takes (1 and 2): a shift, no 64-bit division (a division is a call on
// the GPU, and its call frame spilled registers in the dx kernels).
DLF_HOST_DEVICE inline int64_t floor_div_stride(int64_t a, int s) { return s == 1 ? a : (a >> 1); }

// One axis of the conv. Forward (and the parameter-gradient kernel): tiles are over outputs and stage
// input coordinates. Transposed (dx): tiles are over inputs and stage output coordinates.
struct Axis {
  int64_t size_in, size_out, pad, dil;
  int stride, K;
  bool transposed;
};

// The coordinates [lo, hi) tap i reaches from the tile [t0, t0 + T) of its axis, clipped to the staged map.
DLF_HOST_DEVICE inline void tap_band(const Axis& a, int64_t t0, int64_t T, int i, int64_t& lo, int64_t& hi) {
  const int64_t tap = i * a.dil - a.pad;
  if (!a.transposed) {
    const int64_t last = (t0 + T < a.size_out ? t0 + T : a.size_out) - 1;
    lo = t0 * a.stride + tap;
    hi = last * a.stride + tap + 1;
    lo = lo > 0 ? lo : 0;
    hi = hi < a.size_in ? hi : a.size_in;
  } else {
    const int64_t last = (t0 + T < a.size_in ? t0 + T : a.size_in) - 1;
    lo = -floor_div_stride(-(t0 - tap), a.stride);  // ceil
    hi = floor_div_stride(last - tap, a.stride) + 1;
    lo = lo > 0 ? lo : 0;
    hi = hi < a.size_out ? hi : a.size_out;
  }
  if (hi < lo) hi = lo;
}

// Lay the K bands of a tile out densely, in order of their first coordinate (tap order forward, reversed
// transposed): coordinate x of band i lies at position x + off[i]. Bands that overlap or touch share one
// run of positions. Returns the number of positions; fills off/lo/hi when given.
template <typename I>
DLF_HOST_DEVICE inline int64_t lay_out_bands(const Axis& a, int64_t t0, int64_t T, I* off, I* lo_out, I* hi_out) {
  int64_t total = 0, run_end = 0, run_off = 0;
  bool open = false;
  for (int k = 0; k < a.K; ++k) {
    const int i = a.transposed ? a.K - 1 - k : k;
    int64_t lo, hi;
    tap_band(a, t0, T, i, lo, hi);
    if (lo < hi) {
      if (!open || lo > run_end) {
        run_off = total - lo;
        run_end = hi;
        open = true;
      } else if (hi > run_end) {
        run_end = hi;
      }
      total = run_end + run_off;
    }
    if (off != nullptr) {
      off[i] = static_cast<I>(run_off);
      lo_out[i] = static_cast<I>(lo);
      hi_out[i] = static_cast<I>(hi);
    }
  }
  return total;
}

// The most positions any tile of length T along an axis of `extent` stages: exact (every tile laid out) up
// to 256 tiles, else a bound (the map; K bands of the longest band; the span of the K bands).
inline int64_t max_staged(const Axis& a, int64_t T, int64_t extent) {
  if ((extent + T - 1) / T > 256) {
    const int64_t band = a.transposed ? (T - 1) / a.stride + 1 : (T - 1) * a.stride + 1;
    const int64_t span = a.transposed ? (T - 1 + (a.K - 1) * a.dil) / a.stride + 2 : band + (a.K - 1) * a.dil;
    return std::min({a.transposed ? a.size_out : a.size_in, a.K * band, span});
  }
  int64_t most = 0;
  for (int64_t t0 = 0; t0 < extent; t0 += T) {
    most = std::max(most, lay_out_bands<int64_t>(a, t0, T, nullptr, nullptr, nullptr));
  }
  return most;
}

// ---------------------------------------------------------------------------------------------------
// Launch configuration: the block's slab, tile and shared-memory layout (byte offsets), chosen on the host.
struct TileCfg {
  int P;           // packs (channels when V = 1) per block
  int TH, TW;      // tile: outputs (forward, parameter gradients) or inputs (dx)
  int rows, cols;  // staged rows / columns, the most of any tile
  int threads;
  int64_t tiles_h, tiles_w, slabs;
  int o_w, o_scale, o_shift, o_band, o_rmap, o_cmap, o_tile, o_g, o_red, o_tot, smem;
};

enum class Kind { kForward, kParams, kDx };

struct KernelShape {
  int V;     // channels per pack
  bool cl;   // channels_last
  int elem;  // bytes of x's dtype (the staged input, g and the outputs all have it)
};

inline int round_up(int64_t v, int64_t m) { return static_cast<int>((v + m - 1) / m * m); }

// Fill the offsets for (P, TH, TW); false when they exceed the budget.
inline bool lay_out_smem(const DwconvParams& p, Kind kind, const KernelShape& s, TileCfg& c) {
  const int64_t KK = static_cast<int64_t>(p.K) * p.K, PV = static_cast<int64_t>(c.P) * s.V;
  const bool tr = kind == Kind::kDx;
  const Axis ah{p.H, p.Ho, p.pad, p.dilation, p.stride, p.K, tr}, aw{p.W, p.Wo, p.pad, p.dilation, p.stride, p.K, tr};
  const int64_t rows = max_staged(ah, c.TH, tr ? p.H : p.Ho), cols = max_staged(aw, c.TW, tr ? p.W : p.Wo);
  const int64_t outs = static_cast<int64_t>(c.TH) * c.TW;
  c.threads = std::min<int>(kThreads, round_up(std::max<int64_t>(c.P * outs, 1), 32));
  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    const int64_t o = at;
    at += (bytes + 15) / 16 * 16;
    return o;
  };
  c.o_w = static_cast<int>(take(PV * KK * 4));
  c.o_scale = static_cast<int>(take(PV * 4));
  c.o_shift = static_cast<int>(take(PV * 4));
  c.o_band = static_cast<int>(take((6 * static_cast<int64_t>(p.K) + 2) * 8));
  c.o_rmap = static_cast<int>(take(rows * 8));
  c.o_cmap = static_cast<int>(take(cols * 8));
  c.o_tile = static_cast<int>(take(rows * cols * PV * s.elem));
  c.o_g = c.o_red = c.o_tot = static_cast<int>(at);
  if (kind == Kind::kParams) {
    const int64_t items = static_cast<int64_t>(c.P) * (KK + 1);
    c.o_g = static_cast<int>(take(outs * PV * s.elem));
    c.o_red = static_cast<int>(take(std::max<int64_t>(items, c.threads) * s.V * 4));
    c.o_tot = static_cast<int>(take(items * s.V * 4));
  }
  c.rows = static_cast<int>(std::min<int64_t>(rows, 1 << 30));
  c.cols = static_cast<int>(std::min<int64_t>(cols, 1 << 30));
  c.smem = static_cast<int>(std::min<int64_t>(at, 1 << 30));
  return at <= kSmemBudget;
}

// Global sectors per output element a block moves: its staged input (channels_last: rows x cols pixels of
// P * V channels; NCHW: runs of rows), plus the per-output accesses (the output store; the parameter kernel
// also reads grad_y and writes g), whose sectors are only full when a pixel's slab spans 32 bytes.
inline double tile_cost(const TileCfg& c, Kind kind, const KernelShape& s) {
  const int64_t slab_bytes = static_cast<int64_t>(c.P) * s.V * s.elem;
  const int64_t run_sectors = (static_cast<int64_t>(c.cols) * s.elem + 31) / 32 + 1;
  const double outs = static_cast<double>(c.TH) * c.TW * c.P * s.V;
  const double staged = s.cl ? static_cast<double>(c.rows) * c.cols * ((slab_bytes + 31) / 32)
                             : static_cast<double>(c.P) * c.rows * run_sectors;
  const double per_out = s.cl ? static_cast<double>((slab_bytes + 31) / 32) / (c.P * s.V)
                              : static_cast<double>((static_cast<int64_t>(c.TW) * s.elem + 31) / 32 + 1) / c.TW;
  return staged / outs + per_out * (kind == Kind::kParams ? 3 : 1);
}

// The tile (and slab) that fits the shared memory with the least staged input per output: the whole map when
// it fits (each input read once), else bands of rows or narrower tiles, or a thinner slab, whichever re-reads
// least; among near-equal ones the largest (fewer blocks, fewer weight loads).
inline TileCfg choose_tile(const DwconvParams& p, Kind kind, const KernelShape& s) {
  const bool tr = kind == Kind::kDx;
  const int64_t eh = tr ? p.H : p.Ho, ew = tr ? p.W : p.Wo;
  const int64_t lanes = s.cl ? std::max<int64_t>(kSlabBytes / (s.V * s.elem), 1) : 1;
  const int64_t packs = (p.C + s.V - 1) / s.V;
  int P0 = 1;
  while (P0 < lanes && P0 < packs) P0 *= 2;
  TileCfg best{};
  double best_cost = 0;
  for (int P = P0; P >= 1; P /= 2) {
    for (int64_t tw = std::min<int64_t>(ew, 1 << 20);; tw = (tw + 1) / 2) {
      for (int64_t th = std::min<int64_t>(eh, 1 << 20);; th = (th + 1) / 2) {
        TileCfg c{};
        c.P = P, c.TH = static_cast<int>(th), c.TW = static_cast<int>(tw);
        if (th * tw <= (1 << 24) && lay_out_smem(p, kind, s, c)) {
          const double cost = tile_cost(c, kind, s);
          const int64_t size = static_cast<int64_t>(c.P) * c.TH * c.TW;
          const int64_t best_size = static_cast<int64_t>(best.P) * best.TH * best.TW;
          if (best.P == 0 || cost < 0.98 * best_cost || (cost <= 1.02 * best_cost && size > best_size)) {
            best = c;
            best_cost = cost;
          }
          break;  // smaller th at this width only re-read more
        }
        if (th == 1) break;
      }
      if (tw == 1) break;
    }
  }
  TORCH_CHECK(best.P > 0, "dwconv_bn_act: kernel size k=", p.K, " needs more shared memory than a CUDA block has (",
              kSmemBudget, " bytes) for its weights; use backend='cpu' or 'reference'");
  TileCfg c = best;
  // NCHW: several channels per block when a tile is small, so the block has work for its threads.
  while (!s.cl && c.P < 8 && c.P * 2 <= p.C && static_cast<int64_t>(c.P) * c.TH * c.TW < kThreads) {
    TileCfg more = c;
    more.P *= 2;
    if (!lay_out_smem(p, kind, s, more)) break;
    c = more;
  }
  c.tiles_h = (eh + c.TH - 1) / c.TH;
  c.tiles_w = (ew + c.TW - 1) / c.TW;
  c.slabs = (packs + c.P - 1) / c.P;
  const int64_t blocks = p.N * c.tiles_h * c.tiles_w * c.slabs;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "dwconv_bn_act: ", blocks,
              " blocks exceed the CUDA grid limit (2^31 - 1)");
  return c;
}

// 32-bit index math inside an image when every offset and tap coordinate fits.
inline bool fits_int32(const DwconvParams& p) {
  const int64_t lim = std::numeric_limits<int32_t>::max();
  const int64_t side = std::max(p.H, p.W);
  return p.C * p.H * p.W < lim && p.C * p.Ho * p.Wo < lim && (p.K + 4) * side * 2 < lim;
}

// ---------------------------------------------------------------------------------------------------
// Device helpers shared by the kernels.

// 16-byte chunks of a pack of V elements of S (a pack of 8 fp32 is two chunks).
template <typename S, int V>
struct Chunks {
  static constexpr int L = (V * sizeof(S) >= 16) ? static_cast<int>(16 / sizeof(S)) : V;
  static constexpr int N = V / L;
  using C = Vec<S, L>;
};

// The block's place: image n, channel slab, tile origin (th0, tw0); `flat` numbers (n, tile) for partials.
struct BlockPos {
  int64_t n, slab, flat;
  int64_t th0, tw0;
};

__device__ __forceinline__ BlockPos block_pos(const TileCfg& c) {
  // The launcher keeps the block count below 2^31: 32-bit divisions.
  BlockPos b;
  uint32_t r = blockIdx.x;
  const uint32_t slabs = static_cast<uint32_t>(c.slabs), tiles_w = static_cast<uint32_t>(c.tiles_w);
  const uint32_t tiles_h = static_cast<uint32_t>(c.tiles_h);
  b.slab = r % slabs;
  r /= slabs;
  b.flat = r;
  const uint32_t tw = r % tiles_w;
  r /= tiles_w;
  const uint32_t th = r % tiles_h;
  b.n = r / tiles_h;
  b.th0 = static_cast<int64_t>(th) * c.TH;
  b.tw0 = static_cast<int64_t>(tw) * c.TW;
  return b;
}

// Stage the slab's weights [pk][tap][V], scale and shift [pk][V] (fp32) in shared memory.
template <int V, bool WithScaleShift>
__device__ __forceinline__ void stage_weights(const DwconvParams& p, int64_t c0, int npk, int KK, float* ws,
                                              float* ss, float* bs, int t, int nt) {
  const float* w = static_cast<const float*>(p.w);
  const float* sc = static_cast<const float*>(p.scale) + c0;
  const float* sh = static_cast<const float*>(p.shift) + c0;
  if constexpr (V > 1) {
    // The blocked weight holds the slab's packs together: npk * KK * V floats from the first pack's taps.
    const float4* src = reinterpret_cast<const float4*>(w + weight_offset(p, c0));
    const int n4 = npk * KK * V / 4;
    for (int e = t; e < n4; e += nt) reinterpret_cast<float4*>(ws)[e] = load_global(src + e);
    const int s4 = WithScaleShift ? npk * V / 4 : 0;
    for (int e = t; e < s4; e += nt) {
      reinterpret_cast<float4*>(ss)[e] = load_global(reinterpret_cast<const float4*>(sc) + e);
      reinterpret_cast<float4*>(bs)[e] = load_global(reinterpret_cast<const float4*>(sh) + e);
    }
  } else {
    for (int e = t; e < npk * KK; e += nt) {
      const int pk = e / KK, tap = e - pk * KK;
      ws[e] = load_global(w + weight_offset(p, c0 + pk) + tap * p.w_block);
    }
    for (int e = t; e < (WithScaleShift ? npk : 0); e += nt) {
      ss[e] = load_global(sc + e);
      bs[e] = load_global(sh + e);
    }
  }
}

// The block's bands (thread 0), then the position -> coordinate maps of its staged rows and columns.
// band: off/lo/hi of rows, off/lo/hi of columns (K each), then the row and column counts.
template <typename I>
__device__ __forceinline__ void stage_bands(const Axis& ah, const Axis& aw, int64_t th0, int TH, int64_t tw0, int TW,
                                            I* band, I* rmap, I* cmap, int t, int nt) {
  const int K = ah.K;
  if (t == 0) {
    band[6 * K] = static_cast<I>(lay_out_bands<I>(ah, th0, TH, band, band + K, band + 2 * K));
    band[6 * K + 1] = static_cast<I>(lay_out_bands<I>(aw, tw0, TW, band + 3 * K, band + 4 * K, band + 5 * K));
  }
  __syncthreads();
  const int rows = static_cast<int>(band[6 * K]), cols = static_cast<int>(band[6 * K + 1]);
  for (int e = t; e < rows + cols; e += nt) {
    const bool row = e < rows;
    const I* b = row ? band : band + 3 * K;
    const I pos = row ? e : e - rows;
    for (int i = 0; i < K; ++i) {
      const I x = pos - b[i];
      if (x >= b[K + i] && x < b[2 * K + i]) {
        (row ? rmap[pos] : cmap[pos]) = x;
        break;
      }
    }
  }
  __syncthreads();
}

// Element index of (row position q, column position r, pack pk) in the staged tile.
template <bool CL>
__device__ __forceinline__ int tile_index(int q, int r, int pk, int rows, int cols, int P) {
  return CL ? (q * cols + r) * P + pk : (pk * rows + q) * cols + r;
}

// Load the staged tile: packs of V elements of S from `base` (the slab's first channel of the image).
template <typename S, int V, bool CL, typename I>
__device__ __forceinline__ void stage_tile(const S* base, I s_c, I s_h, I s_w, const I* rmap, const I* cmap, int rows,
                                           int cols, int P, int npk, S* tile, int t, int nt) {
  using Ch = Chunks<S, V>;
  const int plane = rows * cols, total = plane * P;
  for (int f = t; f < total; f += nt) {
    int q, r, pk;
    if (CL) {
      q = f / (cols * P);
      const int rem = f - q * cols * P;
      r = rem / P;
      pk = rem - r * P;
    } else {
      pk = f / plane;
      const int rem = f - pk * plane;
      q = rem / cols;
      r = rem - q * cols;
    }
    if (pk >= npk) continue;
    const S* src = base + (rmap[q] * s_h + cmap[r] * s_w + pk * (CL ? I(V) : s_c));
    typename Ch::C* dst = reinterpret_cast<typename Ch::C*>(tile + static_cast<int64_t>(f) * V);
    DLF_UNROLL
    for (int k = 0; k < Ch::N; ++k) dst[k] = load_global(reinterpret_cast<const typename Ch::C*>(src) + k);
  }
}

// Read a staged pack into fp32 lanes.
template <typename S, int V>
__device__ __forceinline__ void read_pack(const S* tile, int idx, float (&out)[V]) {
  using Ch = Chunks<S, V>;
  const typename Ch::C* src = reinterpret_cast<const typename Ch::C*>(tile + static_cast<int64_t>(idx) * V);
  DLF_UNROLL
  for (int k = 0; k < Ch::N; ++k) {
    const typename Ch::C raw = src[k];
    DLF_UNROLL
    for (int l = 0; l < Ch::L; ++l) out[k * Ch::L + l] = static_cast<float>(raw.v[l]);
  }
}

// Write fp32 lanes as a staged pack of S.
template <typename S, int V>
__device__ __forceinline__ void write_pack(S* tile, int idx, const float (&in)[V]) {
  using Ch = Chunks<S, V>;
  typename Ch::C* dst = reinterpret_cast<typename Ch::C*>(tile + static_cast<int64_t>(idx) * V);
  DLF_UNROLL
  for (int k = 0; k < Ch::N; ++k) {
    typename Ch::C raw;
    DLF_UNROLL
    for (int l = 0; l < Ch::L; ++l) raw.v[l] = static_cast<S>(in[k * Ch::L + l]);
    dst[k] = raw;
  }
}

// Global pack access of V elements of S (16-byte chunks; V = 1 a scalar).
template <typename S, int V>
__device__ __forceinline__ void load_pack(const S* src, float (&out)[V]) {
  using Ch = Chunks<S, V>;
  DLF_UNROLL
  for (int k = 0; k < Ch::N; ++k) {
    const typename Ch::C raw = load_global(reinterpret_cast<const typename Ch::C*>(src) + k);
    DLF_UNROLL
    for (int l = 0; l < Ch::L; ++l) out[k * Ch::L + l] = static_cast<float>(raw.v[l]);
  }
}

template <typename S, int V>
__device__ __forceinline__ void store_pack(S* dst, const float (&in)[V]) {
  using Ch = Chunks<S, V>;
  DLF_UNROLL
  for (int k = 0; k < Ch::N; ++k) {
    typename Ch::C raw;
    DLF_UNROLL
    for (int l = 0; l < Ch::L; ++l) raw.v[l] = static_cast<S>(in[k * Ch::L + l]);
    store_global(reinterpret_cast<typename Ch::C*>(dst) + k, raw);
  }
}

// Taps t in [0, K) with 0 <= base + t * d < size, as [lo, hi).
template <typename I>
__device__ __forceinline__ void valid_range(I base, I d, I size, int K, int& lo, int& hi) {
  lo = 0;
  while (lo < K && base + lo * d < 0) ++lo;
  hi = K;
  while (hi > lo && base + (hi - 1) * d >= size) --hi;
}

// The thread's pack and its first output slot: channels_last packs vary fastest across threads (a warp
// stores whole pixels), NCHW outputs do (a warp stores a run of a row).
template <bool CL>
__device__ __forceinline__ void thread_role(int t, int nt, int P, int& pk, int& y, int& Y) {
  Y = nt / P;
  pk = CL ? t % P : t / Y;
  y = CL ? t / P : t % Y;
}

// conv of the staged tile at output (ho, wo) for pack pk: acc[V] (fp32), taps from shared memory.
template <typename T, int V, int KT, bool CL, typename I>
__device__ __forceinline__ void conv_at(const DwconvParams& p, const T* tile, const I* band, int rows, int cols,
                                        int P, int pk, I ho, I wo, const float* wpk, const float (*wr)[V],
                                        float (&acc)[V]) {
  const int K = KT > 0 ? KT : p.K;
  const I d = static_cast<I>(p.dilation), s = static_cast<I>(p.stride), pad = static_cast<I>(p.pad);
  const I hb = ho * s - pad, wb = wo * s - pad;
  int ilo, ihi, jlo, jhi;
  valid_range<I>(hb, d, static_cast<I>(p.H), K, ilo, ihi);
  valid_range<I>(wb, d, static_cast<I>(p.W), K, jlo, jhi);
  DLF_UNROLL
  for (int l = 0; l < V; ++l) acc[l] = 0.f;
  auto tap = [&](int i, int j) {
    const int q = static_cast<int>(band[i] + hb + i * d);
    const int r = static_cast<int>(band[3 * K + j] + wb + j * d);
    float xv[V];
    read_pack<T, V>(tile, tile_index<CL>(q, r, pk, rows, cols, P), xv);
    const float* wt = KT > 0 ? wr[i * K + j] : wpk + (i * K + j) * V;
    DLF_UNROLL
    for (int l = 0; l < V; ++l) acc[l] += xv[l] * wt[l];
  };
  if constexpr (KT > 0) {
    DLF_UNROLL
    for (int i = 0; i < KT; ++i) {
      if (i < ilo || i >= ihi) continue;
      DLF_UNROLL
      for (int j = 0; j < KT; ++j) {
        if (j < jlo || j >= jhi) continue;
        tap(i, j);
      }
    }
  } else {
    for (int i = ilo; i < ihi; ++i)
      for (int j = jlo; j < jhi; ++j) tap(i, j);
  }
}

// ---------------------------------------------------------------------------------------------------
// Forward: y = act(conv * scale + shift) over the block's tile of outputs.
template <typename T, int V, int KT, bool CL, typename I>
__global__ void __launch_bounds__(kThreads) fwd_tiled_kernel(DwconvParams p, TileCfg c) {
  DLF_DYNAMIC_SHARED(unsigned char, smem);
  const int t = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int K = KT > 0 ? KT : p.K, KK = K * K;
  const BlockPos b = block_pos(c);
  const int64_t c0 = b.slab * c.P * V;
  const int npk = static_cast<int>(dlf_min<int64_t>(c.P, (p.C - c0 + V - 1) / V));
  float* ws = reinterpret_cast<float*>(smem + c.o_w);
  float* ss = reinterpret_cast<float*>(smem + c.o_scale);
  float* bs = reinterpret_cast<float*>(smem + c.o_shift);
  I* band = reinterpret_cast<I*>(smem + c.o_band);
  I* rmap = reinterpret_cast<I*>(smem + c.o_rmap);
  I* cmap = reinterpret_cast<I*>(smem + c.o_cmap);
  T* tile = reinterpret_cast<T*>(smem + c.o_tile);

  stage_weights<V, true>(p, c0, npk, KK, ws, ss, bs, t, nt);
  const Axis ah{p.H, p.Ho, p.pad, p.dilation, p.stride, K, false};
  const Axis aw{p.W, p.Wo, p.pad, p.dilation, p.stride, K, false};
  stage_bands<I>(ah, aw, b.th0, c.TH, b.tw0, c.TW, band, rmap, cmap, t, nt);
  const int rows = static_cast<int>(band[6 * K]), cols = static_cast<int>(band[6 * K + 1]);
  const T* xb = static_cast<const T*>(p.x) + b.n * p.xs_n + c0 * p.xs_c;
  stage_tile<T, V, CL, I>(xb, static_cast<I>(p.xs_c), static_cast<I>(p.xs_h), static_cast<I>(p.xs_w), rmap, cmap,
                          rows, cols, c.P, npk, tile, t, nt);
  __syncthreads();

  int pk, y, Y;
  thread_role<CL>(t, nt, c.P, pk, y, Y);
  if (pk >= npk) return;  // no barrier follows
  const float* wpk = ws + pk * KK * V;
  float wr[KT > 0 ? KT * KT : 1][V];
  if constexpr (KT > 0) {
    DLF_UNROLL
    for (int k = 0; k < KT * KT; ++k) {
      DLF_UNROLL
      for (int l = 0; l < V; ++l) wr[k][l] = wpk[k * V + l];
    }
  }
  float sc[V], sh[V];
  DLF_UNROLL
  for (int l = 0; l < V; ++l) sc[l] = ss[pk * V + l], sh[l] = bs[pk * V + l];
  T* yb = static_cast<T*>(p.y) + b.n * p.ys_n + c0 * p.ys_c;
  const I ys_h = static_cast<I>(p.ys_h), ys_w = static_cast<I>(p.ys_w), ys_c = static_cast<I>(p.ys_c);
  for (int o = y; o < c.TH * c.TW; o += Y) {
    const int oh = o / c.TW, ow = o - oh * c.TW;
    const I ho = static_cast<I>(b.th0 + oh), wo = static_cast<I>(b.tw0 + ow);
    if (ho >= p.Ho || wo >= p.Wo) continue;
    float acc[V];
    conv_at<T, V, KT, CL, I>(p, tile, band, rows, cols, c.P, pk, ho, wo, wpk, wr, acc);
    DLF_UNROLL
    for (int l = 0; l < V; ++l) acc[l] = apply_activation(acc[l] * sc[l] + sh[l], p.act);
    store_pack<T, V>(yb + (ho * ys_h + wo * ys_w + pk * (CL ? I(V) : ys_c)), acc);
  }
}

// ---------------------------------------------------------------------------------------------------
// Backward, kernel 1: g = grad_y * act'(z) over the block's output tile; g to q.gpre (x's dtype, y's
// strides); the slab's parameter gradients summed over the tile, then added to q.gparams (C, K*K + 2) with
// one atomicAdd per block, channel and parameter, or stored as the block's partials (deterministic).
//   d w[c, t] = scale[c] * G[c, t],  G[c, t] = sum g * x[tap t];  d shift[c] = sum g;
//   d scale[c] = sum g * conv = sum_t w[c, t] * G[c, t].
template <typename T, int V, bool CL, typename I>
__global__ void __launch_bounds__(kThreads) bwd_params_kernel(DwconvBwdParams q, TileCfg c) {
  DLF_DYNAMIC_SHARED(unsigned char, smem);
  const DwconvParams& p = q.f;
  const int t = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int K = p.K, KK = K * K;
  const BlockPos b = block_pos(c);
  const int64_t c0 = b.slab * c.P * V;
  const int npk = static_cast<int>(dlf_min<int64_t>(c.P, (p.C - c0 + V - 1) / V));
  float* ws = reinterpret_cast<float*>(smem + c.o_w);
  float* ss = reinterpret_cast<float*>(smem + c.o_scale);
  float* bs = reinterpret_cast<float*>(smem + c.o_shift);
  I* band = reinterpret_cast<I*>(smem + c.o_band);
  I* rmap = reinterpret_cast<I*>(smem + c.o_rmap);
  I* cmap = reinterpret_cast<I*>(smem + c.o_cmap);
  T* tile = reinterpret_cast<T*>(smem + c.o_tile);
  T* gs = reinterpret_cast<T*>(smem + c.o_g);
  float* red = reinterpret_cast<float*>(smem + c.o_red);
  float* tot = reinterpret_cast<float*>(smem + c.o_tot);

  stage_weights<V, true>(p, c0, npk, KK, ws, ss, bs, t, nt);
  const Axis ah{p.H, p.Ho, p.pad, p.dilation, p.stride, K, false};
  const Axis aw{p.W, p.Wo, p.pad, p.dilation, p.stride, K, false};
  stage_bands<I>(ah, aw, b.th0, c.TH, b.tw0, c.TW, band, rmap, cmap, t, nt);
  const int rows = static_cast<int>(band[6 * K]), cols = static_cast<int>(band[6 * K + 1]);
  const T* xb = static_cast<const T*>(p.x) + b.n * p.xs_n + c0 * p.xs_c;
  stage_tile<T, V, CL, I>(xb, static_cast<I>(p.xs_c), static_cast<I>(p.xs_h), static_cast<I>(p.xs_w), rmap, cmap,
                          rows, cols, c.P, npk, tile, t, nt);
  __syncthreads();

  // Phase 1: g per output, into shared memory (0 outside the map) and, times scale, to global.
  const int outs = c.TH * c.TW;
  const I ys_h = static_cast<I>(p.ys_h), ys_w = static_cast<I>(p.ys_w), ys_c = static_cast<I>(p.ys_c);
  const int64_t yoff = b.n * p.ys_n + c0 * p.ys_c;
  {
    int pk, y, Y;
    thread_role<CL>(t, nt, c.P, pk, y, Y);
    const float* wpk = ws + pk * KK * V;
    for (int o = y; o < outs; o += Y) {
      const int oh = o / c.TW, ow = o - oh * c.TW;
      const I ho = static_cast<I>(b.th0 + oh), wo = static_cast<I>(b.tw0 + ow);
      float g[V];
      if (pk < npk && ho < p.Ho && wo < p.Wo) {
        float acc[V], go[V];
        conv_at<T, V, 0, CL, I>(p, tile, band, rows, cols, c.P, pk, ho, wo, wpk, nullptr, acc);
        const I off = ho * ys_h + wo * ys_w + pk * (CL ? I(V) : ys_c);
        load_pack<T, V>(static_cast<const T*>(q.go) + yoff + off, go);
        DLF_UNROLL
        for (int l = 0; l < V; ++l) {
          const float z = acc[l] * ss[pk * V + l] + bs[pk * V + l];
          g[l] = go[l] * activation_grad_mask(z, p.act);  // grad_y or 0: exact in T
        }
        store_pack<T, V>(static_cast<T*>(q.gpre) + yoff + off, g);
      } else {
        DLF_UNROLL
        for (int l = 0; l < V; ++l) g[l] = 0.f;
      }
      write_pack<T, V>(gs, o * c.P + pk, g);
    }
  }
  __syncthreads();

  // Phase 2: per (pack, tap or shift) item, R groups of threads sum strided outputs of the tile.
  const int items = c.P * (KK + 1);
  const int R = nt / items > 1 ? nt / items : 1;
  const int units = items * R;
  const I d = static_cast<I>(p.dilation), s = static_cast<I>(p.stride), pad = static_cast<I>(p.pad);
  for (int u = t; u < units; u += nt) {
    const int item = u % items, grp = u / items;
    const int pk = item / (KK + 1), slot = item - pk * (KK + 1);
    float a[V];
    DLF_UNROLL
    for (int l = 0; l < V; ++l) a[l] = 0.f;
    if (pk < npk) {
      const int i = slot / K, j = slot - (slot / K) * K;
      for (int o = grp; o < outs; o += R) {
        const int oh = o / c.TW, ow = o - oh * c.TW;
        const I ho = static_cast<I>(b.th0 + oh), wo = static_cast<I>(b.tw0 + ow);
        if (ho >= p.Ho || wo >= p.Wo) continue;
        float g[V];
        read_pack<T, V>(gs, o * c.P + pk, g);
        if (slot == KK) {
          DLF_UNROLL
          for (int l = 0; l < V; ++l) a[l] += g[l];
          continue;
        }
        const I h = ho * s - pad + i * d, w = wo * s - pad + j * d;
        if (h < 0 || h >= p.H || w < 0 || w >= p.W) continue;
        float xv[V];
        const int qq = static_cast<int>(band[i] + h), rr = static_cast<int>(band[3 * K + j] + w);
        read_pack<T, V>(tile, tile_index<CL>(qq, rr, pk, rows, cols, c.P), xv);
        DLF_UNROLL
        for (int l = 0; l < V; ++l) a[l] += g[l] * xv[l];
      }
    }
    DLF_UNROLL
    for (int l = 0; l < V; ++l) red[u * V + l] = a[l];
  }
  __syncthreads();
  for (int item = t; item < items; item += nt) {
    float a[V];
    DLF_UNROLL
    for (int l = 0; l < V; ++l) a[l] = 0.f;
    for (int grp = 0; grp < R; ++grp) {  // fixed order: the block's sum does not depend on the schedule
      DLF_UNROLL
      for (int l = 0; l < V; ++l) a[l] += red[(grp * items + item) * V + l];
    }
    DLF_UNROLL
    for (int l = 0; l < V; ++l) tot[item * V + l] = a[l];
  }
  __syncthreads();

  // Phase 3: the block's contribution per (channel, parameter).
  const int KK2 = KK + 2;
  float* gp = static_cast<float*>(q.gparams);
  float* part = q.deterministic ? static_cast<float*>(q.partials) + b.flat * p.C * KK2 : nullptr;
  for (int e = t; e < c.P * KK2 * V; e += nt) {
    const int l = e % V, r = e / V, slot = r % KK2, pk = r / KK2;
    const int64_t ch = c0 + pk * V + l;
    if (pk >= npk || ch >= p.C) continue;
    const float* tp = tot + pk * (KK + 1) * V + l;
    float v;
    if (slot < KK) {
      v = ss[pk * V + l] * tp[slot * V];
    } else if (slot == KK) {
      v = 0.f;
      for (int k = 0; k < KK; ++k) v += ws[(pk * KK + k) * V + l] * tp[k * V];
    } else {
      v = tp[KK * V];
    }
    if (q.deterministic) {
      store_global(part + ch * KK2 + slot, v);
    } else {
      atomicAdd(gp + ch * KK2 + slot, v);
    }
  }
}

// Backward, deterministic mode: gparams[e] = the blocks' partials summed in block order.
__global__ void __launch_bounds__(kThreads) bwd_params_sum_kernel(DwconvBwdParams q, int64_t blocks) {
  const int64_t n = q.f.C * (static_cast<int64_t>(q.f.K) * q.f.K + 2);
  const float* part = static_cast<const float*>(q.partials);
  DLF_GRID_STRIDE_LOOP(e, n) {
    float a = 0.f;
    for (int64_t blk = 0; blk < blocks; ++blk) a += load_global(part + blk * n + e);
    store_global(static_cast<float*>(q.gparams) + e, a);
  }
}

// Backward, kernel 2: dx = scale * sum over taps of g[output the tap maps x to] * w[tap], tiled over the
// input map; the staged tile holds g of the outputs the input tile reaches.
template <typename T, int V, bool CL, typename I>
__global__ void __launch_bounds__(kThreads) bwd_dx_kernel(DwconvBwdParams q, TileCfg c) {
  DLF_DYNAMIC_SHARED(unsigned char, smem);
  const DwconvParams& p = q.f;
  const int t = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int K = p.K, KK = K * K;
  const BlockPos b = block_pos(c);
  const int64_t c0 = b.slab * c.P * V;
  const int npk = static_cast<int>(dlf_min<int64_t>(c.P, (p.C - c0 + V - 1) / V));
  float* ws = reinterpret_cast<float*>(smem + c.o_w);
  float* ss = reinterpret_cast<float*>(smem + c.o_scale);
  float* bs = reinterpret_cast<float*>(smem + c.o_shift);
  I* band = reinterpret_cast<I*>(smem + c.o_band);
  I* rmap = reinterpret_cast<I*>(smem + c.o_rmap);
  I* cmap = reinterpret_cast<I*>(smem + c.o_cmap);
  T* tile = reinterpret_cast<T*>(smem + c.o_tile);

  stage_weights<V, true>(p, c0, npk, KK, ws, ss, bs, t, nt);
  const Axis ah{p.H, p.Ho, p.pad, p.dilation, p.stride, K, true};
  const Axis aw{p.W, p.Wo, p.pad, p.dilation, p.stride, K, true};
  stage_bands<I>(ah, aw, b.th0, c.TH, b.tw0, c.TW, band, rmap, cmap, t, nt);
  const int rows = static_cast<int>(band[6 * K]), cols = static_cast<int>(band[6 * K + 1]);
  const T* gb = static_cast<const T*>(q.gpre) + b.n * p.ys_n + c0 * p.ys_c;
  stage_tile<T, V, CL, I>(gb, static_cast<I>(p.ys_c), static_cast<I>(p.ys_h), static_cast<I>(p.ys_w), rmap,
                              cmap, rows, cols, c.P, npk, tile, t, nt);
  __syncthreads();

  int pk, y, Y;
  thread_role<CL>(t, nt, c.P, pk, y, Y);
  if (pk >= npk) return;
  const float* wpk = ws + pk * KK * V;
  const I d = static_cast<I>(p.dilation), s = static_cast<I>(p.stride), pad = static_cast<I>(p.pad);
  T* xb = static_cast<T*>(q.gx) + b.n * p.xs_n + c0 * p.xs_c;
  const I xs_h = static_cast<I>(p.xs_h), xs_w = static_cast<I>(p.xs_w), xs_c = static_cast<I>(p.xs_c);
  for (int o = y; o < c.TH * c.TW; o += Y) {
    const int oh = o / c.TW, ow = o - oh * c.TW;
    const I h = static_cast<I>(b.th0 + oh), w = static_cast<I>(b.tw0 + ow);
    if (h >= p.H || w >= p.W) continue;
    float acc[V];
    DLF_UNROLL
    for (int l = 0; l < V; ++l) acc[l] = 0.f;
    for (int i = 0; i < K; ++i) {
      const I nh = h + pad - i * d;  // decreases with i
      if (nh < 0) break;
      const I ho = nh >> (s - 1);  // stride 1 or 2
      if ((nh & (s - 1)) != 0 || ho >= p.Ho) continue;
      const int qq = static_cast<int>(band[i] + ho);
      for (int j = 0; j < K; ++j) {
        const I nw = w + pad - j * d;
        if (nw < 0) break;
        const I wo = nw >> (s - 1);
        if ((nw & (s - 1)) != 0 || wo >= p.Wo) continue;
        float gv[V];
        read_pack<T, V>(tile, tile_index<CL>(qq, static_cast<int>(band[3 * K + j] + wo), pk, rows, cols, c.P), gv);
        const float* wt = wpk + (i * K + j) * V;
        DLF_UNROLL
        for (int l = 0; l < V; ++l) acc[l] += gv[l] * wt[l];
      }
    }
    DLF_UNROLL
    for (int l = 0; l < V; ++l) acc[l] *= ss[pk * V + l];
    store_pack<T, V>(xb + (h * xs_h + w * xs_w + pk * (CL ? I(V) : xs_c)), acc);
  }
}

// ---------------------------------------------------------------------------------------------------
// Launch logic.

template <typename T>
KernelShape shape_of(int V, bool cl) {
  return KernelShape{V, cl, static_cast<int>(sizeof(T))};
}

// The 16-byte pack kernels need channels_last, whole packs, the weight blocked by V, and aligned pointers.
template <typename T>
bool use_packs(const DwconvParams& p, std::initializer_list<const void*> ptrs) {
  constexpr int V = DeviceLanes<T>::value;
  if (!p.channels_last || p.C % V != 0 || p.w_block != V) return false;
  for (const void* ptr : ptrs) {
    if (!aligned(ptr, 16)) return false;
  }
  return true;
}

template <typename T, int V, bool CL, typename I>
void forward_with(const DwconvParams& p, void* stream) {
  const TileCfg c = choose_tile(p, Kind::kForward, shape_of<T>(V, CL));
  const unsigned grid = static_cast<unsigned>(p.N * c.tiles_h * c.tiles_w * c.slabs);
  if constexpr ((V > 1 || !CL) && sizeof(I) == 4) {
    if (p.K == 3) {
      // k = 3 (every DeepLab depthwise conv): taps unrolled, the pack's weights in registers.
      launch_kernel(fwd_tiled_kernel<T, V, 3, CL, I>, grid, c.threads, c.smem, stream, p, c);
      return;
    }
  }
  // Any odd k, the unaligned channels_last fallback, and tensors that need 64-bit offsets (the unrolled
  // 16-bit kernel spilled with 64-bit index math): runtime tap loops, weights in shared memory.
  launch_kernel(fwd_tiled_kernel<T, V, 0, CL, I>, grid, c.threads, c.smem, stream, p, c);
}

template <typename T, typename I>
void forward(const DwconvParams& p, void* stream) {
  constexpr int V = DeviceLanes<T>::value;
  if (use_packs<T>(p, {p.x, p.y, p.w, p.scale, p.shift})) {
    forward_with<T, V, true, I>(p, stream);
  } else if (p.channels_last) {
    forward_with<T, 1, true, I>(p, stream);
  } else {
    forward_with<T, 1, false, I>(p, stream);
  }
}

template <typename T, int V, bool CL, typename I>
void backward_with(const DwconvBwdParams& q, void* stream) {
  const DwconvParams& p = q.f;
  const TileCfg c1 = choose_tile(p, Kind::kParams, shape_of<T>(V, CL));
  const unsigned g1 = static_cast<unsigned>(p.N * c1.tiles_h * c1.tiles_w * c1.slabs);
  launch_kernel(bwd_params_kernel<T, V, CL, I>, g1, c1.threads, c1.smem, stream, q, c1);
  check_launch("dwconv_bn_act_backward");
  if (q.deterministic) {
    const int64_t n = p.C * (static_cast<int64_t>(p.K) * p.K + 2);
    launch_kernel(bwd_params_sum_kernel, grid_for(n, kThreads, 65535), kThreads, 0, stream, q,
                  p.N * c1.tiles_h * c1.tiles_w);
    check_launch("dwconv_bn_act_backward");
  }
  const TileCfg c2 = choose_tile(p, Kind::kDx, shape_of<T>(V, CL));
  const unsigned g2 = static_cast<unsigned>(p.N * c2.tiles_h * c2.tiles_w * c2.slabs);
  launch_kernel(bwd_dx_kernel<T, V, CL, I>, g2, c2.threads, c2.smem, stream, q, c2);
}

template <typename T>
bool backward_packs(const DwconvBwdParams& q) {
  const DwconvParams& p = q.f;
  return use_packs<T>(p, {p.x, p.w, p.scale, p.shift, q.go, q.gx, q.gpre});
}

template <typename T, typename I>
void backward(const DwconvBwdParams& q, void* stream) {
  constexpr int V = DeviceLanes<T>::value;
  if (backward_packs<T>(q)) {
    backward_with<T, V, true, I>(q, stream);
  } else if (q.f.channels_last) {
    backward_with<T, 1, true, I>(q, stream);
  } else {
    backward_with<T, 1, false, I>(q, stream);
  }
}

}  // namespace dwconv

int64_t dwconv_bn_act_weight_block(c10::ScalarType dtype, int64_t C, const void* x, const void* y) {
  const int64_t V = 16 / static_cast<int64_t>(c10::elementSize(dtype));
  // Packs must not straddle pixels and must be 16-byte aligned: C % V == 0 and aligned base pointers.
  return (C % V == 0 && aligned(x, 16) && aligned(y, 16)) ? V : 1;
}

void dwconv_bn_act_forward(const DwconvParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "dwconv_bn_act", [&](auto tag) {
    using T = decltype(tag);
    if (dwconv::fits_int32(p)) {
      dwconv::forward<T, int32_t>(p, stream);
    } else {
      dwconv::forward<T, int64_t>(p, stream);
    }
  });
  check_launch("dwconv_bn_act");
}

int64_t dwconv_bn_act_backward_partials(const DwconvBwdParams& q, c10::ScalarType dtype) {
  if (!q.deterministic) return 0;
  int64_t blocks = 0;
  dispatch_float_types(dtype, "dwconv_bn_act_backward", [&](auto tag) {
    using T = decltype(tag);
    const DwconvParams& p = q.f;
    const int V = dwconv::backward_packs<T>(q) ? DeviceLanes<T>::value : 1;
    const dwconv::TileCfg c = dwconv::choose_tile(p, dwconv::Kind::kParams, dwconv::shape_of<T>(V, p.channels_last));
    blocks = p.N * c.tiles_h * c.tiles_w;
  });
  return blocks * q.f.C * (static_cast<int64_t>(q.f.K) * q.f.K + 2);
}

void dwconv_bn_act_backward(const DwconvBwdParams& q, c10::ScalarType dtype, void* stream) {
  TORCH_CHECK(!q.deterministic || q.partials != nullptr,
              "dwconv_bn_act_backward: the deterministic mode needs the partials buffer "
              "(dwconv_bn_act_backward_partials)");
  dispatch_float_types(dtype, "dwconv_bn_act_backward", [&](auto tag) {
    using T = decltype(tag);
    if (dwconv::fits_int32(q.f)) {
      dwconv::backward<T, int32_t>(q, stream);
    } else {
      dwconv::backward<T, int64_t>(q, stream);
    }
  });
  check_launch("dwconv_bn_act_backward");
}

}  // namespace dlf::DLF_GPU_NS
