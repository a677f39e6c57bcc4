// Ops that read and set the CUDA emulation's schedule (deeplab_fast.testing.cuda_emu_order).
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "emu/runtime.h"

namespace dlf {
namespace {

void set_cuda_emu_order(std::string order, int64_t seed) {
  cuda_emu::Order o = cuda_emu::Order::kForward;
  if (order == "forward") {
    o = cuda_emu::Order::kForward;
  } else if (order == "reverse") {
    o = cuda_emu::Order::kReverse;
  } else if (order == "shuffle") {
    o = cuda_emu::Order::kShuffle;
  } else {
    TORCH_CHECK_VALUE(false, "order must be 'forward', 'reverse' or 'shuffle', got '", order, "'");
  }
  TORCH_CHECK_VALUE(seed >= 0, "seed must be an int >= 0, got ", seed);
  cuda_emu::set_order(o, static_cast<uint64_t>(seed));
}

std::tuple<std::string, int64_t> cuda_emu_order() {
  const char* names[] = {"forward", "reverse", "shuffle"};
  return {names[static_cast<int>(cuda_emu::order())], static_cast<int64_t>(cuda_emu::seed())};
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab_fast, CatchAll, m) {
  m.impl("set_cuda_emu_order", &set_cuda_emu_order);
  m.impl("cuda_emu_order", &cuda_emu_order);
}

}  // namespace dlf
