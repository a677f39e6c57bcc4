"""DeepLabV3+ decoder: fuse upsampled encoder features with reduced stride-4 features."""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast.models.layers import ConvBNAct, ResizeConcat, conv_block


class Decoder(nn.Module):
    """(high (N, C, h, w), low (N, Cl, H4, W4)) -> (N, channels, H4, W4).

    The low-level features go through 1x1 conv + BN + ReLU to `low_level_channels`; the encoder features
    are bilinearly resized to the low-level size and concatenated first (`merge`, a ResizeConcat); then
    `num_convs` 3x3 conv + BN + ReLU blocks (dense or separable) with `channels` filters.
    """

    def __init__(
        self,
        in_channels: int,
        low_in_channels: int,
        *,
        low_level_channels: int = 48,
        channels: int = 256,
        num_convs: int = 2,
        separable: bool = True,
        separable_inner_bn: bool = True,
        align_corners: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"decoder_convs must be >= 1, got {num_convs}")
        self.reduce = ConvBNAct(low_in_channels, low_level_channels, 1, eps=eps)
        chans = [in_channels + low_level_channels] + [channels] * num_convs
        self.convs = nn.Sequential(
            *(
                conv_block(chans[i], chans[i + 1], separable=separable, inner_bn=separable_inner_bn, eps=eps)
                for i in range(num_convs)
            )
        )
        self.align_corners = align_corners
        self.merge = ResizeConcat(align_corners)
        self.out_channels = channels

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.reduce(low)
        return self.convs(self.merge([high, low], (low.shape[2], low.shape[3])))
