"""`deeplab-fast predict` end to end on temporary folders (with bad files), help texts, setup errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeplab_fast import cli as top_cli
from deeplab_fast.inference import cli

ROOT = Path(__file__).resolve().parents[1]
K = 21


class TinySeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, K, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.conv(x)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the DeepLabV3+ builder by a tiny network; records the args it was called with."""
    calls: list = []

    def build(args):
        calls.append(args)
        torch.manual_seed(0)
        return TinySeg()

    monkeypatch.setattr(cli, "build_model", build)
    return calls


def _images(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(root / "sub" / "gray.png")  # small too
    rgba = rng.integers(0, 256, (35, 33, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(root / "sub" / "deeper" / "rgba.png")
    deep = rng.integers(0, 65536, (36, 36)).astype("<u2")
    Image.frombytes("I;16", (36, 36), deep.tobytes()).save(root / "sub" / "deeper" / "sixteen.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "notes.txt").write_text("not an image, not picked up from a folder")


def test_predict_folder_with_a_corrupt_file(tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src)
    code = top_cli.main(["predict", str(src), "--out", str(out), "--overlay", "--batch-size", "2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # one image failed
    assert "corrupt.png" in captured.err and "skipped" in captured.err
    assert "5 images in" in captured.out and "1 failed" in captured.out and "images/s" in captured.out
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == sorted(
        [
            "a.png",
            "a_overlay.png",
            "sub/b.png",
            "sub/b_overlay.png",
            "sub/gray.png",
            "sub/gray_overlay.png",
            "sub/deeper/rgba.png",
            "sub/deeper/rgba_overlay.png",
            "sub/deeper/sixteen.png",
            "sub/deeper/sixteen_overlay.png",
        ]
    )
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left behind
    with Image.open(out / "sub" / "gray.png") as lab:
        assert lab.mode == "P" and lab.size == (30, 20)
        assert lab.getpalette()[3:6] == [128, 0, 0]  # VOC colours for 21 classes
        labels = np.asarray(lab)
        assert labels.max() < K
    with Image.open(out / "sub" / "gray_overlay.png") as ov:
        assert ov.mode == "RGB" and ov.size == (30, 20)
    assert tiny_model[0].num_classes == K


def test_predict_files_multiscale_and_palette(tiny_model, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    _images(src)
    out = tmp_path / "out"
    argv = ["predict", str(src / "a.png"), str(src / "sub" / "b.jpg"), "--out", str(out), "--quiet"]
    argv += ["--scales", "0.5", "1.0", "--flip", "--palette", "cityscapes", "--window", "32", "--dtype", "float32"]
    assert top_cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    with Image.open(out / "a.png") as lab:
        assert lab.getpalette()[:3] == [128, 64, 128]
    assert "2 images in" in capsys.readouterr().out


def test_existing_outputs_survive_and_are_replaced_atomically(tiny_model, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src)
    (src / "corrupt.png").unlink()
    assert top_cli.main(["predict", str(src), "--out", str(out), "--quiet"]) == 0
    first = (out / "a.png").read_bytes()
    (src / "a.png").write_bytes(b"broken now")
    assert top_cli.main(["predict", str(src), "--out", str(out), "--quiet"]) == 1
    assert (out / "a.png").read_bytes() == first  # the failed image's earlier output is kept


def test_demo_segments_the_bundled_image_with_the_demo_model(tmp_path, monkeypatch, capsys) -> None:
    from deeplab_fast import assets

    assert cli.SAMPLE_IMAGE.is_file() and cli.SAMPLE_IMAGE.stat().st_size < 100_000
    monkeypatch.chdir(tmp_path)
    assert top_cli.main(["predict", "--demo", "--overlay", "--quiet", "--out", "demo"]) == 0
    captured = capsys.readouterr()
    assert "random weights" not in captured.err and "1 image in" in captured.out
    with Image.open(tmp_path / "demo" / "sample.png") as lab, Image.open(cli.SAMPLE_IMAGE) as img:
        assert lab.size == img.size and lab.mode == "P"
        assert lab.getpalette()[:12] == [c for rgb in assets.DEMO_PALETTE for c in rgb]  # the model's own palette
        accuracy = float((np.asarray(lab) == assets.sample_labels()).mean())
    assert accuracy > 0.9  # a trained model, not random weights (chance: about 0.25 per class)
    assert (tmp_path / "demo" / "sample_overlay.png").is_file()
    assert top_cli.main(["predict", "--demo", "--quiet"]) == 0  # default output folder
    assert (tmp_path / cli.DEMO_OUT / "sample.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{src}", "--out", "{file}"], "cannot write to --out"),
        (["predict", "--out", "{out}"], "no INPUT"),
        (["predict", "{src}"], "--out DIR is required"),
        (["predict", "{empty}", "--out", "{out}"], "no images found"),
        (["predict", "{src}", "--out", "{out}", "--window", "8"], "window"),
        (["predict", "{src}", "--out", "{out}", "--device", "tpu:7"], "device"),
        (["predict", "{src}", "--out", "{out}", "--device", "xpu:7"], "--device xpu:7: accepted values are auto"),
        (["predict", "{src}", "--out", "{out}", "--device", "cuda:x"], "accepted values"),
        (["predict", "{src}", "--out", "{out}", "--alpha", "2"], "--alpha"),
    ],
)
def test_setup_errors_exit_2_with_a_message(tiny_model, tmp_path, capsys, argv, message) -> None:
    src = tmp_path / "in"
    _images(src)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    names = {
        "src": src,
        "out": tmp_path / "out",
        "file": tmp_path / "a_file",
        "empty": tmp_path / "empty",
    }
    argv = [a.format(**names) for a in argv]
    assert top_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


def test_missing_weights_is_reported_before_any_model_is_built(tmp_path, capsys) -> None:
    # the real builder: the weights file is checked first, so this needs no model code
    src = tmp_path / "in"
    _images(src)
    code = top_cli.main(["predict", str(src), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.pth")])
    assert code == 2
    assert "w.pth: no such file" in capsys.readouterr().err


def test_cuda_device_without_a_gpu_is_one_line(tiny_model, tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    _images(tmp_path / "in")
    assert top_cli.main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_exit_2_naming_the_file(tmp_path, capsys, damage) -> None:
    # Regression: a corrupt .safetensors made predict exit 1 with a SafetensorError traceback.
    from deeplab_fast import assets

    data = assets.demo_model_path().read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\xff" * 100)
    argv = ["predict", "--demo", "--weights", str(bad), "--out", str(tmp_path / "o"), "--quiet"]
    assert top_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.safetensors" in err and "not a readable .safetensors file" in err


def test_more_than_256_classes_write_16_bit_labels(tiny_model, tmp_path) -> None:
    # Regression: the format followed the labels that happened to occur, so a 300-class model wrote palette PNGs.
    src = tmp_path / "in"
    _images(src)
    (src / "corrupt.png").unlink()
    assert top_cli.main(["predict", str(src / "a.png"), "--num-classes", "300", "--out", str(tmp_path / "o")]) == 0
    with Image.open(tmp_path / "o" / "a.png") as lab:
        assert lab.mode.startswith("I") and np.asarray(lab).max() < K  # 16-bit although every label is < 256
    assert tiny_model[0].num_classes == 300


def test_flags_override_what_the_weights_say(tmp_path, capsys) -> None:
    from deeplab_fast import assets

    img = tmp_path / "s.png"
    img.write_bytes(assets.sample_image_path().read_bytes())
    base = ["predict", str(img), "--weights", str(assets.demo_model_path()), "--quiet"]
    assert top_cli.main([*base, "--out", str(tmp_path / "ok")]) == 0  # no architecture flags
    assert top_cli.main([*base, "--num-classes", "5", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--num-classes 5" in err and "checkpoint has 4 classes, model has 5" in err


def test_help_texts_in_a_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    top = subprocess.run([sys.executable, "-m", "deeplab_fast", "--help"], capture_output=True, text=True, env=env)
    assert top.returncode == 0 and "predict" in top.stdout and "--version" in top.stdout
    version = subprocess.run(
        [sys.executable, "-m", "deeplab_fast", "--version"], capture_output=True, text=True, env=env
    )
    assert version.returncode == 0 and version.stdout.strip().startswith("deeplab-fast 0.")
    sub = subprocess.run(
        [sys.executable, "-m", "deeplab_fast", "predict", "--help"], capture_output=True, text=True, env=env
    )
    assert sub.returncode == 0
    for flag in ("--weights", "--backbone", "--num-classes", "--out", "--scales", "--flip", "--overlay", "--demo"):
        assert flag in sub.stdout
    assert "examples:" in sub.stdout
