"""Helpers shared by the model tests: small models and randomized BatchNorm statistics."""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast.models import deeplabv3plus

__all__ = ["small_model", "randomize_batchnorm", "rel_err"]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics, in place (meaningful parity tests).

    Same draws as deeplab_fast.testing.randomize_batchnorm: running_mean in [-0.5, 0.5), running_var, weight in
    [0.5, 1.5), bias in [-0.5, 0.5), from a CPU generator seeded with `seed`.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model


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
