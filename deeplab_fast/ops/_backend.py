"""Backend choice shared by every fused op: "auto", "cuda", "cpu", "triton", "reference"."""

from __future__ import annotations

import os

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


def resolve_backend(backend: str, device: torch.device, op: str) -> str:
    """Map a user's `backend` argument to the concrete backend for tensors on `device`.

    Raises ValueError for an unknown name and RuntimeError for a backend this machine or build cannot
    run, naming the argument and what would work.
    """
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
