"""The compiled extension: CUDA kernels present when built with CUDA, the emulated CUDA kernels (backend "cuda_emu")
in every build (register spills: tests/test_cuda_resources.py).

Honest CI: where the extension is expected (the `CI` environment variable is set, or DEEPLAB_FAST_CUDA=1 asks for
the CUDA kernels), a missing extension or nvcc fails these tests instead of skipping them."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

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


# A function of a CPU kernel variant: its mangled name holds dlf::cpu_<variant> (launchers, their local functions and
# lambdas, templates instantiated on them) or the variant's inline namespace dlf::host_<variant> (shared bodies).
_VARIANT_SYMBOL = re.compile(r"(?:cpu|host)_(default|avx512|avx2)")


def _functions_using_vector_registers(path: str) -> dict[str, set[str]]:
    """{function symbol: the widest vector register files it uses, among "ymm" and "zmm"} from `objdump -d`."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed (binutils): the instruction check needs it")
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", path], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    found: dict[str, set[str]] = {}
    symbol = ""
    for line in listing.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            symbol = head.group(1)
            continue
        for reg in ("ymm", "zmm"):
            if "%" + reg in line:
                found.setdefault(symbol, set()).add(reg)
    return found


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the ISA variants are x86-64's")
def test_only_the_isa_variants_hold_avx_code():
    """The extension runs on any x86-64 CPU: no function outside the avx2/avx512 variants uses a YMM or ZMM register
    (the default variant and every other translation unit are compiled without ISA flags, and the linker keeps their
    copies of shared inline functions). The avx2 variant uses YMM and no ZMM; the avx512 variant uses ZMM: on a
    machine without AVX-512 this is the evidence that it is built."""
    _require_ext()
    from deeplab_fast import _C

    by_variant: dict[str, set[str]] = {"default": set(), "avx2": set(), "avx512": set(), "": set()}
    offenders = []
    for symbol, regs in _functions_using_vector_registers(_C.__file__).items():
        match = _VARIANT_SYMBOL.search(symbol)
        variant = match.group(1) if match else ""
        by_variant[variant] |= regs
        if variant in ("default", ""):
            offenders.append(f"{symbol}: {sorted(regs)}")
    assert not offenders, "AVX code outside the avx2/avx512 variants:\n" + "\n".join(offenders[:20])
    assert by_variant["avx2"] == {"ymm"}, f"avx2 variant uses {sorted(by_variant['avx2'])}"
    assert "zmm" in by_variant["avx512"], "the avx512 variant holds no ZMM code"
