// The CUDA execution model on the host: the runtime behind csrc/emu/cuda_emu.h.
//
// A launch runs its blocks one after another on the calling OS thread. The threads of a block are
// cooperative fibers (each on its own stack) driven by a deterministic scheduler: a thread runs until it
// reaches __syncthreads(), a warp-synchronous call (__syncwarp, the shuffles, __ballot_sync) or its end;
// then the scheduler resumes the next runnable thread in the schedule order. Between two barriers the
// threads therefore run one after another, in the order `set_order` chose ("forward": thread 0 first,
// "reverse", or "shuffle": a permutation drawn per pass from a seeded generator), and blocks run in the
// same kind of order. A kernel whose result depends on that order has a race (a missing barrier, two
// threads writing one place); tests run every kernel in several orders and require identical bytes.
//
// Errors a GPU would report (invalid launch configuration, a misaligned vector access, a barrier not
// reached by every thread of the block, a warp-synchronous call whose mask names an exited lane) are
// recorded as the launch's error, like cudaGetLastError(): the launcher reads it with take_error().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace cuda_emu {

// CUDA's dim3: unset sizes are 1.
struct Dim3 {
  constexpr Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  unsigned x, y, z;
};

enum class Order { kForward, kReverse, kShuffle };

// The schedule of every later launch, process-wide (deeplab_fast.testing.cuda_emu_order sets it).
void set_order(Order order, uint64_t seed);
Order order();
uint64_t seed();

// Run `kernel` (one call per thread, the kernel's arguments bound in) over grid x block threads, with
// `dynamic_smem` bytes of dynamic shared memory per block. Returns when every block has finished, or
// early with an error recorded (take_error).
void launch(Dim3 grid, Dim3 block, size_t dynamic_smem, const std::function<void()>& kernel);

// The error of the last failed launch on this OS thread, cleared by the call ("" when none).
std::string take_error();

// Record a fault of the running thread (the launch stops at the next scheduling point).
void fault(const std::string& what);

// The running thread's coordinates and its block's shape.
const Dim3& thread_idx();
const Dim3& block_idx();
const Dim3& block_dim();
const Dim3& grid_dim();

// Barrier of all threads of the running block (__syncthreads).
void block_barrier();

// Barrier of the lanes of `mask` in the running thread's warp (__syncwarp). Every lane in the mask must
// reach it; one that has exited is a fault.
void warp_barrier(unsigned mask);

// Warp exchange: every lane of `mask` publishes `value`, and gets back the value lane `src_lane` published
// (the shuffles are built on it). Reading a lane outside the mask is a fault.
uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane);

// Warp vote: bit l set when lane l of `mask` passed a true predicate (__ballot_sync).
unsigned warp_ballot(unsigned mask, bool predicate);

// The running thread's lane (0..31) in its warp.
int lane_id();

// The block's dynamic shared memory (extern __shared__), filled with 0xff bytes (NaN for floats) when the
// block starts so a read before a write shows.
unsigned char* dynamic_shared_memory();

// A vector access of `bytes` at `ptr` must be aligned to `bytes` (a GPU faults otherwise).
void check_vector_alignment(const void* ptr, size_t bytes, const char* what);

// Global-memory traffic, counted while counting is on (deeplab_fast.testing.cuda_emu_counters). A warp-wide
// access is the i-th global access of each lane of a warp (the lanes of a warp run the same instructions);
// its sectors are the distinct 32-byte sectors its lanes touch, as a GPU's memory system serves them.
struct Counters {
  uint64_t launches = 0;
  uint64_t load_instructions = 0, store_instructions = 0;  // warp-wide accesses
  uint64_t load_sectors = 0, store_sectors = 0;            // 32-byte sectors, summed over warp-wide accesses
  uint64_t load_bytes = 0, store_bytes = 0;                // bytes the threads asked for
};
void set_counting(bool on);
bool counting();
Counters counters();
void reset_counters();

// Every global access of kernel code (load_global / store_global in csrc/common/memory.h): `bytes` must be
// naturally aligned (a GPU faults otherwise); recorded while counting.
void on_global_access(const void* ptr, size_t bytes, bool store);

}  // namespace cuda_emu
