// Self-test of the CUDA emulation (csrc/emu): kernels written in CUDA that exercise each emulated feature,
// and kernels with the classic bugs (a missing barrier, a barrier not every thread reaches, a misaligned
// vector load, a bad launch) that the emulation must expose. Built with -fsanitize=address and run by
// tests/test_cuda_emu_runtime.py; prints "PASS <name>" or "FAIL <name>: <why>" per check and exits 1 on
// any failure.
#define DLF_CUDA_EMU 1

#include <cstdio>
#include <string>
#include <vector>

#include "common/memory.h"
#include "cuda/launch.cuh"

namespace {

using dlf::emu::launch_kernel;

int g_failed = 0;

void report(const char* name, bool ok, const std::string& why = "") {
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, ok ? "" : ": ", ok ? "" : why.c_str());
  if (!ok) ++g_failed;
}

// Launch `kernel` and return the emulation's error ("" when none).
template <typename... P, typename... A>
std::string run(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, const A&... args) {
  launch_kernel(kernel, grid, block, smem, nullptr, args...);
  return cuda_emu::take_error();
}

constexpr int kBlock = 128;

// Tree reduction in shared memory: correct only with the barrier between the levels.
template <bool kWithBarrier>
__global__ void block_sum(const float* x, float* out) {
  __shared__ float s[kBlock];
  const unsigned t = threadIdx.x;
  s[t] = x[blockIdx.x * kBlock + t];
  __syncthreads();
  for (unsigned half = kBlock / 2; half > 0; half /= 2) {
    if (t < half) s[t] += s[t + half];
    if (kWithBarrier) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Warp reductions: shuffle-down and butterfly (xor) sums, a broadcast and a ballot.
__global__ void warp_ops(const float* x, float* down, float* butterfly, float* bcast, unsigned* ballot) {
  const unsigned t = threadIdx.x, lane = t % 32;
  float v = x[t], w = x[t];
  for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  for (int m = 16; m > 0; m /= 2) w += __shfl_xor_sync(0xffffffffu, w, m);
  const float first = __shfl_sync(0xffffffffu, x[t], 3);
  const unsigned b = __ballot_sync(0xffffffffu, x[t] > 0.f);
  if (lane == 0) down[t / 32] = v, ballot[t / 32] = b;
  butterfly[t] = w;
  bcast[t] = first;
}

// 3-D grid and block coordinates, dynamic shared memory staged per block.
__global__ void coordinates(unsigned* out) {
  DLF_DYNAMIC_SHARED(unsigned, stage);
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  stage[threads - 1 - t] = b * 1000 + t;  // written by one thread, read by another after the barrier
  __syncthreads();
  out[b * threads + t] = stage[t];
}

__global__ void atomic_count(float* total, double* total_d, int* count) {
  atomicAdd(total, 0.5f);
  atomicAdd(total_d, 0.25);
  atomicAdd(count, 1);
}

__global__ void early_exit_then_barrier(float* out) {
  if (threadIdx.x >= 10) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void shuffle_with_exited_lane(float* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.f, 0);
}

__global__ void full_mask_shuffle(float* out) { out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.f, 0); }

__global__ void vector_load(const float* p, float* out) {
  const float4 v = dlf::load_global(reinterpret_cast<const float4*>(p));
  dlf::store_global(out + threadIdx.x, v.x + v.w);
}

// A warp reads 32 consecutive floats (4 sectors) and writes them strided by 8 floats (32 sectors).
__global__ void traffic(const float* x, float* y) {
  const float v = dlf::load_global(x + threadIdx.x);
  dlf::store_global(y + threadIdx.x * 8, v);
}

__global__ void nothing(float*) {}

void check_block_sum() {
  const int blocks = 5;
  std::vector<float> x(blocks * kBlock);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7) % 11) - 5.f;
  std::vector<float> expect(blocks, 0.f);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < kBlock; ++t) expect[b] += x[b * kBlock + t];
  bool all_equal = true, racy_differs = false;
  std::vector<float> racy_first;
  for (auto order : {cuda_emu::Order::kForward, cuda_emu::Order::kReverse, cuda_emu::Order::kShuffle}) {
    cuda_emu::set_order(order, 7);
    std::vector<float> out(blocks), racy(blocks);
    std::string err = run(block_sum<true>, blocks, kBlock, 0, x.data(), out.data());
    all_equal = all_equal && err.empty() && out == expect;
    err = run(block_sum<false>, blocks, kBlock, 0, x.data(), racy.data());
    if (racy_first.empty()) racy_first = racy;
    racy_differs = racy_differs || racy != racy_first || racy != expect;
  }
  cuda_emu::set_order(cuda_emu::Order::kForward, 0);
  report("block_sum_with_barrier_same_in_every_order", all_equal);
  report("block_sum_without_barrier_is_exposed", racy_differs, "the missing barrier went unnoticed");
}

void check_warp_ops() {
  const int n = 64;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(i % 5) - 1.f;
  std::vector<float> down(2), butterfly(n), bcast(n);
  std::vector<unsigned> ballot(2);
  for (auto order : {cuda_emu::Order::kForward, cuda_emu::Order::kShuffle}) {
    cuda_emu::set_order(order, 3);
    const std::string err = run(warp_ops, 1, n, 0, x.data(), down.data(), butterfly.data(), bcast.data(),
                                ballot.data());
    bool ok = err.empty();
    for (int w = 0; w < 2; ++w) {
      float sum = 0.f;
      unsigned bits = 0;
      for (int l = 0; l < 32; ++l) sum += x[w * 32 + l], bits |= (x[w * 32 + l] > 0.f ? 1u : 0u) << l;
      ok = ok && down[w] == sum && ballot[w] == bits;
      for (int l = 0; l < 32; ++l) ok = ok && butterfly[w * 32 + l] == sum && bcast[w * 32 + l] == x[w * 32 + 3];
    }
    report(order == cuda_emu::Order::kForward ? "warp_shuffles_and_ballot_forward" : "warp_shuffles_and_ballot_shuffled",
           ok, err);
  }
  cuda_emu::set_order(cuda_emu::Order::kForward, 0);
}

void check_coordinates() {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const unsigned threads = 24, blocks = 12;
  std::vector<unsigned> out(threads * blocks);
  const std::string err = run(coordinates, grid, block, threads * sizeof(unsigned), out.data());
  bool ok = err.empty();
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t) ok = ok && out[b * threads + t] == b * 1000 + (threads - 1 - t);
  report("coordinates_3d_and_dynamic_shared_memory", ok, err);
}

void check_atomics() {
  float total = 0.f;
  double total_d = 0.0;
  int count = 0;
  const std::string err = run(atomic_count, 4, 250, 0, &total, &total_d, &count);
  report("atomic_add", err.empty() && total == 500.f && total_d == 250.0 && count == 1000, err);
}

void check_counters() {
  std::vector<float> x(64), y(512);
  cuda_emu::reset_counters();
  cuda_emu::set_counting(true);
  const std::string err = run(traffic, 1, 64, 0, x.data(), y.data());
  cuda_emu::set_counting(false);
  const cuda_emu::Counters c = cuda_emu::counters();
  // 64 threads = 2 warps: one load and one store instruction each; 4 sectors per warp read, 32 per warp write.
  const bool ok = err.empty() && c.launches == 1 && c.load_instructions == 2 && c.store_instructions == 2 &&
                  c.load_sectors == 8 && c.store_sectors == 64 && c.load_bytes == 256 && c.store_bytes == 256;
  report("traffic_counters", ok,
         "launches " + std::to_string(c.launches) + " loads " + std::to_string(c.load_instructions) + "/" +
             std::to_string(c.load_sectors) + " stores " + std::to_string(c.store_instructions) + "/" +
             std::to_string(c.store_sectors));
}

void check_faults() {
  std::vector<float> out(64);
  std::string err = run(early_exit_then_barrier, 1, 32, 0, out.data());
  report("barrier_after_early_exit_is_a_fault", err.find("__syncthreads() reached by 10 of the 32") != std::string::npos,
         "got '" + err + "'");
  err = run(shuffle_with_exited_lane, 1, 32, 0, out.data());
  report("shuffle_naming_an_exited_lane_is_a_fault", err.find("has exited") != std::string::npos, "got '" + err + "'");
  err = run(full_mask_shuffle, 1, 20, 0, out.data());
  report("shuffle_naming_a_missing_lane_is_a_fault", err.find("only 20 threads") != std::string::npos,
         "got '" + err + "'");
  std::vector<float> buffer(16);
  err = run(vector_load, 1, 1, 0, buffer.data() + 1, out.data());
  report("misaligned_vector_load_is_a_fault", err.find("misaligned address") != std::string::npos, "got '" + err + "'");
  err = run(vector_load, 1, 1, 0, buffer.data(), out.data());
  report("aligned_vector_load_is_fine", err.empty(), err);
  err = run(nothing, 1, 2048, 0, out.data());
  report("block_of_2048_threads_is_refused", err.find("invalid configuration") != std::string::npos, err);
  err = run(nothing, dim3(1, 70000), 32, 0, out.data());
  report("grid_y_above_65535_is_refused", err.find("invalid configuration") != std::string::npos, err);
  err = run(nothing, 1, 32, 64 * 1024, out.data());
  report("dynamic_shared_memory_above_48k_is_refused", err.find("dynamic shared memory") != std::string::npos, err);
  try {
    launch_kernel(nothing, 0, 32, 0, nullptr, out.data());
    dlf::emu::check_launch("test_op");
    report("check_launch_raises", false, "no exception");
  } catch (const c10::Error& e) {
    report("check_launch_raises", std::string(e.what()).find("test_op emulated CUDA launch failed") != std::string::npos,
           e.what());
  }
}

}  // namespace

int main() {
  check_block_sum();
  check_warp_ops();
  check_coordinates();
  check_atomics();
  check_counters();
  check_faults();
  return g_failed == 0 ? 0 : 1;
}
