// winograd_conv3x3: a stride-1 3x3 convolution (any dilation, "same" padding) through Winograd F(2x2, 3x3) or
// F(4x4, 3x3) on the CPU: input transform, (m + 2)^2 GEMMs (at::bmm), output transform with bias, residual
// and activation. u is the transformed weight G g G^T ((m + 2)^2, Cin, Cout) from
// deeplab_fast.ops.winograd_weight.
//
// Non-finite inputs: a tile's transforms mix all its inputs, so one inf or NaN would turn the whole tile
// into NaN where the direct convolution gives inf only where the receptive field holds the inf (and NaN
// where it meets inf - inf or a NaN). An input that holds inf or NaN (one vectorized pass over x, about
// 1% of the op) therefore runs the direct convolution instead, with the weight recovered from u
// (weight_from_u): the result is then what the reference gives.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "common/checks.h"
#include "common/host_device.h"
#include "cpu/launchers.h"
#include "cpu/output_pool.h"

namespace dlf {
namespace {

// The checks of deeplab_fast.ops.winograd's Python check (reference backend, fake impl), in the same order
// and words.
void check_inputs(const at::Tensor& x, const at::Tensor& u, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, int64_t dilation, int64_t activation) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be a 4-D (N, Cin, H, W) tensor, got ", x.dim(), "-D with shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat, "x must be float32, got ", dtype_name(x.scalar_type()));
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(u.dim() == 3 && (u.size(0) == 16 || u.size(0) == 36) && u.size(1) == C,
                    "u must have shape (16 or 36, ", C, ", Cout) (winograd_weight of a (Cout, ", C,
                    ", 3, 3) weight), got ", u.sizes());
  DLF_CHECK_SAME_DTYPE(x, u, "x", "u");
  DLF_CHECK_SAME_DEVICE(x, u, "x", "u");
  const int64_t Cout = u.size(2);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == Cout, "bias must have shape (", Cout,
                      ",) (u's Cout), got ", bias->sizes());
    DLF_CHECK_SAME_DTYPE(x, *bias, "x", "bias");
    DLF_CHECK_SAME_DEVICE(x, *bias, "x", "bias");
  }
  if (residual.has_value()) {
    TORCH_CHECK_VALUE(residual->sizes() == at::IntArrayRef({x.size(0), Cout, x.size(2), x.size(3)}),
                      "residual must have shape (", x.size(0), ", ", Cout, ", ", x.size(2), ", ", x.size(3),
                      ") (the output's), got ", residual->sizes());
    DLF_CHECK_SAME_DTYPE(x, *residual, "x", "residual");
    DLF_CHECK_SAME_DEVICE(x, *residual, "x", "residual");
  }
  TORCH_CHECK_VALUE(dilation >= 1, "dilation must be an int >= 1, got ", dilation);
  TORCH_CHECK_VALUE(activation >= 0 && activation <= 2,
                    "activation code must be 0 (none), 1 (relu) or 2 (relu6), got ", activation);
}

// The 3x3 weight (Cout, Cin, 3, 3) of u = G w G^T: w = L u L^T with L a left inverse of G whose rows pick
// the exact corner points (w0 = u0 times 1 or 4, w2 = u_last) and one difference for the middle tap.
// The same as deeplab_fast.ops.winograd.weight_from_u.
at::Tensor weight_from_u(const at::Tensor& u) {
  const int64_t A = u.size(0) == 16 ? 4 : 6, Cin = u.size(1), Cout = u.size(2);
  at::Tensor L = at::zeros({3, A}, u.options().dtype(at::kDouble));
  auto l = L.accessor<double, 2>();
  if (A == 4) {
    l[0][0] = 1, l[1][1] = 1, l[1][2] = -1, l[2][3] = 1;
  } else {
    l[0][0] = 4, l[1][1] = -3, l[1][2] = 3, l[2][5] = 1;
  }
  const at::Tensor u4 = u.to(at::kDouble).reshape({A, A, Cin, Cout});
  return at::einsum("ia,jb,abco->ocij", {L, L, u4}).to(at::kFloat);
}

// act(conv2d(x, w, bias, padding=d, dilation=d) + residual) with the activations of torch (NaN stays NaN).
at::Tensor direct_conv(const at::Tensor& x, const at::Tensor& u, const at::Tensor& bias, const at::Tensor& residual,
                       int64_t d, int64_t activation) {
  at::Tensor y = at::conv2d(x, weight_from_u(u), bias, {1, 1}, {d, d}, {d, d});
  if (residual.defined()) y.add_(residual);
  if (activation == kActRelu) y.relu_();
  if (activation == kActRelu6) y.clamp_(0, 6);
  return y.contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor winograd_conv3x3(const at::Tensor& x_in, const at::Tensor& u_in, const std::optional<at::Tensor>& bias_in,
                            const std::optional<at::Tensor>& residual_in, int64_t dilation, int64_t activation) {
  check_inputs(x_in, u_in, bias_in, residual_in, dilation, activation);
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), Cout = u_in.size(2);
  const int tile = u_in.size(0) == 16 ? 2 : 4;
  // A dilation of at least max(H, W) leaves only the centre tap inside the map: max(H, W) gives the same
  // result and keeps the tile arithmetic far from int64 overflow.
  dilation = std::min<int64_t>(dilation, std::max<int64_t>({H, W, 1}));
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  const at::Tensor residual =
      residual_in.has_value() ? residual_in->contiguous(at::MemoryFormat::ChannelsLast) : at::Tensor();
  if (N * Cout * H * W == 0) return new_output({N, Cout, H, W}, x_in, at::kFloat, at::MemoryFormat::ChannelsLast);
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  if (!all_finite_cpu(x.data_ptr<float>(), x.numel())) return direct_conv(x, u_in, bias, residual, dilation, activation);
  at::Tensor y = new_output({N, Cout, H, W}, x_in, at::kFloat, at::MemoryFormat::ChannelsLast);
  const at::Tensor u = u_in.contiguous();
  const std::vector<int64_t> tb_h = winograd_tile_bases(H, dilation, tile);
  const std::vector<int64_t> tb_w = winograd_tile_bases(W, dilation, tile);
  WinogradParams p{N,           C,           H, W, dilation, tb_h.data(), tb_w.data(), static_cast<int64_t>(tb_h.size()),
                   static_cast<int64_t>(tb_w.size()), tile};
  const int64_t T = N * p.TH * p.TW;
  at::Tensor v = at::empty({u.size(0), T, C}, x.options().memory_format(at::MemoryFormat::Contiguous));
  winograd_input_transform_cpu(p, x.data_ptr<float>(), v.data_ptr<float>());
  at::Tensor m = at::bmm(v, u);
  winograd_output_transform_cpu(p, Cout, m.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr,
                                residual.defined() ? residual.data_ptr<float>() : nullptr,
                                static_cast<int>(activation), y.data_ptr<float>());
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab_fast, CPU, m) { m.impl("winograd_conv3x3", &winograd_conv3x3); }

}  // namespace dlf
