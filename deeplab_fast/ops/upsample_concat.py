"""Fused bilinear resize + channel concatenation: Python API, checks, backends, fake impl, autograd.

Semantics: deeplab_fast.ops.reference.upsample_concat_reference. The kernels (csrc/kernels/upsample.h,
deeplab_fast/kernels/triton/upsample.py) write every output element once.

Gradient: the resize backward is a scatter (each input pixel receives from every output pixel whose
taps touch it). It is computed per input by ATen's `upsample_bilinear2d_backward` on the matching
channel slice of the output gradient (ATen's own CPU kernel and its CUDA fp32-atomics kernel), which is
exactly the VJP of the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deeplab_fast import _ext
from deeplab_fast.ops._backend import run_op
from deeplab_fast.ops.reference import upsample_concat_reference
from deeplab_fast.ops.upsample_checks import (
    check_align_corners,
    check_size,
    check_tensor_list,
    choose_backend,
    is_channels_last,
)


def upsample_concat(
    tensors: Sequence[torch.Tensor], size: tuple[int, int], *, align_corners: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """Resize each (N, C_i, H_i, W_i) input bilinearly to `size` and concatenate along channels.

    Args:
        tensors: 1 to 8 tensors with the same N, dtype (float32/float16/bfloat16) and device; each is
            resized exactly as F.interpolate(mode="bilinear", align_corners=...) does (1x1 inputs are a
            broadcast, inputs already at `size` a copy, smaller sizes a bilinear downsample).
        size: (H, W) of the output, two positive ints.
        align_corners: as in F.interpolate.
        backend: "auto" (C++ kernels for CPU and CUDA tensors), "cuda", "cpu", "triton" or "reference".

    Returns:
        (N, sum C_i, H, W) tensor in the inputs' dtype, in the first input's memory format (NCHW or
        channels_last). Differentiable with respect to every input.
    """
    tensors = check_tensor_list(tensors)
    size = check_size(size)
    align_corners = check_align_corners(align_corners)
    chosen = choose_backend(backend, tensors[0].device, "upsample_concat")
    if chosen == "reference":
        return upsample_concat_reference(tensors, size, align_corners)
    if chosen == "triton":
        from deeplab_fast.kernels.triton import upsample as triton_impl

        return triton_impl.upsample_concat_triton(tensors, list(size), align_corners)
    return run_op(torch.ops.deeplab_fast.upsample_concat, tensors, list(size), align_corners)


def fake_output(tensors: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """Empty output of the right shape, dtype, device and memory format (for fake/meta tensors)."""
    first = tensors[0]
    fmt = torch.channels_last if is_channels_last(first) else torch.contiguous_format
    channels = sum(t.shape[1] for t in tensors)
    return first.new_empty((first.shape[0], channels, size[0], size[1])).contiguous(memory_format=fmt)


def _setup_context(ctx, inputs, output) -> None:
    tensors, size, align_corners = inputs
    ctx.shapes = [tuple(t.shape) for t in tensors]
    ctx.size = list(size)
    ctx.align_corners = align_corners


def _resize_backward(g: torch.Tensor, in_shape: Sequence, size: list, align_corners: bool) -> torch.Tensor:
    """Gradient of bilinear resize (in_shape -> size) for the output gradient `g`."""
    if all(isinstance(s, int) for s in in_shape):
        return torch.ops.aten.upsample_bilinear2d_backward.default(g, size, list(in_shape), align_corners, None, None)
    # Symbolic shapes (tracing with dynamic sizes): the same VJP through F.interpolate's autograd formula,
    # since the ATen op rejects lists that mix symbolic and plain ints.
    x = g.new_zeros(in_shape)
    _, vjp = torch.func.vjp(lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners), x)
    return vjp(g.contiguous())[0]


def _backward(ctx, grad_out: torch.Tensor):
    grads = []
    offset = 0
    for shape in ctx.shapes:
        g = grad_out[:, offset : offset + shape[1]]
        offset += shape[1]
        grads.append(_resize_backward(g, shape, ctx.size, ctx.align_corners))
    return grads, None, None


def register_autograd(op_name: str) -> None:
    """Attach the concat backward (above) to `op_name` (the C++ op and the Triton op share it)."""
    torch.library.register_autograd(op_name, _backward, setup_context=_setup_context)


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::upsample_concat")
    def _(tensors, size, align_corners):
        return fake_output(tensors, size)

    register_autograd("deeplab_fast::upsample_concat")
