"""The compiled extension: CUDA kernels present when built with CUDA, the emulated CUDA kernels (backend "cuda_emu")
in every build, and no register spills in any kernel.

Honest CI: where the extension is expected (the `CI` environment variable is set, or DEEPLAB_FAST_CUDA=1 asks for
the CUDA kernels), a missing extension or nvcc fails these tests instead of skipping them."""

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
from deeplab_fast.ops._backend import CUDA_EMU_OPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("80", "90")
REPORT = os.path.join(ROOT, "build", "ptxas_report.txt")
# The ops with CUDA kernels (and so with emulated twins, `<op>_cuda_emu`).
CUDA_OPS = (*CUDA_EMU_OPS, "dwconv_bn_act_backward")


def _cuda_requested() -> bool:
    return os.environ.get("DEEPLAB_FAST_CUDA") == "1"


def _ext_expected() -> bool:
    """Whether this run must have the compiled extension: in CI, or when the CUDA kernels were asked for."""
    return bool(os.environ.get("CI")) or _cuda_requested()


def _require_ext() -> None:
    """Fail where the extension is expected and missing; skip elsewhere (DEEPLAB_FAST_TEST_WITHOUT_EXT=1 runs)."""
    if _ext.HAS_EXT:
        return
    message = f"deeplab_fast._C is not built ({_ext.EXT_ERROR})"
    if _ext_expected():
        pytest.fail(f"{message}, but CI or DEEPLAB_FAST_CUDA=1 expects it")
    pytest.skip(message)


def _nvcc() -> str | None:
    """The real nvcc (setup.py's CUDA_HOME detection), or None where the toolkit is absent."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc")


@pytest.mark.parametrize("env", [{"CI": "true"}, {"DEEPLAB_FAST_CUDA": "1"}, {}], ids=["ci", "cuda", "local"])
def test_missing_extension_fails_where_expected(monkeypatch, env):
    """In CI or with DEEPLAB_FAST_CUDA=1 a missing extension is a failure; elsewhere these tests skip."""
    monkeypatch.setattr(_ext, "HAS_EXT", False)
    monkeypatch.setattr(_ext, "EXT_ERROR", "simulated")
    for name in ("CI", "DEEPLAB_FAST_CUDA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    outcome = pytest.fail.Exception if env else pytest.skip.Exception
    with pytest.raises(outcome, match=r"deeplab_fast._C is not built \(simulated\)"):
        _require_ext()


def test_cuda_kernels_all_or_none():
    """A CUDA build (or one DEEPLAB_FAST_CUDA=1 asked for) holds a CUDA kernel for every op that has one; a
    CPU-only build holds none (no half-built extension)."""
    _require_ext()
    present = {op: _ext.has_kernel(op, "cuda") for op in CUDA_OPS}
    if _cuda_requested() or deeplab_fast.built_with_cuda():
        missing = [op for op, has in present.items() if not has]
        assert not missing, f"deeplab_fast::{missing} have no CUDA kernel in this build"
        assert deeplab_fast.built_with_cuda()
    else:
        assert not any(present.values()), f"a CPU-only build registers CUDA kernels: {present}"


def test_cpu_kernels_registered():
    _require_ext()
    for op in CUDA_OPS:
        assert _ext.has_kernel(op, "cpu"), f"deeplab_fast::{op} has no CPU kernel in this build"


def test_emulated_cuda_kernels_in_every_build():
    """The host emulation of the CUDA kernels needs no nvcc: every build holds the `<op>_cuda_emu` CPU kernels."""
    _require_ext()
    for op in CUDA_OPS:
        assert _ext.has_kernel(f"{op}_cuda_emu", "cpu"), f"deeplab_fast::{op}_cuda_emu has no CPU kernel"


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
        if _cuda_requested():
            pytest.fail("DEEPLAB_FAST_CUDA=1 asks for the CUDA kernels, but nvcc is not installed")
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
