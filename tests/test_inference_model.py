"""Segmenter, export and the predict CLI with a real (narrow) deeplab_fast DeepLabV3+."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.inference.export import export_onnx
from deeplab_fast.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD
from deeplab_fast.models import deeplabv3plus

ROOT = Path(__file__).resolve().parents[1]
K = 5
NARROW = dict(width_mult=0.25, aspp_channels=16, low_level_channels=8, mobilenet_last_conv=False)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = deeplabv3plus("mobilenet_v2", num_classes=K, **NARROW).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is exercised
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_optimized_segmenter_matches_eager_and_reference(model) -> None:
    img = _image(45, 61)
    eager = deeplab_fast.Segmenter(model, device="cpu", optimize=False, scales=(0.75, 1.0), flip=True)
    fused = deeplab_fast.Segmenter(model, device="cpu", scales=(0.75, 1.0), flip=True)
    assert fused.optimized and not eager.optimized
    assert isinstance(eager.model, type(model))  # optimize() made a copy; the caller's model keeps its modules
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    want = 0.0
    with torch.no_grad():
        for s in (0.75, 1.0):
            xs = F.interpolate(x, size=(int(45 * s + 0.5), int(61 * s + 0.5)), mode="bilinear", align_corners=False)
            for flip in (False, True):
                # As the official DeepLab evaluation does: each scale's low-resolution logits are resized once,
                # straight to the image size.
                logits = model.forward_lowres(xs.flip(-1) if flip else xs)
                logits = logits.flip(-1) if flip else logits
                want = want + torch.softmax(F.interpolate(logits, size=(45, 61), mode="bilinear"), 1) / 4
    torch.testing.assert_close(eager.predict_proba(img), want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.predict_proba(img), want[0], rtol=1e-4, atol=1e-4)
    single = deeplab_fast.Segmenter(model, device="cpu")
    with torch.no_grad():
        assert torch.equal(single.predict(img), model(x)[0].argmax(0))


def test_small_image_with_the_real_model(model) -> None:
    # the model itself refuses inputs under 32 px; the Segmenter pads them and crops the result
    labels = deeplab_fast.Segmenter(model, device="cpu").predict(_image(17, 9))
    assert labels.shape == (17, 9)


def test_onnx_export_of_the_real_model(model, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    # the TorchScript-based exporter: the dynamo one gives the same file but takes minutes on a busy CPU
    report = export_onnx(model, tmp_path / "m.onnx", input_size=64, exporter="torchscript")
    assert report.max_abs_error is not None and report.max_abs_error < 1e-4
    assert len(report.checked_shapes) == 2


def test_torch_export_of_eager_and_optimized_models(model) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    ep = torch.export.export(model, (x,))
    torch.testing.assert_close(ep.module()(x), want, rtol=1e-5, atol=1e-5)
    fused = deeplab_fast.optimize(model)
    ep_fused = torch.export.export(fused, (x,))
    if _ext.HAS_EXT:
        assert any("deeplab_fast" in str(n.target) for n in ep_fused.graph.nodes)
    torch.testing.assert_close(ep_fused.module()(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built (the fused custom ops need it)")
def test_onnx_export_refuses_the_optimized_model(model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unfused model"):
        export_onnx(deeplab_fast.optimize(model), tmp_path / "f.onnx", input_size=64)


def test_cli_demo_with_a_real_model_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "deeplab_fast", "predict", "--demo", "--backbone", "mobilenet_v2", "--overlay"]
    cmd += ["--out", str(tmp_path / "demo"), "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "random weights" not in run.stderr
    assert "1 image in" in run.stdout and "0 failed" in run.stdout
    assert (tmp_path / "demo" / "sample.png").is_file() and (tmp_path / "demo" / "sample_overlay.png").is_file()


def test_cli_with_weights_and_with_weights_of_another_architecture(tmp_path: Path, capsys) -> None:
    from deeplab_fast import cli as top_cli
    from deeplab_fast.models.weights import save_weights

    torch.manual_seed(0)
    weights = tmp_path / "mnv2_3cls.safetensors"
    save_weights(deeplabv3plus("mobilenet_v2", num_classes=3).eval(), weights)
    src = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(_image(40, 52)).save(src)
    base = ["predict", str(src), "--weights", str(weights), "--backbone", "mobilenet_v2", "--quiet"]
    assert top_cli.main([*base, "--num-classes", "3", "--out", str(tmp_path / "ok")]) == 0
    captured = capsys.readouterr()
    assert "random weights" not in captured.err and "1 image in" in captured.out
    with Image.open(tmp_path / "ok" / "img.png") as lab:
        assert lab.mode == "P" and np.asarray(lab).max() < 3
    assert top_cli.main([*base, "--num-classes", "21", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "do not fit --backbone mobilenet_v2 --num-classes 21" in err and "classifier" in err
    assert not (tmp_path / "bad" / "img.png").exists()
