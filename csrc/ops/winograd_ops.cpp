// winograd_conv3x3: a stride-1 3x3 convolution (any dilation, "same" padding) through Winograd F(2x2, 3x3)
// on the CPU: input transform, 16 GEMMs (at::bmm), output transform with bias, residual and activation.
// u is the transformed weight G g G^T (16, Cin, Cout) from deeplab_fast.ops.winograd_weight.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/checks.h"
#include "cpu/output_pool.h"
#include "cpu/winograd_cpu.h"

namespace dlf {
namespace {

at::Tensor winograd_conv3x3(const at::Tensor& x_in, const at::Tensor& u_in, const std::optional<at::Tensor>& bias_in,
                            const std::optional<at::Tensor>& residual_in, int64_t dilation, int64_t activation) {
  DLF_CHECK_NDIM(x_in, 4, "x");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "x must be float32, got ", x_in.scalar_type());
  TORCH_CHECK(x_in.device().is_cpu(), "winograd_conv3x3 runs on the CPU only, x is on ", x_in.device());
  DLF_CHECK_NDIM(u_in, 3, "u");
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK((u_in.size(0) == 16 || u_in.size(0) == 36) && u_in.size(1) == C, "u must have shape (16 or 36, ", C,
              ", Cout), got ", u_in.sizes());
  const int tile = u_in.size(0) == 16 ? 2 : 4;
  TORCH_CHECK(u_in.scalar_type() == at::kFloat && u_in.device().is_cpu(), "u must be a float32 CPU tensor");
  const int64_t Cout = u_in.size(2);
  TORCH_CHECK(dilation >= 1, "dilation must be >= 1, got ", dilation);
  TORCH_CHECK(activation >= 0 && activation <= 2, "activation must be 0 (none), 1 (relu) or 2 (relu6), got ",
              activation);
  at::Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->contiguous();
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == Cout && bias.scalar_type() == at::kFloat && bias.device().is_cpu(),
                "bias must be a float32 CPU tensor of shape (", Cout, "), got ", bias.sizes());
  }
  at::Tensor residual;
  if (residual_in.has_value()) {
    TORCH_CHECK(residual_in->sizes() == at::IntArrayRef({N, Cout, H, W}), "residual must have shape (", N, ", ",
                Cout, ", ", H, ", ", W, "), got ", residual_in->sizes());
    TORCH_CHECK(residual_in->scalar_type() == at::kFloat && residual_in->device().is_cpu(),
                "residual must be a float32 CPU tensor");
    residual = residual_in->contiguous(at::MemoryFormat::ChannelsLast);
  }
  at::Tensor y = new_output({N, Cout, H, W}, x_in, at::kFloat, at::MemoryFormat::ChannelsLast);
  if (y.numel() == 0) return y;
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
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
