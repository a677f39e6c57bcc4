// CPU launchers, one per op: run the shared body (csrc/kernels) over the whole index space.
//
// Each launcher exists once per instruction-set variant (dlf::cpu_default, dlf::cpu_avx2, dlf::cpu_avx512: the
// kernel translation units compiled with their own flags, see DLF_CPU_NS in common/host_device.h) and once as the
// public dlf::<name> the op entry points call: a forward to the variant chosen at run time (csrc/cpu/dispatch.cpp,
// csrc/cpu/capability.h).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "kernels/dwconv_bn_act.h"
#include "kernels/upsample.h"

namespace dlf {
// Winograd F(2x2, 3x3) and F(4x4, 3x3) transforms of a stride-1 3x3 convolution, any dilation, channels_last fp32,
// CPU only (on GPUs cuDNN chooses Winograd itself). The convolution is
//   V = input_transform(x)  (16, T, Cin);  M = bmm(V, U)  (16, T, Cout);  y = output_transform(M)
// with U = G g G^T the transformed weight (16, Cin, Cout), computed once in Python. A tile is 2x2
// outputs one dilation apart, (b, b + d) along each axis, reading the 4x4 inputs (b - d + u * d): with
// dilation d the map splits into d x d interleaved sub-grids, each an ordinary 3x3 convolution.
struct WinogradParams {
  int64_t N, C, H, W;  // input (and output: stride 1, "same" padding) sizes
  int64_t d;           // dilation
  const int64_t* tb_h; // tile bases along H (TH of them) and W (TW)
  const int64_t* tb_w;
  int64_t TH, TW;
  int m;  // outputs per tile side: 2 (F(2x2,3x3), 16 planes) or 4 (F(4x4,3x3), 36 planes)
};
}  // namespace dlf

// The launchers, one row each: X(return type, name, (parameters), (arguments)); the arguments let
// csrc/cpu/dispatch.cpp write every forward from this one list.
//
// dwconv_bn_act_cpu_weight_block: the weight blocking (channels per block) the channels_last forward of this
//   variant expects for x's dtype (it follows the variant's lane width).
// dwconv_bn_act_cpu, dwconv_bn_act_backward_cpu: the forward and the backward (csrc/kernels/dwconv_bn_act.h).
// winograd_tile_bases: tile bases along one axis of `size` outputs at dilation d for tiles of m outputs: for each
//   residue r < d the members r, r + d, r + 2d, ... grouped by m from the first; a last group may reach outside.
// all_finite_cpu: true when x[0..n) holds no inf and no NaN (one vectorized pass).
// winograd_input_transform_cpu: x (N, H, W, C) contiguous -> v ((m + 2)^2, N * TH * TW, C); taps outside the
//   image read 0.
// winograd_output_transform_cpu: m ((m + 2)^2, T, Cout) -> y (N, H, W, Cout) contiguous:
//   y = act(A^T m A + bias [+ residual]); act 0 none, 1 relu, 2 relu6. bias and residual may be null (residual has
//   y's layout).
// upsample_*_cpu: the upsample ops; the parameter structs are in csrc/kernels/upsample.h.
#define DLF_CPU_LAUNCHERS(X)                                                                                    \
  X(int64_t, dwconv_bn_act_cpu_weight_block, (c10::ScalarType dtype), (dtype))                                 \
  X(void, dwconv_bn_act_cpu, (const DwconvParams& p, c10::ScalarType dtype), (p, dtype))                       \
  X(void, dwconv_bn_act_backward_cpu, (const DwconvBwdParams& q, c10::ScalarType dtype), (q, dtype))          \
  X(std::vector<int64_t>, winograd_tile_bases, (int64_t size, int64_t d, int m), (size, d, m))                 \
  X(bool, all_finite_cpu, (const float* x, int64_t n), (x, n))                                                 \
  X(void, winograd_input_transform_cpu, (const WinogradParams& p, const float* x, float* v), (p, x, v))        \
  X(void, winograd_output_transform_cpu,                                                                       \
    (const WinogradParams& p, int64_t Cout, const float* m, const float* bias, const float* residual, int act, \
     float* y),                                                                                                \
    (p, Cout, m, bias, residual, act, y))                                                                      \
  X(void, upsample_concat_cpu, (const UpsampleConcatParams& p, c10::ScalarType dtype), (p, dtype))             \
  X(void, upsample_argmax_cpu, (const UpsampleClassParams& p, c10::ScalarType dtype), (p, dtype))              \
  X(void, upsample_softmax_accumulate_cpu, (const UpsampleClassParams& p, c10::ScalarType dtype), (p, dtype))

#define DLF_DECLARE_CPU_LAUNCHER(ret, name, params, args) ret name params;

// The public launchers (dispatch.cpp) and every variant's (the kernel translation units; the variants a build
// lacks are declared and never defined nor called).
namespace dlf {
DLF_CPU_LAUNCHERS(DLF_DECLARE_CPU_LAUNCHER)
}  // namespace dlf
namespace dlf::cpu_default {
DLF_CPU_LAUNCHERS(DLF_DECLARE_CPU_LAUNCHER)
}  // namespace dlf::cpu_default
namespace dlf::cpu_avx2 {
DLF_CPU_LAUNCHERS(DLF_DECLARE_CPU_LAUNCHER)
}  // namespace dlf::cpu_avx2
namespace dlf::cpu_avx512 {
DLF_CPU_LAUNCHERS(DLF_DECLARE_CPU_LAUNCHER)
}  // namespace dlf::cpu_avx512

#undef DLF_DECLARE_CPU_LAUNCHER
