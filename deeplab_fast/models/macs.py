"""count_macs(): multiply-adds of a model's convolutions and linear layers for one input size."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def _conv_macs(out: torch.Tensor, weight: torch.Tensor) -> int:
    # each output element takes (Cin / groups) * kh * kw multiply-adds; weight is (Cout, Cin/groups, kh, kw)
    return out.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]


def count_macs(model: nn.Module, input_size: tuple[int, int, int, int] = (1, 3, 513, 513)) -> int:
    """Multiply-adds of every convolution (dense, atrous, depthwise, fused) and linear layer for one forward.

    What is counted: for a conv, output elements x (input channels / groups) x kernel area; for a linear
    layer, output elements x input features. Not counted: BatchNorm, activations, pooling, bilinear
    resizing, concatenation and additions (all small next to the convolutions). The forward runs on the
    meta device (no memory for activations, no arithmetic), so 513x513 costs milliseconds.

    Args:
        model: any nn.Module taking one (N, C, H, W) float tensor (a DeepLab or an optimize()d one).
        input_size: (N, C, H, W) of the input.

    Returns:
        the count as an int (for the whole batch N).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if len(tuple(input_size)) != 4 or any(not isinstance(s, int) or s < 1 for s in input_size):
        raise ValueError(f"input_size must be four positive ints (N, C, H, W), got {input_size!r}")
    from deeplab_fast.models.fuse import FusedConv, FusedDWConv

    total = 0

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv2d, FusedConv, FusedDWConv)):
            total += _conv_macs(out, module.weight)
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, FusedConv, FusedDWConv))
    ]
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    modes = {m: m.training for m in model.modules()}
    model.eval()  # a batch of 1 through the image-pool BN would fail in training mode
    try:
        with torch.no_grad():
            functional_call(model, meta, (torch.empty(tuple(input_size), device="meta"),))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return int(total)
