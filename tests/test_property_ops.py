"""Property tests: dwconv_bn_act and winograd_conv3x3 on every backend here agree with the reference on random
tiny inputs, finite and not (NaN where the reference is NaN, +-inf where it is, close elsewhere). The Triton and
CUDA-kernel backends get their tensors on their device (tests/_devices.py: the interpreter and "cuda_emu" on a
machine without CUDA).

Derandomized, so CI runs the same examples every time."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplab_fast import _ext
from deeplab_fast.ops import dwconv_bn_act, winograd_conv3x3, winograd_weight
from deeplab_fast.ops.reference import dwconv_bn_act_reference, winograd_conv3x3_reference
from tests._devices import CUDA_KERNELS, to_backend
from tests.test_bad_input_ops import assert_same_nonfinite

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")

SPECIALS = (float("nan"), float("inf"), float("-inf"))


def _with_specials(t: torch.Tensor, seed: int, count: int) -> torch.Tensor:
    """t with `count` elements (at seeded positions) replaced by NaN, +inf or -inf."""
    if t.numel() == 0 or count == 0:
        return t
    g = torch.Generator().manual_seed(seed)
    flat = t.clone().view(-1) if t.is_contiguous() else t.contiguous().view(-1)
    where = torch.randint(0, flat.numel(), (count,), generator=g)
    kind = torch.randint(0, len(SPECIALS), (count,), generator=g)
    for i, j in zip(where.tolist(), kind.tolist(), strict=True):
        flat[i] = SPECIALS[j]
    return flat.view(t.shape)


@st.composite
def dwconv_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 11))
    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2, 3, 5, 2**40, 2**63 - 1]))
    activation = draw(st.sampled_from(["none", "relu", "relu6"]))
    channels_last = draw(st.booleans())
    seed, specials = draw(st.integers(0, 2**16)), draw(st.integers(0, 4))
    g = torch.Generator().manual_seed(seed)
    x = _with_specials(torch.randn(n, c, h, w, generator=g) * 3, seed, specials)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g)
    scale, shift = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    return x, weight, scale, shift, stride, dilation, activation


@settings(derandomize=True, deadline=None, max_examples=25)
@given(case=dwconv_cases())
def test_dwconv_bn_act_matches_the_reference(case):
    x, weight, scale, shift, stride, dilation, activation = case
    ref = dwconv_bn_act_reference(x, weight, scale, shift, stride, dilation, activation)
    for backend in ("cpu", "triton", CUDA_KERNELS):
        args = to_backend(backend, x, weight, scale, shift)
        y = dwconv_bn_act(*args, stride=stride, dilation=dilation, activation=activation, backend=backend)
        assert y.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
            memory_format=torch.channels_last
        ), backend
        assert_same_nonfinite(y.cpu(), ref)


@st.composite
def winograd_cases(draw):
    n, cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 10)), draw(st.integers(1, 10))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    tile = draw(st.sampled_from([2, 4]))
    dilation = draw(st.sampled_from([1, 2, 3, 2**62]))
    activation = draw(st.sampled_from(["none", "relu", "relu6"]))
    with_bias, with_residual = draw(st.booleans()), draw(st.booleans())
    seed, specials, residual_specials = draw(st.integers(0, 2**16)), draw(st.integers(0, 3)), draw(st.integers(0, 2))
    g = torch.Generator().manual_seed(seed)
    x = _with_specials(torch.randn(n, cin, h, w, generator=g), seed, specials)
    weight = torch.randn(cout, cin, 3, 3, generator=g) * 0.3
    bias = torch.randn(cout, generator=g) if with_bias else None
    residual = None
    if with_residual:
        residual = _with_specials(torch.randn(n, cout, h, w, generator=g), seed + 1, residual_specials)
    return x, weight, tile, bias, residual, dilation, activation


@settings(derandomize=True, deadline=None, max_examples=25)
@given(case=winograd_cases())
def test_winograd_conv3x3_matches_the_reference(case):
    x, weight, tile, bias, residual, dilation, activation = case
    ref = winograd_conv3x3_reference(x, weight, bias, residual, dilation, activation)
    u = winograd_weight(weight, tile)
    # "reference" is not the reference itself here: it recovers the weight from u (weight_from_u) first.
    for backend in ("cpu", "reference"):
        y = winograd_conv3x3(x, u, bias, residual, dilation=dilation, activation=activation, backend=backend)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert_same_nonfinite(y, ref, 1e-4)
