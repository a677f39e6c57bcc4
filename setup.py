"""Build deeplab_fast._C: the CPU sources always, the CUDA sources when they can be built.

Environment:
  DEEPLAB_FAST_CUDA=auto (default)  build CUDA when a CUDA build of torch and nvcc are found
  DEEPLAB_FAST_CUDA=0               CPU only
  DEEPLAB_FAST_CUDA=1               CUDA required: fail with the reason if it cannot be built
  TORCH_CUDA_ARCH_LIST              defaults to "8.0;9.0" (needed when no GPU is visible)
  DEEPLAB_FAST_PTXAS_REPORT=1       also pass -Xptxas -v (per-kernel report: benchmarks/cuda_resources.py)

CPU instruction sets: the CPU kernel translation units (CPU_KERNEL_SOURCES) are compiled once per variant in
CPU_VARIANTS, each into its own objects (build_temp/cpu_<variant>/) with its own flags and -DDLF_CPU_CAPABILITY=N:
"default" (no ISA flags), and on x86-64 also "avx2" and "avx512". Every other translation unit gets no ISA flag, so
the library loads and runs on any x86-64 CPU; csrc/cpu/dispatch.cpp picks the variant at run time from cpuid
(csrc/cpu/capability.cpp). The build machine's CPU decides nothing.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home() -> str | None:
    """Locate the real CUDA toolkit root before torch.utils.cpp_extension reads CUDA_HOME.

    The nvcc first on PATH may be a wrapper script outside the toolkit; torch would derive a
    wrong CUDA_HOME from it (then linking fails with `cannot find -lcudart`).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and os.path.exists(os.path.join(os.environ[var], "bin", "nvcc")):
            return os.environ[var]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return os.path.realpath("/usr/local/cuda")
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    real = os.path.realpath(nvcc)
    try:  # a wrapper script: follow the path it execs
        with open(real, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
        for token in head.split():
            if token.endswith("/bin/nvcc") and os.path.exists(token):
                real = os.path.realpath(token)
                break
    except OSError:
        pass
    return os.path.dirname(os.path.dirname(real))


_MODE = os.environ.get("DEEPLAB_FAST_CUDA", "auto").strip().lower()
if _MODE not in ("auto", "0", "1"):
    sys.exit(f"DEEPLAB_FAST_CUDA must be auto, 0 or 1, got {_MODE!r}")
_CUDA_HOME = _find_cuda_home() if _MODE != "0" else None
if _CUDA_HOME:
    os.environ["CUDA_HOME"] = _CUDA_HOME
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
os.environ.setdefault("MAX_JOBS", str(max(1, min(os.cpu_count() or 1, 4))))

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _cuda_decision() -> tuple[bool, str]:
    if _MODE == "0":
        return False, "DEEPLAB_FAST_CUDA=0"
    if torch.version.cuda is None:
        return False, "this torch is a CPU-only build"
    if not _CUDA_HOME:
        return False, "nvcc not found (set CUDA_HOME)"
    return True, f"nvcc in {_CUDA_HOME}, torch CUDA {torch.version.cuda}, arch {os.environ['TORCH_CUDA_ARCH_LIST']}"


WITH_CUDA, WHY = _cuda_decision()
if _MODE == "1" and not WITH_CUDA:
    sys.exit(f"DEEPLAB_FAST_CUDA=1 but the CUDA kernels cannot be built: {WHY}")

# Compiled once per instruction-set variant (CPU_VARIANTS); see csrc/common/host_device.h (DLF_CPU_CAPABILITY).
CPU_KERNEL_SOURCES = [
    os.path.join("csrc", "cpu", "dwconv_bn_act_cpu.cpp"),
    os.path.join("csrc", "cpu", "upsample_cpu.cpp"),
    os.path.join("csrc", "cpu", "winograd_cpu.cpp"),
]
cpp_sources = sorted(
    set(
        glob.glob(os.path.join("csrc", "*.cpp"))
        + glob.glob(os.path.join("csrc", "ops", "*.cpp"))
        + glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
        # the CUDA kernels' host emulation (backend "cuda_emu"): built with every build, no nvcc needed
        + glob.glob(os.path.join("csrc", "emu", "*.cpp"))
    )
    - set(CPU_KERNEL_SOURCES)
)
cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
# Every header: a change to one rebuilds the extension (ninja's depfiles then pick the objects to recompile).
headers = sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True))
headers += sorted(glob.glob(os.path.join("csrc", "**", "*.cuh"), recursive=True))

# No ISA flag here: these flags build every translation unit, and the library must load on any CPU.
cxx_flags = ["-O3", "-g0", "-std=c++20", "-fopenmp"]

_AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c"]
# -mprefer-vector-width=512: GCC and clang otherwise auto-vectorize with 256-bit registers even under -mavx512f.
_AVX512_FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", *_AVX2_FLAGS, "-mprefer-vector-width=512"]
# (name, DLF_CPU_CAPABILITY, extra flags), lowest first: the order the objects are linked in (see
# BuildWithCpuVariants). The numbers are csrc/cpu/capability.h's CpuCapability.
CPU_VARIANTS = [("default", 0, [])]
if platform.machine().lower() in ("x86_64", "amd64"):
    # -O1 for x86-64's portable variant, which only CPUs without AVX2 run (and the tests): without SIMD registers
    # its 16-lane packs (csrc/common/vec.h) cost GCC 12 91 s of CPU at -O3 on dwconv_bn_act_cpu.cpp alone, 26 s at
    # -O1 (the avx2 variant: 34 s); measured on an AMD EPYC Zen 3. The suite's build time is what it saves.
    CPU_VARIANTS = [("default", 0, ["-O1"]), ("avx2", 1, _AVX2_FLAGS), ("avx512", 2, _AVX512_FLAGS)]


class BuildWithCpuVariants(BuildExtension):
    """torch's BuildExtension (ninja) that also compiles CPU_KERNEL_SOURCES once per CPU_VARIANTS entry and links
    those objects into the extension.

    Each variant is one ninja build in its own directory (build_temp/cpu_<variant>/build.ninja), so its objects
    carry its flags and its depfiles recompile it when its sources or headers change. The extension's `depends`
    (CPU_KERNEL_SOURCES, every header, this file with its flags) make setuptools relink when one of them changed.
    """

    def build_extension(self, ext) -> None:
        cxx = list(ext.extra_compile_args["cxx"])
        objects = []
        for name, number, flags in CPU_VARIANTS:  # up to date: ninja finds nothing to do
            objects += self.compiler.compile(
                CPU_KERNEL_SOURCES,
                output_dir=os.path.join(self.build_temp, f"cpu_{name}"),
                macros=[*ext.define_macros, ("DLF_CPU_CAPABILITY", str(number))],
                include_dirs=ext.include_dirs,
                debug=self.debug,
                extra_postargs={"cxx": cxx + flags, "nvcc": []},
                depends=ext.depends,
            )
        # After the extension's own objects, and default before avx2 before avx512: where several objects hold a
        # copy of one inline function that is not in a per-variant namespace (a torch or libstdc++ template, say),
        # the linker keeps the first copy. So the copy that runs is compiled without ISA flags whenever one
        # exists, and an AVX2 copy is only ever called from AVX2 or AVX-512 code.
        ext.extra_objects = objects
        super().build_extension(ext)


define_macros = [("DLF_CPU_HIGHEST_VARIANT", str(CPU_VARIANTS[-1][1]))]
if WITH_CUDA:
    define_macros.append(("DLF_WITH_CUDA", None))
    nvcc_flags = ["-O3", "-std=c++20", "-lineinfo", "-Xptxas=--warn-on-spills"]
    if os.environ.get("DEEPLAB_FAST_PTXAS_REPORT"):
        nvcc_flags += ["-Xptxas", "-v"]
    ext = CUDAExtension(
        "deeplab_fast._C",
        cpp_sources + cuda_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        depends=CPU_KERNEL_SOURCES + headers + ["setup.py"],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=["-fopenmp"],
    )
else:
    ext = CppExtension(
        "deeplab_fast._C",
        cpp_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        depends=CPU_KERNEL_SOURCES + headers + ["setup.py"],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )

_variants = ", ".join(name for name, _, _ in CPU_VARIANTS)
print(
    f"deeplab_fast: building _C with {'CPU + CUDA' if WITH_CUDA else 'CPU only'} kernels ({WHY}); "
    f"CPU kernel variants: {_variants}",
    flush=True,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildWithCpuVariants.with_options(use_ninja=True)})
