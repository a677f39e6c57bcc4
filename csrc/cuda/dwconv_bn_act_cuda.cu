// CUDA launchers of dwconv_bn_act: grid-stride __global__ shells around the shared bodies of
// csrc/kernels/dwconv_bn_act.h, plus dtype dispatch. One thread per output (NCHW) or per 16-byte pack of
// channels of one output pixel (channels_last, vector loads). float64 is not instantiated: the entry point
// rejects it with a clear message (it is a checking dtype, served by the CPU and reference backends).
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cuda/launchers.h"
#include "kernels/dwconv_bn_act.h"

namespace dlf {
namespace {

constexpr int kThreads = 256;

#define DLF_GRID_STRIDE_LOOP(idx, total)                                                          \
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < (total); \
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T, int V, int KT>
__global__ void __launch_bounds__(kThreads) fwd_nhwc_kernel(DwconvParams p, int64_t total) {
  const int64_t packs = p.C / V;
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const int64_t cp = idx % packs;
    int64_t r = idx / packs;
    const int64_t wo = r % p.Wo;
    r /= p.Wo;
    dwconv_fwd_nhwc_body<T, V, KT, 1>(p, r / p.Ho, r % p.Ho, wo, wo + 1, cp * V, cp * V + V);
  }
}

template <typename T, int S>
__global__ void __launch_bounds__(kThreads) fwd_nchw_kernel(DwconvParams p, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) {
    const int64_t wo = idx % p.Wo;
    int64_t r = idx / p.Wo;
    const int64_t ho = r % p.Ho;
    r /= p.Ho;
    dwconv_fwd_nchw_body<T, 1, S>(p, r / p.C, r % p.C, ho, wo);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_gpre_kernel(DwconvBwdParams q, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { dwconv_bwd_gpre_body<T>(q, idx); }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_dx_kernel(DwconvBwdParams q, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { dwconv_bwd_dx_body<T>(q, idx); }
}

template <typename T, int S>
__global__ void __launch_bounds__(kThreads) bwd_params_kernel(DwconvBwdParams q, int64_t total) {
  DLF_GRID_STRIDE_LOOP(idx, total) { dwconv_bwd_params_body<T, S>(q, idx); }
}

unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, what, " CUDA launch failed: ", cudaGetErrorString(err));
}

bool aligned(const void* ptr, int64_t bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

template <typename T, int V>
void forward_nhwc(const DwconvParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.Ho * p.Wo * (p.C / V);
  if constexpr (V == 1) {
    // The unaligned fallback: runtime k keeps it small (unrolled k = 7 spilled for 16-bit types).
    fwd_nhwc_kernel<T, 1, 0><<<grid_for(total), kThreads, 0, stream>>>(p, total);
  } else {
    // k = 3 (every DeepLab depthwise conv) is unrolled; unrolled k = 5 / 7 spilled on sm_80, so they loop.
    if (p.K == 3) {
      fwd_nhwc_kernel<T, V, 3><<<grid_for(total), kThreads, 0, stream>>>(p, total);
    } else {
      fwd_nhwc_kernel<T, V, 0><<<grid_for(total), kThreads, 0, stream>>>(p, total);
    }
  }
}

template <typename T>
void forward(const DwconvParams& p, cudaStream_t stream) {
  if (p.channels_last) {
    // The entry point chose the pack width (dwconv_bn_act_cuda_weight_block) and blocked the weight by it.
    constexpr int V = DeviceLanes<T>::value;
    if (p.w_block == V) {
      forward_nhwc<T, V>(p, stream);
    } else {
      TORCH_CHECK(p.w_block == 1, "dwconv_bn_act: unexpected weight blocking ", p.w_block);
      forward_nhwc<T, 1>(p, stream);
    }
  } else {
    const int64_t total = p.N * p.C * p.Ho * p.Wo;
    if (p.stride == 1) {
      fwd_nchw_kernel<T, 1><<<grid_for(total), kThreads, 0, stream>>>(p, total);
    } else {
      fwd_nchw_kernel<T, 2><<<grid_for(total), kThreads, 0, stream>>>(p, total);
    }
  }
  check_launch("dwconv_bn_act");
}

template <typename T>
void backward(const DwconvBwdParams& q, cudaStream_t stream) {
  const DwconvParams& p = q.f;
  const int64_t outs = p.N * p.C * p.Ho * p.Wo;
  bwd_gpre_kernel<T><<<grid_for(outs), kThreads, 0, stream>>>(q, outs);
  const int64_t ins = p.N * p.C * p.H * p.W;
  bwd_dx_kernel<T><<<grid_for(ins), kThreads, 0, stream>>>(q, ins);
  const int64_t slots = p.C * (static_cast<int64_t>(p.K) * p.K + 2);
  if (p.stride == 1) {
    bwd_params_kernel<T, 1><<<grid_for(slots), kThreads, 0, stream>>>(q, slots);
  } else {
    bwd_params_kernel<T, 2><<<grid_for(slots), kThreads, 0, stream>>>(q, slots);
  }
  check_launch("dwconv_bn_act_backward");
}

}  // namespace

int64_t dwconv_bn_act_cuda_weight_block(c10::ScalarType dtype, int64_t C, const void* x, const void* y) {
  const int64_t V = 16 / static_cast<int64_t>(c10::elementSize(dtype));
  // Packs must not straddle pixels and must be 16-byte aligned: C % V == 0 and aligned base pointers.
  return (C % V == 0 && aligned(x, 16) && aligned(y, 16)) ? V : 1;
}

void dwconv_bn_act_cuda(const DwconvParams& p, c10::ScalarType dtype, cudaStream_t stream) {
  switch (dtype) {
    case c10::ScalarType::Float: return forward<float>(p, stream);
    case c10::ScalarType::Half: return forward<c10::Half>(p, stream);
    case c10::ScalarType::BFloat16: return forward<c10::BFloat16>(p, stream);
    default: TORCH_CHECK(false, "dwconv_bn_act on CUDA supports float32, float16 and bfloat16, got ", dtype);
  }
}

void dwconv_bn_act_backward_cuda(const DwconvBwdParams& q, c10::ScalarType dtype, cudaStream_t stream) {
  switch (dtype) {
    case c10::ScalarType::Float: return backward<float>(q, stream);
    case c10::ScalarType::Half: return backward<c10::Half>(q, stream);
    case c10::ScalarType::BFloat16: return backward<c10::BFloat16>(q, stream);
    default: TORCH_CHECK(false, "dwconv_bn_act_backward on CUDA supports float32, float16 and bfloat16, got ", dtype);
  }
}

}  // namespace dlf
