"""Cityscapes fine annotations, mapped from the 34 label ids to the 19 training ids (255 = ignore)."""

from __future__ import annotations

from pathlib import Path

import torch

from deeplab_fast.data._io import load_label_array, require_dir
from deeplab_fast.data.base import SegmentationDataset, Transform

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# label id (0..33) -> train id, from the official label definitions; every other id is void.
_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
NUM_LABEL_IDS = 34


def label_id_to_train_id_table(ignore_index: int = 255) -> torch.Tensor:
    """int64 (34,) lookup table: train id of each Cityscapes label id (ignore_index for void ids)."""
    table = torch.full((NUM_LABEL_IDS,), ignore_index, dtype=torch.int64)
    for label_id, train_id in _TRAIN_IDS.items():
        table[label_id] = train_id
    return table


CITYSCAPES_LAYOUT = """  <root>/
    leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
    gtFine/<split>/<city>/<name>_gtFine_labelIds.png"""


class Cityscapes(SegmentationDataset):
    """Cityscapes fine (19 classes). split: "train", "val" or "test". Items as in SegmentationDataset."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        splits = ("train", "val", "test")
        if split not in splits:
            raise ValueError(f"Cityscapes split must be one of {splits}, got {split!r}")
        root = Path(root)
        image_dir = root / "leftImg8bit" / split
        label_dir = root / "gtFine" / split
        require_dir(image_dir, "Cityscapes", CITYSCAPES_LAYOUT)
        require_dir(label_dir, "Cityscapes", CITYSCAPES_LAYOUT)
        samples = []
        for image_path in sorted(image_dir.glob("*/*_leftImg8bit.png")):
            stem = image_path.name[: -len("_leftImg8bit.png")]
            mask_path = label_dir / image_path.parent.name / f"{stem}_gtFine_labelIds.png"
            if not mask_path.is_file():
                raise FileNotFoundError(f"Cityscapes: no label file {mask_path} for image {image_path}")
            samples.append((image_path, mask_path))
        if not samples:
            raise FileNotFoundError(f"Cityscapes: no *_leftImg8bit.png images under {image_dir}/<city>/")
        super().__init__(samples, num_classes=19, transform=transform, class_names=CITYSCAPES_CLASSES)
        self._table = label_id_to_train_id_table(self.ignore_index)
        self.root = root
        self.split = split

    def load_mask(self, path: Path) -> torch.Tensor:
        ids = torch.from_numpy(load_label_array(path))
        bad = (ids < 0) | (ids >= NUM_LABEL_IDS)
        if bool(bad.any()):
            values = torch.unique(ids[bad])[:10].tolist()
            raise ValueError(f"Cityscapes label file {path} has values {values} outside the label ids 0..33")
        return self._table[ids]
