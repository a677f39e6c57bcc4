// Global-memory access from kernel code: every load and store of a CUDA kernel goes through
// load_global / store_global. On the GPU and in the CPU build they are a plain access; in the CUDA
// emulation they check the natural alignment (a misaligned 8- or 16-byte access faults on a GPU) and,
// while counting, record the access so tests can pin instructions and 32-byte sectors per warp
// (csrc/emu/runtime.h, deeplab_fast.testing.cuda_emu_counters). A vector access passes a Vec<T, V>
// (csrc/common/host_device.h) or float4 pointer: one access of 8 or 16 bytes.
#pragma once

#include "common/host_device.h"

DLF_BODIES_BEGIN

template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE T load_global(const T* p) {
#if defined(DLF_CUDA_EMU)
  ::cuda_emu::on_global_access(p, sizeof(T), false);
#endif
  return *p;
}

template <typename T>
DLF_HOST_DEVICE DLF_FORCEINLINE void store_global(T* p, const T& v) {
#if defined(DLF_CUDA_EMU)
  ::cuda_emu::on_global_access(p, sizeof(T), true);
#endif
  *p = v;
}

DLF_BODIES_END
