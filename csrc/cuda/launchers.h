// CUDA launchers, one per op. Declared with light headers only so .cpp entry points can call them.
#pragma once

#include <c10/core/ScalarType.h>
#include <cuda_runtime_api.h>

#include "kernels/dwconv_bn_act.h"

namespace dlf {
// Weight blocking the CUDA channels_last forward uses: 16 bytes of channels per thread when the channel
// count and the x/y pointers allow aligned vector access, else 1.
int64_t dwconv_bn_act_cuda_weight_block(c10::ScalarType dtype, int64_t C, const void* x, const void* y);
void dwconv_bn_act_cuda(const DwconvParams& p, c10::ScalarType dtype, cudaStream_t stream);
void dwconv_bn_act_backward_cuda(const DwconvBwdParams& q, c10::ScalarType dtype, cudaStream_t stream);
}  // namespace dlf

// ---------------------------------------------------------------------------------------------------
// Upsample ops (csrc/cuda/upsample_cuda.cu): the shared bodies and parameter structs are in
// csrc/kernels/upsample.h.
#include "kernels/upsample.h"

namespace dlf {
void upsample_concat_cuda(const UpsampleConcatParams& p, c10::ScalarType dtype, cudaStream_t stream);
void upsample_argmax_cuda(const UpsampleClassParams& p, c10::ScalarType dtype, cudaStream_t stream);
void upsample_softmax_accumulate_cuda(const UpsampleClassParams& p, c10::ScalarType dtype, cudaStream_t stream);
}  // namespace dlf
