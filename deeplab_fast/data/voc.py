"""PASCAL VOC 2012 segmentation, with the SBD-augmented training set (train_aug, 10,582 images)."""

from __future__ import annotations

from pathlib import Path

from deeplab_fast.data._io import read_list, require_dir
from deeplab_fast.data.base import SegmentationDataset, Transform

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

VOC_LAYOUT = """  <root>/                         (VOC2012 itself, or a folder holding VOCdevkit/VOC2012)
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png      (palette PNGs, 255 = ignore)
    ImageSets/Segmentation/{train,val,trainval}.txt
    SegmentationClassAug/<id>.png   (only for split="train_aug": SBD-augmented masks)
    ImageSets/Segmentation/train_aug.txt"""


def _voc_dir(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 (21 classes, 255 = ignore). split: "train", "val", "trainval" or "train_aug".

    "train_aug" reads masks from SegmentationClassAug/ and ids from ImageSets/Segmentation/train_aug.txt
    (the SBD-augmented set). Items as in SegmentationDataset.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        splits = ("train", "val", "trainval", "train_aug")
        if split not in splits:
            raise ValueError(f"VOCSegmentation split must be one of {splits}, got {split!r}")
        base = _voc_dir(Path(root))
        require_dir(base / "JPEGImages", "VOCSegmentation", VOC_LAYOUT)
        mask_dir = base / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        require_dir(mask_dir, f"VOCSegmentation split={split!r}", VOC_LAYOUT)
        ids = read_list(base / "ImageSets" / "Segmentation" / f"{split}.txt", "VOCSegmentation", VOC_LAYOUT)
        samples = [(base / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in ids]
        for image_path, mask_path in samples[:1] + samples[-1:]:
            for p in (image_path, mask_path):
                if not p.is_file():
                    raise FileNotFoundError(f"VOCSegmentation: {p} listed in split {split!r} does not exist")
        super().__init__(samples, num_classes=21, transform=transform, class_names=VOC_CLASSES)
        self.root = base
        self.split = split
