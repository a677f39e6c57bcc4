"""The one autocast rule of deeplab_fast's ops and fused modules (CPU and CUDA alike).

Under torch.autocast (eager mode), on the device type of an op's tensors:

- dwconv_bn_act and dwconv_bn_act_packed are "lower precision" ops, as torch's conv2d is: their floating
  activation input is cast to the autocast dtype (and, for dwconv_bn_act, the weight, scale and shift too; the
  packed op's float32 parameters stay float32), and they return the autocast dtype (accumulating in float32).
- upsample_concat "promotes", as torch.cat does under autocast: inputs of different floating dtypes are cast to
  the widest of them; inputs of one dtype run in it.
- upsample_argmax and upsample_softmax_accumulate run in their inputs' dtype (they accumulate in float32).

float64 tensors are never cast (as torch's autocast leaves them). Each op then runs with autocast off, so every
backend (the C++ kernels, the CUDA emulation, Triton, the PyTorch reference) computes in the same dtype. The
fused modules of optimize() follow the same rule through autocast_dtype() (FusedConv, FusedDWConv). Under
torch.compile autocast's own rules apply: the custom ops then run in their inputs' dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype ops and fused modules compute in under torch.autocast on `device_type` ("cpu", "cuda"), or
    None outside autocast (and under torch.compile, where autocast's own rules apply)."""
    if torch.compiler.is_compiling() or not torch.amp.is_autocast_available(device_type):
        return None  # (meta tensors, for one, have no autocast)
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_eligible(t: object) -> bool:
    """Whether autocast casts tensor `t`: a floating tensor other than float64 (torch's own rule)."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def cast_eligible(t: T, dtype: torch.dtype) -> T:
    """`t` cast to `dtype` if autocast_eligible, else `t` itself (non-tensors too: the op's checks name them)."""
    if autocast_eligible(t) and t.dtype != dtype:  # type: ignore[union-attr]
        return t.to(dtype)  # type: ignore[union-attr]
    return t


def promoted_dtype(tensors: list[torch.Tensor]) -> torch.dtype | None:
    """The widest dtype of the autocast-eligible tensors when they differ (what autocast's promote rule casts
    them to), else None."""
    dtypes = {t.dtype for t in tensors if autocast_eligible(t)}
    if len(dtypes) < 2:
        return None
    wide = dtypes.pop()
    for d in dtypes:
        wide = torch.promote_types(wide, d)
    return wide


@contextlib.contextmanager
def autocast_off(device_type: str) -> Iterator[None]:
    """Run the block with autocast disabled on `device_type` (the op has already cast its inputs)."""
    with torch.autocast(device_type, enabled=False):
        yield
