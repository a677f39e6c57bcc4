// CPU launcher: the shared body over the same index space the CUDA grid covers.
#include "cpu/launchers.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "kernels/dwconv_bn_act.h"

namespace dlf {

template <typename T>
static void run(const DwconvParams& p) {
  const int64_t total = p.N * p.C * p.Ho * p.Wo;
  at::parallel_for(0, total, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) dwconv_bn_act_body<T>(p, idx);
  });
}

void dwconv_bn_act_cpu(const DwconvParams& p, c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return run<float>(p);
    case c10::ScalarType::Double: return run<double>(p);
    case c10::ScalarType::Half: return run<c10::Half>(p);
    case c10::ScalarType::BFloat16: return run<c10::BFloat16>(p);
    default: TORCH_CHECK(false, "dwconv_bn_act: unsupported dtype ", dtype);
  }
}

}  // namespace dlf
