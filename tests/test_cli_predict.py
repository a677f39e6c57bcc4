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


def test_demo_uses_the_bundled_image(tiny_model, tmp_path, monkeypatch, capsys) -> None:
    assert cli.SAMPLE_IMAGE.is_file() and cli.SAMPLE_IMAGE.stat().st_size < 100_000
    monkeypatch.chdir(tmp_path)
    assert top_cli.main(["predict", "--demo", "--overlay", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "random weights" in captured.err
    with Image.open(tmp_path / cli.DEMO_OUT / "sample.png") as lab, Image.open(cli.SAMPLE_IMAGE) as img:
        assert lab.size == img.size
    assert (tmp_path / cli.DEMO_OUT / "sample_overlay.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "{src}", "--out", "{file}"], "cannot write to --out"),
        (["predict", "--out", "{out}"], "no INPUT"),
        (["predict", "{src}"], "--out DIR is required"),
        (["predict", "{empty}", "--out", "{out}"], "no images found"),
        (["predict", "{src}", "--out", "{out}", "--window", "8"], "window"),
        (["predict", "{src}", "--out", "{out}", "--device", "tpu:7"], "device"),
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
    assert "error:" in err and message in err


def test_missing_weights_is_reported_before_any_model_is_built(tmp_path, capsys) -> None:
    # the real builder: the weights file is checked first, so this needs no model code
    src = tmp_path / "in"
    _images(src)
    code = top_cli.main(["predict", str(src), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "w.pth")])
    assert code == 2
    assert "w.pth: no such file" in capsys.readouterr().err


def test_help_texts_in_a_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    top = subprocess.run([sys.executable, "-m", "deeplab_fast", "--help"], capture_output=True, text=True, env=env)
    assert top.returncode == 0 and "predict" in top.stdout
    sub = subprocess.run(
        [sys.executable, "-m", "deeplab_fast", "predict", "--help"], capture_output=True, text=True, env=env
    )
    assert sub.returncode == 0
    for flag in ("--weights", "--backbone", "--num-classes", "--out", "--scales", "--flip", "--overlay", "--demo"):
        assert flag in sub.stdout
    assert "examples:" in sub.stdout
