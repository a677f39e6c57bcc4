"""The compiled extension: CUDA kernels present when built with CUDA, and no register spills in any kernel."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import deeplab_fast
from deeplab_fast import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("80", "90")
REPORT = os.path.join(ROOT, "build", "ptxas_report.txt")


def _nvcc() -> str | None:
    """The real nvcc (setup.py's CUDA_HOME detection), or None where the toolkit is absent."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc")


def test_extension_holds_cuda_kernels_when_built_with_cuda():
    if not _ext.HAS_EXT:
        pytest.skip(f"deeplab_fast._C is not built ({_ext.EXT_ERROR})")
    if os.environ.get("DEEPLAB_FAST_CUDA") != "1" and not deeplab_fast.built_with_cuda():
        pytest.skip("this build is CPU-only (DEEPLAB_FAST_CUDA=1 makes CUDA kernels mandatory)")
    for op in ("dwconv_bn_act", "dwconv_bn_act_backward"):
        assert _ext.has_kernel(op, "cuda"), f"deeplab_fast::{op} has no CUDA kernel in this build"
        assert _ext.has_kernel(op, "cpu"), f"deeplab_fast::{op} has no CPU kernel in this build"
    assert deeplab_fast.built_with_cuda()


def test_cpu_kernels_registered():
    if not _ext.HAS_EXT:
        pytest.skip(f"deeplab_fast._C is not built ({_ext.EXT_ERROR})")
    assert _ext.has_kernel("dwconv_bn_act", "cpu") and _ext.has_kernel("dwconv_bn_act_backward", "cpu")


_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")


def _start_compile(nvcc: str, source: str, arch: str, out_dir: str) -> subprocess.Popen:
    from torch.utils.cpp_extension import include_paths

    includes = [os.path.join(ROOT, "csrc")] + include_paths()
    cmd = [nvcc, "-cubin", "-O3", "-std=c++20", f"-arch=sm_{arch}", "-Xptxas", "-v", "-DDLF_WITH_CUDA"]
    cmd += [f"-I{p}" for p in includes]
    cmd += ["-o", os.path.join(out_dir, f"{os.path.basename(source)}.sm_{arch}.cubin"), source]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_ptxas_no_register_spills():
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    assert sources, "no CUDA sources found"
    lines: list[str] = []
    spills: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        # One nvcc per (source, arch), run side by side.
        jobs = [(src, arch, _start_compile(nvcc, src, arch, tmp)) for src in sources for arch in ARCHS]
        for source, arch, proc in jobs:
            text, _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"nvcc failed on {source} for sm_{arch}:\n{text[-4000:]}"
            lines.append(f"### {os.path.relpath(source, ROOT)} sm_{arch}")
            lines.append(text.strip())
            entry = None
            for line in text.splitlines():
                m = _ENTRY.search(line)
                if m:
                    entry = f"{m.group(1)} ({m.group(2)})"
                m = _SPILL.search(line)
                if m and (int(m.group(1)) or int(m.group(2))):
                    spills.append(f"{os.path.basename(source)}: {entry}: {line.strip()}")
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(REPORT), prefix=".tmp-ptxas")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp_path, REPORT)
    assert not spills, "kernels spill registers (see build/ptxas_report.txt):\n" + "\n".join(spills)
