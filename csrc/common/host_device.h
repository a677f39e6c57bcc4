// Portability macros shared by the CPU and CUDA builds of every kernel body.
//
// A kernel body is written once as a DLF_HOST_DEVICE function (csrc/kernels/<op>.h). nvcc compiles it
// for the GPU inside a __global__ shell; the host compiler compiles the same text for the CPU launcher.
#pragma once

#include <cstdint>

#if defined(DLF_CUDA_EMU)
#include "emu/runtime.h"
#endif

#if defined(__CUDACC__)
#define DLF_HOST_DEVICE __host__ __device__
#define DLF_FORCEINLINE __forceinline__
#define DLF_UNROLL _Pragma("unroll")
#else
#define DLF_HOST_DEVICE
#define DLF_FORCEINLINE inline __attribute__((always_inline))
#define DLF_UNROLL _Pragma("GCC unroll 16")
#endif

// DLF_DEVICE_CODE: compiling the device side of a kernel, on the GPU (nvcc's device pass) or in the host
// emulation of CUDA (csrc/emu, backend "cuda_emu"). Kernel code tests this instead of __CUDA_ARCH__, so
// the emulation runs the very code the GPU runs.
#if defined(__CUDA_ARCH__) || defined(DLF_CUDA_EMU)
#define DLF_DEVICE_CODE 1
#else
#define DLF_DEVICE_CODE 0
#endif

// The CPU kernel translation units (csrc/cpu/{dwconv_bn_act,upsample,winograd}_cpu.cpp) are compiled once per
// instruction set, each with its own flags and DLF_CPU_CAPABILITY (setup.py): 0 "default" (no ISA flags, runs on
// any CPU), 1 "avx2" (AVX2 + FMA + F16C), 2 "avx512" (AVX-512 F/BW/VL/DQ on top). Each variant defines its
// launchers in its own namespace, DLF_CPU_NS, and csrc/cpu/dispatch.cpp forwards to the one chosen at run time
// (csrc/cpu/capability.h). The flags must match the number: a mismatch would put, say, AVX2 code in the path that
// runs on CPUs without AVX2.
#if defined(DLF_CPU_CAPABILITY)
#if DLF_CPU_CAPABILITY == 0
#if defined(__AVX__) || defined(__AVX2__) || defined(__AVX512F__)
#error "the default CPU variant (DLF_CPU_CAPABILITY=0) must be compiled without -mavx* flags"
#endif
#define DLF_CPU_NS cpu_default
#define DLF_HOST_BUILD_NS host_default
#elif DLF_CPU_CAPABILITY == 1
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__) || defined(__AVX512F__)
#error "the avx2 CPU variant (DLF_CPU_CAPABILITY=1) needs -mavx2 -mfma -mf16c and no -mavx512*"
#endif
#define DLF_CPU_NS cpu_avx2
#define DLF_HOST_BUILD_NS host_avx2
#elif DLF_CPU_CAPABILITY == 2
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512DQ__) || \
    !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "the avx512 CPU variant (DLF_CPU_CAPABILITY=2) needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c"
#endif
#define DLF_CPU_NS cpu_avx512
#define DLF_HOST_BUILD_NS host_avx512
#else
#error "DLF_CPU_CAPABILITY must be 0 (default), 1 (avx2) or 2 (avx512)"
#endif
#else
#define DLF_HOST_BUILD_NS host_build
#endif

// The shared bodies are compiled several ways into one library: host code without ISA flags (the op entry
// points), each CPU variant above, nvcc, the CUDA emulation. Each way gets its own inline namespace so their
// inline functions never merge at link time (the linker keeps one copy of an inline function: an AVX2 copy
// would otherwise run in the portable path, or a portable copy in the AVX2 one). Parameter structs, which
// cross from the entry points to every launcher, stay in plain `dlf`.
#if defined(__CUDACC__)
#define DLF_BUILD_NS nvcc_build
#elif defined(DLF_CUDA_EMU)
#define DLF_BUILD_NS emu_build
#else
#define DLF_BUILD_NS DLF_HOST_BUILD_NS
#endif
#define DLF_BODIES_BEGIN \
  namespace dlf {        \
  inline namespace DLF_BUILD_NS {
#define DLF_BODIES_END \
  }                    \
  }

namespace dlf {
// Activation codes shared by the schema (int argument), the Python API and the bodies.
enum Activation : int { kActNone = 0, kActRelu = 1, kActRelu6 = 2 };
}  // namespace dlf

DLF_BODIES_BEGIN

template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE T dlf_min(T a, T b) { return a < b ? a : b; }
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE T dlf_max(T a, T b) { return a > b ? a : b; }

// relu / relu6 as torch computes them: NaN stays NaN (each comparison is false for NaN, so it falls
// through to v), at the cost of the same two selects as `v > 0 ? v : 0`.
template <typename A>
DLF_HOST_DEVICE DLF_FORCEINLINE A apply_activation(A v, int act) {
  if (act == kActRelu) return v < A(0) ? A(0) : v;
  if (act == kActRelu6) return v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
  return v;
}

// d act(z) / dz as a 0/1 factor, blocked at the kinks as torch blocks it. At a NaN pre-activation relu passes
// the gradient (torch's threshold_backward: 0 only where z <= 0); relu6 blocks it, as torch's hardtanh_backward
// does on contiguous tensors (its channels_last kernel passes it: torch itself is not consistent there).
template <typename A>
DLF_HOST_DEVICE DLF_FORCEINLINE A activation_grad_mask(A z, int act) {
  if (act == kActRelu) return z <= A(0) ? A(0) : A(1);
  if (act == kActRelu6) return (z > A(0) && z < A(6)) ? A(1) : A(0);
  return A(1);
}

// Fixed-size array with a plain meaning on the host and aligned vector loads on the device.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

DLF_BODIES_END
