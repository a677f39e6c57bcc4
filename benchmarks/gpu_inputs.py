"""Inputs and eager baselines shared by the gpu_check stages (correctness, sanitizer subset, timings).

Inputs are drawn on their device from a seeded generator of that device (drawing the 138 M values of a
batch-16 ASPP input on the host would take seconds per case), so every stage and every run on the same kind
of device sees the same values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeplab_fast.ops.reference import apply_activation


def dtype_of(name: str) -> torch.dtype:
    """torch dtype of "float32", "float16" or "bfloat16"."""
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def memory_format(layout: str) -> torch.memory_format:
    """torch memory format of "nchw" or "channels_last"."""
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def generator(device: str, seed: int) -> torch.Generator:
    """A generator of `device` ("cpu", "cuda", "cuda:1") seeded with `seed`."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def dw_inputs(
    case, batch: int, dtype: torch.dtype, layout: str, device: str, *, seed: int = 0, misalign: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, weight, scale, shift) of a depthwise case: x (batch, C, H, W) with values in about [-3, 3],
    weight (C, 1, 3, 3), scale in [0.5, 1.5), shift (C,), all in `dtype` on `device`, x in `layout`.

    misalign: x starts one element into its storage, which breaks the 16-byte alignment of the vector packs
    (the kernels must take their unaligned path).
    """
    g = generator(device, seed)
    shape = (batch, case.channels, case.height, case.width)
    x = torch.randn(shape, generator=g, device=device) * 3
    weight = torch.randn(case.channels, 1, 3, 3, generator=g, device=device)
    scale = torch.rand(case.channels, generator=g, device=device) + 0.5
    shift = torch.randn(case.channels, generator=g, device=device)
    x = x.to(dtype).contiguous(memory_format=memory_format(layout))
    if misalign:
        shifted = torch.empty(x.numel() + 1, dtype=dtype, device=device)[1:].as_strided(x.shape, x.stride())
        x = shifted.copy_(x)
    return x, *(t.to(dtype) for t in (weight, scale, shift))


def up_inputs(case, batch: int, dtype: torch.dtype, layout: str, device: str, *, seed: int = 0) -> list[torch.Tensor]:
    """The inputs of a resize case, each (batch, C, H, W) in `dtype` and `layout` on `device`; for
    softmax_accumulate a second item, the float32 NCHW accumulator (batch, K, *size) with values in [0, 1)."""
    g = generator(device, seed)
    fmt = memory_format(layout)
    tensors = [
        (torch.randn((batch, *s), generator=g, device=device) * 4).to(dtype).contiguous(memory_format=fmt)
        for s in case.inputs
    ]
    if case.op == "softmax_accumulate":
        k = case.inputs[0][0]
        tensors.append(torch.rand((batch, k, *case.size), generator=g, device=device))
    return tensors


def eager_dw(x, weight, scale, shift, stride: int, dilation: int, activation: str = "relu") -> torch.Tensor:
    """PyTorch's own chain in x's dtype (depthwise conv, affine, activation): cuDNN on a GPU, oneDNN or ATen
    on a CPU. The yardstick of low-precision error, and the eager baseline of the timings (with BatchNorm
    folded into scale and shift, as our op takes it)."""
    y = F.conv2d(x, weight, stride=stride, padding=dilation, dilation=dilation, groups=x.shape[1])
    return apply_activation(y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), activation)


def eager_up(op: str, tensors: list[torch.Tensor], size: tuple[int, int], align_corners: bool = False):
    """PyTorch's own resize chain in the inputs' dtype: interpolate + cat, interpolate + argmax, or
    accum += 0.5 * softmax(interpolate(logits)) (for softmax_accumulate, `tensors` is [logits, accum])."""
    if op == "concat":
        return torch.cat(
            [F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners) for t in tensors], 1
        )
    if op == "argmax":
        return F.interpolate(tensors[0], size=size, mode="bilinear", align_corners=align_corners).argmax(1)
    logits, accum = tensors
    up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=align_corners)
    return accum.add_(torch.softmax(up, 1), alpha=0.5)
