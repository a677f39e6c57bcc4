"""Datasets, transforms and samplers: layouts, label handling, seeded augmentation, bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_fast.data import (
    Cityscapes,
    EvalTransform,
    FolderDataset,
    ResumableDistributedSampler,
    ShardSampler,
    SyntheticShapes,
    TrainTransform,
    VOCSegmentation,
    pad_collate,
)


def _write_pair(image_path: Path, mask_path: Path, mask: np.ndarray, image_size=None, mode="L") -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    h, w = image_size or mask.shape
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image_path)
    if mode == "P":
        im = Image.fromarray(mask.astype(np.uint8), mode="P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        im.save(mask_path)
    else:
        Image.fromarray(mask.astype(np.uint8), mode=mode).save(mask_path)


def _voc(root: Path, ids=("a", "b"), aug=False) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(ids):
        mask = np.full((12, 16), i, dtype=np.uint8)
        mask[0, :] = 255
        _write_pair(base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClass" / f"{name}.png", mask, mode="P")
        if aug:
            (base / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(mask).save(base / "SegmentationClassAug" / f"{name}.png")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids) + "\n")
    (lists / "val.txt").write_text(ids[0] + "\n")
    if aug:
        (lists / "train_aug.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_layout_palette_masks_and_train_aug(tmp_path):
    root = _voc(tmp_path, aug=True)
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 2 and ds.num_classes == 21
    image, mask = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 16)
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {1, 255}  # palette indices, not colors
    assert len(VOCSegmentation(root / "VOCdevkit" / "VOC2012", "val")) == 1  # the VOC2012 folder itself works too
    aug = VOCSegmentation(root, "train_aug")
    assert aug.samples[0][1].parent.name == "SegmentationClassAug"


def test_voc_missing_folders_name_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"JPEGImages.*\n.*VOC2012"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    root = _voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug"):
        VOCSegmentation(root, "train_aug")
    with pytest.raises(ValueError, match="split"):
        VOCSegmentation(root, "test-dev")


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[7, 8, 26, 33], [0, 1, 255 - 222, 24]], dtype=np.uint8)  # 33 = bicycle, 0/1 = void
    for split in ("train", "val"):
        _write_pair(
            tmp_path / "leftImg8bit" / split / "aachen" / "aachen_000000_000019_leftImg8bit.png",
            tmp_path / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_labelIds.png",
            ids,
        )
    ds = Cityscapes(tmp_path, "val")
    _, mask = ds[0]
    assert mask.tolist() == [[0, 1, 13, 18], [255, 255, 18, 11]]
    bad = ids.copy()
    bad[0, 0] = 40
    _write_pair(
        tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png",
        tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png",
        bad,
    )
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png.*\[40\]"):
        Cityscapes(tmp_path, "train")[0]
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit.*\n.*gtFine"):
        Cityscapes(tmp_path / "missing", "train")


def test_folder_dataset_bad_masks_are_named(tmp_path):
    good = np.zeros((8, 8), dtype=np.uint8)
    good[2:5, 2:5] = 2
    _write_pair(tmp_path / "img" / "ok.png", tmp_path / "msk" / "ok.png", good)
    outside = good.copy()
    outside[0, 0] = 7  # not a class and not 255
    _write_pair(tmp_path / "img" / "outside.png", tmp_path / "msk" / "outside.png", outside)
    _write_pair(tmp_path / "img" / "small.png", tmp_path / "msk" / "small.png", good, image_size=(8, 9))
    ds = FolderDataset(tmp_path / "img", tmp_path / "msk", num_classes=3)
    by_name = {p[0].stem: i for i, p in enumerate(ds.samples)}
    assert ds[by_name["ok"]][1].max() == 2
    with pytest.raises(ValueError, match=r"outside\.png has values \[7\]"):
        ds[by_name["outside"]]
    with pytest.raises(ValueError, match=r"small\.png.*9x8.*small\.png.*8x8"):
        ds[by_name["small"]]
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "msk" / "ok.png")
    with pytest.raises(ValueError, match=r"ok\.png.*mode 'RGB'"):
        ds[by_name["ok"]]
    (tmp_path / "img" / "lonely.png").write_bytes((tmp_path / "img" / "ok.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="lonely"):
        FolderDataset(tmp_path / "img", tmp_path / "msk", num_classes=3)
    with pytest.raises(FileNotFoundError, match="masks_dir"):
        FolderDataset(tmp_path / "img", tmp_path / "nope", num_classes=3)


def test_synthetic_is_exact_deterministic_and_saves(tmp_path):
    ds = SyntheticShapes(length=6, size=32, num_classes=4, seed=3)
    image, mask = ds[2]
    again_image, again_mask = SyntheticShapes(length=6, size=32, num_classes=4, seed=3)[2]
    assert torch.equal(image, again_image) and torch.equal(mask, again_mask)
    assert not torch.equal(mask, SyntheticShapes(length=6, size=32, num_classes=4, seed=4)[2][1])
    assert mask.min() >= 0 and mask.max() < 4 and (mask > 0).any()
    # exact masks: foreground pixels take their class color (far from the dark background)
    assert image.float().mean(0)[mask > 0].min() > image.float().mean(0)[mask == 0].max() - 60
    ds.save(tmp_path / "i", tmp_path / "m")
    folder = FolderDataset(tmp_path / "i", tmp_path / "m", num_classes=4)
    assert torch.equal(folder[2][0], image) and torch.equal(folder[2][1], mask)


def test_train_transform_seeded_pads_with_mean_and_ignore():
    image = torch.full((3, 10, 12), 200, dtype=torch.uint8)
    mask = torch.ones(10, 12, dtype=torch.int64)
    tf = TrainTransform(crop_size=40, scale_range=(1.0, 1.0), flip=False)
    x, m = tf(image, mask, torch.Generator().manual_seed(0))
    assert x.shape == (3, 40, 40) and m.shape == (40, 40)
    assert (m == 255).sum() == 40 * 40 - 10 * 12  # padding is ignore, never 0
    assert (m == 0).sum() == 0
    assert torch.all(x[:, m == 255] == 0)  # padded with the mean: 0 after normalization
    tf = TrainTransform(crop_size=16, scale_range=(0.5, 2.0))
    big = torch.randint(0, 255, (3, 30, 30), dtype=torch.uint8)
    labels = torch.randint(0, 5, (30, 30))
    a = tf(big, labels, torch.Generator().manual_seed(7))
    b = tf(big, labels, torch.Generator().manual_seed(7))
    c = tf(big, labels, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert set(a[1].unique().tolist()) <= set(range(5)) | {255}  # nearest resampling keeps labels


def test_eval_transform_pads_never_resizes_and_collate():
    image = torch.randint(0, 255, (3, 9, 7), dtype=torch.uint8)
    mask = torch.randint(0, 3, (9, 7))
    x, m = EvalTransform(crop_size=12)(image, mask)
    assert x.shape == (3, 12, 12) and torch.equal(m[:9, :7], mask) and (m[9:] == 255).all()
    x2, m2 = EvalTransform(crop_size=None)(image, mask)
    assert x2.shape == (3, 9, 7)
    xs, ms = pad_collate([(x2, m2), (x, m)])
    assert xs.shape == (2, 3, 12, 12) and (ms[0, 9:] == 255).all()


def test_samplers_resume_position_and_shard_every_sample_once():
    ds = SyntheticShapes(length=10, size=16)
    full = ResumableDistributedSampler(ds, num_replicas=1, rank=0, seed=5)
    full.set_epoch(2)
    order = list(full)
    resumed = ResumableDistributedSampler(ds, num_replicas=1, rank=0, seed=5)
    resumed.set_epoch(2)
    resumed.set_position(4)
    assert list(resumed) == order[4:] and len(resumed) == 6
    assert len({s for _, s in order}) == 10  # distinct augmentation seeds
    ranks = [list(ResumableDistributedSampler(ds, 2, r, seed=5)) for r in range(2)]
    fresh = ResumableDistributedSampler(ds, 1, 0, seed=5)
    assert sorted(ranks[0] + ranks[1]) == sorted(fresh)
    shards = [list(ShardSampler(7, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
