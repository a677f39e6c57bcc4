import warnings

import pytest
import torch
from torch import nn

import deeplab_fast
from deeplab_fast.models.fuse import FusedDWConv
from tests._model_helpers import randomize_batchnorm, rel_err, small_model

BACKBONES = ["resnet50", "resnet101", "xception65", "xception71", "mobilenet_v2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# every backbone at output stride 16, and every output stride on one backbone of each family
CASES = [(b, 16) for b in BACKBONES] + [(b, s) for b in ("resnet50", "xception65", "mobilenet_v2") for s in (8, 32)]


@pytest.mark.parametrize("backbone,output_stride", CASES)
def test_optimize_parity(backbone, output_stride):
    m = small_model(backbone, output_stride=output_stride, aux_head=True, output_dict=True).eval()
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        ref = m(x)
        for backend in ("cpu", "reference"):
            out = deeplab_fast.optimize(m, backend=backend)(x)
            assert out.keys() == ref.keys()
            for k in ref:
                assert rel_err(ref[k], out[k]) < 1e-4, (backend, k)


@pytest.mark.parametrize("separable", [True, False])
def test_optimize_parity_variants(separable):
    m = small_model(
        "resnet50",
        separable=separable,
        separable_inner_bn=False,
        aspp_pool_position="last",
        post_aspp_conv="separable" if separable else "dense",
        decoder_convs=1,
        align_corners=True,
    ).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert rel_err(m(x), deeplab_fast.optimize(m)(x)) < 1e-4


def test_optimize_structure():
    m = small_model("xception65").eval()
    f = deeplab_fast.optimize(m)
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in f.modules())
    n_dw = sum(1 for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.groups > 1)
    assert sum(1 for mod in f.modules() if isinstance(mod, FusedDWConv)) == n_dw
    assert not f.training and all(not p.requires_grad for p in f.parameters())
    with torch.no_grad():
        low, _, _ = f.backbone(torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    assert low.is_contiguous(memory_format=torch.channels_last)


def test_optimize_training_mode_warns_and_leaves_model_alone():
    m = small_model("mobilenet_v2").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.warns(UserWarning, match="eval"):
        f = deeplab_fast.optimize(m)
    assert m.training and not f.training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deeplab_fast.optimize(m.eval())


def test_optimize_generic_model_folds_sequential_conv_bn():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    net = randomize_batchnorm(net).eval()
    f = deeplab_fast.optimize(net)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in f.modules())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert rel_err(net(x), f(x)) < 1e-5
    assert isinstance(net[1], nn.BatchNorm2d)


def test_optimize_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        deeplab_fast.optimize("resnet50")
    with pytest.raises(ValueError, match="backend must be one of"):
        deeplab_fast.optimize(small_model("mobilenet_v2").eval(), backend="gpu")
    f = deeplab_fast.optimize(small_model("mobilenet_v2").eval())
    with pytest.raises(ValueError, match="3 channels"):
        f(torch.randn(1, 1, 64, 64))


def test_optimize_compiles():
    m = small_model("mobilenet_v2", width_mult=0.25, output_stride=32).eval()
    f = deeplab_fast.optimize(m)
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(f)
    with torch.no_grad():
        assert rel_err(m(x), compiled(x)) < 1e-4


def test_forward_lowres():
    m = small_model("xception65").eval()
    f = deeplab_fast.optimize(m)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        low = m.forward_lowres(x)
        assert low.shape == (1, 5, 16, 20)
        assert rel_err(low, f.forward_lowres(x)) < 1e-4


@pytest.mark.parametrize("mode", ["1", "0", ""], ids=["every-conv", "no-conv", "default-1x1"])
def test_optimize_onednn_fused_path(monkeypatch, mode):
    # oneDNN's fused conv + add + activation with pre-packed weights (all convs, none, 1x1 only) matches
    monkeypatch.setenv("DEEPLAB_FAST_ONEDNN_FUSED", mode)
    for backbone in ("resnet50", "xception65", "mobilenet_v2"):
        m = small_model(backbone).eval()
        x = torch.randn(1, 3, 64, 80)
        with torch.no_grad():
            assert rel_err(m(x), deeplab_fast.optimize(m)(x)) < 1e-4, backbone


def test_onednn_packing_follows_the_input_shape():
    """A 1x1 FusedConv packs its weight for the input shape and packs again when the shape changes."""
    from deeplab_fast.models.fuse import FusedConv, _onednn_ok

    if not _onednn_ok(1):
        pytest.skip("this torch build has no oneDNN fused convolution")
    conv = torch.nn.Conv2d(8, 6, 1)
    f = FusedConv(conv.weight.detach().clone(), conv.bias.detach().clone(), stride=1, padding=0, dilation=1, act="relu")
    with torch.no_grad():
        for hw in (9, 13, 9):
            x = torch.randn(2, 8, hw, hw).contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(f(x), torch.relu(conv(x)), rtol=1e-5, atol=1e-5)
            assert f._packed is not None and f._packed[1][2] == tuple(x.shape)
