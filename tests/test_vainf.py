"""load_model(path, source="vainf"): checkpoints of VainF/DeepLabV3Plus-Pytorch by key mapping.

VainF is not on PyPI. The reference modules below rebuild its key layout and forward as read from its public
repository (github.com/VainF/DeepLabV3Plus-Pytorch): network/modeling.py (which layers each model returns; ASPP
rates; MobileNetV2 split into low_level_features = features[:4] and high_level_features = features[4:-1]),
network/_deeplab.py (DeepLabHeadV3Plus, DeepLabHead, ASPP, ASPPConv, ASPPPooling, AtrousSeparableConvolution,
convert_to_separable_conv), network/backbone/resnet.py (torchvision's ResNet), network/backbone/mobilenetv2.py
(unpadded stem conv; each unit pads its input with fixed_padding before the expansion), network/utils.py
(IntermediateLayerGetter: children up to the last returned layer) and main.py (save_ckpt: {"model_state": ...,
"best_score": a numpy float, ...}). Key layout of the V3+ head:

    classifier.project.{0: conv 1x1 48, 1: BN}
    classifier.aspp.convs.0.{0: conv 1x1, 1: BN}            classifier.aspp.convs.{1,2,3}.{0: conv 3x3, 1: BN}
    classifier.aspp.convs.4.{1: conv 1x1, 2: BN} (pool)     classifier.aspp.project.{0: conv 1x1, 1: BN}
    classifier.classifier.{0: conv 3x3 on cat[low 48, ASPP 256], 1: BN, 3: conv 1x1 with bias}

and of the V3 head: classifier.classifier.{0: ASPP (as above), 1: conv 3x3, 2: BN, 4: conv 1x1 with bias}.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import deeplab_fast
from deeplab_fast.models.vainf import map_vainf_state_dict, read_vainf_checkpoint
from deeplab_fast.testing import randomize_batchnorm
from tests._model_helpers import rel_err

pytestmark = pytest.mark.usefixtures("one_thread")


def _cbr(cin: int, cout: int, k: int, dilation: int = 1, separable: bool = False) -> list[nn.Module]:
    if separable and k > 1:  # AtrousSeparableConvolution: body = (depthwise, pointwise), no BN between
        conv = nn.Module()
        conv.body = nn.Sequential(
            nn.Conv2d(cin, cin, k, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )
        conv.forward = conv.body.forward
    else:
        conv = nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU()]


class RefASPP(nn.Module):
    def __init__(self, cin: int, rates: tuple[int, int, int], separable: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Sequential(*_cbr(cin, 256, 1))]
            + [nn.Sequential(*_cbr(cin, 256, 3, r, separable)) for r in rates]
            + [nn.Sequential(nn.AdaptiveAvgPool2d(1), *_cbr(cin, 256, 1))]
        )
        self.project = nn.Sequential(*_cbr(5 * 256, 256, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [c(x) for c in self.convs[:4]]
        feats.append(F.interpolate(self.convs[4](x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(feats, 1))


class RefHeadV3Plus(nn.Module):
    def __init__(self, cin: int, low_in: int, k: int, separable: bool) -> None:
        super().__init__()
        self.project = nn.Sequential(*_cbr(low_in, 48, 1))
        self.aspp = RefASPP(cin, (6, 12, 18), separable)
        self.classifier = nn.Sequential(*_cbr(304, 256, 3, 1, separable), nn.Conv2d(256, k, 1))

    def forward(self, low: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        low = self.project(low)
        high = F.interpolate(self.aspp(out), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, high], 1))


class RefHeadV3(nn.Module):
    def __init__(self, cin: int, k: int) -> None:
        super().__init__()
        self.classifier = nn.Sequential(RefASPP(cin, (6, 12, 18), False), *_cbr(256, 256, 3), nn.Conv2d(256, k, 1))

    def forward(self, low: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.classifier(out)


class RefResNet(nn.Module):
    """torchvision's ResNet children up to layer4, output stride 16 (replace_stride_with_dilation [F, F, T])."""

    def __init__(self, depth: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, depth)(replace_stride_with_dilation=[False, False, True])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return low, self.layer4(self.layer3(self.layer2(low)))


class RefUnit(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, dilation: int, t: int) -> None:
        super().__init__()
        hidden = inp * t
        self.use_res = stride == 1 and inp == oup
        layers = [] if t == 1 else [nn.Sequential(nn.Conv2d(inp, hidden, 1, bias=False), *_bn_relu6(hidden))]
        layers += [
            nn.Sequential(
                nn.Conv2d(hidden, hidden, 3, stride, 0, dilation=dilation, groups=hidden, bias=False),
                *_bn_relu6(hidden),
            ),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.pad = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, (self.pad,) * 4))
        return x + y if self.use_res else y


def _bn_relu6(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU6()]


class RefMobileNet(nn.Module):
    """VainF's MobileNetV2 at output stride 16: the stage reaching it keeps the previous dilation in its first unit."""

    def __init__(self) -> None:
        super().__init__()
        feats: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 0, bias=False), *_bn_relu6(32))]
        cin, stride_now, dil = 32, 2, 1
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                           (6, 320, 1, 1)]:  # fmt: skip
            prev = dil
            if stride_now == 16:
                stride, dil = 1, dil * s
            else:
                stride, stride_now = s, stride_now * s
            for i in range(n):
                feats.append(RefUnit(cin, c, stride if i == 0 else 1, prev if i == 0 else dil, t))
                cin = c
        self.low_level_features = nn.Sequential(*feats[:4])
        self.high_level_features = nn.Sequential(*feats[4:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low_level_features(x)
        return low, self.high_level_features(low)


class RefVainF(nn.Module):
    def __init__(self, backbone: str, decoder: bool, separable: bool = False, k: int = 5) -> None:
        super().__init__()
        self.backbone = RefMobileNet() if backbone == "mobilenet_v2" else RefResNet(backbone)
        cin, low_in = (320, 24) if backbone == "mobilenet_v2" else (2048, 256)
        self.classifier = RefHeadV3Plus(cin, low_in, k, separable) if decoder else RefHeadV3(cin, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(*self.backbone(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _checkpoint(ref: nn.Module, path, data_parallel: bool = False) -> None:
    sd = ref.state_dict()
    if data_parallel:
        sd = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"cur_itrs": 3, "model_state": sd, "best_score": np.float64(0.5)}, path)


@pytest.mark.parametrize(
    ("backbone", "decoder", "separable"),
    [("resnet50", True, False), ("mobilenet_v2", False, False), ("mobilenet_v2", True, True)],
)
def test_vainf_checkpoint_gives_the_same_logits(tmp_path, backbone, decoder, separable):
    torch.manual_seed(0)
    ref = randomize_batchnorm(RefVainF(backbone, decoder, separable)).eval()
    path = tmp_path / "best_deeplabv3plus_voc_os16.pth"
    _checkpoint(ref, path, data_parallel=separable)
    model = deeplab_fast.load_model(path, source="vainf")
    cfg = model.config
    assert (cfg["backbone"], cfg["num_classes"], cfg["decoder"], cfg["separable"]) == (backbone, 5, decoder, separable)
    x = torch.randn(1, 3, 66, 70, generator=torch.Generator().manual_seed(2))  # even sizes: VainF's stem rounds
    with torch.no_grad():
        expected = ref(x)
        assert rel_err(expected, model(x)) < 1e-5
        assert rel_err(expected, deeplab_fast.optimize(model, tune_malloc=False)(x)) < 1e-4


def test_vainf_resnet101_v3_keys_and_output_stride_8():
    torch.manual_seed(0)
    ref = RefVainF("resnet101", decoder=False, k=3)
    kwargs, sd = map_vainf_state_dict(ref.state_dict())
    assert kwargs["backbone"] == "resnet101" and kwargs["post_aspp_conv"] == "dense" and not kwargs["decoder"]
    assert "post_aspp.conv.weight" in sd and "aspp.pool.conv.weight" in sd and "classifier.bias" in sd
    model = deeplab_fast.models.deeplabv3plus(**kwargs)
    model.load_state_dict(sd)
    # VainF's OS8 model (torchvision's dilation rule, rates 12/24/36) is ours switched to 8
    model.set_output_stride(8)
    assert [u.conv2.dilation[0] for u in model.backbone.layer3][:2] == [1, 2] and model.aspp.rates == (12, 24, 36)


def test_vainf_errors(tmp_path):
    ref = RefVainF("mobilenet_v2", decoder=True)
    sd = ref.state_dict()
    path = tmp_path / "extra.pth"
    torch.save({"model_state": {**sd, "classifier.extra.weight": torch.ones(1)}}, path)
    with pytest.raises(ValueError, match=r"1 key\(s\) of the VainF checkpoint have no place.*classifier\.extra"):
        deeplab_fast.load_model(path, source="vainf")
    torch.save({"model_state": {k: v for k, v in sd.items() if not k.startswith("backbone.")}}, path)
    with pytest.raises(ValueError, match="not a VainF/DeepLabV3Plus-Pytorch ResNet-50/101 or MobileNetV2"):
        deeplab_fast.load_model(path, source="vainf")
    torch.save({"model_state": {k: v for k, v in sd.items() if "aspp.project" not in k}}, path)
    with pytest.raises(ValueError, match="checkpoint lacks.*aspp.project.conv.weight"):
        deeplab_fast.load_model(path, source="vainf")
    with pytest.raises(ValueError, match="source must be one of"):
        deeplab_fast.load_model(path, source="mmseg")


def test_checkpoint_pickled_under_numpy_1_reads(tmp_path):
    # numpy 1.x pickles a numpy float as numpy.core.multiarray.scalar (numpy 2: numpy._core...)
    new, old = tmp_path / "new.pth", tmp_path / "old.pth"
    torch.save({"model_state": {"w": torch.ones(2)}, "best_score": np.float64(0.5)}, new)
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(item, data)
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(old)
    assert read_vainf_checkpoint(str(old))["w"].tolist() == [1.0, 1.0]
