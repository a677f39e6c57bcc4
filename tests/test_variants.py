"""Paper variants: ResNet-beta, Xception-41, Xception multi-grid, bn_eps in MobileNetV2, set_output_stride and
the exact atrous rule, and the fused path (optimize parity, count_macs) of each new variant."""

from __future__ import annotations

import pytest
import torch

import deeplab_fast
from deeplab_fast.models import deeplabv3plus
from deeplab_fast.models.backbones.resnet import Subsample
from tests._model_helpers import rel_err, small_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(size: int = 65, n: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_resnet_beta_layout():
    with torch.device("meta"):
        net = deeplabv3plus("resnet101_beta").backbone
    assert [m.conv.out_channels for m in net.stem] == [64, 64, 128]
    assert [m.conv.stride[0] for m in net.stem] == [2, 1, 1]
    assert not hasattr(net, "conv1")
    # the stride sits in the last unit of blocks 1-3 (TensorFlow-slim), whose shortcut is a subsample
    for name, n in (("layer1", 3), ("layer2", 4), ("layer3", 23)):
        layer = getattr(net, name)
        assert len(layer) == n and [u.conv2.stride[0] for u in layer[:-1]] == [1] * (n - 1)
        assert isinstance(layer[-1].downsample, Subsample) and layer[0].downsample[0].stride == (1, 1)
    assert net.layer1[-1].conv2.stride == (2, 2) and net.layer2[-1].conv2.stride == (2, 2)
    # output stride 16: block3's last unit keeps rate 1 (stack_blocks_dense), block4 runs at 2 x (1, 2, 4)
    assert net.layer3[-1].conv2.stride == (1, 1) and net.layer3[-1].downsample.stride == 1
    assert [u.conv2.dilation[0] for u in net.layer4] == [2, 4, 8]
    assert net.layer1[1].tap and sum(u.tap for u in net.modules() if hasattr(u, "tap")) == 1


def test_resnet_beta_decoder_tap_is_the_pre_addition_conv3():
    model = small_model("resnet50_beta").eval()
    seen = {}
    model.backbone.layer1[1].bn3.register_forward_hook(lambda m, a, o: seen.__setitem__("bn3", o.clone()))
    with torch.no_grad():
        low, mid, out = model.backbone(_x())
    torch.testing.assert_close(low, seen["bn3"], rtol=0, atol=0)
    assert low.shape[-1] == 17 and mid.shape[-1] == 5 and out.shape[-1] == 5
    assert (low < 0).any()  # before the ReLU


def test_xception41_layout_and_xception_multi_grid():
    with torch.device("meta"):
        x41 = deeplabv3plus("xception41").backbone
        x65 = deeplabv3plus("xception65", multi_grid=(1, 2, 4)).backbone
    assert (len(x41.entry_flow), len(x41.middle_flow), len(x41.exit_flow)) == (3, 8, 2)
    last = x65.exit_flow[-1]
    assert [s.depthwise.dilation[0] for s in (last.sep1, last.sep2, last.sep3)] == [2, 4, 8]
    assert x65.exit_flow[0].sep3.depthwise.dilation[0] == 1
    with pytest.raises(ValueError, match="multi_grid must have 3 entries for xception65"):
        deeplabv3plus("xception65", multi_grid=(1, 2), width_mult=0.25)
    with pytest.raises(ValueError, match="mobilenet_v2 has no multi-grid"):
        deeplabv3plus("mobilenet_v2", multi_grid=(1, 2, 4), width_mult=0.25)


def test_bn_eps_reaches_mobilenet_v2():
    def eps(model):
        return {m.eps for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    assert eps(deeplabv3plus("mobilenet_v2", width_mult=0.25)) == {1e-5}
    model = deeplabv3plus("mobilenet_v2", width_mult=0.25, bn_eps=1e-3, head_bn_eps=1e-5)
    assert eps(model) == {1e-3} and model.aspp.project.bn.eps == 1e-5


@pytest.mark.parametrize(
    ("backbone", "options"),
    [
        ("resnet50", {"dilate_first_block": False}),
        ("resnet50_beta", {}),
        ("xception65", {"multi_grid": (1, 2, 4)}),
        ("mobilenet_v2", {"dilate_first_block": False}),
    ],
)
def test_exact_atrous_rule(backbone, options):
    # OS8 encoder output subsampled by 2 equals the OS16 one (odd input: strided and dense grids align)
    model = small_model(backbone, **options).eval()
    x = _x(129)
    with torch.no_grad():
        os16 = model.backbone(x)[2]
        model.set_output_stride(8)
        os8 = model.backbone(x)[2]
    assert os8.shape[-1] == 17 and os16.shape[-1] == 9
    assert rel_err(os16, os8[..., ::2, ::2]) < 1e-5


def test_default_dilation_rule_is_not_exact():
    # smp's rule (the default for resnet50/101 and MobileNetV2) dilates the converted unit itself
    model = small_model("resnet50").eval()
    x = _x(129)
    with torch.no_grad():
        os16 = model.backbone(x)[2]
        model.set_output_stride(8)
        assert rel_err(os16, model.backbone(x)[2][..., ::2, ::2]) > 1e-3


def test_set_output_stride_equals_a_model_built_at_that_stride():
    model = small_model("resnet101_beta", aspp_rates=(4, 8, 12), output_stride=8).eval()
    model.set_output_stride(16)
    assert model.config["output_stride"] == 16 and model.config["aspp_rates"] == [2, 4, 6]
    assert model.aspp.rates == (2, 4, 6) and [b.depthwise.dilation[0] for b in model.aspp.branches] == [2, 4, 6]
    fresh = deeplabv3plus(**model.config).eval()
    fresh.load_state_dict(model.state_dict())
    x = _x(97)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not scale to ints"):
        small_model("resnet50", aspp_rates=(3, 6, 9)).set_output_stride(32)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        model.set_output_stride(4)
    with pytest.raises(RuntimeError, match="before deeplab_fast.optimize"):
        deeplab_fast.optimize(model, tune_malloc=False).set_output_stride(8)


@pytest.mark.parametrize(
    ("backbone", "options"),
    [
        ("resnet50_beta", {}),
        ("resnet101_beta", {"output_stride": 8, "decoder": False, "aux_head": True, "output_dict": True}),
        ("xception41", {}),
        ("xception65", {"multi_grid": (1, 2, 4), "output_stride": 8}),
        ("mobilenet_v2", {"dilate_first_block": False, "bn_eps": 1e-3}),
    ],
)
def test_optimize_parity_and_macs_of_new_variants(backbone, options):
    model = small_model(backbone, **options).eval()
    fast = deeplab_fast.optimize(model, tune_malloc=False)
    x = _x(65, n=2)
    with torch.no_grad():
        ref, got = model(x), fast(x)
    if isinstance(ref, dict):
        assert set(ref) == set(got) == {"out", "aux"}
        for key in ref:
            assert rel_err(ref[key], got[key]) < 1e-4
    else:
        assert rel_err(ref, got) < 1e-4
    macs = deeplab_fast.count_macs(model, (1, 3, 65, 65))
    # the optimized ASPP folds the image-pool branch's share of the projection into a per-image bias
    c, side = model.aspp.project.conv.out_channels, -(-65 // model.config["output_stride"])
    assert macs > 0 and deeplab_fast.count_macs(fast, (1, 3, 65, 65)) == macs - c * c * side * side
