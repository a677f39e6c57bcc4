import os

import pytest
import torch

import deeplab_fast
from deeplab_fast.models import deeplabv3plus
from deeplab_fast.models.weights import load_model, read_state_dict, save_weights
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


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_saved_files_describe_their_model_and_load_model_rebuilds_it(tmp_path, suffix):
    from deeplab_fast.models.weights import read_model_info

    src = small_model("mobilenet_v2", output_stride=8, decoder_convs=1).eval()
    path = tmp_path / f"w{suffix}"
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]]
    save_weights(src, path, class_names=list("abcde"), palette=palette, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    info = read_model_info(path)
    assert info["format_version"] == 1
    assert info["model"]["backbone"] == "mobilenet_v2" and info["model"]["output_stride"] == 8
    assert info["model"]["decoder_convs"] == 1 and info["model"]["aux_head"] is False  # every option, defaults too
    assert info["class_names"] == list("abcde") and info["palette"] == palette
    assert info["mean"] == [0.5] * 3 and info["std"] == [0.2] * 3
    model = load_model(path)
    assert not model.training and model.config["output_stride"] == 8
    x = torch.randn(1, 3, 48, 48)
    assert torch.equal(model(x), src(x))
    deeplab_fast.load_weights(small_model("mobilenet_v2", output_stride=8, decoder_convs=1), path)  # still loads
    # source= overrides what the file says (here: an incompatible head, so the strict load names the mismatch)
    with pytest.raises(ValueError, match="classifier: checkpoint has 5 classes, model has 7"):
        load_model(path, source={"num_classes": 7})


def test_load_model_of_a_file_without_description(tmp_path):
    src = small_model("mobilenet_v2").eval()
    path = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous().clone() for k, v in src.state_dict().items()}, path)
    with pytest.raises(ValueError, match=r"does not describe its model.*source="):
        load_model(path)
    model = load_model(path, source=src.config)
    x = torch.randn(1, 3, 40, 40)
    assert torch.equal(model(x), src(x))


def test_save_weights_of_a_module_without_config(tmp_path):
    from deeplab_fast.models.weights import read_model_info

    conv = torch.nn.Conv2d(3, 4, 1)
    save_weights(conv, tmp_path / "c.safetensors")
    assert read_model_info(tmp_path / "c.safetensors") is None
    with pytest.raises(ValueError, match="no `config`"):
        save_weights(conv, tmp_path / "d.safetensors", class_names=["a"])
    with pytest.raises(ValueError, match="class_names has 2 names"):
        save_weights(small_model("mobilenet_v2"), tmp_path / "e.safetensors", class_names=["a", "b"])
    with pytest.raises(ValueError, match="std must be three positive"):
        save_weights(small_model("mobilenet_v2"), tmp_path / "e.safetensors", std=(1, 0, 1))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors_is_a_clear_error_naming_the_file(tmp_path, damage):
    # Regression: a raw safetensors SafetensorError that did not name the file.
    m = small_model("mobilenet_v2")
    path = tmp_path / "broken.safetensors"
    save_weights(m, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00" * 64 + data, "empty": b""}[damage])
    for call in (
        lambda: deeplab_fast.load_weights(m, path),
        lambda: load_model(path),
        lambda: read_state_dict(path),
    ):
        with pytest.raises(ValueError, match=r"broken\.safetensors' is not a readable \.safetensors file"):
            call()


def test_classifier_input_mismatch_names_the_real_difference(tmp_path):
    # Regression: "checkpoint has 3 classes, model has 3; pass skip_classifier=True" for same-class models whose
    # heads differ (e.g. the synthetic demo's model loaded into the default architecture).
    src = deeplabv3plus("mobilenet_v2", num_classes=3, aspp_channels=16, width_mult=0.5, low_level_channels=8)
    path = tmp_path / "w.safetensors"
    save_weights(src, path)
    dst = deeplabv3plus("mobilenet_v2", num_classes=3, aspp_channels=32, width_mult=0.5, low_level_channels=8)
    with pytest.raises(ValueError) as err:
        deeplab_fast.load_weights(dst, path)
    msg = str(err.value)
    assert "has 3 classes, model has 3" not in msg and "skip_classifier" not in msg
    assert "classifier's input has 16 channels in the checkpoint and 32 in the model" in msg
    assert "load_model(path) rebuilds that model" in msg and "aspp_channels=16" in msg


def test_written_files_follow_the_umask(tmp_path):
    # Regression: atomic writes left weights at 0600 whatever the umask.
    old = os.umask(0o022)
    try:
        save_weights(small_model("mobilenet_v2"), tmp_path / "w.safetensors")
        save_weights(small_model("mobilenet_v2"), tmp_path / "w.pth")
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.pth").stat().st_mode & 0o777 == 0o644
