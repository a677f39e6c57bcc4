// The output pool of output_pool.h: a c10::Allocator whose blocks carry their size in a header, a
// size-ordered free list under one mutex, and a cap on the bytes kept (the oldest blocks make room).
#include "cpu/output_pool.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

namespace dlf {
namespace {

// Outputs smaller than this come from the default CPU allocator (glibc keeps them on its heap).
constexpr size_t kPoolMinBytes = size_t{1} << 20;
// Header before each block: its usable size; 64 bytes keep the data 64-byte aligned like PyTorch's.
constexpr size_t kHeader = 64;
// Blocks are rounded up to whole MiB so maps of nearly equal size share them.
constexpr size_t kGranule = size_t{1} << 20;
// A free block serves a request of at least 1/kSlack of its size, so a small map never pins a huge block.
constexpr size_t kSlack = 2;

// Default cap on the bytes the pool keeps, in MiB (deeplab_fast.configure(cpu_output_pool_mb=...)).
constexpr size_t kDefaultCapMb = 256;

// False once the pool is destroyed at exit: blocks freed later go straight back to the system.
std::atomic<bool> g_pool_open{false};

class BlockPool {
 public:
  BlockPool() { g_pool_open.store(true); }
  ~BlockPool() {
    g_pool_open.store(false);
    release();
  }
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  size_t cap() const { return cap_.load(std::memory_order_relaxed); }

  // A new cap; blocks given back longest ago are freed until the cached bytes fit under it.
  void set_cap(size_t bytes) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cap_.store(bytes, std::memory_order_relaxed);
      while (cached_ > bytes) evicted.push_back(evict_oldest());
    }
    for (void* d : evicted) std::free(base_of(d));
  }

  // A block of at least `bytes` usable bytes (the header is already in front of the returned pointer).
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= bytes * kSlack) {
        void* data = it->second.data;
        cached_ -= it->first;
        free_.erase(it);
        return data;
      }
    }
    void* base = nullptr;
    if (posix_memalign(&base, kHeader, bytes + kHeader) != 0) return nullptr;
    *static_cast<size_t*>(base) = bytes;
    return static_cast<char*>(base) + kHeader;
  }

  // Keeps the block, first freeing the blocks given back longest ago while it would not fit under the
  // cap: the newest blocks are the current working set (a model's maps, a benchmark's current shape),
  // and blocks of shapes no longer in use must not pin the cap (they did: every output of a new shape
  // then came fresh from the system, page faults included, 4x the op's time at 68 MB).
  void give(void* data) {
    const size_t bytes = size_of(data);
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const size_t cap = cap_.load(std::memory_order_relaxed);
      if (bytes <= cap) {
        while (cached_ + bytes > cap) evicted.push_back(evict_oldest());
        free_.emplace(bytes, Entry{data, ++clock_});
        cached_ += bytes;
        data = nullptr;
      }
    }
    for (void* d : evicted) std::free(base_of(d));  // outside the lock: munmap of a large block is slow
    if (data != nullptr) std::free(base_of(data));
  }

  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, entry] : free_) std::free(base_of(entry.data));
    free_.clear();
    cached_ = 0;
  }

  int64_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(cached_);
  }

  static size_t size_of(void* data) { return *static_cast<size_t*>(base_of(data)); }
  static void* base_of(void* data) { return static_cast<char*>(data) - kHeader; }

 private:
  // Removes the block given back longest ago from the free list (mu_ held, free_ not empty); returns it.
  void* evict_oldest() {
    auto oldest = free_.begin();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second.stamp < oldest->second.stamp) oldest = it;
    void* data = oldest->second.data;
    cached_ -= oldest->first;
    free_.erase(oldest);
    return data;
  }

  struct Entry {
    void* data;
    uint64_t stamp;  // when it was given back (a counter): the smallest is evicted first
  };
  std::mutex mu_;
  std::multimap<size_t, Entry> free_;
  size_t cached_ = 0;
  uint64_t clock_ = 0;
  std::atomic<size_t> cap_{kDefaultCapMb << 20};
};

BlockPool& pool() {
  static BlockPool instance;
  return instance;
}

void give_back(void* data) {
  if (g_pool_open.load()) {
    pool().give(data);
  } else {
    std::free(BlockPool::base_of(data));
  }
}

class PoolAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    const size_t bytes = (n + kGranule - 1) / kGranule * kGranule;
    void* data = pool().take(bytes);
    TORCH_CHECK(data != nullptr, "deeplab_fast: out of memory allocating ", n, " bytes for an op output");
    return {data, data, &give_back, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &give_back; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};

PoolAllocator& pool_allocator() {
  static PoolAllocator instance;
  return instance;
}

}  // namespace

at::Tensor pooled_empty_cpu(c10::IntArrayRef sizes, c10::ScalarType dtype, c10::MemoryFormat memory_format) {
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  c10::Allocator* allocator = (nbytes >= kPoolMinBytes && pool().cap() > 0)
                                  ? static_cast<c10::Allocator*>(&pool_allocator())
                                  : c10::GetDefaultCPUAllocator();
  return at::detail::empty_generic(sizes, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU), dtype, memory_format);
}

int64_t output_pool_cached_bytes() { return pool().cached(); }

void output_pool_release() { pool().release(); }

int64_t cpu_output_pool_mb() { return static_cast<int64_t>(pool().cap() >> 20); }

void set_cpu_output_pool_mb(int64_t mb) {
  TORCH_CHECK_VALUE(mb >= 0 && mb <= kMaxPoolMb, "cpu_output_pool_mb must be an int in [0, ", kMaxPoolMb,
                    "] (MiB; 0 turns the pool off), got ", mb);
  pool().set_cap(static_cast<size_t>(mb) << 20);
}

}  // namespace dlf

// Kernels of the pool's schemas (csrc/deeplab_fast.cpp); they take no tensor: catch-all.
TORCH_LIBRARY_IMPL(deeplab_fast, CatchAll, m) {
  m.impl("output_pool_cached_bytes", &dlf::output_pool_cached_bytes);
  m.impl("output_pool_release", &dlf::output_pool_release);
  m.impl("cpu_output_pool_mb", &dlf::cpu_output_pool_mb);
  m.impl("set_cpu_output_pool_mb", &dlf::set_cpu_output_pool_mb);
}
