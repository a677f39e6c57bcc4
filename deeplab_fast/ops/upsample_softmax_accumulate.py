"""Fused bilinear resize + softmax over classes + weighted accumulation, in place (multi-scale and
flip inference): Python API, checks, backends, fake impl.

Semantics: deeplab_fast.ops.reference.upsample_softmax_accumulate_reference. One pass over the output:
each pixel computes its 4 source taps once, then the max, the sum of exponentials and the accumulation
over the classes; the resized logits are never materialized. Inference only: no gradient.
"""

from __future__ import annotations

import torch

from deeplab_fast import _ext
from deeplab_fast.ops.reference import upsample_softmax_accumulate_reference
from deeplab_fast.ops.upsample_checks import check_align_corners, check_float_4d, choose_backend


def _check(logits: object, accum: object, weight: object, flip: object) -> None:
    check_float_4d(logits, "logits")
    if not isinstance(accum, torch.Tensor):
        raise TypeError(f"accum must be a torch.Tensor, got {type(accum).__name__}")
    if accum.dim() != 4:
        raise ValueError(f"accum must be a 4-D (N, K, H, W) tensor, got shape {tuple(accum.shape)}")
    if accum.dtype != torch.float32:
        raise ValueError(f"accum must be float32, got {accum.dtype}")
    if not accum.is_contiguous():
        raise ValueError(f"accum must be contiguous (NCHW), got strides {accum.stride()}")
    if accum.device != logits.device:
        raise ValueError(f"accum is on {accum.device} but logits is on {logits.device}")
    if accum.shape[0] != logits.shape[0]:
        raise ValueError(f"accum's batch size {accum.shape[0]} must equal logits' {logits.shape[0]}")
    if accum.shape[1] != logits.shape[1]:
        raise ValueError(f"accum's class count K={accum.shape[1]} must equal logits' K={logits.shape[1]}")
    if accum.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("upsample_softmax_accumulate is inference only: accum must not require grad")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"weight must be a float, got {weight!r}")
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be a bool, got {flip!r}")


def upsample_softmax_accumulate(
    logits: torch.Tensor,
    accum: torch.Tensor,
    *,
    weight: float = 1.0,
    flip: bool = False,
    align_corners: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """accum += weight * softmax_K(resize_bilinear(flip_W(logits) if flip else logits, accum's (H, W))).

    Args:
        logits: (N, K, h, w) float32/float16/bfloat16, any memory format (read, never modified).
        accum: (N, K, H, W) float32 contiguous, updated in place.
        weight: scale of this contribution (e.g. 1 / number of scales and flips).
        flip: mirror the logits along W first (undoes a horizontally flipped input).
        align_corners: as in F.interpolate.
        backend: "auto", "cuda", "cpu", "triton" or "reference".

    Returns:
        `accum` itself. Inference only: no gradient flows (logits are read detached).
    """
    _check(logits, accum, weight, flip)
    align_corners = check_align_corners(align_corners)
    chosen = choose_backend(backend, logits.device, "upsample_softmax_accumulate")
    logits = logits.detach()
    if chosen == "reference":
        with torch.no_grad():
            return upsample_softmax_accumulate_reference(logits, accum, float(weight), flip, align_corners)
    if chosen == "triton":
        from deeplab_fast.kernels.triton import upsample as triton_impl

        triton_impl.upsample_softmax_accumulate_triton(logits, accum, float(weight), flip, align_corners)
        return accum
    torch.ops.deeplab_fast.upsample_softmax_accumulate(logits, accum, float(weight), flip, align_corners)
    return accum


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::upsample_softmax_accumulate")
    def _(logits, accum, weight, flip, align_corners):
        return None
