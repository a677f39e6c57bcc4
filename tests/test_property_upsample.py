"""Property tests of the three bilinear-resize ops against the reference on random finite and non-finite inputs.

Each example draws tiny logits or feature maps (NCHW or channels_last, float32/float16/bfloat16, odd class counts,
upsampling and downsampling, align_corners both ways, output widths on both sides of the CPU's 8-column vector
paths) with NaN, +-inf and finite values beyond 1e30 planted at random places, and checks the op against
deeplab_fast.ops.reference: NaN where the reference is NaN, inf (of the same sign) where it is inf, close
elsewhere, labels equal. Derandomized, so CI sees the same examples every run. The Triton and CUDA-kernel backends
get their tensors on their device (tests/_devices.py); without CUDA, Triton runs through the interpreter and the
CUDA kernels through the host emulation ("cuda_emu"), with fewer examples.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplab_fast import _ext
from deeplab_fast.ops import upsample_argmax, upsample_concat, upsample_softmax_accumulate
from deeplab_fast.ops.reference import (
    upsample_argmax_reference,
    upsample_concat_reference,
    upsample_softmax_accumulate_reference,
)
from tests._devices import CUDA_KERNELS, HAS_CUDA, to_backend

# The inputs are non-finite on purpose: the Triton interpreter computes with NumPy, which warns about inf * 0.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
needs_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
BACKENDS = [pytest.param("cpu", marks=needs_ext), "triton", pytest.param(CUDA_KERNELS, marks=needs_ext)]
EXAMPLES = {"cpu": 40, "triton": 8, "cuda": 40, "cuda_emu": 40}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# NaN, infinities, and finite values above the CPU kernels' 1e30 "tame" bound (they overflow to inf in float16).
SPECIALS = [float("nan"), float("inf"), float("-inf"), 1e35, -1e35]
# The Triton interpreter computes tl.fma as an unfused multiply and add (NumPy), so a source coordinate that PyTorch
# (and a GPU, which fuses the fma) computes as 7e-9 comes out 0 there: a 1e35 neighbour then moves an output by 7e26,
# and an inf neighbour gives 0 * inf = NaN where the reference has inf. NaN propagates whatever the weights, so the
# interpreted Triton backend gets NaN alone; the CUDA-kernel and cpu backends get every special.
INTERPRETED_SPECIALS = [float("nan")]


def _specials(backend: str) -> list[float]:
    return INTERPRETED_SPECIALS if backend == "triton" and not HAS_CUDA else SPECIALS


side = st.integers(1, 9)
out_side = st.integers(1, 12)


@st.composite
def feature_maps(draw, shapes, specials):
    """Tensors of the given (N, C, H, W) shapes in one drawn dtype and memory format, with `specials` planted."""
    dtype = draw(st.sampled_from(DTYPES))
    channels_last = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    ties = draw(st.booleans())  # small integers: many exact ties between classes and pixels
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for shape in shapes:
        t = torch.randint(-2, 3, shape, generator=g).float() if ties else 3 * torch.randn(shape, generator=g)
        flat = t.view(-1)
        for _ in range(draw(st.integers(0, 3))):
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(specials))
        t = t.to(dtype)
        tensors.append(t.contiguous(memory_format=torch.channels_last) if channels_last else t)
    return tensors


def assert_matches(out: torch.Tensor, ref: torch.Tensor) -> None:
    """NaN where ref is NaN, the same infinities (assert_close compares non-finite values exactly), finite values
    close: both sides resize in fp32 and round once to the storage type, so one unit in its last place at most."""
    tol = 1e-5 if out.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol, equal_nan=True)


@st.composite
def concat_case(draw, specials):
    n = draw(st.integers(1, 2))
    shapes = [(n, draw(st.integers(1, 5)), draw(side), draw(side)) for _ in range(draw(st.integers(1, 3)))]
    size = (draw(out_side), draw(out_side))
    if draw(st.booleans()):  # an input already at the output size: the CPU's copy path
        shapes[0] = (n, shapes[0][1], *size)
    return draw(feature_maps(shapes, specials)), size, draw(st.booleans())


@st.composite
def class_case(draw, specials):
    shape = (draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 3, 5, 8, 9])), draw(side), draw(side))
    size = (draw(out_side), draw(out_side))
    if draw(st.booleans()):
        size = shape[2:]  # same size: F.interpolate turns inf into NaN there too
    return draw(feature_maps([shape], specials))[0], size, draw(st.booleans())


@pytest.mark.parametrize("backend", BACKENDS)
def test_upsample_concat_matches_reference(backend):
    @settings(derandomize=True, deadline=None, max_examples=EXAMPLES[backend])
    @given(case=concat_case(_specials(backend)))
    def check(case):
        tensors, size, align_corners = case
        out = upsample_concat(to_backend(backend, *tensors), size, align_corners=align_corners, backend=backend)
        ref = upsample_concat_reference(tensors, size, align_corners)
        assert_matches(out.cpu(), ref)

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_upsample_argmax_matches_reference(backend):
    @settings(derandomize=True, deadline=None, max_examples=EXAMPLES[backend])
    @given(case=class_case(_specials(backend)))
    def check(case):
        logits, size, align_corners = case
        out = upsample_argmax(*to_backend(backend, logits), size, align_corners=align_corners, backend=backend).cpu()
        ref = upsample_argmax_reference(logits, size, align_corners)
        assert torch.equal(out, ref), f"{(out != ref).sum().item()} labels differ"

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_upsample_softmax_accumulate_matches_reference(backend):
    @settings(derandomize=True, deadline=None, max_examples=EXAMPLES[backend])
    @given(case=class_case(_specials(backend)), flip=st.booleans(), weight=st.sampled_from([0.25, 1.0]))
    def check(case, flip, weight):
        logits, size, align_corners = case
        accum = torch.rand(logits.shape[0], logits.shape[1], *size, generator=torch.Generator().manual_seed(1))
        ref = upsample_softmax_accumulate_reference(logits, accum.clone(), weight, flip, align_corners)
        logits, accum = to_backend(backend, logits, accum)
        upsample_softmax_accumulate(
            logits, accum, weight=weight, flip=flip, align_corners=align_corners, backend=backend
        )
        assert_matches(accum.cpu(), ref)

    check()
