"""bfloat16 inference: optimize(dtype=...) (float32 classifiers and logits, float32 images accepted), the oneDNN
bf16 dispatch predicate, the slow-bf16 warning, the autocast rule of the fused modules and ops, Segmenter(dtype=...)
and the demo model's mIoU in bf16.

This machine's CPU has no native bf16 (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False): the oneDNN bf16
path is checked by its dispatch decision only (the predicate monkeypatched), never run here.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch

from deeplab_fast import Segmenter, optimize
from deeplab_fast.models import fuse
from deeplab_fast.models.fuse import FusedConv
from deeplab_fast.ops import dwconv_bn_act, dwconv_bn_act_packed, pack_dwconv_weight, upsample_argmax, upsample_concat
from tests._model_helpers import rel_err, small_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

pytestmark = pytest.mark.filterwarnings("ignore:optimize\\(dtype=torch.bfloat16\\)")


@pytest.fixture(scope="module")
def mobilenet():
    """(eager model with an aux head and dict output, input, its fp32 eager output dict)."""
    model = small_model("mobilenet_v2", aux_head=True, output_dict=True).eval()
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model, x, model(x)


# ---- optimize(dtype=16-bit): float32 classifiers and logits, float32 images -----------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model_returns_fp32_logits_and_takes_fp32_images(dtype, mobilenet):
    model, x, ref = mobilenet
    fused = optimize(model, dtype=dtype, tune_malloc=False)
    assert fused.low_precision_dtype() == dtype
    for head in (fused.classifier, fused.aux.classifier):
        assert head.full_precision and head.weight.dtype == head.bias.dtype == torch.float32
    assert fused.aux.conv.weight.dtype == dtype and fused.decoder.reduce.weight.dtype == dtype
    with torch.no_grad():
        out = fused(x)  # a float32 image: cast once at the entry
        same = fused(x.to(dtype))
    assert out["out"].dtype == out["aux"].dtype == torch.float32
    assert torch.equal(out["out"], same["out"]) and torch.equal(out["aux"], same["aux"])
    assert rel_err(ref["out"], out["out"]) < 2e-2
    with pytest.raises(TypeError, match="input dtype torch.float64 does not match"):
        fused(x.double())
    with pytest.raises(TypeError, match=f"input dtype torch.float32 does not match the model's dtype {dtype}"):
        copy.deepcopy(model).to(dtype)(x)  # an eager 16-bit model takes its own dtype only, as before


def test_float32_image_is_cast_once_at_the_entry(mobilenet, monkeypatch):
    # the first conv already sees bf16: the cast happens once, before the network, not per layer
    fused = optimize(mobilenet[0], dtype=torch.bfloat16, tune_malloc=False)
    seen = []
    first = fused.backbone.features[0]
    monkeypatch.setattr(first, "forward", lambda x, *a: seen.append(x.dtype) or type(first).forward(first, x, *a))
    with torch.no_grad():
        fused(mobilenet[1])
    assert seen == [torch.bfloat16]


def test_classifier_accumulates_and_returns_fp32():
    # 1 + 2**-9 is not a bfloat16: the full-precision classifier keeps it, a bf16 conv rounds it away
    head = FusedConv(torch.ones(1, 2, 1, 1), torch.zeros(1), stride=1, padding=0, dilation=1, full_precision=True)
    x = torch.tensor([1.0, 2**-9]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2).bfloat16()
    with torch.no_grad():
        y = head(x)
    assert y.dtype == torch.float32 and torch.all(y == 1 + 2**-9)
    assert torch.all(torch.nn.functional.conv2d(x, head.weight.bfloat16()) == 1)


# ---- oneDNN bf16: one predicate decides -----------------------------------------------------------------------


def test_native_bf16_predicate_reads_onednn():
    assert fuse.cpu_has_native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert fuse.onednn_runs_dtype(torch.float32) and not fuse.onednn_runs_dtype(torch.float16)
    assert fuse.onednn_runs_dtype(torch.bfloat16) == fuse.cpu_has_native_bf16()


@pytest.mark.parametrize("native", [True, False])
def test_bf16_conv_engine_follows_the_predicate(native, monkeypatch):
    calls = []
    monkeypatch.setattr(fuse, "cpu_has_native_bf16", lambda: calls.append(1) or native)
    g = torch.Generator().manual_seed(0)
    conv1x1 = FusedConv(torch.randn(64, 64, 1, 1, generator=g), None, stride=1, padding=0, dilation=1, engine="auto")
    conv3x3 = FusedConv(torch.randn(64, 64, 3, 3, generator=g), None, stride=1, padding=1, dilation=1)
    assert conv1x1.engine == "onednn" and conv3x3.engine == "winograd"
    x32 = torch.randn(1, 64, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert conv1x1.engine_for(x32) == "onednn" and conv3x3.engine_for(x32) == "winograd"
        assert not calls  # float32 never asks
        for conv in (conv1x1, conv3x3):
            conv.weight.data = conv.weight.data.bfloat16()
            # Winograd is float32-only: on a native-bf16 CPU every oneDNN/Winograd conv runs oneDNN in bf16
            assert conv.engine_for(x32.bfloat16()) == ("onednn" if native else "aten")
        assert calls
        conv1x1.weight.data = conv1x1.weight.data.half()
        assert conv1x1.engine_for(x32.half()) == "aten"  # float16: F.conv2d
        aten = FusedConv(conv1x1.weight.data.bfloat16(), None, stride=1, padding=0, dilation=1, engine="aten")
        assert aten.engine_for(x32.bfloat16()) == "aten"
    assert conv1x1.engine_for(x32.bfloat16()) == "aten"  # autograd on: always F.conv2d


def test_bf16_onednn_path_is_the_fp32_one(monkeypatch):
    # with the predicate forced on, a bf16 conv goes through the same oneDNN call as fp32 (weight packed in its
    # dtype, activation and residual as post-ops); the oneDNN ops are stubbed: this CPU cannot run them in bf16
    monkeypatch.setattr(fuse, "cpu_has_native_bf16", lambda: True)
    seen = []

    def reorder(weight, padding, stride, dilation, groups, shape):
        seen.append(("reorder", weight.dtype))
        return weight

    class Pointwise:
        def __call__(self, x, w, b, padding, stride, dilation, groups, attr, scalars, algo):
            seen.append(("conv", x.dtype, w.dtype, attr))
            return torch.nn.functional.conv2d(x.float(), w.float(), b.float()).relu().to(x.dtype)

        def binary(self, x, other, w, b, padding, stride, dilation, groups, binary_attr, alpha, unary, *rest):
            seen.append(("conv+add", x.dtype, other.dtype, binary_attr, unary))
            return (torch.nn.functional.conv2d(x.float(), w.float(), b.float()) + other.float()).to(x.dtype)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_convolution_weight", reorder)
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", Pointwise())
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 8, 1, 1, generator=g).bfloat16(), torch.randn(8, generator=g).bfloat16()
    conv = FusedConv(w, b, stride=1, padding=0, dilation=1, act="relu", engine="onednn")
    x = torch.randn(1, 8, 4, 4, generator=g).bfloat16()
    with torch.no_grad():
        y = conv(x)
        conv(x, torch.zeros(1, 8, 4, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert seen == [
        ("reorder", torch.bfloat16),
        ("conv", torch.bfloat16, torch.bfloat16, "relu"),
        ("conv+add", torch.bfloat16, torch.bfloat16, "add", "relu"),
    ]  # packed once, reused


def test_slow_bf16_warning_once_per_process(mobilenet, monkeypatch):
    monkeypatch.setattr(fuse, "_SLOW_BF16_WARNED", False)
    monkeypatch.setattr(fuse, "cpu_has_native_bf16", lambda: False)
    model = mobilenet[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimize(model, dtype=torch.float16, tune_malloc=False)
        assert not caught  # float16 and float32 say nothing
        optimize(model, dtype=torch.bfloat16, tune_malloc=False)
        optimize(model, dtype=torch.bfloat16, tune_malloc=False)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "no native bfloat16 (no AVX-512-BF16 or AMX" in msg and "dtype=torch.float32" in msg
    monkeypatch.setattr(fuse, "_SLOW_BF16_WARNED", False)
    monkeypatch.setattr(fuse, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimize(model, dtype=torch.bfloat16, tune_malloc=False)
    assert not caught  # a CPU with native bf16 is not warned


# ---- autocast: one rule for the fused modules and the ops -----------------------------------------------------


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50", "xception65"])
def test_autocast_on_optimized_models_casts_weights_once(backbone):
    model = small_model(backbone).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    fused = optimize(model, tune_malloc=False)
    convs = [m for m in fused.modules() if isinstance(m, FusedConv) and not m.full_precision]
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused(x)
            cast = [m._cast for m in convs]
            again = fused(x)
    assert out.dtype == torch.float32  # the classifier accumulates in fp32 under autocast too
    assert torch.equal(out, again)
    assert all(c is not None and c[1][0].dtype == torch.bfloat16 for c in cast)
    assert all(m._cast is c for m, c in zip(convs, cast, strict=True))  # the cast cache was hit: no re-cast
    assert all(m.weight.dtype == torch.float32 for m in convs)
    assert rel_err(ref, out) < 3e-2


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_dwconv_under_autocast_computes_in_the_autocast_dtype(backend):
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(1, 8, 9, 9, generator=g), torch.randn(8, 1, 3, 3, generator=g)
    s, b = torch.rand(8, generator=g) + 0.5, torch.randn(8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dwconv_bn_act(x, w, s, b, dilation=2, backend=backend)
        xb = x.bfloat16()
        yp = dwconv_bn_act_packed(xb, pack_dwconv_weight(w, 8), s, b, k=3, dilation=2, backend=backend)
        y64 = dwconv_bn_act(x.double(), w.double(), s.double(), b.double(), backend=backend)
    want = dwconv_bn_act(xb, w.bfloat16(), s.bfloat16(), b.bfloat16(), dilation=2, backend=backend)
    assert y.dtype == yp.dtype == torch.bfloat16 and torch.equal(y, want)
    assert torch.equal(yp, dwconv_bn_act_packed(xb, pack_dwconv_weight(w, 8), s, b, k=3, dilation=2, backend=backend))
    assert y64.dtype == torch.float64  # float64 is never cast, as autocast leaves it


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_upsample_ops_under_autocast_promote_or_keep_the_dtype(backend):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(1, 3, 4, 4, generator=g), torch.randn(1, 2, 8, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = upsample_concat([a.bfloat16(), b], (8, 8), backend=backend)
        low = upsample_concat([a.bfloat16(), b.bfloat16()], (8, 8), backend=backend)
        full = upsample_concat([a, b], (8, 8), backend=backend)
        labels = upsample_argmax(a, (8, 8), backend=backend)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, upsample_concat([a.bfloat16().float(), b], (8, 8)))
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32  # never lowered: torch.cat's rule
    assert torch.equal(full, upsample_concat([a, b], (8, 8), backend=backend))
    assert torch.equal(labels, upsample_argmax(a, (8, 8), backend=backend))  # in the logits' own dtype


# ---- Segmenter(dtype=...) -----------------------------------------------------------------------------------


def test_segmenter_bf16_builds_its_model_with_optimize(mobilenet):
    model = mobilenet[0]
    image = torch.rand(3, 40, 44, generator=torch.Generator().manual_seed(4))
    seg = Segmenter(model, device="cpu", dtype="bf16")
    assert seg.optimized and seg.model.optimized["dtype"] == "bfloat16"
    assert (
        seg.model.classifier.weight.dtype == torch.float32 and seg.model.decoder.reduce.weight.dtype == torch.bfloat16
    )
    proba = seg.predict_proba(image)
    assert proba.dtype == torch.float32 and torch.allclose(proba.sum(0), torch.ones(40, 44))
    full = Segmenter(model, device="cpu").predict(image)
    assert (seg.predict(image) == full).double().mean() > 0.97
    # not optimized: the whole model is cast
    plain = Segmenter(model, device="cpu", dtype=torch.bfloat16, optimize=False)
    assert all(p.dtype == torch.bfloat16 for p in plain.model.parameters())
    # an already optimized float32 model keeps its settings and is re-optimized in the dtype
    mine = optimize(model, conv_engine="aten", channels_last=False, tune_malloc=False)
    seg = Segmenter(mine, device="cpu", dtype=torch.bfloat16)
    assert seg.model is not mine and mine.low_precision_dtype() is None
    assert seg.model.optimized == {**mine.optimized, "dtype": "bfloat16"}
    assert Segmenter(seg.model, device="cpu", dtype=torch.bfloat16).model is seg.model  # nothing to change


def test_demo_model_miou_in_bf16_within_half_a_point():
    # the bound, on 8 of the demo's held-out images (benchmarks/bf16_accuracy.py runs all 64)
    import bf16_accuracy

    result = bf16_accuracy.demo_miou(8)
    assert result["fp32_miou_pct"] > 80  # the demo model does segment these images
    assert abs(result["miou_diff_points"]) <= 0.5, result
    assert result["label_agreement_pct"] > 99


def test_bf16_accuracy_cli_answers_bad_arguments_in_one_line(capsys):
    import bf16_accuracy

    with pytest.raises(SystemExit) as exc:
        bf16_accuracy.main(["--models", "vgg16"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--models: unknown vgg16" in err
