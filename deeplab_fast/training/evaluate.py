"""Evaluation: single-scale, or multi-scale + flip (softmax averaged over scales and mirrors), into a
ConfusionMatrix reduced over ranks.

Multi-scale / flip evaluation runs the same passes as deployed inference: deeplab_fast.Segmenter. Images holding
NaN or inf raise ValueError, and a model that produces NaN or infinite logits raises RuntimeError (a diverged
model has no meaningful mIoU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from deeplab_fast.inference.preprocess import check_finite_image
from deeplab_fast.inference.segmenter import Segmenter, check_finite_logits, model_logits
from deeplab_fast.metrics import ConfusionMatrix


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
    scale 1.0 without flip, else argmax of the softmax averaged over `scales` (and their mirror images), computed
    by deeplab_fast.Segmenter on `model` as it is (its device and dtype; no optimize()).

    num_classes: K, checked against the single-scale logits. Raises ValueError if the images hold NaN or inf and
    RuntimeError if the logits are not finite.
    """
    autocast = torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    if list(scales) == [1.0] and not flip:
        check_finite_image(images)
        with autocast:
            logits = model_logits(model(images), images.shape[0])
        if logits.shape[1] != num_classes:
            raise ValueError(f"the model gives {logits.shape[1]} classes but num_classes is {num_classes}")
        check_finite_logits(logits)
        return logits.argmax(1)
    # Batches arrive normalized, so the Segmenter's own normalization is the identity.
    segmenter = Segmenter(model, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scales=scales, flip=flip,
                          device=images.device, dtype=None, optimize=False, align_corners=align_corners,
                          batch_size=64)  # fmt: skip
    with autocast:
        return torch.stack(segmenter.predict_batch(images))


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
    try:
        for images, masks in batches:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            pred = predict_batch(model, images, num_classes, scales, flip, align_corners, amp_dtype)
            cm.update(pred, masks.to(device, non_blocking=True))
    finally:
        model.train(was_training)
    cm.all_reduce()
    return cm
