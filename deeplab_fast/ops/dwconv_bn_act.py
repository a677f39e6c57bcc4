"""Fused atrous depthwise conv + folded BatchNorm + activation: Python API, checks, backends, autograd.

Semantics: deeplab_fast.ops.reference.dwconv_bn_act_reference.
"""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast import _ext
from deeplab_fast.ops._backend import resolve_backend
from deeplab_fast.ops.reference import ACTIVATIONS, dwconv_bn_act_reference

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _out_size(size: int, k: int, stride: int, dilation: int) -> int:
    pad = dilation * (k - 1) // 2
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _check_inputs(x, weight, scale, shift, stride, dilation, activation) -> None:
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
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


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
    """Fused `act(depthwise_conv2d(x, weight) * scale[c] + shift[c])`.

    Args:
        x: (N, C, H, W) float32/float16/bfloat16 (float64 on cpu/reference), NCHW or channels_last.
        weight: (C, 1, k, k), odd k, same dtype and device as x.
        scale, shift: (C,) folded eval BatchNorm (see `fold_bn`), same dtype as x.
        stride: 1 or 2. dilation: >= 1 (padding is dilation*(k-1)//2, "same" at stride 1).
        activation: "relu", "relu6" or "none".
        backend: "auto" (cuda kernels on CUDA tensors, C++ kernels on CPU tensors), "cuda", "cpu",
            "triton" or "reference".

    Returns:
        (N, C, Ho, Wo) tensor in x's dtype and memory format; accumulation is fp32.
    """
    _check_inputs(x, weight, scale, shift, stride, dilation, activation)
    chosen = resolve_backend(backend, x.device, "dwconv_bn_act")
    if chosen == "reference":
        return dwconv_bn_act_reference(x, weight, scale, shift, stride, dilation, activation)
    if chosen == "triton":
        from deeplab_fast.kernels.triton import dwconv_bn_act as triton_impl

        return triton_impl.dwconv_bn_act_triton(x, weight, scale, shift, stride, dilation, ACTIVATIONS[activation])
    return torch.ops.deeplab_fast.dwconv_bn_act(x, weight, scale, shift, stride, dilation, ACTIVATIONS[activation])


def fold_bn(bn: nn.BatchNorm2d, conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm (and an optional preceding conv bias) into (scale, shift), each (C,).

    scale = gamma / sqrt(running_var + eps); shift = beta - running_mean * scale + conv_bias * scale.
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


def _fake_output(x, weight, stride, dilation):
    k = weight.shape[-1]
    ho = _out_size(x.shape[2], k, stride, dilation)
    wo = _out_size(x.shape[3], k, stride, dilation)
    fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format
    return x.new_empty((x.shape[0], x.shape[1], ho, wo)).contiguous(memory_format=fmt)


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act")
    def _(x, weight, scale, shift, stride, dilation, activation):
        return _fake_output(x, weight, stride, dilation)

    def _setup_context(ctx, inputs, output):
        x, weight, scale, shift, stride, dilation, activation = inputs
        ctx.save_for_backward(x, weight, scale, shift)
        ctx.conf = (stride, dilation, activation)

    def _backward(ctx, grad_out):
        x, weight, scale, shift = ctx.saved_tensors
        stride, dilation, activation = ctx.conf
        act_name = {v: k for k, v in ACTIVATIONS.items()}[activation]
        # Placeholder until the kernel backward lands: the reference's VJP.
        _, vjp = torch.func.vjp(
            lambda a, b, c, d: dwconv_bn_act_reference(a, b, c, d, stride, dilation, act_name), x, weight, scale, shift
        )
        gx, gw, gs, gb = vjp(grad_out)
        return gx, gw, gs, gb, None, None, None

    torch.library.register_autograd("deeplab_fast::dwconv_bn_act", _backward, setup_context=_setup_context)
