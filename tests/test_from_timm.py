"""from_timm: timm's aligned Xception (the TensorFlow-ported ImageNet backbones of the DeepLabV3+ paper) in our
backbone. timm is a test dependency (pinned in pyproject.toml's `test` extra); the models are built with
pretrained=False (no network) and given random weights and BatchNorm statistics."""

from __future__ import annotations

import pytest
import timm
import torch

import deeplab_fast
from deeplab_fast.models.timm_import import map_timm_xception
from deeplab_fast.testing import randomize_batchnorm


def _timm(name: str, output_stride: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(timm.create_model(name, pretrained=False, output_stride=output_stride)).eval()


def _timm_features(
    model: torch.nn.Module, x: torch.Tensor, mid_block: int, tap_block: int = 1
) -> tuple[torch.Tensor, ...]:
    """(stride-4 tap before its ReLU, middle-flow output, last block's output) of a timm aligned Xception."""
    got = {}
    # timm's act3 ReLU works in place on conv2's output: keep a copy (TensorFlow's decoder end point is pre-ReLU)
    hooks = [
        model.blocks[tap_block].stack.conv2.register_forward_hook(lambda m, a, o: got.__setitem__("low", o.clone())),
        model.blocks[mid_block].register_forward_hook(lambda m, a, o: got.__setitem__("mid", o.clone())),
    ]
    try:
        out = model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return got["low"], got["mid"], out


@pytest.fixture(scope="module")
def xception65_pair():
    timm_model = _timm("xception65.tf_in1k")
    return timm_model, deeplab_fast.from_timm(timm_model, num_classes=3).eval()


@pytest.mark.parametrize("size", [513, 321])
def test_xception65_backbone_equals_timm(xception65_pair, size):
    timm_model, model = xception65_pair
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = _timm_features(timm_model, x, mid_block=18)
    for name, a, b in zip(("low", "mid", "out"), ours, theirs, strict=True):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    # the output stride and the stride-4 tap
    assert ours[2].shape[-1] == (size + 15) // 16 and ours[0].shape[-1] == (size + 3) // 4


def test_model_config_carries_tensorflow_normalisation(xception65_pair):
    _, model = xception65_pair
    assert model.config["backbone"] == "xception65"
    assert model.config["input_mean"] == [0.5, 0.5, 0.5] and model.config["input_std"] == [0.5, 0.5, 0.5]
    assert model.classifier.out_channels == 3


@pytest.mark.parametrize(("name", "tap_block", "mid_block"), [("xception41", 1, 10), ("xception71", 2, 20)])
def test_xception41_71_from_state_dict(name, tap_block, mid_block):
    # a state dict without num_batches_tracked (as converted checkpoints often are), loaded at output stride 8 and
    # switched to timm's 16. (timm's own xception71 built at output stride 8 drops block 4's shortcut conv, whose
    # stride then becomes 1 at equal widths; TensorFlow's and ours keep it.)
    timm_model = _timm(f"{name}.tf_in1k", output_stride=16)
    sd = {k: v for k, v in timm_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = deeplab_fast.from_timm(sd, output_stride=8, input_mean=None, input_std=None).eval()
    assert model.config["backbone"] == name and model.config["input_mean"] is None
    model.set_output_stride(16)
    x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = _timm_features(timm_model, x, mid_block, tap_block)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_timm_key_layout_and_errors():
    sd = _timm("xception41.tf_in1k").state_dict()
    name, mapped = map_timm_xception(sd)
    assert name == "xception41"
    # timm lists a block's shortcut before its stack; the flows split 3 / 8 / 2
    assert "entry_flow.0.shortcut.conv.weight" in mapped and "middle_flow.7.sep3.pw_bn.running_var" in mapped
    assert "exit_flow.1.sep1.depthwise.weight" in mapped and not any(k.startswith("head") for k in mapped)
    assert map_timm_xception({f"_orig_mod.{k}": v for k, v in sd.items()})[1].keys() == mapped.keys()
    with pytest.raises(ValueError, match=r"1 key\(s\) have no place .*blocks\.0\.norm\.weight"):
        map_timm_xception({**sd, "blocks.0.norm.weight": torch.ones(3)})
    with pytest.raises(ValueError, match="13, 21 or 23 blocks"):
        map_timm_xception({k: v for k, v in sd.items() if not k.startswith("blocks.11.")})
    with pytest.raises(ValueError, match="shape mismatches"):
        deeplab_fast.from_timm(sd, width_mult=0.5)
    with pytest.raises(TypeError, match="timm model"):
        deeplab_fast.from_timm([1, 2])
