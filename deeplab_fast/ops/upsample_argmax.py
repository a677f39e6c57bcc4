"""Fused bilinear upsample + argmax. PLACEHOLDER: reference backend only until the fused kernels land."""

from __future__ import annotations

import torch

from deeplab_fast.ops.reference import upsample_argmax_reference


def upsample_argmax(
    logits: torch.Tensor, size: tuple[int, int], *, align_corners: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """Labels (N, H, W) int64 of bilinear upsampling of `logits` (N, K, h, w) to `size` then argmax over K."""
    return upsample_argmax_reference(logits, size, align_corners)
