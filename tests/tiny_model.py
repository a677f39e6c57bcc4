"""A small stand-in segmentation network for training tests: (N, 3, H, W) -> (N, K, H, W), with BatchNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySeg(nn.Module):
    """conv-BN-ReLU encoder at stride 4 + 1x1 classifier, bilinearly upsampled to the input size."""

    def __init__(self, num_classes: int = 3, width: int = 8, align_corners: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.features(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)


def tiny_seg(
    num_classes: int = 3, align_corners: bool = False, width: int = 8, dropout: float = 0.1, **_: object
) -> TinySeg:
    """Factory with deeplabv3plus's keyword arguments (backbone, output_stride, ... are ignored)."""
    return TinySeg(num_classes=num_classes, width=width, align_corners=align_corners, dropout=dropout)
