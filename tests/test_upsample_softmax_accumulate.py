"""upsample_softmax_accumulate: in-place accumulation against the reference, opcheck, compile, bad input.

The CUDA kernel runs on CUDA tensors on a GPU machine and through the host emulation (backend "cuda_emu") on CPU
tensors elsewhere (tests/_devices.py)."""

from __future__ import annotations

import pytest
import torch

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.ops import upsample_softmax_accumulate
from deeplab_fast.ops.reference import upsample_softmax_accumulate_reference
from tests._devices import CUDA_KERNELS, backend_rows, backend_variant_params, each_cpu_variant, to_backend

needs_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
CPP = pytest.param("cpu", marks=needs_ext)
CUDA = pytest.param(CUDA_KERNELS, marks=needs_ext)

CASES = {
    "x1": ((2, 5, 9, 11), (9, 11)),
    "x2": ((2, 4, 8, 7), (16, 14)),
    "x4": ((1, 21, 33, 33), (129, 129)),
    "non_integer": ((2, 19, 17, 13), (65, 50)),
    # x1.3: chunks of 8 output columns span up to 8 source columns but a half chunk can span 5 (the CPU fill's
    # 8-wide permute path; x2 and up take the in-lane path, x1 and downscale the scalar one).
    "mild": ((1, 9, 11, 40), (14, 52)),
    "1x1": ((2, 6, 1, 1), (5, 7)),
    "downscale": ((2, 7, 17, 19), (8, 7)),
    "odd": ((1, 5, 7, 5), (13, 11)),
}
TRITON_CASES = ["x1", "x2", "1x1", "downscale", "odd"]
# The CUDA emulation runs ~1 us per output pixel: every case but the largest output.
CUDA_EMU_CASES = [case for case in CASES if case != "x4"]


def _grid():
    out = []
    for b in ("cpu", "triton", CUDA_KERNELS):
        for label, variant in backend_rows(b):  # the CPU kernels: once per instruction-set variant
            for case in CASES:
                if (b == "triton" and case not in TRITON_CASES) or (b == "cuda_emu" and case not in CUDA_EMU_CASES):
                    continue
                for dtype in (torch.float32, torch.float16, torch.bfloat16):
                    for cl in (False, True):
                        for ac in (False, True):
                            for flip in (False, True):
                                if b == "triton" and (dtype != torch.float32 or cl) and case not in ("x2", "odd"):
                                    continue
                                marks = [needs_ext] if b != "triton" else []
                                fmt = "nhwc" if cl else "nchw"
                                name = f"{label}-{case}-{str(dtype).split('.')[-1]}-{fmt}-ac{int(ac)}-f{int(flip)}"
                                out.append(pytest.param(b, variant, case, dtype, cl, ac, flip, marks=marks, id=name))
    return out


@pytest.mark.parametrize(
    "backend,cpu_variant,case,dtype,channels_last,align_corners,flip", _grid(), indirect=["cpu_variant"]
)
def test_matches_reference(backend, cpu_variant, case, dtype, channels_last, align_corners, flip):
    shape, size = CASES[case]
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(shape, generator=g)).to(dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    accum = torch.rand((shape[0], shape[1], *size), generator=g)
    expected = upsample_softmax_accumulate_reference(logits, accum.clone(), 0.7, flip, align_corners)
    logits, accum = to_backend(backend, logits, accum)
    out = upsample_softmax_accumulate(
        logits, accum, weight=0.7, flip=flip, align_corners=align_corners, backend=backend
    )
    assert out is accum
    # Both sides upcast the same low-precision logits, so fp32 tolerances hold for every dtype.
    torch.testing.assert_close(accum.cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", [CPP, "triton", "reference", CUDA])
def test_multi_scale_flip_sums_to_total_weight(backend):
    (accum,) = to_backend(backend, torch.zeros(1, 3, 12, 12))
    for scale in (6, 12, 18):
        for flip in (False, True):
            (logits,) = to_backend(backend, torch.randn(1, 3, scale, scale))
            upsample_softmax_accumulate(logits, accum, weight=1 / 6, flip=flip, backend=backend)
    torch.testing.assert_close(accum.sum(1).cpu(), torch.ones(1, 12, 12), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", [CPP, "triton", "reference", CUDA])
def test_empty_batch_is_a_no_op(backend):
    logits, accum = to_backend(backend, torch.randn(0, 3, 2, 2), torch.zeros(0, 3, 4, 4))
    assert upsample_softmax_accumulate(logits, accum, backend=backend) is accum


@needs_ext
def test_opcheck_cpu_op():
    logits = torch.randn(2, 3, 4, 5)
    torch.library.opcheck(
        torch.ops.deeplab_fast.upsample_softmax_accumulate.default, (logits, torch.zeros(2, 3, 7, 9), 0.5, True, False)
    )


def test_opcheck_triton_op(device):
    deeplab_fast.ops.register_triton_ops()

    torch.library.opcheck(
        torch.ops.deeplab_fast.upsample_softmax_accumulate_triton.default,
        (torch.randn(2, 3, 4, 5, device=device), torch.zeros(2, 3, 7, 9, device=device), 0.5, True, False),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@needs_ext
def test_torch_compile_fullgraph():
    import torch._dynamo

    torch._dynamo.reset()
    logits = torch.randn(1, 3, 4, 4)

    def f(x, acc):
        upsample_softmax_accumulate(x * 2, acc, weight=0.5, flip=True, backend="cpu")
        return acc + 1

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(logits, torch.zeros(1, 3, 8, 8))
    want = upsample_softmax_accumulate_reference(logits * 2, torch.zeros(1, 3, 8, 8), 0.5, True) + 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


BAD = [
    ("logits_ndim", lambda x, a: (x[0], a), ValueError, "logits must be a 4-D"),
    ("logits_int", lambda x, a: (x.long(), a), ValueError, "logits must be float32"),
    ("accum_ndim", lambda x, a: (x, a[0]), ValueError, "accum must be a 4-D"),
    ("accum_half", lambda x, a: (x, a.half()), ValueError, "accum must be float32"),
    ("accum_noncontig", lambda x, a: (x, a.contiguous(memory_format=torch.channels_last)), ValueError, "contiguous"),
    ("k_mismatch", lambda x, a: (x[:, :2], a), ValueError, "class count"),
    ("n_mismatch", lambda x, a: (x[:1], a), ValueError, "batch size"),
    ("accum_device", lambda x, a: (x, a.to("meta")), ValueError, "accum must be on logits's device cpu, got meta"),
    ("accum_not_tensor", lambda x, a: (x, a.tolist()), TypeError, "accum must be a torch.Tensor"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, make, exc, match):
    logits, accum = make(torch.randn(2, 3, 3, 3), torch.zeros(2, 3, 6, 6))
    with pytest.raises(exc, match=match):
        upsample_softmax_accumulate(logits, accum)


def test_bad_scalars_and_grad():
    x, acc = torch.randn(1, 2, 3, 3), torch.zeros(1, 2, 4, 4)
    with pytest.raises(TypeError, match="weight must be a float"):
        upsample_softmax_accumulate(x, acc, weight="1")
    with pytest.raises(TypeError, match="flip must be a bool"):
        upsample_softmax_accumulate(x, acc, flip=1)
    with pytest.raises(RuntimeError, match="inference only"):
        upsample_softmax_accumulate(x, acc.clone().requires_grad_())
    with pytest.raises(RuntimeError, match="backend='cuda'"):
        upsample_softmax_accumulate(x, acc, backend="cuda")


NAN, INF = float("nan"), float("inf")
# (logits shape, output size): equal sizes, wide upsampled rows (the CPU's vector path), rows narrower than 8
# columns, a downscale.
NON_FINITE_CASES = {
    "same_size": ((1, 5, 6, 11), (6, 11)),
    "x2_wide": ((1, 5, 6, 11), (12, 22)),
    "narrow": ((1, 5, 6, 3), (12, 5)),
    "downscale": ((1, 5, 6, 11), (4, 9)),
}


@needs_ext
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", list(NON_FINITE_CASES))
@pytest.mark.parametrize("backend,cpu_variant", backend_variant_params("cpu", CUDA_KERNELS), indirect=["cpu_variant"])
def test_non_finite_logits_follow_reference(backend, cpu_variant, case, channels_last):
    """torch.softmax gives NaN for every class of a pixel whose resized logits hold a NaN or +inf, or are all
    -inf; a -inf class beside finite ones gets 0. The CPU kernel used to turn a NaN logit into finite
    probabilities and a +inf logit into a uniform 1/K."""
    shape, size = NON_FINITE_CASES[case]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=g)
    logits[0, 1, 1, 2] = NAN
    logits[0, 2, 3, 1] = INF
    logits[0, 3, 5, 0] = -INF
    logits[0, :, 4, shape[3] - 1] = -INF  # every class -inf at one source pixel
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    accum = torch.rand((shape[0], shape[1], *size), generator=g)
    expected = upsample_softmax_accumulate_reference(logits, accum.clone(), 0.5)
    logits, accum = to_backend(backend, logits, accum)
    upsample_softmax_accumulate(logits, accum, weight=0.5, backend=backend)
    torch.testing.assert_close(accum.cpu(), expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert expected.isnan().any() and expected.isfinite().any()


@needs_ext
@pytest.mark.parametrize("backend,cpu_variant", backend_variant_params("cpu", CUDA_KERNELS), indirect=["cpu_variant"])
def test_inf_logit_gives_nan_not_uniform(backend, cpu_variant):
    """The case from the fuzzing report: one class +inf, 5 classes, upsampled to 8-column rows. torch.softmax
    gives NaN (inf - inf); the CPU kernel gave a uniform 0.2."""
    logits = torch.zeros(1, 5, 2, 4)
    logits[0, 2] = INF
    logits, accum = to_backend(backend, logits, torch.zeros(1, 5, 4, 8))
    upsample_softmax_accumulate(logits, accum, backend=backend)
    assert accum.isnan().all(), accum[0, :, 1, 1].tolist()


# One axis resized, the other kept: (logits shape, output size, resized axis). Output rows of 8 columns or more
# take the CPU's AVX2 row path, narrower rows the shared per-pixel walk (kernels/upsample.h).
ONE_AXIS_CASES = {
    "w_up": ((2, 11, 5, 11), (5, 29)),
    "w_mild": ((1, 11, 4, 40), (4, 52)),
    "w_down": ((1, 11, 3, 40), (3, 17)),
    "h_up": ((2, 11, 3, 12), (7, 12)),
    "h_down": ((1, 11, 13, 9), (5, 9)),
}


def _planted_logits(shape, dtype, channels_last):
    """Random logits with NaN, infinities and a huge finite value in a few source rows (the other rows stay
    finite and small, so both the vector path and the per-pixel walk of non-finite rows run)."""
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(shape, generator=g)
    x[0, 1, 0, 2] = NAN
    x[0, 2, shape[2] - 1, 3] = INF
    x[-1, 3, shape[2] - 1, shape[3] - 1] = -INF
    x[-1, 4, 1, 0] = 1e35
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _transposed(x, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.transpose(2, 3).contiguous(memory_format=fmt)


@needs_ext
@pytest.mark.parametrize("flip", [False, True], ids=["f0", "f1"])
@pytest.mark.parametrize("align_corners", [False, True], ids=["ac0", "ac1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", list(ONE_AXIS_CASES))
@each_cpu_variant
def test_vector_rows_match_shared_pixel_walk(cpu_variant, case, channels_last, dtype, align_corners, flip):
    """The AVX2 rows agree with the shared per-pixel walk within fp32 rounding (its exp is a polynomial within
    2 ulp of expf). A kept axis has the taps (i, i, 1, 0), an exact identity whatever the order of the blends,
    so resizing x along W to >= 8 columns gives, transposed, what resizing x transposed along H gives; there the
    rows are narrower than 8 columns and take the per-pixel walk. flip=True mirrors x along W first, which
    the transposed problem sees as a plain input."""
    shape, size = ONE_AXIS_CASES[case]
    x = _planted_logits(shape, dtype, channels_last)
    wide = torch.zeros(shape[0], shape[1], *size)
    upsample_softmax_accumulate(x, wide, weight=0.5, flip=flip, align_corners=align_corners, backend="cpu")
    narrow = torch.zeros(shape[0], shape[1], size[1], size[0])
    xt = _transposed(x.flip(-1) if flip else x, channels_last)
    upsample_softmax_accumulate(xt, narrow, weight=0.5, align_corners=align_corners, backend="cpu")
    assert min(size) < 8 <= max(size)
    torch.testing.assert_close(wide, narrow.transpose(2, 3), rtol=2e-6, atol=1e-7, equal_nan=True)
    assert wide.isnan().any() and wide.isfinite().any()


@needs_ext
def test_huge_class_count_takes_the_per_pixel_body():
    """Beyond the row-buffer bound (16 MiB per thread) the kernel runs the shared body per pixel on the logits."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 40000, 3, 4, generator=g)
    logits[0, 7, 1, 1] = NAN
    logits[0, 9, 2, 3] = INF
    accum = torch.rand(1, 40000, 3, 40, generator=g)
    expected = upsample_softmax_accumulate_reference(logits, accum.clone(), 0.5)
    upsample_softmax_accumulate(logits, accum, weight=0.5, backend="cpu")
    torch.testing.assert_close(accum, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert expected.isnan().any() and expected.isfinite().any()
