"""Plain-PyTorch reference semantics of every fused op: the spec that kernels, tests and benchmarks share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeplab_fast.ops._common import ACTIVATIONS, effective_dilation, memory_format_of, same_out_size

__all__ = [
    "ACTIVATIONS",
    "apply_activation",
    "dwconv_bn_act_reference",
    "upsample_concat_reference",
    "upsample_argmax_reference",
    "upsample_softmax_accumulate_reference",
    "winograd_conv3x3_reference",
]


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply "relu", "relu6" or "none" to `x` (NaN stays NaN, as in torch)."""
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.relu6(x)
    return x


def dwconv_bn_act_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int = 1,
    dilation: int = 1,
    activation: str = "relu",
) -> torch.Tensor:
    """act(depthwise_conv2d(x, weight) * scale[c] + shift[c]), computed in fp32 (fp64 stays fp64).

    x: (N, C, H, W) float; weight: (C, 1, k, k), k odd; scale, shift: (C,). Padding dilation*(k-1)//2,
    with a dilation of at least max(H, W) taken as max(H, W) (the same result: only the centre tap is
    inside the map). Returns (N, C, ceil(H / stride), ceil(W / stride)) in x's dtype and memory format;
    empty when x is.
    """
    n, c, h, w = x.shape
    fmt = memory_format_of(x)
    if x.numel() == 0:
        return x.new_empty((n, c, same_out_size(h, stride), same_out_size(w, stride))).contiguous(memory_format=fmt)
    k = weight.shape[-1]
    dilation = effective_dilation(dilation, h, w)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = F.conv2d(
        x.to(compute),
        weight.to(compute),
        stride=stride,
        padding=dilation * (k - 1) // 2,
        dilation=dilation,
        groups=c,
    )
    y = y * scale.to(compute).view(1, -1, 1, 1) + shift.to(compute).view(1, -1, 1, 1)
    return apply_activation(y, activation).to(x.dtype).contiguous(memory_format=fmt)


def upsample_concat_reference(
    tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], size: tuple[int, int], align_corners: bool = False
) -> torch.Tensor:
    """Bilinearly resize each (N, C_i, H_i, W_i) tensor to `size` and concatenate along channels.

    Same as F.interpolate(mode="bilinear", align_corners=...) + torch.cat, computed in fp32 and cast back;
    the output follows the first input's memory format.
    """
    compute = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    parts = [
        F.interpolate(t.to(compute), size=tuple(size), mode="bilinear", align_corners=align_corners) for t in tensors
    ]
    out = torch.cat(parts, dim=1).to(tensors[0].dtype)
    return out.contiguous(memory_format=memory_format_of(tensors[0]))


def upsample_argmax_reference(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Labels (N, H, W) int64 of F.interpolate(logits, size, bilinear).argmax(1), resized in fp32."""
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    up = F.interpolate(logits.to(compute), size=tuple(size), mode="bilinear", align_corners=align_corners)
    return up.argmax(1)


def upsample_softmax_accumulate_reference(
    logits: torch.Tensor,
    accum: torch.Tensor,
    weight: float = 1.0,
    flip: bool = False,
    align_corners: bool = False,
) -> torch.Tensor:
    """accum += weight * softmax over K of bilinear_resize(flip_W(logits) if flip else logits, accum's (H, W)).

    logits: (N, K, h, w) float32/float16/bfloat16; accum: (N, K, H, W) float32, updated in place and returned.
    The resize and the softmax run in fp32 (the logits are upcast first). Used for multi-scale + flip
    inference: flip=True un-flips the logits of a horizontally flipped input.
    """
    x = logits.to(torch.float32)
    if flip:
        x = x.flip(-1)
    up = F.interpolate(x, size=tuple(accum.shape[-2:]), mode="bilinear", align_corners=align_corners)
    accum.add_(torch.softmax(up, dim=1), alpha=float(weight))
    return accum


def winograd_conv3x3_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    dilation: int = 1,
    activation: str = "none",
) -> torch.Tensor:
    """act(conv2d(x, weight, bias, padding=dilation, dilation=dilation) [+ residual]): what winograd_conv3x3
    computes with u = winograd_weight(weight). x (N, Cin, H, W), weight (Cout, Cin, 3, 3) -> (N, Cout, H, W).
    A dilation of at least max(H, W) is taken as max(H, W) (the same result: only the centre tap is inside)."""
    dilation = effective_dilation(dilation, x.shape[2], x.shape[3])
    y = F.conv2d(x, weight, bias, 1, dilation, dilation)
    if residual is not None:
        y = y + residual
    return apply_activation(y, activation)
