"""from_timm(): a DeepLabV3+ whose backbone holds the weights of timm's aligned Xception (xception41/65/71).

timm's `xception41.tf_in1k`, `xception65.tf_in1k` and `xception71.tf_in1k` were converted from TensorFlow's
ImageNet checkpoints, the backbones of the DeepLabV3+ paper. timm's key layout (timm/models/xception_aligned.py):

    stem.0.conv / stem.0.bn                       -> conv1.conv / conv1.bn      (3x3/2, 32 ch)
    stem.1.conv / stem.1.bn                       -> conv2.conv / conv2.bn      (3x3, 64 ch)
    blocks.<i>.shortcut.conv / .bn                -> <flow>.<j>.shortcut.conv / .bn
    blocks.<i>.stack.conv<n>.conv_dw / .bn_dw     -> <flow>.<j>.sep<n>.depthwise / .dw_bn
    blocks.<i>.stack.conv<n>.conv_pw / .bn_pw     -> <flow>.<j>.sep<n>.pointwise / .pw_bn
    head.fc                                       -> dropped (the ImageNet classifier)

Blocks 0..E-1 are the entry flow, the next M the middle flow, the last two the exit flow (E, M = 3, 8 for
xception41; 3, 16 for xception65; 5, 16 for xception71). The architectures match op for op: the same
convolutions, paddings and dilations at every output stride (timm keeps the stride of a strided unit past the
output stride as TensorFlow does), BatchNorm eps 1e-3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deeplab_fast.models.deeplab import DeepLab, deeplabv3plus

# number of `blocks.<i>` -> (our backbone name, entry-flow blocks, middle-flow blocks)
_LAYOUTS = {13: ("xception41", 3, 8), 21: ("xception65", 3, 16), 23: ("xception71", 5, 16)}
# TensorFlow's inception preprocessing: pixels in [0, 1] -> 2x - 1
TF_INPUT_MEAN = (0.5, 0.5, 0.5)
TF_INPUT_STD = (0.5, 0.5, 0.5)

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STEM = re.compile(rf"^stem\.([01])\.(conv\.weight|bn\.{_BN})$")
_SHORTCUT = re.compile(rf"^blocks\.(\d+)\.shortcut\.(conv\.weight|bn\.{_BN})$")
_STACK = re.compile(rf"^blocks\.(\d+)\.stack\.conv([123])\.(conv_[dp]w\.weight|bn_[dp]w\.{_BN})$")
_SEPARABLE_PARTS = {"conv_dw": "depthwise", "conv_pw": "pointwise", "bn_dw": "dw_bn", "bn_pw": "pw_bn"}


def _block_name(i: int, n_entry: int, n_middle: int) -> str:
    if i < n_entry:
        return f"entry_flow.{i}"
    if i < n_entry + n_middle:
        return f"middle_flow.{i - n_entry}"
    return f"exit_flow.{i - n_entry - n_middle}"


def timm_xception_layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int, int]:
    """(backbone name, entry-flow blocks, middle-flow blocks) of the xception41/65/71 a timm aligned-Xception
    state dict holds (ValueError for anything else)."""
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    layout = _LAYOUTS.get(len(blocks))
    if layout is None or blocks != set(range(len(blocks))):
        raise ValueError(
            f"timm_model_or_state_dict: expected timm's aligned Xception (xception41, xception65 or xception71: 13, "
            f"21 or 23 blocks), got {len(blocks)} blocks"
        )
    return layout


def map_timm_xception(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """(backbone name, state dict in our Xception's names) from a timm aligned-Xception state dict.

    head.fc.* is dropped; any other key that has no place in our Xception (the pre-activation "p" variants'
    norm layers, for instance) raises ValueError listing them. A "module." (DataParallel) or "_orig_mod."
    (torch.compile) prefix on every key is removed.
    """
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    name, n_entry, n_middle = timm_xception_layout(state_dict)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state_dict.items():
        if key.startswith("head.fc."):
            continue
        if m := _STEM.match(key):
            out[f"conv{int(m[1]) + 1}.{m[2]}"] = value
        elif m := _SHORTCUT.match(key):
            out[f"{_block_name(int(m[1]), n_entry, n_middle)}.shortcut.{m[2]}"] = value
        elif m := _STACK.match(key):
            part, leaf = m[3].split(".", 1)
            out[f"{_block_name(int(m[1]), n_entry, n_middle)}.sep{m[2]}.{_SEPARABLE_PARTS[part]}.{leaf}"] = value
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(unmapped[:10])
        raise ValueError(
            f"timm_model_or_state_dict: {len(unmapped)} key(s) have no place in deeplab_fast's {name} (only timm's "
            f"xception41/65/71 convert, not the pre-activation 'p' variants): {shown}"
        )
    return name, out


def from_timm(
    timm_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    *,
    num_classes: int = 21,
    output_stride: int = 16,
    **options: Any,
) -> DeepLab:
    """DeepLabV3+ with timm's aligned Xception weights in its backbone and freshly initialised heads.

    Args:
        timm_model_or_state_dict: timm.create_model("xception65.tf_in1k", pretrained=True) (or xception41/71),
            or its state dict (num_batches_tracked may be absent: it is set to 0).
        num_classes: classes of the new classifier.
        output_stride: 8, 16 or 32.
        **options: deeplabv3plus options (see deeplab_fast.models.OPTIONS). Defaults differ in one place: the
            input normalisation is TensorFlow's, input_mean = input_std = (0.5, 0.5, 0.5) (2x - 1 of pixels in
            [0, 1]), the one the weights were trained with; Segmenter, predict and eval take it from the
            model's config.

    Returns:
        A DeepLab (training mode, float32, CPU) whose backbone equals timm's network (features equal to timm's
        within float rounding; the stride-4 decoder tap is taken before the ReLU, timm's features_only after it).

    Raises:
        TypeError for another argument type; ValueError when the weights are not timm's xception41/65/71 or do
        not fit the model built with `options` (e.g. width_mult != 1), naming the keys.
    """
    if isinstance(timm_model_or_state_dict, nn.Module):
        state_dict = timm_model_or_state_dict.state_dict()
    elif isinstance(timm_model_or_state_dict, Mapping):
        state_dict = dict(timm_model_or_state_dict)
    else:
        raise TypeError(
            "timm_model_or_state_dict must be a timm model (nn.Module) or its state dict, got "
            f"{type(timm_model_or_state_dict).__name__}"
        )
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise TypeError("timm_model_or_state_dict: a state dict maps str names to tensors")
    if "backbone" in options:
        raise TypeError("from_timm() picks the backbone from the weights; do not pass backbone=")
    name, mapped = map_timm_xception(state_dict)
    opts = {"input_mean": TF_INPUT_MEAN, "input_std": TF_INPUT_STD, **options}
    model = deeplabv3plus(name, num_classes=num_classes, output_stride=output_stride, **opts)
    own = model.backbone.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros_like(value)
    missing = sorted(set(own) - set(mapped))
    mismatched = [f"{k}: timm {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in mapped.items()
                  if k in own and v.shape != own[k].shape]  # fmt: skip
    if missing or mismatched:
        lines = [f"from_timm: the weights do not fit deeplabv3plus({name!r}, **{options})"]
        if missing:
            lines.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}")
        if mismatched:
            lines.append(f"shape mismatches ({len(mismatched)}): {', '.join(mismatched[:10])}")
        raise ValueError("\n".join(lines))
    with torch.no_grad():
        model.backbone.load_state_dict({k: v.detach().to(torch.float32) for k, v in mapped.items()}, strict=True)
    return model


__all__ = ["TF_INPUT_MEAN", "TF_INPUT_STD", "from_timm", "map_timm_xception", "timm_xception_layout"]
