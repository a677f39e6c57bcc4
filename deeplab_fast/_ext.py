"""Loads the compiled extension deeplab_fast._C, if it was built, and says what it holds."""

from __future__ import annotations

import functools

import torch

try:
    from deeplab_fast import _C  # noqa: F401  (importing registers the C++/CUDA ops)

    HAS_EXT = True
    EXT_ERROR: str | None = None
except ImportError as exc:  # not built: the reference and Triton backends remain
    HAS_EXT = False
    EXT_ERROR = str(exc)

BUILD_HINT = (
    "Build it from the repository root with: pip install --no-build-isolation -e . "
    "(or python setup.py build_ext --inplace); DEEPLAB_FAST_CUDA=1 forces the CUDA kernels."
)


def has_kernel(op: str, device_type: str) -> bool:
    """True if the extension registered a kernel for `deeplab_fast::<op>` on `device_type` ("cpu"/"cuda")."""
    if not HAS_EXT:
        return False
    return _has_kernel(op, device_type)


@functools.cache
def _has_kernel(op: str, device_type: str) -> bool:
    # The extension registers its kernels once, when it is imported; the dispatcher query costs ~5 us,
    # which every op call used to pay (a third of a small op's time).
    key = {"cpu": "CPU", "cuda": "CUDA"}[device_type]
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"deeplab_fast::{op}", key)


def built_with_cuda() -> bool:
    """True if deeplab_fast._C holds CUDA kernels (it can be true on a machine without a GPU)."""
    return has_kernel("dwconv_bn_act", "cuda")


def require_ext(backend: str) -> None:
    """Raise a RuntimeError that says how to build, if the extension is missing."""
    require_ext_for(f"backend={backend!r}")


def require_ext_for(what: str) -> None:
    """Raise a RuntimeError that says `what` (e.g. "cpu_capability()") needs the extension and how to build it, if
    the extension is missing."""
    if not HAS_EXT:
        raise RuntimeError(
            f"{what} needs the compiled extension deeplab_fast._C, which could not be imported ({EXT_ERROR}). "
            f"{BUILD_HINT}"
        )
