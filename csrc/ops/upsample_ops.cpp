// Entry points of deeplab_fast::upsample_concat, ::upsample_argmax and ::upsample_softmax_accumulate for
// CPU and CUDA tensors, and of their "cuda_emu" twins (the CUDA kernels on CPU tensors through the host
// emulation): checks, output allocation, parameter packing, the call into the launchers.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "cpu/output_pool.h"
#include "cpu/launchers.h"
#include "cuda/launchers.h"
#ifdef DLF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace dlf {
namespace {

bool is_channels_last(const at::Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

// upsample_concat's output layout: that of the first input whose layout is decided. A tensor with one pixel
// per channel (the 1x1 image-pooling branch) or one channel is contiguous in both formats and decides nothing
// (deeplab_fast.ops.upsample.concat_memory_format says the same).
bool concat_channels_last(at::TensorList tensors) {
  for (const at::Tensor& t : tensors) {
    const bool nchw = t.is_contiguous(), nhwc = t.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (nchw != nhwc || !nchw) return is_channels_last(t);
  }
  return false;
}

// The checks below are mirrored, in the same order and words, by the Python checks of the reference and
// Triton backends and the fake implementations (deeplab_fast/ops/upsample.py).
void check_float(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16,
                    name, " must be float32, float16 or bfloat16, got ", dtype_name(t.scalar_type()));
}

std::pair<int64_t, int64_t> check_size(at::IntArrayRef size) {
  TORCH_CHECK_VALUE(size.size() == 2 && size[0] > 0 && size[1] > 0, "size must be two positive ints (H, W), got ",
                    size);
  return {size[0], size[1]};
}

// An input without pixels has nothing to resize from (F.interpolate refuses it too), even in an empty batch.
void check_positive_hw(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK_VALUE(t.size(2) > 0 && t.size(3) > 0, name, " must have positive height and width, got shape ",
                    t.sizes());
}

#ifdef DLF_WITH_CUDA
cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
#endif

void fill_class_params(UpsampleClassParams& p, const at::Tensor& x, int64_t Ho, int64_t Wo, bool align_corners) {
  p.x = x.data_ptr();
  p.N = x.size(0), p.K = x.size(1), p.H = x.size(2), p.W = x.size(3), p.Ho = Ho, p.Wo = Wo;
  p.xs_n = x.stride(0), p.xs_k = x.stride(1), p.xs_h = x.stride(2), p.xs_w = x.stride(3);
  p.scale_h = bilinear_scale(p.H, Ho, align_corners);
  p.scale_w = bilinear_scale(p.W, Wo, align_corners);
  p.align_corners = align_corners;
}

}  // namespace

at::Tensor upsample_concat_on(at::TensorList tensors, at::IntArrayRef size, bool align_corners, Target target) {
  TORCH_CHECK_VALUE(!tensors.empty(), "tensors must hold at least one tensor, got an empty sequence");
  TORCH_CHECK_VALUE(static_cast<int64_t>(tensors.size()) <= kMaxConcatInputs, "tensors must hold at most ",
                    kMaxConcatInputs, " tensors, got ", tensors.size());
  const auto [Ho, Wo] = check_size(size);
  const at::Tensor& first = tensors[0];
  for (size_t j = 0; j < tensors.size(); ++j) {
    const at::Tensor& t = tensors[j];
    const std::string name = "tensors[" + std::to_string(j) + "]";
    TORCH_CHECK_VALUE(t.dim() == 4, name, " must be a 4-D (N, C, H, W) tensor, got shape ", t.sizes());
    check_float(t, name);
    TORCH_CHECK_VALUE(t.size(0) == first.size(0), name, " has batch size ", t.size(0), " but tensors[0] has ",
                      first.size(0));
    TORCH_CHECK_VALUE(t.scalar_type() == first.scalar_type(), name, " has dtype ", dtype_name(t.scalar_type()),
                      " but tensors[0] has ", dtype_name(first.scalar_type()));
    TORCH_CHECK_VALUE(t.device() == first.device(), name, " is on ", device_name(t), " but tensors[0] is on ",
                      device_name(first));
    check_positive_hw(t, name);
  }
  if (target == Target::kCudaEmu) check_cuda_emu_input(first, "tensors[0]", "upsample_concat");
  const bool cl = concat_channels_last(tensors);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  std::vector<at::Tensor> xs;
  int64_t ctot = 0;
  for (const auto& t : tensors) {
    xs.push_back(cl ? t.contiguous(fmt) : t);
    ctot += t.size(1);
  }
  at::Tensor y = new_output({first.size(0), ctot, Ho, Wo}, first, first.scalar_type(), fmt);
  if (y.numel() == 0) return y;

  UpsampleConcatParams p{};
  p.num_inputs = static_cast<int>(xs.size());
  int64_t c0 = 0;
  for (int j = 0; j < p.num_inputs; ++j) {
    const at::Tensor& t = xs[j];
    p.x[j] = t.data_ptr();
    p.C[j] = t.size(1), p.H[j] = t.size(2), p.W[j] = t.size(3);
    p.xs_n[j] = t.stride(0), p.xs_c[j] = t.stride(1), p.xs_h[j] = t.stride(2), p.xs_w[j] = t.stride(3);
    p.scale_h[j] = bilinear_scale(p.H[j], Ho, align_corners);
    p.scale_w[j] = bilinear_scale(p.W[j], Wo, align_corners);
    p.c_begin[j] = c0;
    c0 += p.C[j];
  }
  p.c_begin[p.num_inputs] = c0;
  p.y = y.data_ptr();
  p.N = y.size(0), p.Ctot = ctot, p.Ho = Ho, p.Wo = Wo;
  p.ys_n = y.stride(0), p.ys_c = y.stride(1), p.ys_h = y.stride(2), p.ys_w = y.stride(3);
  p.channels_last = cl;
  p.align_corners = align_corners;
  if (target == Target::kCudaEmu) {
    emu::upsample_concat(p, y.scalar_type(), nullptr);
  } else if (y.is_cuda()) {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(y.device());
    cuda::upsample_concat(p, y.scalar_type(), stream_of(y));
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  } else {
    upsample_concat_cpu(p, y.scalar_type());
  }
  return y;
}

// Gradient of upsample_concat: one tensor per input (N, channels[j], heights[j], widths[j]) in grad_out's dtype
// and memory format. CUDA tensors and the emulation run the gather kernel; CPU tensors ATen's resize backward
// per channel slice (the reference's VJP).
std::vector<at::Tensor> upsample_concat_backward_on(const at::Tensor& grad_out, at::IntArrayRef channels,
                                                    at::IntArrayRef heights, at::IntArrayRef widths,
                                                    bool align_corners, Target target) {
  DLF_CHECK_NDIM(grad_out, 4, "grad_out");
  check_float(grad_out, "grad_out");
  if (target == Target::kCudaEmu) check_cuda_emu_input(grad_out, "grad_out", "upsample_concat_backward");
  const size_t inputs = channels.size();
  TORCH_CHECK_VALUE(inputs >= 1 && static_cast<int64_t>(inputs) <= kMaxConcatInputs,
                    "channels must hold 1 to ", kMaxConcatInputs, " channel counts, got ", inputs);
  TORCH_CHECK_VALUE(heights.size() == inputs && widths.size() == inputs, "heights and widths must hold ", inputs,
                    " sizes like channels, got ", heights.size(), " and ", widths.size());
  int64_t ctot = 0;
  for (size_t j = 0; j < inputs; ++j) {
    TORCH_CHECK_VALUE(channels[j] >= 0 && heights[j] > 0 && widths[j] > 0, "input ", j,
                      " must have channels >= 0 and positive height and width, got (", channels[j], ", ",
                      heights[j], ", ", widths[j], ")");
    ctot += channels[j];
  }
  TORCH_CHECK_VALUE(grad_out.size(1) == ctot, "grad_out must have sum(channels) = ", ctot, " channels, got shape ",
                    grad_out.sizes());
  TORCH_CHECK_VALUE(grad_out.size(2) > 0 && grad_out.size(3) > 0,
                    "grad_out must have positive height and width, got shape ", grad_out.sizes());
  const bool cl = is_channels_last(grad_out);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor gy = grad_out.contiguous(fmt);
  const int64_t N = gy.size(0), Ho = gy.size(2), Wo = gy.size(3);
  std::vector<at::Tensor> grads;
  if (target == Target::kDevice && !gy.is_cuda()) {
    int64_t c0 = 0;
    for (size_t j = 0; j < inputs; ++j) {
      grads.push_back(at::upsample_bilinear2d_backward(gy.narrow(1, c0, channels[j]), {Ho, Wo},
                                                       {N, channels[j], heights[j], widths[j]}, align_corners)
                          .contiguous(fmt));
      c0 += channels[j];
    }
    return grads;
  }
  UpsampleConcatBackwardParams p{};
  p.num_inputs = static_cast<int>(inputs);
  int64_t c0 = 0;
  for (int j = 0; j < p.num_inputs; ++j) {
    at::Tensor g = at::empty({N, channels[j], heights[j], widths[j]}, gy.options().memory_format(fmt));
    p.gx[j] = g.data_ptr();
    p.C[j] = channels[j], p.H[j] = heights[j], p.W[j] = widths[j];
    p.gs_n[j] = g.stride(0), p.gs_c[j] = g.stride(1), p.gs_h[j] = g.stride(2), p.gs_w[j] = g.stride(3);
    p.scale_h[j] = bilinear_scale(p.H[j], Ho, align_corners);
    p.scale_w[j] = bilinear_scale(p.W[j], Wo, align_corners);
    p.c_begin[j] = c0;
    c0 += channels[j];
    grads.push_back(std::move(g));
  }
  p.c_begin[p.num_inputs] = c0;
  p.gy = gy.data_ptr();
  p.N = N, p.Ctot = ctot, p.Ho = Ho, p.Wo = Wo;
  p.ys_n = gy.stride(0), p.ys_c = gy.stride(1), p.ys_h = gy.stride(2), p.ys_w = gy.stride(3);
  p.channels_last = cl;
  p.align_corners = align_corners;
  if (target == Target::kCudaEmu) {
    emu::upsample_concat_backward(p, gy.scalar_type(), nullptr);
  } else {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(gy.device());
    cuda::upsample_concat_backward(p, gy.scalar_type(), stream_of(gy));
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  }
  return grads;
}

at::Tensor upsample_argmax_on(const at::Tensor& logits, at::IntArrayRef size, bool align_corners, Target target) {
  DLF_CHECK_NDIM(logits, 4, "logits");
  check_float(logits, "logits");
  if (target == Target::kCudaEmu) check_cuda_emu_input(logits, "logits", "upsample_argmax");
  const auto [Ho, Wo] = check_size(size);
  TORCH_CHECK_VALUE(logits.size(1) > 0, "logits must have at least one class (K > 0), got shape ", logits.sizes());
  check_positive_hw(logits, "logits");
  at::Tensor labels = new_output({logits.size(0), Ho, Wo}, logits, at::kLong, at::MemoryFormat::Contiguous);
  if (labels.numel() == 0) return labels;
  UpsampleClassParams p{};
  fill_class_params(p, logits, Ho, Wo, align_corners);
  p.labels = labels.data_ptr<int64_t>();
  if (target == Target::kCudaEmu) {
    emu::upsample_argmax(p, logits.scalar_type(), nullptr);
  } else if (logits.is_cuda()) {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(logits.device());
    cuda::upsample_argmax(p, logits.scalar_type(), stream_of(logits));
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  } else {
    upsample_argmax_cpu(p, logits.scalar_type());
  }
  return labels;
}

void upsample_softmax_accumulate_on(const at::Tensor& logits, const at::Tensor& accum, double weight, bool flip,
                                    bool align_corners, Target target) {
  DLF_CHECK_NDIM(logits, 4, "logits");
  DLF_CHECK_NDIM(accum, 4, "accum");
  check_float(logits, "logits");
  if (target == Target::kCudaEmu) check_cuda_emu_input(logits, "logits", "upsample_softmax_accumulate");
  TORCH_CHECK_VALUE(accum.scalar_type() == at::kFloat, "accum must be float32, got ",
                    dtype_name(accum.scalar_type()));
  TORCH_CHECK_VALUE(accum.is_contiguous(), "accum must be contiguous (NCHW), got strides ", accum.strides());
  DLF_CHECK_SAME_DEVICE(logits, accum, "logits", "accum");
  TORCH_CHECK_VALUE(accum.size(0) == logits.size(0), "accum's batch size ", accum.size(0), " must equal logits' ",
                    logits.size(0));
  TORCH_CHECK_VALUE(accum.size(1) == logits.size(1), "accum's class count ", accum.size(1), " must equal logits' ",
                    logits.size(1));
  check_positive_hw(logits, "logits");
  if (accum.numel() == 0) return;
  UpsampleClassParams p{};
  fill_class_params(p, logits, accum.size(2), accum.size(3), align_corners);
  p.flip = flip;
  p.accum = accum.data_ptr<float>();
  p.weight = static_cast<float>(weight);
  if (target == Target::kCudaEmu) {
    emu::upsample_softmax_accumulate(p, logits.scalar_type(), nullptr);
  } else if (logits.is_cuda()) {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(logits.device());
    cuda::upsample_softmax_accumulate(p, logits.scalar_type(), stream_of(logits));
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  } else {
    upsample_softmax_accumulate_cpu(p, logits.scalar_type());
  }
}

at::Tensor upsample_concat(at::TensorList tensors, at::IntArrayRef size, bool align_corners) {
  return upsample_concat_on(tensors, size, align_corners, Target::kDevice);
}
at::Tensor upsample_argmax(const at::Tensor& logits, at::IntArrayRef size, bool align_corners) {
  return upsample_argmax_on(logits, size, align_corners, Target::kDevice);
}
void upsample_softmax_accumulate(const at::Tensor& logits, const at::Tensor& accum, double weight, bool flip,
                                 bool align_corners) {
  upsample_softmax_accumulate_on(logits, accum, weight, flip, align_corners, Target::kDevice);
}
std::vector<at::Tensor> upsample_concat_backward(const at::Tensor& grad_out, at::IntArrayRef channels,
                                                 at::IntArrayRef heights, at::IntArrayRef widths, bool align_corners) {
  return upsample_concat_backward_on(grad_out, channels, heights, widths, align_corners, Target::kDevice);
}
std::vector<at::Tensor> upsample_concat_backward_cuda_emu(const at::Tensor& grad_out, at::IntArrayRef channels,
                                                          at::IntArrayRef heights, at::IntArrayRef widths,
                                                          bool align_corners) {
  return upsample_concat_backward_on(grad_out, channels, heights, widths, align_corners, Target::kCudaEmu);
}
at::Tensor upsample_concat_cuda_emu(at::TensorList tensors, at::IntArrayRef size, bool align_corners) {
  return upsample_concat_on(tensors, size, align_corners, Target::kCudaEmu);
}
at::Tensor upsample_argmax_cuda_emu(const at::Tensor& logits, at::IntArrayRef size, bool align_corners) {
  return upsample_argmax_on(logits, size, align_corners, Target::kCudaEmu);
}
void upsample_softmax_accumulate_cuda_emu(const at::Tensor& logits, const at::Tensor& accum, double weight, bool flip,
                                          bool align_corners) {
  upsample_softmax_accumulate_on(logits, accum, weight, flip, align_corners, Target::kCudaEmu);
}

TORCH_LIBRARY_IMPL(deeplab_fast, CPU, m) {
  m.impl("upsample_concat", &upsample_concat);
  m.impl("upsample_argmax", &upsample_argmax);
  m.impl("upsample_softmax_accumulate", &upsample_softmax_accumulate);
  m.impl("upsample_concat_cuda_emu", &upsample_concat_cuda_emu);
  m.impl("upsample_argmax_cuda_emu", &upsample_argmax_cuda_emu);
  m.impl("upsample_softmax_accumulate_cuda_emu", &upsample_softmax_accumulate_cuda_emu);
  m.impl("upsample_concat_backward", &upsample_concat_backward);
  m.impl("upsample_concat_backward_cuda_emu", &upsample_concat_backward_cuda_emu);
}
#ifdef DLF_WITH_CUDA
TORCH_LIBRARY_IMPL(deeplab_fast, CUDA, m) {
  m.impl("upsample_concat", &upsample_concat);
  m.impl("upsample_argmax", &upsample_argmax);
  m.impl("upsample_softmax_accumulate", &upsample_softmax_accumulate);
  // The emulation takes CPU tensors only: registered here to refuse CUDA tensors with a clear message.
  m.impl("upsample_concat_cuda_emu", &upsample_concat_cuda_emu);
  m.impl("upsample_argmax_cuda_emu", &upsample_argmax_cuda_emu);
  m.impl("upsample_softmax_accumulate_cuda_emu", &upsample_softmax_accumulate_cuda_emu);
  m.impl("upsample_concat_backward", &upsample_concat_backward);
  m.impl("upsample_concat_backward_cuda_emu", &upsample_concat_backward_cuda_emu);
}
#endif

}  // namespace dlf
