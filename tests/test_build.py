"""The compiled extension: CUDA kernels present when built with CUDA, the emulated CUDA kernels (backend "cuda_emu")
in every build (register spills: tests/test_cuda_resources.py).

Honest CI: where the extension is expected (the `CI` environment variable is set, or DEEPLAB_FAST_CUDA=1 asks for
the CUDA kernels), a missing extension or nvcc fails these tests instead of skipping them."""

from __future__ import annotations

import os

import pytest

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.ops._backend import CUDA_EMU_OPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
