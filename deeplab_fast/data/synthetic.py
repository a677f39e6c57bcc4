"""SyntheticShapes: images of random ellipses, rectangles and triangles with exact masks (tests and demos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplab_fast._files import atomic_write
from deeplab_fast.data.base import SegmentationDataset, Transform

# Base color of each foreground class (cycled when there are more classes); background is dark and noisy.
_PALETTE = ((230, 60, 50), (50, 200, 70), (60, 90, 230), (230, 210, 40), (200, 60, 220), (40, 210, 210))
_SHAPES = ("ellipse", "rectangle", "triangle")


def _sample_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63 - 1)


class SyntheticShapes(SegmentationDataset):
    """`length` images of `size` x `size` pixels with 1..max_shapes large shapes each, class c in 1..num_classes-1
    drawn as shape type (c - 1) % 3 (ellipse, rectangle, triangle) in a class color with jitter and noise;
    class 0 is background. Sample i depends only on (seed, i), so the dataset needs no storage. Items as in
    SegmentationDataset: uint8 (3, size, size) and int64 (size, size) without a transform.
    """

    def __init__(
        self,
        length: int = 64,
        size: int = 64,
        num_classes: int = 3,
        seed: int = 0,
        max_shapes: int = 3,
        transform: Transform | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"SyntheticShapes needs num_classes >= 2 (background + shapes), got {num_classes}")
        if size < 8:
            raise ValueError(f"SyntheticShapes size must be >= 8 pixels, got {size}")
        if length < 1 or max_shapes < 1:
            raise ValueError(f"SyntheticShapes length and max_shapes must be >= 1, got {length}, {max_shapes}")
        names = ["background"] + [f"{_SHAPES[(c - 1) % 3]}{c}" for c in range(1, num_classes)]
        super().__init__([], num_classes, transform=transform, class_names=names)
        self.length, self.size, self.seed, self.max_shapes = int(length), int(size), int(seed), int(max_shapes)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(_sample_seed(self.seed, index))
        s = self.size
        yy, xx = torch.meshgrid(
            torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij"
        )
        gray = 20 + 40 * torch.rand((), generator=g)
        image = gray + 25 * torch.rand(3, s, s, generator=g)
        mask = torch.zeros(s, s, dtype=torch.int64)
        n = int(torch.randint(1, self.max_shapes + 1, (), generator=g))
        for _ in range(n):
            c = int(torch.randint(1, self.num_classes, (), generator=g))
            cy, cx = (s * (0.15 + 0.7 * torch.rand(2, generator=g))).tolist()
            ry, rx = (s * (0.12 + 0.16 * torch.rand(2, generator=g))).tolist()
            kind = _SHAPES[(c - 1) % 3]
            if kind == "ellipse":
                region = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            elif kind == "rectangle":
                region = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
            else:  # upright triangle: apex at the top, base at the bottom
                t = (yy - (cy - ry)) / (2 * ry)
                region = (t >= 0) & (t <= 1) & ((xx - cx).abs() <= t * rx)
            base = torch.tensor(_PALETTE[(c - 1) % len(_PALETTE)], dtype=torch.float32)
            color = base + 40 * (torch.rand(3, generator=g) - 0.5)
            shaded = color.view(3, 1, 1) + 20 * (torch.rand(3, s, s, generator=g) - 0.5)
            image = torch.where(region, shaded, image)
            mask[region] = c
        return image.round().clamp(0, 255).to(torch.uint8), mask

    def save(self, images_dir: str | Path, masks_dir: str | Path) -> None:
        """Write every sample as <i>.png image and <i>.png mask (mode L), readable by FolderDataset.

        Each file is written atomically with the umask's permissions (deeplab_fast._files)."""
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        for i in range(len(self)):
            image, mask = self.load(i)
            rgb = Image.fromarray(image.permute(1, 2, 0).numpy())
            labels = Image.fromarray(mask.numpy().astype(np.uint8), mode="L")
            atomic_write(images_dir / f"{i:05d}.png", lambda fh, im=rgb: im.save(fh, format="PNG"))
            atomic_write(masks_dir / f"{i:05d}.png", lambda fh, im=labels: im.save(fh, format="PNG"))
