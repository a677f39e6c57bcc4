"""Palettes, colorize and overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deeplab_fast
from deeplab_fast.inference.palettes import (
    ade20k_palette,
    cityscapes_palette,
    colorize,
    generic_palette,
    get_palette,
    overlay,
    voc_palette,
)


def test_voc_palette_known_entries() -> None:
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    # background, aeroplane, bicycle, bird, ..., person (15), tvmonitor (20), void (255)
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0]
    assert pal[15].tolist() == [192, 128, 128]
    assert pal[20].tolist() == [0, 64, 128]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256


def test_fixed_palettes_shapes_and_distinct_colours() -> None:
    cs = cityscapes_palette()
    assert cs.shape == (19, 3) and cs[0].tolist() == [128, 64, 128] and cs[18].tolist() == [119, 11, 32]
    gen = generic_palette(1000)
    assert gen.shape == (1000, 3) and gen[0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(generic_palette(1000), gen)  # deterministic
    assert np.abs(gen[1:].astype(int) - gen[:-1].astype(int)).sum(1).min() > 30  # neighbours differ clearly


def test_ade20k_palette_is_the_official_table() -> None:
    ade = ade20k_palette()
    assert ade.shape == (150, 3) and ade.dtype == np.uint8
    # wall, building, sky, floor, tree (the head of the ADE20K toolkit's colour table) and flag (the last)
    assert ade[:5].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3]]
    assert ade[149].tolist() == [92, 0, 255]
    # the hand-made table repeats one colour: road (6) and skyscraper (48); every other class has its own
    assert ade[6].tolist() == ade[48].tolist() == [140, 140, 140]
    rest = [tuple(c) for i, c in enumerate(ade.tolist()) if i != 48]
    assert len(set(rest)) == 149
    assert not np.array_equal(ade, generic_palette(150))  # no longer the generated stand-in


def test_colorize_ade20k_uses_the_official_colours() -> None:
    labels = torch.tensor([[0, 1, 2], [3, 149, 150]])
    rgb = colorize(labels, "ade20k")
    assert rgb[0].tolist() == [[120, 120, 120], [180, 120, 120], [6, 230, 230]]
    assert rgb[1].tolist() == [[80, 50, 50], [92, 0, 255], [0, 0, 0]]  # 150 is outside the palette: black
    np.testing.assert_array_equal(colorize(np.arange(150).reshape(10, 15), "ade").reshape(150, 3), ade20k_palette())


def test_get_palette_names_arrays_and_errors() -> None:
    np.testing.assert_array_equal(get_palette("pascal"), voc_palette())
    np.testing.assert_array_equal(get_palette("ADE20K"), ade20k_palette())
    assert get_palette("generic", 7).shape == (7, 3)
    custom = [[1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(get_palette(custom), np.array(custom, np.uint8))
    np.testing.assert_array_equal(get_palette(torch.tensor(custom)), np.array(custom, np.uint8))
    with pytest.raises(ValueError, match="palette must be one of"):
        get_palette("rainbow")
    with pytest.raises(ValueError, match=r"\(P, 3\)"):
        get_palette([[1, 2]])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        get_palette([[0, 0, 300]])


def test_colorize_numpy_tensor_batches_and_out_of_range() -> None:
    labels = np.array([[0, 1, 2], [15, 255, -1]])
    rgb = colorize(labels, "voc")
    assert isinstance(rgb, np.ndarray) and rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 1].tolist() == [224, 224, 192]
    assert rgb[1, 2].tolist() == [0, 0, 0]  # negative: black
    cs = colorize(torch.tensor([[0, 18, 19, 255]]), "cityscapes")
    assert isinstance(cs, torch.Tensor) and cs.shape == (1, 4, 3)
    assert cs[0, 1].tolist() == [119, 11, 32] and cs[0, 2].tolist() == [0, 0, 0] and cs[0, 3].tolist() == [0, 0, 0]
    batch = colorize(torch.randint(0, 21, (2, 5, 6)))
    assert batch.shape == (2, 5, 6, 3)
    assert deeplab_fast.colorize is colorize
    with pytest.raises(ValueError, match="integer"):
        colorize(np.zeros((2, 2), np.float32))


def test_overlay_blends_and_keeps_unlabelled_pixels() -> None:
    image = np.full((4, 5, 3), 100, np.uint8)
    labels = np.zeros((4, 5), np.int64)
    labels[0, 0] = 1  # VOC red (128, 0, 0)
    labels[1, 1] = 300  # outside the palette: the image shows through
    out = overlay(image, labels, alpha=0.25, palette="voc")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [round(0.75 * 100 + 0.25 * 128), 75, 75]
    assert out[1, 1].tolist() == [100, 100, 100]
    assert out[2, 2].tolist() == [75, 75, 75]  # background is black in VOC
    np.testing.assert_array_equal(overlay(image, labels, alpha=0.0), image)
    t = overlay(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(labels), alpha=1.0)
    assert isinstance(t, torch.Tensor) and t[0, 0].tolist() == [128, 0, 0]
    assert deeplab_fast.overlay is overlay


def test_overlay_errors() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="same size"):
        overlay(image, np.zeros((5, 4), np.int64))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, np.zeros((4, 5), np.int64), alpha=1.5)
