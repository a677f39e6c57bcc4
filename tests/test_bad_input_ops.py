"""Bad and extreme inputs of dwconv_bn_act and winograd_conv3x3 on every backend here: non-finite values,
huge dilations, empty sides, gradients, argument errors. Each case was a silent wrong answer, a hang or a
raw error before (issue 14). The Triton and CUDA-kernel backends get their tensors on their device
(tests/_devices.py: the interpreter and "cuda_emu" without CUDA); the last section is backend "cuda_emu" refusing
what the emulated CUDA kernels cannot run."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from deeplab_fast import _ext
from deeplab_fast.ops import (
    dwconv_bn_act,
    upsample_argmax,
    upsample_concat,
    upsample_softmax_accumulate,
    winograd_conv3x3,
    winograd_weight,
)
from deeplab_fast.ops._backend import BACKENDS
from deeplab_fast.ops.reference import dwconv_bn_act_reference, winograd_conv3x3_reference
from tests._devices import CUDA_KERNELS, HAS_CUDA, backend_device, to_backend

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")

DW_BACKENDS = ("cpu", "reference", "triton", CUDA_KERNELS)
WINO_BACKENDS = ("cpu", "reference")
NAN, INF = float("nan"), float("inf")


def assert_same_nonfinite(y: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """NaN where ref is NaN, +-inf where it is +-inf, close elsewhere."""
    assert y.shape == ref.shape
    y, ref = y.double(), ref.double()
    assert torch.equal(y.isnan(), ref.isnan()), f"NaN at {y.isnan().sum()} places, reference {ref.isnan().sum()}"
    assert torch.equal(y.isposinf(), ref.isposinf()), "+inf differs"
    assert torch.equal(y.isneginf(), ref.isneginf()), "-inf differs"
    finite = ref.isfinite()
    torch.testing.assert_close(y[finite], ref[finite], rtol=tol, atol=tol)


def _dw_inputs(n=1, c=12, h=7, w=6, k=3, dtype=torch.float32, layout="nchw", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g)
    scale = torch.rand(c, generator=g) + 0.5
    shift = torch.randn(c, generator=g)
    return [t.to(dtype) for t in (x, weight, scale, shift)]


# ------------------------------------------------------------------------------------ dwconv: non-finite


def _moved(backend, args):
    """`args` with their non-meta tensors on the backend's device (meta tensors stay: they are the bad input)."""
    device = backend_device(backend)
    return [a.to(device) if isinstance(a, torch.Tensor) and a.device.type != "meta" else a for a in args]


def _on_cpu(message: str, device: str = "cuda") -> str:
    """`message` with the names of `device` (and of CUDA devices) read as "cpu", to compare messages across devices."""
    return re.sub(rf"\b(cuda|{device})(:\d+)?\b", "cpu", message)


# bf16 arithmetic is wrong under the Triton interpreter (a limit of the interpreter): float16 there. The CUDA
# kernels have no float64; the reference backend would be compared with itself.
_NAN_CASES = [("cpu", dtype) for dtype in (torch.float32, torch.float64, torch.bfloat16)]
_NAN_CASES += [("triton", dtype) for dtype in (torch.float32, torch.float64, torch.float16)]
_NAN_CASES += [(CUDA_KERNELS, dtype) for dtype in (torch.float32, torch.float16, torch.bfloat16)]


@pytest.mark.parametrize("backend,dtype", _NAN_CASES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_dwconv_activation_keeps_nan(backend, layout, dtype, activation):
    """The fused ReLU/ReLU6 turned NaN into 0 (cpu scalar and AVX2 paths, the CUDA body, Triton)."""
    x, weight, scale, shift = _dw_inputs(c=19, dtype=dtype, layout=layout)  # 19: AVX2 packs and a tail
    x[0, 3, 2, 2] = NAN
    x[0, 17, 4, 1] = NAN
    x[0, 8, 0, 5] = INF
    x[0, 11, 6, 0] = -INF
    args = to_backend(backend, x, weight, scale, shift)
    y = dwconv_bn_act(*args, dilation=2, activation=activation, backend=backend).cpu()
    ref = dwconv_bn_act_reference(x, weight, scale, shift, 1, 2, activation)
    assert ref.isnan().any()
    assert_same_nonfinite(y, ref, 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16, torch.bfloat16), ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dwconv_cuda_kernels_non_finite_in_every_path(layout, dtype):
    """NaN and +-inf through the CUDA kernels' 16-byte packs (C = 16), the one-channel fallback (C = 19), k = 3
    unrolled and k = 5 looped, stride 1 and 2, and the backward kernels: as the reference, forward and backward."""
    for c, k, stride in ((16, 3, 1), (19, 3, 2), (16, 5, 2), (19, 5, 1)):
        x, weight, scale, shift = _dw_inputs(n=2, c=c, k=k, dtype=dtype, layout=layout)
        x[0, 3, 2, 2] = NAN
        x[1, 10, 4, 1] = INF
        x[1, 15, 6, 5] = -INF
        scale[7] = INF  # (an infinite weight on a tap in the padding is left out: F.conv2d itself gives NaN or not
        # there depending on its path, e.g. fp32 depthwise skips the padding where fp64 multiplies it)
        args = to_backend(CUDA_KERNELS, x, weight, scale, shift)
        y = dwconv_bn_act(*args, stride=stride, dilation=2, activation="relu", backend=CUDA_KERNELS)
        ref = dwconv_bn_act_reference(x, weight, scale, shift, stride, 2, "relu")
        assert ref.isnan().any() and ref.isinf().any()
        assert_same_nonfinite(y.cpu(), ref, 1e-5 if dtype == torch.float32 else 2e-2)
    # Gradients: NaN flows back through every gradient as in the reference's (fp32).
    x, weight, scale, shift = _dw_inputs(n=2, c=16, layout=layout)
    x[0, 3, 2, 2] = NAN
    inputs = [t.requires_grad_() for t in (x, weight, scale, shift)]
    moved = to_backend(CUDA_KERNELS, *inputs)
    y = dwconv_bn_act(*moved, stride=2, dilation=2, activation="none", backend=CUDA_KERNELS)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    ours = torch.autograd.grad(y, moved, grad.to(y.device))
    expected = torch.autograd.grad(dwconv_bn_act_reference(*inputs, 2, 2, "none"), inputs, grad)
    assert expected[1].isnan().any()
    for a, b in zip(ours, expected, strict=True):
        assert_same_nonfinite(a.cpu(), b, 1e-4)


# -------------------------------------------------------------------------------- dwconv: huge dilation


def _centre_tap(x, weight, scale, shift, stride, activation):
    k = weight.shape[-1]
    y = x * weight[:, :, k // 2, k // 2].view(1, -1, 1, 1) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    y = y[:, :, ::stride, ::stride]
    return F.relu(y) if activation == "relu" else y


@pytest.mark.parametrize("backend", DW_BACKENDS)
@pytest.mark.parametrize("k,dilation", [(3, 2**62), (5, 2**61), (3, 2**63 - 1), (7, 9), (3, 7)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dwconv_huge_dilation_keeps_only_the_centre_tap(backend, k, dilation, stride, layout):
    """Tap arithmetic overflowed int64: zeros from 2**61 (k=5) / 2**62 (k=3), out-of-bounds reads at 2**63-1;
    the reference raised. A dilation >= max(H, W) = 7 keeps only the centre tap, output size ceil(H/stride)."""
    x, weight, scale, shift = _dw_inputs(c=9, k=k, layout=layout)
    args = to_backend(backend, x, weight, scale, shift)
    y = dwconv_bn_act(*args, stride=stride, dilation=dilation, activation="none", backend=backend).cpu()
    expected = _centre_tap(x, weight, scale, shift, stride, "none")
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    meta = [t.to("meta") for t in (x, weight, scale, shift)]
    assert torch.ops.deeplab_fast.dwconv_bn_act(*meta, stride, dilation, 0).shape == y.shape  # the fake impl


def test_dwconv_huge_dilation_gradient():
    x, weight, scale, shift = (t.double().requires_grad_() for t in _dw_inputs(c=3, h=4, w=5))
    y = dwconv_bn_act(x, weight, scale, shift, dilation=2**62, activation="none", backend="cpu")
    y.sum().backward()
    # only the centre tap sees the input: d/dx = w_centre * scale
    expected = (weight[:, 0, 1, 1] * scale).detach().view(1, -1, 1, 1).expand_as(x)
    torch.testing.assert_close(x.grad, expected)


def test_dwconv_unrepresentable_dilation_is_rejected():
    for backend in DW_BACKENDS:
        x, weight, scale, shift = to_backend(backend, *_dw_inputs())
        with pytest.raises(ValueError, match=r"dilation must be an int >= 1 that fits an int64"):
            dwconv_bn_act(x, weight, scale, shift, dilation=2**63, backend=backend)


# ---------------------------------------------------------------------------------- dwconv: empty sides


@pytest.mark.parametrize("backend", DW_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 8, 9, 0), (2, 8, 0, 9), (2, 0, 5, 5), (0, 8, 5, 5), (1, 3, 0, 0)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dwconv_empty_sides(backend, shape, stride, layout):
    """cpu returned (2, 8, 5, 1) where the fake impl says (2, 8, 5, 0), and filled act(shift) for H=0; the
    reference raised a raw torch error. Every backend now returns the fake impl's empty shape."""
    n, c, h, w = shape
    x, weight, scale, shift = _dw_inputs(n, c, h, w, layout=layout)
    y = dwconv_bn_act(*to_backend(backend, x, weight, scale, shift), stride=stride, backend=backend)
    expected = (n, c, (h + stride - 1) // stride, (w + stride - 1) // stride)
    assert y.shape == expected and y.numel() == 0
    fake = torch.ops.deeplab_fast.dwconv_bn_act(*(t.to("meta") for t in (x, weight, scale, shift)), stride, 1, 1)
    assert fake.shape == expected


def test_dwconv_triton_on_meta_tensors_answers_with_the_fake():
    x, weight, scale, shift = (t.to("meta") for t in _dw_inputs(layout="channels_last"))
    y = dwconv_bn_act(x, weight, scale, shift, stride=2, dilation=3, backend="triton")
    assert y.device.type == "meta" and y.shape == (1, 12, 4, 3)
    assert y.is_contiguous(memory_format=torch.channels_last)


# -------------------------------------------------------------------- dwconv: one check, one message


def _bad_dw_cases():
    x, weight, scale, shift = _dw_inputs(c=4, h=6, w=6)
    return [
        ("x 3-D", (x[0], weight, scale, shift), {}),
        ("x int", (x.long(), weight, scale, shift), {}),
        ("C mismatch", (x, torch.randn(5, 1, 3, 3), scale, shift), {}),
        ("not square", (x, torch.randn(4, 1, 3, 5), scale, shift), {}),
        ("k even", (x, torch.randn(4, 1, 4, 4), scale, shift), {}),
        ("k = 0", (x, torch.randn(4, 1, 0, 0), scale, shift), {}),
        ("scale shape", (x, weight, torch.randn(5), shift), {}),
        ("shift 2-D", (x, weight, scale, shift.view(4, 1)), {}),
        ("weight dtype", (x, weight.double(), scale, shift), {}),
        ("shift device", (x, weight, scale, shift.to("meta")), {}),
        ("stride 3", (x, weight, scale, shift), {"stride": 3}),
        ("dilation 0", (x, weight, scale, shift), {"dilation": 0}),
        ("weight list", (x, [1.0], scale, shift), {}),
    ]


@pytest.mark.parametrize("case", _bad_dw_cases(), ids=lambda c: c[0])
def test_dwconv_backends_raise_the_same_error(case):
    """The reference raised raw torch errors (C, H or k = 0) and accepted what cpu rejects; now the C++
    checks and the one Python check (reference, Triton, fake impls) raise the same type and message."""
    _, args, kwargs = case
    errors = []
    for backend in DW_BACKENDS:
        with pytest.raises((ValueError, TypeError)) as info:
            dwconv_bn_act(*_moved(backend, args), **kwargs, backend=backend)
        errors.append((type(info.value), _on_cpu(str(info.value).split("\n")[0])))
    assert len(set(errors)) == 1, errors


def test_dwconv_zero_channels_is_an_empty_output_everywhere():
    for backend in DW_BACKENDS:
        x, weight, scale, shift = to_backend(backend, *_dw_inputs(c=0))
        assert dwconv_bn_act(x, weight, scale, shift, stride=2, backend=backend).shape == (1, 0, 4, 3)


# ---------------------------------------------------------------------------------------------- winograd


def _wino_inputs(n=1, cin=8, cout=6, h=9, w=10, seed=0, tile=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, 3, 3, generator=g) * 0.3
    bias = torch.randn(cout, generator=g)
    residual = torch.randn(n, cout, h, w, generator=g)
    return x, weight, winograd_weight(weight, tile), bias, residual


# "reference" recovers the weight from u (weight_from_u) before calling the reference: not a self-comparison.
@pytest.mark.parametrize("backend", WINO_BACKENDS)
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("activation", ["none", "relu", "relu6"])
def test_winograd_non_finite_inputs_match_the_reference(backend, tile, activation):
    """One inf or NaN poisoned its whole tile (144 NaN where F.conv2d gives 54 infs) and relu masked NaN."""
    x, weight, u, bias, residual = _wino_inputs(tile=tile)
    x[0, 2, 4, 4] = INF
    x[0, 5, 1, 7] = NAN
    x[0, 0, 8, 0] = -INF
    residual[0, 1, 3, 3] = NAN
    y = winograd_conv3x3(x, u, bias, residual, dilation=2, activation=activation, backend=backend)
    ref = winograd_conv3x3_reference(x, weight, bias, residual, 2, activation)
    assert ref.isnan().any() and (activation == "relu6" or ref.isinf().any())  # relu6 clamps inf to 6
    assert_same_nonfinite(y, ref, 1e-4)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_winograd_activation_keeps_nan_on_the_winograd_path(activation):
    """x finite (the Winograd transforms run), NaN in the residual: relu(NaN) stays NaN."""
    x, weight, u, bias, residual = _wino_inputs(cin=16, cout=16)  # 16: AVX2 lanes
    residual[0, 3, 2, 2] = NAN
    residual[0, 9, 5, 5] = -INF
    y = winograd_conv3x3(x, u, bias, residual, activation=activation, backend="cpu")
    assert_same_nonfinite(y, winograd_conv3x3_reference(x, weight, bias, residual, 1, activation), 1e-4)


@pytest.mark.parametrize("backend", WINO_BACKENDS)
@pytest.mark.parametrize("dilation", [2**62, 2**63 - 1, 10])
def test_winograd_huge_dilation(backend, dilation):
    """Dilation 2**62 overflowed the tile-base loop, which grew memory until bad_alloc."""
    x, weight, u, bias, _ = _wino_inputs()
    y = winograd_conv3x3(x, u, bias, dilation=dilation, backend=backend)
    centre = F.conv2d(x, weight[:, :, 1:2, 1:2], bias)
    torch.testing.assert_close(y, centre, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", WINO_BACKENDS)
def test_winograd_requires_grad_is_an_error(backend):
    """backward succeeded and left x.grad None."""
    x, _, u, bias, _ = _wino_inputs()
    x.requires_grad_()
    with pytest.raises(RuntimeError, match="winograd_conv3x3 is inference only .* x requires grad"):
        winograd_conv3x3(x, u, bias, backend=backend)
    with torch.no_grad():
        assert winograd_conv3x3(x, u, bias, backend=backend).shape == (1, 6, 9, 10)


def test_winograd_op_backward_is_an_error():
    x, _, u, bias, _ = _wino_inputs()
    y = torch.ops.deeplab_fast.winograd_conv3x3(x.requires_grad_(), u, bias, None, 1, 0)
    with pytest.raises(RuntimeError, match="winograd_conv3x3 is inference only"):
        y.sum().backward()


def _bad_wino_cases():
    x, _, u, bias, residual = _wino_inputs()
    return [
        ("x list", (x.tolist(), u), {}, TypeError, "x must be a torch.Tensor, got list"),
        ("u None", (x, None), {}, TypeError, "u must be a torch.Tensor, got NoneType"),
        ("bias str", (x, u, "b"), {}, TypeError, "bias must be a torch.Tensor or None, got str"),
        ("residual int", (x, u, None, 3), {}, TypeError, "residual must be a torch.Tensor or None, got int"),
        ("activation list", (x, u), {"activation": ["relu"]}, ValueError, "activation must be one of"),
        ("dilation float", (x, u), {"dilation": 2.0}, ValueError, "dilation must be an int >= 1"),
        ("x meta, u cpu", (x.to("meta"), u), {}, ValueError, "u must be on x's device meta, got cpu"),
        ("u meta", (x, u.to("meta")), {}, ValueError, "u must be on x's device cpu, got meta"),
        ("bias meta", (x, u, bias.to("meta")), {}, ValueError, "bias must be on x's device cpu, got meta"),
        ("u 2-D", (x, u[0]), {}, ValueError, r"u must have shape \(16 or 36, 8, Cout\)"),
        ("x float64", (x.double(), u), {}, ValueError, "x must be float32, got float64"),
        ("residual shape", (x, u, None, residual[:, :, 1:]), {}, ValueError, r"residual must have shape \(1, 6, 9,"),
    ]


@pytest.mark.parametrize("backend", ["auto", *WINO_BACKENDS])
@pytest.mark.parametrize("case", _bad_wino_cases(), ids=lambda c: c[0])
def test_winograd_bad_arguments(case, backend):
    """Non-tensors, u=None, activation lists, tensors on different devices (a meta x with a CPU u returned
    a meta tensor): clear errors, the same from every backend."""
    name, args, kwargs, exc, message = case
    if name == "x meta, u cpu" and backend == "cpu":
        exc, message = RuntimeError, "backend='cpu' runs on cpu tensors, but the input of winograd_conv3x3 is on meta"
    with pytest.raises(exc, match=message):
        winograd_conv3x3(*args, **kwargs, backend=backend)


def test_winograd_tile_must_be_an_int():
    with pytest.raises(ValueError, match="tile must be 2 or 4"):
        winograd_weight(torch.randn(4, 4, 3, 3), tile=4.0)
    with pytest.raises(ValueError, match="tile must be 2 or 4"):
        winograd_weight(torch.randn(4, 4, 3, 3), tile=True)


def test_winograd_triton_backend_is_unavailable():
    x, _, u, _, _ = _wino_inputs()
    with pytest.raises(RuntimeError, match="backend='triton' is unavailable for winograd_conv3x3"):
        winograd_conv3x3(x, u, backend="triton")


# ------------------------------------------------------------------- upsample ops: one check, one message


def _bad_upsample_cases():
    t = torch.randn(2, 3, 4, 5)
    acc = torch.zeros(2, 3, 8, 8)
    concat, argmax, softmax = upsample_concat, upsample_argmax, upsample_softmax_accumulate
    return [
        ("concat 9 inputs", concat, ([t] * 9, (8, 8)), {}),
        ("concat 3-D", concat, ([t, t[0]], (8, 8)), {}),
        ("concat int", concat, ([t.long()], (8, 8)), {}),
        ("concat batch", concat, ([t, t[:1]], (8, 8)), {}),
        ("concat dtype", concat, ([t, t.half()], (8, 8)), {}),
        ("concat empty side", concat, ([t, t[:, :, :0]], (8, 8)), {}),
        ("concat size 0", concat, ([t], (0, 8)), {}),
        ("argmax 3-D", argmax, (t[0], (8, 8)), {}),
        ("argmax float64", argmax, (t.double(), (8, 8)), {}),
        ("argmax K = 0", argmax, (t[:, :0], (8, 8)), {}),
        ("argmax empty side", argmax, (t[:, :, :, :0], (8, 8)), {}),
        ("argmax size negative", argmax, (t, (8, -1)), {}),
        ("softmax accum 3-D", softmax, (t, acc[0]), {}),
        ("softmax accum fp16", softmax, (t, acc.half()), {}),
        ("softmax accum strided", softmax, (t, acc.transpose(2, 3)), {}),
        ("softmax accum batch", softmax, (t, acc[:1]), {}),
        ("softmax accum classes", softmax, (t, torch.zeros(2, 2, 8, 8)), {}),
        ("softmax logits int", softmax, (t.int(), acc), {}),
    ]


@pytest.mark.parametrize("case", _bad_upsample_cases(), ids=lambda c: c[0])
def test_upsample_backends_raise_the_same_error(case):
    """The compiled ops check values in C++; the reference and Triton backends and the fake impls (meta
    tensors) run the one Python mirror of those checks: same exception type, same message."""
    _, op, args, kwargs = case
    errors = []
    for backend in ("cpu", "reference", "triton", CUDA_KERNELS, "meta"):
        device = "meta" if backend == "meta" else backend_device(backend)  # meta: the fake impl answers
        call_args = tuple(
            [a.to(device) for a in x] if isinstance(x, list) else x.to(device) if isinstance(x, torch.Tensor) else x
            for x in args
        )
        with pytest.raises((ValueError, TypeError)) as info:
            op(*call_args, **kwargs, backend="auto" if backend == "meta" else backend)
        errors.append((backend, type(info.value), _on_cpu(str(info.value).split("\n")[0], device)))
    assert len({e[1:] for e in errors}) == 1, errors


# ------------------------------------------------------------- backend "cuda_emu": what it cannot run


def _cuda_emu_calls(device: str, dtype: torch.dtype):
    """One call per op with CUDA kernels, on tensors of `device` and `dtype`, through backend "cuda_emu"."""
    x, weight, scale, shift = (t.to(device=device, dtype=dtype) for t in _dw_inputs(c=4))
    t = torch.randn(2, 3, 4, 5, device=device, dtype=dtype)
    acc = torch.zeros(2, 3, 8, 8, device=device)
    return {
        "dwconv_bn_act": lambda: dwconv_bn_act(x, weight, scale, shift, backend="cuda_emu"),
        "upsample_concat": lambda: upsample_concat([t, t], (8, 8), backend="cuda_emu"),
        "upsample_argmax": lambda: upsample_argmax(t, (8, 8), backend="cuda_emu"),
        "upsample_softmax_accumulate": lambda: upsample_softmax_accumulate(t, acc, backend="cuda_emu"),
    }


@pytest.mark.parametrize("device", ["meta", *(["cuda"] if HAS_CUDA else [])])
@pytest.mark.parametrize("op", list(_cuda_emu_calls("meta", torch.float32)))
def test_cuda_emu_refuses_tensors_off_the_cpu(op, device):
    """cuda_emu runs the CUDA kernels on the CPU: a tensor elsewhere (meta; CUDA on a GPU machine) is a RuntimeError
    that names the backend, the op and the device, and says which backend takes CUDA tensors."""
    match = rf"backend='cuda_emu' runs the CUDA kernels of {op} on the CPU .* on {device} \(use backend='cuda'"
    with pytest.raises(RuntimeError, match=match):
        _cuda_emu_calls(device, torch.float32)[op]()


@pytest.mark.parametrize("op", list(_cuda_emu_calls("meta", torch.float32)))
def test_cuda_emu_refuses_float64(op):
    """float64 has no CUDA kernel: a ValueError naming the supported dtypes (dwconv_bn_act takes float64 on other
    backends, so its message names cuda_emu; the upsample ops refuse float64 on every backend)."""
    match = r"float32, float16 (and|or) bfloat16.* float64"
    if op == "dwconv_bn_act":
        match = r"dwconv_bn_act: backend='cuda_emu' runs the CUDA kernels, which support " + match
    with pytest.raises(ValueError, match=match):
        _cuda_emu_calls("cpu", torch.float64)[op]()


def test_cuda_emu_refuses_ops_without_a_cuda_kernel():
    x, _, u, bias, _ = _wino_inputs()
    with pytest.raises(
        RuntimeError, match="backend='cuda_emu' is unavailable for winograd_conv3x3: it has no CUDA kernel"
    ):
        winograd_conv3x3(x, u, bias, backend="cuda_emu")


def test_unknown_backend_lists_cuda_emu():
    assert "cuda_emu" in BACKENDS
    x, weight, scale, shift = _dw_inputs(c=4)
    t = torch.randn(1, 2, 3, 3)
    calls = [
        lambda: dwconv_bn_act(x, weight, scale, shift, backend="cuda-emu"),
        lambda: upsample_concat([t], (4, 4), backend="cuda-emu"),
        lambda: upsample_argmax(t, (4, 4), backend="cuda-emu"),
        lambda: upsample_softmax_accumulate(t, torch.zeros(1, 2, 4, 4), backend="cuda-emu"),
        lambda: winograd_conv3x3(*_wino_inputs()[:1], _wino_inputs()[2], backend="cuda-emu"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"backend must be one of .*'cuda_emu'.*; got 'cuda-emu'"):
            call()
