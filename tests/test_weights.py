import os

import pytest
import torch

import deeplab_fast
from deeplab_fast.models import deeplabv3plus
from deeplab_fast.models.weights import save_weights
from tests._model_helpers import randomize_batchnorm, small_model


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_round_trip(tmp_path, suffix):
    src = small_model("mobilenet_v2")
    dst = small_model("mobilenet_v2")
    path = tmp_path / f"w{suffix}"
    save_weights(src, path)
    assert os.listdir(tmp_path) == [path.name]  # no temp file left behind
    report = deeplab_fast.load_weights(dst, path)
    assert not (report.missing or report.unexpected or report.mismatched)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_wrapped_and_prefixed_checkpoint(tmp_path):
    src = small_model("mobilenet_v2")
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    dst = small_model("mobilenet_v2")
    deeplab_fast.load_weights(dst, path)
    assert torch.equal(dst.classifier.weight, src.classifier.weight)


def test_backbone_only_torchvision_resnet(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    tv = randomize_batchnorm(torchvision.models.resnet50(weights=None))
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    m = deeplabv3plus("resnet50", separable=False)
    with pytest.raises(ValueError, match="backbone_only=True"):
        deeplab_fast.load_weights(m, path)
    deeplab_fast.load_weights(m, path, backbone_only=True)
    assert torch.equal(m.backbone.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)
    assert torch.equal(m.backbone.bn1.running_var, tv.bn1.running_var)


def test_classifier_mismatch(tmp_path):
    src = deeplabv3plus("mobilenet_v2", num_classes=19, aspp_channels=16, width_mult=0.5)
    path = tmp_path / "w.safetensors"
    save_weights(src, path)
    dst = deeplabv3plus("mobilenet_v2", num_classes=21, aspp_channels=16, width_mult=0.5)
    with pytest.raises(ValueError, match="checkpoint has 19 classes, model has 21; pass skip_classifier=True"):
        deeplab_fast.load_weights(dst, path)
    before = dst.classifier.weight.clone()
    deeplab_fast.load_weights(dst, path, skip_classifier=True)
    assert torch.equal(dst.classifier.weight, before)
    assert torch.equal(dst.aspp.project.conv.weight, src.aspp.project.conv.weight)


def test_missing_unexpected_and_non_strict(tmp_path):
    src = small_model("mobilenet_v2")
    sd = src.state_dict()
    del sd["aspp.pool.conv.weight"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    dst = small_model("mobilenet_v2")
    with pytest.raises(
        ValueError, match=r"missing keys \(1\): aspp.pool.conv.weight[\s\S]*unexpected keys \(1\): extra"
    ):
        deeplab_fast.load_weights(dst, path)
    report = deeplab_fast.load_weights(dst, path, strict=False)
    assert report.missing == ["aspp.pool.conv.weight"] and report.unexpected == ["extra.weight"]
    assert torch.equal(dst.classifier.weight, src.classifier.weight)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        deeplab_fast.load_weights(small_model("mobilenet_v2"), path)


def test_bad_paths(tmp_path):
    m = small_model("mobilenet_v2")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        deeplab_fast.load_weights(m, tmp_path / "nope.pt")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="must end in"):
        deeplab_fast.load_weights(m, tmp_path / "w.txt")
    with pytest.raises(ValueError, match="must end in"):
        save_weights(m, tmp_path / "w.npz")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(ValueError, match="state dict"):
        deeplab_fast.load_weights(m, tmp_path / "t.pt")
