// Entry point of deeplab_fast::dwconv_bn_act for CPU and CUDA tensors: checks, output allocation in
// the input's memory format, parameter packing, and the call into the device launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/checks.h"
#include "cpu/launchers.h"
#ifdef DLF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/launchers.h"
#endif

namespace dlf {

at::Tensor dwconv_bn_act(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& scale,
                         const at::Tensor& shift, int64_t stride, int64_t dilation, int64_t activation) {
  DLF_CHECK_NDIM(x_in, 4, "x");
  DLF_CHECK_FLOATING(x_in, "x");
  const int64_t N = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1,
              "weight must have shape (C, 1, k, k) with C = ", C, ", got ", weight.sizes());
  const int64_t K = weight.size(2);
  TORCH_CHECK(weight.size(3) == K && K % 2 == 1, "weight must be square with odd k, got ", weight.sizes());
  TORCH_CHECK(scale.dim() == 1 && scale.size(0) == C, "scale must have shape (", C, ",), got ", scale.sizes());
  TORCH_CHECK(shift.dim() == 1 && shift.size(0) == C, "shift must have shape (", C, ",), got ", shift.sizes());
  DLF_CHECK_SAME_DEVICE(x_in, weight, "x", "weight");
  DLF_CHECK_SAME_DEVICE(x_in, scale, "x", "scale");
  DLF_CHECK_SAME_DEVICE(x_in, shift, "x", "shift");
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2, got ", stride);
  TORCH_CHECK(dilation >= 1, "dilation must be >= 1, got ", dilation);
  TORCH_CHECK(activation >= 0 && activation <= 2, "activation code must be 0 (none), 1 (relu) or 2 (relu6)");

  const bool channels_last = x_in.is_contiguous(at::MemoryFormat::ChannelsLast) && !x_in.is_contiguous();
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t pad = dilation * (K - 1) / 2;
  const int64_t Ho = (H + 2 * pad - dilation * (K - 1) - 1) / stride + 1;
  const int64_t Wo = (W + 2 * pad - dilation * (K - 1) - 1) / stride + 1;
  at::Tensor y = at::empty({N, C, Ho, Wo}, x.options().memory_format(fmt));
  if (y.numel() == 0) return y;
  const at::Tensor w32 = weight.to(at::kFloat).contiguous().view({C, K * K});
  const at::Tensor s32 = scale.to(at::kFloat).contiguous();
  const at::Tensor b32 = shift.to(at::kFloat).contiguous();

  DwconvParams p{};
  p.x = x.data_ptr();
  p.w = w32.data_ptr<float>();
  p.scale = s32.data_ptr<float>();
  p.shift = b32.data_ptr<float>();
  p.y = y.data_ptr();
  p.N = N, p.C = C, p.H = H, p.W = W, p.Ho = Ho, p.Wo = Wo;
  p.xs_n = x.stride(0), p.xs_c = x.stride(1), p.xs_h = x.stride(2), p.xs_w = x.stride(3);
  p.ys_n = y.stride(0), p.ys_c = y.stride(1), p.ys_h = y.stride(2), p.ys_w = y.stride(3);
  p.K = static_cast<int>(K), p.stride = static_cast<int>(stride), p.dilation = static_cast<int>(dilation);
  p.pad = static_cast<int>(pad), p.act = static_cast<int>(activation);
  p.channels_last = channels_last;

  if (x.is_cuda()) {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    dwconv_bn_act_cuda(p, x.scalar_type(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  } else {
    dwconv_bn_act_cpu(p, x.scalar_type());
  }
  return y;
}

TORCH_LIBRARY_IMPL(deeplab_fast, CPU, m) { m.impl("dwconv_bn_act", &dwconv_bn_act); }
#ifdef DLF_WITH_CUDA
TORCH_LIBRARY_IMPL(deeplab_fast, CUDA, m) { m.impl("dwconv_bn_act", &dwconv_bn_act); }
#endif

}  // namespace dlf
