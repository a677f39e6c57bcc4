// Op schemas of the deeplab_fast library; nothing else. Kernels register per device in csrc/ops/*.cpp.
// Activation codes: 0 none, 1 relu, 2 relu6 (csrc/common/host_device.h).
#include <torch/library.h>

TORCH_LIBRARY(deeplab_fast, m) {
  m.def(
      "dwconv_bn_act(Tensor x, Tensor weight, Tensor scale, Tensor shift, int stride, int dilation, "
      "int activation) -> Tensor");
  // Bilinear resize ops (align_corners as in F.interpolate; size = (H, W)).
  m.def("upsample_concat(Tensor[] tensors, int[] size, bool align_corners) -> Tensor");
  m.def("upsample_argmax(Tensor logits, int[] size, bool align_corners) -> Tensor");
  m.def(
      "upsample_softmax_accumulate(Tensor logits, Tensor(a!) accum, float weight, bool flip, bool align_corners) "
      "-> ()");
  // Stride-1 3x3 convolution (any dilation, "same" padding) through Winograd F(2x2, 3x3) or F(4x4, 3x3), CPU
  // float32, output channels_last, inference only: u is the transformed weight (16 or 36, Cin, Cout);
  // activation as above.
  m.def(
      "winograd_conv3x3(Tensor x, Tensor u, Tensor? bias, Tensor? residual, int dilation, int activation) -> "
      "Tensor");
  // Gradients of dwconv_bn_act for (x, weight, scale, shift), each in its input's dtype and layout.
  m.def(
      "dwconv_bn_act_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor scale, Tensor shift, int stride, "
      "int dilation, int activation) -> (Tensor, Tensor, Tensor, Tensor)");
  // The CUDA kernels run on CPU tensors through the host emulation (backend "cuda_emu", csrc/emu): the same
  // arguments and results as the ops above.
  m.def(
      "dwconv_bn_act_cuda_emu(Tensor x, Tensor weight, Tensor scale, Tensor shift, int stride, int dilation, "
      "int activation) -> Tensor");
  m.def(
      "dwconv_bn_act_backward_cuda_emu(Tensor grad_out, Tensor x, Tensor weight, Tensor scale, Tensor shift, "
      "int stride, int dilation, int activation) -> (Tensor, Tensor, Tensor, Tensor)");
  // dwconv_bn_act with its weight prepared once (deeplab_fast.ops.pack_dwconv_weight): weight is the packed
  // (ceil(C / V), k*k, V) float32 weight (float64 for float64 x), scale and shift (C,) in that dtype; the
  // width V to pack with for a backend, dtype and layout; the packing itself.
  m.def(
      "dwconv_bn_act_packed(Tensor x, Tensor weight, Tensor scale, Tensor shift, int k, int stride, int dilation, "
      "int activation) -> Tensor");
  m.def(
      "dwconv_bn_act_packed_cuda_emu(Tensor x, Tensor weight, Tensor scale, Tensor shift, int k, int stride, "
      "int dilation, int activation) -> Tensor");
  m.def("dwconv_bn_act_pack_width(str backend, ScalarType dtype, bool channels_last) -> int");
  m.def("dwconv_bn_act_pack_weight(Tensor weight, int width) -> Tensor");
  m.def("upsample_concat_cuda_emu(Tensor[] tensors, int[] size, bool align_corners) -> Tensor");
  m.def("upsample_argmax_cuda_emu(Tensor logits, int[] size, bool align_corners) -> Tensor");
  m.def(
      "upsample_softmax_accumulate_cuda_emu(Tensor logits, Tensor(a!) accum, float weight, bool flip, "
      "bool align_corners) -> ()");
  // Gradient of upsample_concat for each input (a gather: deterministic): grad_out (N, sum C_i, H, W); input i
  // was (N, channels[i], heights[i], widths[i]). Each gradient is in grad_out's dtype and memory format.
  m.def(
      "upsample_concat_backward(Tensor grad_out, int[] channels, int[] heights, int[] widths, bool align_corners) "
      "-> Tensor[]");
  m.def(
      "upsample_concat_backward_cuda_emu(Tensor grad_out, int[] channels, int[] heights, int[] widths, "
      "bool align_corners) -> Tensor[]");
  // The emulation's schedule (deeplab_fast.testing.cuda_emu_order): order "forward", "reverse" or "shuffle",
  // and the seed of "shuffle"; process-wide.
  m.def("set_cuda_emu_order(str order, int seed) -> ()");
  m.def("cuda_emu_order() -> (str, int)");
  // The emulation's global-memory traffic counters (deeplab_fast.testing.cuda_emu_counters): counting on
  // (resetting the totals) or off; the totals [launches, load instructions, store instructions, load
  // sectors, store sectors, load bytes, store bytes].
  m.def("set_cuda_emu_counting(bool on) -> ()");
  m.def("cuda_emu_counters() -> int[]");
  // The CPU output pool (csrc/cpu/output_pool.h): bytes cached now, free them all, its cap in MiB and a new
  // cap (deeplab_fast.configure(cpu_output_pool_mb=...)).
  m.def("output_pool_cached_bytes() -> int");
  m.def("output_pool_release() -> ()");
  m.def("cpu_output_pool_mb() -> int");
  m.def("set_cpu_output_pool_mb(int mb) -> ()");
  // The instruction-set variant of the CPU kernels (csrc/cpu/capability.h): the one in use ("default", "avx2" or
  // "avx512"); force one, process-wide (a variant the CPU or build lacks is an error); those this CPU and build can
  // run, lowest first; the ISA extensions cpuid reports (and the OS enables), sorted.
  m.def("cpu_capability() -> str");
  m.def("set_cpu_capability(str name) -> ()");
  m.def("cpu_capabilities() -> str[]");
  m.def("cpu_isa_flags() -> str[]");
}
