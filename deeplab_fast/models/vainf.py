"""Checkpoints of VainF/DeepLabV3Plus-Pytorch (github.com/VainF/DeepLabV3Plus-Pytorch) by key mapping.

That repository saves {"model_state": state dict, "optimizer_state", "scheduler_state", "cur_itrs",
"best_score"} (main.py, save_ckpt). Its models (network/modeling.py, network/_deeplab.py) are:

- backbone (network/backbone/resnet.py, mobilenetv2.py, through network/utils.py's IntermediateLayerGetter):
  ResNet-50/101 with torchvision's names up to layer4 (`backbone.conv1`, `backbone.bn1`, `backbone.layerN...`;
  torchvision's dilation rule), or MobileNetV2 split into `backbone.low_level_features` (features[:4]) and
  `backbone.high_level_features` (features[4:-1], no final 1x1 conv; 320 channels); its stem conv has no
  padding and each unit zero-pads its input before the expansion (our mobilenet_padding="block_input").
- DeepLabV3+ head `classifier` (DeepLabHeadV3Plus): `project` (1x1 conv 48 + BN + ReLU on the low-level
  features), `aspp` (convs.0: 1x1, convs.1-3: dense 3x3 atrous, convs.4: image pool (pool, conv, BN, ReLU), then
  `project`: 1x1 + BN + ReLU + dropout 0.1; the pool branch last), `classifier`: 3x3 conv 256 + BN + ReLU on
  cat[low, upsampled ASPP] (low-level channels FIRST), then a 1x1 conv with bias.
- DeepLabV3 head `classifier.classifier` (DeepLabHead): 0: ASPP, 1-2: 3x3 conv 256 + BN (+ ReLU), 4: 1x1 conv.
- `--separable_conv` (V3+ only, network/_deeplab.py's convert_to_separable_conv) turns every 3x3 conv of the
  head into `body.0` (depthwise) + `body.1` (pointwise), no BN between.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

# architecture of every VainF model, in deeplabv3plus keyword arguments (backbone, num_classes, decoder and the
# separable options come from the state dict)
_COMMON = {
    "output_stride": 16,
    "align_corners": False,
    "aspp_pool_position": "last",
    "aspp_channels": 256,
    "aspp_dropout": 0.1,
    "low_level_channels": 48,
    "decoder_convs": 1,
    "dilate_first_block": False,
    "mobilenet_last_conv": False,
    "mobilenet_padding": "block_input",
}
_LOW_LEVEL = 48  # channels of the reduced low-level features, first in VainF's decoder concat


def _detect(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """deeplabv3plus keyword arguments of the VainF model whose state dict this is (ValueError if none fits)."""
    if any(k.startswith("backbone.layer1.") for k in sd):
        units = {k.split(".")[2] for k in sd if k.startswith("backbone.layer3.")}
        backbone = {"6": "resnet50", "23": "resnet101"}.get(str(len(units)))
        if backbone is None:
            raise ValueError(f"VainF ResNet backbone with {len(units)} units in layer3: only resnet50/101 convert")
    elif any(k.startswith("backbone.low_level_features.") for k in sd):
        backbone = "mobilenet_v2"
    else:
        raise ValueError(
            "not a VainF/DeepLabV3Plus-Pytorch ResNet-50/101 or MobileNetV2 model (no backbone.layer1.* or "
            "backbone.low_level_features.* keys; HRNet models do not convert)"
        )
    decoder = "classifier.project.0.weight" in sd
    if not decoder and "classifier.classifier.0.project.0.weight" not in sd:
        raise ValueError("not a VainF DeepLabV3 or DeepLabV3+ head (no classifier.project / classifier.classifier.0)")
    separable = decoder and "classifier.aspp.convs.1.0.body.0.weight" in sd
    final = sd["classifier.classifier.3.weight" if decoder else "classifier.classifier.4.weight"]
    kwargs = {"backbone": backbone, "num_classes": int(final.shape[0]), "decoder": decoder, **_COMMON}
    kwargs.update(separable=separable, aspp_separable=separable, decoder_separable=separable)
    kwargs["separable_inner_bn"] = not separable  # VainF's separable convs have no BN between (smp's layout)
    kwargs["post_aspp_conv"] = "none" if decoder else "dense"
    return kwargs


def _conv_bn(prefix: str, conv: str, bn: str, separable: bool) -> dict[str, str]:
    """Key prefixes of a (separable) conv + BN: theirs -> ours."""
    if separable:
        return {
            f"{prefix}.body.0.": f"{conv}.depthwise.",
            f"{prefix}.body.1.": f"{conv}.pointwise.",
            bn: f"{conv}.pw_bn.",
        }
    return {f"{prefix}.": f"{conv}.conv.", bn: f"{conv}.bn."}


def _prefixes(kwargs: dict[str, Any]) -> dict[str, str]:
    """VainF key prefix -> ours, for the head of the model `kwargs` describes."""
    sep = kwargs["separable"]
    aspp = "classifier.aspp" if kwargs["decoder"] else "classifier.classifier.0"
    out = {
        f"{aspp}.convs.0.0.": "aspp.branch1x1.conv.",
        f"{aspp}.convs.0.1.": "aspp.branch1x1.bn.",
        f"{aspp}.convs.4.1.": "aspp.pool.conv.",
        f"{aspp}.convs.4.2.": "aspp.pool.bn.",
        f"{aspp}.project.0.": "aspp.project.conv.",
        f"{aspp}.project.1.": "aspp.project.bn.",
    }
    for i in range(3):
        out.update(_conv_bn(f"{aspp}.convs.{i + 1}.0", f"aspp.branches.{i}", f"{aspp}.convs.{i + 1}.1.", sep))
    if kwargs["decoder"]:
        out["classifier.project.0."] = "decoder.reduce.conv."
        out["classifier.project.1."] = "decoder.reduce.bn."
        out.update(_conv_bn("classifier.classifier.0", "decoder.convs.0", "classifier.classifier.1.", sep))
        out["classifier.classifier.3."] = "classifier."
    else:
        out["classifier.classifier.1."] = "post_aspp.conv."
        out["classifier.classifier.2."] = "post_aspp.bn."
        out["classifier.classifier.4."] = "classifier."
    return out


def _backbone_key(key: str, backbone: str) -> str | None:
    if backbone != "mobilenet_v2":
        return key if re.match(r"backbone\.(conv1|bn1|layer[1-4])\.", key) else None
    m = re.match(r"backbone\.(low_level|high_level)_features\.(\d+)\.(.+)$", key)
    if m is None:
        return None
    index = int(m[2]) + (4 if m[1] == "high_level" else 0)
    return f"backbone.features.{index}.{m[3]}"


def _low_level_last(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Move VainF's decoder input order cat[low (48), high] to ours, cat[high, low (48)], along `dim`."""
    low, high = weight.narrow(dim, 0, _LOW_LEVEL), weight.narrow(dim, _LOW_LEVEL, weight.shape[dim] - _LOW_LEVEL)
    return torch.cat([high, low], dim=dim).contiguous()


def map_vainf_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(deeplabv3plus keyword arguments, state dict in our names) of a VainF model state dict.

    Raises ValueError listing the keys that have no place in our model (e.g. an HRNet or a modified model).
    """
    kwargs = _detect(sd)
    prefixes = _prefixes(kwargs)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in sd.items():
        new = _backbone_key(key, kwargs["backbone"]) if key.startswith("backbone.") else None
        if new is None:
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            new = None if prefix is None else prefixes[prefix] + key[len(prefix) :]
        if new is None:
            unmapped.append(key)
            continue
        if new.startswith("decoder.convs.0.") and new.endswith((".conv.weight", ".pointwise.weight")):
            value = _low_level_last(value, 1)
        elif new.startswith("decoder.convs.0.depthwise."):
            value = _low_level_last(value, 0)
        out[new] = value
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} key(s) of the VainF checkpoint have no place in deeplabv3plus({kwargs['backbone']!r}, "
            f"decoder={kwargs['decoder']}): {', '.join(unmapped[:20])}"
        )
    return kwargs, out


def _numpy_scalar_globals() -> list[Any]:
    """What torch.load(weights_only=True) must accept to read a numpy scalar (VainF stores best_score as one)."""
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    # checkpoints pickled by numpy 1.x name it numpy.core.multiarray.scalar
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype,
            *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64)}]  # fmt: skip


def read_vainf_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The model state dict of a VainF checkpoint file (torch.load with weights_only=True; numpy scalars
    allowed). A "model_state" wrapper and a DataParallel "module." prefix are removed."""
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"could not read {path!r} with torch.load(weights_only=True) (arbitrary pickled objects are refused on "
            f"purpose, and the file may be truncated or corrupt): {exc}"
        ) from None
    sd = raw.get("model_state", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path!r} holds no VainF model state (a 'model_state' mapping of names to tensors)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


__all__ = ["map_vainf_state_dict", "read_vainf_checkpoint"]
