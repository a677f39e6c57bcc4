"""deeplab_fast.ops.dwconv_bn_act against its reference: forward grid, gradients, op registration, errors.

The CUDA kernels run on CUDA tensors on a GPU machine and through the host emulation (backend "cuda_emu") on CPU
tensors elsewhere (tests/_devices.py); their grid reaches each kernel path: 16-byte channel packs (C a multiple of
4 for fp32, of 8 for fp16/bf16) and the one-channel fallback (other C, or an x whose data is not 16-byte aligned),
k = 3 unrolled and k = 5 / 7 looped, the NCHW stride-1 and stride-2 kernels, and the three backward kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.ops import dwconv_bn_act, fold_bn
from deeplab_fast.ops.reference import apply_activation, dwconv_bn_act_reference
from tests._devices import CUDA_KERNELS, HAS_CUDA, each_cpu_variant, offset_view, to_backend

needs_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

DILATIONS = (1, 2, 4, 6, 12, 18, 24, 36)
# (N, C, H, W): 1x1, odd/even sides, maps smaller than most dilations; C = 11 and 43 leave tails after the
# 8-lane packs and the 32-channel groups of the CPU kernel.
SHAPES = ((2, 11, 1, 1), (1, 43, 5, 7), (2, 11, 8, 6), (1, 3, 13, 4))
LAYOUTS = ("nchw", "channels_last")
ACTS = ("relu", "relu6", "none")


def _inputs(shape, dtype, layout, k=3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=g) * 3
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g)
    scale = torch.rand(c, generator=g) + 0.5
    shift = torch.randn(c, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, weight, scale, shift)]


def _torch_lowprec(x, weight, scale, shift, stride, dilation, activation):
    """PyTorch's own chain in x's dtype (conv, affine, activation), the yardstick for fp16/bf16 error."""
    k = weight.shape[-1]
    y = F.conv2d(x, weight, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation, groups=x.shape[1])
    return apply_activation(y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), activation)


def _check_against_reference(backend, dtype, layout, shape, stride, dilation, activations=ACTS, k=3, offset=0):
    """Our output for each activation vs the reference. PyTorch's dilated depthwise conv is slow on a CPU
    (tens of ms at rate 36), so the pre-activation reference is computed once (on the CPU) and activated per case.
    The backend gets its tensors on its device; `offset` > 0 starts x that many elements into its buffer."""
    x, weight, scale, shift = _inputs(shape, dtype, layout, k)
    low = dtype in (torch.float16, torch.bfloat16)
    args32 = [t.float() for t in (x, weight, scale, shift)] if low else (x, weight, scale, shift)
    pre = dwconv_bn_act_reference(*args32, stride, dilation, "none")
    pre_theirs = _torch_lowprec(x, weight, scale, shift, stride, dilation, "none") if low else None
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    xb, wb, sb, bb = to_backend(backend, x, weight, scale, shift)
    if offset:
        xb = offset_view(xb, offset)
    for activation in activations:
        where = f"{backend} {dtype} {layout} shape={shape} k={k} stride={stride} dilation={dilation} act={activation}"
        where += f" offset={offset}" if offset else ""
        y = dwconv_bn_act(xb, wb, sb, bb, stride=stride, dilation=dilation, activation=activation,
                          backend=backend)  # fmt: skip
        ref = apply_activation(pre, activation)
        assert y.shape == ref.shape and y.dtype == dtype and y.device == xb.device, where
        assert y.is_contiguous(memory_format=fmt), where
        y = y.cpu()
        if not low:
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5, msg=where)
            continue
        # Low precision: error against an fp32 reference at most twice PyTorch's own low-precision error.
        ours = (y.float() - ref).abs().max().item()
        theirs = (apply_activation(pre_theirs, activation).float() - ref).abs().max().item()
        assert ours <= 2 * theirs + 1e-3, f"{where}: error {ours} vs PyTorch's {theirs}"


CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@each_cpu_variant
def test_cpu_paired_walk_on_wide_maps(cpu_variant, dtype):
    """channels_last stride-1 3x3 on >= 512 channels (any rate) takes the paired-output walk of the CPU
    kernel; widths with 16-, 8- and 1-channel tails and odd maps, at rates 1, 2 and 5."""
    for c in (512, 520, 523):
        for dilation in (1, 2, 5):
            _check_against_reference("cpu", dtype, "channels_last", (1, c, 9, 10), 1, dilation, ("relu",))


@needs_ext
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@each_cpu_variant
def test_cpu_grid(cpu_variant, dtype, layout, stride):
    """Full product: dtype x layout x stride x dilation x shape x activation, on each CPU kernel variant."""
    for dilation in DILATIONS:
        for shape in SHAPES:
            _check_against_reference("cpu", dtype, layout, shape, stride, dilation)


@needs_ext
@pytest.mark.parametrize("k", (5, 7, 9))
@pytest.mark.parametrize("layout", LAYOUTS)
@each_cpu_variant
def test_cpu_larger_kernels(cpu_variant, k, layout):
    for dilation, stride in ((1, 1), (3, 2), (12, 1)):
        for shape in SHAPES[1:3]:
            _check_against_reference("cpu", torch.float32, layout, shape, stride, dilation, ("relu",), k=k)


# Triton runs through the interpreter on a CPU (~0.2 s a call): a representative subset. float64 runs only
# through the interpreter (the GPU kernels refuse it).
TRITON_CASES = (
    (torch.float32, "nchw", (1, 43, 5, 7), 1, 1, "relu"),
    (torch.float32, "channels_last", (2, 11, 8, 6), 2, 2, "relu6"),
    (torch.float32, "nchw", (2, 11, 1, 1), 2, 36, "none"),
    (torch.float32, "channels_last", (1, 43, 5, 7), 1, 24, "relu"),
    (torch.float16, "nchw", (2, 11, 8, 6), 1, 6, "relu"),
    (torch.float16, "channels_last", (1, 3, 13, 4), 2, 4, "relu6"),
    (torch.bfloat16, "channels_last", (1, 43, 5, 7), 1, 12, "none"),
    (torch.bfloat16, "nchw", (1, 3, 13, 4), 2, 18, "relu"),
    *(() if HAS_CUDA else ((torch.float64, "channels_last", (2, 11, 8, 6), 1, 2, "relu"),)),
)


@pytest.mark.parametrize("case", TRITON_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-s{c[3]}-d{c[4]}-{c[5]}")
def test_triton_subset(case):
    dtype, layout, shape, stride, dilation, activation = case
    _check_against_reference("triton", dtype, layout, shape, stride, dilation, (activation,))


# The CUDA kernels (CUDA_KERNELS: "cuda" on a GPU machine, "cuda_emu" on a CPU). (N, C, H, W): C = 8 and 16 take
# the 16-byte packs in every dtype, C = 12 in fp32 only (fp16/bf16 packs hold 8 channels), C = 5 never; maps of
# at most 9x11 (the emulation runs ~1 us per thread), smaller than the largest dilation.
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CUDA_SHAPES = ((2, 8, 9, 11), (2, 12, 5, 7), (1, 5, 8, 6), (2, 16, 3, 4))
CUDA_DILATIONS = (1, 2, 5, 12)


@needs_ext
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_kernels_grid(dtype, layout):
    """k = 3: dtype x layout x stride x dilation (1 up to beyond the map) x shape x activation."""
    for stride in (1, 2):
        for dilation in CUDA_DILATIONS:
            for shape in CUDA_SHAPES:
                _check_against_reference(CUDA_KERNELS, dtype, layout, shape, stride, dilation)


@needs_ext
@pytest.mark.parametrize("k", (5, 7))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_kernels_larger_kernels(dtype, layout, k):
    """k = 5 and 7 loop over the taps (packed and one-channel channels_last kernels, both NCHW kernels)."""
    for i, (dilation, stride) in enumerate(((1, 1), (3, 2), (12, 1), (2, 2))):
        for shape in (CUDA_SHAPES[0], CUDA_SHAPES[2]):
            _check_against_reference(CUDA_KERNELS, dtype, layout, shape, stride, dilation, (ACTS[i % 3],), k=k)


@needs_ext
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_kernels_unaligned_input(dtype, layout):
    """x starting one element into its buffer: channels_last C = 8 / 16 would take the 16-byte packs, but the
    base pointer is not 16-byte aligned, so the kernels take the one-channel fallback (the emulation faults
    on a misaligned 16-byte access, as a GPU does)."""
    for k, stride, dilation in ((3, 1, 1), (3, 2, 2), (5, 1, 12), (7, 2, 1)):
        for shape in ((2, 8, 5, 7), (1, 16, 4, 3)):
            _check_against_reference(CUDA_KERNELS, dtype, layout, shape, stride, dilation, ("relu",), k=k, offset=1)


@needs_ext
@pytest.mark.parametrize("backend", ("cpu", "triton", CUDA_KERNELS))
def test_non_contiguous_inputs(backend):
    x, weight, scale, shift = to_backend(backend, *_inputs((2, 22, 9, 16), torch.float32, "nchw"))
    xs = x[:, ::2, :, ::2]  # strided in C and W
    ws = torch.randn(11, 3, 3, 1, device=x.device).permute(0, 3, 1, 2)  # (C, 1, 3, 3), non-contiguous
    ss, bs = scale[::2], shift[::2]
    y = dwconv_bn_act(xs, ws, ss, bs, dilation=2, backend=backend).cpu()
    expected = dwconv_bn_act_reference(*(t.cpu() for t in (xs, ws, ss, bs)), 1, 2, "relu")
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@needs_ext
@pytest.mark.parametrize("backend", ("cpu", "triton", "reference", CUDA_KERNELS))
def test_empty_batch(backend):
    x, weight, scale, shift = to_backend(backend, *_inputs((1, 5, 7, 6), torch.float32, "channels_last"))
    y = dwconv_bn_act(x[:0], weight, scale, shift, stride=2, backend=backend)
    assert y.shape == (0, 5, 4, 3) and y.device == x.device


def test_fold_bn_matches_batchnorm():
    bn = torch.nn.BatchNorm2d(6, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 6, 5, 5)
    bias = torch.randn(6)
    scale, shift = fold_bn(bn, bias)
    expected = bn(x + bias.view(1, -1, 1, 1))
    torch.testing.assert_close(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), expected)
    with pytest.raises(TypeError, match="bn must be a BatchNorm"):
        fold_bn(torch.nn.ReLU())


# ----------------------------------------------------------------------------------------------- gradients


def _grad_inputs(dtype, layout, shape=(2, 5, 7, 6), k=3):
    return [t.requires_grad_() for t in _inputs(shape, dtype, layout, k, seed=1)]


@needs_ext
@pytest.mark.parametrize(
    "layout,stride,dilation,activation",
    (("nchw", 2, 2, "relu6"), ("channels_last", 1, 3, "none"), ("nchw", 1, 9, "relu")),
)
def test_gradcheck_cpu_float64(layout, stride, dilation, activation):
    x, weight, scale, shift = _grad_inputs(torch.float64, layout, shape=(1, 3, 5, 4))
    fn = lambda *a: dwconv_bn_act(*a, stride=stride, dilation=dilation, activation=activation, backend="cpu")
    assert torch.autograd.gradcheck(fn, (x, weight, scale, shift))


def _check_grads(backend, layout, stride, dilation, activation, k=3, dtype=torch.float32, shape=(2, 5, 7, 6),
                 offset=0):  # fmt: skip
    """Gradients of `backend` (its tensors on its device) against the reference's on the CPU. fp32: within
    1e-4; fp16/bf16: error against the fp32 reference's gradients at most twice that of PyTorch's own
    low-precision chain (conv, affine, activation) on the same input."""
    inputs = _grad_inputs(dtype, layout, shape, k)
    moved = to_backend(backend, *inputs)
    if offset:
        moved[0] = offset_view(moved[0].detach(), offset).requires_grad_()
    y = dwconv_bn_act(*moved, stride=stride, dilation=dilation, activation=activation, backend=backend)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    ours = [g.cpu() for g in torch.autograd.grad(y, moved, grad.to(y.device))]
    low = dtype in (torch.float16, torch.bfloat16)
    inputs32 = [t.detach().float().requires_grad_() for t in inputs] if low else inputs
    ref = dwconv_bn_act_reference(*inputs32, stride, dilation, activation)
    expected = torch.autograd.grad(ref, inputs32, grad.float() if low else grad)
    if low:
        pre = _torch_lowprec(*inputs, stride, dilation, "none")
        theirs = torch.autograd.grad(apply_activation(pre, activation), inputs, grad)
    where = f"{backend} {dtype} {layout} shape={shape} k={k} stride={stride} dilation={dilation} act={activation}"
    for i, name in enumerate(("x", "weight", "scale", "shift")):
        assert ours[i].shape == expected[i].shape and ours[i].dtype == dtype, f"{where}: d{name}"
        if not low:
            torch.testing.assert_close(ours[i], expected[i], rtol=1e-4, atol=1e-4, msg=f"{where}: d{name}")
            continue
        err = (ours[i].float() - expected[i]).abs().max().item()
        their_err = (theirs[i].float() - expected[i]).abs().max().item()
        assert err <= 2 * their_err + 1e-3, f"{where}: d{name} error {err} vs PyTorch's {their_err}"
    if layout == "channels_last":
        assert ours[0].is_contiguous(memory_format=torch.channels_last)


@needs_ext
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_cpu(layout, stride, activation):
    for dilation in (1, 4, 12):
        _check_grads("cpu", layout, stride, dilation, activation)


@needs_ext
def test_backward_cpu_k5():
    _check_grads("cpu", "nchw", 2, 2, "relu", k=5)


def test_backward_triton():
    _check_grads("triton", "channels_last", 2, 2, "relu6")


@needs_ext
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_cuda_kernels(layout, stride):
    """The three backward kernels (pre-activation gradient, dx, per-channel parameter sums; stride-1 and
    stride-2 variants) in fp32: every activation, dilations up to beyond the map, k = 3 / 5 / 7, N = 2,
    C = 8 (a pack width) and 5."""
    for i, (k, dilation) in enumerate(((3, 1), (3, 4), (3, 12), (5, 2), (7, 3))):
        for shape in ((2, 5, 7, 6), (2, 8, 5, 9)):
            _check_grads(CUDA_KERNELS, layout, stride, dilation, ACTS[i % 3], k=k, shape=shape)


@needs_ext
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=str)
def test_backward_cuda_kernels_low_precision(dtype, layout):
    for k, stride, dilation, activation in ((3, 1, 2, "relu"), (3, 2, 12, "none"), (5, 2, 1, "relu6")):
        _check_grads(CUDA_KERNELS, layout, stride, dilation, activation, k=k, dtype=dtype, shape=(2, 8, 7, 6))


@needs_ext
def test_backward_cuda_kernels_unaligned_input():
    for layout in LAYOUTS:
        _check_grads(CUDA_KERNELS, layout, 1, 2, "relu", shape=(2, 8, 5, 7), offset=1)


# ------------------------------------------------------------------------------- registration and compile


@needs_ext
def test_opcheck():
    x, weight, scale, shift = _grad_inputs(torch.float32, "channels_last", shape=(1, 4, 5, 6))
    torch.library.opcheck(torch.ops.deeplab_fast.dwconv_bn_act.default, (x, weight, scale, shift, 2, 3, 2))
    grad = torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    args = (grad, x.detach(), weight.detach(), scale.detach(), shift.detach(), 2, 3, 2)
    torch.library.opcheck(torch.ops.deeplab_fast.dwconv_bn_act_backward.default, args)


@needs_cuda
def test_opcheck_triton():
    x, weight, scale, shift = (t.cuda().requires_grad_() for t in _inputs((1, 4, 5, 6), torch.float32, "nchw"))
    deeplab_fast.ops.register_triton_ops()  # the Triton ops register on first use; this calls one directly
    torch.library.opcheck(torch.ops.deeplab_fast.dwconv_bn_act_triton.default, (x, weight, scale, shift, 1, 2, 1))


class _Block(torch.nn.Module):
    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend
        self.weight = torch.nn.Parameter(torch.randn(8, 1, 3, 3))
        self.register_buffer("scale", torch.rand(8) + 0.5)
        self.register_buffer("shift", torch.randn(8))

    def forward(self, x):
        y = dwconv_bn_act(x, self.weight, self.scale, self.shift, dilation=2, backend=self.backend)
        return y + 1


@pytest.mark.slow
@needs_ext
def test_torch_compile_fullgraph_cpu():
    block = _Block("cpu")
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(block, fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x))


@pytest.mark.slow
@needs_cuda
def test_torch_compile_fullgraph_triton():
    # The interpreter cannot be traced (it would run on fake tensors), so this needs a GPU.
    block = _Block("triton").cuda()
    x = torch.randn(2, 8, 6, 5, device="cuda")
    torch.testing.assert_close(torch.compile(block, fullgraph=True)(x), block(x))


# ------------------------------------------------------------------------------------------------- errors


def _good():
    return _inputs((1, 4, 6, 6), torch.float32, "nchw")


def _call(x=None, weight=None, scale=None, shift=None, **kw):
    gx, gw, gs, gb = _good()
    return dwconv_bn_act(
        gx if x is None else x,
        gw if weight is None else weight,
        gs if scale is None else scale,
        gb if shift is None else shift,
        **kw,
    )


BAD_INPUTS = (
    ({"x": torch.randn(4, 6, 6)}, ValueError, "x must be a 4-D"),
    ({"x": torch.ones(1, 4, 6, 6, dtype=torch.int64)}, ValueError, "x must be float32, float16, bfloat16 or float64"),
    ({"weight": torch.randn(5, 1, 3, 3)}, ValueError, r"weight must have shape \(C, 1, k, k\) with C=4"),
    ({"weight": torch.randn(4, 2, 3, 3)}, ValueError, r"weight must have shape \(C, 1, k, k\)"),
    ({"weight": torch.randn(4, 1, 3, 5)}, ValueError, "weight must be square"),
    ({"weight": torch.randn(4, 1, 4, 4)}, ValueError, "kernel size k must be odd"),
    ({"scale": torch.randn(5)}, ValueError, r"scale must have shape \(4,\)"),
    ({"shift": torch.randn(4, 1)}, ValueError, r"shift must have shape \(4,\)"),
    ({"weight": torch.randn(4, 1, 3, 3, dtype=torch.float64)}, ValueError, "weight must have x's dtype"),
    ({"scale": torch.randn(4, dtype=torch.float16)}, ValueError, "scale must have x's dtype"),
    ({"shift": torch.randn(4, device="meta")}, ValueError, "shift must be on x's device"),
    ({"x": [1.0]}, TypeError, "x must be a torch.Tensor"),
    ({"stride": 3}, ValueError, "stride must be 1 or 2"),
    ({"stride": True}, ValueError, "stride must be 1 or 2"),
    ({"dilation": 0}, ValueError, "dilation must be an int >= 1"),
    ({"dilation": 1.5}, ValueError, "dilation must be an int >= 1"),
    ({"activation": "gelu"}, ValueError, "activation must be one of"),
    ({"backend": "tpu"}, ValueError, "backend must be one of"),
    ({"backend": "cuda"}, RuntimeError, "backend='cuda'"),
)


@pytest.mark.parametrize("kwargs,exc,message", BAD_INPUTS, ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_bad_input_messages(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        _call(**kwargs)


def test_triton_unavailable_message(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr("deeplab_fast.ops._backend._RESOLVED", {})  # resolve afresh, without the interpreter
    # CPU tensors without the interpreter: unavailable on every machine (a GPU runs Triton on CUDA tensors only).
    with pytest.raises(RuntimeError, match="backend='triton' is unavailable"):
        _call(backend="triton")


@needs_ext
def test_cpp_checks_name_the_argument():
    """The compiled op checks its inputs too (it can be called directly through torch.ops)."""
    x, weight, scale, shift = _good()
    op = torch.ops.deeplab_fast.dwconv_bn_act
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        op(x, weight, scale, shift, 3, 1, 1)
    with pytest.raises(ValueError, match="dilation must be an int >= 1"):
        op(x, weight, scale, shift, 1, 0, 1)
    with pytest.raises(ValueError, match="activation code"):
        op(x, weight, scale, shift, 1, 1, 7)
    with pytest.raises(ValueError, match="weight must have x's dtype float32, got float64"):
        op(x, weight.double(), scale, shift, 1, 1, 1)
    with pytest.raises(ValueError, match="weight's kernel size k must be odd"):
        op(x, torch.randn(4, 1, 2, 2), scale, shift, 1, 1, 1)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        torch.ops.deeplab_fast.dwconv_bn_act_backward(x, x, weight, scale, shift, 2, 1, 1)


@needs_ext
def test_huge_dilation_is_skipped_not_loaded():
    x, weight, scale, shift = _inputs((1, 9, 5, 6), torch.float32, "channels_last")
    # The reference would pad by 2^40; the kernel only computes the valid tap range (the centre tap).
    y = dwconv_bn_act(x, weight, scale, shift, dilation=1 << 40, activation="none", backend="cpu")
    expected = x * weight[:, :, 1, 1].view(1, -1, 1, 1) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@needs_ext
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_cpu_backward_at_a_nan_pre_activation(activation):
    """torch's relu backward blocks the gradient only where z <= 0, so a NaN pre-activation passes it
    (threshold_backward); relu6's blocks it on NCHW tensors. The CPU backward kernel must agree with the
    reference's autograd (relu used to block it, changing every parameter gradient)."""
    x, weight, scale, shift = _inputs((1, 8, 5, 6), torch.float64, "nchw")
    x[0, 3, 2, 2] = float("nan")
    grads = []
    for backend in ("cpu", "reference"):
        args = [t.clone().requires_grad_() for t in (x, weight, scale, shift)]
        y = dwconv_bn_act(*args, activation=activation, backend=backend)
        y.backward(torch.ones_like(y))
        grads.append([a.grad for a in args])
    for ours, ref, name in zip(grads[0], grads[1], ("x", "weight", "scale", "shift"), strict=True):
        torch.testing.assert_close(ours, ref, equal_nan=True, msg=f"d{name}")
