// CUDA kernels of the upsample ops with their launch logic, built twice from this one text (see
// csrc/cuda/launch.cuh): by nvcc in upsample_cuda.cu and by the host compiler in csrc/emu/upsample_emu.cpp
// (backend "cuda_emu"). The per-pixel math (taps, blends, class walks) is csrc/kernels/upsample.h's, so every
// backend rounds alike. Every global access goes through load_global / store_global (csrc/common/memory.h).
//
// upsample_concat, channels_last: a block owns an output tile of kTileH x kTileW pixels of one image; a thread
// owns one 16-byte channel pack (V channels) of one pixel at a time, with the pixel's taps and weights computed
// once for its pack. For each input the block stages the tile's source window (a slab of up to kSlabPacks
// packs) in shared memory with one 16-byte load per source pack, then blends from shared memory and writes
// each input's slice straight into its place in the output with 16-byte stores. A 1x1 input (image pooling)
// is a window of one pixel: a broadcast. Inputs already at the output size, and windows too large for
// shared memory (strong downsampling), are read directly, loading only the distinct taps. Channel counts or
// pointers that do not allow 16-byte access use the same kernel with packs of one element.
// upsample_concat, NCHW: one thread per output pixel and run of kNchwChannels channels, taps computed once
// per run; neighbouring threads own neighbouring pixels of a row, so loads and stores coalesce.
// upsample_argmax / upsample_softmax_accumulate: one thread per output pixel walking the classes; channels_last
// logits are read as 16-byte packs of classes when the class count and pointer allow it.
// upsample_concat backward: a gather, one thread per input pixel and channel pack summing the output
// gradient over the outputs whose taps read that pixel (bilinear_touching_range), and a warp per image and
// pack for a 1x1 input (it reads every output pixel); no atomics, deterministic.
#pragma once

#include "common/memory.h"
#include "common/vec.h"
#include "cuda/launch.cuh"
#include "kernels/upsample.h"

namespace dlf::DLF_GPU_NS {
namespace upsample {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 8;
constexpr int kTileH = 8;
constexpr int kTileW = 16;
constexpr int kSlabPacks = 32;           // packs of one input staged at a time (a warp's worth)
constexpr int kSmemBytes = 32 * 1024;    // source window of one slab
constexpr int kNchwChannels = 8;         // channels per thread of the NCHW concat kernel

template <typename T, int V>
using PackOf = Vec<T, V>;

// Work items of the backward gather: input j owns [begin[j], begin[j] + items[j]) within [begin[j], begin[j + 1]).
struct ConcatWork {
  int64_t begin[kMaxConcatInputs + 1];
  int64_t items[kMaxConcatInputs];
};

template <typename T, int V>
__device__ __forceinline__ PackOf<T, V> load_pack(const T* p) {
  return load_global(reinterpret_cast<const PackOf<T, V>*>(p));
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const PackOf<T, V>& v) {
  store_global(reinterpret_cast<PackOf<T, V>*>(p), v);
}

// The four corner packs of a pixel, loading each distinct source pixel once (an axis whose two taps coincide,
// as at the same size or at the last row, repeats the loaded pack).
template <typename T, int V>
struct Corners {
  PackOf<T, V> a00, a01, a10, a11;
};

template <typename T, int V>
__device__ __forceinline__ Corners<T, V> load_corners(const T* base, int64_t r0, int64_t r1, int64_t q0, int64_t q1) {
  Corners<T, V> c;
  c.a00 = load_pack<T, V>(base + r0 + q0);
  c.a01 = q1 != q0 ? load_pack<T, V>(base + r0 + q1) : c.a00;
  if (r1 != r0) {
    c.a10 = load_pack<T, V>(base + r1 + q0);
    c.a11 = q1 != q0 ? load_pack<T, V>(base + r1 + q1) : c.a10;
  } else {
    c.a10 = c.a00, c.a11 = c.a01;
  }
  return c;
}

// Lane l of the blended pack.
template <typename T, int V>
__device__ __forceinline__ float blend_lane(const LinearTap& th, const LinearTap& tw, const PackOf<T, V>& a00,
                                            const PackOf<T, V>& a01, const PackOf<T, V>& a10, const PackOf<T, V>& a11,
                                            int l) {
  return bilinear_value(th, tw, static_cast<float>(a00.v[l]), static_cast<float>(a01.v[l]),
                        static_cast<float>(a10.v[l]), static_cast<float>(a11.v[l]));
}

template <typename T, int V>
__device__ __forceinline__ PackOf<T, V> blend(const LinearTap& th, const LinearTap& tw, const PackOf<T, V>& a00,
                                            const PackOf<T, V>& a01, const PackOf<T, V>& a10, const PackOf<T, V>& a11) {
  PackOf<T, V> r;
  DLF_UNROLL
  for (int l = 0; l < V; ++l) r.v[l] = static_cast<T>(blend_lane<T, V>(th, tw, a00, a01, a10, a11, l));
  return r;
}

// ---------------------------------------------------------------------------------------------------
// upsample_concat, channels_last.

// Input j's part of the output tile at (n, ho0, wo0) of th_n x tw_n pixels.
template <typename T, int V>
__device__ __forceinline__ void concat_tile_input(const UpsampleConcatParams& p, int j, int64_t n, int64_t ho0,
                                                  int64_t wo0, int th_n, int tw_n, PackOf<T, V>* smem) {
  const int64_t H = p.H[j], W = p.W[j], packs = p.C[j] / V;
  const float sh = p.scale_h[j], sw = p.scale_w[j];
  const bool ac = p.align_corners;
  const T* x = static_cast<const T*>(p.x[j]) + n * p.xs_n[j];
  T* y = static_cast<T*>(p.y) + n * p.ys_n + p.c_begin[j] * p.ys_c;
  // The tile's source window (the taps never decrease with the output index).
  const int64_t r_lo = bilinear_tap(sh, ho0, H, p.Ho, ac).i0;
  const int64_t r_hi = bilinear_tap(sh, ho0 + th_n - 1, H, p.Ho, ac).i1;
  const int64_t c_lo = bilinear_tap(sw, wo0, W, p.Wo, ac).i0;
  const int64_t c_hi = bilinear_tap(sw, wo0 + tw_n - 1, W, p.Wo, ac).i1;
  const int64_t win_h = r_hi - r_lo + 1, win_w = c_hi - c_lo + 1;
  const int slab = static_cast<int>(packs < kSlabPacks ? packs : kSlabPacks);
  const bool same = H == p.Ho && W == p.Wo;
  // Uniform over the block, so the barriers below are reached by every thread.
  const bool staged =
      !same && win_h * win_w * slab * static_cast<int64_t>(sizeof(PackOf<T, V>)) <= static_cast<int64_t>(kSmemBytes);
  const int tid = static_cast<int>(threadIdx.x);
  const int pixels = th_n * tw_n;
  for (int64_t pc0 = 0; pc0 < packs; pc0 += slab) {
    const int np = static_cast<int>(packs - pc0 < slab ? packs - pc0 : slab);
    const int lanes = static_cast<int>(blockDim.x) / np;  // pixels handled at once
    const int k = tid % np, lane = tid / np;
    const int64_t ch = (pc0 + k) * V;
    if (staged) {
      __syncthreads();  // the previous slab's readers are done
      const int window = static_cast<int>(win_h * win_w) * np;
      for (int s = tid; s < window; s += static_cast<int>(blockDim.x)) {
        const int q = s / np, sk = s % np;
        const int64_t r = r_lo + q / win_w, c = c_lo + q % win_w;
        smem[s] = load_pack<T, V>(x + r * p.xs_h[j] + c * p.xs_w[j] + (pc0 + sk) * V * p.xs_c[j]);
      }
      __syncthreads();
    }
    if (lane >= lanes) continue;
    for (int q = lane; q < pixels; q += lanes) {
      const int64_t ho = ho0 + q / tw_n, wo = wo0 + q % tw_n;
      const LinearTap th = bilinear_tap(sh, ho, H, p.Ho, ac);
      const LinearTap tw = bilinear_tap(sw, wo, W, p.Wo, ac);
      PackOf<T, V> out;
      if (staged) {
        const int64_t row0 = (th.i0 - r_lo) * win_w, row1 = (th.i1 - r_lo) * win_w;
        const int64_t col0 = tw.i0 - c_lo, col1 = tw.i1 - c_lo;
        out = blend<T, V>(th, tw, smem[(row0 + col0) * np + k], smem[(row0 + col1) * np + k],
                          smem[(row1 + col0) * np + k], smem[(row1 + col1) * np + k]);
      } else {
        const Corners<T, V> c = load_corners<T, V>(x + ch * p.xs_c[j], th.i0 * p.xs_h[j], th.i1 * p.xs_h[j],
                                                   tw.i0 * p.xs_w[j], tw.i1 * p.xs_w[j]);
        out = blend<T, V>(th, tw, c.a00, c.a01, c.a10, c.a11);
      }
      store_pack<T, V>(y + ho * p.ys_h + wo * p.ys_w + ch * p.ys_c, out);
    }
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) concat_nhwc_kernel(UpsampleConcatParams p, int64_t tiles_h,
                                                               int64_t tiles_w) {
  __shared__ __align__(16) unsigned char smem_bytes[kSmemBytes];
  PackOf<T, V>* smem = reinterpret_cast<PackOf<T, V>*>(smem_bytes);
  const int64_t tiles = p.N * tiles_h * tiles_w;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t tx = tile % tiles_w, ty = (tile / tiles_w) % tiles_h, n = tile / (tiles_w * tiles_h);
    const int64_t ho0 = ty * kTileH, wo0 = tx * kTileW;
    const int th_n = static_cast<int>(p.Ho - ho0 < kTileH ? p.Ho - ho0 : kTileH);
    const int tw_n = static_cast<int>(p.Wo - wo0 < kTileW ? p.Wo - wo0 : kTileW);
    for (int j = 0; j < p.num_inputs; ++j) concat_tile_input<T, V>(p, j, n, ho0, wo0, th_n, tw_n, smem);
  }
}

// ---------------------------------------------------------------------------------------------------
// upsample_concat, NCHW (any input strides).

template <typename T>
__global__ void __launch_bounds__(kThreads) concat_nchw_kernel(UpsampleConcatParams p, int64_t runs, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const int64_t wo = idx % p.Wo, ho = (idx / p.Wo) % p.Ho;
    const int64_t run = (idx / (p.Wo * p.Ho)) % runs, n = idx / (p.Wo * p.Ho * runs);
    const int64_t c_end = (run + 1) * kNchwChannels < p.Ctot ? (run + 1) * kNchwChannels : p.Ctot;
    int j = -1;
    LinearTap th{}, tw{};
    for (int64_t c = run * kNchwChannels; c < c_end; ++c) {
      if (j < 0 || c >= p.c_begin[j + 1]) {  // entering input j: its taps, once
        j = concat_input_of(p, c);
        th = bilinear_tap(p.scale_h[j], ho, p.H[j], p.Ho, p.align_corners);
        tw = bilinear_tap(p.scale_w[j], wo, p.W[j], p.Wo, p.align_corners);
      }
      const T* x = static_cast<const T*>(p.x[j]) + n * p.xs_n[j] + (c - p.c_begin[j]) * p.xs_c[j];
      const Corners<T, 1> v = load_corners<T, 1>(x, th.i0 * p.xs_h[j], th.i1 * p.xs_h[j], tw.i0 * p.xs_w[j],
                                                 tw.i1 * p.xs_w[j]);
      store_pack<T, 1>(static_cast<T*>(p.y) + n * p.ys_n + c * p.ys_c + ho * p.ys_h + wo * p.ys_w,
                       blend<T, 1>(th, tw, v.a00, v.a01, v.a10, v.a11));
    }
  }
}

// 16-byte packs for channels_last when every channel count, channel offset and pointer allows them.
template <typename T>
bool concat_vector_ok(const UpsampleConcatParams& p) {
  constexpr int V = DeviceLanes<T>::value;
  if (p.Ctot % V != 0 || !aligned(p.y, 16)) return false;
  for (int j = 0; j < p.num_inputs; ++j) {
    // Strides of size-1 dims are never used (a 1x1 input may keep NCHW strides).
    const bool strides_ok = (p.W[j] == 1 || p.xs_w[j] % V == 0) && (p.H[j] == 1 || p.xs_h[j] % V == 0) &&
                            (p.N == 1 || p.xs_n[j] % V == 0);
    if (p.C[j] % V != 0 || (p.C[j] > 1 && p.xs_c[j] != 1) || !strides_ok || !aligned(p.x[j], 16)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// upsample_argmax and upsample_softmax_accumulate: one thread per output pixel.

// fn(k, value) for the resized logits of classes k = 0..K-1 of one pixel, in class order; V classes per load.
template <typename T, int V, typename Fn>
__device__ __forceinline__ void for_each_class(const UpsampleClassParams& p, const T* xn, const LinearTap& th,
                                               const LinearTap& tw, const Fn& fn) {
  const int64_t r0 = th.i0 * p.xs_h, r1 = th.i1 * p.xs_h;
  const int64_t q0 = mirrored_index(tw.i0, p.W, p.flip) * p.xs_w, q1 = mirrored_index(tw.i1, p.W, p.flip) * p.xs_w;
  for (int64_t k0 = 0; k0 < p.K; k0 += V) {
    const Corners<T, V> c = load_corners<T, V>(xn + k0 * p.xs_k, r0, r1, q0, q1);
    DLF_UNROLL
    for (int l = 0; l < V; ++l) fn(k0 + l, blend_lane<T, V>(th, tw, c.a00, c.a01, c.a10, c.a11, l));
  }
}

struct PixelOf {
  int64_t n, ho, wo;
};
__device__ __forceinline__ PixelOf pixel_of(const UpsampleClassParams& p, int64_t idx) {
  return PixelOf{idx / (p.Wo * p.Ho), (idx / p.Wo) % p.Ho, idx % p.Wo};
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) argmax_kernel(UpsampleClassParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const PixelOf px = pixel_of(p, idx);
    const LinearTap th = bilinear_tap(p.scale_h, px.ho, p.H, p.Ho, p.align_corners);
    const LinearTap tw = bilinear_tap(p.scale_w, px.wo, p.W, p.Wo, p.align_corners);
    float best = 0.f;
    int64_t arg = 0;
    // argmax_pixel's walk: class 0 starts, later classes replace it under argmax_takes.
    for_each_class<T, V>(p, static_cast<const T*>(p.x) + px.n * p.xs_n, th, tw, [&](int64_t k, float v) {
      if (k == 0) {
        best = v;
      } else if (argmax_takes(v, best)) {
        best = v, arg = k;
      }
    });
    store_global(p.labels + idx, arg);
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) softmax_accumulate_kernel(UpsampleClassParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const PixelOf px = pixel_of(p, idx);
    const LinearTap th = bilinear_tap(p.scale_h, px.ho, p.H, p.Ho, p.align_corners);
    const LinearTap tw = bilinear_tap(p.scale_w, px.wo, p.W, p.Wo, p.align_corners);
    const T* xn = static_cast<const T*>(p.x) + px.n * p.xs_n;
    // softmax_accumulate_pixel's three passes, with the same arithmetic in the same order.
    float m = 0.f;
    for_each_class<T, V>(p, xn, th, tw, [&](int64_t k, float v) { m = k == 0 ? v : softmax_max(m, v); });
    float sum = 0.f;
    for_each_class<T, V>(p, xn, th, tw, [&](int64_t, float v) { sum += expf(v - m); });
    const float scale = softmax_scale(p.weight, sum, m);
    const int64_t plane = p.Ho * p.Wo;
    float* acc = p.accum + px.n * p.K * plane + px.ho * p.Wo + px.wo;
    for_each_class<T, V>(p, xn, th, tw, [&](int64_t k, float v) {
      store_global(acc + k * plane, load_global(acc + k * plane) + expf(v - m) * scale);
    });
  }
}

// 16-byte packs of classes: channels_last logits whose class count and pointer allow them.
template <typename T>
bool class_vector_ok(const UpsampleClassParams& p) {
  constexpr int V = DeviceLanes<T>::value;
  const bool strides_ok =
      (p.W == 1 || p.xs_w % V == 0) && (p.H == 1 || p.xs_h % V == 0) && (p.N == 1 || p.xs_n % V == 0);
  return p.xs_k == 1 && p.K % V == 0 && strides_ok && aligned(p.x, 16);
}

// ---------------------------------------------------------------------------------------------------
// upsample_concat backward: the gather.

// Input index of work item `idx` and its place: (j, local index).
__device__ __forceinline__ int backward_input_of(const int64_t* work_begin, int num_inputs, int64_t idx) {
  int j = 0;
  while (j + 1 < num_inputs && idx >= work_begin[j + 1]) ++j;
  return j;
}

// The gradient of one output pixel (ho, wo) read by input pixel (hi, wi), added to acc: each tap pair that
// reads (hi, wi) separately, as the scatter of the reference adds them (so 0 * inf is NaN there too).
template <typename T, int V>
__device__ __forceinline__ void gather_output_pixel(float* acc, const PackOf<T, V>& g, const LinearTap& th,
                                                    const LinearTap& tw, int64_t hi, int64_t wi) {
  const bool h0 = th.i0 == hi, h1 = th.i1 == hi, w0 = tw.i0 == wi, w1 = tw.i1 == wi;
  DLF_UNROLL
  for (int l = 0; l < V; ++l) {
    const float gv = static_cast<float>(g.v[l]);
    if (h0 && w0) acc[l] += (th.l0 * tw.l0) * gv;
    if (h0 && w1) acc[l] += (th.l0 * tw.l1) * gv;
    if (h1 && w0) acc[l] += (th.l1 * tw.l0) * gv;
    if (h1 && w1) acc[l] += (th.l1 * tw.l1) * gv;
  }
}

// A 1x1 input (image pooling) gathers from every output pixel: a warp per (image, pack) instead of a thread,
// its lanes summing strided pixels, then a fixed shuffle tree (deterministic).
DLF_HOST_DEVICE DLF_FORCEINLINE bool broadcast_gather(const UpsampleConcatBackwardParams& p, int j) {
  return p.H[j] == 1 && p.W[j] == 1 && p.Ho * p.Wo > 32;
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) concat_backward_kernel(UpsampleConcatBackwardParams p,
                                                                   ConcatWork work) {
  DLF_GRID_STRIDE_LOOP(idx, work.begin[p.num_inputs]) {
    const int j = backward_input_of(work.begin, p.num_inputs, idx);
    const int64_t i = idx - work.begin[j];
    if (i >= work.items[j]) continue;  // padding that aligns a broadcast input's range to whole warps
    const int64_t H = p.H[j], W = p.W[j], packs = p.C[j] / V;
    float acc[V];
    DLF_UNROLL
    for (int l = 0; l < V; ++l) acc[l] = 0.f;
    if (broadcast_gather(p, j)) {  // uniform over the warp: its range starts and ends on warp boundaries
      const int lane = static_cast<int>(i % 32);
      const int64_t pk = (i / 32) % packs, n = i / (32 * packs);
      const T* gy = static_cast<const T*>(p.gy) + n * p.ys_n + (p.c_begin[j] + pk * V) * p.ys_c;
      for (int64_t q = lane; q < p.Ho * p.Wo; q += 32) {
        const int64_t ho = q / p.Wo, wo = q % p.Wo;
        gather_output_pixel<T, V>(acc, load_pack<T, V>(gy + ho * p.ys_h + wo * p.ys_w),
                                  bilinear_tap(p.scale_h[j], ho, 1, p.Ho, p.align_corners),
                                  bilinear_tap(p.scale_w[j], wo, 1, p.Wo, p.align_corners), 0, 0);
      }
      DLF_UNROLL
      for (int l = 0; l < V; ++l) {
        for (int offset = 16; offset > 0; offset /= 2) acc[l] += __shfl_down_sync(0xffffffffu, acc[l], offset);
      }
      if (lane == 0) {
        PackOf<T, V> out;
        DLF_UNROLL
        for (int l = 0; l < V; ++l) out.v[l] = static_cast<T>(acc[l]);
        store_pack<T, V>(static_cast<T*>(p.gx[j]) + n * p.gs_n[j] + pk * V * p.gs_c[j], out);
      }
      continue;
    }
    int64_t n, pk, hi, wi;
    if (p.channels_last) {  // packs fastest: a warp reads and writes whole pixels
      pk = i % packs, wi = (i / packs) % W, hi = (i / (packs * W)) % H, n = i / (packs * W * H);
    } else {  // width fastest: a warp covers a row
      wi = i % W, hi = (i / W) % H, pk = (i / (W * H)) % packs, n = i / (W * H * packs);
    }
    int64_t ho_lo, ho_hi, wo_lo, wo_hi;
    bilinear_touching_range(p.scale_h[j], hi, H, p.Ho, p.align_corners, &ho_lo, &ho_hi);
    bilinear_touching_range(p.scale_w[j], wi, W, p.Wo, p.align_corners, &wo_lo, &wo_hi);
    const T* gy = static_cast<const T*>(p.gy) + n * p.ys_n + (p.c_begin[j] + pk * V) * p.ys_c;
    for (int64_t ho = ho_lo; ho < ho_hi; ++ho) {
      const LinearTap th = bilinear_tap(p.scale_h[j], ho, H, p.Ho, p.align_corners);
      for (int64_t wo = wo_lo; wo < wo_hi; ++wo) {
        gather_output_pixel<T, V>(acc, load_pack<T, V>(gy + ho * p.ys_h + wo * p.ys_w), th,
                                  bilinear_tap(p.scale_w[j], wo, W, p.Wo, p.align_corners), hi, wi);
      }
    }
    PackOf<T, V> out;
    DLF_UNROLL
    for (int l = 0; l < V; ++l) out.v[l] = static_cast<T>(acc[l]);
    T* gx = static_cast<T*>(p.gx[j]) + n * p.gs_n[j] + pk * V * p.gs_c[j] + hi * p.gs_h[j] + wi * p.gs_w[j];
    store_pack<T, V>(gx, out);
  }
}

template <typename T>
bool backward_vector_ok(const UpsampleConcatBackwardParams& p) {
  constexpr int V = DeviceLanes<T>::value;
  if (!p.channels_last || p.ys_c != 1 || p.Ctot % V != 0 || p.ys_w % V != 0 || p.ys_h % V != 0 ||
      p.ys_n % V != 0 || !aligned(p.gy, 16))
    return false;
  for (int j = 0; j < p.num_inputs; ++j) {
    if (p.C[j] % V != 0 || p.gs_c[j] != 1 || p.gs_w[j] % V != 0 || p.gs_h[j] % V != 0 || p.gs_n[j] % V != 0 ||
        !aligned(p.gx[j], 16))
      return false;
  }
  return true;
}

}  // namespace upsample

void upsample_concat(const UpsampleConcatParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_concat", [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = DeviceLanes<T>::value;
    const int64_t total = p.N * p.Ctot * p.Ho * p.Wo;
    if (total == 0) return;
    const char* op = "upsample_concat";
    if (p.channels_last) {
      const int64_t th = (p.Ho + upsample::kTileH - 1) / upsample::kTileH;
      const int64_t tw = (p.Wo + upsample::kTileW - 1) / upsample::kTileW;
      const unsigned grid = grid_for(p.N * th * tw, 1, upsample::kMaxBlocks);
      if (upsample::concat_vector_ok<T>(p)) {
        launch_kernel(upsample::concat_nhwc_kernel<T, V>, grid, upsample::kThreads, 0, stream, p, th, tw);
      } else {
        launch_kernel(upsample::concat_nhwc_kernel<T, 1>, grid, upsample::kThreads, 0, stream, p, th, tw);
      }
    } else {
      const int64_t runs = (p.Ctot + upsample::kNchwChannels - 1) / upsample::kNchwChannels;
      const int64_t items = p.N * runs * p.Ho * p.Wo;
      launch_kernel(upsample::concat_nchw_kernel<T>, grid_for(items, upsample::kThreads, upsample::kMaxBlocks),
                    upsample::kThreads, 0, stream, p, runs, items);
    }
    check_launch(op);
  });
}

void upsample_concat_backward(const UpsampleConcatBackwardParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_concat_backward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = DeviceLanes<T>::value;
    const bool vec = upsample::backward_vector_ok<T>(p);
    upsample::ConcatWork work{};
    for (int j = 0; j < p.num_inputs; ++j) {
      const int64_t packs = p.C[j] / (vec ? V : 1);
      if (upsample::broadcast_gather(p, j)) {  // a warp per item, starting on a warp boundary
        work.begin[j] = (work.begin[j] + 31) / 32 * 32;
        work.items[j] = p.N * packs * 32;
      } else {
        work.items[j] = p.N * packs * p.H[j] * p.W[j];
      }
      work.begin[j + 1] = work.begin[j] + work.items[j];
    }
    const int64_t items = work.begin[p.num_inputs];
    if (items == 0) return;
    const unsigned grid = grid_for(items, upsample::kThreads, upsample::kMaxBlocks);
    if (vec) {
      launch_kernel(upsample::concat_backward_kernel<T, V>, grid, upsample::kThreads, 0, stream, p, work);
    } else {
      launch_kernel(upsample::concat_backward_kernel<T, 1>, grid, upsample::kThreads, 0, stream, p, work);
    }
    check_launch("upsample_concat_backward");
  });
}

void upsample_argmax(const UpsampleClassParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_argmax", [&](auto tag) {
    using T = decltype(tag);
    const int64_t total = p.N * p.Ho * p.Wo;
    if (total == 0) return;
    const unsigned grid = grid_for(total, upsample::kThreads, upsample::kMaxBlocks);
    if (upsample::class_vector_ok<T>(p)) {
      launch_kernel(upsample::argmax_kernel<T, DeviceLanes<T>::value>, grid, upsample::kThreads, 0, stream, p, total);
    } else {
      launch_kernel(upsample::argmax_kernel<T, 1>, grid, upsample::kThreads, 0, stream, p, total);
    }
    check_launch("upsample_argmax");
  });
}

void upsample_softmax_accumulate(const UpsampleClassParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_softmax_accumulate", [&](auto tag) {
    using T = decltype(tag);
    const int64_t total = p.N * p.Ho * p.Wo;
    if (total == 0) return;
    const unsigned grid = grid_for(total, upsample::kThreads, upsample::kMaxBlocks);
    if (upsample::class_vector_ok<T>(p)) {
      launch_kernel(upsample::softmax_accumulate_kernel<T, DeviceLanes<T>::value>, grid, upsample::kThreads, 0,
                    stream, p, total);
    } else {
      launch_kernel(upsample::softmax_accumulate_kernel<T, 1>, grid, upsample::kThreads, 0, stream, p, total);
    }
    check_launch("upsample_softmax_accumulate");
  });
}

}  // namespace dlf::DLF_GPU_NS
