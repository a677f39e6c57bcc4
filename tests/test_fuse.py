"""optimize(): fused leaves swapped in place, parity with the eager model, conv engines, structure, errors."""

import warnings

import pytest
import torch
from torch import nn

import deeplab_fast
from deeplab_fast.models import DeepLab, fuse, list_backbones
from deeplab_fast.models.backbones.mobilenetv2 import MobileNetV2
from deeplab_fast.models.backbones.resnet import ResNet
from deeplab_fast.models.backbones.xception import Xception
from deeplab_fast.models.fuse import CONV_ENGINES, FusedConv, FusedDWConv, FusedResizeConcat
from tests._model_helpers import randomize_batchnorm, rel_err, small_model

pytestmark = pytest.mark.usefixtures("one_thread")


# every backbone x output stride x decoder on/off, each conv engine, the fused ops' cpu and reference backends
@pytest.mark.parametrize("decoder", [True, False], ids=["v3plus", "v3"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("backbone", list_backbones())
def test_optimize_parity(backbone, output_stride, decoder):
    m = small_model(backbone, output_stride=output_stride, decoder=decoder, aux_head=True, output_dict=True).eval()
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        ref = m(x)
        runs = [("cpu", engine) for engine in CONV_ENGINES] + [("reference", "aten")]
        for backend, engine in runs:
            out = deeplab_fast.optimize(m, backend=backend, conv_engine=engine)(x)
            assert out.keys() == ref.keys()
            for k in ref:
                assert rel_err(ref[k], out[k]) < 1e-4, (backend, engine, k)


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


@pytest.mark.parametrize(
    "backbone,backbone_type", [("resnet50", ResNet), ("xception65", Xception), ("mobilenet_v2", MobileNetV2)]
)
def test_optimize_swaps_leaves_in_the_models_own_structure(backbone, backbone_type):
    m = small_model(backbone, aux_head=True).eval()
    f = deeplab_fast.optimize(m)
    # the same classes at the top: only leaves (and blocks a fusion spans) are swapped
    assert type(f) is DeepLab and type(f.backbone) is backbone_type
    assert type(f.decoder) is type(m.decoder) and type(f.aux) is type(m.aux)
    assert isinstance(f.decoder.merge, FusedResizeConcat) and isinstance(f.resize, FusedResizeConcat)
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in f.modules())
    n_dw = sum(1 for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.groups > 1)
    assert sum(1 for mod in f.modules() if isinstance(mod, FusedDWConv)) == n_dw
    assert not f.training and all(not p.requires_grad for p in f.parameters())
    assert f.config == m.config
    assert f.optimized == {"backend": "auto", "channels_last": True, "conv_engine": "auto", "dtype": None}
    assert m.optimized is None and not m.channels_last
    with torch.no_grad():
        low, _, _ = f.backbone(torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    assert low.is_contiguous(memory_format=torch.channels_last)


def test_optimized_state_dict_has_no_copies():
    # one 4-D weight per convolution of the eager model: no second (oneDNN) copy of each depthwise weight
    m = small_model("xception65").eval()
    sd = deeplab_fast.optimize(m).state_dict()
    n_conv = sum(1 for mod in m.modules() if isinstance(mod, nn.Conv2d))
    assert sum(1 for v in sd.values() if v.dim() == 4) == n_conv
    assert len({v.data_ptr() for v in sd.values()}) == len(sd)


def test_unknown_backbone_is_an_error_naming_it():
    class MyBackbone(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    m = small_model("mobilenet_v2").eval()
    m.backbone = MyBackbone(m.backbone)
    with pytest.raises(TypeError, match="does not know the backbone MyBackbone"):
        deeplab_fast.optimize(m)


def _engines(model: nn.Module) -> dict[str, str]:
    return {name: mod.engine for name, mod in model.named_modules() if isinstance(mod, FusedConv)}


def test_conv_engine_choice_per_convolution():
    # full-width ResNet-50 (no forward): "auto" sends 1x1 convs to oneDNN, wide 3x3 stride-1 convs to Winograd
    m = deeplab_fast.models.deeplabv3plus("resnet50", separable=False, aspp_channels=64).eval()
    engines = _engines(deeplab_fast.optimize(m, tune_malloc=False))
    assert engines["backbone.conv1"] == "aten"  # 7x7 stem
    assert engines["backbone.layer1.0.conv1"] == "onednn"  # 1x1
    assert engines["backbone.layer1.0.conv2"] == "winograd"  # 3x3, 64 channels, stride 1
    assert engines["backbone.layer2.0.conv2"] == "aten"  # 3x3 stride 2
    assert set(_engines(deeplab_fast.optimize(m, conv_engine="aten", tune_malloc=False)).values()) == {"aten"}
    assert set(_engines(deeplab_fast.optimize(m, conv_engine="onednn", tune_malloc=False)).values()) == {"onednn"}
    narrow = _engines(deeplab_fast.optimize(small_model("resnet50", separable=False).eval(), conv_engine="winograd"))
    assert narrow["backbone.layer1.0.conv2"] == "winograd" and narrow["backbone.layer2.0.conv2"] == "aten"


def test_conv_engine_runs_what_it_says_and_reads_no_environment(monkeypatch):
    # the environment variables of earlier versions change nothing
    monkeypatch.setenv("DEEPLAB_FAST_WINOGRAD", "0")
    monkeypatch.setenv("DEEPLAB_FAST_ONEDNN_FUSED", "0")
    calls = []
    real = fuse.winograd_conv3x3
    monkeypatch.setattr(fuse, "winograd_conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = small_model("resnet50", separable=False).eval()
    x = torch.randn(1, 3, 64, 64)
    winograd_calls = {}
    with torch.no_grad():
        ref = m(x)
        for engine in CONV_ENGINES:
            calls.clear()
            f = deeplab_fast.optimize(m, conv_engine=engine)
            assert rel_err(ref, f(x)) < 1e-4, engine
            packed = [mod for mod in f.modules() if isinstance(mod, FusedConv) and mod._packed is not None]
            winograd_calls[engine] = len(calls)
            assert bool(packed) == (engine in ("auto", "onednn", "winograd")), engine
        # this quarter-width ResNet has 64- and 128-channel 3x3 convs in layer3/layer4 (Winograd under "auto")
        assert winograd_calls["winograd"] > winograd_calls["auto"] > 0
        assert winograd_calls["onednn"] == winograd_calls["aten"] == 0
        calls.clear()
        deeplab_fast.optimize(m, conv_engine="winograd", backend="cpu")(x)
        assert calls
        calls.clear()
        with torch.enable_grad():  # the fast engines are inference only
            deeplab_fast.optimize(m, conv_engine="winograd")(x)
        assert not calls


def test_reoptimizing_reconfigures_the_copy():
    m = small_model("resnet50", separable=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        used = deeplab_fast.optimize(m)
        used(x)  # a used copy holds packed oneDNN weights, which cannot be deep-copied
        assert rel_err(m(x), deeplab_fast.optimize(used)(x)) < 1e-4
    once = deeplab_fast.optimize(m, conv_engine="aten")
    twice = deeplab_fast.optimize(once, conv_engine="winograd", backend="cpu", channels_last=False)
    assert set(_engines(once).values()) == {"aten"} and "winograd" in set(_engines(twice).values())
    assert twice.optimized == {"backend": "cpu", "channels_last": False, "conv_engine": "winograd", "dtype": None}
    assert all(mod.backend == "cpu" for mod in twice.modules() if isinstance(mod, (FusedConv, FusedDWConv)))
    with torch.no_grad():
        assert rel_err(m(x), twice(x)) < 1e-4


@pytest.mark.parametrize("backbone", ["resnet50", "xception65", "mobilenet_v2"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_gives_nonfinite_logits(backbone, bad):
    # oneDNN's fused ReLU turns NaN into 0. The eager model's logits of such an image are non-finite (except where
    # ReLU6 clamps an inf); the optimized copy's are NaN for the whole image, never finite where eager's are not.
    m = small_model(backbone, aux_head=True, output_dict=True).eval()
    x = torch.randn(2, 3, 64, 64)
    x[0, 1, 20, 30] = bad
    with torch.no_grad():
        ref = m(x)
        for backend, engine in (("cpu", "auto"), ("cpu", "onednn"), ("cpu", "winograd"), ("reference", "aten")):
            out = deeplab_fast.optimize(m, backend=backend, conv_engine=engine)(x)
            for k in ref:
                assert bad == float("inf") or not torch.isfinite(ref[k][0]).any()
                assert not torch.isfinite(out[k][0]).any(), (backend, engine, k)
                assert rel_err(ref[k][1], out[k][1]) < 1e-4  # the finite image is untouched
            low = deeplab_fast.optimize(m, backend=backend, conv_engine=engine).forward_lowres(x)
            assert not torch.isfinite(low[0]).any() and torch.isfinite(low[1]).all()


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
    m = small_model("mobilenet_v2").eval()
    with pytest.raises(TypeError, match="nn.Module"):
        deeplab_fast.optimize("resnet50")
    with pytest.raises(ValueError, match="backend must be one of"):
        deeplab_fast.optimize(m, backend="gpu")
    with pytest.raises(ValueError, match="conv_engine must be one of 'auto', 'onednn', 'winograd', 'aten'"):
        deeplab_fast.optimize(m, conv_engine="mkldnn")
    with pytest.raises(ValueError, match="conv_engine='winograd' runs on the CPU"):
        deeplab_fast.optimize(m, conv_engine="winograd", backend="reference")
    with pytest.raises(TypeError, match="tune_malloc must be True or False"):
        deeplab_fast.optimize(m, tune_malloc="no")
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        deeplab_fast.optimize(m, channels_last=1)
    f = deeplab_fast.optimize(m)
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


def test_onednn_packing_follows_the_input_shape():
    """A 1x1 FusedConv on oneDNN packs its weight for the input shape and packs again when the shape changes."""
    conv = torch.nn.Conv2d(8, 6, 1)
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone()
    f = FusedConv(w, b, stride=1, padding=0, dilation=1, act="relu", engine="onednn")
    with torch.no_grad():
        for hw in (9, 13, 9):
            x = torch.randn(2, 8, hw, hw).contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(f(x), torch.relu(conv(x)), rtol=1e-5, atol=1e-5)
            assert f._packed is not None and f._packed[1][2] == tuple(x.shape)
