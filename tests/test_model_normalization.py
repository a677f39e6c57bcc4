"""Segmenter, `deeplab-fast predict` and `deeplab-fast eval` take the input normalisation from the model's config
(input_mean / input_std, e.g. TensorFlow's 0.5 / 0.5 of a from_timm model), and the Segmenter resizes its scaled
inputs with the model's align_corners."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from deeplab_fast import cli as top_cli
from deeplab_fast.inference import segmenter as segmenter_module
from deeplab_fast.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, model_normalization
from deeplab_fast.inference.segmenter import Segmenter
from deeplab_fast.models import deeplabv3plus
from deeplab_fast.models.weights import save_weights
from deeplab_fast.training.builders import normalization
from deeplab_fast.training.config import Config

TF = (0.5, 0.5, 0.5)


def _tiny(**options) -> nn.Module:
    return deeplabv3plus("mobilenet_v2", num_classes=3, width_mult=0.25, aspp_channels=8, **options).eval()


def test_segmenter_takes_mean_std_from_the_model_config():
    assert model_normalization(_tiny()) == (IMAGENET_MEAN, IMAGENET_STD)
    tf_model = _tiny(input_mean=TF, input_std=TF)
    seg = Segmenter(tf_model, optimize=False, device="cpu")
    assert (seg.mean, seg.std) == (TF, TF)
    # an explicit argument wins; a model without a config gets ImageNet's
    assert Segmenter(tf_model, mean=(0.1, 0.2, 0.3), optimize=False, device="cpu").mean == (0.1, 0.2, 0.3)
    assert Segmenter(nn.Conv2d(3, 3, 1), device="cpu").mean == IMAGENET_MEAN
    image = torch.rand(3, 40, 44, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tf_model((image[None] - 0.5) / 0.5).argmax(1)[0]
    torch.testing.assert_close(seg.predict(image), expected, rtol=0, atol=0)


class _Spy(nn.Module):
    """Records its inputs; logits are a fixed 1x1 projection."""

    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.proj = nn.Conv2d(3, 2, 1)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.proj(x)


def test_segmenter_scaled_inputs_follow_the_model_align_corners():
    image = torch.rand(3, 48, 52, generator=torch.Generator().manual_seed(1))
    x = (image[None] - 0.5) / 0.5
    for align_corners in (True, False):
        spy = _Spy(align_corners)
        Segmenter(spy, mean=TF, std=TF, scales=(0.75,), optimize=False, device="cpu").predict(image)
        expected = F.interpolate(x, size=(36, 39), mode="bilinear", align_corners=align_corners)
        torch.testing.assert_close(spy.inputs[0], expected, rtol=1e-6, atol=1e-6)


def test_predict_cli_uses_the_model_config_normalisation(tmp_path, monkeypatch):
    weights = tmp_path / "tf.safetensors"
    save_weights(_tiny(input_mean=TF, input_std=TF), weights)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    seen = []

    class Recording(Segmenter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            seen.append((self.mean, self.std))

    monkeypatch.setattr(segmenter_module, "Segmenter", Recording)
    argv = ["predict", str(tmp_path / "a.png"), "--weights", str(weights), "--out", str(tmp_path / "out")]
    assert top_cli.main([*argv, "--quiet", "--no-optimize", "--device", "cpu"]) == 0
    assert seen == [(TF, TF)]


def test_eval_uses_the_model_config_normalisation():
    config = Config()
    assert normalization(config)[0] == list(IMAGENET_MEAN)
    config.model.options = {"input_mean": list(TF), "input_std": list(TF)}
    assert normalization(config) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
