"""upsample_concat: every backend against the reference, gradients, opcheck, torch.compile, bad input.

The CUDA kernel runs on CUDA tensors on a GPU machine and through the host emulation (backend "cuda_emu") on CPU
tensors elsewhere (tests/_devices.py); its backward is ATen's resize backward on either."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.ops import upsample_concat
from deeplab_fast.ops.reference import upsample_concat_reference
from tests._devices import (
    CUDA_KERNELS,
    backend_rows,
    backend_variant_params,
    each_cpu_variant,
    offset_view,
    to_backend,
)

needs_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
CUDA = pytest.param(CUDA_KERNELS, marks=needs_ext)
BACKENDS = ["cpu", "triton", CUDA_KERNELS]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (input shapes, output size): x1, x2, x4, 33->129, 65->513, 1x1 broadcast, downscale, 8 inputs, odd sizes.
CASES = {
    "x1": ([(2, 3, 9, 11)], (9, 11)),
    "x2": ([(2, 4, 8, 7), (2, 2, 16, 14)], (16, 14)),
    "x4_decoder": ([(1, 5, 9, 9), (1, 3, 33, 33)], (33, 33)),
    "33to129": ([(1, 3, 33, 33), (1, 2, 129, 129)], (129, 129)),
    "65to513": ([(1, 2, 65, 65)], (513, 513)),
    "1x1_broadcast": ([(2, 3, 9, 9), (2, 4, 1, 1)], (33, 33)),
    "downscale": ([(2, 3, 17, 19), (2, 2, 9, 4)], (8, 7)),
    "eight_inputs": ([(1, 2, 5, 6), (1, 1, 1, 1), (1, 3, 13, 11), (1, 2, 3, 3)] * 2, (13, 11)),
    "odd": ([(1, 3, 7, 5), (1, 1, 6, 9)], (13, 11)),
}
# The Triton interpreter and the CUDA emulation are slow: they run the cases with small outputs.
SMALL_CASES = ["x1", "x2", "x4_decoder", "1x1_broadcast", "downscale", "eight_inputs", "odd"]


def _inputs(shapes, dtype, channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    if channels_last:
        ts = [t.contiguous(memory_format=torch.channels_last) for t in ts]
    return ts


def _torch_lowp(tensors, size, align_corners):
    """PyTorch's own result in the low-precision dtype (its error is the yardstick for ours)."""
    return torch.cat([F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners) for t in tensors], 1)


def _check_close(out, tensors, size, align_corners):
    ref32 = upsample_concat_reference([t.float() for t in tensors], size, align_corners)
    if out.dtype == torch.float32:
        torch.testing.assert_close(out, ref32, rtol=1e-5, atol=1e-5)
        return
    ours = (out.float() - ref32).abs().max().item()
    theirs = (_torch_lowp(tensors, size, align_corners).float() - ref32).abs().max().item()
    assert ours <= 2 * theirs + 1e-6, f"{out.dtype} error {ours} exceeds twice PyTorch's own {theirs}"


def _grid():
    """backend x case x dtype x memory format x align_corners; the Triton interpreter is slow, so it runs
    the small cases in fp32 with align_corners=False and the full dtype/align_corners grid on two; the CUDA
    emulation runs the full grid on the small cases."""
    out = []
    for b in BACKENDS:
        for label, variant in backend_rows(b):  # the CPU kernels: once per instruction-set variant
            for case in CASES:
                if b in ("triton", "cuda_emu") and case not in SMALL_CASES:
                    continue
                for dtype in DTYPES:
                    for cl in (False, True):
                        for ac in (False, True):
                            if b == "triton" and (dtype != torch.float32 or ac) and case not in ("x2", "odd"):
                                continue
                            name = f"{label}-{case}-{str(dtype).split('.')[-1]}-{'nhwc' if cl else 'nchw'}-ac{int(ac)}"
                            marks = [needs_ext] if b != "triton" else []
                            out.append(pytest.param(b, variant, case, dtype, cl, ac, marks=marks, id=name))
    return out


@pytest.mark.parametrize(
    "backend,cpu_variant,case,dtype,channels_last,align_corners", _grid(), indirect=["cpu_variant"]
)
def test_matches_reference(backend, cpu_variant, case, dtype, channels_last, align_corners):
    shapes, size = CASES[case]
    tensors = _inputs(shapes, dtype, channels_last)
    out = upsample_concat(to_backend(backend, *tensors), size, align_corners=align_corners, backend=backend)
    assert out.shape == (shapes[0][0], sum(s[1] for s in shapes), *size)
    assert out.dtype == dtype
    fmt = torch.channels_last if channels_last and shapes[0][2] * shapes[0][3] > 1 else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    _check_close(out.cpu(), tensors, size, align_corners)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float16", "bfloat16"])
def test_cuda_kernel_unaligned_and_strided_inputs(dtype):
    """Inputs whose data starts one element into their buffer (not 16-byte aligned) and a channel-sliced
    view, NCHW and channels_last, resized up, down and kept."""
    shapes = [(2, 5, 4, 6), (2, 3, 9, 11), (2, 6, 12, 13)]
    for channels_last in (False, True):
        tensors = _inputs(shapes, dtype, channels_last, seed=1)
        moved = to_backend(CUDA_KERNELS, *tensors)
        views = [offset_view(moved[0]), offset_view(moved[1], 3), moved[2][:, 1:4]]
        expected = [tensors[0], tensors[1], tensors[2][:, 1:4]]
        for ac in (False, True):
            out = upsample_concat(views, (9, 11), align_corners=ac, backend=CUDA_KERNELS)
            _check_close(out.cpu(), expected, (9, 11), ac)


@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_ext), "triton", CUDA])
def test_mixed_input_formats_follow_first(backend):
    a = torch.randn(1, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    b = torch.randn(1, 2, 10, 10)
    ab, bb = to_backend(backend, a, b)
    out = upsample_concat([ab, bb], (10, 10), backend=backend)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.cpu(), upsample_concat_reference([a, b], (10, 10)), rtol=1e-5, atol=1e-5)
    out = upsample_concat([bb, ab], (10, 10), backend=backend)
    assert out.is_contiguous()
    torch.testing.assert_close(out.cpu(), upsample_concat_reference([b, a], (10, 10)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True], ids=["ac0", "ac1"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_ext), "triton", CUDA])
def test_gradients_match_reference(backend, channels_last, align_corners):
    shapes = [(2, 3, 5, 7), (2, 2, 1, 1), (2, 2, 12, 10), (2, 1, 23, 19)]
    tensors = [t.requires_grad_() for t in _inputs(shapes, torch.float32, channels_last)]
    moved = to_backend(backend, *tensors)
    size = (12, 10)
    out = upsample_concat(moved, size, align_corners=align_corners, backend=backend)
    grad = torch.randn(out.shape)
    ours = torch.autograd.grad(out, moved, grad.to(out.device))
    ref = torch.autograd.grad(upsample_concat_reference(tensors, size, align_corners), tensors, grad)
    for g, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(g.cpu(), r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_ext), "triton", "reference", CUDA])
def test_empty_batch(backend):
    out = upsample_concat(
        to_backend(backend, torch.randn(0, 3, 4, 4), torch.randn(0, 2, 1, 1)), (8, 8), backend=backend
    )
    assert out.shape == (0, 5, 8, 8)


@needs_ext
def test_opcheck_cpu_op():
    tensors = [torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 2, 1, 1, requires_grad=True)]
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_concat.default, (tensors, [7, 9], False))
    cl = [t.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for t in tensors]
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_concat.default, (cl, [7, 9], True))


def test_opcheck_triton_op(device):
    deeplab_fast.ops.register_triton_ops()

    tensors = [torch.randn(2, 3, 4, 5, device=device, requires_grad=True)]
    tensors.append(torch.randn(2, 2, 1, 1, device=device, requires_grad=True))
    torch.library.opcheck(
        torch.ops.deeplab_fast.upsample_concat_triton.default,
        (tensors, [7, 9], False),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@needs_ext
def test_torch_compile_fullgraph():
    import torch._dynamo

    torch._dynamo.reset()
    a = torch.randn(1, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    b = torch.randn(1, 2, 10, 10).contiguous(memory_format=torch.channels_last)

    def f(a, b):
        return upsample_concat([a * 2, b], (10, 10), backend="cpu") + 1

    out = torch.compile(f, fullgraph=True, backend="aot_eager")(a, b)
    torch.testing.assert_close(out, upsample_concat_reference([a * 2, b], (10, 10)) + 1, rtol=1e-5, atol=1e-5)


BAD = [
    ("empty", lambda t: ([], (4, 4)), ValueError, "at least one"),
    ("too_many", lambda t: ([t] * 9, (4, 4)), ValueError, "at most 8"),
    ("not_a_list", lambda t: (t, (4, 4)), TypeError, "list or tuple"),
    ("batch", lambda t: ([t, torch.randn(3, 2, 2, 2)], (4, 4)), ValueError, r"tensors\[1\] has batch size"),
    ("dtype", lambda t: ([t, t.half()], (4, 4)), ValueError, r"tensors\[1\] has dtype"),
    ("device", lambda t: ([t, t.to("meta")], (4, 4)), ValueError, r"tensors\[1\] is on meta"),
    ("ndim", lambda t: ([t, t[0]], (4, 4)), ValueError, r"tensors\[1\] must be a 4-D"),
    ("int_dtype", lambda t: ([t.long()], (4, 4)), ValueError, r"tensors\[0\] must be float32"),
    ("float64", lambda t: ([t.double()], (4, 4)), ValueError, r"tensors\[0\] must be float32"),
    ("size_one_int", lambda t: ([t], 4), ValueError, "size must be two positive ints"),
    ("size_zero", lambda t: ([t], (0, 4)), ValueError, "size must be two positive ints"),
    ("size_float", lambda t: ([t], (4.0, 4)), ValueError, "size must be two positive ints"),
    ("size_three", lambda t: ([t], (4, 4, 4)), ValueError, "size must be two positive ints"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bad_input(name, make, exc, match, backend):
    tensors, size = make(torch.randn(2, 2, 3, 3))
    with pytest.raises(exc, match=match):
        upsample_concat(tensors, size, backend=backend)


def test_backend_unavailable_or_unknown():
    t = torch.randn(1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="backend='cuda'"):
        upsample_concat([t], (4, 4), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        upsample_concat([t], (4, 4), backend="vulkan")


@needs_ext
def test_cpp_op_checks_its_arguments():
    """The C++ entry point checks the values (ValueError, as the Python API raised before)."""
    t = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="at most 8"):
        torch.ops.deeplab_fast.upsample_concat([t] * 9, [4, 4], False)
    with pytest.raises(ValueError, match=r"tensors\[1\] has dtype"):
        torch.ops.deeplab_fast.upsample_concat([t, t.half()], [4, 4], False)
    with pytest.raises(ValueError, match="size must be two positive ints"):
        torch.ops.deeplab_fast.upsample_concat([torch.randn(1, 1, 2, 2)], [4], False)


NAN, INF = float("nan"), float("inf")


def _planted_inputs(dtype, channels_last):
    """Decoder-like inputs with NaN and infinities: one already at the output size (the CPU's copy path; 40
    channels, so its 128- and 32-byte blocks and, in 16-bit types, a scalar tail all hold one), one upsampled,
    one downsampled, one 1x1 (a broadcast)."""
    g = torch.Generator().manual_seed(3)
    same, up, down, one = (
        torch.randn(2, 40, 6, 9, generator=g),
        torch.randn(2, 3, 3, 4, generator=g),
        torch.randn(2, 2, 11, 13, generator=g),
        torch.randn(2, 2, 1, 1, generator=g),
    )
    same[0, 5, 1, 1], same[0, 35, 2, 2], same[1, 39, 3, 3], same[1, 0, 5, 8] = INF, -INF, INF, NAN
    up[0, 1, 1, 2], up[1, 2, 0, 0], up[1, 0, 2, 3] = INF, NAN, -INF
    down[0, 0, 4, 4], down[1, 1, 10, 12] = -INF, INF
    one[0, 1, 0, 0], one[1, 0, 0, 0] = INF, NAN
    ts = [t.to(dtype) for t in (same, up, down, one)]
    return [t.contiguous(memory_format=torch.channels_last) for t in ts] if channels_last else ts


@needs_ext
@pytest.mark.parametrize("align_corners", [False, True], ids=["ac0", "ac1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("backend,cpu_variant", backend_variant_params("cpu", CUDA_KERNELS), indirect=["cpu_variant"])
def test_non_finite_values_follow_reference(backend, cpu_variant, channels_last, dtype, align_corners):
    """NaN and infinities come out where F.interpolate + cat puts them. A zero weight times inf is NaN there, so
    even an input already at the output size turns inf into NaN; the channels_last copy path kept inf."""
    tensors = _planted_inputs(dtype, channels_last)
    out = upsample_concat(to_backend(backend, *tensors), (6, 9), align_corners=align_corners, backend=backend).cpu()
    ref = upsample_concat_reference(tensors, (6, 9), align_corners)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol, equal_nan=True)
    assert ref.isnan().any() and ref.isinf().any()


@needs_ext
@pytest.mark.parametrize("align_corners", [False, True], ids=["ac0", "ac1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float16", "bfloat16"])
@each_cpu_variant
def test_channels_last_paths_match_shared_body(cpu_variant, dtype, align_corners):
    """channels_last runs vectorized channel blends, inline copies and broadcast rows; NCHW runs the shared
    per-element value of kernels/upsample.h. Both round alike: the outputs are equal bit for bit (NaN aside)."""
    nchw = _planted_inputs(dtype, channels_last=False)
    nhwc = [t.contiguous(memory_format=torch.channels_last) for t in nchw]
    for size in [(6, 9), (13, 17), (4, 5)]:
        a = upsample_concat(nchw, size, align_corners=align_corners, backend="cpu")
        b = upsample_concat(nhwc, size, align_corners=align_corners, backend="cpu")
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
