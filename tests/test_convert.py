import pytest
import torch

import deeplab_fast
from tests._model_helpers import randomize_batchnorm, rel_err

torchvision = pytest.importorskip("torchvision")
smp = pytest.importorskip("segmentation_models_pytorch")


pytestmark = pytest.mark.usefixtures("one_thread")


def _check(src, x, converted):
    with torch.no_grad():
        ref = src(x)
        got = converted(x)
        fused = deeplab_fast.optimize(converted)(x)
    if isinstance(ref, dict):
        assert set(got) == set(ref) == set(fused)
        for k in ref:
            assert rel_err(ref[k], got[k]) < 1e-4, k
            assert rel_err(ref[k], fused[k]) < 1e-4, k
    else:
        assert isinstance(got, torch.Tensor)
        assert rel_err(ref, got) < 1e-4
        assert rel_err(ref, fused) < 1e-4


@pytest.mark.parametrize("name,aux", [("deeplabv3_resnet50", True), ("deeplabv3_resnet101", False)])
def test_from_torchvision(name, aux):
    fn = getattr(torchvision.models.segmentation, name)
    src = randomize_batchnorm(fn(weights=None, weights_backbone=None, aux_loss=aux, num_classes=7)).eval()
    m = deeplab_fast.from_torchvision(src).eval()
    assert m.config["output_stride"] == 8 and m.aspp.rates == (12, 24, 36)
    _check(src, torch.randn(1, 3, 65, 65), m)


@pytest.mark.parametrize(
    "cls,encoder,os_,separable",
    [
        ("DeepLabV3Plus", "resnet50", 16, True),
        ("DeepLabV3Plus", "mobilenet_v2", 8, False),
        ("DeepLabV3", "resnet50", 16, True),
        ("DeepLabV3", "mobilenet_v2", 8, False),
    ],
)
def test_from_smp(cls, encoder, os_, separable):
    src = getattr(smp, cls)(
        encoder,
        encoder_weights=None,
        classes=4,
        encoder_output_stride=os_,
        decoder_aspp_separable=separable,
        decoder_atrous_rates=(2, 3, 5),
    )
    src = randomize_batchnorm(src).eval()
    m = deeplab_fast.from_smp(src).eval()
    assert m.aspp.rates == (2, 3, 5) and m.align_corners
    _check(src, torch.randn(1, 3, 64, 80), m)


def test_converters_reject_unsupported():
    fcn = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None)
    with pytest.raises(TypeError, match="deeplabv3_resnet50"):
        deeplab_fast.from_torchvision(fcn)
    with pytest.raises(TypeError, match="deeplabv3_resnet50"):
        deeplab_fast.from_torchvision(torch.nn.Conv2d(3, 3, 1))
    unet = smp.Unet("resnet18", encoder_weights=None)
    with pytest.raises(TypeError, match="DeepLabV3Plus"):
        deeplab_fast.from_smp(unet)
    r18 = smp.DeepLabV3Plus("resnet18", encoder_weights=None)
    with pytest.raises(TypeError, match="ResNet-50"):
        deeplab_fast.from_smp(r18)
    act = smp.DeepLabV3Plus("mobilenet_v2", encoder_weights=None, activation="sigmoid")
    with pytest.raises(TypeError, match="activation"):
        deeplab_fast.from_smp(act)
