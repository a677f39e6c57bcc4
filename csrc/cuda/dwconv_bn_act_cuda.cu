// CUDA launcher: a grid-stride __global__ shell around the shared body, plus dtype dispatch.
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "cuda/launchers.h"
#include "kernels/dwconv_bn_act.h"

namespace dlf {

template <typename T>
__global__ void __launch_bounds__(256) dwconv_bn_act_kernel(DwconvParams p, int64_t total) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dwconv_bn_act_body<T>(p, idx);
  }
}

template <typename T>
static void launch(const DwconvParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.C * p.Ho * p.Wo;
  if (total == 0) return;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  dwconv_bn_act_kernel<T><<<grid, threads, 0, stream>>>(p, total);
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "dwconv_bn_act CUDA launch failed: ", cudaGetErrorString(err));
}

void dwconv_bn_act_cuda(const DwconvParams& p, c10::ScalarType dtype, cudaStream_t stream) {
  switch (dtype) {
    case c10::ScalarType::Float: return launch<float>(p, stream);
    case c10::ScalarType::Double: return launch<double>(p, stream);
    case c10::ScalarType::Half: return launch<c10::Half>(p, stream);
    case c10::ScalarType::BFloat16: return launch<c10::BFloat16>(p, stream);
    default: TORCH_CHECK(false, "dwconv_bn_act: unsupported dtype ", dtype);
  }
}

}  // namespace dlf
