"""Build deeplab_fast._C: the CPU sources always, the CUDA sources when they can be built.

Environment:
  DEEPLAB_FAST_CUDA=auto (default)  build CUDA when a CUDA build of torch and nvcc are found
  DEEPLAB_FAST_CUDA=0               CPU only
  DEEPLAB_FAST_CUDA=1               CUDA required: fail with the reason if it cannot be built
  TORCH_CUDA_ARCH_LIST              defaults to "8.0;9.0" (needed when no GPU is visible)
  DEEPLAB_FAST_PTXAS_REPORT=1       also pass -Xptxas -v (per-kernel report: benchmarks/cuda_resources.py)
"""

from __future__ import annotations

import glob
import os
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

cpp_sources = sorted(
    glob.glob(os.path.join("csrc", "*.cpp"))
    + glob.glob(os.path.join("csrc", "ops", "*.cpp"))
    + glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
    # the CUDA kernels' host emulation (backend "cuda_emu"): built with every build, no nvcc needed
    + glob.glob(os.path.join("csrc", "emu", "*.cpp"))
)
cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))

cxx_flags = ["-O3", "-g0", "-std=c++20", "-fopenmp"]
# The CPU bodies are vectorized for AVX2+FMA through the compiler (see csrc/common/vec.h); the
# wheel then needs an AVX2 CPU (every x86-64 server since 2013). Opt out with DEEPLAB_FAST_AVX2=0.
if os.environ.get("DEEPLAB_FAST_AVX2", "1") != "0" and os.uname().machine in ("x86_64", "AMD64"):
    cxx_flags += ["-mavx2", "-mfma", "-mf16c"]
define_macros = []
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
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=["-fopenmp"],
    )
else:
    ext = CppExtension(
        "deeplab_fast._C",
        cpp_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )

print(f"deeplab_fast: building _C with {'CPU + CUDA' if WITH_CUDA else 'CPU only'} kernels ({WHY})", flush=True)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
