"""The CUDA kernels of the upsample ops, run on the CPU through the host emulation (backend "cuda_emu"):
global-memory traffic pinned with cuda_emu_counters, bitwise identical results in every schedule order, the
16-byte and the unaligned paths, and the deterministic gather backward of upsample_concat against the
reference's autograd. Shapes are DeepLab's scaled down (the emulation costs ~1 us per emulated thread)."""

from __future__ import annotations

import pytest
import torch

from deeplab_fast import _ext
from deeplab_fast.ops import upsample_argmax, upsample_concat, upsample_softmax_accumulate
from deeplab_fast.ops.reference import upsample_concat_reference
from deeplab_fast.testing import CUDA_EMU_ORDERS, cuda_emu_counters, cuda_emu_order

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="needs deeplab_fast._C")

CL = torch.channels_last
# Decoder: ASPP output (4x up) + low-level features at the output size; ASPP: the 1x1 image pooling first
# (TensorFlow's order) + branches at the output size. Channel counts keep DeepLab's ratios, scaled down.
SHAPES = {
    "decoder": ([(2, 64, 5, 5), (2, 16, 17, 17)], (17, 17)),
    "aspp": ([(2, 32, 1, 1), (2, 32, 9, 9), (2, 32, 9, 9)], (9, 9)),
}


def _inputs(shapes, dtype, fmt=CL, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).contiguous(memory_format=fmt) for s in shapes]


def _ideal_sectors(tensors, y) -> float:
    """Sectors per output element of one read of every input and one write of the output."""
    nbytes = sum(t.numel() * t.element_size() for t in tensors) + y.numel() * y.element_size()
    return nbytes / 32 / y.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(SHAPES))
def test_concat_traffic_is_near_ideal(case, dtype):
    shapes, size = SHAPES[case]
    xs = _inputs(shapes, dtype)
    with cuda_emu_counters() as c:
        y = upsample_concat(xs, size, backend="cuda_emu")
    assert c["launches"] == 1
    sectors = (c["load_sectors"] + c["store_sectors"]) / y.numel()
    assert sectors <= 1.3 * _ideal_sectors(xs, y), (sectors, _ideal_sectors(xs, y))
    # 16-byte accesses: a warp-wide store carries up to 32 x 16 bytes (4 or 2 bytes per lane when scalar).
    assert c["store_bytes"] / c["store_instructions"] > 32 * 4
    assert y.is_contiguous(memory_format=CL)  # the 1x1 input first does not make the output NCHW
    torch.testing.assert_close(y, upsample_concat(xs, size, backend="cpu"), rtol=0, atol=0)


@pytest.mark.parametrize(
    "case",
    [
        # odd channel counts and a storage offset that breaks 16-byte alignment: packs of one element
        ("odd_channels", [(1, 3, 4, 5), (1, 5, 9, 9)], (9, 9), CL, 0),
        ("misaligned", [(1, 8, 4, 5), (1, 8, 9, 9)], (9, 9), CL, 1),
        ("nchw", [(1, 3, 4, 5), (1, 1, 1, 1), (1, 5, 9, 9)], (9, 9), torch.contiguous_format, 0),
        ("downsample", [(1, 8, 40, 37), (1, 8, 3, 3)], (7, 6), CL, 0),
    ],
    ids=lambda c: c[0] if isinstance(c, tuple) else None,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("align_corners", [False, True])
def test_concat_paths_match_the_cpu_kernel(case, dtype, align_corners):
    _, shapes, size, fmt, offset = case
    xs = _inputs(shapes, dtype, fmt)
    if offset:
        xs = [torch.empty(t.numel() + offset, dtype=dtype)[offset:].view(t.shape) for t in xs]
        xs = [t.copy_(s) for t, s in zip(xs, _inputs(shapes, dtype), strict=True)]
    y = upsample_concat(xs, size, align_corners=align_corners, backend="cuda_emu")
    torch.testing.assert_close(y, upsample_concat(xs, size, align_corners=align_corners, backend="cpu"))
    ref = upsample_concat_reference([t.float() for t in xs], size, align_corners)
    torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3)


def _run_every_op(fmt):
    xs = _inputs([(2, 8, 1, 1), (2, 16, 5, 5), (2, 8, 11, 9)], torch.float32, fmt, seed=1)
    logits = _inputs([(2, 8, 4, 5)], torch.bfloat16, fmt, seed=2)[0]
    acc = torch.zeros(2, 8, 11, 9)
    a = [t.clone().requires_grad_() for t in xs]
    y = upsample_concat(a, (11, 9), backend="cuda_emu")
    y.backward(torch.linspace(-1, 1, y.numel()).view(y.shape).contiguous(memory_format=fmt))
    labels = upsample_argmax(logits, (11, 9), backend="cuda_emu")
    upsample_softmax_accumulate(logits, acc, weight=0.5, flip=True, backend="cuda_emu")
    return [y, labels, acc, *(t.grad for t in a)]


@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format], ids=["channels_last", "nchw"])
def test_bitwise_identical_in_every_schedule_order(fmt):
    results = {}
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # the gather backward needs no special mode: it has no atomics
    try:
        for order in CUDA_EMU_ORDERS:
            with cuda_emu_order(order, seed=3):
                results[order] = _run_every_op(fmt)
    finally:
        torch.use_deterministic_algorithms(previous)
    for order in CUDA_EMU_ORDERS[1:]:
        for a, b in zip(results["forward"], results[order], strict=True):
            assert torch.equal(_bits(a), _bits(b)), order


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_class_ops_read_channels_last_logits_in_packs(dtype):
    logits = _inputs([(1, 16, 5, 5)], dtype, seed=4)[0]
    with cuda_emu_counters() as c:
        labels = upsample_argmax(logits, (17, 17), backend="cuda_emu")
    assert c["launches"] == 1
    # A scalar warp-wide load carries at most 32 x 4 bytes; 16-byte packs carry up to 32 x 16.
    assert c["load_bytes"] / c["load_instructions"] > 200
    assert torch.equal(labels, upsample_argmax(logits, (17, 17), backend="cpu"))
    acc, expected = torch.zeros(1, 16, 17, 17), torch.zeros(1, 16, 17, 17)
    with cuda_emu_counters() as c:
        upsample_softmax_accumulate(logits, acc, weight=0.25, backend="cuda_emu")
    assert c["launches"] == 1 and c["load_bytes"] / c["load_instructions"] > 200
    upsample_softmax_accumulate(logits, expected, weight=0.25, backend="cpu")
    torch.testing.assert_close(acc, expected)


@pytest.mark.parametrize(
    "fmt, last_channels",
    [(CL, 8), (CL, 3), (torch.contiguous_format, 3)],
    ids=["channels_last_packs", "channels_last_unaligned", "nchw"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("align_corners", [False, True])
def test_concat_backward_gather_matches_the_reference(fmt, last_channels, dtype, align_corners):
    # upsampled, same size, 1x1 broadcast and downsampled inputs; with 8 channels each, every channel count and
    # the total allow 16-byte packs (4 fp32 or 8 bf16 channels); 3 channels do not
    shapes = [(2, 8, 4, 5), (2, 8, 9, 7), (2, 8, 1, 1), (2, last_channels, 13, 11)]
    xs = _inputs(shapes, dtype, fmt, seed=5)
    a = [t.clone().requires_grad_() for t in xs]
    b = [t.float().clone().requires_grad_() for t in xs]
    y = upsample_concat(a, (9, 7), align_corners=align_corners, backend="cuda_emu")
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    with cuda_emu_counters() as c:
        y.backward(g.contiguous(memory_format=fmt))
    assert c["launches"] == 1
    packed = c["store_bytes"] / c["store_instructions"] > 32 * 4  # more than a warp of scalar stores carries
    assert packed == (fmt == CL and last_channels == 8)
    upsample_concat_reference(b, (9, 7), align_corners).backward(g.float())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga.grad.float(), gb.grad, rtol=tol, atol=tol)


def test_concat_backward_propagates_non_finite_gradients_like_the_reference():
    xs = [torch.randn(1, 4, 3, 3), torch.randn(1, 4, 6, 6)]
    g = torch.randn(1, 8, 6, 6)
    g[0, 1, 2, 3], g[0, 6, 0, 0] = float("inf"), float("nan")
    a = [t.clone().requires_grad_() for t in xs]
    b = [t.clone().requires_grad_() for t in xs]
    upsample_concat(a, (6, 6), backend="cuda_emu").backward(g)
    upsample_concat_reference(b, (6, 6), False).backward(g)
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga.grad, gb.grad, equal_nan=True)


def test_concat_backward_op_checks_and_fake():
    g = torch.randn(1, 6, 5, 5)
    with pytest.raises(ValueError, match="sum\\(channels\\) = 7"):
        torch.ops.deeplab_fast.upsample_concat_backward_cuda_emu(g, [3, 4], [2, 2], [2, 2], False)
    with pytest.raises(ValueError, match="heights and widths must hold 2"):
        torch.ops.deeplab_fast.upsample_concat_backward(g, [3, 3], [2], [2, 2], False)
    with pytest.raises(ValueError, match="float64"):
        torch.ops.deeplab_fast.upsample_concat_backward_cuda_emu(g.double(), [3, 3], [2, 2], [2, 2], False)
    args = (g.contiguous(memory_format=CL), [2, 4], [1, 3], [1, 4], False)
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_concat_backward_cuda_emu, args)
    cpu = torch.ops.deeplab_fast.upsample_concat_backward(*args)
    emu = torch.ops.deeplab_fast.upsample_concat_backward_cuda_emu(*args)
    for a, b in zip(cpu, emu, strict=True):
        assert b.is_contiguous(memory_format=CL) and a.shape == b.shape
        torch.testing.assert_close(a, b)
