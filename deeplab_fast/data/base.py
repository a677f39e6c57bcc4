"""The dataset base class: a list of (image, mask) files, checked on read, with a seeded transform."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from deeplab_fast.data._io import check_mask_values, check_same_size, load_image, load_label_array
from deeplab_fast.metrics import check_classes

# A dataset item index: a plain int, or (index, seed) as produced by the training samplers. The seed drives the
# random augmentation of that sample, so the same (index, seed) gives the same crop in any worker, on any rank,
# before and after a resume.
Index = int | tuple[int, int]

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def split_index(item: Index) -> tuple[int, int]:
    """(index, seed) from a dataset item index; a plain int uses the index itself as the seed."""
    if isinstance(item, tuple):
        return int(item[0]), int(item[1])
    return int(item), int(item)


class SegmentationDataset(Dataset):
    """Image/mask pairs. Items are (image, mask): without a transform, uint8 (3, H, W) and int64 (H, W).

    With a transform (deeplab_fast.data.TrainTransform / EvalTransform), whatever it returns: float32
    (3, h, w) normalized and int64 (h, w). Masks are checked: values in [0, num_classes) or ignore_index, and the
    same size as the image; errors name the file. ignore_index must not be a class index (ValueError).
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        num_classes: int,
        transform: Transform | None = None,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.num_classes, self.ignore_index = check_classes(num_classes, ignore_index)
        self.samples = list(samples)
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")

    def __len__(self) -> int:
        return len(self.samples)

    def load_mask(self, path: Path) -> torch.Tensor:
        """Class-index mask of one file, int64 (H, W). Subclasses remap raw ids here (Cityscapes)."""
        return torch.from_numpy(load_label_array(path))

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw, checked pair: uint8 image (3, H, W) and int64 mask (H, W)."""
        image_path, mask_path = self.samples[index]
        image = load_image(image_path)
        mask = self.load_mask(mask_path)
        check_same_size(image, mask, image_path, mask_path)
        check_mask_values(mask, self.num_classes, self.ignore_index, mask_path)
        return image, mask

    def __getitem__(self, item: Index) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = split_index(item)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        image, mask = self.load(index)
        if self.transform is not None:
            generator = torch.Generator().manual_seed(seed)
            image, mask = self.transform(image, mask, generator)
        return image, mask
