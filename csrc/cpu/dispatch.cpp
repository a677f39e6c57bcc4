// The public CPU launchers (dlf::<name> of csrc/cpu/launchers.h): each forwards to the instruction-set variant that
// is current (csrc/cpu/capability.h). Portable code (no ISA flags); one relaxed atomic load per call.
#include "cpu/launchers.h"

#include "cpu/capability.h"

#if !defined(DLF_CPU_HIGHEST_VARIANT)
#error "setup.py passes -DDLF_CPU_HIGHEST_VARIANT (the highest CPU kernel variant it compiled)"
#endif

// A case per variant this build holds; a variant it lacks is never current (set_cpu_capability refuses it).
#if DLF_CPU_HIGHEST_VARIANT >= 2
#define DLF_CASE_AVX512(call) \
  case CpuCapability::kAvx512: return cpu_avx512::call;
#else
#define DLF_CASE_AVX512(call)
#endif
#if DLF_CPU_HIGHEST_VARIANT >= 1
#define DLF_CASE_AVX2(call) \
  case CpuCapability::kAvx2: return cpu_avx2::call;
#else
#define DLF_CASE_AVX2(call)
#endif

#define DLF_FORWARD_CPU_LAUNCHER(ret, name, params, args) \
  ret name params {                                       \
    switch (current_cpu_capability()) {                   \
      DLF_CASE_AVX512(name args)                          \
      DLF_CASE_AVX2(name args)                            \
      default: return cpu_default::name args;             \
    }                                                     \
  }

namespace dlf {
DLF_CPU_LAUNCHERS(DLF_FORWARD_CPU_LAUNCHER)
}  // namespace dlf
