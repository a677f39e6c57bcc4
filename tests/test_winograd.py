"""winograd_conv3x3 (CPU, Winograd F(2x2, 3x3)): parity with the conv2d reference, bad input, optimize() use."""

from __future__ import annotations

import pytest
import torch

from deeplab_fast import _ext
from deeplab_fast.models.fuse import FusedConv
from deeplab_fast.ops import winograd_conv3x3, winograd_weight
from deeplab_fast.ops.reference import winograd_conv3x3_reference
from tests._devices import each_cpu_variant

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")


def _inputs(n, cin, cout, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, 3, 3, generator=g) * 0.2
    return x, weight, torch.randn(cout, generator=g), torch.randn(n, cout, h, w, generator=g)


def _close(a, b, tol=1e-5):
    scale = b.abs().max().clamp_min(1.0)
    assert ((a - b).abs().max() / scale).item() < tol


# (N, Cin, Cout, H, W, dilation): even/odd sizes, a channel tail (not a multiple of 8), dilations whose
# tiles fall partly outside the map, and maps smaller than the dilation.
CASES = [
    (1, 16, 24, 8, 8, 1),
    (2, 13, 9, 7, 11, 1),
    (1, 8, 16, 33, 33, 2),
    (1, 24, 8, 17, 13, 3),
    (2, 16, 16, 9, 10, 5),
    (1, 8, 8, 3, 4, 6),
    (1, 16, 32, 33, 33, 12),
]


@pytest.mark.parametrize("n,cin,cout,h,w,d", CASES, ids=[f"{c[1]}to{c[2]}-{c[3]}x{c[4]}-d{c[5]}" for c in CASES])
@pytest.mark.parametrize("activation", ["none", "relu", "relu6"])
@pytest.mark.parametrize("tile", [2, 4], ids=["F2x2", "F4x4"])
@each_cpu_variant
def test_matches_conv2d_reference(cpu_variant, n, cin, cout, h, w, d, activation, tile):
    x, weight, bias, residual = _inputs(n, cin, cout, h, w)
    u = winograd_weight(weight, tile)
    tol = 1e-5 if tile == 2 else 1e-4  # F(4x4, 3x3)'s larger transform constants cost about 1e-5
    y = winograd_conv3x3(x, u, bias, residual, dilation=d, activation=activation)
    assert y.shape == (n, cout, h, w) and y.is_contiguous(memory_format=torch.channels_last)
    _close(y, winograd_conv3x3_reference(x, weight, bias, residual, d, activation), tol)
    y = winograd_conv3x3(x.contiguous(), u, dilation=d, activation=activation)  # NCHW input, no bias/residual
    _close(y, winograd_conv3x3_reference(x, weight, None, None, d, activation), tol)


def test_weight_transform_layout():
    weight = torch.randn(5, 3, 3, 3)
    u = winograd_weight(weight)
    assert u.shape == (16, 3, 5) and u.dtype == torch.float32 and u.is_contiguous()
    # element (0, 0) of G w G^T is the corner weight w[:, :, 0, 0] (times 1/16 for F(4x4, 3x3))
    torch.testing.assert_close(u[0], weight[:, :, 0, 0].t())
    u4 = winograd_weight(weight, 4)
    assert u4.shape == (36, 3, 5)
    torch.testing.assert_close(u4[0], weight[:, :, 0, 0].t() / 16)


def test_empty_batch():
    x, weight, _, _ = _inputs(1, 8, 4, 5, 5)
    assert winograd_conv3x3(x[:0], winograd_weight(weight)).shape == (0, 4, 5, 5)


def test_opcheck():
    x, weight, bias, residual = _inputs(1, 8, 8, 6, 7)
    u = winograd_weight(weight)
    torch.library.opcheck(torch.ops.deeplab_fast.winograd_conv3x3.default, (x, u, bias, residual, 2, 1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"x": torch.randn(8, 5, 5)}, r"x must be a 4-D \(N, Cin, H, W\) tensor"),
        ({"x": torch.randn(1, 8, 5, 5).double()}, "x must be float32"),
        ({"u": torch.randn(16, 7, 4)}, r"u must have shape \(16 or 36, 8, Cout\)"),
        ({"u": torch.randn(25, 8, 4)}, r"u must have shape \(16 or 36, 8, Cout\)"),
        ({"bias": torch.randn(5)}, r"bias must have shape \(4,\)"),
        ({"bias": torch.randn(4).double()}, "bias must have x's dtype float32, got float64"),
        ({"residual": torch.randn(1, 4, 5, 5, device="meta")}, "residual must be on x's device cpu, got meta"),
        ({"residual": torch.randn(1, 4, 5, 6)}, r"residual must have shape \(1, 4, 5, 5\)"),
        ({"dilation": 0}, "dilation must be an int >= 1"),
        ({"activation": "gelu"}, "activation must be one of"),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_bad_input(kwargs, message, backend):
    """The C++ op and the reference backend's Python check raise the same ValueError."""
    args = {
        "x": torch.randn(1, 8, 5, 5),
        "u": winograd_weight(torch.randn(4, 8, 3, 3)),
        "bias": None,
        "residual": None,
        "dilation": 1,
        "activation": "none",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        winograd_conv3x3(
            args["x"],
            args["u"],
            args["bias"],
            args["residual"],
            dilation=args["dilation"],
            activation=args["activation"],
            backend=backend,
        )


def test_weight_bad_input():
    with pytest.raises(ValueError, match=r"weight must be a \(Cout, Cin, 3, 3\) tensor"):
        winograd_weight(torch.randn(4, 4, 5, 5))
    with pytest.raises(ValueError, match="tile must be 2 or 4"):
        winograd_weight(torch.randn(4, 4, 3, 3), tile=3)
    with pytest.raises(ValueError, match=r"tile must be 2 or 4 \(an int\), got 4.0"):
        winograd_weight(torch.randn(4, 4, 3, 3), tile=4.0)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("activation", ["none", "relu6"])
def test_reference_backend_matches_cpu(tile, activation):
    """backend="reference" computes the same function from the same arguments (u, not the weight)."""
    x, weight, bias, residual = _inputs(2, 8, 5, 7, 6)
    u = winograd_weight(weight, tile)
    ref = winograd_conv3x3(x, u, bias, residual, dilation=2, activation=activation, backend="reference")
    assert ref.is_contiguous(memory_format=torch.channels_last) and ref.shape == (2, 5, 7, 6)
    _close(winograd_conv3x3(x, u, bias, residual, dilation=2, activation=activation, backend="cpu"), ref, 1e-4)
    _close(ref, winograd_conv3x3_reference(x, weight, bias, residual, 2, activation))


def test_weight_from_u_inverts_the_transform():
    from deeplab_fast.ops.winograd import weight_from_u

    weight = torch.randn(6, 5, 3, 3)
    for tile in (2, 4):
        torch.testing.assert_close(weight_from_u(winograd_weight(weight, tile)), weight, rtol=1e-6, atol=1e-6)


def test_fused_conv_uses_it_for_wide_stride1_3x3():
    """optimize()'s FusedConv runs 3x3 stride-1 convs of >= 64 channels through Winograd (engine "auto"), with the
    residual and the activation fused, and conv2d with engine="aten"."""
    x, weight, bias, residual = _inputs(1, 128, 128, 9, 9)
    conv = FusedConv(weight, bias, stride=1, padding=2, dilation=2, act="relu")
    ref = winograd_conv3x3_reference(x, weight, bias, residual, 2, "relu")
    with torch.no_grad():
        assert conv.engine == "winograd" and conv._use_winograd(x)
        _close(conv(x, residual), ref, 1e-4)
        assert conv._wino is not None and conv._wino[0].shape[0] == 36  # F(4x4, 3x3), cached
        aten = FusedConv(weight, bias, stride=1, padding=2, dilation=2, act="relu", engine="aten")
        assert not aten._use_winograd(x)
        _close(aten(x, residual), ref)
    narrow = FusedConv(weight[:32, :32], bias[:32], stride=1, padding=1, dilation=1)
    assert not narrow._use_winograd(x[:, :32])  # too thin to pay off
    with torch.enable_grad():
        assert not conv._use_winograd(x)  # inference only


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph(backend):
    x, weight, bias, residual = _inputs(1, 8, 8, 6, 7)
    u = winograd_weight(weight)

    def block(x, residual):
        return winograd_conv3x3(x, u, bias, residual, dilation=2, activation="relu", backend=backend) * 2

    with torch.no_grad():
        _close(torch.compile(block, fullgraph=True)(x, residual), block(x, residual))
