"""Loading and saving model weights: .safetensors and .pt/.pth (never unpickling arbitrary objects)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

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
    if not p.is_file():
        raise FileNotFoundError(f"path: no such weights file: {str(p)!r}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: object = load_file(str(p), device="cpu")
    elif p.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"could not read {str(p)!r} with torch.load(weights_only=True) (arbitrary pickled objects are "
                f"refused on purpose): {exc}"
            ) from exc
    else:
        raise ValueError(f"path must end in .safetensors, .pt, .pth, .bin or .ckpt; got {str(p)!r}")
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


def _is_classifier_key(key: str) -> bool:
    return key.startswith("classifier.") or key.startswith("aux.classifier.")


def _classifier_hint(mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    for key, src, dst in mismatched:
        if key == "classifier.weight":
            return f"classifier: checkpoint has {src[0]} classes, model has {dst[0]}; pass skip_classifier=True"
    return ""


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
    sd = read_state_dict(path)
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
        hint = _classifier_hint(report.mismatched)
        if hint:
            lines.append(hint)
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


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Save model.state_dict() to .safetensors or .pt/.pth, atomically (temp file + os.replace)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    p = Path(path)
    if p.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"path must end in .safetensors, .pt or .pth; got {str(p)!r}")
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=str(p.parent))
    os.close(fd)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import save_file

            # safetensors refuses tensors that share storage; give each its own
            save_file({k: v.clone() for k, v in sd.items()}, tmp)
        else:
            torch.save(sd, tmp)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
