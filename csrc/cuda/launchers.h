// CUDA launchers, one per op. Declared with light headers only so .cpp entry points can call them.
#pragma once

#include <c10/core/ScalarType.h>
#include <cuda_runtime_api.h>

#include "kernels/dwconv_bn_act.h"

namespace dlf {
void dwconv_bn_act_cuda(const DwconvParams& p, c10::ScalarType dtype, cudaStream_t stream);
}  // namespace dlf
