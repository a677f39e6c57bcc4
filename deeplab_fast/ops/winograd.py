"""Winograd F(2x2, 3x3) convolution for the CPU: stride-1 3x3 convolutions of optimize()d models.

A 3x3 "same" convolution at dilation d is, per 2x2 tile of outputs one dilation apart, 16 products of
transformed inputs and weights instead of 36: the 16 products of all tiles are 16 GEMMs (T tiles x Cin)
@ (Cin x Cout). The weight transform runs once (`winograd_weight`), the input and output transforms are
C++ (csrc/cpu/winograd_cpu.cpp), the GEMMs are at::bmm. Inference only (no autograd), CPU float32;
semantics: `deeplab_fast.ops.reference.winograd_conv3x3_reference`.
"""

from __future__ import annotations

import torch

from deeplab_fast import _ext

_ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}

# F(2x2, 3x3) weight transform G (4 x 3).
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """Transformed weight u = G w G^T of a 3x3 convolution weight, laid out for the 16 GEMMs.

    Args:
        weight: (Cout, Cin, 3, 3) float tensor.

    Returns:
        (16, Cin, Cout) float32 contiguous, computed in float64 and rounded once.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a (Cout, Cin, 3, 3) tensor, got {got}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)  # (4, 4, Cin, Cout)
    return u.reshape(16, weight.shape[1], weight.shape[0]).float().contiguous()


def winograd_conv3x3(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    *,
    dilation: int = 1,
    activation: str = "none",
) -> torch.Tensor:
    """act(conv2d(x, w, bias, padding=dilation, dilation=dilation) + residual) with u = winograd_weight(w).

    Args:
        x: (N, Cin, H, W) float32 CPU tensor (any memory format; channels_last avoids a copy).
        u: (16, Cin, Cout) from winograd_weight.
        bias: (Cout,) or None. residual: (N, Cout, H, W) added before the activation, or None.
        dilation: int >= 1. activation: "none", "relu" or "relu6".

    Returns:
        (N, Cout, H, W) float32, channels_last.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
    _ext.require_ext("cpu")
    return torch.ops.deeplab_fast.winograd_conv3x3(x, u, bias, residual, dilation, _ACTIVATIONS[activation])


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::winograd_conv3x3")
    def _winograd_fake(x, u, bias, residual, dilation, activation):
        n, _, h, w = x.shape
        return x.new_empty((n, u.shape[2], h, w)).contiguous(memory_format=torch.channels_last)
