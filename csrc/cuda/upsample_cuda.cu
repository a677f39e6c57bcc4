// CUDA launchers of the upsample ops: grid-stride __global__ shells around the shared per-element
// bodies of csrc/kernels/upsample.h, plus dtype dispatch. One thread per output element (concat) or
// output pixel (argmax, softmax_accumulate); the 2x2 source neighbourhoods are served by L1/L2.
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "cuda/launchers.h"

namespace dlf {
namespace {

template <typename T>
__global__ void __launch_bounds__(256) upsample_concat_kernel(UpsampleConcatParams p, int64_t total) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    upsample_concat_body<T>(p, idx);
  }
}

template <typename T>
__global__ void __launch_bounds__(256) upsample_argmax_kernel(UpsampleClassParams p, int64_t total) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    upsample_argmax_body<T>(p, idx);
  }
}

template <typename T>
__global__ void __launch_bounds__(256) upsample_softmax_accumulate_kernel(UpsampleClassParams p, int64_t total) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    upsample_softmax_accumulate_body<T>(p, idx);
  }
}

unsigned grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, op, " CUDA launch failed: ", cudaGetErrorString(err));
}

template <typename T>
void launch_concat(const UpsampleConcatParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.Ctot * p.Ho * p.Wo;
  if (total == 0) return;
  upsample_concat_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(p, total);
  check_launch("upsample_concat");
}

template <typename T>
void launch_argmax(const UpsampleClassParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.Ho * p.Wo;
  if (total == 0) return;
  upsample_argmax_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(p, total);
  check_launch("upsample_argmax");
}

template <typename T>
void launch_softmax(const UpsampleClassParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.Ho * p.Wo;
  if (total == 0) return;
  upsample_softmax_accumulate_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(p, total);
  check_launch("upsample_softmax_accumulate");
}

}  // namespace

#define DLF_UPSAMPLE_DISPATCH(FN, OP)                                                  \
  switch (dtype) {                                                                     \
    case c10::ScalarType::Float: return FN<float>(p, stream);                          \
    case c10::ScalarType::Half: return FN<c10::Half>(p, stream);                       \
    case c10::ScalarType::BFloat16: return FN<c10::BFloat16>(p, stream);               \
    default: TORCH_CHECK(false, OP ": unsupported dtype ", dtype);                     \
  }

void upsample_concat_cuda(const UpsampleConcatParams& p, c10::ScalarType dtype, cudaStream_t stream) {
  DLF_UPSAMPLE_DISPATCH(launch_concat, "upsample_concat")
}
void upsample_argmax_cuda(const UpsampleClassParams& p, c10::ScalarType dtype, cudaStream_t stream) {
  DLF_UPSAMPLE_DISPATCH(launch_argmax, "upsample_argmax")
}
void upsample_softmax_accumulate_cuda(const UpsampleClassParams& p, c10::ScalarType dtype, cudaStream_t stream) {
  DLF_UPSAMPLE_DISPATCH(launch_softmax, "upsample_softmax_accumulate")
}

}  // namespace dlf
