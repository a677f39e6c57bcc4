// Ops that control the CUDA emulation: its schedule (deeplab_fast.testing.cuda_emu_order) and its traffic
// counters (deeplab_fast.testing.cuda_emu_counters).
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

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

void set_cuda_emu_counting(bool on) {
  if (on) cuda_emu::reset_counters();
  cuda_emu::set_counting(on);
}

// [launches, load instructions, store instructions, load sectors, store sectors, load bytes, store bytes]
std::vector<int64_t> cuda_emu_counters() {
  const cuda_emu::Counters c = cuda_emu::counters();
  return {static_cast<int64_t>(c.launches),          static_cast<int64_t>(c.load_instructions),
          static_cast<int64_t>(c.store_instructions), static_cast<int64_t>(c.load_sectors),
          static_cast<int64_t>(c.store_sectors),      static_cast<int64_t>(c.load_bytes),
          static_cast<int64_t>(c.store_bytes)};
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab_fast, CatchAll, m) {
  m.impl("set_cuda_emu_order", &set_cuda_emu_order);
  m.impl("cuda_emu_order", &cuda_emu_order);
  m.impl("set_cuda_emu_counting", &set_cuda_emu_counting);
  m.impl("cuda_emu_counters", &cuda_emu_counters);
}

}  // namespace dlf
