// Input checks shared by the op entry points (host code only). Messages name the argument and say what
// was expected; ValueError / TypeError in Python (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), with the same
// wording as the Python checks of the reference and Triton backends (deeplab_fast/ops/_common.py), which
// print sizes as [a, b] and dtypes by their torch names (float32, ...).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace dlf {

// torch's name of a dtype ("float32", "bfloat16", "int64"), as str(torch.float32) without "torch.".
inline const char* dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return "float32";
    case c10::ScalarType::Double: return "float64";
    case c10::ScalarType::Half: return "float16";
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Long: return "int64";
    case c10::ScalarType::Int: return "int32";
    case c10::ScalarType::Short: return "int16";
    case c10::ScalarType::Char: return "int8";
    case c10::ScalarType::Byte: return "uint8";
    case c10::ScalarType::Bool: return "bool";
    case c10::ScalarType::ComplexFloat: return "complex64";
    case c10::ScalarType::ComplexDouble: return "complex128";
    default: return c10::toString(t);
  }
}

// The device as str(torch.device) prints it ("cpu", "cuda:0", "meta").
inline std::string device_name(const at::Tensor& t) { return t.device().str(); }

// Where an entry point runs its call: the kernels of the tensors' device, or the CUDA kernels on CPU
// tensors through the host emulation (the ops' "cuda_emu" twins, backend="cuda_emu").
enum class Target { kDevice, kCudaEmu };

// What the emulated CUDA kernels accept, for tensor argument `name` of `op` (the words of
// deeplab_fast.ops._backend.check_cuda_emu_input).
inline void check_cuda_emu_input(const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": backend='cuda_emu' runs the CUDA kernels on the CPU through the ",
                    "host emulation, so ", name, " must be a CPU tensor, got one on ", device_name(t),
                    " (use backend='cuda' for CUDA tensors)");
  const auto dt = t.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op,
                    ": backend='cuda_emu' runs the CUDA kernels, which support float32, float16 and bfloat16; ", name,
                    " is ", dtype_name(dt), " (use backend='cpu' or 'reference')");
}

}  // namespace dlf

#define DLF_CHECK_NDIM(t, n, name)                                                                           \
  TORCH_CHECK_VALUE((t).dim() == (n), name " must be a ", n, "-D tensor, got ", (t).dim(), "-D with shape ", \
                    (t).sizes())
#define DLF_CHECK_FLOATING(t, name)                                                                     \
  TORCH_CHECK_VALUE((t).scalar_type() == at::kFloat || (t).scalar_type() == at::kHalf ||                \
                        (t).scalar_type() == at::kBFloat16 || (t).scalar_type() == at::kDouble,         \
                    name " must be float32, float16, bfloat16 or float64, got ", ::dlf::dtype_name((t).scalar_type()))
#define DLF_CHECK_SAME_DEVICE(a, b, name_a, name_b)                                                             \
  TORCH_CHECK_VALUE((a).device() == (b).device(), name_b " must be on " name_a "'s device ", ::dlf::device_name(a), \
                    ", got ", ::dlf::device_name(b))
#define DLF_CHECK_SAME_DTYPE(a, b, name_a, name_b)                                                         \
  TORCH_CHECK_VALUE((a).scalar_type() == (b).scalar_type(), name_b " must have " name_a "'s dtype ",     \
                    ::dlf::dtype_name((a).scalar_type()), ", got ", ::dlf::dtype_name((b).scalar_type()))
