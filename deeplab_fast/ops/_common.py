"""One helper per meaning for the ops: activation names and codes, memory formats, dtype names, argument
types. Messages follow the C++ checks (csrc/common/checks.h): sizes print as [a, b], dtypes by their torch
names, devices as str(torch.device)."""

from __future__ import annotations

import torch

# Activation name -> code of the C++/CUDA/Triton kernels (csrc/common/host_device.h), and back.
ACTIVATIONS: dict[str, int] = {"none": 0, "relu": 1, "relu6": 2}
ACTIVATION_NAMES: dict[int, str] = {code: name for name, code in ACTIVATIONS.items()}

# Largest value an int argument of an op schema can carry (int64).
INT64_MAX = 2**63 - 1


def activation_code(activation: object) -> int:
    """The kernel code of an activation name ("none", "relu", "relu6"); ValueError for anything else."""
    if type(activation) is str:
        code = ACTIVATIONS.get(activation)
        if code is not None:
            return code
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


def is_channels_last(t: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels_last (and not also plain contiguous)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """torch.channels_last for a channels_last 4-D tensor, else torch.contiguous_format (outputs follow it)."""
    return torch.channels_last if is_channels_last(t) else torch.contiguous_format


def dtype_name(dtype: torch.dtype) -> str:
    """ "float32" for torch.float32: the name the C++ checks print."""
    return str(dtype).removeprefix("torch.")


def sizes(t: torch.Tensor) -> str:
    """A tensor's shape as the C++ checks print it: [2, 3, 4]."""
    return str(list(t.shape))


def check_tensor(t: object, name: str) -> None:
    """TypeError naming `name` unless `t` is a torch.Tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_optional_tensor(t: object, name: str) -> None:
    """TypeError naming `name` unless `t` is a torch.Tensor or None."""
    if t is not None and not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")


def check_dilation(dilation: object) -> None:
    """ValueError unless `dilation` is a Python int in [1, 2**63 - 1] (bools and floats are not)."""
    if type(dilation) is not int or dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
    if dilation > INT64_MAX:  # the op schemas carry int64; any dilation >= max(H, W) gives the same result
        raise ValueError(f"dilation must be an int >= 1 that fits an int64 (at most 2**63 - 1), got {dilation}")


def check_same(t: torch.Tensor, x: torch.Tensor, name: str, x_name: str = "x") -> None:
    """ValueError unless `t` has x's dtype and device (dtype first, as the C++ checks)."""
    if t.dtype != x.dtype:
        raise ValueError(f"{name} must have {x_name}'s dtype {dtype_name(x.dtype)}, got {dtype_name(t.dtype)}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on {x_name}'s device {x.device}, got {t.device}")


def same_out_size(size: int, stride: int) -> int:
    """Output size of a "same"-padded conv with an odd kernel along a side of `size`: ceil(size / stride)
    (0 for an empty side), whatever the dilation."""
    return (size - 1) // stride + 1


def effective_dilation(dilation: int, height: int, width: int) -> int:
    """The dilation a "same"-padded conv runs with: a dilation of at least max(H, W) leaves only the centre
    tap inside the map, so max(H, W) gives the same result without overflowing the padding arithmetic."""
    return min(dilation, max(height, width, 1))
