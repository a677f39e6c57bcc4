"""upsample_argmax: exact labels against the reference, ties, NaN, no-grad contract, opcheck, compile, bad input.

The CUDA kernel runs on CUDA tensors on a GPU machine and through the host emulation (backend "cuda_emu") on CPU
tensors elsewhere (tests/_devices.py)."""

from __future__ import annotations

import pytest
import torch

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.ops import upsample_argmax
from deeplab_fast.ops.reference import upsample_argmax_reference
from tests._devices import CUDA_KERNELS, backend_rows, backend_variant_params, each_cpu_variant, to_backend

needs_ext = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
CPP = pytest.param("cpu", marks=needs_ext)
CUDA = pytest.param(CUDA_KERNELS, marks=needs_ext)

# (logits shape, output size): x1, x2, x4, 33->129, 65->513, x1.3, 1x1, downscale, odd.
CASES = {
    "x1": ((2, 5, 9, 11), (9, 11)),
    "x2": ((2, 4, 8, 7), (16, 14)),
    "x4": ((1, 21, 33, 33), (129, 129)),
    "65to513": ((1, 3, 65, 65), (513, 513)),
    "non_integer": ((2, 19, 17, 13), (65, 50)),
    # x1.3: chunks of 8 output columns span up to 8 source columns but a half chunk can span 5 (the CPU fill's
    # 8-wide permute path; x2 and up take the in-lane path, x1 and downscale the scalar one).
    "mild": ((1, 9, 11, 40), (14, 52)),
    "1x1": ((2, 6, 1, 1), (5, 7)),
    "downscale": ((2, 7, 17, 19), (8, 7)),
    "odd": ((1, 5, 7, 5), (13, 11)),
}
TRITON_CASES = ["x1", "x2", "1x1", "downscale", "odd"]
# The CUDA emulation runs ~1 us per output pixel: every case but the two largest outputs.
CUDA_EMU_CASES = [case for case in CASES if case not in ("x4", "65to513")]


def _grid():
    out = []
    for b in ("cpu", "triton", CUDA_KERNELS):
        for label, variant in backend_rows(b):  # the CPU kernels: once per instruction-set variant
            for case in CASES:
                if (b == "triton" and case not in TRITON_CASES) or (b == "cuda_emu" and case not in CUDA_EMU_CASES):
                    continue
                for cl in (False, True):
                    for ac in (False, True):
                        marks = [needs_ext] if b != "triton" else []
                        name = f"{label}-{case}-{'nhwc' if cl else 'nchw'}-ac{int(ac)}"
                        out.append(pytest.param(b, variant, case, cl, ac, marks=marks, id=name))
    return out


def _logits(shape, dtype=torch.float32, channels_last=False, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("backend,cpu_variant,case,channels_last,align_corners", _grid(), indirect=["cpu_variant"])
def test_fp32_labels_equal_reference(backend, cpu_variant, case, channels_last, align_corners):
    shape, size = CASES[case]
    x = _logits(shape, channels_last=channels_last)
    (xb,) = to_backend(backend, x)
    out = upsample_argmax(xb, size, align_corners=align_corners, backend=backend)
    assert out.dtype == torch.int64 and out.shape == (shape[0], *size) and out.device == xb.device
    out = out.cpu()
    ref = upsample_argmax_reference(x, size, align_corners)
    assert torch.equal(out, ref), f"{(out != ref).sum().item()} labels differ"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("backend", [CPP, "triton", CUDA])
def test_low_precision_labels(backend, dtype):
    """Low-precision logits are upcast exactly, so the labels equal the reference's (which also upcasts)."""
    x = _logits((2, 5, 6, 7), dtype)
    out = upsample_argmax(*to_backend(backend, x), (13, 15), backend=backend).cpu()
    assert torch.equal(out, upsample_argmax_reference(x, (13, 15)))


@pytest.mark.parametrize("backend", [CPP, "triton", "reference", CUDA])
def test_ties_take_lowest_class_and_nan_wins(backend):
    x = _logits((1, 4, 5, 5))
    x[:, 2] = x[:, 1] = 10.0  # classes 1 and 2 tie everywhere: 1 wins
    out = upsample_argmax(*to_backend(backend, x), (9, 9), backend=backend).cpu()
    assert (out == 1).all()
    x[0, 3, 2, 2] = float("nan")  # NaN is the maximum wherever it reaches, as in torch.argmax
    out = upsample_argmax(*to_backend(backend, x), (9, 9), backend=backend).cpu()
    assert torch.equal(out, upsample_argmax_reference(x, (9, 9)))
    assert (out == 3).any()


@needs_ext
@pytest.mark.parametrize("classes", [5, 11])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("backend,cpu_variant", backend_variant_params("cpu", CUDA_KERNELS), indirect=["cpu_variant"])
def test_wild_rows_beside_tame_rows(backend, cpu_variant, channels_last, classes):
    """The CPU kernel takes a one-compare path for source rows of finite |logit| <= 1e30 and the full NaN
    rules elsewhere; rows of both kinds (inf, NaN, 1e35) in one map give the reference's labels. 11 classes
    of channels_last logits are staged by 8x8 transposes that also check the values, the last block of
    classes and of columns overlapping the previous one: wild values sit in those ragged ends too."""
    x = _logits((1, classes, 9, 20), channels_last=channels_last)
    x[0, 1, 2, 3] = float("inf")
    x[0, 2, 4, 11] = float("-inf")  # blends 0 * -inf = NaN where its weight is zero, as F.interpolate does
    x[0, 3, 6, 7] = float("nan")
    x[0, 4, 8, 15] = 1e35
    x[0, 0, 0, 0] = 1e30  # the largest tame value
    if classes > 8:
        x[0, classes - 1, 1, 19] = float("nan")  # last class, last column
        x[0, classes - 2, 3, 18] = 2e30
    out = upsample_argmax(*to_backend(backend, x), (33, 77), backend=backend).cpu()
    ref = upsample_argmax_reference(x, (33, 77))
    assert torch.equal(out, ref), f"{(out != ref).sum().item()} labels differ"
    assert (out == 3).any() and (out == 4).any() and (out == 0).any()
    if classes > 8:
        assert (out == classes - 1).any() and (out == classes - 2).any()


@pytest.mark.parametrize("backend", [CPP, "triton", CUDA])
def test_logits_requiring_grad_give_labels_without_grad(backend):
    x = _logits((1, 3, 4, 4)).requires_grad_()
    out = upsample_argmax(*to_backend(backend, x), (8, 8), backend=backend)
    assert not out.requires_grad
    assert torch.equal(out.cpu(), upsample_argmax_reference(x.detach(), (8, 8)))


@pytest.mark.parametrize("backend", [CPP, "triton", "reference", CUDA])
def test_empty_batch(backend):
    assert upsample_argmax(*to_backend(backend, torch.randn(0, 3, 4, 4)), (8, 8), backend=backend).shape == (0, 8, 8)


@needs_ext
def test_opcheck_cpu_op():
    x = _logits((2, 3, 4, 5))
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_argmax.default, (x, [7, 9], False))
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.deeplab_fast.upsample_argmax.default, (xc, [3, 2], True))


def test_opcheck_triton_op(device):
    deeplab_fast.ops.register_triton_ops()

    torch.library.opcheck(
        torch.ops.deeplab_fast.upsample_argmax_triton.default,
        (_logits((2, 3, 4, 5)).to(device), [7, 9], False),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@needs_ext
def test_torch_compile_fullgraph():
    import torch._dynamo

    torch._dynamo.reset()
    x = _logits((1, 3, 4, 4), channels_last=True)
    fn = torch.compile(lambda t: upsample_argmax(t * 2, (8, 8), backend="cpu"), fullgraph=True, backend="aot_eager")
    assert torch.equal(fn(x), upsample_argmax_reference(x * 2, (8, 8)))


BAD = [
    ("ndim", lambda x: (x[0], (4, 4)), ValueError, "logits must be a 4-D"),
    ("int_dtype", lambda x: (x.long(), (4, 4)), ValueError, "logits must be float32"),
    ("not_tensor", lambda x: (x.tolist(), (4, 4)), TypeError, "logits must be a torch.Tensor"),
    ("no_classes", lambda x: (x[:, :0], (4, 4)), ValueError, "at least one class"),
    ("size_neg", lambda x: (x, (-1, 4)), ValueError, "size must be two positive ints"),
    ("size_int", lambda x: (x, 4), ValueError, "size must be two positive ints"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, make, exc, match):
    logits, size = make(torch.randn(2, 3, 3, 3))
    with pytest.raises(exc, match=match):
        upsample_argmax(logits, size)


def test_backend_unavailable_or_unknown():
    with pytest.raises(RuntimeError, match="backend='cuda'"):
        upsample_argmax(torch.randn(1, 2, 3, 3), (4, 4), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        upsample_argmax(torch.randn(1, 2, 3, 3), (4, 4), backend="gpu")


NAN, INF = float("nan"), float("inf")
# One axis resized, the other kept: (logits shape, output size). Output rows of 8 columns or more take the CPU's
# AVX2 walk (the W blend of the staged rows: in-lane permutes for x2.6, 8-wide permutes for x1.3, scalar chunks
# for the downscale), narrower rows the shared per-pixel walk (kernels/upsample.h's argmax_pixel).
ONE_AXIS_CASES = {
    "w_up": ((2, 11, 5, 11), (5, 29)),
    "w_mild": ((1, 11, 4, 40), (4, 52)),
    "w_down": ((1, 11, 3, 40), (3, 17)),
    "h_up": ((2, 11, 3, 12), (7, 12)),
    "h_down": ((1, 11, 13, 9), (5, 9)),
}


@needs_ext
@pytest.mark.parametrize("align_corners", [False, True], ids=["ac0", "ac1"])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["float32", "float16", "bfloat16"]
)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", list(ONE_AXIS_CASES))
@each_cpu_variant
def test_vector_walk_matches_shared_pixel_walk(cpu_variant, case, channels_last, dtype, align_corners):
    """The AVX2 walk gives the labels of the shared per-pixel walk, bit for bit, on tame rows and on rows holding
    NaN, infinities and values beyond 1e30. A kept axis has the taps (i, i, 1, 0), an exact identity whatever the
    order of the blends, so resizing x along W to >= 8 columns gives, transposed, what resizing x transposed
    along H gives; there the rows are narrower than 8 columns and take the per-pixel walk."""
    shape, size = ONE_AXIS_CASES[case]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    x[0, 1, 0, 2] = NAN
    x[0, 2, shape[2] - 1, 3] = INF
    x[-1, 3, shape[2] - 1, shape[3] - 1] = -INF
    x[-1, 4, 1, 0] = 1e35
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.to(dtype).contiguous(memory_format=fmt)
    xt = x.transpose(2, 3).contiguous(memory_format=fmt)
    wide = upsample_argmax(x, size, align_corners=align_corners, backend="cpu")
    narrow = upsample_argmax(xt, size[::-1], align_corners=align_corners, backend="cpu")
    assert min(size) < 8 <= max(size)
    assert torch.equal(wide, narrow.transpose(1, 2)), f"{(wide != narrow.transpose(1, 2)).sum().item()} labels differ"
    assert (wide == 1).any() and (wide == 2).any()  # the NaN and the inf won somewhere


@needs_ext
def test_huge_class_count_takes_the_per_pixel_body():
    """Beyond the row-buffer bound (16 MiB per thread) the kernel runs the shared body per pixel on the logits."""
    x = torch.randn(1, 40000, 3, 4, generator=torch.Generator().manual_seed(2))
    x[0, 7, 1, 1] = NAN
    x[0, 9, 2, 3] = INF
    x[0, 12345, 0, 0] = 1e35
    out = upsample_argmax(x, (3, 40), backend="cpu")
    ref = upsample_argmax_reference(x, (3, 40))
    assert torch.equal(out, ref), f"{(out != ref).sum().item()} labels differ"
    assert (ref == 7).any() and (ref == 12345).any()


_PEAK_MEMORY_SCRIPT = """
import resource, sys, torch
from deeplab_fast.ops import upsample_argmax, upsample_softmax_accumulate
op, k = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
logits = torch.randn(1, k, 1, 1)
accum = torch.zeros(1, k, 1, 8)
small = torch.randn(1, 3, 1, 1)
upsample_argmax(small, (1, 8), backend="cpu")  # warm-up: lazy initialisation is not the op's staging
upsample_softmax_accumulate(small, torch.zeros(1, 3, 1, 8), backend="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if op == "argmax":
    labels = upsample_argmax(logits, (1, 8), backend="cpu")
else:
    upsample_softmax_accumulate(logits, accum, backend="cpu")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
if op == "argmax":
    assert (labels == logits.flatten().argmax()).all()
else:
    assert torch.allclose(accum, torch.softmax(logits, 1).expand(1, k, 1, 8), rtol=1e-5, atol=1e-12)
"""


@needs_ext
@pytest.mark.parametrize("op", ["argmax", "softmax_accumulate"])
def test_class_op_staging_is_bounded(op):
    """Both class ops stage W-blended source rows per thread; with 2^21 classes and a 1x8 output they used to
    take about 330 MB (argmax) / 400 MB (softmax_accumulate) for rows padded to 16 columns (2^24 classes: 2.6 GB).
    The staging now stays under 16 MiB per thread: beyond it the ops run the per-pixel body with no staging.
    Measured as the growth of the peak RSS of a fresh process during one call (the logits: 8 MiB, made before)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY_SCRIPT, op, str(2**21)], cwd=root, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    growth_mib = int(run.stdout.split()[-1])
    assert growth_mib < 40, f"the call grew the peak RSS by {growth_mib} MiB"
