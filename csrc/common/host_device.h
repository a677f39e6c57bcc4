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

// The shared bodies are compiled three ways (host CPU launchers, nvcc, the CUDA emulation) into one
// library; each way gets its own inline namespace so their inline functions never merge at link time.
// Parameter structs, which cross from the entry points to every launcher, stay in plain `dlf`.
#if defined(__CUDACC__)
#define DLF_BUILD_NS nvcc_build
#elif defined(DLF_CUDA_EMU)
#define DLF_BUILD_NS emu_build
#else
#define DLF_BUILD_NS host_build
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
