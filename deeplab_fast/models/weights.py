"""Loading and saving model weights: .safetensors and .pt/.pth (never unpickling arbitrary objects).

Files written by save_weights (and the trainer's checkpoints) describe their model: a JSON document under the
metadata key MODEL_INFO_KEY of a .safetensors file (under the same key of the saved dict in a .pt/.pth file)
holds a format version, the builder's keyword arguments (`model.config`: backbone, num_classes, output_stride,
every option), the input mean/std and, where known, class names and a palette. load_model rebuilds the model
from it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeplab_fast._files import atomic_path

MODEL_INFO_KEY = "deeplab_fast"
FORMAT_VERSION = 1
DEFAULT_FACTORY = "deeplab_fast.models:deeplabv3plus"

# keys of an ImageNet classifier head that a backbone-only load ignores (torchvision ResNet / MobileNetV2)
_IMAGENET_HEADS = ("fc.", "classifier.")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "weights")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What load_weights left out: model keys not in the checkpoint, checkpoint keys not in the model, and
    keys whose shapes differ (name, checkpoint shape, model shape). All empty after a strict load."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or .pt/.pth/.bin (torch.load with weights_only=True).

    A checkpoint that wraps the state dict under "state_dict"/"model"/... is unwrapped. Returns CPU tensors.
    """
    p = Path(path)
    return _unwrap_state_dict(_read_raw(p)[0], p)


def _unwrap_state_dict(sd: object, p: Path) -> dict[str, torch.Tensor]:
    if isinstance(sd, Mapping):
        for key in _WRAPPER_KEYS:
            inner = sd.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                sd = inner
                break
    if not isinstance(sd, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise ValueError(f"{str(p)!r} does not hold a state dict (a mapping of names to tensors)")
    out = dict(sd)
    for prefix in _PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, string metadata) of a .safetensors file.

    Raises FileNotFoundError for a missing file and ValueError naming the file when it is truncated, corrupt or
    not a safetensors file at all (instead of safetensors' own SafetensorError).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: no such weights file: {str(p)!r}")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{str(p)!r} is not a readable .safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, metadata


def _read_raw(p: Path) -> tuple[object, dict[str, Any] | None]:
    """The file's content (a state dict, or a dict wrapping one) and its model description (None if absent)."""
    if not p.is_file():
        raise FileNotFoundError(f"path: no such weights file: {str(p)!r}")
    if p.suffix == ".safetensors":
        tensors, metadata = read_safetensors(p)
        return tensors, _parse_info(metadata.get(MODEL_INFO_KEY), p)
    if p.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"could not read {str(p)!r} with torch.load(weights_only=True) (arbitrary pickled objects are "
                f"refused on purpose, and the file may be truncated or corrupt): {exc}"
            ) from None
        info = sd.get(MODEL_INFO_KEY) if isinstance(sd, Mapping) else None
        return sd, _parse_info(info, p)
    raise ValueError(f"path must end in .safetensors, .pt, .pth, .bin or .ckpt; got {str(p)!r}")


def _is_classifier_key(key: str) -> bool:
    return key.startswith("classifier.") or key.startswith("aux.classifier.")


def _classifier_hint(mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    for key, src, dst in mismatched:
        if key != "classifier.weight":
            continue
        if src[0] != dst[0]:
            return f"classifier: checkpoint has {src[0]} classes, model has {dst[0]}; pass skip_classifier=True"
        if len(src) > 1 and len(dst) > 1 and src[1] != dst[1]:
            return (
                f"classifier: checkpoint and model both have {src[0]} classes, but the classifier's input has "
                f"{src[1]} channels in the checkpoint and {dst[1]} in the model: the heads are built differently "
                "(another backbone, width or option)"
            )
    return ""


def _rebuild_hint(info: dict[str, Any] | None) -> str:
    if info is None:
        return ""
    args = ", ".join(f"{k}={v!r}" for k, v in info["model"].items())
    return f"the file was saved from deeplabv3plus({args}); deeplab_fast.load_model(path) rebuilds that model"


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    backbone_only: bool = False,
    skip_classifier: bool = False,
    strict: bool = True,
) -> LoadReport:
    """Load weights from `path` into `model` (in place) and report what was left out.

    Args:
        model: a deeplab_fast DeepLab (or any nn.Module when backbone_only=False).
        path: .safetensors or .pt/.pth file holding a state dict (tensors only; never unpickles code).
        backbone_only: the file holds backbone weights only (e.g. a torchvision ImageNet ResNet or MobileNetV2
            state dict); they go into model.backbone, an ImageNet head (fc.*, classifier.*) and a leading
            "backbone."/"encoder." prefix are ignored.
        skip_classifier: leave the model's classifier(s) (classifier.*, aux.classifier.*) as they are, e.g. to
            fine-tune on a different number of classes.
        strict: raise ValueError listing missing / unexpected keys and shape mismatches; with False, load every
            key whose name and shape match and return the rest in the report.

    Returns:
        LoadReport (empty lists after a successful strict load).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    raw, info = _read_raw(Path(path))
    sd = _unwrap_state_dict(raw, Path(path))
    target = model
    if backbone_only:
        target = getattr(model, "backbone", None)
        if not isinstance(target, nn.Module):
            raise ValueError("backbone_only=True needs a model with a .backbone (a deeplab_fast DeepLab)")
        for prefix in ("backbone.", "encoder."):
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if not k.startswith(_IMAGENET_HEADS)}
    elif skip_classifier:
        sd = {k: v for k, v in sd.items() if not _is_classifier_key(k)}
    own = target.state_dict()
    report = LoadReport()
    report.missing = sorted(k for k in own if k not in sd and not (skip_classifier and _is_classifier_key(k)))
    report.unexpected = sorted(k for k in sd if k not in own)
    report.mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and v.shape != own[k].shape
    ]
    if strict and (report.missing or report.unexpected or report.mismatched):
        lines = [f"load_weights: {str(path)!r} does not match the model"]
        lines += [hint for hint in (_classifier_hint(report.mismatched), _rebuild_hint(info)) if hint]
        if report.missing:
            lines.append(f"missing keys ({len(report.missing)}): {', '.join(report.missing[:10])}")
        if report.unexpected:
            lines.append(f"unexpected keys ({len(report.unexpected)}): {', '.join(report.unexpected[:10])}")
        if report.mismatched:
            shown = ", ".join(f"{k}: checkpoint {s} vs model {d}" for k, s, d in report.mismatched[:10])
            lines.append(f"shape mismatches ({len(report.mismatched)}): {shown}")
        if backbone_only is False and report.missing and all(not k.startswith("backbone.") for k in sd):
            lines.append("if this is an ImageNet backbone checkpoint, pass backbone_only=True")
        raise ValueError("\n".join(lines))
    bad = {k for k, _, _ in report.mismatched}
    target.load_state_dict({k: v for k, v in sd.items() if k in own and k not in bad}, strict=False)
    return report


def _float_triple(name: str, value: Sequence[float] | None) -> list[float] | None:
    if value is None:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three numbers (R, G, B), got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be three finite numbers (R, G, B), got {value!r}")
    if name == "std" and any(v <= 0 for v in out):
        raise ValueError(f"std must be three positive numbers (R, G, B), got {value!r}")
    return out


def model_info(
    model: nn.Module,
    *,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | Any | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    factory: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready description of `model` that save_weights stores next to its weights.

    Returns {"format_version": 1, "model": builder keyword arguments, "mean": [3 floats] or None, "std": [3 floats]
    or None, "class_names": [num_classes strings] or None, "palette": [[r, g, b] uint8 ...] or None} plus
    "factory" ("module:function") for a model not built by deeplab_fast.models.deeplabv3plus.

    The builder arguments are `model.config` (set by deeplabv3plus) unless `config` gives them; a model without
    either cannot be described (ValueError). `palette`: a (K, 3) array or nested sequence of 0..255 ints.
    """
    cfg = config if config is not None else getattr(model, "config", None)
    if not isinstance(cfg, Mapping):
        raise ValueError(
            f"{type(model).__name__} has no `config` (the keyword arguments it was built with), so its file "
            "cannot describe it; pass config= (its builder keyword arguments), or build it with "
            "deeplab_fast.models.deeplabv3plus"
        )
    own_factory = factory is not None and factory != DEFAULT_FACTORY
    kwargs = dict(cfg)
    if not own_factory:
        # every option, defaults included, so the file still says what it held if a default changes later
        from deeplab_fast.models.deeplab import OPTIONS

        kwargs.update({k: default for k, (default, _) in OPTIONS.items() if k not in kwargs})
    info: dict[str, Any] = {"format_version": FORMAT_VERSION, "model": kwargs}
    if own_factory:
        info["factory"] = factory
    info["mean"] = _float_triple("mean", mean)
    info["std"] = _float_triple("std", std)
    if class_names is not None:
        names = [str(n) for n in class_names]
        k = cfg.get("num_classes")
        if isinstance(k, int) and len(names) != k:
            raise ValueError(f"class_names has {len(names)} names but the model has num_classes={k}")
        info["class_names"] = names
    else:
        info["class_names"] = None
    if palette is not None:
        rows = torch.as_tensor(palette).tolist() if not isinstance(palette, list | tuple) else list(palette)
        try:
            pal = [[int(c) for c in row] for row in rows]
        except (TypeError, ValueError):
            raise ValueError(f"palette must be (K, 3) integers in [0, 255], got {palette!r}") from None
        if any(len(row) != 3 or not all(0 <= c <= 255 for c in row) for row in pal):
            raise ValueError("palette must be (K, 3) integers in [0, 255]")
        info["palette"] = pal
    else:
        info["palette"] = None
    try:
        json.dumps(info)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the model's configuration is not JSON-serialisable ({exc}): {info['model']!r}") from None
    return info


def _parse_info(raw: object, path: Path) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        info = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r}: the model description under {MODEL_INFO_KEY!r} is not JSON: {exc}") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise ValueError(f"{str(path)!r}: the model description under {MODEL_INFO_KEY!r} has no 'model' mapping")
    version = info.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{str(path)!r}: the model description has no valid format_version ({version!r})")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written with model description format {version}; this deeplab_fast reads up to "
            f"{FORMAT_VERSION}: upgrade deeplab_fast"
        )
    for key in ("mean", "std", "class_names", "palette"):
        info.setdefault(key, None)
    return info


def read_model_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The model description stored in a weights file (see model_info), or None for a file without one
    (written before files described their model, or by another library)."""
    return _read_raw(Path(path))[1]


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | Any | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> None:
    """Save model.state_dict() to .safetensors or .pt/.pth, atomically, with the model's description.

    A model with a `config` (every deeplabv3plus model) gets its description (model_info: format version,
    builder arguments, mean/std, class names, palette) under the key MODEL_INFO_KEY: JSON in the safetensors
    metadata, or a JSON string next to "state_dict" in a .pt/.pth dict ({"state_dict": ..., MODEL_INFO_KEY:
    ...}). Other modules are saved as a plain state dict (load them with load_weights). The file gets the
    permissions the umask gives.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    p = Path(path)
    if p.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"path must end in .safetensors, .pt or .pth; got {str(p)!r}")
    described = isinstance(getattr(model, "config", None), Mapping)
    extras = (class_names, palette, mean, std)
    if not described and any(v is not None for v in extras):
        raise ValueError(
            f"class_names/palette/mean/std describe a model, but {type(model).__name__} has no `config` to store "
            "them with"
        )
    info = model_info(model, class_names=class_names, palette=palette, mean=mean, std=std) if described else None
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_weights_file(sd, p, info)


def write_weights_file(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    info: dict[str, Any] | None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a state dict (.safetensors, or .pt/.pth) atomically through deeplab_fast._files.atomic_path, with
    the model description `info` (model_info's dict, or None) and, in safetensors, further string `metadata`."""
    p = Path(path)
    sd = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(p) as tmp:
        if p.suffix == ".safetensors":
            from safetensors.torch import save_file

            meta = {"format": "pt", **(metadata or {})}
            if info is not None:
                meta[MODEL_INFO_KEY] = json.dumps(info)
            # safetensors refuses tensors that share storage; give each its own
            save_file({k: v.clone() for k, v in sd.items()}, str(tmp), meta)
        else:
            torch.save(sd if info is None else {"state_dict": sd, MODEL_INFO_KEY: json.dumps(info)}, str(tmp))


SOURCES = ("vainf",)


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", source: Mapping[str, Any] | str | None = None
) -> nn.Module:
    """Rebuild the model a weights file describes and load its weights (strictly); returns it in eval mode.

    Args:
        path: .safetensors or .pt/.pth written by save_weights or the trainer (best.safetensors, ckpt_*.safetensors),
            or another library's checkpoint named by `source`.
        device: where the model goes ("cpu", "cuda", torch.device ...).
        source: builder keyword arguments of deeplab_fast.models.deeplabv3plus that replace the stored ones (or,
            for a file that describes no model, the whole description, e.g. {"backbone": "resnet101",
            "num_classes": 19}); or "vainf": a VainF/DeepLabV3Plus-Pytorch checkpoint (ResNet-50/101 or
            MobileNetV2, DeepLabV3 or V3+, dense or separable heads), whose architecture is read off its keys
            (output stride 16; model.set_output_stride(8) gives its OS8 model).

    Returns:
        The DeepLab (float32 weights), `model.config` as built.

    Raises:
        FileNotFoundError; ValueError naming the file when it is unreadable, describes no model and no `source`
        is given, was made by another factory, or does not match the rebuilt model.
    """
    p = Path(path)
    if isinstance(source, str):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES} or a mapping of deeplabv3plus arguments, got {source!r}")
        return _load_vainf(p).to(device).eval()
    info = read_model_info(p)
    if source is not None and not isinstance(source, Mapping):
        raise TypeError(
            f"source must be a mapping of deeplabv3plus keyword arguments or one of {SOURCES}, got "
            f"{type(source).__name__}"
        )
    if info is None and not source:
        raise ValueError(
            f"{str(p)!r} does not describe its model (written before checkpoints did, or by another library): "
            "pass source={'backbone': ..., 'num_classes': ..., ...} (deeplabv3plus keyword arguments), or build "
            "the model and call deeplab_fast.load_weights"
        )
    if info is not None and info.get("factory", DEFAULT_FACTORY) != DEFAULT_FACTORY:
        raise ValueError(
            f"{str(p)!r} holds a model built by {info['factory']!r}; load_model rebuilds deeplabv3plus models "
            "only: build that model yourself and call deeplab_fast.load_weights"
        )
    kwargs = {**(info["model"] if info is not None else {}), **(source or {})}
    from deeplab_fast.models.deeplab import deeplabv3plus

    try:
        model = deeplabv3plus(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{str(p)!r}: cannot rebuild deeplabv3plus({kwargs}): {exc}") from None
    load_weights(model, p)
    return model.to(device).eval()


def _load_vainf(p: Path) -> nn.Module:
    """The deeplabv3plus model of a VainF/DeepLabV3Plus-Pytorch checkpoint, its weights loaded strictly."""
    from deeplab_fast.models.deeplab import deeplabv3plus
    from deeplab_fast.models.vainf import map_vainf_state_dict, read_vainf_checkpoint

    if not p.is_file():
        raise FileNotFoundError(f"path: no such weights file: {str(p)!r}")
    try:
        kwargs, sd = map_vainf_state_dict(read_vainf_checkpoint(str(p)))
    except ValueError as exc:
        raise ValueError(f"{str(p)!r} (source='vainf'): {exc}") from None
    model = deeplabv3plus(**kwargs)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and v.shape != own[k].shape]  # fmt: skip
    if missing or mismatched:
        lines = [f"{str(p)!r} (source='vainf') does not fit deeplabv3plus({kwargs})"]
        if missing:
            lines.append(f"model keys the checkpoint lacks ({len(missing)}): {', '.join(missing[:20])}")
        if mismatched:
            lines.append(f"shape mismatches ({len(mismatched)}): {', '.join(mismatched[:20])}")
        raise ValueError("\n".join(lines))
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()})
    return model
