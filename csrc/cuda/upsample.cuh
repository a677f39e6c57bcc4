// CUDA kernels of the upsample ops with their launch logic: grid-stride __global__ shells around the
// shared per-element bodies of csrc/kernels/upsample.h, plus dtype dispatch. Built twice from this one
// text (see csrc/cuda/launch.cuh): by nvcc in upsample_cuda.cu and by the host compiler in
// csrc/emu/upsample_emu.cpp (backend "cuda_emu").
//
// One thread per output element (concat) or output pixel (argmax, softmax_accumulate); the 2x2 source
// neighbourhoods are served by L1/L2.
#pragma once

#include "cuda/launch.cuh"
#include "kernels/upsample.h"

namespace dlf::DLF_GPU_NS {
namespace upsample {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 8;

template <typename T>
__global__ void __launch_bounds__(kThreads) concat_kernel(UpsampleConcatParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { upsample_concat_body<T>(p, idx); }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) argmax_kernel(UpsampleClassParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { upsample_argmax_body<T>(p, idx); }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_accumulate_kernel(UpsampleClassParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { upsample_softmax_accumulate_body<T>(p, idx); }
}

// One kernel over `total` items, then the launch check naming `op`.
template <typename Params>
void run(void (*kernel)(Params, int64_t), const Params& p, int64_t total, void* stream, const char* op) {
  if (total == 0) return;
  launch_kernel(kernel, grid_for(total, kThreads, kMaxBlocks), kThreads, 0, stream, p, total);
  check_launch(op);
}

}  // namespace upsample

void upsample_concat(const UpsampleConcatParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_concat", [&](auto tag) {
    upsample::run(upsample::concat_kernel<decltype(tag)>, p, p.N * p.Ctot * p.Ho * p.Wo, stream, "upsample_concat");
  });
}

void upsample_argmax(const UpsampleClassParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_argmax", [&](auto tag) {
    upsample::run(upsample::argmax_kernel<decltype(tag)>, p, p.N * p.Ho * p.Wo, stream, "upsample_argmax");
  });
}

void upsample_softmax_accumulate(const UpsampleClassParams& p, c10::ScalarType dtype, void* stream) {
  dispatch_float_types(dtype, "upsample_softmax_accumulate", [&](auto tag) {
    upsample::run(upsample::softmax_accumulate_kernel<decltype(tag)>, p, p.N * p.Ho * p.Wo, stream,
                  "upsample_softmax_accumulate");
  });
}

}  // namespace dlf::DLF_GPU_NS
