"""Atrous Spatial Pyramid Pooling (DeepLabV3/V3+)."""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast.models.layers import ConvBNAct, conv_block


class ASPP(nn.Module):
    """1x1 branch, three 3x3 atrous branches and an image-pool branch, concatenated and projected.

    (N, Cin, h, w) -> (N, channels, h, w). Every branch is conv + BN + ReLU with `channels` outputs; the
    image-pool branch averages over (h, w), applies its 1x1 conv and is broadcast back (a bilinear resize
    of a 1x1 map is a broadcast for either align_corners). The projection is 1x1 conv + BN + ReLU + dropout.

    Args:
        rates: dilations of the three 3x3 branches.
        separable: depthwise separable 3x3 branches (see SeparableConv) instead of dense ones.
        separable_inner_bn: BN + ReLU between depthwise and pointwise (paper) or not (smp).
        pool_position: "first" (TensorFlow DeepLab) or "last" (torchvision, smp) in the concatenation.
        dropout: dropout probability after the projection (train mode only).
        eps: BatchNorm eps.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        rates: tuple[int, int, int] = (6, 12, 18),
        *,
        separable: bool = True,
        separable_inner_bn: bool = True,
        pool_position: str = "first",
        dropout: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if pool_position not in ("first", "last"):
            raise ValueError(f"aspp_pool_position must be 'first' or 'last', got {pool_position!r}")
        if len(tuple(rates)) != 3 or any(not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f"aspp_rates must be three ints >= 1, got {rates!r}")
        self.rates = tuple(rates)
        self.branch1x1 = ConvBNAct(in_channels, channels, 1, eps=eps)
        self.branches = nn.ModuleList(
            conv_block(in_channels, channels, separable=separable, dilation=r, inner_bn=separable_inner_bn, eps=eps)
            for r in self.rates
        )
        self.pool = ConvBNAct(in_channels, channels, 1, eps=eps)
        self.pool_position = pool_position
        self.project = ConvBNAct(5 * channels, channels, 1, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level features, (N, Cin, h, w) -> (N, channels, 1, 1)."""
        return self.pool(x.mean(dim=(2, 3), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(x).expand(-1, -1, x.shape[2], x.shape[3])
        feats = [self.branch1x1(x), *(b(x) for b in self.branches)]
        feats = [pooled, *feats] if self.pool_position == "first" else [*feats, pooled]
        return self.dropout(self.project(torch.cat(feats, dim=1)))
