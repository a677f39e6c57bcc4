"""Segmenter: input kinds, padding, multi-scale + flip against a slow reference, sliding windows, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeplab_fast.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD
from deeplab_fast.inference.segmenter import Segmenter

K = 5


class TinySeg(nn.Module):
    """Stride-2 conv net with full-resolution output: (N, 3, H, W) -> (N, K, H, W); position dependent (padding)."""

    def __init__(self, k: int = K) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, k, 3, padding=1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward_lowres(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.forward_lowres(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class FullResOnly(TinySeg):
    """The same network without a low-resolution entry point."""

    forward_lowres = None  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.bn(self.conv(x))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class Pointwise(nn.Module):
    """1x1 convs only: every pixel's logits depend on that pixel alone, whatever the window."""

    def __init__(self, k: int = K) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)) * 3.0)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _normalized(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _run_padded(model: nn.Module, x: torch.Tensor, min_size: int = 32) -> torch.Tensor:
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, max(0, min_size - w), 0, max(0, min_size - h)))
    return model(xp)[..., :h, :w]


def slow_reference(model: nn.Module, img: np.ndarray, scales, flip: bool, lowres: bool = False) -> torch.Tensor:
    """The documented semantics with F.interpolate + softmax only: (K, H, W) averaged probabilities."""
    x = _normalized(img)
    h, w = x.shape[-2:]
    total, passes = 0.0, 0
    with torch.no_grad():
        for s in scales:
            size = (int(h * s + 0.5), int(w * s + 0.5))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for f in (False, True) if flip else (False,):
                xi = xs.flip(-1) if f else xs
                small = min(xi.shape[-2:]) < 32
                logits = model.forward_lowres(xi) if lowres and not small else _run_padded(model, xi)
                if f:
                    logits = logits.flip(-1)
                up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                total = total + torch.softmax(up, dim=1)
                passes += 1
    return (total / passes)[0]


@pytest.fixture(scope="module")
def model() -> TinySeg:
    torch.manual_seed(0)
    return TinySeg().eval()


def test_all_input_kinds_agree(model: TinySeg, tmp_path) -> None:
    img = _image(37, 45)
    path = tmp_path / "img.png"
    Image.fromarray(img).save(path)
    seg = Segmenter(model, device="cpu")
    want = slow_reference(model, img, (1.0,), False).argmax(0)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    kinds = {
        "path": str(path),
        "pathlib": path,
        "pil": Image.fromarray(img),
        "numpy": img,
        "chw_uint8": chw,
        "chw_float": chw.float() / 255.0,
        "nchw_uint8": chw[None],
    }
    for name, image in kinds.items():
        got = seg.predict(image)
        assert got.dtype == torch.int64 and got.shape == (37, 45), name
        assert torch.equal(got, want), name


def test_single_pass_uses_lowres_logits_and_matches_full_model(model: TinySeg) -> None:
    img = _image(64, 48, seed=1)
    seg = Segmenter(model, device="cpu")
    assert seg._lowres is not None
    with torch.no_grad():
        full = model(_normalized(img))[0]
    assert torch.equal(seg.predict(img), full.argmax(0))
    proba = seg.predict_proba(img)
    assert proba.shape == (K, 64, 48) and proba.dtype == torch.float32
    torch.testing.assert_close(proba, torch.softmax(full, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [TinySeg, FullResOnly])
def test_multiscale_flip_equals_slow_reference(cls) -> None:
    torch.manual_seed(1)
    net = cls().eval()
    img = _image(41, 53, seed=2)
    scales = (0.5, 0.75, 1.0, 1.25)  # 0.5 gives a 21x27 input: padded to 32 and cropped
    seg = Segmenter(net, scales=scales, flip=True, device="cpu")
    want = slow_reference(net, img, scales, True, lowres=cls is TinySeg)
    got = seg.predict_proba(img)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.sum(0), torch.ones(41, 53), rtol=1e-5, atol=1e-5)
    assert torch.equal(seg.predict(img), got.argmax(0))


def test_small_image_is_padded_and_cropped(model: TinySeg) -> None:
    img = _image(13, 20, seed=3)
    seg = Segmenter(model, device="cpu")
    labels = seg.predict(img)
    assert labels.shape == (13, 20)
    with torch.no_grad():
        want = _run_padded(model, _normalized(img))[0]
    assert torch.equal(labels, want.argmax(0))
    # the pad matters to this model near the border: cropping the padded output is not the same as
    # running the small image unpadded, so a wrong crop would show
    with torch.no_grad():
        unpadded = model(_normalized(img))[0]
    assert not torch.allclose(want, unpadded)
    one_pixel = seg.predict(_image(1, 1))
    assert one_pixel.shape == (1, 1)


def test_sliding_window_equals_whole_image_for_pointwise_model() -> None:
    torch.manual_seed(2)
    net = Pointwise().eval()
    img = _image(70, 90, seed=4)
    whole = Segmenter(net, device="cpu").predict_proba(img)
    for batch_size in (1, 3, 8):  # 12 windows: one per forward, groups of 3, groups of 8 (the last one short)
        tiled = Segmenter(net, window=32, stride=20, device="cpu", batch_size=batch_size).predict_proba(img)
        torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)
    # with flip and a second scale small enough to run whole (a tiled pass at s != 1 resizes averaged
    # probabilities rather than logits, so it is not expected to match the untiled pass there)
    ms = dict(scales=(0.5, 1.0), flip=True, device="cpu")
    torch.testing.assert_close(
        Segmenter(net, window=(40, 48), **ms).predict_proba(img),
        Segmenter(net, **ms).predict_proba(img),
        atol=1e-5,
        rtol=1e-5,
    )


def test_sliding_window_covering_the_image_equals_whole_image(model: TinySeg) -> None:
    img = _image(50, 60, seed=5)
    whole = Segmenter(model, device="cpu").predict_proba(img)
    covered = Segmenter(model, window=(50, 64), device="cpu").predict_proba(img)
    torch.testing.assert_close(covered, whole, rtol=1e-5, atol=1e-6)
    # windows smaller than the image tile it: every pixel still gets a distribution, and the shape is kept
    tiled = Segmenter(model, window=32, device="cpu")
    probs = tiled.predict_proba(img)
    torch.testing.assert_close(probs.sum(0), torch.ones(50, 60), rtol=1e-5, atol=1e-5)
    assert tiled.predict(img).shape == (50, 60)


def test_predict_batch_matches_predict(model: TinySeg) -> None:
    seg = Segmenter(model, device="cpu", batch_size=2, scales=(1.0, 0.5))
    images = [_image(40, 40, 6), _image(40, 40, 7), _image(40, 40, 8), _image(33, 47, 9)]
    got = seg.predict_batch(images)
    assert [tuple(g.shape) for g in got] == [(40, 40), (40, 40), (40, 40), (33, 47)]
    for g, img in zip(got, images, strict=True):
        assert torch.equal(g, seg.predict(img))
    stacked = torch.from_numpy(np.stack(images[:3])).permute(0, 3, 1, 2)
    for g, want in zip(seg.predict_batch(stacked), got[:3], strict=True):
        assert torch.equal(g, want)


def test_converts_grayscale_rgba_and_16bit(model: TinySeg) -> None:
    seg = Segmenter(model, device="cpu")
    rgb = _image(36, 36, seed=10)
    gray = rgb[..., 0]
    assert torch.equal(seg.predict(gray), seg.predict(np.repeat(gray[..., None], 3, -1)))
    rgba = np.concatenate([rgb, np.full((36, 36, 1), 7, np.uint8)], -1)
    assert torch.equal(seg.predict(rgba), seg.predict(rgb))
    deep = rgb.astype(np.uint16) * 257  # 16-bit with the same values
    assert torch.equal(seg.predict(deep), seg.predict(rgb))
    assert seg.predict(Image.fromarray(rgba)).shape == (36, 36)


def test_dict_output_and_bfloat16(model: TinySeg) -> None:
    class DictOut(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.inner(x)}

    img = _image(34, 34, seed=11)
    want = Segmenter(model, device="cpu").predict(img)
    ref = FullResOnly().eval()
    ref.load_state_dict(model.state_dict())
    assert torch.equal(Segmenter(DictOut(ref), device="cpu").predict(img), want)
    bf = Segmenter(FullResOnly().eval(), device="cpu", dtype="bf16")
    assert bf.predict(img).shape == (34, 34)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((40, 40, 3), np.int32), "dtype"),
        (torch.zeros(2, 3, 40, 40), "predict_batch"),
        (torch.zeros(3, 40, 40, dtype=torch.int64), "dtype"),
        ([1, 2, 3], "image must be"),
    ],
)
def test_bad_images_raise_clear_errors(model: TinySeg, bad, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Segmenter(model, device="cpu").predict(bad)


def test_bad_arguments_raise_clear_errors(model: TinySeg) -> None:
    with pytest.raises(ValueError, match="scales"):
        Segmenter(model, scales=(), device="cpu")
    with pytest.raises(ValueError, match="scales"):
        Segmenter(model, scales=(1.0, -0.5), device="cpu")
    with pytest.raises(ValueError, match="std"):
        Segmenter(model, std=(0.2, 0.0, 0.2), device="cpu")
    with pytest.raises(ValueError, match="window"):
        Segmenter(model, window=16, device="cpu")
    with pytest.raises(ValueError, match="dtype"):
        Segmenter(model, dtype=torch.int8, device="cpu")
    with pytest.raises(TypeError, match="nn.Module"):
        Segmenter(lambda x: x)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            Segmenter(model, device="cuda")


def test_tiles_cover_the_image_flush_with_the_border() -> None:
    from deeplab_fast.inference.sliding import tile_starts, tiles

    assert tile_starts(70, 32, 20) == [0, 20, 38]
    assert tile_starts(32, 32, 20) == [0] and tile_starts(10, 32, 20) == [0]
    boxes = tiles((10, 100), (32, 48), (20, 30))
    assert boxes == [(0, 10, 0, 48), (0, 10, 30, 78), (0, 10, 52, 100)]  # windows cut to a short image
    cover = torch.zeros(57, 83)
    for y0, y1, x0, x1 in tiles((57, 83), (32, 40), (13, 17)):
        assert (y1 - y0, x1 - x0) == (32, 40)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    with pytest.raises(ValueError, match="stride"):
        tile_starts(10, 4, 0)
