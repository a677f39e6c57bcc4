"""Training and evaluation transforms of the DeepLab recipe, driven by an explicit torch.Generator.

Train: random scale in [0.5, 2.0] -> normalize -> pad to the crop (image with the mean, i.e. 0 after
normalization; label with the ignore label, never 0) -> random crop -> random horizontal flip.
Eval: normalize -> pad to the crop (no resizing, so the metric is computed on the original pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deeplab_fast.data._checks import check_bool, check_mean_std, float_tuple, positive_pair

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (3, H, W) in [0, 255] -> float32 (3, H, W): (x / 255 - mean) / std."""
    x = image.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(m).div_(s)


def pad_to(
    image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad float image (C, H, W) with 0 and mask (H, W) with ignore_index on the bottom/right to at least `size`."""
    ph = max(size[0] - image.shape[-2], 0)
    pw = max(size[1] - image.shape[-1], 0)
    if ph == 0 and pw == 0:
        return image, mask
    image = F.pad(image, (0, pw, 0, ph), value=0.0)
    mask = F.pad(mask, (0, pw, 0, ph), value=ignore_index)
    return image, mask


class TrainTransform:
    """Random scale, pad, random crop and flip. Call: (uint8 (3,H,W), int64 (H,W), generator) -> (float32 (3,c,c),
    int64 (c,c)). The same generator seed always gives the same output."""

    def __init__(
        self,
        crop_size: int | Sequence[int] = 513,
        scale_range: Sequence[float] = (0.5, 2.0),
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = positive_pair(crop_size, "crop_size")
        scales = float_tuple(scale_range, "scale_range", "(low, high) with 0 < low <= high")
        if len(scales) != 2 or not 0 < scales[0] <= scales[1] < math.inf:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high; got {scale_range!r}")
        self.scale_range = scales
        self.flip = check_bool(flip, "flip")
        self.mean, self.std = check_mean_std(mean, std)
        self.ignore_index = ignore_index

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * torch.rand((), generator=generator).item()
        x = normalize(image, self.mean, self.std)
        h, w = x.shape[-2:]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        x, mask = pad_to(x, mask, self.crop_size, self.ignore_index)
        ch, cw = self.crop_size
        top = int(torch.randint(0, x.shape[-2] - ch + 1, (), generator=generator))
        left = int(torch.randint(0, x.shape[-1] - cw + 1, (), generator=generator))
        x = x[:, top : top + ch, left : left + cw]
        mask = mask[top : top + ch, left : left + cw]
        if self.flip and torch.rand((), generator=generator).item() < 0.5:
            x = x.flip(-1)
            mask = mask.flip(-1)
        return x.contiguous(), mask.contiguous()


class EvalTransform:
    """Normalize and pad to `crop_size` (never resize); crop_size None only normalizes.
    Call: (uint8 (3,H,W), int64 (H,W), generator) -> (float32 (3,H',W'), int64 (H',W'))."""

    def __init__(
        self,
        crop_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = None if crop_size is None else positive_pair(crop_size, "crop_size")
        self.mean, self.std = check_mean_std(mean, std)
        self.ignore_index = ignore_index

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalize(image, self.mean, self.std)
        if self.crop_size is not None:
            x, mask = pad_to(x, mask, self.crop_size, self.ignore_index)
        return x, mask


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (float (3,H_i,W_i), int64 (H_i,W_i)) pairs into (N,3,H,W), (N,H,W), padding each to the largest size
    (images with 0 = the mean, masks with ignore_index), so images of different sizes can share a batch."""
    h = max(img.shape[-2] for img, _ in batch)
    w = max(img.shape[-1] for img, _ in batch)
    images, masks = zip(*(pad_to(img, m, (h, w), ignore_index) for img, m in batch), strict=True)
    return torch.stack(images), torch.stack(masks)
