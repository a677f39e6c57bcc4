"""Checkpoints: model weights as a plain safetensors state dict, plus a second safetensors file with the training
state (optimizer, scheduler, grad scaler, RNG states, step, data position). Both are written atomically
(temp file + os.replace), state first and weights last, so a checkpoint is complete when its weights file exists
and a crash mid-write never touches an earlier checkpoint.

Layout in the run folder: ckpt_<step:07d>.safetensors, ckpt_<step:07d>.state.safetensors, best.safetensors.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

_CKPT = re.compile(r"^ckpt_(\d{7})\.safetensors$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, truncated, or made for another model."""


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # clones: safetensors refuses tensors that share storage (tied weights, views)
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, tmp, metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint file {path} is unreadable (truncated or not a safetensors file): {exc}"
        ) from exc
    return tensors, metadata


# Nested training state <-> (flat tensors, JSON skeleton). Dicts keep their key types (optimizer state uses ints).
def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, list | tuple):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_weights_file(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write a model state dict as safetensors, atomically, with string metadata."""
    _atomic_save(dict(state_dict), {"format": "pt", **metadata}, Path(path))


def load_model_state(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Load weights written by save_weights_file (or any safetensors state dict) into `model`, strictly: missing,
    unexpected or mis-shaped tensors raise CheckpointError listing them. Returns the file's metadata."""
    tensors, metadata = _open(Path(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        where = f" (file made for model {metadata['model']})" if "model" in metadata else ""
        parts = [f"checkpoint {path} does not match this model{where}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"  {title} ({len(items)}): {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}")
        raise CheckpointError("\n".join(parts))
    model.load_state_dict(tensors, strict=True)
    return metadata


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    metadata: dict[str, str],
) -> Path:
    """Write ckpt_<step>.state.safetensors then ckpt_<step>.safetensors; returns the weights path."""
    run_dir = Path(run_dir)
    weights = run_dir / f"ckpt_{step:07d}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(train_state, "s", tensors)
    _atomic_save(tensors, {"format": "pt", "state": json.dumps(skeleton), **metadata}, state_path(weights))
    save_weights_file(model_state, weights, metadata)
    return weights


def state_path(weights: Path) -> Path:
    """The training-state file that goes with a checkpoint weights file."""
    return weights.with_name(weights.name[: -len(".safetensors")] + ".state.safetensors")


def load_train_state(weights: str | Path) -> dict[str, Any]:
    """The training state saved with checkpoint `weights` (nested dicts of tensors and numbers)."""
    path = state_path(Path(weights))
    tensors, metadata = _open(path)
    if "state" not in metadata:
        raise CheckpointError(f"{path} holds no training state (is it a weights-only file?)")
    return _unflatten(json.loads(metadata["state"]), tensors)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (weights file present) in `run_dir`, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT.match(p.name)))
    return [p for _, p in found]


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (best.safetensors is never touched)."""
    for weights in list_checkpoints(run_dir)[:-keep_last]:
        state_path(weights).unlink(missing_ok=True)
        weights.unlink(missing_ok=True)
