"""Build the model and the datasets a Config describes."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn
from torch.utils.data import Dataset

from deeplab_fast.data import (
    Cityscapes,
    EvalTransform,
    FolderDataset,
    SyntheticShapes,
    TrainTransform,
    VOCSegmentation,
)
from deeplab_fast.training.config import Config, ConfigError, DataConfig, ModelConfig

_DATASET_CLASSES = {"voc": 21, "cityscapes": 19}


def _factory(spec: str | None) -> Callable[..., nn.Module]:
    if spec is None:
        from deeplab_fast.models import deeplabv3plus

        return deeplabv3plus
    if ":" not in spec:
        raise ConfigError(f"model.factory must look like 'package.module:function', got {spec!r}")
    module_name, attr = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model.factory {spec!r} cannot be imported: {exc}") from exc


def describe_model(cfg: ModelConfig) -> str:
    """A one-line name of the model a ModelConfig builds (stored in checkpoints)."""
    name = cfg.factory or "deeplabv3plus"
    return (
        f"{name}(backbone={cfg.backbone}, num_classes={cfg.num_classes}, output_stride={cfg.output_stride}, "
        f"separable={cfg.separable}, decoder={cfg.decoder}, options={cfg.options})"
    )


def build_model(cfg: ModelConfig) -> nn.Module:
    """The segmentation model of a ModelConfig: (N, 3, H, W) float -> logits (N, num_classes, H, W)."""
    factory = _factory(cfg.factory)
    model = factory(
        backbone=cfg.backbone,
        num_classes=cfg.num_classes,
        output_stride=cfg.output_stride,
        separable=cfg.separable,
        decoder=cfg.decoder,
        align_corners=cfg.align_corners,
        **cfg.options,
    )
    if cfg.pretrained:
        from deeplab_fast.models.weights import load_weights

        load_weights(model, cfg.pretrained, backbone_only=True)
    if cfg.weights:
        from deeplab_fast.training.checkpoint import load_model_state

        load_model_state(model, cfg.weights)
    return model


def normalization(cfg: Config) -> tuple[list[float], list[float]]:
    """The input (mean, std) of training and evaluation: the model's own (model.options input_mean/input_std,
    e.g. TensorFlow DeepLab's 0.5/0.5) when set, else data.mean/data.std. A data.mean/std that differs from
    the model's is a ConfigError: the weights would be trained on one normalisation and used with another."""
    d = cfg.data
    result = []
    for key, data_value in (("mean", d.mean), ("std", d.std)):
        model_value = cfg.model.options.get(f"input_{key}")
        if model_value is None:
            result.append([float(v) for v in data_value])
            continue
        default = getattr(DataConfig(), key)
        if [float(v) for v in data_value] not in ([float(v) for v in default], [float(v) for v in model_value]):
            raise ConfigError(
                f"data.{key}={list(data_value)} differs from the model's model.options.input_{key}="
                f"{list(model_value)}; set one of them"
            )
        result.append([float(v) for v in model_value])
    return result[0], result[1]


def build_datasets(cfg: Config, train: bool = True, val: bool = True) -> tuple[Dataset | None, Dataset | None]:
    """(train dataset with TrainTransform, validation dataset with EvalTransform); None where not asked for or
    not configured (a folder dataset without val_images)."""
    d = cfg.data
    k = cfg.model.num_classes
    expected = _DATASET_CLASSES.get(d.dataset)
    if expected is not None and expected != k:
        raise ConfigError(f"data.dataset={d.dataset} has {expected} classes but model.num_classes={k}")
    mean, std = normalization(cfg)
    train_tf = TrainTransform(d.crop_size, d.scale_range, d.flip, mean, std)
    eval_tf = EvalTransform(d.eval_crop_size, mean, std)
    train_ds = val_ds = None
    if d.dataset == "voc":
        train_ds = VOCSegmentation(d.root, d.train_split, train_tf) if train else None
        val_ds = VOCSegmentation(d.root, d.val_split, eval_tf) if val else None
    elif d.dataset == "cityscapes":
        train_ds = Cityscapes(d.root, d.train_split, train_tf) if train else None
        val_ds = Cityscapes(d.root, d.val_split, eval_tf) if val else None
    elif d.dataset == "folder":
        train_ds = FolderDataset(d.train_images, d.train_masks, k, train_tf) if train else None
        if val and d.val_images and d.val_masks:
            val_ds = FolderDataset(d.val_images, d.val_masks, k, eval_tf)
    else:
        s = d.synthetic
        if train:
            train_ds = SyntheticShapes(s.train_length, s.size, k, s.seed, s.max_shapes, train_tf)
        if val:  # a different seed: held-out images
            val_ds = SyntheticShapes(s.val_length, s.size, k, s.seed + 7919, s.max_shapes, eval_tf)
    return train_ds, val_ds
