"""Fused atrous depthwise conv + folded BatchNorm + activation: Python API, checks, backends, autograd.

Semantics: deeplab_fast.ops.reference.dwconv_bn_act_reference. The compiled op is
`torch.ops.deeplab_fast.dwconv_bn_act` (csrc/ops/dwconv_bn_act.cpp) with its gradient op
`torch.ops.deeplab_fast.dwconv_bn_act_backward`; the Triton one is `torch.ops.deeplab_fast.dwconv_bn_act_triton`
(deeplab_fast/kernels/triton/dwconv_bn_act.py).
"""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast import _ext
from deeplab_fast.ops._backend import BACKENDS, resolve_backend, run_op
from deeplab_fast.ops.reference import ACTIVATIONS, dwconv_bn_act_reference

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_ACT_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def _out_size(size: int, k: int, stride: int, dilation: int) -> int:
    pad = dilation * (k - 1) // 2
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    dilation: int,
    activation: str,
) -> None:
    # Valid arguments in one expression (this runs on every call of a sub-millisecond op); anything else
    # goes through the checks below, which name the argument at fault.
    if (
        isinstance(x, torch.Tensor)
        and isinstance(weight, torch.Tensor)
        and isinstance(scale, torch.Tensor)
        and isinstance(shift, torch.Tensor)
        and type(stride) is int
        and type(dilation) is int
        and type(activation) is str
    ):
        xs, ws, dtype, device = x.shape, weight.shape, x.dtype, x.device
        if (
            len(xs) == 4
            and dtype in _FLOAT_DTYPES
            and len(ws) == 4
            and ws[0] == xs[1]
            and ws[1] == 1
            and ws[2] == ws[3]
            and ws[2] % 2 == 1
            and scale.shape == (xs[1],)
            and shift.shape == (xs[1],)
            and weight.dtype is dtype
            and scale.dtype is dtype
            and shift.dtype is dtype
            and weight.device == device
            and scale.device == device
            and shift.device == device
            and stride in (1, 2)
            and dilation >= 1
            and activation in ACTIVATIONS
        ):
            return
    for name, t in (("x", x), ("weight", weight), ("scale", scale), ("shift", shift)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got {x.dim()}-D with shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"x must be float32, float16, bfloat16 or float64, got {x.dtype}")
    c = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != c or weight.shape[1] != 1:
        raise ValueError(f"weight must have shape (C, 1, k, k) with C={c} (x's channels), got {tuple(weight.shape)}")
    k = weight.shape[2]
    if weight.shape[3] != k:
        raise ValueError(f"weight must be square (C, 1, k, k), got {tuple(weight.shape)}")
    if k % 2 != 1:
        raise ValueError(f"weight's kernel size k must be odd (3, 5, 7, ...), got k={k}")
    for name, t in (("scale", scale), ("shift", shift)):
        if t.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},) (x's channels), got {tuple(t.shape)}")
    for name, t in (("weight", weight), ("scale", scale), ("shift", shift)):
        if t.dtype != x.dtype:
            raise ValueError(f"{name} must have x's dtype {x.dtype}, got {t.dtype} (mixed dtypes)")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device} (mixed devices)")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


def _resolve_or_error(backend: str, device: torch.device) -> str | Exception:
    try:
        return resolve_backend(backend, device, "dwconv_bn_act")
    except (ValueError, RuntimeError) as exc:
        return exc


# Backend choices per (backend, device type), resolved at import for torch.compile: the dispatcher query
# behind resolve_backend returns a bool that Dynamo cannot trace, a dict lookup it can.
_RESOLVED_FOR_COMPILE = {
    (name, dev): _resolve_or_error(name, torch.device(dev)) for name in BACKENDS for dev in ("cpu", "cuda")
}


def _choose_backend(backend: str, x: torch.Tensor) -> str:
    if torch.compiler.is_compiling() and (backend, x.device.type) in _RESOLVED_FOR_COMPILE:
        chosen = _RESOLVED_FOR_COMPILE[(backend, x.device.type)]
        if isinstance(chosen, Exception):
            raise chosen
    else:
        chosen = resolve_backend(backend, x.device, "dwconv_bn_act")
    if x.dtype == torch.float64 and chosen in ("cuda", "triton") and x.device.type == "cuda":
        if backend == "auto":
            return "reference"  # the CUDA kernels are fp32/fp16/bf16 only; float64 is a checking dtype
        raise ValueError(
            f"backend={backend!r} does not support float64 on CUDA (x is float64); use float32, float16, "
            "bfloat16, backend='reference', or CPU tensors"
        )
    return chosen


def dwconv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    stride: int = 1,
    dilation: int = 1,
    activation: str = "relu",
    backend: str = "auto",
) -> torch.Tensor:
    """Fused `act(depthwise_conv2d(x, weight) * scale[c] + shift[c])` with "same" padding.

    Args:
        x: (N, C, H, W) float32/float16/bfloat16 (float64 on the cpu, triton-interpreter and reference
            backends), NCHW or channels_last; other strides are made contiguous first.
        weight: (C, 1, k, k) with odd k (3, 5, 7), same dtype and device as x.
        scale, shift: (C,) folded eval BatchNorm (see `fold_bn`), same dtype and device as x.
        stride: 1 or 2.
        dilation: int >= 1; padding is dilation * (k - 1) // 2. Taps outside the image are skipped.
        activation: "relu", "relu6" or "none".
        backend: "auto" (the CUDA kernels on CUDA tensors, the C++ kernels on CPU tensors), "cuda",
            "cpu", "triton" or "reference".

    Returns:
        (N, C, Ho, Wo) with Ho = ceil(H / stride) (likewise Wo), in x's dtype and memory format.
        Accumulation is fp32 (float64 for float64 inputs). Differentiable in x, weight, scale, shift.
    """
    _check_inputs(x, weight, scale, shift, stride, dilation, activation)
    chosen = _choose_backend(backend, x)
    if chosen == "reference":
        return dwconv_bn_act_reference(x, weight, scale, shift, stride, dilation, activation)
    code = ACTIVATIONS[activation]
    if chosen == "triton":
        from deeplab_fast.kernels.triton import dwconv_bn_act as triton_impl

        return triton_impl.dwconv_bn_act_triton(x, weight, scale, shift, stride, dilation, code)
    return run_op(torch.ops.deeplab_fast.dwconv_bn_act, x, weight, scale, shift, stride, dilation, code)


def fold_bn(bn: nn.BatchNorm2d, conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm (and an optional preceding conv bias) into (scale, shift), each (C,).

    scale = gamma / sqrt(running_var + eps); shift = beta - running_mean * scale + conv_bias * scale.
    Both are returned in the BatchNorm's dtype, detached.
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"bn must be a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn must track running statistics (track_running_stats=True) to be folded")
    var = bn.running_var.detach()
    mean = bn.running_mean.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    shift = beta - mean * scale
    if conv_bias is not None:
        shift = shift + conv_bias.detach() * scale
    return scale, shift


def fake_output(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    """Empty (N, C, Ho, Wo) output with x's dtype, device and memory format (fake/meta implementations)."""
    k = weight.shape[-1]
    ho = _out_size(x.shape[2], k, stride, dilation)
    wo = _out_size(x.shape[3], k, stride, dilation)
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return x.new_empty((x.shape[0], x.shape[1], ho, wo)).contiguous(memory_format=fmt)


def kernel_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    dilation: int,
    activation: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dweight, dscale, dshift) of dwconv_bn_act, each shaped and typed like its input.

    Runs the compiled backward kernels when the extension has them for x's device; otherwise (no build,
    or a CUDA build missing on this machine) the reference's vector-Jacobian product.
    """
    if _ext.has_kernel("dwconv_bn_act_backward", x.device.type):
        return torch.ops.deeplab_fast.dwconv_bn_act_backward(
            grad_out, x, weight, scale, shift, stride, dilation, activation
        )
    act_name = _ACT_NAMES[activation]
    _, vjp = torch.func.vjp(
        lambda a, b, c, d: dwconv_bn_act_reference(a, b, c, d, stride, dilation, act_name), x, weight, scale, shift
    )
    return vjp(grad_out)


def setup_context(ctx, inputs, output) -> None:
    """Autograd context of every dwconv_bn_act op: save the inputs (the output is recomputed, not kept)."""
    x, weight, scale, shift, stride, dilation, activation = inputs
    ctx.save_for_backward(x, weight, scale, shift)
    ctx.conf = (stride, dilation, activation)


def backward(ctx, grad_out: torch.Tensor):
    """Autograd formula shared by the compiled and Triton ops."""
    x, weight, scale, shift = ctx.saved_tensors
    stride, dilation, activation = ctx.conf
    gx, gw, gs, gb = kernel_backward(grad_out, x, weight, scale, shift, stride, dilation, activation)
    return gx, gw, gs, gb, None, None, None


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act")
    def _(x, weight, scale, shift, stride, dilation, activation):
        return fake_output(x, weight, stride, dilation)

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act_backward")
    def _(grad_out, x, weight, scale, shift, stride, dilation, activation):
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        return (
            torch.empty_like(x, memory_format=fmt),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            torch.empty_like(scale, memory_format=torch.contiguous_format),
            torch.empty_like(shift, memory_format=torch.contiguous_format),
        )

    torch.library.register_autograd("deeplab_fast::dwconv_bn_act", backward, setup_context=setup_context)
