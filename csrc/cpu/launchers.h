// CPU launchers, one per op: run the shared body (csrc/kernels) over the whole index space.
#pragma once

#include <c10/core/ScalarType.h>

#include "kernels/dwconv_bn_act.h"

namespace dlf {
// Weight blocking the CPU channels_last forward expects (channels per block) for x's dtype.
int64_t dwconv_bn_act_cpu_weight_block(c10::ScalarType dtype);
void dwconv_bn_act_cpu(const DwconvParams& p, c10::ScalarType dtype);
void dwconv_bn_act_backward_cpu(const DwconvBwdParams& q, c10::ScalarType dtype);
}  // namespace dlf

// ---------------------------------------------------------------------------------------------------
// Upsample ops (csrc/cpu/upsample_cpu.cpp): the shared bodies and parameter structs are in
// csrc/kernels/upsample.h.
#include "kernels/upsample.h"

namespace dlf {
void upsample_concat_cpu(const UpsampleConcatParams& p, c10::ScalarType dtype);
void upsample_argmax_cpu(const UpsampleClassParams& p, c10::ScalarType dtype);
void upsample_softmax_accumulate_cpu(const UpsampleClassParams& p, c10::ScalarType dtype);
}  // namespace dlf
