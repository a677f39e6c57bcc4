"""MobileNetV2 (torchvision layout and parameter names, ReLU6) with atrous last stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeplab_fast.models.backbones import dilation_schedule
from deeplab_fast.models.layers import scaled

# (expansion t, channels c, repeats n, stride s) from the MobileNetV2 paper
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


PADDINGS = ("zero", "block_input")


def _conv_bn_relu6(
    cin: int,
    cout: int,
    k: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    eps: float = 1e-5,
    same_pad: bool = True,
) -> nn.Sequential:
    pad = dilation * (k - 1) // 2 if same_pad else 0
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> project 1x1 (linear), residual when shapes allow.

    `use_res_connect` depends on the nominal stride, so a unit whose stride became a dilation keeps no skip
    (as torchvision/smp models do). With pad_input=True the unit zero-pads its input by `input_pad` (the
    depthwise dilation) on every side before the expansion and its depthwise conv has no padding of its own
    (VainF/DeepLabV3Plus-Pytorch's layout: the pad passes through the expansion's BN and ReLU6). `hidden`: the
    expansion width (default inp * expand).
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        nominal_stride: int,
        stride: int,
        dilation: int,
        expand: int,
        eps: float = 1e-5,
        pad_input: bool = False,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        hidden = inp * expand if hidden is None else hidden
        self.use_res_connect = nominal_stride == 1 and inp == oup
        self.input_pad = dilation if pad_input else 0
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(inp, hidden, 1, eps=eps))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden, eps=eps, same_pad=not pad_input),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup, eps=eps),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(pad_input(x, self.input_pad))
        return x + y if self.use_res_connect else y


def pad_input(x: torch.Tensor, pad: int) -> torch.Tensor:
    """x zero-padded by `pad` on every side of H and W (x itself for 0)."""
    return F.pad(x, (pad, pad, pad, pad)) if pad else x


class MobileNetV2(nn.Module):
    """MobileNetV2 features (torchvision names `features.N...`; no classifier).

    Args:
        output_stride: 8, 16 or 32.
        dilate_first_block: whether the unit that would have strided already uses the new dilation (True, smp)
            or still the old one (False: TensorFlow, VainF, the exact atrous rule).
        width_mult: torchvision's width multiplier.
        last_conv: keep the final 1x1 conv to 1280 channels (torchvision/smp); False ends at 320 channels
            (TensorFlow DeepLab).
        eps: BatchNorm eps (torchvision's 1e-5; TensorFlow's MobileNetV2 used 1e-3).
        padding: "zero" (each 3x3 conv pads its input: torchvision, smp, TensorFlow for odd sizes) or
            "block_input" (VainF: the stem conv has no padding, each unit pads its input before the expansion).
        divisible_by: the multiple that width_mult rounds every unit's channels to (8: torchvision; TensorFlow
            DeepLab's depth multipliers other than 1 use 1, e.g. 12 channels where 8 gives 16). The expansion
            width is inputs x t rounded to a multiple of 8, as TensorFlow's MobileNetV2 rounds it.
    Forward: (N, 3, H, W) -> (features[3] [stride 4, 24 ch], features[13] [96 ch], last [1280 or 320 ch]).
    """

    def __init__(
        self,
        *,
        output_stride: int = 16,
        dilate_first_block: bool = True,
        width_mult: float = 1.0,
        last_conv: bool = True,
        eps: float = 1e-5,
        padding: str = "zero",
        divisible_by: int = 8,
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"mobilenet_padding must be one of {PADDINGS}, got {padding!r}")
        block_input = padding == "block_input"
        strides, specs = [], []
        cin = scaled(32, width_mult, divisible_by)
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                strides.append(s if i == 0 else 1)
                specs.append((t, scaled(c, width_mult, divisible_by)))
        sched = dilation_schedule(strides, 2, output_stride, dilate_first_block)
        layers: list[nn.Module] = [_conv_bn_relu6(3, cin, 3, stride=2, eps=eps, same_pad=not block_input)]
        for (t, c), nominal, (stride, dil, _) in zip(specs, strides, sched, strict=True):
            # scaled(cin, t): cin * t rounded to a multiple of 8 (cin * t itself when cin is a multiple of 8)
            hidden = scaled(cin, t)
            layers.append(InvertedResidual(cin, c, nominal, stride, dil, t, eps, pad_input=block_input, hidden=hidden))
            cin = c
        if last_conv:
            last = scaled(1280, max(1.0, width_mult))
            layers.append(_conv_bn_relu6(cin, last, 1, eps=eps))
            cin = last
        self.features = nn.Sequential(*layers)
        self.low_level_channels = scaled(24, width_mult, divisible_by)
        self.mid_channels = scaled(96, width_mult, divisible_by)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.features[:4](x)
        mid = self.features[4:14](low)
        return low, mid, self.features[14:](mid)
