"""Evaluation: single-scale, or multi-scale + flip (softmax averaged over scales and mirrors), into a
ConfusionMatrix reduced over ranks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeplab_fast.metrics import ConfusionMatrix


def _softmax_accumulate_fallback(
    logits: torch.Tensor, accum: torch.Tensor, *, weight: float = 1.0, flip: bool = False, align_corners: bool = False
) -> torch.Tensor:
    # Same semantics as deeplab_fast.ops.upsample_softmax_accumulate (see the shared interface); used until that
    # op is on main.
    if flip:
        logits = logits.flip(-1)
    up = F.interpolate(logits.float(), size=accum.shape[-2:], mode="bilinear", align_corners=align_corners)
    accum.add_(up.softmax(1), alpha=weight)
    return accum


def _logits(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out  # output_dict=True models


def _accumulate_fn():
    try:
        from deeplab_fast.ops import upsample_softmax_accumulate  # the fused op, once landed
    except ImportError:
        return _softmax_accumulate_fallback
    return upsample_softmax_accumulate


def _segmenter(
    model: nn.Module, scales: Sequence[float], flip: bool, align_corners: bool, device: torch.device
) -> Any | None:
    # Multi-scale / flip evaluation goes through deeplab_fast.Segmenter (the same passes as deployed inference)
    # when it is installed. Batches arrive normalized, so the Segmenter's own normalization is the identity.
    if list(scales) == [1.0] and not flip:
        return None
    try:
        from deeplab_fast.inference.segmenter import Segmenter
    except ImportError:
        return None
    return Segmenter(model, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scales=scales, flip=flip, device=device,
                     optimize=False, align_corners=align_corners, batch_size=64)  # fmt: skip


@torch.no_grad()
def predict_batch(
    model: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    align_corners: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Class indices int64 (N, H, W) for normalized images float (N, 3, H, W): argmax of the logits at a single
    scale 1.0 without flip, else argmax of the softmax summed over `scales` (and their mirror images)."""
    n, _, h, w = images.shape
    autocast = torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    if list(scales) == [1.0] and not flip:
        with autocast:
            logits = _logits(model(images))
        return logits.argmax(1)
    accumulate = _accumulate_fn()
    accum = torch.zeros(n, num_classes, h, w, dtype=torch.float32, device=images.device)
    for s in scales:
        size = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))  # round half up, as deeplab_fast.Segmenter
        x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=align_corners)
        for mirrored in (False, True) if flip else (False,):
            with autocast:
                logits = _logits(model(x.flip(-1) if mirrored else x))
            accumulate(logits, accum, weight=1.0, flip=mirrored, align_corners=align_corners)
    return accum.argmax(1)


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    align_corners: bool = False,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """Run `model` (eval mode) over (images float (N,3,H,W), masks int64 (N,H,W)) batches; returns the confusion
    matrix, summed over all ranks when torch.distributed is initialized (every rank must call this)."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    segmenter = _segmenter(model, scales, flip, align_corners, device)
    try:
        for images, masks in batches:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if segmenter is not None:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    pred = torch.stack(segmenter.predict_batch(images))
            else:
                pred = predict_batch(model, images, num_classes, scales, flip, align_corners, amp_dtype)
            cm.update(pred, masks.to(device, non_blocking=True))
    finally:
        model.train(was_training)
    cm.all_reduce()
    return cm
