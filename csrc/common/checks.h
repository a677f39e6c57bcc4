// Input checks shared by the op entry points (host code only).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define DLF_CHECK_NDIM(t, n, name) \
  TORCH_CHECK((t).dim() == (n), name " must be a ", n, "-D tensor, got ", (t).dim(), "-D with shape ", (t).sizes())
#define DLF_CHECK_FLOATING(t, name)                                                                     \
  TORCH_CHECK((t).scalar_type() == at::kFloat || (t).scalar_type() == at::kHalf ||                     \
                  (t).scalar_type() == at::kBFloat16 || (t).scalar_type() == at::kDouble,               \
              name " must be float32, float16, bfloat16 or float64, got ", (t).scalar_type())
#define DLF_CHECK_SAME_DEVICE(a, b, name_a, name_b)                                                   \
  TORCH_CHECK((a).device() == (b).device(), name_a " and " name_b " must be on the same device, got ", \
              (a).device(), " and ", (b).device())
#define DLF_CHECK_SAME_DTYPE(a, b, name_a, name_b)                                                    \
  TORCH_CHECK((a).scalar_type() == (b).scalar_type(), name_a " and " name_b                           \
              " must have the same dtype, got ", (a).scalar_type(), " and ", (b).scalar_type())
