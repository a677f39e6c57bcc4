"""Winograd convolution for the CPU: stride-1 3x3 convolutions of optimize()d models.

A 3x3 "same" convolution at dilation d is, per m x m tile of outputs one dilation apart, (m + 2)^2
products of transformed inputs and weights instead of 9 m^2 (F(2x2, 3x3): 16 for 36; F(4x4, 3x3): 36 for
144): the products of all tiles are (m + 2)^2 GEMMs (T tiles x Cin) @ (Cin x Cout). The weight
transform runs once (`winograd_weight`), the input and output transforms are C++
(csrc/cpu/winograd_cpu.cpp), the GEMMs are at::bmm. Inference only (an input that requires grad is an
error), CPU float32; semantics: `deeplab_fast.ops.reference.winograd_conv3x3_reference` with the weight
`weight_from_u(u)`, which the "reference" backend computes.

Non-finite inputs: a Winograd tile mixes all its inputs, so one inf or NaN would poison the whole tile
(NaN where the direct convolution gives inf, or a finite value). The C++ op checks x for inf and NaN (one
vectorized pass) and runs the direct convolution from weight_from_u(u) when it finds any, so the output is
the reference's: inf where the receptive field holds an inf, NaN where it meets inf - inf or a NaN. The
weights (u, bias) are assumed finite.
"""

from __future__ import annotations

import torch

from deeplab_fast import _ext
from deeplab_fast.ops._backend import device_of, resolve_backend, run_op
from deeplab_fast.ops._common import (
    ACTIVATION_NAMES,
    INT64_MAX,
    activation_code,
    check_dilation,
    check_optional_tensor,
    check_same,
    check_tensor,
    dtype_name,
    sizes,
)
from deeplab_fast.ops.reference import winograd_conv3x3_reference

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
    if type(tile) is not int or tile not in _G:
        raise ValueError(f"tile must be 2 or 4 (an int), got {tile!r}")
    g = torch.tensor(_G[tile], dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.detach().double(), g)  # (A, A, Cin, Cout)
    a = tile + 2
    return u.reshape(a * a, weight.shape[1], weight.shape[0]).float().contiguous()


# Left inverses L (3 x (m + 2)) of the G above: L G = I, with rows that pick G's exact points (the corner
# taps, scaled by 1 or 4) and one difference for the middle tap, so w = L u L^T loses almost nothing.
_L = {
    2: ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, -1.0, 0.0), (0.0, 0.0, 0.0, 1.0)),
    4: ((4.0, 0.0, 0.0, 0.0, 0.0, 0.0), (0.0, -3.0, 3.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0, 1.0)),
}


def weight_from_u(u: torch.Tensor) -> torch.Tensor:
    """The 3x3 weight (Cout, Cin, 3, 3) float32 whose winograd_weight is u ((16 or 36), Cin, Cout): the
    inverse of winograd_weight up to rounding (csrc/ops/winograd_ops.cpp computes the same)."""
    tile = 2 if u.shape[0] == 16 else 4
    a = tile + 2
    lmat = torch.tensor(_L[tile], dtype=torch.float64, device=u.device)
    u4 = u.detach().double().reshape(a, a, u.shape[1], u.shape[2])
    return torch.einsum("ia,jb,abco->ocij", lmat, lmat, u4).float()


def _check_types(u: object, bias: object, residual: object, dilation: object) -> None:
    """What the op schema cannot say (x is checked when its device is read)."""
    check_tensor(u, "u")
    check_optional_tensor(bias, "bias")
    check_optional_tensor(residual, "residual")
    check_dilation(dilation)


def check_inputs(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    dilation: int,
    activation: int,
) -> None:
    """The C++ check of winograd_conv3x3 (csrc/ops/winograd_ops.cpp), in the same order and words, for the
    reference backend and the fake implementation."""
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, Cin, H, W) tensor, got {x.dim()}-D with shape {sizes(x)}")
    if x.dtype != torch.float32:
        raise ValueError(f"x must be float32, got {dtype_name(x.dtype)}")
    n, c, h, w = x.shape
    if u.dim() != 3 or u.shape[0] not in (16, 36) or u.shape[1] != c:
        raise ValueError(
            f"u must have shape (16 or 36, {c}, Cout) (winograd_weight of a (Cout, {c}, 3, 3) weight), got {sizes(u)}"
        )
    check_same(u, x, "u")
    cout = u.shape[2]
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != cout:
            raise ValueError(f"bias must have shape ({cout},) (u's Cout), got {sizes(bias)}")
        check_same(bias, x, "bias")
    if residual is not None:
        if tuple(residual.shape) != (n, cout, h, w):
            raise ValueError(f"residual must have shape ({n}, {cout}, {h}, {w}) (the output's), got {sizes(residual)}")
        check_same(residual, x, "residual")
    if not 1 <= dilation <= INT64_MAX:
        raise ValueError(f"dilation must be an int >= 1, got {dilation}")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation code must be 0 (none), 1 (relu) or 2 (relu6), got {activation}")


def winograd_conv3x3(
    x: torch.Tensor,
    u: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    *,
    dilation: int = 1,
    activation: str = "none",
    backend: str = "auto",
) -> torch.Tensor:
    """act(conv2d(x, w, bias, padding=dilation, dilation=dilation) + residual) with u = winograd_weight(w).

    Args:
        x: (N, Cin, H, W) float32 (any memory format; channels_last avoids a copy). Inference only: a
            RuntimeError if x (or u, bias, residual) requires grad while grad mode is on.
        u: (16 or 36, Cin, Cout) from winograd_weight (its first size picks F(2x2, 3x3) or F(4x4, 3x3)).
        bias: (Cout,) or None. residual: (N, Cout, H, W) added before the activation, or None. Both float32
            on x's device.
        dilation: int in [1, 2**63 - 1] (one of at least max(H, W) keeps only the centre tap).
        activation: "none", "relu" or "relu6"; NaN propagates as in torch.
        backend: "auto" (the C++ kernels on CPU tensors, the reference elsewhere), "cpu" or "reference"
            (conv2d with weight_from_u(u): the same function from the same arguments).

    Returns:
        (N, Cout, H, W) float32, channels_last.
    """
    code = activation_code(activation)
    chosen = resolve_backend(backend, device_of(x, "x"), "winograd_conv3x3")
    _check_types(u, bias, residual, dilation)
    if torch.is_grad_enabled():
        for name, t in (("x", x), ("u", u), ("bias", bias), ("residual", residual)):
            if t is not None and t.requires_grad:
                raise RuntimeError(
                    f"winograd_conv3x3 is inference only (it has no gradient), but {name} requires grad: call it "
                    "under torch.no_grad() or torch.inference_mode(), or use F.conv2d to train"
                )
    if chosen == "reference":
        check_inputs(x, u, bias, residual, dilation, code)
        y = winograd_conv3x3_reference(x, weight_from_u(u), bias, residual, dilation, activation)
        return y.contiguous(memory_format=torch.channels_last)
    return run_op(torch.ops.deeplab_fast.winograd_conv3x3, x, u, bias, residual, dilation, code)


def _no_gradient(ctx, grad_out):
    raise RuntimeError(
        "winograd_conv3x3 is inference only (it has no gradient); call it under torch.no_grad() or "
        "torch.inference_mode(), or use F.conv2d to train"
    )


if _ext.HAS_EXT:

    @torch.library.register_fake("deeplab_fast::winograd_conv3x3")
    def _(x, u, bias, residual, dilation, activation):
        check_inputs(x, u, bias, residual, dilation, activation)
        n, _, h, w = x.shape
        return x.new_empty((n, u.shape[2], h, w)).contiguous(memory_format=torch.channels_last)

    torch.library.register_autograd("deeplab_fast::winograd_conv3x3", _no_gradient)
