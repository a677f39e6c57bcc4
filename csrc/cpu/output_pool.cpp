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
#include <map>
#include <mutex>
#include <string>
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

// False once the pool is destroyed at exit: blocks freed later go straight back to the system.
std::atomic<bool> g_pool_open{false};

size_t cap_from_env() {
  const char* v = std::getenv("DEEPLAB_FAST_CPU_POOL_MB");
  if (v == nullptr || *v == '\0') return size_t{256} << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(v, &end, 10);
  TORCH_CHECK(end != v && *end == '\0' && mb >= 0, "DEEPLAB_FAST_CPU_POOL_MB must be a whole number >= 0, got '", v,
              "'");
  return static_cast<size_t>(mb) << 20;
}

class BlockPool {
 public:
  BlockPool() : cap_(cap_from_env()) { g_pool_open.store(true); }
  ~BlockPool() {
    g_pool_open.store(false);
    release();
  }
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  size_t cap() const { return cap_; }

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
      if (bytes <= cap_) {
        while (cached_ + bytes > cap_) {
          auto oldest = free_.begin();
          for (auto it = free_.begin(); it != free_.end(); ++it)
            if (it->second.stamp < oldest->second.stamp) oldest = it;
          cached_ -= oldest->first;
          evicted.push_back(oldest->second.data);
          free_.erase(oldest);
        }
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
  struct Entry {
    void* data;
    uint64_t stamp;  // when it was given back (a counter): the smallest is evicted first
  };
  std::mutex mu_;
  std::multimap<size_t, Entry> free_;
  size_t cached_ = 0;
  uint64_t clock_ = 0;
  const size_t cap_;
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

}  // namespace dlf

// Introspection for tests and benchmarks: torch.ops.deeplab_fast.output_pool_cached_bytes() and
// torch.ops.deeplab_fast.output_pool_release() (no tensor arguments: catch-all kernels).
TORCH_LIBRARY_FRAGMENT(deeplab_fast, m) {
  m.def("output_pool_cached_bytes() -> int", &dlf::output_pool_cached_bytes);
  m.def("output_pool_release() -> ()", &dlf::output_pool_release);
}
