"""The three fused bilinear-resize ops: Python API, checks, backends, fake impls, autograd.

- upsample_concat: resize each input to one size and concatenate along channels (differentiable).
- upsample_argmax: labels of the resized logits, never materialized (inference only).
- upsample_softmax_accumulate: accum += weight * softmax of the resized (optionally flipped) logits, in
  place (multi-scale and flip inference; inference only).

Semantics: the *_reference functions of deeplab_fast.ops.reference. The compiled ops are in
csrc/ops/upsample_ops.cpp (per-pixel math in csrc/kernels/upsample.h); the Triton ops
(`deeplab_fast::upsample_*_triton`) are registered here on first use around the launchers of
deeplab_fast/kernels/triton/upsample.py.

Gradient of upsample_concat: each input pixel receives from every output pixel whose taps touch it. On CUDA
tensors (and in the "cuda_emu" twin) the op `deeplab_fast::upsample_concat_backward` computes it as a gather:
one thread per input pixel and channel pack sums over those outputs, no atomics, so it is deterministic. On
other devices (and for symbolic shapes) it is ATen's `upsample_bilinear2d_backward` on the matching channel
slice of the output gradient. Both are the VJP of the reference up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deeplab_fast import _ext
from deeplab_fast.ops._autocast import autocast_dtype, autocast_off, cast_eligible, promoted_dtype
from deeplab_fast.ops._backend import check_cuda_emu_input, registered_on_first_use, resolve_backend, run_op
from deeplab_fast.ops._common import check_tensor, dtype_name, memory_format_of, sizes
from deeplab_fast.ops.reference import (
    upsample_argmax_reference,
    upsample_concat_reference,
    upsample_softmax_accumulate_reference,
)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_CONCAT_INPUTS = 8

# ----------------------------------------------------------------------------------------------- checks
# Arguments are checked once. The Python API checks what the op schemas cannot say (argument types); the
# compiled ops check values in C++ (csrc/ops/upsample_ops.cpp), and the check_*_values functions below say
# the same, in the same order and words, for the reference and Triton backends and the fake impls.


def check_size(size: object) -> tuple[int, int]:
    """`size` as (H, W): a sequence of two Python ints (torch.Size is fine); positivity is a value check."""
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def check_tensor_list(tensors: object) -> list[torch.Tensor]:
    """`tensors` as a list: a non-empty list or tuple whose items are all tensors (the dispatcher needs one)."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list or tuple of tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("tensors must hold at least one tensor, got an empty sequence")
    for i, t in enumerate(tensors):
        check_tensor(t, f"tensors[{i}]")
    return tensors


def check_align_corners(align_corners: object) -> bool:
    """align_corners must be a bool."""
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be a bool, got {align_corners!r}")
    return align_corners


def _check_size_values(size: Sequence[int]) -> None:
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"size must be two positive ints (H, W), got {list(size)}")


def _check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {dtype_name(t.dtype)}")


def _check_4d(t: torch.Tensor, name: str) -> None:
    if t.dim() != 4:
        raise ValueError(f"{name} must be a 4-D tensor, got {t.dim()}-D with shape {sizes(t)}")


def _check_positive_hw(t: torch.Tensor, name: str) -> None:
    if t.shape[2] <= 0 or t.shape[3] <= 0:
        raise ValueError(f"{name} must have positive height and width, got shape {sizes(t)}")


def check_concat_values(tensors: Sequence[torch.Tensor], size: Sequence[int]) -> None:
    """The C++ check of upsample_concat's tensors and size."""
    if not tensors:
        raise ValueError("tensors must hold at least one tensor, got an empty sequence")
    if len(tensors) > MAX_CONCAT_INPUTS:
        raise ValueError(f"tensors must hold at most {MAX_CONCAT_INPUTS} tensors, got {len(tensors)}")
    _check_size_values(size)
    first = tensors[0]
    for i, t in enumerate(tensors):
        name = f"tensors[{i}]"
        if t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D (N, C, H, W) tensor, got shape {sizes(t)}")
        _check_float(t, name)
        if t.shape[0] != first.shape[0]:
            raise ValueError(f"{name} has batch size {t.shape[0]} but tensors[0] has {first.shape[0]}")
        if t.dtype != first.dtype:
            raise ValueError(f"{name} has dtype {dtype_name(t.dtype)} but tensors[0] has {dtype_name(first.dtype)}")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but tensors[0] is on {first.device}")
        _check_positive_hw(t, name)


def check_argmax_values(logits: torch.Tensor, size: Sequence[int]) -> None:
    """The C++ check of upsample_argmax's logits and size."""
    _check_4d(logits, "logits")
    _check_float(logits, "logits")
    _check_size_values(size)
    if logits.shape[1] <= 0:
        raise ValueError(f"logits must have at least one class (K > 0), got shape {sizes(logits)}")
    _check_positive_hw(logits, "logits")


def check_softmax_accumulate_values(logits: torch.Tensor, accum: torch.Tensor) -> None:
    """The C++ check of upsample_softmax_accumulate's logits and accum."""
    _check_4d(logits, "logits")
    _check_4d(accum, "accum")
    _check_float(logits, "logits")
    if accum.dtype != torch.float32:
        raise ValueError(f"accum must be float32, got {dtype_name(accum.dtype)}")
    if not accum.is_contiguous():
        raise ValueError(f"accum must be contiguous (NCHW), got strides {list(accum.stride())}")
    if accum.device != logits.device:
        raise ValueError(f"accum must be on logits's device {logits.device}, got {accum.device}")
    if accum.shape[0] != logits.shape[0]:
        raise ValueError(f"accum's batch size {accum.shape[0]} must equal logits' {logits.shape[0]}")
    if accum.shape[1] != logits.shape[1]:
        raise ValueError(f"accum's class count {accum.shape[1]} must equal logits' {logits.shape[1]}")
    _check_positive_hw(logits, "logits")


def _check_softmax_accumulate_types(logits: object, accum: object, weight: object, flip: object) -> None:
    check_tensor(logits, "logits")
    check_tensor(accum, "accum")
    if accum.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("upsample_softmax_accumulate is inference only: accum must not require grad")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"weight must be a float, got {weight!r}")
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be a bool, got {flip!r}")


# -------------------------------------------------------------------------------------------------- ops


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
        backend: "auto" (C++ kernels for CPU and CUDA tensors), "cuda", "cpu", "triton", "reference" or
            "cuda_emu" (the CUDA kernel on CPU tensors through the host emulation; a slow test backend).

    Returns:
        (N, sum C_i, H, W) tensor in the inputs' dtype, in the memory format (NCHW or channels_last) of the
        first input whose layout is decided (concat_memory_format: a 1x1 or single-channel input, contiguous
        in both formats, decides nothing). Differentiable with respect to every input. Under torch.autocast
        (eager) inputs of different floating dtypes are cast to the widest first, as torch.cat's autocast
        rule does (deeplab_fast.ops._autocast).
    """
    tensors = check_tensor_list(tensors)
    size = check_size(size)
    align_corners = check_align_corners(align_corners)
    if autocast_dtype(tensors[0].device.type) is not None:
        with autocast_off(tensors[0].device.type):
            wide = promoted_dtype(tensors)
            if wide is not None:
                tensors = [cast_eligible(t, wide) for t in tensors]
            return upsample_concat(tensors, size, align_corners=align_corners, backend=backend)
    chosen = resolve_backend(backend, tensors[0].device, "upsample_concat")
    if chosen in ("cpu", "cuda"):  # the C++ op checks the values
        return run_op(torch.ops.deeplab_fast.upsample_concat, tensors, list(size), align_corners)
    if chosen == "cuda_emu":
        return run_op(torch.ops.deeplab_fast.upsample_concat_cuda_emu, tensors, list(size), align_corners)
    check_concat_values(tensors, size)
    if chosen == "reference":
        return upsample_concat_reference(tensors, size, align_corners)
    _triton_registered()
    return torch.ops.deeplab_fast.upsample_concat_triton(tensors, list(size), align_corners)


def upsample_argmax(
    logits: torch.Tensor, size: tuple[int, int], *, align_corners: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """Labels of F.interpolate(logits, size, mode="bilinear", align_corners=...).argmax(1).

    The full-resolution logits are never materialized: each output pixel computes its 4 source taps once
    and runs over the classes with a running maximum. The interpolation rounds exactly as PyTorch's CPU
    bilinear kernel (csrc/kernels/upsample.h), so fp32 labels equal the reference's wherever there is no
    exact tie. Logits that require grad are accepted; the result does not require grad (like torch.argmax).

    Args:
        logits: (N, K, h, w) float32/float16/bfloat16, any memory format; K >= 1.
        size: (H, W) of the label map, two positive ints.
        align_corners: as in F.interpolate.
        backend: "auto", "cuda", "cpu", "triton", "reference" or "cuda_emu" (see upsample_concat).

    Returns:
        (N, H, W) int64 labels; ties resolve to the lowest class index and NaN counts as the maximum,
        as in torch.argmax. No gradient (inference only).
    """
    check_tensor(logits, "logits")
    size = check_size(size)
    align_corners = check_align_corners(align_corners)
    chosen = resolve_backend(backend, logits.device, "upsample_argmax")
    logits = logits.detach()
    if chosen in ("cpu", "cuda"):  # the C++ op checks the values
        return run_op(torch.ops.deeplab_fast.upsample_argmax, logits, list(size), align_corners)
    if chosen == "cuda_emu":
        return run_op(torch.ops.deeplab_fast.upsample_argmax_cuda_emu, logits, list(size), align_corners)
    check_argmax_values(logits, size)
    if chosen == "reference":
        with autocast_off(logits.device.type):  # in the logits' dtype under autocast too, as the kernels
            return upsample_argmax_reference(logits, size, align_corners)
    _triton_registered()
    return torch.ops.deeplab_fast.upsample_argmax_triton(logits, list(size), align_corners)


def upsample_softmax_accumulate(
    logits: torch.Tensor,
    accum: torch.Tensor,
    *,
    weight: float = 1.0,
    flip: bool = False,
    align_corners: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """accum += weight * softmax_K(resize_bilinear(flip_W(logits) if flip else logits, accum's (H, W))).

    One pass over the output: each pixel computes its 4 source taps once, then the max, the sum of
    exponentials and the accumulation over the classes.

    Args:
        logits: (N, K, h, w) float32/float16/bfloat16, any memory format (read, never modified).
        accum: (N, K, H, W) float32 contiguous, updated in place.
        weight: scale of this contribution (e.g. 1 / number of scales and flips).
        flip: mirror the logits along W first (undoes a horizontally flipped input).
        align_corners: as in F.interpolate.
        backend: "auto", "cuda", "cpu", "triton", "reference" or "cuda_emu" (see upsample_concat).

    Returns:
        `accum` itself. Inference only: no gradient flows (logits are read detached).
    """
    _check_softmax_accumulate_types(logits, accum, weight, flip)
    align_corners = check_align_corners(align_corners)
    chosen = resolve_backend(backend, logits.device, "upsample_softmax_accumulate")
    logits = logits.detach()
    if chosen in ("cpu", "cuda"):  # the C++ op checks the values
        run_op(torch.ops.deeplab_fast.upsample_softmax_accumulate, logits, accum, float(weight), flip, align_corners)
        return accum
    if chosen == "cuda_emu":
        op = torch.ops.deeplab_fast.upsample_softmax_accumulate_cuda_emu
        run_op(op, logits, accum, float(weight), flip, align_corners)
        return accum
    check_softmax_accumulate_values(logits, accum)
    if chosen == "reference":
        with torch.no_grad(), autocast_off(logits.device.type):  # in the logits' dtype, as the kernels
            return upsample_softmax_accumulate_reference(logits, accum, float(weight), flip, align_corners)
    _triton_registered()
    torch.ops.deeplab_fast.upsample_softmax_accumulate_triton(logits, accum, float(weight), flip, align_corners)
    return accum


# --------------------------------------------------------------------------- fake impls, autograd, Triton


def concat_memory_format(tensors: Sequence[torch.Tensor]) -> torch.memory_format:
    """Memory format of upsample_concat's output: that of the first input whose layout is decided.

    A tensor with one pixel per channel (the 1x1 image-pooling branch) or with one channel is contiguous in
    both formats, so it decides nothing: with TensorFlow's order (pooling first) the output of a
    channels_last model stays channels_last. The C++ op applies the same rule (csrc/ops/upsample_ops.cpp).
    """
    for t in tensors:
        nchw, nhwc = t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last)
        if nchw != nhwc or not nchw:
            return memory_format_of(t)
    return torch.contiguous_format


def _concat_fake(tensors: Sequence[torch.Tensor], size: Sequence[int], align_corners: bool) -> torch.Tensor:
    check_concat_values(tensors, size)
    first = tensors[0]
    channels = sum(t.shape[1] for t in tensors)
    out = first.new_empty((first.shape[0], channels, size[0], size[1]))
    return out.contiguous(memory_format=concat_memory_format(tensors))


def _argmax_fake(logits: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    check_argmax_values(logits, size)
    return logits.new_empty((logits.shape[0], size[0], size[1]), dtype=torch.int64)


def _softmax_accumulate_fake(logits, accum, weight, flip, align_corners) -> None:
    check_softmax_accumulate_values(logits, accum)
    return None


def _concat_setup_context(ctx, inputs, output) -> None:
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


def _concat_backward_args(ctx, grad_out: torch.Tensor) -> tuple | None:
    """Arguments of the upsample_concat_backward ops, or None when the shapes are symbolic (tracing with
    dynamic sizes), which their int[] arguments cannot carry."""
    if not all(isinstance(s, int) for shape in ctx.shapes for s in shape):
        return None
    channels = [shape[1] for shape in ctx.shapes]
    heights = [shape[2] for shape in ctx.shapes]
    widths = [shape[3] for shape in ctx.shapes]
    return grad_out, channels, heights, widths, ctx.align_corners


def _concat_backward(ctx, grad_out: torch.Tensor):
    # CUDA tensors: the deterministic gather kernel (one launch for every input).
    args = _concat_backward_args(ctx, grad_out) if grad_out.device.type == "cuda" else None
    if args is not None and _ext.has_kernel("upsample_concat_backward", "cuda"):
        return list(torch.ops.deeplab_fast.upsample_concat_backward(*args)), None, None
    grads = []
    offset = 0
    for shape in ctx.shapes:
        g = grad_out[:, offset : offset + shape[1]]
        offset += shape[1]
        grads.append(_resize_backward(g, shape, ctx.size, ctx.align_corners))
    return grads, None, None


def _concat_cuda_emu_backward(ctx, grad_out: torch.Tensor):
    """The cuda_emu twin's gradient: the emulated CUDA gather kernel (the ATen VJP for symbolic shapes)."""
    args = _concat_backward_args(ctx, grad_out)
    if args is None:
        return _concat_backward(ctx, grad_out)
    return list(torch.ops.deeplab_fast.upsample_concat_backward_cuda_emu(*args)), None, None


def check_concat_backward_values(
    grad_out: torch.Tensor, channels: Sequence[int], heights: Sequence[int], widths: Sequence[int]
) -> None:
    """The C++ check of upsample_concat_backward's arguments."""
    _check_4d(grad_out, "grad_out")
    _check_float(grad_out, "grad_out")
    inputs = len(channels)
    if not 1 <= inputs <= MAX_CONCAT_INPUTS:
        raise ValueError(f"channels must hold 1 to {MAX_CONCAT_INPUTS} channel counts, got {inputs}")
    if len(heights) != inputs or len(widths) != inputs:
        raise ValueError(
            f"heights and widths must hold {inputs} sizes like channels, got {len(heights)} and {len(widths)}"
        )
    for j, (c, h, w) in enumerate(zip(channels, heights, widths, strict=True)):
        if c < 0 or h <= 0 or w <= 0:
            raise ValueError(f"input {j} must have channels >= 0 and positive height and width, got ({c}, {h}, {w})")
    if grad_out.shape[1] != sum(channels):
        raise ValueError(f"grad_out must have sum(channels) = {sum(channels)} channels, got shape {sizes(grad_out)}")
    if grad_out.shape[2] <= 0 or grad_out.shape[3] <= 0:
        raise ValueError(f"grad_out must have positive height and width, got shape {sizes(grad_out)}")


def _concat_backward_fake(grad_out, channels, heights, widths, align_corners) -> list[torch.Tensor]:
    check_concat_backward_values(grad_out, channels, heights, widths)
    fmt = memory_format_of(grad_out)
    n = grad_out.shape[0]
    return [
        grad_out.new_empty((n, c, h, w)).contiguous(memory_format=fmt)
        for c, h, w in zip(channels, heights, widths, strict=True)
    ]


def _register_triton() -> None:
    from torch.library import triton_op

    from deeplab_fast.kernels.triton import upsample as kernels

    @triton_op("deeplab_fast::upsample_concat_triton", mutates_args=())
    def upsample_concat_triton(tensors: list[torch.Tensor], size: list[int], align_corners: bool) -> torch.Tensor:
        """Triton upsample_concat: tensors (N, C_i, H_i, W_i) -> (N, sum C_i, H, W) in tensors[0]'s format."""
        y = _concat_fake(tensors, size, align_corners)
        kernels.launch_upsample_concat(tensors, y, align_corners, concat_memory_format(tensors) == torch.channels_last)
        return y

    @triton_op("deeplab_fast::upsample_argmax_triton", mutates_args=())
    def upsample_argmax_triton(logits: torch.Tensor, size: list[int], align_corners: bool) -> torch.Tensor:
        """Triton upsample_argmax: logits (N, K, h, w) -> int64 labels (N, H, W)."""
        out = _argmax_fake(logits, size, align_corners)
        kernels.launch_upsample_argmax(logits, out, align_corners)
        return out

    @triton_op("deeplab_fast::upsample_softmax_accumulate_triton", mutates_args={"accum"})
    def upsample_softmax_accumulate_triton(
        logits: torch.Tensor, accum: torch.Tensor, weight: float, flip: bool, align_corners: bool
    ) -> None:
        """Triton upsample_softmax_accumulate: accum (N, K, H, W) fp32 += weight * softmax(resize(logits))."""
        kernels.launch_upsample_softmax_accumulate(logits, accum, weight, flip, align_corners)

    # Explicit fakes: tracing the bodies would run the interpreter on fake tensors.
    upsample_concat_triton.register_fake(_concat_fake)
    upsample_argmax_triton.register_fake(_argmax_fake)
    upsample_softmax_accumulate_triton.register_fake(_softmax_accumulate_fake)
    upsample_concat_triton.register_autograd(_concat_backward, setup_context=_concat_setup_context)


_triton_registered = registered_on_first_use(_register_triton)


if _ext.HAS_EXT:
    torch.library.register_fake("deeplab_fast::upsample_concat")(_concat_fake)
    torch.library.register_fake("deeplab_fast::upsample_argmax")(_argmax_fake)
    torch.library.register_fake("deeplab_fast::upsample_softmax_accumulate")(_softmax_accumulate_fake)
    torch.library.register_autograd(
        "deeplab_fast::upsample_concat", _concat_backward, setup_context=_concat_setup_context
    )

    # The "cuda_emu" twins: the same checks plus what the emulated CUDA kernels accept; upsample_concat's twin
    # takes its gradient from the emulated gather kernel (upsample_concat_backward_cuda_emu).
    @torch.library.register_fake("deeplab_fast::upsample_concat_cuda_emu")
    def _(tensors, size, align_corners):
        out = _concat_fake(tensors, size, align_corners)
        check_cuda_emu_input(tensors[0], "tensors[0]", "upsample_concat")
        return out

    @torch.library.register_fake("deeplab_fast::upsample_argmax_cuda_emu")
    def _(logits, size, align_corners):
        out = _argmax_fake(logits, size, align_corners)
        check_cuda_emu_input(logits, "logits", "upsample_argmax")
        return out

    @torch.library.register_fake("deeplab_fast::upsample_softmax_accumulate_cuda_emu")
    def _(logits, accum, weight, flip, align_corners):
        _softmax_accumulate_fake(logits, accum, weight, flip, align_corners)
        check_cuda_emu_input(logits, "logits", "upsample_softmax_accumulate")

    torch.library.register_autograd(
        "deeplab_fast::upsample_concat_cuda_emu", _concat_cuda_emu_backward, setup_context=_concat_setup_context
    )
    torch.library.register_fake("deeplab_fast::upsample_concat_backward")(_concat_backward_fake)

    @torch.library.register_fake("deeplab_fast::upsample_concat_backward_cuda_emu")
    def _(grad_out, channels, heights, widths, align_corners):
        out = _concat_backward_fake(grad_out, channels, heights, widths, align_corners)
        check_cuda_emu_input(grad_out, "grad_out", "upsample_concat_backward")
        return out
