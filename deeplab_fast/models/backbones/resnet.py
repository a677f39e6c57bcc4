"""ResNet-50/101 (bottleneck, torchvision layout and parameter names) and TensorFlow DeepLab's ResNet-50/101
"beta" variants, with atrous last stages."""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast.models.backbones import dilation_schedule
from deeplab_fast.models.layers import ConvBNAct, scaled

_DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
DEPTHS = (*_DEPTHS, *(f"{d}_beta" for d in _DEPTHS))
# the multi-grid of the paper's ResNet-101 beta results (DeepLabV3 Table 3, DeepLabV3+ Table 3)
BETA_MULTI_GRID = (1, 2, 4)


class Subsample(nn.Module):
    """x[:, :, ::stride, ::stride]: TensorFlow-slim's `subsample` shortcut (a 1x1 max pool) of a strided unit
    whose depth does not change; stride 1 is the identity. (N, C, H, W) -> (N, C, ceil(H/s), ceil(W/s))."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 conv); same parameter names.

    With tap=True forward returns (output, bn3's output before the skip addition) (TensorFlow's
    `block1/unit_2/bottleneck_v1/conv3` decoder end point of the beta variants).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        eps: float,
        tap: bool = False,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.tap:
            return torch.relu(out + identity), out
        return self.relu(out + identity)


def _run_layer(layer: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the units of `layer`; returns (output, the tap of the unit that has one, or None)."""
    tap = None
    for unit in layer:
        x = unit(x)
        if isinstance(x, tuple):
            x, tap = x
    return x, tap


class ResNet(nn.Module):
    """Bottleneck ResNet whose last stages trade stride for dilation to reach `output_stride`.

    "resnet50" / "resnet101": parameter names match torchvision's ResNet (conv1, bn1, layer1..layer4; no fc), so
    a torchvision ImageNet state dict loads as is (its fc.* keys are ignored by load_weights(backbone_only=True)).

    "resnet50_beta" / "resnet101_beta": TensorFlow DeepLab's resnet_v1_beta: a stem of three 3x3 convs
    (64, 64, 128 channels, the first with stride 2; `stem`, three ConvBNAct) instead of the 7x7 conv, and the
    stride of each of the first three blocks in its LAST unit (TensorFlow-slim's layout), whose shortcut is then a
    Subsample (no conv). The low-level features are layer1's second unit's bn3 output before the skip addition,
    as TensorFlow's decoder takes them; multi_grid defaults to (1, 2, 4).

    Args:
        depth: one of DEPTHS.
        output_stride: 8, 16 or 32.
        multi_grid: per-unit dilation multipliers of layer4, e.g. (1, 2, 4); None for all ones (beta: (1, 2, 4)).
        dilate_first_block: whether the unit that would have strided already uses the new dilation (True, smp)
            or still the old one (False: torchvision, TensorFlow, the exact atrous rule).
        width_mult: scales every width (for small test models); 1.0 is the real network.
        eps: BatchNorm eps.
    Forward: (N, 3, H, W) -> (stride-4 low level [256 ch], layer3 [1024 ch], layer4 [2048 ch]).
    """

    def __init__(
        self,
        depth: str = "resnet50",
        *,
        output_stride: int = 16,
        multi_grid: tuple[int, ...] | None = None,
        dilate_first_block: bool = True,
        width_mult: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, got {depth!r}")
        self.beta = depth.endswith("_beta")
        blocks = _DEPTHS[depth.removesuffix("_beta")]
        if multi_grid is None and self.beta:
            multi_grid = BETA_MULTI_GRID
        if multi_grid is not None and len(multi_grid) != blocks[3]:
            raise ValueError(f"multi_grid must have {blocks[3]} entries (units of layer4), got {multi_grid!r}")
        if self.beta:
            s64, s128 = scaled(64, width_mult), scaled(128, width_mult)
            self.stem = nn.Sequential(
                ConvBNAct(3, s64, 3, stride=2, eps=eps),
                ConvBNAct(s64, s64, 3, eps=eps),
                ConvBNAct(s64, s128, 3, eps=eps),
            )
            inplanes = s128
        else:
            inplanes = scaled(64, width_mult)
            self.conv1 = nn.Conv2d(3, inplanes, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(inplanes, eps=eps)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        grid = multi_grid if multi_grid is not None else (1,) * blocks[3]
        if self.beta:
            self._build_beta(blocks, inplanes, grid, output_stride, dilate_first_block, width_mult, eps)
        else:
            self._build_torchvision(blocks, inplanes, grid, output_stride, dilate_first_block, width_mult, eps)
        self.low_level_channels = scaled(64, width_mult) * 4
        self.mid_channels = scaled(256, width_mult) * 4
        self.out_channels = scaled(512, width_mult) * 4

    def _build_torchvision(
        self, blocks: tuple[int, ...], inplanes: int, grid: tuple[int, ...], os: int, dfb: bool, wm: float, eps: float
    ) -> None:
        sched = dilation_schedule([1, 2, 2, 2], 4, os, dfb)
        for i, ((stride, first_dil, dil), n) in enumerate(zip(sched, blocks, strict=True)):
            planes = scaled(64 * 2**i, wm)
            mult = grid if i == 3 else (1,) * n
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4, eps=eps)
                )
            units = [Bottleneck(inplanes, planes, stride, first_dil * mult[0], downsample, eps)]
            inplanes = planes * 4
            units += [Bottleneck(inplanes, planes, 1, dil * mult[j], None, eps) for j in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))

    def _build_beta(
        self, blocks: tuple[int, ...], inplanes: int, grid: tuple[int, ...], os: int, dfb: bool, wm: float, eps: float
    ) -> None:
        # unit strides of TensorFlow's resnet_v1_beta: the last unit of blocks 1-3 strides, block4 does not
        strides = [[1] * (n - 1) + [2 if i < 3 else 1] for i, n in enumerate(blocks)]
        sched = iter(dilation_schedule([s for block in strides for s in block], 4, os, dfb))
        for i, block in enumerate(strides):
            planes = scaled(64 * 2**i, wm)
            units = []
            for j, nominal in enumerate(block):
                stride, dil, _ = next(sched)
                if j == 0:
                    downsample: nn.Module | None = nn.Sequential(
                        nn.Conv2d(inplanes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4, eps=eps)
                    )
                else:
                    # a Subsample in every nominally strided unit (stride 1 once atrous), so that the module tree
                    # is the same at every output stride
                    downsample = Subsample(stride) if nominal > 1 else None
                mult = grid[j] if i == 3 else 1
                tap = i == 0 and j == 1
                units.append(Bottleneck(inplanes, planes, stride, dil * mult, downsample, eps, tap=tap))
                inplanes = planes * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.beta:
            x = self.maxpool(self.stem(x))
            x, low = _run_layer(self.layer1, x)
        else:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            low = x = self.layer1(x)
        mid = self.layer3(self.layer2(x))
        return low, mid, self.layer4(mid)
