"""Argument checks shared by the three bilinear-resize ops (upsample_concat, upsample_argmax,
upsample_softmax_accumulate): every message names the argument and what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deeplab_fast.ops._backend import resolve_backend

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_CONCAT_INPUTS = 8


def check_size(size: object) -> tuple[int, int]:
    """`size` as (H, W): a sequence of two positive Python ints (torch.Size is fine)."""
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def check_float_4d(t: object, name: str) -> torch.Tensor:
    """A 4-D (N, C, H, W) float32/float16/bfloat16 tensor with positive H and W."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be a 4-D (N, C, H, W) tensor, got {t.dim()}-D with shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if t.shape[2] <= 0 or t.shape[3] <= 0:
        raise ValueError(f"{name} must have positive height and width, got shape {tuple(t.shape)}")
    return t


def check_tensor_list(tensors: object) -> list[torch.Tensor]:
    """1..8 tensors (N, C_i, H_i, W_i) with the same N, dtype and device."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("tensors must hold at least one tensor, got an empty sequence")
    if len(tensors) > MAX_CONCAT_INPUTS:
        raise ValueError(f"tensors must hold at most {MAX_CONCAT_INPUTS} tensors, got {len(tensors)}")
    first = tensors[0]
    check_float_4d(first, "tensors[0]")
    n, dtype, device = first.shape[0], first.dtype, first.device
    for i in range(1, len(tensors)):
        t = tensors[i]
        # one pass over each tensor's attributes: these checks run on every call of a sub-millisecond op
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.dtype is not dtype:
            check_float_4d(t, f"tensors[{i}]")
            raise ValueError(f"tensors[{i}] has dtype {t.dtype} but tensors[0] has {dtype}")
        shape = t.shape
        if shape[2] <= 0 or shape[3] <= 0:
            check_float_4d(t, f"tensors[{i}]")
        if shape[0] != n:
            raise ValueError(f"tensors[{i}] has batch size {shape[0]} but tensors[0] has {n}")
        if t.device != device:
            raise ValueError(f"tensors[{i}] is on {t.device} but tensors[0] is on {device}")
    return tensors


def check_align_corners(align_corners: object) -> bool:
    """align_corners must be a bool."""
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be a bool, got {align_corners!r}")
    return align_corners


def is_channels_last(t: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels_last (and not also plain contiguous)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


@torch.compiler.assume_constant_result
def _resolve_cached(backend: str, device_type: str, device_index: int, op: str) -> str:
    return resolve_backend(
        backend, torch.device(device_type, device_index) if device_index >= 0 else torch.device(device_type), op
    )


def choose_backend(backend: object, device: torch.device, op: str) -> str:
    """resolve_backend, evaluated once at trace time under torch.compile (it queries the dispatcher,
    which Dynamo cannot trace into)."""
    if not isinstance(backend, str):
        return resolve_backend(backend, device, op)  # raises the ValueError naming the argument
    return _resolve_cached(backend, device.type, -1 if device.index is None else device.index, op)
