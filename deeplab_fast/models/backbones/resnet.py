"""ResNet-50/101 (bottleneck, torchvision layout and parameter names) with atrous last stages."""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast.models.backbones import dilation_schedule
from deeplab_fast.models.layers import scaled

_DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 conv); same parameter names."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None, eps: float
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet whose layer3/layer4 trade stride for dilation to reach `output_stride`.

    Parameter names match torchvision's ResNet (conv1, bn1, layer1..layer4; no fc), so a torchvision
    ImageNet state dict loads as is (its fc.* keys are ignored by load_weights(backbone_only=True)).

    Args:
        depth: "resnet50" or "resnet101".
        output_stride: 8, 16 or 32.
        multi_grid: per-unit dilation multipliers of layer4, e.g. (1, 2, 4); None for all ones.
        dilate_first_block: whether the first unit of a dilated stage already uses the stage's dilation
            (smp, True) or the previous one (torchvision, False).
        width_mult: scales every width (for small test models); 1.0 is the real network.
        eps: BatchNorm eps.
    Forward: (N, 3, H, W) -> (layer1 [stride 4, 256 ch], layer3 [1024 ch], layer4 [2048 ch]).
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
        blocks = _DEPTHS[depth]
        if multi_grid is not None and len(multi_grid) != blocks[3]:
            raise ValueError(f"multi_grid must have {blocks[3]} entries (units of layer4), got {multi_grid!r}")
        stem = scaled(64, width_mult)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        sched = dilation_schedule([1, 2, 2, 2], 4, output_stride, dilate_first_block)
        inplanes = stem
        for i, ((stride, first_dil, dil), n) in enumerate(zip(sched, blocks, strict=True)):
            planes = scaled(64 * 2**i, width_mult)
            grid = multi_grid if (i == 3 and multi_grid is not None) else (1,) * n
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4, eps=eps)
                )
            units = [Bottleneck(inplanes, planes, stride, first_dil * grid[0], downsample, eps)]
            inplanes = planes * 4
            units += [Bottleneck(inplanes, planes, 1, dil * grid[j], None, eps) for j in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
        self.low_level_channels = scaled(64, width_mult) * 4
        self.mid_channels = scaled(256, width_mult) * 4
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        mid = self.layer3(self.layer2(low))
        return low, mid, self.layer4(mid)
