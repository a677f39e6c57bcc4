// The CUDA execution model on the host (see runtime.h): fibers on ucontext, one scheduler per OS thread.
#include "emu/runtime.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define DLF_EMU_ASAN 1
#else
#define DLF_EMU_ASAN 0
#endif

namespace cuda_emu {
namespace {

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicSmem = 48 * 1024;  // without cudaFuncSetAttribute's opt-in, as on every GPU
// Host-compiled kernels keep small frames, but ASan's redzones make them several times larger.
constexpr size_t kStackBytes = DLF_EMU_ASAN ? 256 * 1024 : 64 * 1024;

std::atomic<int> g_order{static_cast<int>(Order::kForward)};
std::atomic<uint64_t> g_seed{0};
std::atomic<bool> g_counting{false};
// Launches run on the calling OS thread; the totals are shared (tests count one op at a time).
std::mutex g_counters_mutex;
Counters g_counters;

enum class State { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Access {
  uintptr_t site;  // the calling instruction: one static load or store of the kernel
  uintptr_t address;
  uint32_t bytes;
  bool store;
};

struct Fiber {
  std::vector<Access> accesses;  // while counting
  ucontext_t ctx;
  Dim3 tid;
  unsigned linear = 0;
  State state = State::kReady;
  unsigned warp_mask = 0;
  void* stack = nullptr;
};

// Stacks for up to kMaxThreadsPerBlock fibers, each above a PROT_NONE guard page (a stack overflow faults
// instead of corrupting a neighbour), mapped once per OS thread and reused by every block.
class StackPool {
 public:
  ~StackPool() {
    if (base_ != nullptr) munmap(base_, bytes_);
  }
  void* stack(unsigned i) {
    if (base_ == nullptr) map();
    return static_cast<char*>(base_) + static_cast<size_t>(i) * slot_ + page_;
  }

 private:
  void map() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    slot_ = page_ + kStackBytes;
    bytes_ = slot_ * kMaxThreadsPerBlock;
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map the fiber stacks");
    base_ = p;
    for (unsigned i = 0; i < kMaxThreadsPerBlock; ++i) mprotect(static_cast<char*>(base_) + i * slot_, page_, PROT_NONE);
  }
  void* base_ = nullptr;
  size_t page_ = 0, slot_ = 0, bytes_ = 0;
};

// The launch running on this OS thread.
struct Launch {
  Dim3 grid, block, bidx;
  const std::function<void()>* kernel = nullptr;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  std::string error;
  std::vector<unsigned char> dynamic_smem;
  std::vector<uint64_t> slots;  // warp exchange: 32 values per warp
  std::mt19937_64 rng;
#if DLF_EMU_ASAN
  void* fake_stack = nullptr;
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

thread_local Launch* tl_launch = nullptr;
thread_local std::string tl_error;
thread_local StackPool tl_stacks;
const Dim3 kZero{0, 0, 0};

Launch& running(const char* what) {
  if (tl_launch == nullptr || tl_launch->current == nullptr) {
    throw std::logic_error(std::string("cuda_emu: ") + what + " called outside an emulated kernel");
  }
  return *tl_launch;
}

std::string dims(const Dim3& d) {
  std::ostringstream s;
  s << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return s.str();
}

// Switch from the running fiber back to the scheduler.
void yield_to_scheduler(Launch& L) {
  Fiber* f = L.current;
#if DLF_EMU_ASAN
  __sanitizer_start_switch_fiber(&L.fake_stack, L.scheduler_stack_bottom, L.scheduler_stack_size);
#endif
  swapcontext(&f->ctx, &L.scheduler);
#if DLF_EMU_ASAN
  __sanitizer_finish_switch_fiber(L.fake_stack, nullptr, nullptr);
#endif
}

void fiber_main() {
  Launch& L = *tl_launch;
#if DLF_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &L.scheduler_stack_bottom, &L.scheduler_stack_size);
#endif
  (*L.kernel)();
  L.current->state = State::kDone;
#if DLF_EMU_ASAN
  // The fiber ends: nullptr tells ASan to drop its fake stack.
  __sanitizer_start_switch_fiber(nullptr, L.scheduler_stack_bottom, L.scheduler_stack_size);
#endif
  // Returning switches to uc_link (the scheduler).
}

void resume(Launch& L, Fiber& f) {
  L.current = &f;
#if DLF_EMU_ASAN
  __sanitizer_start_switch_fiber(&L.fake_stack, f.stack, kStackBytes);
#endif
  swapcontext(&L.scheduler, &f.ctx);
#if DLF_EMU_ASAN
  __sanitizer_finish_switch_fiber(L.fake_stack, nullptr, nullptr);
#endif
  L.current = nullptr;
}

std::vector<unsigned> schedule(Launch& L, unsigned n) {
  std::vector<unsigned> order(n);
  std::iota(order.begin(), order.end(), 0u);
  switch (static_cast<Order>(g_order.load())) {
    case Order::kForward: break;
    case Order::kReverse: std::reverse(order.begin(), order.end()); break;
    case Order::kShuffle: std::shuffle(order.begin(), order.end(), L.rng); break;
  }
  return order;
}

// Release the lanes waiting at a warp barrier whose every masked lane has arrived. A masked lane that does
// not exist or has exited can never arrive: a fault.
bool release_warps(Launch& L) {
  const unsigned n = static_cast<unsigned>(L.fibers.size());
  bool released = false;
  for (unsigned w = 0; w * kWarpSize < n; ++w) {
    const unsigned first = w * kWarpSize, lanes = std::min(kWarpSize, n - first);
    unsigned waiting = 0, mask = 0;
    for (unsigned l = 0; l < lanes; ++l) {
      const Fiber& f = L.fibers[first + l];
      if (f.state == State::kAtWarpBarrier) waiting |= 1u << l, mask |= f.warp_mask;
    }
    if (waiting == 0) continue;
    bool complete = true;
    for (unsigned l = 0; l < kWarpSize; ++l) {
      if (!(mask >> l & 1u)) continue;
      if (l >= lanes) {
        L.error = "warp-synchronous call in warp " + std::to_string(w) + " names lane " + std::to_string(l) +
                  " in its mask, but the block has only " + std::to_string(n) + " threads";
        return false;
      }
      const State s = L.fibers[first + l].state;
      if (s == State::kDone) {
        L.error = "warp-synchronous call in warp " + std::to_string(w) + " names lane " + std::to_string(l) +
                  " in its mask, but that thread has exited";
        return false;
      }
      if (s != State::kAtWarpBarrier) complete = false;
    }
    if (!complete) continue;
    for (unsigned l = 0; l < lanes; ++l) {
      Fiber& f = L.fibers[first + l];
      if (f.state == State::kAtWarpBarrier) f.state = State::kReady;
    }
    released = true;
  }
  return released;
}

// Fold the accesses of the block's warps into the counters (see Counters in runtime.h). A warp-wide access
// is what a GPU issues: one static load/store site, the n-th time each lane executes it; lanes that skip it
// (divergence) are simply not in it.
void count_block(Launch& L) {
  Counters c;
  const unsigned n = static_cast<unsigned>(L.fibers.size());
  struct Group {
    bool store = false;
    uint64_t bytes = 0;
    std::set<uintptr_t> sectors;
  };
  for (unsigned first = 0; first < n; first += kWarpSize) {
    const unsigned lanes = std::min(kWarpSize, n - first);
    std::map<std::pair<uintptr_t, size_t>, Group> groups;
    for (unsigned l = 0; l < lanes; ++l) {
      std::map<uintptr_t, size_t> seen;
      for (const Access& a : L.fibers[first + l].accesses) {
        Group& g = groups[{a.site, seen[a.site]++}];
        g.store = a.store;
        g.bytes += a.bytes;
        for (uintptr_t s = a.address / 32; s <= (a.address + a.bytes - 1) / 32; ++s) g.sectors.insert(s);
      }
    }
    for (const auto& [key, g] : groups) {
      (g.store ? c.store_instructions : c.load_instructions) += 1;
      (g.store ? c.store_sectors : c.load_sectors) += g.sectors.size();
      (g.store ? c.store_bytes : c.load_bytes) += g.bytes;
    }
  }
  const std::lock_guard<std::mutex> lock(g_counters_mutex);
  g_counters.load_instructions += c.load_instructions, g_counters.store_instructions += c.store_instructions;
  g_counters.load_sectors += c.load_sectors, g_counters.store_sectors += c.store_sectors;
  g_counters.load_bytes += c.load_bytes, g_counters.store_bytes += c.store_bytes;
}

void run_block(Launch& L) {
  const unsigned n = L.block.x * L.block.y * L.block.z;
  L.fibers.assign(n, Fiber{});
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = L.fibers[i];
    f.linear = i;
    f.tid = Dim3{i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y)};
    f.stack = tl_stacks.stack(i);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &L.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  std::fill(L.dynamic_smem.begin(), L.dynamic_smem.end(), static_cast<unsigned char>(0xff));
  std::fill(L.slots.begin(), L.slots.end(), 0);
  while (true) {
    for (unsigned i : schedule(L, n)) {
      if (L.fibers[i].state == State::kReady) resume(L, L.fibers[i]);
      if (!L.error.empty()) return;
    }
    if (release_warps(L)) continue;
    if (!L.error.empty()) return;
    unsigned done = 0, at_barrier = 0;
    for (const Fiber& f : L.fibers) {
      done += f.state == State::kDone;
      at_barrier += f.state == State::kAtBlockBarrier;
    }
    if (done == n) {
      if (g_counting.load()) count_block(L);
      return;
    }
    if (at_barrier + done == n) {
      if (done > 0) {
        L.error = "__syncthreads() reached by " + std::to_string(at_barrier) + " of the " + std::to_string(n) +
                  " threads of block " + dims(L.bidx) + "; the other " + std::to_string(done) +
                  " have exited (a barrier must be reached by every thread of the block)";
        return;
      }
      for (Fiber& f : L.fibers) f.state = State::kReady;
      continue;
    }
    L.error = "deadlock in block " + dims(L.bidx) + ": " + std::to_string(at_barrier) +
              " threads wait at __syncthreads() while others wait at a warp-synchronous call";
    return;
  }
}

}  // namespace

void set_order(Order order, uint64_t seed) {
  g_order.store(static_cast<int>(order));
  g_seed.store(seed);
}
Order order() { return static_cast<Order>(g_order.load()); }
uint64_t seed() { return g_seed.load(); }

void launch(Dim3 grid, Dim3 block, size_t dynamic_smem, const std::function<void()>& kernel) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  std::string bad;
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > 64) {
    bad = "block " + dims(block) + " (at most 1024 threads; x, y <= 1024, z <= 64; none 0)";
  } else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 ||
             grid.z > 65535) {
    bad = "grid " + dims(grid) + " (x in [1, 2^31 - 1], y and z in [1, 65535])";
  } else if (dynamic_smem > kMaxDynamicSmem) {
    bad = std::to_string(dynamic_smem) + " bytes of dynamic shared memory (at most 49152)";
  }
  if (!bad.empty()) {
    tl_error = "invalid configuration argument: " + bad;
    return;
  }
  if (tl_launch != nullptr) {
    tl_error = "a kernel launched another kernel (dynamic parallelism is not emulated)";
    return;
  }
  if (g_counting.load()) {
    const std::lock_guard<std::mutex> lock(g_counters_mutex);
    ++g_counters.launches;
  }
  Launch L;
  L.grid = grid;
  L.block = block;
  L.kernel = &kernel;
  L.dynamic_smem.resize(dynamic_smem);
  L.slots.resize((threads + kWarpSize - 1) / kWarpSize * kWarpSize);
  L.rng.seed(g_seed.load());
  tl_launch = &L;
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  // Blocks run in the schedule order too (a kernel must not depend on the order of its blocks).
  std::vector<uint64_t> block_order(blocks);
  std::iota(block_order.begin(), block_order.end(), uint64_t{0});
  if (order() == Order::kReverse) std::reverse(block_order.begin(), block_order.end());
  if (order() == Order::kShuffle) std::shuffle(block_order.begin(), block_order.end(), L.rng);
  for (uint64_t b : block_order) {
    L.bidx = Dim3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                  static_cast<unsigned>(b / (static_cast<uint64_t>(grid.x) * grid.y))};
    run_block(L);
    if (!L.error.empty()) break;
  }
  tl_launch = nullptr;
  if (!L.error.empty()) tl_error = L.error;
}

std::string take_error() {
  std::string e;
  e.swap(tl_error);
  return e;
}

void fault(const std::string& what) {
  if (tl_launch == nullptr) {
    tl_error = what;
    return;
  }
  Launch& L = *tl_launch;
  if (L.error.empty()) {
    L.error = what;
    if (L.current != nullptr) {
      L.error += " (thread " + dims(L.current->tid) + " of block " + dims(L.bidx) + ")";
    }
  }
}

const Dim3& thread_idx() {
  return tl_launch != nullptr && tl_launch->current != nullptr ? tl_launch->current->tid : kZero;
}
const Dim3& block_idx() { return tl_launch != nullptr ? tl_launch->bidx : kZero; }
const Dim3& block_dim() { return tl_launch != nullptr ? tl_launch->block : kZero; }
const Dim3& grid_dim() { return tl_launch != nullptr ? tl_launch->grid : kZero; }

int lane_id() { return static_cast<int>(running("lane_id").current->linear % kWarpSize); }

void block_barrier() {
  Launch& L = running("__syncthreads");
  L.current->state = State::kAtBlockBarrier;
  yield_to_scheduler(L);
}

void warp_barrier(unsigned mask) {
  Launch& L = running("__syncwarp");
  const unsigned lane = L.current->linear % kWarpSize;
  if (!(mask >> lane & 1u)) {
    fault("a warp-synchronous call by lane " + std::to_string(lane) + " whose mask does not include it");
  }
  L.current->state = State::kAtWarpBarrier;
  L.current->warp_mask = mask;
  yield_to_scheduler(L);
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane) {
  Launch& L = running("__shfl_sync");
  const unsigned base = L.current->linear / kWarpSize * kWarpSize;
  L.slots[base + L.current->linear % kWarpSize] = value;
  warp_barrier(mask);  // every masked lane has published
  uint64_t got = value;
  if (src_lane < 0 || src_lane >= static_cast<int>(kWarpSize) || !(mask >> src_lane & 1u)) {
    fault("a shuffle reads lane " + std::to_string(src_lane) + ", which is not in its mask");
  } else {
    got = L.slots[base + static_cast<unsigned>(src_lane)];
  }
  warp_barrier(mask);  // every masked lane has read before any publishes again
  return got;
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  Launch& L = running("__ballot_sync");
  const unsigned base = L.current->linear / kWarpSize * kWarpSize;
  L.slots[base + L.current->linear % kWarpSize] = predicate ? 1 : 0;
  warp_barrier(mask);
  unsigned bits = 0;
  for (unsigned l = 0; l < kWarpSize; ++l) {
    if ((mask >> l & 1u) && L.slots[base + l] != 0) bits |= 1u << l;
  }
  warp_barrier(mask);
  return bits;
}

unsigned char* dynamic_shared_memory() { return running("extern __shared__").dynamic_smem.data(); }

void check_vector_alignment(const void* ptr, size_t bytes, const char* what) {
  if (reinterpret_cast<uintptr_t>(ptr) % bytes != 0) {
    char addr[32];
    std::snprintf(addr, sizeof(addr), "%p", ptr);
    fault(std::string("misaligned address: ") + std::to_string(bytes) + "-byte " + what + " at " + addr);
  }
}

void set_counting(bool on) { g_counting.store(on); }
bool counting() { return g_counting.load(); }
Counters counters() {
  const std::lock_guard<std::mutex> lock(g_counters_mutex);
  return g_counters;
}
void reset_counters() {
  const std::lock_guard<std::mutex> lock(g_counters_mutex);
  g_counters = Counters{};
}

__attribute__((noinline)) void on_global_access(const void* ptr, size_t bytes, bool store) {
  if (bytes > 1 && (bytes & (bytes - 1)) == 0) check_vector_alignment(ptr, bytes, store ? "store" : "load");
  if (!g_counting.load() || tl_launch == nullptr || tl_launch->current == nullptr) return;
  // load_global / store_global are inlined into the kernel, so the return address names the access site.
  const auto site = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  tl_launch->current->accesses.push_back(
      Access{site, reinterpret_cast<uintptr_t>(ptr), static_cast<uint32_t>(bytes), store});
}

}  // namespace cuda_emu
