"""Checkpoints: model weights as a safetensors state dict that describes its model (see
deeplab_fast.models.weights.model_info), plus a second safetensors file with the training state (optimizer,
scheduler, grad scaler, RNG states, step, data position). Both are written atomically through deeplab_fast._files,
state first and weights last, so a checkpoint is complete when its weights file exists and a crash mid-write never
touches an earlier checkpoint.

Layout in the run folder: ckpt_<step:07d>.safetensors, ckpt_<step:07d>.state.safetensors, best.safetensors,
config.yaml, scalars.csv, curves.png, tb/. Every checkpoint's metadata carries the id of the run that wrote it
("run_id"), so pruning only ever deletes checkpoints of the run doing the pruning.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from deeplab_fast.models.weights import read_safetensors, write_weights_file

_CKPT = re.compile(r"^ckpt_(\d{7})\.safetensors$")
_STATE = re.compile(r"^ckpt_(\d{7})\.state\.safetensors$")
RUN_FILES = ("config.yaml", "scalars.csv", "curves.png", "best.safetensors", "tb")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, truncated, or made for another model."""


def _open(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} not found")
    try:
        return read_safetensors(path)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file, without reading its tensors ({} when unreadable)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


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


def save_weights_file(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    metadata: dict[str, str],
    info: dict[str, Any] | None = None,
) -> None:
    """Write a model state dict as safetensors, atomically, with string metadata and the model description
    `info` (deeplab_fast.models.weights.model_info; None for a model that cannot describe itself)."""
    write_weights_file(state_dict, Path(path), info, metadata)


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
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ckpt_<step>.state.safetensors then ckpt_<step>.safetensors (with the model description `info`);
    returns the weights path. `metadata` (strings) goes into both files; put "run_id" there for pruning."""
    run_dir = Path(run_dir)
    weights = run_dir / f"ckpt_{step:07d}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(train_state, "s", tensors)
    write_weights_file(tensors, state_path(weights), None, {"state": json.dumps(skeleton), **metadata})
    save_weights_file(model_state, weights, metadata, info)
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


def prune_checkpoints(run_dir: str | Path, keep_last: int, run_id: str | None = None) -> None:
    """Delete all but the newest `keep_last` checkpoints of run `run_id` (those whose metadata has that
    "run_id"; every checkpoint when run_id is None). best.safetensors and other runs' files are never touched."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    mine = [w for w in list_checkpoints(run_dir) if run_id is None or read_metadata(w).get("run_id") == run_id]
    for weights in mine[:-keep_last]:
        state_path(weights).unlink(missing_ok=True)
        weights.unlink(missing_ok=True)


def run_files(run_dir: str | Path) -> list[Path]:
    """The files and folders of a training run in `run_dir` (checkpoints, their states, best weights, config,
    logs), sorted; [] for a missing or empty folder. Other files are not a run's and are not listed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name in RUN_FILES or _CKPT.match(p.name) or _STATE.match(p.name))


def clear_run(run_dir: str | Path) -> list[Path]:
    """Delete the files of a previous run in `run_dir` (see run_files); other files stay. Returns what went."""
    removed = run_files(run_dir)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return removed
