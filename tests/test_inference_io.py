"""Image reading (all modes, bad files), label PNG writing, atomic saves, input discovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_fast.inference import io
from deeplab_fast.inference.palettes import voc_palette


def _rgb(h: int = 6, w: int = 7) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_read_image_converts_every_mode(tmp_path: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "rgb.png"), rgb)

    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    gray = io.read_image(tmp_path / "gray.png")
    assert gray.shape == (6, 7, 3) and (gray == rgb[..., :1]).all()

    rgba = np.concatenate([rgb, np.full((6, 7, 1), 9, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "rgba.png"), rgb)

    deep = rgb[..., 0].astype(np.uint16) * 257
    Image.frombytes("I;16", (7, 6), deep.astype("<u2").tobytes()).save(tmp_path / "gray16.png")
    got16 = io.read_image(tmp_path / "gray16.png")
    assert got16.dtype == np.uint8 and (got16 == rgb[..., :1]).all()

    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.gif")
    assert io.read_image(tmp_path / "pal.gif").shape == (6, 7, 3)

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert io.read_image(tmp_path / "cmyk.jpg").shape == (6, 7, 3)

    f32 = Image.frombytes("F", (7, 6), (rgb[..., 0].astype("<f4") / 255.0).tobytes())
    np.testing.assert_array_equal(io.pil_to_rgb_array(f32)[..., 0], rgb[..., 0])


def test_read_image_errors(tmp_path: Path) -> None:
    with pytest.raises(io.ImageReadError, match="no such file"):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(io.ImageReadError, match="not an image"):
        io.read_image(tmp_path / "notes.txt")
    good = tmp_path / "good.png"
    Image.fromarray(_rgb(32, 32)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(io.ImageReadError, match="truncated.png"):
        io.read_image(tmp_path / "truncated.png")
    with pytest.raises(io.ImageReadError, match="folder"):
        io.read_image(tmp_path)
    assert issubclass(io.ImageReadError, ValueError)


def test_label_png_is_palette_indexed_and_round_trips(tmp_path: Path) -> None:
    labels = np.random.default_rng(1).integers(0, 21, (9, 11))
    io.save_labels(labels, tmp_path / "sub" / "lab.png", voc_palette())
    with Image.open(tmp_path / "sub" / "lab.png") as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), labels)
        assert img.getpalette()[3:6] == [128, 0, 0]
    many = np.array([[0, 300], [1000, 5]])
    io.save_labels(many, tmp_path / "many.png")
    with Image.open(tmp_path / "many.png") as img:
        np.testing.assert_array_equal(np.asarray(img).astype(np.int64), many)
    with pytest.raises(ValueError, match="65535"):
        io.label_image(np.array([[-1]]))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["lab.png", "many.png", "sub"]  # no temp files left


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.png"
    io.save_rgb(_rgb(), dest)
    before = dest.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any encoder error
        io.atomic_save(Image.new("RGB", (2, 2)), dest, format="NO_SUCH_FORMAT")
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    io.save_rgb(_rgb(), tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as img:
        assert img.format == "JPEG"
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        io.save_rgb(np.zeros((2, 2)), dest)


def test_find_images_keeps_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("x.png", "a/y.JPG", "a/b/z.webp"):
        (root / rel).write_bytes(b"")
    (root / "a" / "readme.txt").write_text("skip me")
    pairs = io.find_images([root])
    assert [str(rel) for _, rel in pairs] == ["a/b/z", "a/y", "x"]
    single = tmp_path / "single.png"
    single.write_bytes(b"")
    both = io.find_images([root, single])
    assert [str(rel) for _, rel in both] == ["photos/a/b/z", "photos/a/y", "photos/x", "single"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "single.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="both write"):
        io.find_images([single, tmp_path / "other" / "single.jpg"])
    assert list(io.iter_chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_label_format_follows_the_class_count_not_the_labels(tmp_path: Path) -> None:
    # Regression: a model with more than 256 classes wrote palette PNGs whenever no label above 255 occurred.
    small = np.array([[0, 3], [255, 7]])
    assert io.label_image(small, num_classes=300).mode == "I;16"
    assert io.label_image(small, num_classes=256).mode == "P"
    assert io.label_image(small).mode == "P" and io.label_image(small + 1).mode == "I;16"  # None: by the labels
    io.save_labels(small, tmp_path / "wide.png", num_classes=1000)
    with Image.open(tmp_path / "wide.png") as img:
        assert img.mode.startswith("I") and np.array_equal(np.asarray(img), small)
    with pytest.raises(ValueError, match="65536"):
        io.label_image(small, num_classes=70000)


def test_label_pngs_follow_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o027)
    try:
        io.save_labels(np.zeros((2, 2), dtype=np.int64), tmp_path / "l.png")
    finally:
        os.umask(old)
    assert (tmp_path / "l.png").stat().st_mode & 0o777 == 0o640
