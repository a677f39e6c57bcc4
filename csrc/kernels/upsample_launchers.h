// Launchers of the upsample ops on each device, declared with light headers only so the .cpp entry
// point (csrc/ops/upsample_ops.cpp) can call them.
#pragma once

#include <c10/core/ScalarType.h>

#include "kernels/upsample.h"

#ifdef DLF_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace dlf {
void upsample_concat_cpu(const UpsampleConcatParams& p, c10::ScalarType dtype);
void upsample_argmax_cpu(const UpsampleClassParams& p, c10::ScalarType dtype);
void upsample_softmax_accumulate_cpu(const UpsampleClassParams& p, c10::ScalarType dtype);
#ifdef DLF_WITH_CUDA
void upsample_concat_cuda(const UpsampleConcatParams& p, c10::ScalarType dtype, cudaStream_t stream);
void upsample_argmax_cuda(const UpsampleClassParams& p, c10::ScalarType dtype, cudaStream_t stream);
void upsample_softmax_accumulate_cuda(const UpsampleClassParams& p, c10::ScalarType dtype, cudaStream_t stream);
#endif
}  // namespace dlf
