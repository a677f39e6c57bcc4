"""Fused bilinear upsample + concat. PLACEHOLDER: reference backend only until the fused kernels land."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deeplab_fast.ops.reference import upsample_concat_reference


def upsample_concat(
    tensors: Sequence[torch.Tensor], size: tuple[int, int], *, align_corners: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """Resize each (N, C_i, H_i, W_i) input bilinearly to `size` and concatenate along channels.

    Returns (N, sum C_i, H, W) in the inputs' dtype, in the first input's memory format.
    """
    return upsample_concat_reference(list(tensors), size, align_corners)
