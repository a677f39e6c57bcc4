// The CUDA language as the host compiler sees it in the emulation build (DLF_CUDA_EMU): what lets the
// kernels of csrc/cuda/*.cuh, unchanged, run on a CPU (backend "cuda_emu"). Runtime: csrc/emu/runtime.h.
//
// The supported set, which is the set the kernels may use:
//   qualifiers   __global__, __device__, __host__, __forceinline__, __launch_bounds__(...), __restrict__,
//                __align__(n), __shared__ (static arrays in a kernel), DLF_DYNAMIC_SHARED(T, name) (the
//                `extern __shared__` array of the launch's dynamic shared memory; write it with this macro)
//   built-ins    threadIdx, blockIdx, blockDim, gridDim (3-D, unsigned x/y/z), warpSize (32)
//   sync         __syncthreads() (a real barrier of every thread of the block), __syncwarp(mask)
//   warp         __shfl_sync, __shfl_down_sync, __shfl_xor_sync (types of 1-8 bytes, width a power of two
//                <= 32), __ballot_sync; every lane named in the mask must make the same call
//   atomics      atomicAdd on float, double, int, unsigned, unsigned long long (returns the old value)
//   memory       every global load and store through load_global / store_global (csrc/common/memory.h:
//                alignment checked, traffic counted); __ldg(p); vector types char4/uchar4/short2/ushort2/
//                int2/int4/uint2/uint4/float2/float4/double2 with make_*
//   math         the <cmath> float functions (expf, fmaf, floorf, ...); half and bfloat16 through c10::Half
//                and c10::BFloat16 conversions.
// Not emulated, and a compile error naming itself when a kernel uses it: __shfl_up_sync, __any_sync,
// __all_sync, __activemask, __match_any_sync, __syncthreads_count/_and/_or, __threadfence*, atomicCAS,
// atomicExch, atomicMin, atomicMax, atomicSub, __expf, __fdividef, __ldcs/__ldcg/__stcs/__stcg, clock64,
// __nanosleep. Cooperative groups, inline PTX and dynamic parallelism are not available either.
//
// What the emulation cannot reproduce: the GPU's rounding (nvcc contracts a * b + c into FMAs, device expf
// differs in the last bits), timing, and memory ordering between blocks (blocks run one after another).
// Code under `__CUDA_ARCH__` is never compiled here: the kernels test DLF_DEVICE_CODE instead
// (csrc/common/host_device.h), which is true on the GPU and in this build.
#pragma once

#if defined(__CUDACC__)
#error "csrc/emu/cuda_emu.h is the host emulation of CUDA; nvcc compiles the kernels for the GPU directly"
#endif
#if !defined(DLF_CUDA_EMU)
#error "define DLF_CUDA_EMU before any include in an emulation translation unit"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu/runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one at a time on the launching OS thread, so a static per OS thread is one block's memory.
#define __shared__ static thread_local
#define DLF_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::cuda_emu::dynamic_shared_memory())

using dim3 = ::cuda_emu::Dim3;
#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuda_emu::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_emu::warp_barrier(mask); }

namespace cuda_emu {
template <typename T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "cuda_emu: shuffles move types of 1-8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
// Lane `src` of the calling lane's segment of `width` lanes (CUDA's rule for a source outside it).
inline int segment_lane(int width, int src) {
  const int lane = lane_id();
  return (lane & ~(width - 1)) + (src & (width - 1));
}
}  // namespace cuda_emu

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  const int src = ::cuda_emu::segment_lane(width, src_lane);
  return ::cuda_emu::from_bits<T>(::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(var), src));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  const int lane = ::cuda_emu::lane_id();
  const int in_segment = (lane & (width - 1)) + static_cast<int>(delta);
  // A source past the segment's end leaves the value unchanged.
  const int src = in_segment < width ? lane + static_cast<int>(delta) : lane;
  return ::cuda_emu::from_bits<T>(::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(var), src));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  const int lane = ::cuda_emu::lane_id();
  const int src = ::cuda_emu::segment_lane(width, (lane ^ lane_mask) & (width - 1));
  return ::cuda_emu::from_bits<T>(::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(var), src));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) { return ::cuda_emu::warp_ballot(mask, predicate != 0); }

// Fibers switch only at barriers, so a read-modify-write is atomic without more.
template <typename T>
T atomicAdd(T* address, T val) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int> ||
                    std::is_same_v<T, unsigned> || std::is_same_v<T, unsigned long long>,
                "cuda_emu: atomicAdd is emulated for float, double, int, unsigned and unsigned long long");
  const T old = *address;
  *address = old + val;
  return old;
}

template <typename T>
T __ldg(const T* p) {
  ::cuda_emu::on_global_access(p, sizeof(T), false);
  return *p;
}

// Vector types with CUDA's sizes and alignments.
#define DLF_EMU_VECTOR2(name, T, align) \
  struct __attribute__((aligned(align))) name { T x, y; };          \
  inline name make_##name(T x, T y) { return name{x, y}; }
#define DLF_EMU_VECTOR4(name, T, align) \
  struct __attribute__((aligned(align))) name { T x, y, z, w; };    \
  inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
DLF_EMU_VECTOR4(char4, signed char, 4)
DLF_EMU_VECTOR4(uchar4, unsigned char, 4)
DLF_EMU_VECTOR2(short2, short, 4)
DLF_EMU_VECTOR2(ushort2, unsigned short, 4)
DLF_EMU_VECTOR2(int2, int, 8)
DLF_EMU_VECTOR4(int4, int, 16)
DLF_EMU_VECTOR2(uint2, unsigned, 8)
DLF_EMU_VECTOR4(uint4, unsigned, 16)
DLF_EMU_VECTOR2(float2, float, 8)
DLF_EMU_VECTOR4(float4, float, 16)
DLF_EMU_VECTOR2(double2, double, 16)
#undef DLF_EMU_VECTOR2
#undef DLF_EMU_VECTOR4

// Intrinsics outside the supported set: using one is a compile error that names it.
namespace cuda_emu {
template <typename... A>
struct not_emulated : std::false_type {};
}  // namespace cuda_emu
#define DLF_EMU_NOT_EMULATED(name)                                                                        \
  template <typename... A>                                                                               \
  int name(A...) {                                                                                       \
    static_assert(::cuda_emu::not_emulated<A...>::value,                                                 \
                  "cuda_emu: " #name " is not emulated; csrc/emu/cuda_emu.h lists what kernels may use"); \
    return 0;                                                                                            \
  }
DLF_EMU_NOT_EMULATED(__shfl_up_sync)
DLF_EMU_NOT_EMULATED(__any_sync)
DLF_EMU_NOT_EMULATED(__all_sync)
DLF_EMU_NOT_EMULATED(__activemask)
DLF_EMU_NOT_EMULATED(__match_any_sync)
DLF_EMU_NOT_EMULATED(__match_all_sync)
DLF_EMU_NOT_EMULATED(__syncthreads_count)
DLF_EMU_NOT_EMULATED(__syncthreads_and)
DLF_EMU_NOT_EMULATED(__syncthreads_or)
DLF_EMU_NOT_EMULATED(__threadfence)
DLF_EMU_NOT_EMULATED(__threadfence_block)
DLF_EMU_NOT_EMULATED(__threadfence_system)
DLF_EMU_NOT_EMULATED(atomicCAS)
DLF_EMU_NOT_EMULATED(atomicExch)
DLF_EMU_NOT_EMULATED(atomicMin)
DLF_EMU_NOT_EMULATED(atomicMax)
DLF_EMU_NOT_EMULATED(atomicSub)
DLF_EMU_NOT_EMULATED(__expf)
DLF_EMU_NOT_EMULATED(__fdividef)
DLF_EMU_NOT_EMULATED(__ldcs)
DLF_EMU_NOT_EMULATED(__ldcg)
DLF_EMU_NOT_EMULATED(__stcs)
DLF_EMU_NOT_EMULATED(__stcg)
DLF_EMU_NOT_EMULATED(clock64)
DLF_EMU_NOT_EMULATED(__nanosleep)
#undef DLF_EMU_NOT_EMULATED
