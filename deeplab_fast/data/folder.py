"""Any dataset of image/mask pairs in two folders, matched by file stem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deeplab_fast.data._io import IMAGE_SUFFIXES, require_dir
from deeplab_fast.data.base import SegmentationDataset, Transform

FOLDER_LAYOUT = """  <images_dir>/<name>.{jpg,png,...}
  <masks_dir>/<name>.png   (single-channel class indices, 255 = ignore)"""


class FolderDataset(SegmentationDataset):
    """Images in `images_dir`, masks (single-channel PNG of class indices, 255 = ignore) with the same stem in
    `masks_dir`. Every image must have a mask. Items as in SegmentationDataset."""

    def __init__(
        self,
        images_dir: str | Path,
        masks_dir: str | Path,
        num_classes: int,
        transform: Transform | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
    ) -> None:
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        require_dir(images_dir, "FolderDataset images_dir", FOLDER_LAYOUT)
        require_dir(masks_dir, "FolderDataset masks_dir", FOLDER_LAYOUT)
        masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
        samples = []
        for image_path in sorted(images_dir.iterdir()):
            if image_path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if image_path.stem not in masks:
                raise FileNotFoundError(
                    f"FolderDataset: image {image_path} has no mask {image_path.stem}.png in {masks_dir}"
                )
            samples.append((image_path, masks[image_path.stem]))
        if not samples:
            raise FileNotFoundError(f"FolderDataset: no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
        super().__init__(samples, num_classes, transform=transform, ignore_index=ignore_index, class_names=class_names)
