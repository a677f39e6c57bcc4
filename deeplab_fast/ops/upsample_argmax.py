"""Fused bilinear resize + argmax over classes (inference only): Python API, checks, backends, fake impl.

Semantics: deeplab_fast.ops.reference.upsample_argmax_reference. The full-resolution logits are never
materialized: each output pixel computes its 4 source taps once and runs over the classes with a
running maximum. The interpolation rounds exactly as PyTorch's CPU bilinear kernel (fused multiply-adds
in the same order, csrc/common/bilinear.h), so fp32 labels equal the reference's wherever there is no
exact tie. Labels are integers: there is no gradient. Logits that require grad are accepted and the
result simply does not require grad (like torch.argmax).
"""

from __future__ import annotations

import torch

from deeplab_fast import _ext
from deeplab_fast.ops._backend import run_op
from deeplab_fast.ops.reference import upsample_argmax_reference
from deeplab_fast.ops.upsample_checks import check_align_corners, check_float_4d, check_size, choose_backend


def upsample_argmax(
    logits: torch.Tensor, size: tuple[int, int], *, align_corners: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """Labels of F.interpolate(logits, size, mode="bilinear", align_corners=...).argmax(1).

    Args:
        logits: (N, K, h, w) float32/float16/bfloat16, any memory format; K >= 1.
        size: (H, W) of the label map, two positive ints.
        align_corners: as in F.interpolate.
        backend: "auto", "cuda", "cpu", "triton" or "reference".

    Returns:
        (N, H, W) int64 labels; ties resolve to the lowest class index and NaN counts as the maximum,
        as in torch.argmax. No gradient (inference only).
    """
    check_float_4d(logits, "logits")
    if logits.shape[1] < 1:
        raise ValueError(f"logits must have at least one class (K >= 1), got shape {tuple(logits.shape)}")
    size = check_size(size)
    align_corners = check_align_corners(align_corners)
    chosen = choose_backend(backend, logits.device, "upsample_argmax")
    logits = logits.detach()
    if chosen == "reference":
        return upsample_argmax_reference(logits, size, align_corners)
    if chosen == "triton":
        from deeplab_fast.kernels.triton import upsample as triton_impl

        return triton_impl.upsample_argmax_triton(logits, list(size), align_corners)
    return run_op(torch.ops.deeplab_fast.upsample_argmax, logits, list(size), align_corners)


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::upsample_argmax")
    def _(logits, size, align_corners):
        return logits.new_empty((logits.shape[0], size[0], size[1]), dtype=torch.int64)
