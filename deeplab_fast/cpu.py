"""Which instruction-set variant of the CPU kernels runs, and what this CPU offers.

deeplab_fast._C holds its CPU kernels several times, each compiled for one instruction set: "default" (portable,
any CPU), "avx2" (AVX2 + FMA + F16C) and "avx512" (AVX-512 F/BW/VL/DQ), the last two on x86-64 builds only. At
import the best one this CPU (and its OS) can run is chosen from cpuid; the build machine's CPU decides nothing.

    >>> import deeplab_fast
    >>> deeplab_fast.cpu_capability()  # doctest: +SKIP
    'avx2'

Tests force a lower variant with `deeplab_fast.testing.cpu_capability(name)`.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

from deeplab_fast import _ext

__all__ = ["CPU_CAPABILITIES", "cpu_capability", "cpu_info"]

# Lowest first: each variant needs everything the one before it needs.
CPU_CAPABILITIES = ("default", "avx2", "avx512")
# What each variant needs of the CPU, in words and as cpu_info()["isa"] flags.
_NEEDS = {
    "avx2": ("AVX2, FMA and F16C", ("avx2", "fma", "f16c")),
    "avx512": ("AVX-512", ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq")),
}
# The variant in use, as set through _set_cpu_capability (None until first asked). Kept here so that callers on a
# hot path (the packed-weight width of deeplab_fast.ops.dwconv) can key a cache on it without a dispatcher call.
_current: str | None = None


def cpu_capability() -> str:
    """The variant of the CPU kernels in use: "default", "avx2" or "avx512".

    The best one this CPU and build support unless `deeplab_fast.testing.cpu_capability` forces a lower one.
    Needs deeplab_fast._C (a RuntimeError that says how to build it otherwise).
    """
    global _current
    _ext.require_ext_for("cpu_capability()")
    _current = torch.ops.deeplab_fast.cpu_capability()
    return _current


def cpu_info() -> dict[str, Any]:
    """What the CPU kernels run on, for benchmark records and bug reports.

    Returns a dict:
        capability: str, the variant in use (cpu_capability()).
        supported: tuple of str, the variants this CPU and build can run, lowest first.
        isa: sorted list of str, the ISA extensions cpuid reports and the OS enables, among "avx", "avx2", "fma",
            "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16", "avx512_fp16",
            "amx_tile", "amx_bf16", "amx_int8" (empty on CPUs other than x86-64).
        amx: bool, AMX tiles with bf16 ("amx_tile" and "amx_bf16").
        bf16_native: bool, oneDNN runs bf16 natively here (torch.ops.mkldnn._is_mkldnn_bf16_supported()).
        cpu: str, the CPU's model name.
    Needs deeplab_fast._C.
    """
    capability = cpu_capability()
    isa = sorted(torch.ops.deeplab_fast.cpu_isa_flags())
    return {
        "capability": capability,
        "supported": supported_cpu_capabilities(),
        "isa": isa,
        "amx": "amx_tile" in isa and "amx_bf16" in isa,
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cpu": _cpu_model_name(),
    }


def supported_cpu_capabilities() -> tuple[str, ...]:
    """The variants of the CPU kernels this CPU and build can run, lowest first ("default" always). Needs
    deeplab_fast._C."""
    _ext.require_ext_for("supported_cpu_capabilities()")
    return tuple(torch.ops.deeplab_fast.cpu_capabilities())


def unsupported_reason(name: str) -> str | None:
    """None if this CPU and build can run variant `name`, else why not, e.g. "needs a CPU with AVX-512 (this CPU:
    avx2)". `name` must be one of CPU_CAPABILITIES (ValueError otherwise). Needs deeplab_fast._C."""
    _check_name(name)
    supported = supported_cpu_capabilities()
    if name in supported:
        return None
    words, flags = _NEEDS[name]
    if set(flags) <= set(torch.ops.deeplab_fast.cpu_isa_flags()):
        return f"this build of deeplab_fast._C has no {name!r} CPU kernels (they are built on x86-64 only)"
    return f"needs a CPU with {words} (this CPU: {supported[-1]})"


def _set_cpu_capability(name: str) -> None:
    """Make variant `name` the one in use, process-wide (deeplab_fast.testing.cpu_capability is the public way).
    ValueError naming `name` when it is unknown or this CPU / build cannot run it."""
    global _current
    reason = unsupported_reason(name)
    if reason is not None:
        supported = ", ".join(map(repr, supported_cpu_capabilities()))
        raise ValueError(f"name={name!r} cannot be forced: {reason}; supported here: {supported}")
    torch.ops.deeplab_fast.set_cpu_capability(name)
    _current = name


def current_key() -> str | None:
    """The variant in use as set through this module, read from the extension once, then without a dispatcher call:
    a cache key for values that depend on the variant (packed-weight widths). None without deeplab_fast._C."""
    if _current is None and _ext.HAS_EXT:
        return cpu_capability()
    return _current


def _check_name(name: object) -> None:
    if name not in CPU_CAPABILITIES:
        raise ValueError(f"name must be one of {', '.join(map(repr, CPU_CAPABILITIES))}, got {name!r}")


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
