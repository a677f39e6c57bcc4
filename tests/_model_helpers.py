"""Helpers shared by the model tests: small models and randomized BatchNorm statistics."""

from __future__ import annotations

import torch

from deeplab_fast.models import deeplabv3plus
from deeplab_fast.testing import randomize_batchnorm

__all__ = ["small_model", "randomize_batchnorm", "rel_err"]


def small_model(backbone: str, **kwargs):
    """A narrow DeepLab (quarter widths, 32-channel heads) with random BN statistics."""
    opts = dict(width_mult=0.25 if backbone != "mobilenet_v2" else 0.5, aspp_channels=32, low_level_channels=16)
    if backbone == "mobilenet_v2":
        opts["mobilenet_last_conv"] = False
    opts.update(kwargs)
    return randomize_batchnorm(deeplabv3plus(backbone, num_classes=5, **opts))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a|."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
