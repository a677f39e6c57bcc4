"""Atrous Spatial Pyramid Pooling (DeepLabV3/V3+)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deeplab_fast.models.layers import ConvBNAct, conv_block


class ASPP(nn.Module):
    """1x1 branch, 3x3 atrous branches (three, or none) and an image-pool branch, concatenated and projected.

    (N, Cin, h, w) -> (N, channels, h, w). Every branch is conv + BN + ReLU with `channels` outputs; the
    image-pool branch averages over (h, w), applies its 1x1 conv and is broadcast back (a bilinear resize
    of a 1x1 map is a broadcast for either align_corners). The projection is 1x1 conv + BN + ReLU + dropout.

    With `image_pooling_crop_size` (TensorFlow DeepLab's image pooling) the image-pool branch is instead an
    average pooling with stride 1, no padding and the kernel TensorFlow derives from the training crop:
    ((crop_h - 1) // output_stride + 1, (crop_w - 1) // output_stride + 1), capped at (h, w); its output goes
    through the 1x1 conv and is resized back to (h, w) bilinearly with `align_corners`. On an input of the crop
    size the kernel covers the whole map, so the branch is the global mean, as without the option.

    Args:
        rates: dilations of the 3x3 branches: three ints >= 1, or () for none (TensorFlow DeepLab's MobileNetV2
            models: image pooling and the 1x1 branch only; the projection then sees 2 * channels).
        separable: depthwise separable 3x3 branches (see SeparableConv) instead of dense ones.
        separable_inner_bn: BN + ReLU between depthwise and pointwise (paper) or not (smp).
        pool_position: "first" (TensorFlow DeepLab) or "last" (torchvision, smp) in the concatenation.
        dropout: dropout probability after the projection (train mode only).
        eps: BatchNorm eps.
        image_pooling_crop_size: (crop_h, crop_w) ints >= 1, or None (global mean).
        output_stride: the stride of the input features (sets the pooling kernel; attribute `output_stride`).
        align_corners: resize convention of the pooled map (used only when it is larger than 1x1).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        rates: tuple[int, ...] = (6, 12, 18),
        *,
        separable: bool = True,
        separable_inner_bn: bool = True,
        pool_position: str = "first",
        dropout: float = 0.1,
        eps: float = 1e-5,
        image_pooling_crop_size: Sequence[int] | None = None,
        output_stride: int = 16,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        crop = image_pooling_crop_size
        if crop is not None:
            if (
                not isinstance(crop, Sequence)
                or len(crop) != 2
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in crop)
            ):
                raise ValueError(f"image_pooling_crop_size must be two ints >= 1 (height, width) or None, got {crop!r}")
            crop = (int(crop[0]), int(crop[1]))
        self.image_pooling_crop_size = crop
        self.output_stride = output_stride
        self.align_corners = align_corners
        if pool_position not in ("first", "last"):
            raise ValueError(f"aspp_pool_position must be 'first' or 'last', got {pool_position!r}")
        if len(tuple(rates)) not in (0, 3) or any(not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f"aspp_rates must be three ints >= 1 or () (no atrous branches), got {rates!r}")
        self.rates = tuple(rates)
        self.branch1x1 = ConvBNAct(in_channels, channels, 1, eps=eps)
        self.branches = nn.ModuleList(
            conv_block(in_channels, channels, separable=separable, dilation=r, inner_bn=separable_inner_bn, eps=eps)
            for r in self.rates
        )
        self.pool = ConvBNAct(in_channels, channels, 1, eps=eps)
        self.pool_position = pool_position
        self.project = ConvBNAct((2 + len(self.rates)) * channels, channels, 1, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def pool_kernel(self, size: Sequence[int]) -> tuple[int, int] | None:
        """The average-pooling kernel for features of spatial `size` (h, w), or None for the global mean (no
        crop size set, or a kernel that covers the whole map)."""
        if self.image_pooling_crop_size is None:
            return None
        kernel = tuple(
            min((c - 1) // self.output_stride + 1, s) for c, s in zip(self.image_pooling_crop_size, size, strict=True)
        )
        return None if kernel == tuple(size) else kernel

    def pool_input(self, x: torch.Tensor) -> torch.Tensor:
        """The averaged features the image-pool conv sees: (N, Cin, h, w) -> (N, Cin, ph, pw), 1x1 unless
        image_pooling_crop_size gives a kernel smaller than (h, w)."""
        kernel = self.pool_kernel((x.shape[2], x.shape[3]))
        if kernel is None:
            return x.mean(dim=(2, 3), keepdim=True)
        return F.avg_pool2d(x, kernel, stride=1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level features, (N, Cin, h, w) -> (N, channels, ph, pw) (1x1 unless see pool_input)."""
        return self.pool(self.pool_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(x)
        if pooled.shape[2:] == (1, 1):
            pooled = pooled.expand(-1, -1, x.shape[2], x.shape[3])
        else:
            pooled = F.interpolate(pooled, (x.shape[2], x.shape[3]), mode="bilinear", align_corners=self.align_corners)
        feats = [self.branch1x1(x), *(b(x) for b in self.branches)]
        feats = [pooled, *feats] if self.pool_position == "first" else [*feats, pooled]
        return self.dropout(self.project(torch.cat(feats, dim=1)))
