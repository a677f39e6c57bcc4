// Entry points of deeplab_fast::dwconv_bn_act and ::dwconv_bn_act_backward for CPU and CUDA tensors, and of
// their "cuda_emu" twins (the CUDA kernels run on CPU tensors through the host emulation): checks, output
// allocation in the input's memory format, parameter packing, and the call into the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "common/checks.h"
#include "cpu/launchers.h"
#include "cpu/output_pool.h"
#include "cuda/launchers.h"
#ifdef DLF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace dlf {
namespace {

// The checks every dwconv_bn_act entry point ends with: stride, dilation, activation, and what the chosen
// kernels accept (deeplab_fast.ops.dwconv.check_settings says the same in Python).
void check_settings(const at::Tensor& x, int64_t stride, int64_t dilation, int64_t activation, Target target) {
  TORCH_CHECK_VALUE(stride == 1 || stride == 2, "stride must be 1 or 2, got ", stride);
  TORCH_CHECK_VALUE(dilation >= 1, "dilation must be an int >= 1, got ", dilation);
  TORCH_CHECK_VALUE(activation >= 0 && activation <= 2,
                    "activation code must be 0 (none), 1 (relu) or 2 (relu6), got ", activation);
  TORCH_CHECK_VALUE(!(x.is_cuda() && x.scalar_type() == at::kDouble),
                    "dwconv_bn_act: float64 is not supported on CUDA (the CUDA kernels cover float32, float16 and "
                    "bfloat16); use float32 or backend='reference'");
  if (target == Target::kCudaEmu) check_cuda_emu_input(x, "x", "dwconv_bn_act");
}

// The checks of deeplab_fast.ops.dwconv's Python check (reference and Triton backends, fake impls), in the
// same order and words.
void check_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& shift,
                  int64_t stride, int64_t dilation, int64_t activation, Target target) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be a 4-D (N, C, H, W) tensor, got ", x.dim(), "-D with shape ", x.sizes());
  DLF_CHECK_FLOATING(x, "x");
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1,
                    "weight must have shape (C, 1, k, k) with C=", C, " (x's channels), got ", weight.sizes());
  const int64_t K = weight.size(2);
  TORCH_CHECK_VALUE(weight.size(3) == K, "weight must be square (C, 1, k, k), got ", weight.sizes());
  TORCH_CHECK_VALUE(K % 2 == 1, "weight's kernel size k must be odd (3, 5, 7, ...), got k=", K);
  TORCH_CHECK_VALUE(scale.dim() == 1 && scale.size(0) == C, "scale must have shape (", C, ",) (x's channels), got ",
                    scale.sizes());
  TORCH_CHECK_VALUE(shift.dim() == 1 && shift.size(0) == C, "shift must have shape (", C, ",) (x's channels), got ",
                    shift.sizes());
  DLF_CHECK_SAME_DTYPE(x, weight, "x", "weight");
  DLF_CHECK_SAME_DEVICE(x, weight, "x", "weight");
  DLF_CHECK_SAME_DTYPE(x, scale, "x", "scale");
  DLF_CHECK_SAME_DEVICE(x, scale, "x", "scale");
  DLF_CHECK_SAME_DTYPE(x, shift, "x", "shift");
  DLF_CHECK_SAME_DEVICE(x, shift, "x", "shift");
  check_settings(x, stride, dilation, activation, target);
}

bool is_channels_last(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

// Output size of "same" padding (dilation * (k - 1) / 2 per side, k odd): ceil(size / stride), whatever the
// dilation; 0 for an empty side. Written without the dilation, whose products can overflow.
int64_t out_size(int64_t size, int64_t stride) { return size == 0 ? 0 : (size - 1) / stride + 1; }

// The dilation the kernels run with: a dilation of at least max(H, W) leaves only the centre tap inside
// the image (every other tap is at least max(H, W) away from any output), so max(H, W) gives the same
// result and keeps dilation * (k - 1) and the tap offsets far from int64 overflow.
int64_t effective_dilation(const at::Tensor& x, int64_t dilation) {
  const int64_t extent = std::max<int64_t>(std::max(x.size(2), x.size(3)), 1);
  return std::min(dilation, extent);
}

at::ScalarType acc_dtype(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Weight taps (C, K*K) in the accumulation dtype, blocked by `block` channels: (ceil(C / block), K*K, block),
// zero-padded; see weight_offset() in csrc/kernels/dwconv_bn_act.h. The layout of the API's packed weight
// (docs/ops.md, "Packed weights").
at::Tensor block_taps(const at::Tensor& taps, int64_t block) {
  const int64_t C = taps.size(0), KK = taps.size(1);
  if (block == 1) return taps.contiguous();
  const int64_t Cp = (C + block - 1) / block * block;
  at::Tensor w = Cp != C ? at::constant_pad_nd(taps, {0, 0, 0, Cp - C}) : taps;
  return w.view({Cp / block, block, KK}).permute({0, 2, 1}).contiguous();
}

// Weight (C, 1, K, K) in the accumulation dtype, blocked by `block` channels (block_taps).
at::Tensor blocked_weight(const at::Tensor& weight, at::ScalarType acc, int64_t block) {
  const int64_t C = weight.size(0), KK = weight.size(2) * weight.size(3);
  return block_taps(weight.to(acc).reshape({C, KK}), block);
}

// The (C, K*K) taps of a packed weight (ceil(C / V), K*K, V).
at::Tensor unpack_taps(const at::Tensor& packed, int64_t C) {
  const int64_t blocks = packed.size(0), KK = packed.size(1), V = packed.size(2);
  return packed.permute({0, 2, 1}).reshape({blocks * V, KK}).narrow(0, 0, C);
}

// Fill the layout-independent part of the parameters.
DwconvParams make_params(const at::Tensor& x, const at::Tensor& w, int64_t w_block, const at::Tensor& s,
                         const at::Tensor& b, int64_t Ho, int64_t Wo, int64_t K, int64_t stride, int64_t dilation,
                         int64_t activation, bool channels_last) {
  DwconvParams p{};
  p.x = x.data_ptr();
  p.w = w.data_ptr();
  p.scale = s.data_ptr();
  p.shift = b.data_ptr();
  p.N = x.size(0), p.C = x.size(1), p.H = x.size(2), p.W = x.size(3), p.Ho = Ho, p.Wo = Wo;
  p.xs_n = x.stride(0), p.xs_c = x.stride(1), p.xs_h = x.stride(2), p.xs_w = x.stride(3);
  TORCH_CHECK(w_block > 0 && (w_block & (w_block - 1)) == 0, "dwconv_bn_act: weight block ", w_block,
              " is not a power of two (weight_offset masks by it)");
  p.w_block = w_block;
  p.K = static_cast<int>(K), p.stride = static_cast<int>(stride), p.act = static_cast<int>(activation);
  p.dilation = dilation, p.pad = dilation * (K - 1) / 2;
  p.channels_last = channels_last;
  return p;
}

void set_out_strides(DwconvParams& p, const at::Tensor& y) {
  p.ys_n = y.stride(0), p.ys_c = y.stride(1), p.ys_h = y.stride(2), p.ys_w = y.stride(3);
}

}  // namespace

namespace {

// The weight blocking the forward kernel chosen for this call reads (channels per block): the CUDA
// channels_last kernels 16 bytes of channels when C and the x / y pointers allow aligned vector access, else
// 1; the CPU channels_last kernels their AVX block; NCHW kernels 1.
int64_t kernel_weight_block(const at::Tensor& x, const at::Tensor& y, bool channels_last, Target target) {
  if (!channels_last) return 1;
  const int64_t C = x.size(1);
  if (target == Target::kCudaEmu) {
    return emu::dwconv_bn_act_weight_block(x.scalar_type(), C, x.data_ptr(), y.data_ptr());
  }
  if (x.is_cuda()) {
#ifdef DLF_WITH_CUDA
    return cuda::dwconv_bn_act_weight_block(x.scalar_type(), C, x.data_ptr(), y.data_ptr());
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  }
  return dwconv_bn_act_cpu_weight_block(x.scalar_type());
}

// Whether the kernel that reads a `needed`-blocked weight also reads one blocked by `V` as it is: the CUDA
// NCHW kernels index the weight through weight_offset(), so any power-of-two blocking serves them.
bool kernel_reads_block(const at::Tensor& x, bool channels_last, Target target, int64_t needed, int64_t V) {
  if (V == needed) return true;
  const bool gpu_kernels = target == Target::kCudaEmu || x.is_cuda();
  return gpu_kernels && !channels_last;
}

// The one launch of the forward kernel: x in `fmt`, y allocated, w blocked by w_block, s / b (C,) in the
// accumulation dtype.
void launch_forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, int64_t w_block,
                    const at::Tensor& s, const at::Tensor& b, int64_t K, int64_t stride, int64_t dilation,
                    int64_t activation, bool channels_last, Target target) {
  DwconvParams p = make_params(x, w, w_block, s, b, y.size(2), y.size(3), K, stride, dilation, activation,
                               channels_last);
  p.y = y.data_ptr();
  set_out_strides(p, y);
  if (target == Target::kCudaEmu) {
    emu::dwconv_bn_act_forward(p, x.scalar_type(), nullptr);
  } else if (x.is_cuda()) {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    cuda::dwconv_bn_act_forward(p, x.scalar_type(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  } else {
    dwconv_bn_act_cpu(p, x.scalar_type());
  }
}

// The checks of dwconv_bn_act_packed (deeplab_fast.ops.dwconv.check_packed_inputs says the same in Python).
void check_packed_inputs(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                         const at::Tensor& shift, int64_t k, int64_t stride, int64_t dilation, int64_t activation,
                         Target target) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be a 4-D (N, C, H, W) tensor, got ", x.dim(), "-D with shape ", x.sizes());
  DLF_CHECK_FLOATING(x, "x");
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(k >= 1 && k % 2 == 1, "k must be an odd kernel size (3, 5, 7, ...), got k=", k);
  TORCH_CHECK_VALUE(weight.dim() == 3 && weight.size(2) >= 1 && (weight.size(2) & (weight.size(2) - 1)) == 0 &&
                        weight.size(1) == k * k && weight.size(0) == (C + weight.size(2) - 1) / weight.size(2),
                    "weight must be a packed weight (ceil(C / V), k*k, V) with C=", C, ", k=", k,
                    " and V a power of two (deeplab_fast.ops.pack_dwconv_weight), got ", weight.sizes());
  const auto acc = acc_dtype(x);
  const char* acc_name = acc == at::kDouble ? "float64 (x is float64)" : "float32";
  const auto check_param = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.scalar_type() == acc, "dwconv_bn_act_packed: ", name, " must be ", acc_name, ", got ",
                      dtype_name(t.scalar_type()));
    TORCH_CHECK_VALUE(t.device() == x.device(), name, " must be on x's device ", device_name(x), ", got ",
                      device_name(t));
  };
  check_param(weight, "weight");
  check_param(scale, "scale");
  check_param(shift, "shift");
  TORCH_CHECK_VALUE(weight.is_contiguous(), "dwconv_bn_act_packed: weight must be contiguous");
  TORCH_CHECK_VALUE(scale.dim() == 1 && scale.size(0) == C, "scale must have shape (", C, ",) (x's channels), got ",
                    scale.sizes());
  TORCH_CHECK_VALUE(shift.dim() == 1 && shift.size(0) == C, "shift must have shape (", C, ",) (x's channels), got ",
                    shift.sizes());
  check_settings(x, stride, dilation, activation, target);
}

}  // namespace

at::Tensor dwconv_bn_act_on(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& scale,
                            const at::Tensor& shift, int64_t stride, int64_t dilation, int64_t activation,
                            Target target) {
  check_inputs(x_in, weight, scale, shift, stride, dilation, activation, target);
  const bool channels_last = is_channels_last(x_in);
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), K = weight.size(2);
  const int64_t Ho = out_size(x.size(2), stride), Wo = out_size(x.size(3), stride);
  dilation = effective_dilation(x, dilation);
  at::Tensor y = new_output({N, C, Ho, Wo}, x, x.scalar_type(), fmt);
  if (y.numel() == 0) return y;
  const auto acc = acc_dtype(x);
  // Per-call weight preparation (dwconv_bn_act_packed takes it done once): channels_last reads packs of
  // channels per tap, so the weight is blocked for a pack's taps to lie together.
  const int64_t w_block = kernel_weight_block(x, y, channels_last, target);
  const at::Tensor w = blocked_weight(weight, acc, w_block);
  const at::Tensor s = scale.to(acc).contiguous();
  const at::Tensor b = shift.to(acc).contiguous();
  launch_forward(x, y, w, w_block, s, b, K, stride, dilation, activation, channels_last, target);
  return y;
}

at::Tensor dwconv_bn_act_packed_on(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& scale,
                                   const at::Tensor& shift, int64_t k, int64_t stride, int64_t dilation,
                                   int64_t activation, Target target) {
  check_packed_inputs(x_in, weight, scale, shift, k, stride, dilation, activation, target);
  const bool channels_last = is_channels_last(x_in);
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = x_in.contiguous(fmt);  // no op for the layouts a model runs
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t Ho = out_size(x.size(2), stride), Wo = out_size(x.size(3), stride);
  dilation = effective_dilation(x, dilation);
  at::Tensor y = new_output({N, C, Ho, Wo}, x, x.scalar_type(), fmt);
  if (y.numel() == 0) return y;
  const int64_t V = weight.size(2);
  const int64_t needed = kernel_weight_block(x, y, channels_last, target);
  if (kernel_reads_block(x, channels_last, target, needed, V)) {
    launch_forward(x, y, weight, V, scale.contiguous(), shift.contiguous(), k, stride, dilation, activation,
                   channels_last, target);
  } else {
    // A weight packed for another kernel (another layout, dtype or device, or an unaligned x on the CUDA
    // channels_last path, whose V = 1 kernel reads a plain weight): re-blocked here, correct but not free.
    const at::Tensor w = block_taps(unpack_taps(weight, C), needed);
    launch_forward(x, y, w, needed, scale.contiguous(), shift.contiguous(), k, stride, dilation, activation,
                   channels_last, target);
  }
  return y;
}

// The weight blocking the kernels of `backend` ("cpu", "cuda" or "cuda_emu") read for an input of `dtype` in
// the given layout: the width to pack with (dwconv_bn_act_pack_weight). The CUDA kernels (and their
// emulation) read 16 bytes of channels, V = 16 / sizeof(dtype), in either layout; the CPU channels_last
// kernels their AVX block; the CPU NCHW kernel a plain weight (1).
int64_t dwconv_bn_act_pack_width(c10::string_view backend, at::ScalarType dtype, bool channels_last) {
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
                    "dtype must be float32, float16, bfloat16 or float64, got ", dtype_name(dtype));
  if (backend == "cuda" || backend == "cuda_emu") return 16 / static_cast<int64_t>(c10::elementSize(dtype));
  TORCH_CHECK_VALUE(backend == "cpu", "backend must be 'cpu', 'cuda' or 'cuda_emu', got '", std::string(backend),
                    "'");
  return channels_last ? dwconv_bn_act_cpu_weight_block(dtype) : 1;
}

// A (C, 1, k, k) weight packed for the kernels: (ceil(C / width), k*k, width) in float32 (float64 for a
// float64 weight), zero-padded channels.
at::Tensor dwconv_bn_act_pack_weight(const at::Tensor& weight, int64_t width) {
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == 1 && weight.size(2) == weight.size(3),
                    "weight must have shape (C, 1, k, k), got ", weight.sizes());
  DLF_CHECK_FLOATING(weight, "weight");
  TORCH_CHECK_VALUE(width >= 1 && (width & (width - 1)) == 0, "width must be a power of two >= 1, got ", width);
  const auto acc = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor taps = weight.to(acc).reshape({weight.size(0), weight.size(2) * weight.size(3)});
  // clone: a width-1 packing of a float32 weight would otherwise share the weight's storage
  return block_taps(taps, width).reshape({-1, taps.size(1), width}).clone(at::MemoryFormat::Contiguous);
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads dwconv_bn_act_backward_on(const at::Tensor& grad_out, const at::Tensor& x_in, const at::Tensor& weight,
                                const at::Tensor& scale, const at::Tensor& shift, int64_t stride, int64_t dilation,
                                int64_t activation, Target target) {
  check_inputs(x_in, weight, scale, shift, stride, dilation, activation, target);
  const bool channels_last = is_channels_last(x_in);
  const auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), K = weight.size(2);
  const int64_t Ho = out_size(x.size(2), stride), Wo = out_size(x.size(3), stride);
  dilation = effective_dilation(x, dilation);
  DLF_CHECK_NDIM(grad_out, 4, "grad_out");
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef({N, C, Ho, Wo}), "grad_out must have shape (", N, ", ", C,
                    ", ", Ho, ", ", Wo, "), got ", grad_out.sizes());
  DLF_CHECK_SAME_DEVICE(x, grad_out, "x", "grad_out");
  const at::Tensor go = grad_out.to(x.scalar_type()).contiguous(fmt);
  at::Tensor gx = at::empty_like(x, x.options().memory_format(fmt));
  const auto acc = acc_dtype(x);
  if (go.numel() == 0 || x.numel() == 0) {
    return {gx.zero_(), at::zeros_like(weight), at::zeros_like(scale), at::zeros_like(shift)};
  }
  const bool on_gpu_kernels = target == Target::kCudaEmu || x.is_cuda();
  // The CUDA kernels read 16-byte packs of channels_last tensors with the weight blocked by the pack width.
  int64_t w_block = 1;
  if (channels_last && target == Target::kCudaEmu) {
    w_block = emu::dwconv_bn_act_weight_block(x.scalar_type(), C, x.data_ptr(), gx.data_ptr());
  } else if (channels_last && x.is_cuda()) {
#ifdef DLF_WITH_CUDA
    w_block = cuda::dwconv_bn_act_weight_block(x.scalar_type(), C, x.data_ptr(), gx.data_ptr());
#endif
  }
  const at::Tensor w = blocked_weight(weight, acc, w_block);
  const at::Tensor s = scale.to(acc).contiguous();
  const at::Tensor b = shift.to(acc).contiguous();
  // gpre: g = grad_y * act'(z) per output. The CUDA kernels keep it in x's dtype (grad_y or 0: exact), their one
  // full-size temporary; the CPU path keeps it in fp32 with g * conv (gprod).
  const auto gpre_dtype = on_gpu_kernels ? x.scalar_type() : acc;
  at::Tensor gpre = at::empty(go.sizes(), go.options().dtype(gpre_dtype).memory_format(fmt));
  at::Tensor gprod = on_gpu_kernels ? at::Tensor() : at::empty_like(gpre);
  // The CUDA kernels add each block's parameter gradients into zeros, or, under
  // torch.use_deterministic_algorithms(True), sum per-block partials in a fixed order.
  at::Tensor gparams =
      on_gpu_kernels ? at::zeros({C, K * K + 2}, w.options()) : at::empty({C, K * K + 2}, w.options());

  DwconvBwdParams q{};
  q.f = make_params(x, w, w_block, s, b, Ho, Wo, K, stride, dilation, activation, channels_last);
  set_out_strides(q.f, go);
  q.go = go.data_ptr();
  q.gpre = gpre.data_ptr();
  q.gprod = gprod.defined() ? gprod.data_ptr() : nullptr;
  q.gx = gx.data_ptr();
  q.gparams = gparams.data_ptr();
  q.deterministic = on_gpu_kernels && at::globalContext().deterministicAlgorithms();
  at::Tensor partials;

  if (target == Target::kCudaEmu) {
    if (q.deterministic) {
      partials = at::empty({emu::dwconv_bn_act_backward_partials(q, x.scalar_type())}, w.options());
      q.partials = partials.data_ptr();
    }
    emu::dwconv_bn_act_backward(q, x.scalar_type(), nullptr);
  } else if (x.is_cuda()) {
#ifdef DLF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    if (q.deterministic) {
      partials = at::empty({cuda::dwconv_bn_act_backward_partials(q, x.scalar_type())}, w.options());
      q.partials = partials.data_ptr();
    }
    cuda::dwconv_bn_act_backward(q, x.scalar_type(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
#else
    TORCH_CHECK(false, "deeplab_fast._C was built without CUDA kernels");
#endif
  } else {
    dwconv_bn_act_backward_cpu(q, x.scalar_type());
  }
  at::Tensor gw = gparams.narrow(1, 0, K * K).reshape({C, 1, K, K}).to(weight.scalar_type());
  at::Tensor gs = gparams.select(1, K * K).to(scale.scalar_type()).contiguous();
  at::Tensor gb = gparams.select(1, K * K + 1).to(shift.scalar_type()).contiguous();
  return {gx, gw.contiguous(), gs, gb};
}

at::Tensor dwconv_bn_act(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                         const at::Tensor& shift, int64_t stride, int64_t dilation, int64_t activation) {
  return dwconv_bn_act_on(x, weight, scale, shift, stride, dilation, activation, Target::kDevice);
}
Grads dwconv_bn_act_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& scale, const at::Tensor& shift, int64_t stride, int64_t dilation,
                             int64_t activation) {
  return dwconv_bn_act_backward_on(grad_out, x, weight, scale, shift, stride, dilation, activation, Target::kDevice);
}
at::Tensor dwconv_bn_act_cuda_emu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                  const at::Tensor& shift, int64_t stride, int64_t dilation, int64_t activation) {
  return dwconv_bn_act_on(x, weight, scale, shift, stride, dilation, activation, Target::kCudaEmu);
}
at::Tensor dwconv_bn_act_packed(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                const at::Tensor& shift, int64_t k, int64_t stride, int64_t dilation,
                                int64_t activation) {
  return dwconv_bn_act_packed_on(x, weight, scale, shift, k, stride, dilation, activation, Target::kDevice);
}
at::Tensor dwconv_bn_act_packed_cuda_emu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                         const at::Tensor& shift, int64_t k, int64_t stride, int64_t dilation,
                                         int64_t activation) {
  return dwconv_bn_act_packed_on(x, weight, scale, shift, k, stride, dilation, activation, Target::kCudaEmu);
}
Grads dwconv_bn_act_backward_cuda_emu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& scale, const at::Tensor& shift, int64_t stride,
                                      int64_t dilation, int64_t activation) {
  return dwconv_bn_act_backward_on(grad_out, x, weight, scale, shift, stride, dilation, activation,
                                   Target::kCudaEmu);
}

TORCH_LIBRARY_IMPL(deeplab_fast, CPU, m) {
  m.impl("dwconv_bn_act", &dwconv_bn_act);
  m.impl("dwconv_bn_act_backward", &dwconv_bn_act_backward);
  m.impl("dwconv_bn_act_cuda_emu", &dwconv_bn_act_cuda_emu);
  m.impl("dwconv_bn_act_backward_cuda_emu", &dwconv_bn_act_backward_cuda_emu);
  m.impl("dwconv_bn_act_packed", &dwconv_bn_act_packed);
  m.impl("dwconv_bn_act_packed_cuda_emu", &dwconv_bn_act_packed_cuda_emu);
}
// Weight packing is plain ATen (any device, meta included, differentiable); the width is a pure function.
TORCH_LIBRARY_IMPL(deeplab_fast, CompositeImplicitAutograd, m) {
  m.impl("dwconv_bn_act_pack_weight", &dwconv_bn_act_pack_weight);
}
TORCH_LIBRARY_IMPL(deeplab_fast, CatchAll, m) { m.impl("dwconv_bn_act_pack_width", &dwconv_bn_act_pack_width); }
#ifdef DLF_WITH_CUDA
TORCH_LIBRARY_IMPL(deeplab_fast, CUDA, m) {
  m.impl("dwconv_bn_act", &dwconv_bn_act);
  m.impl("dwconv_bn_act_backward", &dwconv_bn_act_backward);
  // The emulation takes CPU tensors only: registered here to refuse CUDA tensors with a clear message.
  m.impl("dwconv_bn_act_cuda_emu", &dwconv_bn_act_cuda_emu);
  m.impl("dwconv_bn_act_backward_cuda_emu", &dwconv_bn_act_backward_cuda_emu);
  m.impl("dwconv_bn_act_packed", &dwconv_bn_act_packed);
  m.impl("dwconv_bn_act_packed_cuda_emu", &dwconv_bn_act_packed_cuda_emu);
}
#endif

}  // namespace dlf
