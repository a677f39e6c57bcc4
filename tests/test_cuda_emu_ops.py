"""Backend "cuda_emu" itself: every emulated CUDA kernel gives the same bytes in every thread/block schedule
(a missing barrier or two threads writing one element would show as a difference), and each `*_cuda_emu` op
passes torch.library.opcheck.

These run on every machine (the emulation takes CPU tensors); the kernels' results against the reference are
tested in each op's own test file (tests/test_dwconv_bn_act.py, tests/test_upsample_*.py), where a GPU machine
runs the real kernels instead.
"""

from __future__ import annotations

import pytest
import torch

from deeplab_fast import _ext
from deeplab_fast.ops import dwconv_bn_act, upsample_argmax, upsample_concat, upsample_softmax_accumulate
from deeplab_fast.testing import CUDA_EMU_ORDERS, cuda_emu_order
from tests._devices import bits, deterministic, offset_view

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")

NAN, INF = float("nan"), float("inf")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Every order, the shuffle with two seeds: forward (the default) is the baseline.
SCHEDULES = [(order, 0) for order in CUDA_EMU_ORDERS] + [("shuffle", 7)]


def _same_bytes_in_every_schedule(what: str, fn, *args, **kwargs) -> None:
    """fn(*args, **kwargs) -> tensor or tuple of tensors: equal bytes under every schedule, in deterministic mode
    (which is restored afterwards, with the schedule)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.ops.deeplab_fast.cuda_emu_order())
    results = []
    with deterministic():
        for order, seed in SCHEDULES:
            with cuda_emu_order(order, seed):
                assert torch.ops.deeplab_fast.cuda_emu_order() == (order, seed)
                out = fn(*args, **kwargs)
            results.append([bits(t) for t in (out if isinstance(out, (tuple, list)) else (out,))])
    assert (torch.are_deterministic_algorithms_enabled(), torch.ops.deeplab_fast.cuda_emu_order()) == before
    for (order, seed), got in zip(SCHEDULES[1:], results[1:], strict=True):
        for i, (a, b) in enumerate(zip(results[0], got, strict=True)):
            assert torch.equal(a, b), f"{what}: output {i} differs between forward and {order} (seed {seed})"


def _dw_inputs(shape, dtype, layout, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=g) * 3
    x[0, 0, 1, 1] = NAN  # non-finite values are scheduled like any other
    x[-1, c - 1, h - 1, 0] = INF
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g)
    scale, shift = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    return [t.to(dtype) for t in (x, weight, scale, shift)]


# (layout, C, k, offset) -> the forward kernel it reaches: NCHW stride-1/2 kernels; channels_last with 16-byte
# packs (C = 16: a multiple of 4 and 8) k = 3 unrolled and k = 5 looped; the one-channel fallback (C = 5, or
# C = 16 with x one element into its buffer). 2 x 16 x 9 x 11 outputs are 13 blocks of 256 threads (NCHW).
DW_PATHS = [
    ("nchw", 16, 3, 0),
    ("nchw", 5, 5, 0),
    ("channels_last", 16, 3, 0),
    ("channels_last", 16, 5, 0),
    ("channels_last", 5, 3, 0),
    ("channels_last", 16, 7, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", DW_PATHS, ids=lambda p: f"{p[0]}-c{p[1]}-k{p[2]}-off{p[3]}")
def test_dwconv_forward_kernels_are_schedule_independent(path, dtype):
    layout, c, k, offset = path
    x, weight, scale, shift = _dw_inputs((2, c, 9, 11), dtype, layout, k)
    if offset:
        x = offset_view(x, offset)
    for stride, dilation, activation in ((1, 2, "relu"), (2, 12, "relu6")):
        _same_bytes_in_every_schedule(
            f"dwconv_bn_act {layout} C={c} k={k} offset={offset} stride={stride} {dtype}",
            dwconv_bn_act,
            *(x, weight, scale, shift),
            stride=stride,
            dilation=dilation,
            activation=activation,
            backend="cuda_emu",
        )


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dwconv_backward_kernels_are_schedule_independent(layout, dtype):
    """The pre-activation gradient, dx and per-channel parameter-sum kernels (stride-1 and stride-2 variants)."""
    x, weight, scale, shift = _dw_inputs((2, 8, 7, 9), dtype, layout, 3, seed=1)
    op = torch.ops.deeplab_fast.dwconv_bn_act_backward_cuda_emu
    for stride, dilation, activation in ((1, 1, 1), (2, 3, 2), (1, 12, 0)):
        ho, wo = (7 + stride - 1) // stride, (9 + stride - 1) // stride
        grad = torch.randn(2, 8, ho, wo, generator=torch.Generator().manual_seed(2)).to(dtype)
        _same_bytes_in_every_schedule(
            f"dwconv_bn_act_backward {layout} stride={stride} {dtype}",
            op,
            *(grad, x, weight, scale, shift, stride, dilation, activation),
        )


def _planted(shape, dtype, channels_last, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = NAN, -INF
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_upsample_kernels_are_schedule_independent(channels_last, dtype):
    """upsample_concat (2 x 9 x 9 x 11 outputs: 7 blocks), upsample_argmax and upsample_softmax_accumulate."""
    tensors = [_planted(s, dtype, channels_last, i) for i, s in enumerate([(2, 3, 5, 6), (2, 4, 9, 11), (2, 2, 1, 1)])]
    logits = _planted((2, 5, 4, 6), dtype, channels_last, 3)
    for ac in (False, True):
        kw = {"align_corners": ac, "backend": "cuda_emu"}
        _same_bytes_in_every_schedule(f"upsample_concat {dtype} ac={ac}", upsample_concat, tensors, (9, 11), **kw)
        _same_bytes_in_every_schedule(f"upsample_argmax {dtype} ac={ac}", upsample_argmax, logits, (9, 11), **kw)
        _same_bytes_in_every_schedule(f"upsample_softmax_accumulate {dtype} ac={ac}", _softmax_accumulated, logits, ac)


def _softmax_accumulated(logits: torch.Tensor, ac: bool) -> torch.Tensor:
    """A fresh accumulator after one emulated upsample_softmax_accumulate (flipped when align_corners is on)."""
    accum = torch.full((logits.shape[0], logits.shape[1], 9, 11), 0.25)
    return upsample_softmax_accumulate(logits, accum, weight=0.5, flip=ac, align_corners=ac, backend="cuda_emu")


# ---------------------------------------------------------------------------------------------- opcheck


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_dwconv_cuda_emu(layout):
    x, weight, scale, shift = (t.requires_grad_() for t in _dw_inputs((1, 8, 5, 6), torch.float32, layout, 3))
    x = x.detach().nan_to_num().requires_grad_()  # finite: opcheck compares gradients
    torch.library.opcheck(torch.ops.deeplab_fast.dwconv_bn_act_cuda_emu.default, (x, weight, scale, shift, 2, 3, 2))
    grad = torch.randn(1, 8, 3, 3)
    if layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    args = (grad, x.detach(), weight.detach(), scale.detach(), shift.detach(), 2, 3, 2)
    torch.library.opcheck(torch.ops.deeplab_fast.dwconv_bn_act_backward_cuda_emu.default, args)


def test_opcheck_upsample_cuda_emu():
    tensors = [torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 2, 1, 1, requires_grad=True)]
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_concat_cuda_emu.default, (tensors, [7, 9], False))
    cl = [t.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for t in tensors]
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_concat_cuda_emu.default, (cl, [7, 9], True))
    logits = torch.randn(2, 3, 4, 5)
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_argmax_cuda_emu.default, (logits, [7, 9], False))
    torch.library.opcheck(
        torch.ops.deeplab_fast.upsample_softmax_accumulate_cuda_emu.default,
        (logits, torch.zeros(2, 3, 7, 9), 0.5, True, False),
    )
