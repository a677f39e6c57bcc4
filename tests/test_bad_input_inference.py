"""Bad input to the Segmenter, sliding windows and evaluation: clear errors, never a changed caller's model, never
plausible labels from non-finite numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deeplab_fast.inference.segmenter import Segmenter
from deeplab_fast.inference.sliding import tile_starts
from deeplab_fast.training.evaluate import evaluate, predict_batch

K = 3


def _net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, K, 1)).to(dtype)


def _image(h: int = 36, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return all(after[k].device == v.device and after[k].dtype == v.dtype and torch.equal(after[k], v)
               for k, v in before.items())  # fmt: skip


def test_stride_larger_than_window_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"stride \(40, 40\).*window \(32, 32\)"):
        Segmenter(_net().eval(), window=32, stride=40, device="cpu")
    with pytest.raises(ValueError, match=r"stride \(20, 33\).*window \(32, 32\)"):
        Segmenter(_net().eval(), window=32, stride=(20, 33), device="cpu")
    with pytest.raises(ValueError, match="stride 40 must not exceed window 32"):
        tile_starts(100, 32, 40)
    seg = Segmenter(_net().eval(), window=32, stride=32, device="cpu")  # stride == window: windows touch
    probs = seg.predict_proba(_image(70, 90))
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(0), torch.ones(70, 90))


def test_meta_device_is_rejected_and_the_callers_model_keeps_its_weights() -> None:
    model = _net().eval()
    before = _state(model)
    with pytest.raises(ValueError, match="device='meta'.*cannot hold"):
        Segmenter(model, device="meta")
    with pytest.raises(ValueError, match="device='meta'.*cannot hold"):
        Segmenter(model, device=torch.device("meta"), optimize=False)
    assert _same_state(model, before)
    with pytest.raises(ValueError, match="meta device"):
        Segmenter(_net().to("meta"), device="cpu")  # a model whose weights were never loaded


@pytest.mark.parametrize("optimize", [False, True])
def test_the_callers_model_is_never_cast_or_switched_to_eval(optimize: bool) -> None:
    model = _net()  # training mode, as a freshly built model is
    before = _state(model)
    seg = Segmenter(model, device="cpu", dtype="bf16", optimize=optimize)
    labels = seg.predict(_image())
    assert labels.shape == (36, 40)
    assert _same_state(model, before)  # still float32, same values
    assert model.training and all(m.training for m in model.modules())
    assert seg.model is not model and next(seg.model.parameters()).dtype == torch.bfloat16


def test_the_callers_model_runs_in_eval_mode_and_gets_its_mode_back() -> None:
    model = _net()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    before = _state(model)
    seg = Segmenter(model, device="cpu", optimize=False)
    assert seg.model is model  # nothing to change: no copy
    proba = seg.predict_proba(_image())
    assert model.training  # its mode is its own
    assert _same_state(model, before)  # BatchNorm statistics were not updated by the forward
    x = torch.from_numpy(_image()).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(seg.mean).view(1, 3, 1, 1)) / torch.tensor(seg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = torch.softmax(model.eval()(x), 1)[0]
    torch.testing.assert_close(proba, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["flip", "align_corners", "optimize"])
def test_non_bool_flags_are_rejected(name: str) -> None:
    for bad in ("no", 1, None if name != "align_corners" else 0):
        with pytest.raises(TypeError, match=f"{name} must be True or False"):
            Segmenter(_net().eval(), device="cpu", **{name: bad})


def test_nan_image_raises_instead_of_giving_labels() -> None:
    seg = Segmenter(_net().eval(), device="cpu", scales=(0.75, 1.0), flip=True)
    img = torch.rand(3, 36, 40)
    img[1, 5, 7] = float("nan")
    img[0, 0, 0] = float("inf")
    for call in (seg.predict, seg.predict_proba, lambda x: seg.predict_batch([x])):
        with pytest.raises(ValueError, match="2 NaN or infinite values"):
            call(img)


def test_nan_image_through_an_optimized_deeplab_raises() -> None:
    # optimize()'s fused ReLU used to turn NaN into 0, so this returned plausible labels
    from deeplab_fast.models import deeplabv3plus

    torch.manual_seed(0)
    narrow = dict(width_mult=0.25, aspp_channels=16, low_level_channels=8, mobilenet_last_conv=False)
    seg = Segmenter(deeplabv3plus("mobilenet_v2", num_classes=K, **narrow).eval(), device="cpu")
    assert seg.optimized
    img = torch.rand(3, 33, 33)
    img[:, 10:20, 10:20] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        seg.predict(img)


def test_non_finite_logits_raise_in_predict_and_predict_proba() -> None:
    model = _net().eval()
    with torch.no_grad():
        model[3].bias[1] = float("nan")
    for kwargs in ({}, {"scales": (0.5, 1.0)}, {"window": 32, "stride": 20}):
        seg = Segmenter(model, device="cpu", **kwargs)
        for call in (seg.predict, seg.predict_proba):
            with pytest.raises(RuntimeError, match="NaN or infinite logits"):
                call(_image(40, 50))


@pytest.mark.parametrize("multiscale", [False, True])
def test_evaluate_refuses_a_model_with_non_finite_logits(multiscale: bool) -> None:
    model = _net().eval()
    with torch.no_grad():
        model[3].weight[0, 0] = float("inf")
    images, masks = torch.randn(2, 3, 36, 40), torch.randint(0, K, (2, 36, 40))
    kwargs = {"scales": (0.75, 1.0), "flip": True} if multiscale else {}
    with pytest.raises(RuntimeError, match="NaN or infinite logits"):
        evaluate(model, [(images, masks)], K, torch.device("cpu"), **kwargs)


def test_evaluate_multiscale_leaves_a_float64_model_float64() -> None:
    model = _net(torch.float64).eval()
    before = _state(model)
    images, masks = torch.randn(2, 3, 36, 40, dtype=torch.float64), torch.randint(0, K, (2, 36, 40))
    cm = evaluate(model, [(images, masks)], K, torch.device("cpu"), scales=(0.75, 1.0), flip=True)
    assert int(cm.matrix.sum()) == 2 * 36 * 40
    assert _same_state(model, before)
    with pytest.raises(ValueError, match="gives 3 classes but num_classes is 4"):
        predict_batch(model, images, 4)


def test_nan_images_raise_in_evaluate_and_overlay() -> None:
    from deeplab_fast.inference.palettes import overlay

    images = torch.randn(2, 3, 36, 40)
    images[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        predict_batch(_net().eval(), images, K)  # single scale: the model itself could hide the NaN
    img = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    img[2, 2, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        overlay(img, torch.zeros(8, 8, dtype=torch.int64))  # would have blended a black pixel in


def test_finite_values_whose_sum_overflows_are_finite() -> None:
    from deeplab_fast.inference.preprocess import all_finite

    assert all_finite(torch.full((8,), 6e4, dtype=torch.float16))  # the float16 sum overflows to inf
    assert all_finite(torch.tensor([3e38, 3e38]))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))  # sums to NaN
