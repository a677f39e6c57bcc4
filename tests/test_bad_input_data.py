"""Bad input to datasets, transforms and metrics: errors that name their cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_fast.data import EvalTransform, FolderDataset, SyntheticShapes, TrainTransform
from deeplab_fast.metrics import ConfusionMatrix


def _folder(root: Path) -> tuple[Path, Path]:
    (root / "img").mkdir(parents=True)
    (root / "msk").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "img" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(root / "msk" / "a.png")
    return root / "img", root / "msk"


@pytest.mark.parametrize("ignore_index", [0, 2])
def test_an_ignore_label_that_is_a_class_is_rejected(tmp_path: Path, ignore_index: int) -> None:
    # it used to drop that class silently from the masks' checks and from the metric
    images, masks = _folder(tmp_path)
    with pytest.raises(ValueError, match=f"ignore_index={ignore_index} is one of the classes 0..2"):
        FolderDataset(images, masks, num_classes=3, ignore_index=ignore_index)
    with pytest.raises(ValueError, match=f"ignore_index={ignore_index} is one of the classes 0..2"):
        ConfusionMatrix(3, ignore_index=ignore_index)
    assert FolderDataset(images, masks, num_classes=3, ignore_index=-1).ignore_index == -1
    assert ConfusionMatrix(300, ignore_index=-1).ignore_index == -1
    with pytest.raises(ValueError, match="ignore_index=255 is one of the classes 0..299"):
        ConfusionMatrix(300)  # 255, the default, is a class of a 300-class model


def test_num_classes_and_class_names_are_checked(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path)
    with pytest.raises(ValueError, match="num_classes must be a positive int; got '3'"):
        FolderDataset(images, masks, num_classes="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class_names has 2 names but num_classes is 3"):
        FolderDataset(images, masks, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        ConfusionMatrix(2.0)  # type: ignore[arg-type]


def test_a_file_given_as_a_folder_is_named(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"masks_dir: folder .*a\.png is a file, not a folder"):
        FolderDataset(images, masks / "a.png", num_classes=3)


def test_transform_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="scale_range must be"):
        TrainTransform(crop_size=16, scale_range=("a", 2.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale_range must be"):
        TrainTransform(crop_size=16, scale_range=(0.5, 1.0, 2.0))
    with pytest.raises(ValueError, match="std must be positive"):
        TrainTransform(crop_size=16, std=(0.2, 0.0, 0.2))  # would divide by zero: inf images, NaN loss
    with pytest.raises(ValueError, match="mean must be 3 finite numbers"):
        EvalTransform(mean=(0.5, float("nan"), 0.5))
    with pytest.raises(TypeError, match="flip must be True or False; got 'no'"):
        TrainTransform(crop_size=16, flip="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crop_size must be a positive int or a pair"):
        EvalTransform(crop_size=(16, 0))
    x, m = EvalTransform(crop_size=(12, 10))(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(8, 8).long())
    assert x.shape == (3, 12, 10) and m.shape == (12, 10)


def test_synthetic_dataset_still_builds() -> None:
    ds = SyntheticShapes(length=2, size=16, num_classes=3)
    assert ds.ignore_index == 255 and len(ds.class_names) == 3
