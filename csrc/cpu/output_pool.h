// Large CPU outputs of the fused ops come from a small pool of recycled blocks.
//
// Why: glibc serves allocations above its mmap threshold (at most 32 MiB) with a fresh mmap, so every
// call that returns, say, a 2048 x 65 x 65 fp32 map (35 MB) first page-faults and zeroes every page of
// it: on this class of VM that costs 5x the op itself. Blocks of at least kPoolMinBytes (1 MiB) freed by their
// tensors are kept (up to a cap) and handed to the next output of a size they fit, as the CUDA caching
// allocator and onnxruntime's arena do. Cap: deeplab_fast.configure(cpu_output_pool_mb=...) (default 256 MiB;
// 0 turns it off).
#pragma once

#include <ATen/ops/empty.h>
#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <limits>

namespace dlf {

// An uninitialized CPU tensor of `sizes` in `memory_format`, from the pool when it is large enough.
at::Tensor pooled_empty_cpu(c10::IntArrayRef sizes, c10::ScalarType dtype, c10::MemoryFormat memory_format);

// The output tensor of an op whose input is `like`: pooled on the CPU, at::empty elsewhere.
inline at::Tensor new_output(c10::IntArrayRef sizes, const at::Tensor& like, c10::ScalarType dtype,
                             c10::MemoryFormat memory_format) {
  if (like.device().is_cpu()) return pooled_empty_cpu(sizes, dtype, memory_format);
  return at::empty(sizes, like.options().dtype(dtype).memory_format(memory_format));
}

// Bytes the pool holds in free blocks now (for tests and benchmarks).
int64_t output_pool_cached_bytes();

// Frees every cached block.
void output_pool_release();

// The largest cap, in MiB, whose size in bytes fits an int64.
constexpr int64_t kMaxPoolMb = std::numeric_limits<int64_t>::max() >> 20;

// The cap on the bytes kept, in MiB, and a new one (0 <= mb <= kMaxPoolMb, else a ValueError); lowering it
// frees the blocks given back longest ago until the rest fit.
int64_t cpu_output_pool_mb();
void set_cpu_output_pool_mb(int64_t mb);

}  // namespace dlf
