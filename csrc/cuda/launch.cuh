// How a kernel of csrc/cuda/*.cuh is launched, written once for both builds of those headers:
//  * nvcc (csrc/cuda/*.cu): `<<<grid, block, smem, stream>>>` on the caller's stream, then cudaGetLastError;
//  * the host emulation (csrc/emu/*.cpp, DLF_CUDA_EMU): the same kernel through cuda_emu::launch, then the
//    emulation's recorded error.
// The launchers in the .cuh files are in namespace dlf::DLF_GPU_NS (dlf::cuda or dlf::emu) and take the
// stream as an opaque pointer, so the entry points see no CUDA runtime type.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/host_device.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define DLF_GPU_NS cuda
#else
#include "emu/cuda_emu.h"
#define DLF_GPU_NS emu
#endif

namespace dlf::DLF_GPU_NS {

template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, void* stream,
                   const Args&... args) {
#if defined(__CUDACC__)
  kernel<<<grid, block, smem, static_cast<cudaStream_t>(stream)>>>(args...);
#else
  (void)stream;
  ::cuda_emu::launch(grid, block, smem, [&] { kernel(args...); });
#endif
}

// Raise the launch's error, if any, naming the op.
inline void check_launch(const char* op) {
#if defined(__CUDACC__)
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, op, " CUDA launch failed: ", cudaGetErrorString(err));
#else
  const std::string err = ::cuda_emu::take_error();
  TORCH_CHECK(err.empty(), op, " emulated CUDA launch failed: ", err);
#endif
}

// Blocks for `total` items at `threads` per block, capped (the kernels loop grid-stride over the rest).
inline unsigned grid_for(int64_t total, int threads, int64_t max_blocks) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < max_blocks ? blocks : max_blocks);
}

inline bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

// The fp32 / fp16 / bf16 instantiation of `fn` for `dtype`; any other dtype is refused naming the op.
template <typename Fn>
void dispatch_float_types(c10::ScalarType dtype, const char* op, const Fn& fn) {
  switch (dtype) {
    case c10::ScalarType::Float: return fn(float{});
    case c10::ScalarType::Half: return fn(c10::Half{});
    case c10::ScalarType::BFloat16: return fn(c10::BFloat16{});
    default:
      TORCH_CHECK_VALUE(false, op, ": the CUDA kernels support float32, float16 and bfloat16, got ",
                        c10::toString(dtype));
  }
}

}  // namespace dlf::DLF_GPU_NS

// Grid-stride loop over [0, total) in a kernel.
#define DLF_GRID_STRIDE_LOOP(idx, total)                                                          \
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < (total); \
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
