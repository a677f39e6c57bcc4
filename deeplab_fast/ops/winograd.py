"""Winograd convolution for the CPU: stride-1 3x3 convolutions of optimize()d models.

A 3x3 "same" convolution at dilation d is, per m x m tile of outputs one dilation apart, (m + 2)^2
products of transformed inputs and weights instead of 9 m^2 (F(2x2, 3x3): 16 for 36; F(4x4, 3x3): 36 for
144): the products of all tiles are (m + 2)^2 GEMMs (T tiles x Cin) @ (Cin x Cout). The weight
transform runs once (`winograd_weight`), the input and output transforms are C++
(csrc/cpu/winograd_cpu.cpp), the GEMMs are at::bmm. Inference only (no autograd), CPU float32;
semantics: `deeplab_fast.ops.reference.winograd_conv3x3_reference`.
"""

from __future__ import annotations

import torch

from deeplab_fast import _ext
from deeplab_fast.ops._backend import run_op

_ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}

# Weight transforms G ((m + 2) x 3) of F(m x m, 3 x 3), m = 2 and 4 (interpolation points 0, +-1 and
# 0, +-1, +-2, plus the point at infinity).
_G = {
    2: ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
    4: (
        (1 / 4, 0.0, 0.0),
        (-1 / 6, -1 / 6, -1 / 6),
        (-1 / 6, 1 / 6, -1 / 6),
        (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6),
        (0.0, 0.0, 1.0),
    ),
}


def winograd_weight(weight: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """Transformed weight u = G w G^T of a 3x3 convolution weight, laid out for the GEMMs.

    Args:
        weight: (Cout, Cin, 3, 3) float tensor.
        tile: outputs per tile side: 2 (F(2x2, 3x3), 16 GEMMs, the most accurate) or 4 (F(4x4, 3x3), 36
            GEMMs over a quarter of the tiles: 4x fewer multiplies than direct, error about 1e-5 relative).

    Returns:
        ((tile + 2)^2, Cin, Cout) float32 contiguous, computed in float64 and rounded once.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a (Cout, Cin, 3, 3) tensor, got {got}")
    if tile not in _G:
        raise ValueError(f"tile must be 2 or 4, got {tile!r}")
    g = torch.tensor(_G[tile], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)  # (A, A, Cin, Cout)
    a = tile + 2
    return u.reshape(a * a, weight.shape[1], weight.shape[0]).float().contiguous()


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
        u: (16 or 36, Cin, Cout) from winograd_weight (its first size picks F(2x2, 3x3) or F(4x4, 3x3)).
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
    return run_op(torch.ops.deeplab_fast.winograd_conv3x3, x, u, bias, residual, dilation, _ACTIVATIONS[activation])


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::winograd_conv3x3")
    def _winograd_fake(x, u, bias, residual, dilation, activation):
        n, _, h, w = x.shape
        return x.new_empty((n, u.shape[2], h, w)).contiguous(memory_format=torch.channels_last)
