// Portability macros shared by the CPU and CUDA builds of every kernel body.
//
// A kernel body is written once as a DLF_HOST_DEVICE function (csrc/kernels/<op>.h). nvcc compiles it
// for the GPU inside a __global__ shell; the host compiler compiles the same text for the CPU launcher.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DLF_HOST_DEVICE __host__ __device__
#define DLF_FORCEINLINE __forceinline__
#else
#define DLF_HOST_DEVICE
#define DLF_FORCEINLINE inline __attribute__((always_inline))
#endif

namespace dlf {

// Activation codes shared by the schema (int argument), the Python API and the bodies.
enum Activation : int { kActNone = 0, kActRelu = 1, kActRelu6 = 2 };

template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE T dlf_min(T a, T b) { return a < b ? a : b; }
template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE T dlf_max(T a, T b) { return a > b ? a : b; }

DLF_HOST_DEVICE DLF_FORCEINLINE float apply_activation(float v, int act) {
  if (act == kActRelu) return v > 0.f ? v : 0.f;
  if (act == kActRelu6) return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
  return v;
}

// Fixed-size array with a plain meaning on the host and aligned vector loads on the device.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

}  // namespace dlf
