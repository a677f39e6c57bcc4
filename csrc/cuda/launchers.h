// Launchers of the CUDA kernels (csrc/cuda/*.cuh), declared for the op entry points with light headers
// only. One set of functions built twice: dlf::cuda (nvcc; CUDA tensors, `stream` a cudaStream_t) and
// dlf::emu (the host emulation; backend "cuda_emu" on CPU tensors, `stream` ignored).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "kernels/dwconv_bn_act.h"
#include "kernels/upsample.h"

// dwconv_bn_act_weight_block: the weight blocking the channels_last forward uses, 16 bytes of channels per
// thread when the channel count and the x / y pointers allow aligned vector access, else 1.
// dwconv_bn_act_backward_partials: floats of the partials buffer the backward needs when q.deterministic
// (0 otherwise); with q.deterministic false, q.gparams must hold zeros (the kernels add into it). The CUDA
// backward uses q.gpre (x's dtype, y's strides) as its one full-size temporary and ignores q.gprod.
#define DLF_DECLARE_GPU_LAUNCHERS                                                                              \
  int64_t dwconv_bn_act_weight_block(c10::ScalarType dtype, int64_t C, const void* x, const void* y);          \
  void dwconv_bn_act_forward(const DwconvParams& p, c10::ScalarType dtype, void* stream);                      \
  int64_t dwconv_bn_act_backward_partials(const DwconvBwdParams& q, c10::ScalarType dtype);                   \
  void dwconv_bn_act_backward(const DwconvBwdParams& q, c10::ScalarType dtype, void* stream);                  \
  void upsample_concat(const UpsampleConcatParams& p, c10::ScalarType dtype, void* stream);                    \
  void upsample_concat_backward(const UpsampleConcatBackwardParams& p, c10::ScalarType dtype, void* stream);   \
  void upsample_argmax(const UpsampleClassParams& p, c10::ScalarType dtype, void* stream);                     \
  void upsample_softmax_accumulate(const UpsampleClassParams& p, c10::ScalarType dtype, void* stream);

namespace dlf::emu {
DLF_DECLARE_GPU_LAUNCHERS
}  // namespace dlf::emu

#if defined(DLF_WITH_CUDA) || defined(__CUDACC__)
namespace dlf::cuda {
DLF_DECLARE_GPU_LAUNCHERS
}  // namespace dlf::cuda
#endif

#undef DLF_DECLARE_GPU_LAUNCHERS
