"""TensorFlow DeepLab checkpoints (tensorflow/models research/deeplab, the model zoo) -> deeplab_fast models.

`from_tf_checkpoint` reads a TF1 checkpoint with deeplab_fast.convert.tf_bundle (no TensorFlow needed), builds
the DeepLab in TensorFlow-exact mode (TF_EXACT_OPTIONS, plus image_pooling_crop_size when the graph had one) and
copies every variable into it. `tf_variable_map` is the name mapping: TensorFlow variable -> (parameter, layout).

Layouts: TensorFlow stores conv weights HWIO (PyTorch: OIHW) and depthwise weights HWCM (PyTorch: (C*M, 1, H, W),
M = 1 here); BatchNorm gamma/beta/moving_mean/moving_variance are PyTorch's weight/bias/running_mean/running_var.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeplab_fast.convert.tf_bundle import TensorBundle
from deeplab_fast.models.deeplab import DeepLab, deeplabv3plus
from deeplab_fast.models.layers import ConvBNAct, SeparableConv

# TensorFlow model_variant -> deeplab_fast backbone
MODEL_VARIANTS = {
    "xception_65": "xception65",
    "xception_71": "xception71",
    "mobilenet_v2": "mobilenet_v2",
    "resnet_v1_50_beta": "resnet50_beta",
    "resnet_v1_101_beta": "resnet101_beta",
}

# the variable scope of each variant's backbone in the TensorFlow graph
_BACKBONE_SCOPES = {
    "xception_65": "xception_65",
    "xception_71": "xception_71",
    "mobilenet_v2": "MobilenetV2",
    "resnet_v1_50_beta": "resnet_v1_50",
    "resnet_v1_101_beta": "resnet_v1_101",
}

# TensorFlow's atrous_rates for the model zoo's models of each variant at output stride 16 (x 16 / output_stride
# at other strides; its MobileNetV2 models have no atrous ASPP branches)
_ZOO_RATES = {
    "xception_65": (6, 12, 18),
    "xception_71": (6, 12, 18),
    "mobilenet_v2": (),
    "resnet_v1_50_beta": (6, 12, 18),
    "resnet_v1_101_beta": (6, 12, 18),
}

# The options that make a deeplab_fast model compute what TensorFlow DeepLab's graph computes: every resize with
# align_corners=True, BN eps 1e-3 in the backbone and 1e-5 in the heads, image pooling first in the ASPP concat,
# and the graph's preprocessing x * 2 / 255 - 1. TensorFlow's image pooling averages over a kernel derived from
# the crop size, and it feeds its graph the image padded to that crop (scaled with it in multi-scale evaluation),
# so the kernel covers the whole feature map: a global mean, the option image_pooling_crop_size=None. Only a graph
# built with its own image_pooling_crop_size (smaller than the crop) pools locally.
TF_EXACT_OPTIONS: dict[str, Any] = {
    "align_corners": True,
    "aspp_pool_position": "first",
    "bn_eps": 1e-3,
    "head_bn_eps": 1e-5,
    "input_mean": (0.5, 0.5, 0.5),
    "input_std": (0.5, 0.5, 0.5),
}

# bookkeeping a checkpoint may hold besides the model: skipped (the step counter, TF2's object graph, and the
# Momentum optimizer slots of a checkpoint written by DeepLab's train.py)
_SKIPPED_NAMES = ("global_step", "_CHECKPOINTABLE_OBJECT_GRAPH")
_SKIPPED_SUFFIXES = ("/Momentum",)

_BN_NAMES = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))


def _is_skipped(name: str) -> bool:
    return name in _SKIPPED_NAMES or name.endswith(_SKIPPED_SUFFIXES)


# one entry: TensorFlow name -> (the PyTorch tensor it fills, layout "conv" | "depthwise" | "vector")
VariableMap = dict[str, tuple[torch.Tensor, str]]


def _add(out: VariableMap, name: str, tensor: torch.Tensor, layout: str) -> None:
    if name in out:
        raise AssertionError(f"TensorFlow variable {name!r} mapped twice")  # a bug in the mapping, not user input
    out[name] = (tensor, layout)


def _add_bn(out: VariableMap, scope: str, bn: nn.BatchNorm2d) -> None:
    for tf_name, attr in _BN_NAMES:
        _add(out, f"{scope}/BatchNorm/{tf_name}", getattr(bn, attr), "vector")


def _add_conv_bn(out: VariableMap, scope: str, m: ConvBNAct) -> None:
    """slim.conv2d with batch norm: `scope/weights` + `scope/BatchNorm/*`."""
    _add(out, f"{scope}/weights", m.conv.weight, "conv")
    _add_bn(out, scope, m.bn)


def _add_separable(out: VariableMap, scope: str, m: SeparableConv) -> None:
    """A split separable conv: `scope_depthwise/depthwise_weights` + BN, `scope_pointwise/weights` + BN."""
    _add(out, f"{scope}_depthwise/depthwise_weights", m.depthwise.weight, "depthwise")
    if m.dw_bn is not None:
        _add_bn(out, f"{scope}_depthwise", m.dw_bn)
    _add(out, f"{scope}_pointwise/weights", m.pointwise.weight, "conv")
    if m.pw_bn is not None:
        _add_bn(out, f"{scope}_pointwise", m.pw_bn)


def _add_xception(out: VariableMap, scope: str, net: nn.Module) -> None:
    _add_conv_bn(out, f"{scope}/entry_flow/conv1_1", net.conv1)
    _add_conv_bn(out, f"{scope}/entry_flow/conv1_2", net.conv2)
    # TensorFlow: entry/exit flow blocks of one unit each, the middle flow one block of 16 units
    units = [(f"entry_flow/block{i + 1}/unit_1", b) for i, b in enumerate(net.entry_flow)]
    units += [(f"middle_flow/block1/unit_{i + 1}", b) for i, b in enumerate(net.middle_flow)]
    units += [(f"exit_flow/block{i + 1}/unit_1", b) for i, b in enumerate(net.exit_flow)]
    for unit, block in units:
        prefix = f"{scope}/{unit}/xception_module"
        for k, sep in enumerate((block.sep1, block.sep2, block.sep3), 1):
            _add_separable(out, f"{prefix}/separable_conv{k}", sep)
        if block.shortcut is not None:
            _add_conv_bn(out, f"{prefix}/shortcut", block.shortcut)


def _add_conv_bn_seq(out: VariableMap, scope: str, seq: nn.Sequential, layout: str = "conv") -> None:
    """MobileNetV2's Sequential(Conv2d, BatchNorm2d, ...): `scope/weights` (or `scope/depthwise_weights`) + BN."""
    name = "depthwise_weights" if layout == "depthwise" else "weights"
    _add(out, f"{scope}/{name}", seq[0].weight, layout)
    _add_bn(out, scope, seq[1])


def _add_mobilenet_v2(out: VariableMap, scope: str, net: nn.Module) -> None:
    """TensorFlow's `Conv` (the stem), then `expanded_conv`, `expanded_conv_1`, ... (`expand`, `depthwise`,
    `project`; the first unit has no expansion): torchvision's features[0], features[1], features[2], ..."""
    _add_conv_bn_seq(out, f"{scope}/Conv", net.features[0])
    for i, unit in enumerate(net.features[1:]):
        if not isinstance(unit.conv, nn.Sequential) or len(unit.conv) not in (3, 4):
            raise AssertionError(f"MobileNetV2 features[{i + 1}] is not an inverted residual unit")  # a bug
        prefix = f"{scope}/expanded_conv" + (f"_{i}" if i else "")
        layers = list(unit.conv)
        if len(layers) == 4:
            _add_conv_bn_seq(out, f"{prefix}/expand", layers.pop(0))
        _add_conv_bn_seq(out, f"{prefix}/depthwise", layers[0], "depthwise")
        _add(out, f"{prefix}/project/weights", layers[1].weight, "conv")
        _add_bn(out, f"{prefix}/project", layers[2])


def _add_resnet_beta(out: VariableMap, scope: str, net: nn.Module) -> None:
    """resnet_v1_beta: the stem `conv1_1..3`, then `blockB/unit_U/bottleneck_v1/{conv1,conv2,conv3,shortcut}`
    (layerB[U - 1]; only each block's first unit has a shortcut conv, the strided last units subsample)."""
    for i, conv in enumerate(net.stem, 1):
        _add_conv_bn(out, f"{scope}/conv1_{i}", conv)
    for b in range(1, 5):
        for u, unit in enumerate(getattr(net, f"layer{b}"), 1):
            prefix = f"{scope}/block{b}/unit_{u}/bottleneck_v1"
            for k in (1, 2, 3):
                _add(out, f"{prefix}/conv{k}/weights", getattr(unit, f"conv{k}").weight, "conv")
                _add_bn(out, f"{prefix}/conv{k}", getattr(unit, f"bn{k}"))
            if isinstance(unit.downsample, nn.Sequential):
                _add(out, f"{prefix}/shortcut/weights", unit.downsample[0].weight, "conv")
                _add_bn(out, f"{prefix}/shortcut", unit.downsample[1])


def tf_variable_map(model: DeepLab, model_variant: str = "xception_65") -> VariableMap:
    """Every TensorFlow DeepLab variable name of `model` -> (the parameter or buffer it fills, its layout).

    `model` is a DeepLab built as from_tf_checkpoint builds it (backbone of `model_variant`, separable ASPP
    (three atrous branches or none) and decoder with inner BN, no post-ASPP conv, no aux head; MobileNetV2
    without its last conv). Layout "conv": TensorFlow HWIO, "depthwise": HWCM,
    "vector": the same 1-D tensor.
    """
    if model_variant not in MODEL_VARIANTS:
        raise ValueError(f"model_variant must be one of {', '.join(MODEL_VARIANTS)}; got {model_variant!r}")
    out: VariableMap = {}
    if model_variant == "mobilenet_v2":
        _add_mobilenet_v2(out, _BACKBONE_SCOPES[model_variant], model.backbone)
    elif model_variant.startswith("resnet"):
        _add_resnet_beta(out, _BACKBONE_SCOPES[model_variant], model.backbone)
    else:
        _add_xception(out, _BACKBONE_SCOPES[model_variant], model.backbone)
    aspp = model.aspp
    _add_conv_bn(out, "image_pooling", aspp.pool)
    _add_conv_bn(out, "aspp0", aspp.branch1x1)
    for i, branch in enumerate(aspp.branches, 1):
        _add_separable(out, f"aspp{i}", branch)
    _add_conv_bn(out, "concat_projection", aspp.project)
    if model.decoder is not None:
        _add_conv_bn(out, "decoder/feature_projection0", model.decoder.reduce)
        for i, conv in enumerate(model.decoder.convs):
            _add_separable(out, f"decoder/decoder_conv{i}", conv)
    _add(out, "logits/semantic/weights", model.classifier.weight, "conv")
    _add(out, "logits/semantic/biases", model.classifier.bias, "vector")
    return out


def tf_shape(tensor: torch.Tensor, layout: str) -> tuple[int, ...]:
    """The shape TensorFlow stores `tensor` with in `layout` (see tf_variable_map)."""
    shape = tuple(tensor.shape)
    if layout == "conv":
        o, i, h, w = shape
        return (h, w, i, o)
    if layout == "depthwise":
        c, _, h, w = shape
        return (h, w, c, 1)
    return shape


def to_torch_layout(value: torch.Tensor, layout: str) -> torch.Tensor:
    """A TensorFlow variable in `layout` -> PyTorch's layout: HWIO -> OIHW, HWCM -> (C*M, 1, H, W)."""
    if layout == "conv":
        return value.permute(3, 2, 0, 1)
    if layout == "depthwise":
        h, w, c, m = value.shape
        return value.reshape(h, w, c * m).permute(2, 0, 1).unsqueeze(1)
    return value


@contextlib.contextmanager
def checkpoint_prefix(path: str | os.PathLike) -> Iterator[Path]:
    """The checkpoint prefix that `path` names, for the duration of the `with` block.

    `path`: a prefix ("model.ckpt" with "model.ckpt.index" next to it), its `.index` or a `.data-*` file, a
    folder holding one checkpoint, or a `.tar.gz` / `.tgz` / `.tar` archive holding one (the model zoo's
    tarballs; its index and data files are extracted to a temporary folder, removed afterwards).
    """
    p = Path(path)
    name = p.name
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        if not p.is_file():
            raise FileNotFoundError(f"no such archive {str(p)!r}")
        with tempfile.TemporaryDirectory(prefix="deeplab_fast_tf_") as tmp:
            yield _extract_checkpoint(p, Path(tmp))
        return
    if p.is_dir():
        yield _single_prefix(sorted(p.glob("*.index")), f"folder {str(p)!r}")
        return
    if name.endswith(".index"):
        yield p.with_name(name[: -len(".index")])
        return
    if ".data-" in name:
        yield p.with_name(name[: name.rindex(".data-")])
        return
    if not Path(str(p) + ".index").is_file():
        raise FileNotFoundError(
            f"no TensorFlow checkpoint at {str(p)!r}: expected {str(p) + '.index'!r} (a checkpoint prefix), an "
            ".index file, a folder or a .tar.gz archive holding one checkpoint"
        )
    yield p


def _single_prefix(indexes: Sequence[Path], where: str) -> Path:
    if len(indexes) != 1:
        found = ", ".join(str(i) for i in indexes) or "none"
        raise ValueError(f"{where} must hold exactly one TensorFlow checkpoint (one .index file); found {found}")
    return indexes[0].with_name(indexes[0].name[: -len(".index")])


def _extract_checkpoint(archive: Path, dest: Path) -> Path:
    """Extract the one checkpoint's .index and .data-* files of `archive` into `dest` (flat, regular files
    only, so no member can write outside `dest`); returns the prefix there."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            prefix = _single_prefix([Path(m.name) for m in members if m.name.endswith(".index")], str(archive))
            stem = prefix.name
            wanted = [m for m in members if Path(m.name).parent == prefix.parent]
            wanted = [m for m in wanted if Path(m.name).name == stem + ".index" or ".data-" in Path(m.name).name]
            wanted = [m for m in wanted if Path(m.name).name.startswith(stem + ".")]
            for m in wanted:
                src = tar.extractfile(m)
                if src is None:
                    continue
                with src, open(dest / Path(m.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read the archive {str(archive)!r}: {exc}") from None
    return dest / stem


def _tf_exact_model(
    model_variant: str,
    num_classes: int,
    output_stride: int,
    atrous_rates: Sequence[int] | None,
    decoder_output_stride: int | None,
    image_pooling_crop_size: Sequence[int] | None,
    depth_multiplier: float = 1.0,
    multi_grid: Sequence[int] | None = None,
) -> DeepLab:
    if model_variant not in MODEL_VARIANTS:
        raise ValueError(f"model_variant must be one of {', '.join(MODEL_VARIANTS)}; got {model_variant!r}")
    if decoder_output_stride not in (4, None):
        raise ValueError(
            f"decoder_output_stride must be 4 (DeepLabV3+) or None (DeepLabV3), got {decoder_output_stride!r}"
        )
    if not isinstance(depth_multiplier, (int, float)) or isinstance(depth_multiplier, bool) or depth_multiplier <= 0:
        raise ValueError(f"depth_multiplier must be a number > 0, got {depth_multiplier!r}")
    options = dict(TF_EXACT_OPTIONS)
    align_corners = options.pop("align_corners")
    if model_variant == "mobilenet_v2":
        if decoder_output_stride is not None:
            # TensorFlow's MobileNetV2 decoder reads the expanded (depthwise) features of layer 4, not a unit's
            # output as this model's decoder does
            raise ValueError(
                "decoder_output_stride must be None (--decoder-output-stride none) for model_variant 'mobilenet_v2': "
                "the model zoo's MobileNetV2 models are DeepLabV3, without a decoder (a MobileNetV2 decoder is not "
                "supported)"
            )
        # TensorFlow DeepLab's MobileNetV2: no last 1x1 conv (features end at layer_18, 320 channels); the unit
        # that would stride keeps the old dilation; depth multipliers other than 1 round channels to multiples
        # of 1 (feature_extractor's divisible_by and min_depth)
        options.update(
            mobilenet_last_conv=False,
            dilate_first_block=False,
            width_mult=float(depth_multiplier),
            mobilenet_divisible_by=8 if depth_multiplier == 1.0 else 1,
        )
    elif depth_multiplier != 1.0:
        raise ValueError(f"depth_multiplier applies to model_variant 'mobilenet_v2' only, got {depth_multiplier!r}")
    if multi_grid is not None:
        if model_variant == "mobilenet_v2":
            raise ValueError("multi_grid applies to the Xception and ResNet variants; mobilenet_v2 has none")
        options["multi_grid"] = multi_grid  # deeplabv3plus checks it
    elif model_variant.startswith("resnet"):
        options["multi_grid"] = (1, 1, 1)  # TensorFlow's default; deeplab_fast's resnet*_beta default is (1, 2, 4)
    if model_variant.startswith("resnet"):
        options["bn_eps"] = 1e-5  # feature_extractor's ResNet arg scope (Xception's: 1e-3)
    # TensorFlow's usual rates for the stride are the builder's default (aspp_rates=None): the model (its config,
    # the file save_weights writes) then rescales them when the output stride changes (set_output_stride, eval's
    # --set model.output_stride=8) rather than keeping the OS16 rates at OS8
    default = tuple(r * 16 // output_stride for r in (6, 12, 18)) if output_stride in (8, 16, 32) else None
    if atrous_rates is None:  # the model zoo's rates of the variant
        aspp_rates = None if _ZOO_RATES[model_variant] else ()
    else:
        rates = tuple(atrous_rates)
        if len(rates) not in (0, 3) or not all(type(r) is int and r >= 1 for r in rates):
            raise ValueError(
                f"atrous_rates must be three ints >= 1, () (no atrous ASPP branches) or None, got {atrous_rates!r}"
            )
        aspp_rates = None if rates == default else rates
    return deeplabv3plus(
        MODEL_VARIANTS[model_variant],
        num_classes,
        output_stride,
        separable=True,
        decoder=decoder_output_stride is not None,
        align_corners=align_corners,
        aspp_rates=aspp_rates,
        image_pooling_crop_size=None if image_pooling_crop_size is None else tuple(image_pooling_crop_size),
        **options,
    )


def load_tf_variables(model: DeepLab, bundle: TensorBundle, model_variant: str) -> None:
    """Copy every variable of `bundle` into `model` (in place, through tf_variable_map).

    Raises ValueError listing the unused checkpoint variables, the model's variables the checkpoint lacks and
    the shape mismatches, when there is any; nothing is copied then.
    """
    mapping = tf_variable_map(model, model_variant)
    names = [n for n in bundle.names() if not _is_skipped(n)]
    unused = sorted(set(names) - set(mapping))
    missing = sorted(set(mapping) - set(names))
    mismatched = [
        f"{n} {bundle.shape(n)} (expected {tf_shape(t, layout)})"
        for n, (t, layout) in sorted(mapping.items())
        if n in bundle.entries and bundle.shape(n) != tf_shape(t, layout)
    ]
    if unused or missing or mismatched:
        parts = []
        for what, items in (("unused", unused), ("missing", missing), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
                parts.append(f"{what} ({len(items)}): {shown}")
        raise ValueError(
            f"TensorFlow checkpoint {str(bundle.prefix)!r} does not match DeepLab model_variant {model_variant!r} "
            f"with these arguments: " + "; ".join(parts)
        )
    with torch.no_grad():
        for name, (tensor, layout) in mapping.items():
            value = bundle.read(name)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ValueError(f"TensorFlow checkpoint {str(bundle.prefix)!r}: {name!r} is not a float tensor")
            tensor.copy_(to_torch_layout(value, layout))


def from_tf_checkpoint(
    path: str | os.PathLike,
    *,
    model_variant: str = "xception_65",
    num_classes: int | None = None,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    decoder_output_stride: int | None = 4,
    image_pooling_crop_size: Sequence[int] | None = None,
    depth_multiplier: float = 1.0,
    multi_grid: Sequence[int] | None = None,
) -> DeepLab:
    """Convert a TensorFlow DeepLab checkpoint (the model zoo's, or DeepLab's train.py's) to a deeplab_fast model.

    The arguments are the TensorFlow flags of the same names (`decoder_output_stride=None`: no decoder,
    DeepLabV3). Read without TensorFlow.

    Args:
        path: the checkpoint: a prefix ("model.ckpt" next to "model.ckpt.index" and "model.ckpt.data-*"), its
            .index file, a folder or a .tar.gz archive holding one checkpoint (see checkpoint_prefix).
        model_variant: "xception_65", "xception_71", "mobilenet_v2" (the model zoo's MobileNetV2 models:
            DeepLabV3, so with decoder_output_stride=None), "resnet_v1_50_beta" or "resnet_v1_101_beta".
        num_classes: output classes; None reads them from the checkpoint's `logits/semantic` layer.
        output_stride: 8, 16 or 32 (TensorFlow evaluated VOC at 8 or 16; any works with the same weights).
        atrous_rates: the three ASPP rates at that output stride ((6, 12, 18) at 16, (12, 24, 36) at 8), or ()
            for none (image pooling and the 1x1 branch only). None: the model zoo's for the variant, (6, 12, 18)
            x 16 / output_stride for Xception, () for mobilenet_v2.
        decoder_output_stride: 4 (DeepLabV3+) or None (DeepLabV3).
        image_pooling_crop_size: TensorFlow's flag of that name: None (the default, and the model zoo's) pools
            over the whole crop, a global mean here at any input size; (height, width) pools with the kernel
            TensorFlow derives from it (model option image_pooling_crop_size; exact at the crop size: TensorFlow
            scales that kernel with the image in multi-scale evaluation, this model keeps it).
        depth_multiplier: mobilenet_v2's width (the model zoo's 1.0 and 0.5), TensorFlow's flag of that name.
        multi_grid: TensorFlow's flag: the atrous multipliers of the last block's three units (ResNet) or convs
            (Xception), e.g. (1, 2, 4); None is TensorFlow's default, all ones (model option multi_grid).

    Returns:
        A DeepLab in eval mode in TensorFlow-exact mode (TF_EXACT_OPTIONS; its config records them, so
        save_weights writes a file that load_model rebuilds the same): it takes images normalised as
        x * 2 / 255 - 1 (input_mean = input_std = 0.5 of pixels in [0, 1]) and returns logits resized with
        align_corners=True.

    Raises:
        FileNotFoundError for a path without a checkpoint; ValueError for an unreadable checkpoint, bad
        arguments, or variables that do not match (the error lists the unused, missing and mismatched ones).
    """
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an int >= 1 or None (read from the checkpoint), got {num_classes!r}")
    if atrous_rates is not None and not isinstance(atrous_rates, Sequence):
        raise ValueError(f"atrous_rates must be three ints, () or None, got {atrous_rates!r}")
    with checkpoint_prefix(path) as prefix:
        bundle = TensorBundle(prefix)
        logits = "logits/semantic/weights"
        if logits not in bundle.entries:
            raise ValueError(
                f"TensorFlow checkpoint {str(prefix)!r} has no {logits!r}: not a DeepLab segmentation checkpoint "
                "(an ImageNet backbone checkpoint holds no DeepLab heads)"
            )
        classes = bundle.shape(logits)[-1]
        if num_classes is not None and num_classes != classes:
            raise ValueError(f"num_classes={num_classes} but the checkpoint's logits layer has {classes} classes")
        model = _tf_exact_model(
            model_variant,
            classes,
            output_stride,
            atrous_rates,
            decoder_output_stride,
            image_pooling_crop_size,
            depth_multiplier,
            multi_grid,
        )
        load_tf_variables(model, bundle, model_variant)
    return model.eval()


__all__ = [
    "MODEL_VARIANTS",
    "TF_EXACT_OPTIONS",
    "checkpoint_prefix",
    "from_tf_checkpoint",
    "load_tf_variables",
    "tf_shape",
    "tf_variable_map",
    "to_torch_layout",
]
