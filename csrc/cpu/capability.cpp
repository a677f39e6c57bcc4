// Run-time choice of the CPU kernels' instruction-set variant (capability.h) and the ops that expose it to Python
// (deeplab_fast.cpu_capability, deeplab_fast.cpu_info, deeplab_fast.testing.cpu_capability). Compiled without ISA
// flags, like every translation unit outside the kernel variants: it must run on any CPU to tell what the CPU has.
#include "cpu/capability.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DLF_X86 1
#else
#define DLF_X86 0
#endif

// The highest variant setup.py compiled: 2 (default, avx2, avx512) on x86-64, 0 (default only) elsewhere.
#if !defined(DLF_CPU_HIGHEST_VARIANT)
#error "setup.py passes -DDLF_CPU_HIGHEST_VARIANT (the highest CPU kernel variant it compiled)"
#endif

namespace dlf {
namespace {

constexpr const char* kNames[kNumCpuCapabilities] = {"default", "avx2", "avx512"};

struct CpuFeatures {
  std::vector<std::string> isa;                          // sorted names, see cpu_isa_flags()
  CpuCapability highest_run = CpuCapability::kDefault;  // the highest variant the CPU and OS can run
};

bool has(const std::vector<std::string>& isa, const char* name) {
  return std::find(isa.begin(), isa.end(), name) != isa.end();
}

#if DLF_X86
// XCR0: the register state the OS saves on a context switch. A CPU with AVX-512 under an OS that does not save the
// ZMM registers must not run AVX-512 code (its registers would be corrupted), so each family needs both.
uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  // xgetbv by its encoding would need -mxsave for the intrinsic; the caller checked OSXSAVE first.
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(uint32_t reg, int b) { return (reg >> b) & 1u; }

CpuFeatures probe() {
  CpuFeatures f;
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  if (!__get_cpuid_count(1, 0, &a1, &b1, &c1, &d1)) return f;
  const bool osxsave = bit(c1, 27);
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;            // SSE (bit 1) and AVX (bit 2) state
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask (5), ZMM_Hi256 (6), Hi16_ZMM (7)
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG (17), XTILEDATA (18)
  unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0, a71 = 0, b71 = 0, c71 = 0, d71 = 0;
  const bool leaf7 = __get_cpuid_count(7, 0, &a7, &b7, &c7, &d7);
  if (leaf7 && a7 >= 1) __get_cpuid_count(7, 1, &a71, &b71, &c71, &d71);

  auto add = [&](bool present, const char* name) {
    if (present) f.isa.emplace_back(name);
  };
  add(os_ymm && bit(c1, 28), "avx");
  add(os_ymm && bit(c1, 12), "fma");
  add(os_ymm && bit(c1, 29), "f16c");
  add(os_ymm && bit(b7, 5), "avx2");
  add(os_zmm && bit(b7, 16), "avx512f");
  add(os_zmm && bit(b7, 17), "avx512dq");
  add(os_zmm && bit(b7, 30), "avx512bw");
  add(os_zmm && bit(b7, 31), "avx512vl");
  add(os_zmm && bit(c7, 11), "avx512_vnni");
  add(os_zmm && bit(d7, 23), "avx512_fp16");
  add(os_zmm && bit(a71, 5), "avx512_bf16");
  add(os_amx && bit(d7, 24), "amx_tile");
  add(os_amx && bit(d7, 22), "amx_bf16");
  add(os_amx && bit(d7, 25), "amx_int8");
  std::sort(f.isa.begin(), f.isa.end());

  const bool avx2 = has(f.isa, "avx2") && has(f.isa, "fma") && has(f.isa, "f16c");
  const bool avx512 = avx2 && has(f.isa, "avx512f") && has(f.isa, "avx512bw") && has(f.isa, "avx512vl") &&
                      has(f.isa, "avx512dq");
  f.highest_run = avx512 ? CpuCapability::kAvx512 : (avx2 ? CpuCapability::kAvx2 : CpuCapability::kDefault);
  return f;
}
#else
CpuFeatures probe() { return {}; }
#endif

const CpuFeatures& features() {
  static const CpuFeatures f = probe();
  return f;
}

std::atomic<int>& current_slot() {
  static std::atomic<int> slot{static_cast<int>(detected_cpu_capability())};
  return slot;
}

// "default, avx2" for messages.
std::string supported_list() {
  std::string s;
  for (int c = 0; c <= static_cast<int>(detected_cpu_capability()); ++c) s += (c ? ", " : "") + std::string(kNames[c]);
  return s;
}

CpuCapability parse(const std::string& name, const char* op) {
  for (int c = 0; c < kNumCpuCapabilities; ++c)
    if (name == kNames[c]) return static_cast<CpuCapability>(c);
  TORCH_CHECK_VALUE(false, op, ": name must be one of 'default', 'avx2', 'avx512', got '", name, "'");
}

}  // namespace

const char* cpu_capability_name(CpuCapability c) { return kNames[static_cast<int>(c)]; }

CpuCapability detected_cpu_capability() {
  return static_cast<CpuCapability>(std::min<int>(static_cast<int>(features().highest_run), DLF_CPU_HIGHEST_VARIANT));
}

CpuCapability current_cpu_capability() {
  return static_cast<CpuCapability>(current_slot().load(std::memory_order_relaxed));
}

void set_cpu_capability(CpuCapability c) {
  const int want = static_cast<int>(c);
  if (want > static_cast<int>(detected_cpu_capability())) {
    const char* need = c == CpuCapability::kAvx512 ? "a CPU with AVX-512 (F, BW, VL, DQ)" : "a CPU with AVX2, FMA and F16C";
    TORCH_CHECK_VALUE(want > DLF_CPU_HIGHEST_VARIANT || want <= static_cast<int>(features().highest_run),
                      "the '", kNames[want], "' CPU kernels need ", need, " and an OS that saves its registers; this ",
                      "CPU runs: ", supported_list());
    TORCH_CHECK_VALUE(false, "this build of deeplab_fast has no '", kNames[want],
                      "' CPU kernels (setup.py builds them on x86-64 only); it runs: ", supported_list());
  }
  current_slot().store(want, std::memory_order_relaxed);
}

std::vector<std::string> cpu_isa_flags() { return features().isa; }

namespace {

std::string cpu_capability_op() { return cpu_capability_name(current_cpu_capability()); }

void set_cpu_capability_op(std::string name) {
  const CpuCapability c = parse(name, "set_cpu_capability");
  try {
    set_cpu_capability(c);
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, "set_cpu_capability: name='", name, "' cannot be forced: ", e.what_without_backtrace());
  }
}

std::vector<std::string> cpu_capabilities_op() {
  std::vector<std::string> names;
  for (int c = 0; c <= static_cast<int>(detected_cpu_capability()); ++c) names.emplace_back(kNames[c]);
  return names;
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab_fast, CatchAll, m) {
  m.impl("cpu_capability", &cpu_capability_op);
  m.impl("set_cpu_capability", &set_cpu_capability_op);
  m.impl("cpu_capabilities", &cpu_capabilities_op);
  m.impl("cpu_isa_flags", &cpu_isa_flags);
}

}  // namespace dlf
