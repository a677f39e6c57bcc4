"""Building blocks shared by the backbones and heads: conv + BN + activation, separable conv."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deeplab_fast.ops._common import ACTIVATIONS
from deeplab_fast.ops.reference import apply_activation as apply_act  # one definition of the activations

ACTS = tuple(ACTIVATIONS)  # "none", "relu", "relu6": the names the fused ops take


class ConvBNAct(nn.Module):
    """k x k conv (no bias) -> BatchNorm -> activation; (N, Cin, H, W) -> (N, Cout, Ho, Wo).

    Padding is dilation * (k - 1) // 2 on every side, so stride 1 keeps the size and stride 2 on an odd
    size s gives (s + 1) // 2 (TensorFlow "SAME" for odd sizes: 513 -> 257 -> 129 -> 65 -> 33).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if act not in ACTS:
            raise ValueError(f"act must be one of {ACTS}, got {act!r}")
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_act(self.bn(self.conv(x)), self.act)


class SeparableConv(nn.Module):
    """Depthwise 3x3 (atrous) conv then pointwise 1x1 conv, each optionally followed by BN and an activation.

    Layout: [pre_act] -> depthwise -> [dw_bn -> inner_act] -> pointwise -> [pw_bn] -> out_act.
    (N, Cin, H, W) -> (N, Cout, Ho, Wo) with the same padding rule as ConvBNAct.

    Args:
        inner_bn: BN after the depthwise conv (the paper's and TensorFlow's layout); False is smp's layout.
        inner_act: activation after that BN ("none" in TensorFlow Xception's pre-activation units).
        pre_act: ReLU applied to the input first (TensorFlow Xception's pre-activation units).
        out_bn: BN after the pointwise conv.
        out_act: activation at the end.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        inner_bn: bool = True,
        inner_act: str = "relu",
        out_bn: bool = True,
        out_act: str = "relu",
        pre_act: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, act in (("inner_act", inner_act), ("out_act", out_act)):
            if act not in ACTS:
                raise ValueError(f"{name} must be one of {ACTS}, got {act!r}")
        if not inner_bn and inner_act != "none":
            raise ValueError("inner_act needs inner_bn=True (no activation directly after a depthwise conv)")
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            groups=in_channels,
            bias=False,
        )
        self.dw_bn = nn.BatchNorm2d(in_channels, eps=eps) if inner_bn else None
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(out_channels, eps=eps) if out_bn else None
        self.pre_act = pre_act
        self.inner_act = inner_act
        self.out_act = out_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_act:
            x = F.relu(x)
        x = self.depthwise(x)
        if self.dw_bn is not None:
            x = apply_act(self.dw_bn(x), self.inner_act)
        x = self.pointwise(x)
        if self.pw_bn is not None:
            x = self.pw_bn(x)
        return apply_act(x, self.out_act)


class ResizeConcat(nn.Module):
    """Bilinearly resize each input to `size` and concatenate them along channels (a module so that
    optimize() can swap in deeplab_fast.ops.upsample_concat in place).

    [(N, C_i, h_i, w_i)] float -> (N, sum C_i, H, W) of the same dtype; a single input is only resized.
    """

    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, tensors: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        # an input already at `size` is taken as is (a same-size bilinear resize is the identity)
        resized = [
            t
            if (t.shape[2], t.shape[3]) == tuple(size)
            else F.interpolate(t, size, mode="bilinear", align_corners=self.align_corners)
            for t in tensors
        ]
        return resized[0] if len(resized) == 1 else torch.cat(resized, dim=1)


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    separable: bool,
    dilation: int = 1,
    inner_bn: bool = True,
    eps: float = 1e-5,
) -> nn.Module:
    """A 3x3 (atrous) conv + BN + ReLU, dense or depthwise separable (see SeparableConv)."""
    if separable:
        return SeparableConv(
            in_channels,
            out_channels,
            dilation=dilation,
            inner_bn=inner_bn,
            inner_act="relu" if inner_bn else "none",
            eps=eps,
        )
    return ConvBNAct(in_channels, out_channels, 3, dilation=dilation, eps=eps)


def scaled(channels: int, width_mult: float, divisor: int = 8) -> int:
    """channels * width_mult rounded to a multiple of `divisor` (at least `divisor`), as MobileNet does."""
    if width_mult == 1.0:
        return channels
    value = channels * width_mult
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
