"""The model's GPU path, exercised on the CPU: the packed depthwise op (one kernel launch, no conversion),
optimize()'s per-device decisions, a whole optimized model through the emulated CUDA kernels, and low precision.

The CUDA kernels run here through the host emulation (backend "cuda_emu"); nothing here ran on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from deeplab_fast import optimize
from deeplab_fast.models import deeplabv3plus
from deeplab_fast.models.fuse import FusedDWConv, FusedResizeConcat, device_plan
from deeplab_fast.ops import dwconv_bn_act, dwconv_bn_act_packed, dwconv_pack_width, pack_dwconv_weight
from deeplab_fast.ops.dwconv import unpack_dwconv_weight
from deeplab_fast.testing import cuda_emu_counters


def _params(c: int, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, 1, k, k, generator=g), torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)


def _x(n: int, c: int, h: int, w: int, dtype: torch.dtype, channels_last: bool, seed: int = 1) -> torch.Tensor:
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _aten_ops_in(fn) -> list[str]:
    """Names of every dispatcher op the call runs, nested ones included (the profiler records them all)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_packed_call_is_one_launch_and_no_conversion(dtype):
    c = 16  # a multiple of both pack widths: the vector kernel runs
    w, s, b = _params(c)
    x = _x(2, c, 9, 9, dtype, channels_last=True)
    v = dwconv_pack_width(dtype, "cuda_emu")
    assert v == 16 // torch.empty((), dtype=dtype).element_size()
    packed = pack_dwconv_weight(w, v)
    assert packed.shape == (c // v, 9, v) and packed.dtype == torch.float32
    with cuda_emu_counters() as counts:
        y = dwconv_bn_act_packed(x, packed, s, b, k=3, dilation=2, backend="cuda_emu")
    assert counts["launches"] == 1
    names = _aten_ops_in(lambda: dwconv_bn_act_packed(x, packed, s, b, k=3, dilation=2, backend="cuda_emu"))
    assert names == ["deeplab_fast::dwconv_bn_act_packed_cuda_emu"], names
    # the per-call preparation of the unpacked op is what the packed one saves
    unpacked = _aten_ops_in(
        lambda: torch.ops.deeplab_fast.dwconv_bn_act_cuda_emu(x, w.to(dtype), s.to(dtype), b.to(dtype), 1, 2, 1)
    )
    assert "aten::permute" in unpacked and "aten::contiguous" in unpacked
    ref = dwconv_bn_act(x, w.to(dtype), s.to(dtype), b.to(dtype), dilation=2, backend="reference")
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.float(), ref.float(), rtol=tol, atol=tol)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", ["cpu", "cuda_emu", "reference", "triton"])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("width", [1, 4, 8, 32])
def test_packed_matches_reference_at_any_width(backend, channels_last, width):
    # A width other than the kernels' own is re-blocked per call (correct, not free); the CUDA NCHW kernels
    # read any width through weight_offset(). C = 12 leaves a partly padded last block for widths 8 and 32.
    c = 12
    w, s, b = _params(c, k=5)
    x = _x(2, c, 7, 8, torch.float32, channels_last)
    packed = pack_dwconv_weight(w, width)
    torch.testing.assert_close(unpack_dwconv_weight(packed, c), w, rtol=0, atol=0)
    y = dwconv_bn_act_packed(x, packed, s, b, k=5, stride=2, dilation=3, activation="relu6", backend=backend)
    ref = dwconv_bn_act(x, w, s, b, stride=2, dilation=3, activation="relu6", backend="reference")
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_packed_unaligned_input_falls_back_to_the_scalar_kernel():
    # A storage offset that breaks 16-byte alignment: the CUDA channels_last path runs its V = 1 kernel.
    c = 8
    w, s, b = _params(c)
    base = torch.randn(2 * c * 6 * 6 + 1)
    x = base[1:].view(2, 6, 6, c).permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
    packed = pack_dwconv_weight(w, dwconv_pack_width(torch.float32, "cuda_emu"))
    y = dwconv_bn_act_packed(x, packed, s, b, k=3, backend="cuda_emu")
    torch.testing.assert_close(y, dwconv_bn_act(x, w, s, b, backend="reference"), rtol=1e-5, atol=1e-5)


def test_packed_op_checks_and_fake():
    c = 8
    w, s, b = _params(c)
    x = _x(1, c, 5, 5, torch.float32, True)
    packed = pack_dwconv_weight(w, 4)
    with pytest.raises(ValueError, match=r"weight must be a packed weight \(ceil\(C / V\), k\*k, V\)"):
        dwconv_bn_act_packed(x, w, s, b, k=3, backend="cpu")
    with pytest.raises(ValueError, match="scale must be float32, got bfloat16"):
        dwconv_bn_act_packed(x, packed, s.bfloat16(), b, k=3, backend="cpu")
    with pytest.raises(ValueError, match="k must be an odd kernel size"):
        dwconv_bn_act_packed(x, packed, s, b, k=2, backend="cpu")
    with pytest.raises(ValueError, match="backend must be one of 'cpu', 'cuda', 'cuda_emu'"):
        dwconv_pack_width(torch.float32, "triton")
    with pytest.raises(ValueError, match="width must be a power of two"):
        pack_dwconv_weight(w, 3)
    # the fake impls answer for meta tensors with the kernels' layout
    meta = dwconv_bn_act_packed(x.to("meta"), packed.to("meta"), s.to("meta"), b.to("meta"), k=3, stride=2)
    assert meta.shape == (1, c, 3, 3) and meta.is_contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.deeplab_fast.dwconv_bn_act_packed.default, (x, packed, s, b, 3, 1, 2, 1))


def test_device_plan_is_the_one_device_decision():
    cuda = device_plan("cuda", "auto", True)
    assert not cuda.cpu_engines and not cuda.tune_malloc and cuda.dense_weights_channels_last
    cpu = device_plan("cpu", "auto", True)
    assert cpu.cpu_engines and cpu.tune_malloc and not cpu.dense_weights_channels_last
    assert not device_plan("cpu", "cuda_emu", True).cpu_engines
    assert not device_plan("cuda", "auto", False).dense_weights_channels_last


def test_optimize_on_a_non_cpu_device_runs_nothing_cpu_only(monkeypatch):
    # A meta model takes the non-CPU path everywhere (no oneDNN, Winograd or malloc tuning), as a CUDA one does.
    from deeplab_fast.models import fuse

    def no_cpu_piece(*args, **kwargs):
        raise AssertionError("a CPU-only piece ran for a non-CPU model")

    monkeypatch.setattr(fuse, "keep_freed_memory", no_cpu_piece)
    monkeypatch.setattr(fuse, "winograd_conv3x3", no_cpu_piece)
    monkeypatch.setattr(fuse.FusedConv, "_packed_weight", no_cpu_piece)  # oneDNN's packed weight
    model = deeplabv3plus(backbone="mobilenet_v2", width_mult=0.25, num_classes=3).eval().to("meta")
    fused = optimize(model)
    with torch.no_grad():
        out = fused(torch.empty(2, 3, 33, 33, device="meta"))
    assert out.shape == (2, 3, 33, 33) and out.device.type == "meta"


def _tiny_model(num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    return deeplabv3plus(backbone="mobilenet_v2", width_mult=0.25, num_classes=num_classes).eval()


@pytest.fixture(scope="module")
def tiny():
    """(eager model, input batch, its fp32 eager logits): shared, the eager forward is the slow part."""
    model = _tiny_model()
    x = torch.randn(2, 3, 33, 33, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model, x, model(x)


def test_optimize_packs_once_and_repacks_on_change(monkeypatch, tiny):
    from deeplab_fast.models import fuse

    fused = optimize(tiny[0], backend="cpu")
    dws = [m for m in fused.modules() if isinstance(m, FusedDWConv)]
    assert dws and all(len(m._packs) == 1 for m in dws)  # packed by optimize() for the model's device
    calls = []
    monkeypatch.setattr(fuse, "pack_dwconv_weight", lambda *a: calls.append(a) or pack_dwconv_weight(*a))
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        first = fused(x)
        assert calls == []
        dws[0].weight.mul_(2.0)  # an in-place change of a parameter is seen
        second = fused(x)
    assert len(calls) == 1 and not torch.equal(first, second)


def test_optimize_cuda_emu_whole_model_matches_eager(tiny):
    model, x, ref = tiny
    fused = optimize(model, backend="cuda_emu")
    with torch.no_grad():
        with cuda_emu_counters() as counts:
            out = fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    # every depthwise conv and every resize ran as exactly one emulated CUDA launch
    n_dw = sum(isinstance(m, FusedDWConv) for m in fused.modules())
    n_resize = sum(isinstance(m, FusedResizeConcat) for m in fused.modules())
    assert n_dw > 0 and counts["launches"] == n_dw + n_resize


@pytest.mark.parametrize(
    ("backend", "dtype"), [("cpu", torch.bfloat16), ("cpu", torch.float16), ("cuda_emu", torch.bfloat16)]
)
def test_optimize_low_precision_against_fp32_eager(backend, dtype, tiny):
    model, x, ref = tiny
    fused = optimize(model, backend=backend, dtype=dtype)
    assert fused.optimized["dtype"] == str(dtype).removeprefix("torch.")
    dw = next(m for m in fused.modules() if isinstance(m, FusedDWConv))
    assert dw.weight.dtype == torch.float32  # folded in fp32, read as fp32 by the kernels
    assert fused.classifier.weight.dtype == torch.float32  # the classifier accumulates in fp32: fp32 logits
    assert fused.decoder.reduce.weight.dtype == dtype
    with torch.no_grad():
        out = fused(x.to(dtype))
        assert torch.equal(fused(x), out)  # a float32 image is cast once at the entry: the same result
    assert out.dtype == torch.float32
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    # measured 3.3e-3 (bf16) and 1.2e-3 (fp16) here, as eager PyTorch with the model cast to the dtype
    assert rel < (2e-2 if dtype == torch.bfloat16 else 5e-3), rel
    assert (out.float().argmax(1) == ref.argmax(1)).float().mean() > 0.95


def test_optimize_dtype_is_checked(tiny):
    with pytest.raises(ValueError, match="dtype must be None, torch.float32, torch.float16 or torch.bfloat16"):
        optimize(tiny[0], dtype=torch.float64)


@pytest.mark.parametrize("backend", ["cpu", "cuda_emu"])
def test_autocast_on_an_optimized_model_casts_weights_once(backend, tiny):
    from deeplab_fast.models.fuse import FusedConv

    model, x, ref = tiny
    fused = optimize(model, backend=backend, tune_malloc=False)
    convs = [m for m in fused.modules() if isinstance(m, FusedConv) and not m.full_precision]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        out = fused(x)
        first = [m._cast[1][0] for m in convs]
        again = fused(x)
    # the classifier accumulates in fp32 under autocast too (fp32 logits, as optimize(dtype=bfloat16) gives)
    assert out.dtype == torch.float32 and torch.equal(out, again)
    assert fused.classifier.full_precision and fused.classifier._cast is None  # never cast
    assert all(a is b and a.dtype == torch.bfloat16 for a, b in zip(first, [m._cast[1][0] for m in convs], strict=True))
    assert all(m.weight.dtype == torch.float32 for m in convs)  # the model itself is not cast
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 2e-2, rel
    with torch.no_grad():
        assert fused(x).dtype == torch.float32  # outside autocast: fp32 again


def test_segmenter_cuda_graphs_needs_a_cuda_device(tiny):
    from deeplab_fast import Segmenter

    with pytest.raises(ValueError, match="cuda_graphs=True .* needs a CUDA device; this Segmenter runs on cpu"):
        Segmenter(tiny[0], device="cpu", cuda_graphs=True)
    with pytest.raises(TypeError, match="cuda_graphs"):
        Segmenter(tiny[0], device="cpu", cuda_graphs=1)


def test_graphed_forward_captures_once_per_input_layout(monkeypatch):
    # The CUDA capture is stubbed by a "graph" that reruns fn on the static input into the static outputs: what
    # a replay does. Checked: one capture per layout, replays see the new input, results outlive the next replay.
    from deeplab_fast.inference import cuda_graphs

    captures = []

    class FakeGraph:
        def __init__(self, fn, static_in, static_out):
            self.fn, self.static_in, self.static_out = fn, static_in, static_out

        def replay(self):
            new = self.fn(self.static_in)
            self.static_out["out"].copy_(new["out"])

    def fake_capture(fn, static_in, warmup):
        captures.append(tuple(static_in.shape))
        out = fn(static_in)
        return FakeGraph(fn, static_in, out), out

    monkeypatch.setattr(cuda_graphs, "_capture_graph", fake_capture)
    graphed = cuda_graphs.GraphedForward(lambda x: {"out": x * 2.0, "n": 1})
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    ya = graphed(a)
    yb = graphed(b)
    yc = graphed(torch.randn(2, 3, 4, 4))
    assert captures == [(1, 3, 4, 4), (2, 3, 4, 4)] and graphed.captured == 2
    torch.testing.assert_close(ya["out"], a * 2.0)  # not overwritten by the replay for b
    torch.testing.assert_close(yb["out"], b * 2.0)
    assert yc["out"].shape == (2, 3, 4, 4) and ya["n"] == 1
    graphed(a.contiguous(memory_format=torch.channels_last))  # another layout: another graph
    assert graphed.captured == 3
