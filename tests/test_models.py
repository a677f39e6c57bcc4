import pytest
import torch

import deeplab_fast
from deeplab_fast.models import deeplabv3plus, list_backbones
from tests._model_helpers import small_model

BACKBONES = ["resnet50", "resnet101", "xception65", "xception71", "mobilenet_v2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_list_backbones():
    assert set(BACKBONES) <= set(list_backbones())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("decoder", [True, False])
def test_shapes(backbone, output_stride, decoder):
    m = small_model(backbone, output_stride=output_stride, decoder=decoder).eval()
    with torch.no_grad():
        for h, w in ((65, 65), (64, 80)):
            x = torch.randn(1, 3, h, w)
            low, _, high = m.backbone(x)
            assert low.shape[-2:] == ((h + 3) // 4, (w + 3) // 4)
            assert high.shape[-2:] == (-(-h // output_stride), -(-w // output_stride))
            y = m(x)
            assert y.shape == (1, 5, h, w)
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("backbone", ["xception65", "resnet50"])
def test_513_gives_33(backbone):
    m = small_model(backbone, width_mult=0.125).eval()
    with torch.no_grad():
        low, _, high = m.backbone(torch.randn(1, 3, 513, 513))
    assert high.shape[-2:] == (33, 33)
    assert low.shape[-2:] == (129, 129)


@pytest.mark.parametrize("backbone", ["xception65", "mobilenet_v2", "resnet50"])
def test_train_backward(backbone):
    m = small_model(backbone, separable=backbone != "resnet50").train()
    x = torch.randn(2, 3, 64, 80, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 5, 64, 80)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
    bn = next(mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    assert bn.num_batches_tracked.item() == 1


def test_xception65_full_size_matches_paper():
    m = deeplabv3plus("xception65")
    params = sum(p.numel() for p in m.parameters())
    assert 40.5e6 < params < 41.5e6
    # the paper reports 54.17B multiply-adds for Xception-65 + SC decoder at output stride 16, 513x513
    assert abs(deeplab_fast.count_macs(m) - 54.17e9) / 54.17e9 < 0.01
    # TensorFlow's decoder end point: 256 channels at stride 4
    assert m.backbone.low_level_channels == 256 and m.backbone.out_channels == 2048


def test_resnet_loads_torchvision_state_dict():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet50(weights=None)
    m = deeplabv3plus("resnet50", separable=False)
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    m.backbone.load_state_dict(sd, strict=True)


def test_multi_grid_and_options():
    m = deeplabv3plus(
        "resnet50",
        output_stride=8,
        multi_grid=(1, 2, 4),
        width_mult=0.25,
        aspp_channels=16,
        aspp_rates=(2, 4, 6),
        decoder_convs=1,
        post_aspp_conv="separable",
        aspp_pool_position="last",
        separable_inner_bn=False,
    )
    assert [b.conv2.dilation[0] for b in m.backbone.layer4] == [4, 8, 16]
    assert m.aspp.rates == (2, 4, 6)
    assert len(m.decoder.convs) == 1 and m.post_aspp is not None
    assert m.aspp.branches[0].dw_bn is None
    default = deeplabv3plus("resnet50", output_stride=8, width_mult=0.25, aspp_channels=16)
    assert default.aspp.rates == (12, 24, 36)
    assert deeplabv3plus("mobilenet_v2", output_stride=32, aspp_channels=16).aspp.rates == (3, 6, 9)


def test_torchvision_dilation_rule():
    m = deeplabv3plus("resnet50", output_stride=8, dilate_first_block=False, width_mult=0.25, aspp_channels=16)
    assert [b.conv2.dilation[0] for b in m.backbone.layer3][:2] == [1, 2]
    assert [b.conv2.dilation[0] for b in m.backbone.layer4] == [2, 4, 4]


def test_count_macs_simple():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8))
    assert deeplab_fast.count_macs(net, (2, 3, 10, 10)) == 2 * 100 * 8 * (27 + 9)
    with pytest.raises(ValueError, match="input_size"):
        deeplab_fast.count_macs(net, (3, 10, 10))


def test_factory_errors():
    with pytest.raises(ValueError, match="known backbones: resnet50, resnet101, xception65"):
        deeplabv3plus("vgg16")
    with pytest.raises(ValueError, match="output_stride must be one of"):
        deeplabv3plus("resnet50", output_stride=4)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        deeplabv3plus("resnet50", num_classes=0)
    with pytest.raises(TypeError, match="unknown option"):
        deeplabv3plus("resnet50", aspp_rate=(1, 2, 3))
    with pytest.raises(ValueError, match="post_aspp_conv"):
        deeplabv3plus("resnet50", post_aspp_conv="yes")


def test_input_errors():
    m = small_model("mobilenet_v2").eval()
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="3 channels"):
        m(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=">= 32"):
        m(torch.randn(1, 3, 31, 64))
    with pytest.raises(TypeError, match="floating point"):
        m(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m([[1.0]])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_config_records_every_builder_argument_and_rebuilds(backbone):
    import json

    from deeplab_fast.models import OPTIONS

    m = deeplabv3plus(backbone, num_classes=4, output_stride=8, width_mult=0.25, aspp_rates=(2, 4, 6), aux_head=True)
    config = m.config
    assert json.loads(json.dumps(config)) == config  # JSON types only (tuples stored as lists)
    assert set(config) == {"backbone", "num_classes", "output_stride", "separable", "decoder", "align_corners"} | set(
        OPTIONS
    )
    assert config["backbone"] == backbone and config["num_classes"] == 4 and config["aspp_rates"] == [2, 4, 6]
    rebuilt = deeplabv3plus(**json.loads(json.dumps(config)))
    assert rebuilt.config == config
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert rebuilt.aspp.rates == (2, 4, 6) and rebuilt.aux is not None
    assert deeplab_fast.optimize(m.eval(), tune_malloc=False).config == config


def test_randomize_batchnorm_in_convert_is_deprecated():
    from deeplab_fast.models import convert
    from tests._model_helpers import randomize_batchnorm

    with pytest.warns(DeprecationWarning, match="deeplab_fast.testing.randomize_batchnorm"):
        old = convert.randomize_batchnorm(deeplabv3plus("mobilenet_v2", width_mult=0.25), seed=3)
    new = randomize_batchnorm(deeplabv3plus("mobilenet_v2", width_mult=0.25), seed=3)
    for (k, a), b in zip(old.state_dict().items(), new.state_dict().values(), strict=True):
        if "bn" in k or k.endswith(("running_mean", "running_var")):
            assert torch.equal(a, b), k
