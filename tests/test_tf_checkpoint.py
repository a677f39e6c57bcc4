"""TensorFlow DeepLab checkpoints: the bundle reader, the xception_65 mapping, from_tf_checkpoint, convert-tf,
the image_pooling_crop_size option, and (with DEEPLAB_FAST_TF_REFERENCE) the comparison with the official graph.

Checkpoints are written here by TensorFlow itself (tensorflow-cpu, a test dependency) with the variable names and
shapes of the official Xception-65 DeepLabV3+ graph (tests/data/tf_xception65_variables.txt and
tf_xception71_variables.txt: listed from the graphs the official research/deeplab code builds with TensorFlow 2.21)
and of its MobileNetV2 DeepLabV3 graphs (tf_mobilenetv2_variables.txt, depth multiplier 1.0, and
tf_mobilenetv2_dm05_variables.txt, 0.5: no atrous rates, no decoder, as the model zoo's mnv2 models) and
ResNet-50 and ResNet-101 beta DeepLabV3+ graphs (tf_resnetv150beta_variables.txt, tf_resnetv1101beta_variables.txt).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import deeplab_fast
from deeplab_fast import cli as top_cli
from deeplab_fast.convert.tf_bundle import TensorBundle
from deeplab_fast.convert.tf_deeplab import (
    TF_EXACT_OPTIONS,
    _tf_exact_model,
    checkpoint_prefix,
    from_tf_checkpoint,
    tf_shape,
    tf_variable_map,
)
from deeplab_fast.models import deeplabv3plus
from tests._model_helpers import randomize_batchnorm, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
NUM_CLASSES = 5  # not 21: the converter must read it from the checkpoint


def _official_variables(variant: str = "xception_65", depth_multiplier: float = 1.0) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the official graph of `variant` (21 classes, OS 16; Xception: DeepLabV3+ with rates 6/12/18;
    mobilenet_v2: DeepLabV3 without atrous rates, of that depth multiplier)."""
    out = {}
    suffix = "" if depth_multiplier == 1.0 else f"_dm{str(depth_multiplier).replace('.', '')}"
    for line in (DATA / f"tf_{variant.replace('_', '')}{suffix}_variables.txt").read_text().splitlines():
        name, shape = line.split(" ", 1)
        out[name] = tuple(int(d) for d in shape.strip()[1:-1].split(",") if d.strip())
    return out


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def _save(tf, prefix: Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write `tensors` as a TF checkpoint with TensorFlow's own SaveV2 op (what tf.compat.v1 Saver runs)."""
    names = list(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )
    return prefix


def _random_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.endswith("moving_variance"):
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if name.endswith("gamma"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name.endswith(("beta", "moving_mean", "biases")):
        return rng.normal(0, 0.2, shape).astype(np.float32)
    fan_in = int(np.prod(shape[:2])) if "depthwise" in name else int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)


@pytest.fixture(scope="module")
def xception65_ckpt(tf, tmp_path_factory):
    """(prefix, values): a full-size xception_65 checkpoint with the official names, random values,
    NUM_CLASSES classes and a global_step, written by TensorFlow."""
    rng = np.random.default_rng(0)
    values = {}
    for name, shape in _official_variables().items():
        if name.startswith("logits/semantic/"):
            shape = (*shape[:-1], NUM_CLASSES)
        values[name] = _random_value(name, shape, rng)
    prefix = _save(tf, tmp_path_factory.mktemp("tf") / "model.ckpt", {**values, "global_step": np.int64(30000)})
    return prefix, values


@pytest.fixture(scope="module")
def converted(xception65_ckpt):
    return from_tf_checkpoint(xception65_ckpt[0])


# ---- the bundle reader


def test_bundle_reads_what_tensorflow_writes(tf, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors = {
        "a/weights": rng.standard_normal((3, 3, 4, 5)).astype(np.float32),
        "b/double": rng.standard_normal(7),
        "c/half": rng.standard_normal((2, 3)).astype(np.float16),
        "d/int": rng.integers(-5, 5, (4,), dtype=np.int32),
        "e/uint8": rng.integers(0, 255, (6,), dtype=np.uint8),
        "f/bool": np.array([True, False, True]),
        "global_step": np.int64(42),
        "g/empty": np.zeros((0, 3), np.float32),
        "h/strings": np.array([b"hello", b"", b"xyz"]),
    }
    bundle = TensorBundle(_save(tf, tmp_path / "model.ckpt", tensors))
    assert bundle.names() == sorted(tensors)
    for name, value in tensors.items():
        got = bundle.read(name)
        if name == "h/strings":
            assert got == [b"hello", b"", b"xyz"]
            continue
        assert bundle.shape(name) == value.shape
        np.testing.assert_array_equal(got.numpy(), value)
        assert got.numpy().dtype == value.dtype
    bf16 = TensorBundle(_save(tf, tmp_path / "bf16.ckpt", {"x": tf.cast(tf.constant([1.5, -2.25]), tf.bfloat16)}))
    assert torch.equal(bf16.read("x"), torch.tensor([1.5, -2.25], dtype=torch.bfloat16))
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        bundle.read("nope")


def test_bundle_refuses_damaged_files(tf, tmp_path: Path) -> None:
    prefix = _save(tf, tmp_path / "model.ckpt", {"w": np.arange(1000, dtype=np.float32)})
    index = Path(f"{prefix}.index")
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(index.read_bytes())
    raw[5] ^= 0xFF  # inside the first data block
    bad = tmp_path / "bad.ckpt"
    Path(f"{bad}.index").write_bytes(bytes(raw))
    Path(f"{bad}.data-00000-of-00001").write_bytes(data.read_bytes())
    with pytest.raises(ValueError, match="checksum mismatch"):
        TensorBundle(bad)
    Path(f"{bad}.index").write_bytes(b"not an index at all, but long enough to hold a footer of 48 bytes....")
    with pytest.raises(ValueError, match="not a TensorFlow checkpoint index"):
        TensorBundle(bad)
    short = tmp_path / "short.ckpt"
    Path(f"{short}.index").write_bytes(index.read_bytes())
    Path(f"{short}.data-00000-of-00001").write_bytes(data.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated checkpoint"):
        TensorBundle(short).read("w")
    Path(f"{short}.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match="data file"):
        TensorBundle(short)


# ---- the mapping


@pytest.mark.parametrize(
    ("variant", "depth_multiplier"),
    [
        ("xception_65", 1.0),
        ("xception_71", 1.0),
        ("mobilenet_v2", 1.0),
        ("mobilenet_v2", 0.5),
        ("resnet_v1_50_beta", 1.0),
        ("resnet_v1_101_beta", 1.0),
    ],
)
def test_mapping_names_and_shapes_are_the_official_graphs(variant: str, depth_multiplier: float) -> None:
    decoder = None if variant == "mobilenet_v2" else 4
    with torch.device("meta"):
        model = _tf_exact_model(variant, 21, 16, None, decoder, None, depth_multiplier)
    mapping = tf_variable_map(model, variant)
    official = _official_variables(variant, depth_multiplier)
    assert {n: tf_shape(t, layout) for n, (t, layout) in mapping.items()} == official
    # and every parameter and BN statistic of the model is filled (num_batches_tracked is PyTorch's own)
    filled = {id(t) for t, _ in mapping.values()}
    state = model.state_dict(keep_vars=True)
    assert [k for k, v in state.items() if id(v) not in filled and not k.endswith("num_batches_tracked")] == []


def test_from_tf_checkpoint_fills_every_variable(xception65_ckpt, converted) -> None:
    _, values = xception65_ckpt
    model = converted
    assert model.config["num_classes"] == NUM_CLASSES and not model.training
    for key, value in TF_EXACT_OPTIONS.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert model.config[key] == expected, key
    assert model.config["image_pooling_crop_size"] is None  # TensorFlow pools over the whole (padded) crop
    # layouts written out by hand for one variable of each kind
    t = torch.from_numpy
    conv = values["xception_65/entry_flow/conv1_1/weights"]  # HWIO
    assert torch.equal(model.backbone.conv1.conv.weight, t(conv).permute(3, 2, 0, 1))
    dw = values["aspp2_depthwise/depthwise_weights"]  # HWCM, M = 1
    assert torch.equal(model.aspp.branches[1].depthwise.weight[:, 0], t(dw[:, :, :, 0]).permute(2, 0, 1))
    bn = "xception_65/middle_flow/block1/unit_7/xception_module/separable_conv2_pointwise/BatchNorm/"
    sep = model.backbone.middle_flow[6].sep2
    assert torch.equal(sep.pw_bn.running_var, t(values[bn + "moving_variance"]))
    assert torch.equal(sep.pw_bn.weight, t(values[bn + "gamma"]))
    assert torch.equal(model.classifier.bias, t(values["logits/semantic/biases"]))
    assert torch.equal(model.aspp.pool.bn.running_mean, t(values["image_pooling/BatchNorm/moving_mean"]))
    # every tensor of the model came from the checkpoint: the multiset of values is the same
    ours = sorted(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert ours == sorted(v.size for v in values.values())
    total = sum(float(v.astype(np.float64).sum()) for v in values.values())
    got = sum(float(v.double().sum()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert got == pytest.approx(total, rel=1e-9)


def test_converted_layers_compute_what_tensorflow_ops_compute(tf, xception65_ckpt, converted) -> None:
    """The first conv (explicit padding, stride 2, BN eps 1e-3, ReLU), an atrous depthwise conv of ASPP (rate 12,
    BN eps 1e-5) and the logits conv, run by TensorFlow's ops on the checkpoint's values and by the model."""
    _, v = xception65_ckpt
    rng = np.random.default_rng(2)

    def bn(x, scope, eps):
        g, b, m, var = (v[f"{scope}/BatchNorm/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        return tf.nn.batch_normalization(x, m, var, b, g, eps)

    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)

    x = rng.standard_normal((1, 37, 41, 3)).astype(np.float32)
    s = "xception_65/entry_flow/conv1_1"
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    ref = tf.nn.relu(bn(tf.nn.conv2d(padded, v[f"{s}/weights"], 2, "VALID"), s, 1e-3)).numpy()
    with torch.no_grad():
        got = converted.backbone.conv1(nchw(x))
    assert rel_err(nchw(ref), got) < 1e-5

    x = rng.standard_normal((1, 30, 30, 2048)).astype(np.float32)
    dw = tf.nn.depthwise_conv2d(x, v["aspp2_depthwise/depthwise_weights"], [1, 1, 1, 1], "SAME", dilations=[12, 12])
    ref = tf.nn.relu(bn(dw, "aspp2_depthwise", 1e-5)).numpy()
    branch = converted.aspp.branches[1]
    with torch.no_grad():
        got = F.relu(branch.dw_bn(branch.depthwise(nchw(x))))
    assert rel_err(nchw(ref), got) < 1e-5

    x = rng.standard_normal((1, 9, 9, 256)).astype(np.float32)
    ref = tf.nn.conv2d(x, v["logits/semantic/weights"], 1, "SAME") + v["logits/semantic/biases"]
    with torch.no_grad():
        got = converted.classifier(nchw(x))
    assert rel_err(nchw(ref.numpy()), got) < 1e-5


def test_converted_model_runs_and_optimize_keeps_it(converted) -> None:
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        eager = converted(x)
        fused = deeplab_fast.optimize(converted, tune_malloc=False)(x)
    assert eager.shape == (1, NUM_CLASSES, 65, 65) and torch.isfinite(eager).all()
    assert rel_err(eager, fused) < 1e-4


# ---- mobilenet_v2 (the model zoo's mnv2 DeepLabV3 models)

MNV2 = {"model_variant": "mobilenet_v2", "depth_multiplier": 0.5, "decoder_output_stride": None}


@pytest.fixture(scope="module")
def mobilenet_v2_ckpt(tf, tmp_path_factory):
    """(prefix, values): a depth-multiplier-0.5 mobilenet_v2 checkpoint with the official names, random values and
    NUM_CLASSES classes, written by TensorFlow."""
    rng = np.random.default_rng(3)
    values = {}
    for name, shape in _official_variables("mobilenet_v2", 0.5).items():
        if name.startswith("logits/semantic/"):
            shape = (*shape[:-1], NUM_CLASSES)
        values[name] = _random_value(name, shape, rng)
    return _save(tf, tmp_path_factory.mktemp("tf_mnv2") / "model.ckpt", values), values


def test_mobilenet_v2_checkpoint_fills_every_variable(mobilenet_v2_ckpt) -> None:
    prefix, values = mobilenet_v2_ckpt
    model = from_tf_checkpoint(prefix, **MNV2)
    config = model.config
    assert (config["backbone"], config["num_classes"], config["decoder"]) == ("mobilenet_v2", NUM_CLASSES, False)
    assert config["aspp_rates"] == [] and len(model.aspp.branches) == 0
    assert model.aspp.project.conv.in_channels == 2 * 256  # [image_pooling, aspp0]
    assert config["width_mult"] == 0.5 and config["mobilenet_divisible_by"] == 1  # 12 channels, not 16
    assert not config["mobilenet_last_conv"] and config["dilate_first_block"] is False
    ours = sorted(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert ours == sorted(v.size for v in values.values())
    total = sum(float(v.astype(np.float64).sum()) for v in values.values())
    got = sum(float(v.double().sum()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert got == pytest.approx(total, rel=1e-9)
    # the OS8 model of the same weights (TensorFlow's other evaluation stride) has no atrous branches either
    model.set_output_stride(8)
    assert model.aspp.rates == () and model.config["aspp_rates"] == []


def test_mobilenet_v2_layers_compute_what_tensorflow_ops_compute(tf, mobilenet_v2_ckpt) -> None:
    """The stem (SAME stride-2 conv on an odd size, BN eps 1e-3, ReLU6), a whole inverted residual unit with its
    skip and rate-2 depthwise conv (expanded_conv_15 at output stride 16), and the ASPP of image pooling + 1x1
    branch (BN eps 1e-5), run by TensorFlow's ops on the checkpoint's values and by the converted model."""
    prefix, v = mobilenet_v2_ckpt
    model = from_tf_checkpoint(prefix, **MNV2)
    rng = np.random.default_rng(4)

    def bn(x, scope, eps=1e-3):
        g, b, m, var = (v[f"{scope}/BatchNorm/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        return tf.nn.batch_normalization(x, m, var, b, g, eps)

    def conv(x, scope, stride=1):
        return bn(tf.nn.conv2d(x, v[f"{scope}/weights"], stride, "SAME"), scope)

    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)

    x = rng.standard_normal((1, 37, 41, 3)).astype(np.float32)
    ref = tf.nn.relu6(conv(x, "MobilenetV2/Conv", 2)).numpy()
    with torch.no_grad():
        assert rel_err(nchw(ref), model.backbone.features[0](nchw(x))) < 1e-5

    s = "MobilenetV2/expanded_conv_15"
    x = rng.standard_normal((1, 9, 11, 80)).astype(np.float32)
    hidden = tf.nn.relu6(conv(x, f"{s}/expand"))
    dw = tf.nn.depthwise_conv2d(hidden, v[f"{s}/depthwise/depthwise_weights"], [1, 1, 1, 1], "SAME", dilations=[2, 2])
    ref = (conv(tf.nn.relu6(bn(dw, f"{s}/depthwise")), f"{s}/project") + x).numpy()
    with torch.no_grad():
        assert rel_err(nchw(ref), model.backbone.features[16](nchw(x))) < 1e-5

    x = rng.standard_normal((2, 9, 11, 160)).astype(np.float32)
    pool = tf.nn.relu(
        bn(
            tf.nn.conv2d(tf.reduce_mean(x, [1, 2], keepdims=True), v["image_pooling/weights"], 1, "SAME"),
            "image_pooling",
            1e-5,
        )
    )
    pool = tf.broadcast_to(pool, (2, 9, 11, 256))
    aspp0 = tf.nn.relu(bn(tf.nn.conv2d(x, v["aspp0/weights"], 1, "SAME"), "aspp0", 1e-5))
    cat = tf.concat([pool, aspp0], 3)
    ref = tf.nn.relu(bn(tf.nn.conv2d(cat, v["concat_projection/weights"], 1, "SAME"), "concat_projection", 1e-5))
    with torch.no_grad():
        assert rel_err(nchw(ref.numpy()), model.aspp(nchw(x))) < 1e-5


def test_mobilenet_v2_optimize_and_cli(mobilenet_v2_ckpt, tmp_path: Path, capsys) -> None:
    prefix = mobilenet_v2_ckpt[0]
    out = tmp_path / "mnv2.safetensors"
    args = ["convert-tf", str(prefix), "--out", str(out), "--model-variant", "mobilenet_v2"]
    assert top_cli.main([*args, "--depth-multiplier", "0.5", "--decoder-output-stride", "none"]) == 0
    assert f"mobilenet_v2, {NUM_CLASSES} classes" in capsys.readouterr().out
    model = deeplab_fast.load_model(out)
    assert model.config == from_tf_checkpoint(prefix, **MNV2).config
    # --atrous-rates with no number: no atrous branches, TensorFlow's atrous_rates=None, as the default here
    rates = tmp_path / "rates.safetensors"
    assert top_cli.main([*args[:3], str(rates), *args[4:], "--depth-multiplier", "0.5", "--decoder-output-stride",
                         "none", "--atrous-rates"]) == 0  # fmt: skip
    assert deeplab_fast.load_model(rates).config == model.config
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        eager = model(x)
        fused = deeplab_fast.optimize(model, tune_malloc=False)(x)
    assert eager.shape == (1, NUM_CLASSES, 65, 65) and torch.isfinite(eager).all()
    assert rel_err(eager, fused) < 1e-4
    # the wrong multiplier, a decoder, or a multiplier for Xception: refused, naming what is wrong
    assert top_cli.main([*args, "--decoder-output-stride", "none"]) == 2
    assert "shape mismatch (" in capsys.readouterr().err
    with pytest.raises(ValueError, match="decoder_output_stride must be None .* for model_variant 'mobilenet_v2'"):
        from_tf_checkpoint(prefix, model_variant="mobilenet_v2", depth_multiplier=0.5)
    with pytest.raises(ValueError, match="depth_multiplier applies to model_variant 'mobilenet_v2' only"):
        from_tf_checkpoint(prefix, depth_multiplier=0.5)
    with pytest.raises(ValueError, match=r"atrous_rates must be three ints >= 1, \(\)"):
        from_tf_checkpoint(prefix, **MNV2, atrous_rates=(6, 12))


def test_aspp_without_atrous_branches_and_mobilenet_divisible_by() -> None:
    model = deeplabv3plus("mobilenet_v2", 3, aspp_rates=(), aspp_channels=16, width_mult=0.5, mobilenet_divisible_by=1)
    assert len(model.aspp.branches) == 0 and model.aspp.project.conv.in_channels == 32
    assert model.backbone.low_level_channels == 12  # TensorFlow's 24 x 0.5; the default divisor 8 gives 16
    assert deeplabv3plus("mobilenet_v2", 3, width_mult=0.5).backbone.low_level_channels == 16
    for bad in ((6, 12), (0, 1, 2)):
        with pytest.raises(ValueError, match=r"aspp_rates must be three ints >= 1, \(\)"):
            deeplabv3plus("mobilenet_v2", aspp_rates=bad)
    with pytest.raises(ValueError, match="mobilenet_divisible_by must be an int >= 1"):
        deeplabv3plus("mobilenet_v2", mobilenet_divisible_by=0)


# ---- resnet_v1_101_beta


def test_resnet_v1_101_beta_checkpoint(tf, tmp_path: Path) -> None:
    """A TensorFlow-written checkpoint with the official names: every variable used once, BN eps 1e-5 (TensorFlow's
    ResNet arg scope), TensorFlow's multi_grid flag (default all ones), a strided last unit's subsampling shortcut
    and rate-2 3x3 conv against TensorFlow's ops, and optimize() parity."""
    rng = np.random.default_rng(5)
    values = {n: _random_value(n, shape, rng) for n, shape in _official_variables("resnet_v1_101_beta").items()}
    prefix = _save(tf, tmp_path / "model.ckpt", values)
    model = from_tf_checkpoint(prefix, model_variant="resnet_v1_101_beta")
    assert model.config["backbone"] == "resnet101_beta" and model.config["multi_grid"] == [1, 1, 1]
    assert model.config["bn_eps"] == 1e-5 and model.config["head_bn_eps"] == 1e-5
    total = sum(float(v.astype(np.float64).sum()) for v in values.values())
    got = sum(float(v.double().sum()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert got == pytest.approx(total, rel=1e-9)
    grid = from_tf_checkpoint(prefix, model_variant="resnet_v1_101_beta", multi_grid=(1, 2, 4))
    assert [u.conv2.dilation[0] for u in grid.backbone.layer4] == [2, 4, 8]

    def bn(x, scope):
        g, b, m, var = (values[f"{scope}/BatchNorm/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance"))
        return tf.nn.batch_normalization(x, m, var, b, g, 1e-5)

    def conv(x, scope, rate=1):
        return bn(tf.nn.conv2d(x, values[f"{scope}/weights"], 1, "SAME", dilations=rate), scope)

    # block4's unit_2 (rate 2 at output stride 16) and block2's unit_4 (its stride 2 in the last unit, a subsample
    # shortcut): conv1, conv2 (3x3; stride 2 pads explicitly as TensorFlow's conv2d_same), conv3, the skip, ReLU
    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)

    s = "resnet_v1_101/block4/unit_2/bottleneck_v1"
    x = rng.standard_normal((1, 9, 11, 2048)).astype(np.float32)
    y = conv(tf.nn.relu(conv(tf.nn.relu(conv(x, f"{s}/conv1")), f"{s}/conv2", 2)), f"{s}/conv3")
    with torch.no_grad():
        assert rel_err(nchw(tf.nn.relu(y + x).numpy()), model.backbone.layer4[1](nchw(x))) < 1e-5
    s = "resnet_v1_101/block2/unit_4/bottleneck_v1"
    x = rng.standard_normal((1, 17, 15, 512)).astype(np.float32)
    h = tf.nn.relu(conv(x, f"{s}/conv1"))
    h = tf.nn.conv2d(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]), values[f"{s}/conv2/weights"], 2, "VALID")
    y = conv(tf.nn.relu(bn(h, f"{s}/conv2")), f"{s}/conv3") + x[:, ::2, ::2]
    with torch.no_grad():
        assert rel_err(nchw(tf.nn.relu(y).numpy()), model.backbone.layer2[3](nchw(x))) < 1e-5
        image = torch.randn(1, 3, 65, 65)
        assert rel_err(model(image), deeplab_fast.optimize(model, tune_malloc=False)(image)) < 1e-4


# ---- errors and paths (small checkpoints)


def test_mismatched_checkpoints_list_unused_missing_and_mismatched(tf, tmp_path: Path) -> None:
    tensors = {
        "logits/semantic/weights": np.zeros((1, 1, 256, 3), np.float32),
        "aspp0/weights": np.zeros((1, 1, 2048, 128), np.float32),  # wrong shape
        "extra/weights": np.zeros((3,), np.float32),
        "aspp0/BatchNorm/gamma/Momentum": np.zeros((256,), np.float32),  # an optimizer slot: skipped
        "global_step": np.int64(1),
    }
    with pytest.raises(ValueError) as info:
        from_tf_checkpoint(_save(tf, tmp_path / "model.ckpt", tensors))
    msg = str(info.value)
    assert "unused (1): extra/weights;" in msg
    assert "missing (730): aspp0/BatchNorm/beta, aspp0/BatchNorm/gamma," in msg and "... (710 more)" in msg
    assert "shape mismatch (1): aspp0/weights (1, 1, 2048, 128) (expected (1, 1, 2048, 256))" in msg
    assert "Momentum" not in msg and "global_step" not in msg


def test_decoder_and_image_pooling_arguments(xception65_ckpt) -> None:
    prefix = xception65_ckpt[0]
    with pytest.raises(ValueError, match=r"unused \(25\): decoder/decoder_conv0_depthwise/BatchNorm/beta"):
        from_tf_checkpoint(prefix, decoder_output_stride=None)
    model = from_tf_checkpoint(prefix, image_pooling_crop_size=(257, 257))
    assert model.config["image_pooling_crop_size"] == [257, 257] and model.aspp.pool_kernel((33, 33)) == (17, 17)
    # TensorFlow's rates 6/12/18 at OS16 are the builder's default, so they follow the output stride
    assert model.config["aspp_rates"] is None
    model.set_output_stride(8)
    assert model.aspp.rates == (12, 24, 36) and model.aspp.pool_kernel((65, 65)) == (33, 33)


def test_num_classes_and_bad_arguments(tf, tmp_path: Path) -> None:
    prefix = _save(tf, tmp_path / "model.ckpt", {"logits/semantic/weights": np.zeros((1, 1, 256, 3), np.float32)})
    with pytest.raises(ValueError, match="num_classes=21 but the checkpoint's logits layer has 3 classes"):
        from_tf_checkpoint(prefix, num_classes=21)
    with pytest.raises(ValueError, match="missing \\(731\\)"):
        from_tf_checkpoint(prefix, num_classes=3)
    with pytest.raises(ValueError, match="model_variant must be one of xception_65, xception_71"):
        from_tf_checkpoint(prefix, model_variant="resnet_v1_50")
    with pytest.raises(ValueError, match="decoder_output_stride must be 4"):
        from_tf_checkpoint(prefix, decoder_output_stride=8)
    no_logits = _save(tf, tmp_path / "backbone.ckpt", {"xception_65/entry_flow/conv1_1/weights": np.zeros(3)})
    with pytest.raises(ValueError, match="has no 'logits/semantic/weights'"):
        from_tf_checkpoint(no_logits)
    with pytest.raises(FileNotFoundError, match="no TensorFlow checkpoint at"):
        from_tf_checkpoint(tmp_path / "absent.ckpt")


def test_checkpoint_paths_prefix_index_folder_and_tarball(tf, tmp_path: Path) -> None:
    folder = tmp_path / "deeplabv3_pascal_train_aug"
    folder.mkdir()
    value = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    prefix = _save(tf, folder / "model.ckpt", {"logits/semantic/weights": value})
    (folder / "frozen_inference_graph.pb").write_bytes(b"unrelated")
    archive = tmp_path / "deeplabv3_pascal_train_aug_2018_01_04.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    for path in (prefix, f"{prefix}.index", f"{prefix}.data-00000-of-00001", folder, archive):
        with checkpoint_prefix(path) as p:
            np.testing.assert_array_equal(TensorBundle(p).read("logits/semantic/weights").numpy(), value)
    with checkpoint_prefix(archive) as p:
        extracted = p.parent
        assert sorted(f.name for f in extracted.iterdir()) == ["model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    assert not extracted.exists()  # the temporary copy is gone
    _save(tf, folder / "model.ckpt-2", {"x": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="exactly one TensorFlow checkpoint"):
        with checkpoint_prefix(folder):
            pass
    with pytest.raises(ValueError, match="missing \\("):  # the tarball is read: its checkpoint is incomplete
        from_tf_checkpoint(archive)


# ---- CLI


def test_cli_convert_tf_writes_a_self_describing_file(xception65_ckpt, converted, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.safetensors"
    assert top_cli.main(["convert-tf", str(xception65_ckpt[0]), "--out", str(out)]) == 0
    assert f"{NUM_CLASSES} classes" in capsys.readouterr().out
    loaded = deeplab_fast.load_model(out)
    assert loaded.config == converted.config
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(loaded(x), converted(x))
    assert top_cli.main(["convert-tf", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeplab-fast convert-tf: error: no TensorFlow checkpoint at") and err.count("\n") == 1
    assert top_cli.main(["convert-tf", str(xception65_ckpt[0]), "--out", str(out), "--num-classes", "21"]) == 2
    assert "num_classes=21" in capsys.readouterr().err


# ---- image_pooling_crop_size


def test_image_pooling_crop_size_is_tensorflows_average_pool(tf) -> None:
    """Features of 11x13 at output stride 8 with crop 49x41: kernel ((49-1)//8+1, (41-1)//8+1) = (7, 6), VALID
    average pooling, then a bilinear resize back with align_corners=True, as TensorFlow's graph does."""
    model = randomize_batchnorm(
        deeplabv3plus(
            "xception65",
            num_classes=3,
            output_stride=8,
            align_corners=True,
            width_mult=0.25,
            aspp_channels=16,
            low_level_channels=8,
            image_pooling_crop_size=(49, 41),
        )
    ).eval()
    aspp = model.aspp
    assert aspp.pool_kernel((11, 13)) == (7, 6)
    assert aspp.pool_kernel((7, 6)) is None and aspp.pool_kernel((5, 5)) is None  # the whole map: global mean
    x = torch.randn(2, aspp.branch1x1.conv.in_channels, 11, 13)
    nhwc = x.permute(0, 2, 3, 1).numpy()
    pooled = tf.nn.avg_pool2d(nhwc, (7, 6), 1, "VALID")
    with torch.no_grad():
        conv = aspp.pool(torch.from_numpy(pooled.numpy()).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        ref = tf.compat.v1.image.resize_bilinear(conv, (11, 13), align_corners=True).numpy()
        got = F.interpolate(aspp.pooled(x), (11, 13), mode="bilinear", align_corners=True)
        assert rel_err(torch.from_numpy(ref).permute(0, 3, 1, 2), got) < 1e-5
        # the fused ASPP of optimize() keeps it (its image-pool bias becomes a map), both sizes
        fused = deeplab_fast.optimize(model, tune_malloc=False)
        for size in ((87, 101), (49, 41)):
            image = torch.randn(2, 3, *size)
            assert rel_err(model(image), fused(image)) < 1e-4
    # an input of the crop size: the same as the global mean
    plain = deeplabv3plus(
        "xception65", num_classes=3, output_stride=8, align_corners=True, width_mult=0.25, aspp_channels=16,
        low_level_channels=8,
    )  # fmt: skip
    plain.load_state_dict(model.state_dict())
    image = torch.randn(1, 3, 49, 41)
    with torch.no_grad():
        assert rel_err(plain.eval()(image), model(image)) < 1e-5
    for bad in ((0, 5), (5,), "513", (5.0, 5)):
        with pytest.raises(ValueError, match="image_pooling_crop_size must be two ints"):
            deeplabv3plus("mobilenet_v2", image_pooling_crop_size=bad)


# ---- the official graph (needs a reference folder)

REFERENCE = os.environ.get("DEEPLAB_FAST_TF_REFERENCE")


def _reference_arguments(prefix: Path) -> dict:
    """from_tf_checkpoint's arguments for the official graph saved at `prefix`, read from its variables: the
    model variant, mobilenet_v2's depth multiplier (from its 32 x multiplier stem channels), the decoder (the
    multi_grid flag, which no variable shows, comes from io.npz)."""
    bundle = TensorBundle(prefix)
    entries = bundle.entries
    if "MobilenetV2/Conv/weights" in entries:
        stem = bundle.shape("MobilenetV2/Conv/weights")[-1]
        return {"model_variant": "mobilenet_v2", "depth_multiplier": stem / 32, "decoder_output_stride": None}
    variant = "xception_65"
    for candidate in ("xception_71", "resnet_v1_50_beta", "resnet_v1_101_beta"):
        if any(n.startswith(candidate.removesuffix("_beta") + "/") for n in entries):
            variant = candidate
    decoder = 4 if "decoder/feature_projection0/weights" in entries else None
    return {"model_variant": variant, "decoder_output_stride": decoder}


@pytest.mark.skipif(
    not REFERENCE,
    reason="needs DEEPLAB_FAST_TF_REFERENCE: folders (separated by os.pathsep) with the official TensorFlow graph's "
    "checkpoint (model.ckpt.*) and its input and outputs (io.npz), built as docs/tf_checkpoints.md describes",
)
@pytest.mark.parametrize("folder", (REFERENCE or "").split(os.pathsep) if REFERENCE else ["-"])
def test_matches_the_official_tensorflow_graph(folder: str) -> None:
    """Logits and intermediate features of the converted model against the official graph's, on its checkpoint and
    input, in fp32 (eager and optimized) and float64 (which isolates the mapping from fp32 rounding)."""
    folder = Path(folder)
    io = np.load(folder / "io.npz")
    arguments = _reference_arguments(folder / "model.ckpt")
    if "multi_grid" in io.files:  # the graph's TensorFlow flag multi_grid, when it was set
        arguments["multi_grid"] = tuple(int(m) for m in io["multi_grid"])
    model = from_tf_checkpoint(folder / "model.ckpt", **arguments)
    x = torch.from_numpy(io["image"]).permute(0, 3, 1, 2) * (2 / 255) - 1

    def nchw(name):
        return torch.from_numpy(io[name]).permute(0, 3, 1, 2).double()

    def run(m, dtype):
        feats = {}
        hooks = [
            m.backbone.register_forward_hook(lambda _, __, o: feats.update(low_level=o[0], backbone=o[2])),
            m.aspp.register_forward_hook(lambda _, __, o: feats.update(aspp=o)),
        ]
        if m.decoder is not None:
            hooks.append(m.decoder.register_forward_hook(lambda _, __, o: feats.update(decoder=o)))
        with torch.no_grad():
            feats["logits"] = m.forward_lowres(x.to(dtype))
            feats["logits_full"] = m(x.to(dtype))
        for h in hooks:
            h.remove()
        return {k: v.double() for k, v in feats.items() if k in io.files}

    fp32 = run(model, torch.float32)
    fused = run(deeplab_fast.optimize(model, tune_malloc=False), torch.float32)
    # optimize()'s default runs wide 3x3 convs with Winograd, whose fp32 rounding is larger than a direct conv's
    # (a ResNet is all such convs); oneDNN's direct convs isolate the fusion itself
    direct = run(deeplab_fast.optimize(model, tune_malloc=False, conv_engine="onednn"), torch.float32)
    exact = run(model.double(), torch.float64)
    report = []
    for name in fp32:
        ref = nchw(name)
        scale = ref.abs().max().item()
        errors = {
            "fp32": (fp32[name] - ref).abs().max().item() / scale,
            "optimized": (fused[name] - ref).abs().max().item() / scale if name in fused else 0.0,
            "optimized onednn": (direct[name] - ref).abs().max().item() / scale if name in direct else 0.0,
            "float64": (exact[name] - ref).abs().max().item() / scale,
        }
        # fp32 rounding of this network on this input: our fp32 result against our float64 one. TensorFlow's own
        # fp32 result carries rounding errors of that size too, so that is the floor of any comparison.
        noise = (fp32[name] - exact[name]).abs().max().item() / scale
        bound = max(1e-4, 2 * noise)
        report.append(f"{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()) + f", fp32 noise {noise:.2e}")
        # Winograd's rounding (measured: up to 2.7x the direct convs' on the ResNet-101 reference) gets 4x
        assert errors["optimized"] <= max(1e-4, 4 * noise), "\n".join(report)
        assert all(e <= bound for k, e in errors.items() if k != "optimized"), "\n".join(report)
    assert "logits" in fp32
    print("\n".join(report))


def test_eval_rebuilds_a_tf_exact_model_from_its_file(tmp_path: Path) -> None:
    """`deeplab-fast eval --weights FILE` turns the file's description into config overrides; TF-exact options
    (head_bn_eps=1e-5, which JSON writes as 1e-05, a string to YAML) must come back as they were."""
    from deeplab_fast.training.builders import build_model
    from deeplab_fast.training.cli import _model_overrides
    from deeplab_fast.training.config import load_config

    options = dict(TF_EXACT_OPTIONS)
    align_corners = options.pop("align_corners")
    model = deeplabv3plus(
        "xception65", 21, 8, align_corners=align_corners, aspp_rates=(12, 24, 36), width_mult=0.25,
        image_pooling_crop_size=(257, 257), **options,
    )  # fmt: skip
    path = tmp_path / "tf.safetensors"
    deeplab_fast.save_weights(model, path)
    rebuilt = build_model(load_config("voc_xception65", _model_overrides(str(path))).model)
    assert rebuilt.config == model.config
