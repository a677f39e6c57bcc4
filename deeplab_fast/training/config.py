"""Training configuration: four sections (model, data, train, eval) read from YAML, with every key checked.

Unknown keys are an error that lists them all, with the valid keys of their section; values are type-checked.
See README "Training and evaluation" for the meaning of each key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which keys and why."""


@dataclass
class ModelConfig:
    backbone: str = "xception65"
    num_classes: int = 21
    output_stride: int = 16
    separable: bool = True
    decoder: bool = True
    align_corners: bool = False
    pretrained: str | None = None  # backbone weights (safetensors) loaded with backbone_only=True
    weights: str | None = None  # whole-model initial weights (fine-tuning a trained model; not a resume)
    factory: str | None = None  # "module:function" building the model; None = deeplab_fast.models.deeplabv3plus
    options: dict = field(default_factory=dict)  # further keyword arguments of the model factory


@dataclass
class SyntheticConfig:
    train_length: int = 256
    val_length: int = 64
    size: int = 64
    max_shapes: int = 3
    seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "voc"  # voc | cityscapes | folder | synthetic
    root: str | None = None
    train_split: str = "train_aug"
    val_split: str = "val"
    train_images: str | None = None  # folder dataset only
    train_masks: str | None = None
    val_images: str | None = None
    val_masks: str | None = None
    crop_size: int | list = 513  # an int or [height, width]
    eval_crop_size: int | list | None = 513  # evaluation pads to this size (never resizes); None = no padding
    scale_range: list = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    mean: list = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list = field(default_factory=lambda: [0.229, 0.224, 0.225])
    num_workers: int = 4
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TrainConfig:
    iterations: int = 30000
    batch_size: int = 16  # total per optimizer step, over all processes and accumulation steps
    lr: float = 0.007
    momentum: float = 0.9
    weight_decay: float = 4e-5
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    freeze_bn: bool = False
    aux_weight: float = 0.4  # weight of the auxiliary head's loss (models built with aux_head + output_dict)
    amp: str = "none"  # none | bf16 | fp16
    grad_accum: int = 1
    channels_last: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dist_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | nccl | gloo
    output_dir: str = "runs/deeplab"
    log_every: int = 10
    eval_every: int = 0  # evaluate every N steps; 0: only at the end
    checkpoint_every: int = 1000
    keep_last: int = 3
    tensorboard: bool = True  # used when the tensorboard package is installed


@dataclass
class EvalConfig:
    scales: list = field(default_factory=lambda: [1.0])
    flip: bool = False
    batch_size: int = 1  # per process


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as nested plain dicts (YAML-ready)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check values that the types alone do not (choices, ranges); raise ConfigError."""
        problems = []
        choose = {
            "data.dataset": (self.data.dataset, ("voc", "cityscapes", "folder", "synthetic")),
            "train.amp": (self.train.amp, ("none", "bf16", "fp16")),
            "train.device": (self.train.device, ("auto", "cpu", "cuda")),
            "train.dist_backend": (self.train.dist_backend, ("auto", "nccl", "gloo")),
        }
        for key, (value, options) in choose.items():
            if value not in options:
                problems.append(f"{key} must be one of {options}, got {value!r}")
        positive = {
            "model.num_classes": self.model.num_classes,
            "train.iterations": self.train.iterations,
            "train.batch_size": self.train.batch_size,
            "train.grad_accum": self.train.grad_accum,
            "train.log_every": self.train.log_every,
            "train.checkpoint_every": self.train.checkpoint_every,
            "train.keep_last": self.train.keep_last,
            "eval.batch_size": self.eval.batch_size,
        }
        problems += [f"{k} must be >= 1, got {v}" for k, v in positive.items() if v < 1]
        t = self.train
        greater = {"train.lr": (t.lr, 0), "train.poly_power": (t.poly_power, 0)}
        problems += [
            f"{k} must be a finite number > {lo}, got {v}"
            for k, (v, lo) in greater.items()
            if not (math.isfinite(v) and v > lo)
        ]
        at_least = {
            "train.weight_decay": t.weight_decay,
            "train.warmup_factor": t.warmup_factor,
            "train.momentum": t.momentum,
            "train.aux_weight": t.aux_weight,
            "train.warmup_iters": t.warmup_iters,
            "data.num_workers": self.data.num_workers,
        }
        bad = [(k, v) for k, v in at_least.items() if not (math.isfinite(v) and v >= 0)]
        problems += [f"{k} must be a finite number >= 0, got {v}" for k, v in bad]
        if t.eval_every < 0:
            problems.append(f"train.eval_every must be >= 1 (every N steps) or 0 (only at the end), got {t.eval_every}")
        if Path(t.output_dir).exists() and not Path(t.output_dir).is_dir():
            problems.append(f"train.output_dir must be a folder (new or existing), got a file: {t.output_dir!r}")
        problems += _check_options(self.model)
        for key in ("mean", "std"):
            values = getattr(self.data, key)
            if not _numbers(values) or len(values) != 3:
                problems.append(f"data.{key} must be three numbers (R, G, B), got {values!r}")
            elif key == "std" and not all(float(v) > 0 for v in values):
                problems.append(f"data.std must be three numbers > 0 (images are divided by it), got {values!r}")
        for key in ("crop_size", "eval_crop_size"):
            v = getattr(self.data, key)
            sizes = [] if v is None else [v] if isinstance(v, int) else v
            if len(sizes) not in ((0, 1) if not isinstance(v, list) else (2,)) or any(
                not isinstance(x, int) or x < 1 for x in sizes
            ):
                problems.append(f"data.{key} must be a positive int or [height, width], got {v!r}")
        sr = self.data.scale_range
        if len(sr) != 2 or not _numbers(sr) or not 0 < float(sr[0]) <= float(sr[1]):
            problems.append(f"data.scale_range must be [low, high], numbers with 0 < low <= high, got {sr!r}")
        sc = self.eval.scales
        if not sc or not _numbers(sc) or any(float(x) <= 0 for x in sc):
            problems.append(f"eval.scales must be a non-empty list of numbers > 0, got {sc!r}")
        if self.data.dataset == "folder" and not (self.data.train_images and self.data.train_masks):
            problems.append("data.dataset=folder needs data.train_images and data.train_masks")
        if self.data.dataset in ("voc", "cityscapes") and not self.data.root:
            problems.append(f"data.dataset={self.data.dataset} needs data.root")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))


def _numbers(values: Any) -> bool:
    """True for a list of finite ints/floats (no bools, no strings)."""
    return isinstance(values, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


_FIXED_MODEL_KEYS = ("backbone", "num_classes", "output_stride", "separable", "decoder", "align_corners")


def _check_options(model: ModelConfig) -> list[str]:
    """Problems with model.options: keys that are model.* keys of their own, and (for the built-in factory)
    keys deeplabv3plus does not know."""
    problems = []
    fixed = sorted(k for k in model.options if k in _FIXED_MODEL_KEYS)
    if fixed:
        problems.append(f"model.options must not repeat model keys {fixed}: set model.<key> instead")
    if model.factory is None:
        from deeplab_fast.models.deeplab import OPTIONS

        unknown = sorted(k for k in model.options if k not in OPTIONS and k not in _FIXED_MODEL_KEYS)
        if unknown:
            problems.append(f"model.options has unknown keys {unknown}; accepted: {', '.join(OPTIONS)}")
    return problems


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to the annotated type, or raise ConfigError naming `key`."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"config key {key} must not be null")
    for t in options:
        if t is type(None):
            continue
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
        if t in (list, dict) and isinstance(value, t):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
    raise ConfigError(f"config key {key} must be {names}, got {value!r} ({type(value).__name__})")


def _build(cls: type, data: Any, prefix: str, unknown: list[str]) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or '<top>'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            unknown.append(
                f"{prefix}{key}"
                + (
                    f" (valid keys of {prefix[:-1]}: {', '.join(sorted(names))})"
                    if prefix
                    else f" (valid sections: {', '.join(sorted(names))})"
                )
            )
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            continue
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, f"{prefix}{key}.", unknown)
        else:
            kwargs[key] = _check_type(prefix + key, value, annotation)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from nested dicts; unknown keys raise ConfigError listing every one."""
    unknown: list[str] = []
    config = _build(Config, data or {}, "", unknown)
    if unknown:
        raise ConfigError("unknown config keys: " + "; ".join(unknown))
    config.validate()
    return config


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply "section.key=value" strings (value parsed as YAML) to nested dicts, in place; returns `data`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def check_device_available(device: str) -> None:
    """Raise ConfigError when train.device asks for CUDA on a machine without it."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device='cuda' but CUDA is not available on this machine; accepted here: auto, cpu")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (None: all defaults), apply overrides, check every key and value.

    `path` is a file, or the name of a config that ships with the package (deeplab_fast.configs.list_configs(),
    e.g. "synthetic_demo"), used when no such file exists.
    """
    data: dict[str, Any] = {}
    if path is not None:
        from deeplab_fast.configs import resolve_config

        path = resolve_config(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    apply_overrides(data, overrides or [])
    return config_from_dict(data)
