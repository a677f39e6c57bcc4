// Which instruction-set variant of the CPU kernels runs (csrc/cpu/launchers.h): chosen at run time from cpuid, never
// by the build machine, as ATen's CPU_CAPABILITY. The best variant the CPU and this build support runs unless a test
// forces a lower one (deeplab_fast.testing.cpu_capability).
#pragma once

#include <string>
#include <vector>

namespace dlf {

// Ordered: each needs what the one below it needs. The numbers are DLF_CPU_CAPABILITY of the variant's objects.
enum class CpuCapability : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };
constexpr int kNumCpuCapabilities = 3;

// "default", "avx2" or "avx512".
const char* cpu_capability_name(CpuCapability c);

// The highest variant this build holds and this CPU (and its OS, which must save the YMM/ZMM registers) can run.
CpuCapability detected_cpu_capability();

// The variant the launchers forward to now: detected_cpu_capability() unless set_cpu_capability chose a lower one.
CpuCapability current_cpu_capability();

// Make `c` the current variant, process-wide; a variant above detected_cpu_capability() is a c10::ValueError that
// names it and lists the supported ones.
void set_cpu_capability(CpuCapability c);

// The ISA extensions this CPU reports and its OS enables (cpuid + XGETBV), sorted: "avx", "avx2", "fma", "f16c",
// "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
// "amx_bf16", "amx_int8" (those present). Empty on CPUs other than x86-64.
std::vector<std::string> cpu_isa_flags();

}  // namespace dlf
