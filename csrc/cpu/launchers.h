// CPU launchers, one per op: run the shared body (csrc/kernels) over the whole index space.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "kernels/dwconv_bn_act.h"

namespace dlf {
// Weight blocking the CPU channels_last forward expects (channels per block) for x's dtype.
int64_t dwconv_bn_act_cpu_weight_block(c10::ScalarType dtype);
void dwconv_bn_act_cpu(const DwconvParams& p, c10::ScalarType dtype);
void dwconv_bn_act_backward_cpu(const DwconvBwdParams& q, c10::ScalarType dtype);

// Winograd F(2x2, 3x3) and F(4x4, 3x3) transforms of a stride-1 3x3 convolution, any dilation, channels_last fp32,
// CPU only (on GPUs cuDNN chooses Winograd itself). The convolution is
//   V = input_transform(x)  (16, T, Cin);  M = bmm(V, U)  (16, T, Cout);  y = output_transform(M)
// with U = G g G^T the transformed weight (16, Cin, Cout), computed once in Python. A tile is 2x2
// outputs one dilation apart, (b, b + d) along each axis, reading the 4x4 inputs (b - d + u * d): with
// dilation d the map splits into d x d interleaved sub-grids, each an ordinary 3x3 convolution.

// Tile bases along one axis of `size` outputs at dilation d for tiles of m outputs: for each residue
// r < d the members r, r + d, r + 2d, ... grouped by m from the first; a last group may reach outside.
std::vector<int64_t> winograd_tile_bases(int64_t size, int64_t d, int m);

// True when x[0..n) holds no inf and no NaN (one vectorized pass).
bool all_finite_cpu(const float* x, int64_t n);

struct WinogradParams {
  int64_t N, C, H, W;  // input (and output: stride 1, "same" padding) sizes
  int64_t d;           // dilation
  const int64_t* tb_h; // tile bases along H (TH of them) and W (TW)
  const int64_t* tb_w;
  int64_t TH, TW;
  int m;  // outputs per tile side: 2 (F(2x2,3x3), 16 planes) or 4 (F(4x4,3x3), 36 planes)
};

// x (N, H, W, C) contiguous -> v ((m + 2)^2, N * TH * TW, C); taps outside the image read 0.
void winograd_input_transform_cpu(const WinogradParams& p, const float* x, float* v);

// m ((m + 2)^2, T, Cout) -> y (N, H, W, Cout) contiguous: y = act(A^T m A + bias [+ residual]); act 0 none,
// 1 relu, 2 relu6. bias and residual may be null (residual has y's layout).
void winograd_output_transform_cpu(const WinogradParams& p, int64_t Cout, const float* m, const float* bias,
                                   const float* residual, int act, float* y);

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
