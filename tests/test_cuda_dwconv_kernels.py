"""The tiled CUDA dwconv_bn_act kernels (csrc/cuda/dwconv_bn_act.cuh), run on the CPU through the CUDA emulation
(backend "cuda_emu"): results against the reference on every kernel path (16-byte packs, the unaligned and odd-channel
fallback, NCHW; k = 3 unrolled and any k; stride 1 and 2; dilations beyond the map; fp32/fp16/bf16; non-finite
inputs), gradients against the reference's autograd in both reduction modes, bitwise-equal results across thread
orders under deterministic algorithms, and the global-memory traffic the emulation counts."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from deeplab_fast import _ext
from deeplab_fast.ops.dwconv import dwconv_bn_act
from deeplab_fast.ops.reference import apply_activation, dwconv_bn_act_reference
from deeplab_fast.testing import CUDA_EMU_ORDERS, cuda_emu_counters, cuda_emu_order

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason=f"deeplab_fast._C is not built ({_ext.EXT_ERROR})")

LOW = (torch.float16, torch.bfloat16)


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` with its memory format whose data starts one element into its storage (breaks 16-byte
    alignment, as a view into a larger tensor does), still contiguous in that format."""
    fmt = torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) and t.dim() == 4 else None
    base = torch.empty(t.numel() + 1, dtype=t.dtype)
    out = base[1:].as_strided(t.shape, t.stride())
    out.copy_(t)
    assert out.data_ptr() % 16 != 0
    if fmt is not None:
        assert out.is_contiguous(memory_format=fmt)
    return out


def _inputs(shape, dtype, layout, k=3, seed=0, misaligned=False):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=g) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g)
    scale = torch.rand(c, generator=g) + 0.5
    shift = torch.randn(c, generator=g)
    x, weight, scale, shift = (t.to(dtype) for t in (x, weight, scale, shift))
    return (_misaligned(x) if misaligned else x), weight, scale, shift


def _check_forward(x, weight, scale, shift, stride, dilation, activation, where):
    y = dwconv_bn_act(x, weight, scale, shift, stride=stride, dilation=dilation, activation=activation,
                      backend="cuda_emu")  # fmt: skip
    args32 = [t.float() for t in (x, weight, scale, shift)]
    ref = dwconv_bn_act_reference(*args32, stride, dilation, activation)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    assert y.shape == ref.shape and y.dtype == x.dtype and y.is_contiguous(memory_format=fmt), where
    if x.dtype == torch.float32:
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5, equal_nan=True, msg=where)
        return
    # Low precision: NaN/inf where the reference has them; elsewhere at most twice PyTorch's own error.
    k = weight.shape[-1]
    theirs = F.conv2d(x, weight, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation, groups=x.shape[1])
    theirs = apply_activation(theirs * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), activation).float()
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isnan(y.float()), torch.isnan(ref)), where
    assert torch.equal(y.float()[torch.isinf(ref)], ref[torch.isinf(ref)]), where
    ours_err = (y.float() - ref)[finite].abs().max().item() if finite.any() else 0.0
    their_err = (theirs - ref)[finite].abs().max().item() if finite.any() else 0.0
    assert ours_err <= 2 * their_err + 1e-3, f"{where}: error {ours_err} vs PyTorch's {their_err}"


# (C, k, stride, dilation, H, W): C = 16 fills 16-byte packs of every dtype, 12 those of fp32 only (fp16/bf16 take
# the one-channel fallback), 5 none; dilation 40 is beyond the maps (only the centre tap is inside).
FORWARD_CASES = (
    (16, 3, 1, 1, 7, 9),
    (16, 3, 2, 2, 7, 9),
    (12, 3, 1, 40, 6, 5),
    (5, 3, 2, 1, 7, 6),
    (16, 5, 1, 2, 6, 7),
    (12, 7, 2, 1, 7, 7),
    (5, 7, 1, 3, 5, 6),
)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16, torch.bfloat16), ids=str)
@pytest.mark.parametrize("layout", ("channels_last", "nchw"))
def test_forward_matches_reference(dtype, layout):
    for i, (c, k, stride, dilation, h, w) in enumerate(FORWARD_CASES):
        x, weight, scale, shift = _inputs((2, c, h, w), dtype, layout, k, seed=i)
        activation = ("relu", "relu6", "none")[i % 3]
        where = f"{dtype} {layout} C={c} k={k} stride={stride} dilation={dilation} {h}x{w} {activation}"
        _check_forward(x, weight, scale, shift, stride, dilation, activation, where)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_forward_misaligned_views_take_the_fallback(dtype):
    """A channels_last tensor whose data is not 16-byte aligned runs the one-channel kernel, same results."""
    for c, k, stride, dilation in ((16, 3, 1, 1), (8, 5, 2, 2)):
        x, weight, scale, shift = _inputs((2, c, 6, 7), dtype, "channels_last", k, misaligned=True)
        _check_forward(x, weight, scale, shift, stride, dilation, "relu", f"misaligned {dtype} C={c} k={k}")


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("layout", ("channels_last", "nchw"))
def test_forward_non_finite_inputs_propagate(dtype, layout):
    x, weight, scale, shift = _inputs((2, 8, 7, 8), dtype, layout)
    x[0, 1, 2, 3] = float("nan")
    x[1, 5, 0, 0] = float("inf")
    x[1, 6, 6, 7] = float("-inf")
    for activation in ("relu", "none"):
        _check_forward(x, weight, scale, shift, 1, 2, activation, f"non-finite {dtype} {layout} {activation}")


def _grads(inputs, stride, dilation, activation, grad, backend):
    y = dwconv_bn_act(*inputs, stride=stride, dilation=dilation, activation=activation, backend=backend)
    return torch.autograd.grad(y, inputs, grad)


def _check_grads(dtype, layout, shape, k, stride, dilation, activation, misaligned=False, seed=0):
    x, weight, scale, shift = _inputs(shape, dtype, layout, k, seed=seed, misaligned=misaligned)
    inputs = [t.requires_grad_() for t in (x, weight, scale, shift)]
    ref_inputs = [t.detach().float().requires_grad_() for t in inputs]
    ref = dwconv_bn_act_reference(*ref_inputs, stride, dilation, activation)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    expected = torch.autograd.grad(ref, ref_inputs, grad.float())
    ours = _grads(inputs, stride, dilation, activation, grad, "cuda_emu")
    where = f"{dtype} {layout} {shape} k={k} stride={stride} dilation={dilation} {activation}"
    for name, a, b in zip(("x", "weight", "scale", "shift"), ours, expected, strict=True):
        assert a.shape == b.shape and a.dtype == dtype, f"{where} d{name}"
        if dtype == torch.float32:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f"{where} d{name}")
        else:  # 16-bit inputs and outputs, fp32 accumulation: relative to the gradient's magnitude
            tol = 2e-2 * (b.abs().max().item() + 1)
            torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=tol, msg=f"{where} d{name}")
    if layout == "channels_last":
        assert ours[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("deterministic", (False, True), ids=("atomics", "deterministic"))
@pytest.mark.parametrize(
    "layout,shape,k,stride,dilation,activation",
    (
        ("channels_last", (2, 8, 7, 6), 3, 1, 2, "relu"),  # 16-byte packs
        ("channels_last", (2, 5, 6, 7), 3, 2, 1, "relu6"),  # odd channels: one-channel kernels
        ("nchw", (2, 6, 7, 6), 5, 1, 3, "none"),
        ("nchw", (1, 4, 5, 6), 3, 2, 40, "relu"),  # dilation beyond the map
        ("channels_last", (1, 8, 6, 6), 7, 2, 1, "none"),
    ),
)
def test_backward_matches_reference_autograd(layout, shape, k, stride, dilation, activation, deterministic):
    with _deterministic(deterministic):
        _check_grads(torch.float32, layout, shape, k, stride, dilation, activation)


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_backward_low_precision(dtype):
    _check_grads(dtype, "channels_last", (2, 16, 6, 5), 3, 1, 1, "relu")
    _check_grads(dtype, "nchw", (1, 3, 5, 6), 3, 2, 2, "none", seed=3)


@pytest.mark.parametrize("layout", ("channels_last", "nchw"))
def test_backward_non_finite_inputs_as_the_reference(layout):
    """NaN and inf in x: the gradients have NaN and inf where the reference's autograd has them (a NaN
    pre-activation passes the gradient through relu, as torch's relu backward does). relu6 is left out: torch's
    own hardtanh backward passes the gradient at NaN for channels_last tensors and blocks it for NCHW ones."""
    x, weight, scale, shift = _inputs((2, 8, 7, 8), torch.float32, layout)
    x[0, 1, 2, 3] = float("nan")
    x[1, 5, 0, 0] = float("inf")
    for activation in ("relu", "none"):
        inputs = [t.clone().requires_grad_() for t in (x, weight, scale, shift)]
        ref_inputs = [t.clone().requires_grad_() for t in (x, weight, scale, shift)]
        ref = dwconv_bn_act_reference(*ref_inputs, 1, 2, activation)
        grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
        expected = torch.autograd.grad(ref, ref_inputs, grad)
        ours = _grads(inputs, 1, 2, activation, grad, "cuda_emu")
        for name, a, b in zip(("x", "weight", "scale", "shift"), ours, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, equal_nan=True, msg=f"{layout} {activation} d{name}")


def test_backward_misaligned_fallback():
    _check_grads(torch.float32, "channels_last", (2, 8, 5, 6), 3, 1, 1, "relu", misaligned=True)


@contextlib.contextmanager
def _deterministic(on: bool):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# Shapes with several blocks per launch: channel slabs (a partial one for C = 12 fp32), and for the 36x36 map more
# than one tile in the backward's parameter kernel (its staged input and gradient do not fit one block together).
ORDER_CASES = (
    (torch.float32, "channels_last", (2, 12, 36, 36), 3, 1, 2),
    (torch.bfloat16, "channels_last", (2, 16, 9, 8), 5, 2, 1),
    (torch.float32, "nchw", (2, 3, 9, 10), 3, 1, 3),
)


@pytest.mark.parametrize("dtype,layout,shape,k,stride,dilation", ORDER_CASES)
def test_bitwise_identical_across_thread_orders(dtype, layout, shape, k, stride, dilation):
    x, weight, scale, shift = _inputs(shape, dtype, layout, k)
    inputs = [t.requires_grad_() for t in (x, weight, scale, shift)]
    grad = None
    results = []
    with _deterministic(True):
        for order in CUDA_EMU_ORDERS:
            with cuda_emu_order(order, seed=3):
                y = dwconv_bn_act(*inputs, stride=stride, dilation=dilation, activation="relu", backend="cuda_emu")
                if grad is None:
                    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
                results.append((y.detach(), *torch.autograd.grad(y, inputs, grad)))
    for order, got in zip(CUDA_EMU_ORDERS[1:], results[1:], strict=True):
        for name, a, b in zip(("y", "dx", "dweight", "dscale", "dshift"), got, results[0], strict=True):
            assert torch.equal(_bits(a), _bits(b)), f"{name} differs between the forward and {order} orders"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as integers of its element size (NaN payloads included)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.detach().contiguous().flatten().view(ints[t.element_size()])


def _forward_traffic(shape, dtype, layout, dilation, stride=1):
    x, weight, scale, shift = _inputs(shape, dtype, layout)
    with cuda_emu_counters() as counts:
        y = dwconv_bn_act(x, weight, scale, shift, stride=stride, dilation=dilation, backend="cuda_emu")
    sectors = (x.numel() + y.numel()) * x.element_size() / 32  # one read of x, one write of y
    return counts, (counts["load_sectors"] + counts["store_sectors"]) / sectors


# DeepLab's depthwise shapes scaled down: ASPP maps (33x33 at rates 6/12) and decoder-like maps, batch 2.
TRAFFIC_CASES = (
    ((2, 64, 17, 17), torch.float32, 1),
    ((2, 64, 17, 17), torch.bfloat16, 6),
    ((2, 128, 33, 33), torch.float32, 6),
    ((2, 128, 33, 33), torch.float32, 12),
    ((2, 64, 33, 33), torch.bfloat16, 12),
    ((2, 64, 33, 33), torch.float16, 1),
)


@pytest.mark.parametrize("shape,dtype,dilation", TRAFFIC_CASES)
def test_forward_traffic_is_one_read_and_one_write(shape, dtype, dilation):
    """One launch per call; global load + store sectors within 1.3x of one read of x and one write of y (the map
    fits one block's tile, so each input element is read once; weights, scale and shift are the rest)."""
    counts, ratio = _forward_traffic(shape, dtype, "channels_last", dilation)
    assert counts["launches"] == 1
    assert ratio <= 1.3, f"{counts}: {ratio:.2f}x the ideal sectors"


def test_forward_traffic_nchw_and_stride_two():
    counts, ratio = _forward_traffic((2, 32, 33, 33), torch.float32, "nchw", 6)
    assert counts["launches"] == 1 and ratio <= 1.3, f"{counts}: {ratio:.2f}x"
    counts, ratio = _forward_traffic((2, 64, 33, 33), torch.float32, "channels_last", 1, stride=2)
    assert counts["launches"] == 1 and ratio <= 1.3, f"{counts}: {ratio:.2f}x"


@pytest.mark.parametrize("deterministic,launches", ((False, 2), (True, 3)), ids=("atomics", "deterministic"))
def test_backward_launches(deterministic, launches):
    """The backward: the parameter-gradient kernel, dx; plus the fixed-order sum in deterministic mode."""
    x, weight, scale, shift = _inputs((2, 16, 9, 9), torch.float32, "channels_last")
    with _deterministic(deterministic), cuda_emu_counters() as counts:
        torch.ops.deeplab_fast.dwconv_bn_act_backward_cuda_emu(torch.ones_like(x), x, weight, scale, shift, 1, 2, 1)
    assert counts["launches"] == launches
