"""Testing utilities for code built on deeplab_fast (as `torch.testing` is for PyTorch).

    from deeplab_fast.testing import one_thread, randomize_batchnorm

    model = randomize_batchnorm(deeplabv3plus("mobilenet_v2", width_mult=0.25).eval(), seed=0)
    with one_thread():
        ...  # compare two implementations without thread-count effects

This module imports only torch: importing it loads neither triton nor torch._dynamo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["one_thread", "randomize_batchnorm"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with `torch.set_num_threads(1)`, then restore the previous intra-op thread count.

    Process-wide while it is active (torch's thread count is global). Useful on shared or small machines,
    where tiny tensors gain nothing from more threads, and for reproducible float sums: a reduction split
    over a different number of threads may round differently.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm of `model` random statistics and affine parameters, in place; returns `model`.

    A freshly built model has BatchNorm running_mean 0, running_var 1, weight 1 and bias 0, so BN folding
    and converters that mishandle BN would still match the reference. After this call each BN layer
    (`nn.BatchNorm1d/2d/3d`, `nn.SyncBatchNorm` and other `_BatchNorm` subclasses) has, per channel,
    float values drawn from a CPU generator seeded with `seed`:
    running_mean in [-0.5, 0.5), running_var in [0.5, 1.5), weight in [0.5, 1.5), bias in [-0.5, 0.5)
    (the affine ones only when the layer has them). Each tensor keeps its shape (C,), dtype and device;
    the same `seed` and architecture give the same values on every machine. Nothing else changes (no
    mode switch: call `.eval()` yourself for inference comparisons).
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(like: torch.Tensor, low: float) -> torch.Tensor:
        values = torch.rand(like.shape, generator=generator, dtype=torch.float32) + low
        return values.to(dtype=like.dtype, device=like.device)

    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            if module.running_mean is not None:
                module.running_mean.copy_(draw(module.running_mean, -0.5))
                module.running_var.copy_(draw(module.running_var, 0.5))
            if module.weight is not None:
                module.weight.copy_(draw(module.weight, 0.5))
            if module.bias is not None:
                module.bias.copy_(draw(module.bias, -0.5))
    return model
