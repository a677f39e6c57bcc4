"""Backend choice shared by every fused op: "auto", "cuda", "cpu", "triton", "reference"."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from deeplab_fast import _ext

BACKENDS = ("auto", "cuda", "cpu", "triton", "reference")


def triton_available(device: torch.device) -> tuple[bool, str]:
    """Whether Triton kernels can run on tensors of `device`, and why not if they cannot."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "the triton package is not installed (pip install triton==3.8.0)"
    if device.type == "cuda":
        return True, ""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, (
        f"Triton kernels need CUDA tensors (got a {device.type} tensor); on a CPU they run only "
        "through the interpreter, with TRITON_INTERPRET=1 set before deeplab_fast is imported"
    )


# Successful resolutions, by (backend, device type, device index, op): every op call resolves its
# backend, and the checks behind it (dispatcher queries, a triton import) cost as much as a small op's
# kernel. Errors are not cached (they are raised anew each time), nor is backend="triton", whose answer
# on a CPU depends on TRITON_INTERPRET at call time.
_RESOLVED: dict[tuple, str] = {}


def resolve_backend(backend: str, device: torch.device, op: str) -> str:
    """Map a user's `backend` argument to the concrete backend for tensors on `device`.

    Raises ValueError for an unknown name and RuntimeError for a backend this machine or build cannot
    run, naming the argument and what would work.
    """
    key = (backend, device.type, device.index, op)
    try:
        return _RESOLVED[key]
    except (KeyError, TypeError):  # TypeError: an unhashable `backend`, which the checks below reject
        pass
    chosen = _resolve(backend, device, op)
    if backend != "triton":
        _RESOLVED[key] = chosen
    return chosen


def _resolve(backend: str, device: torch.device, op: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if device.type in ("cpu", "cuda") and _ext.has_kernel(op, device.type):
            return device.type
        if device.type == "cuda" and triton_available(device)[0]:
            return "triton"
        return "reference"
    if backend == "reference":
        return backend
    if backend == "triton":
        ok, why = triton_available(device)
        if not ok:
            raise RuntimeError(f"backend='triton' is unavailable for {op}: {why}")
        return backend
    # cpu / cuda: compiled kernels
    if device.type != backend:
        raise RuntimeError(
            f"backend={backend!r} runs on {backend} tensors, but the input of {op} is on {device}; "
            f"move the tensors or use backend='auto'"
        )
    _ext.require_ext(backend)
    if not _ext.has_kernel(op, backend):
        if backend == "cuda":
            raise RuntimeError(
                f"backend='cuda' is unavailable for {op}: deeplab_fast._C was built without CUDA kernels. "
                f"Rebuild with nvcc on PATH (DEEPLAB_FAST_CUDA=1). {_ext.BUILD_HINT}"
            )
        raise RuntimeError(f"backend={backend!r} has no kernel for {op} in this build. {_ext.BUILD_HINT}")
    return backend


def run_op(op: Callable[..., Any], *args: Any) -> Any:
    """Call the custom op `op` (a torch.ops.deeplab_fast.* overload packet) on `args`.

    With gradients off (torch.no_grad, inference_mode) and outside torch.compile, the call goes straight
    below the Autograd dispatch key: the autograd formulas these ops register from Python would otherwise
    run a Python redispatch on every call (~6 us) only to find there is nothing to record.
    """
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    return op(*args)
