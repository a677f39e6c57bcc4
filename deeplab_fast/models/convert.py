"""Drop-in converters from torchvision's and segmentation_models_pytorch's DeepLab models.

Each reads the source model's structure (depth, output stride, dilation rule, ASPP rates, dropout,
align_corners), builds the equivalent deeplab_fast DeepLab and copies every parameter and buffer, so
the converted model's eval-mode output equals the source's (fp32, up to rounding).
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from deeplab_fast.models.deeplab import DeepLab, deeplabv3plus

TORCHVISION_SUPPORTED = "torchvision deeplabv3_resnet50 / deeplabv3_resnet101 (with or without aux classifier)"
SMP_SUPPORTED = (
    "segmentation_models_pytorch DeepLabV3 / DeepLabV3Plus with encoder 'resnet50', 'resnet101' or "
    "'mobilenet_v2', encoder_depth=5, in_channels=3, no activation, no aux_params, output = input size"
)


def _copy(dst: nn.Module, src: nn.Module, what: str) -> None:
    """Load src's parameters and buffers into dst (same names and shapes), naming `what` on mismatch."""
    src_sd = src.state_dict()
    dst_sd = dst.state_dict()
    missing = sorted(set(dst_sd) - set(src_sd))
    unexpected = sorted(set(src_sd) - set(dst_sd))
    shapes = [k for k in dst_sd if k in src_sd and dst_sd[k].shape != src_sd[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"cannot convert {what}: missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {shapes[:5]}"
        )
    dst.load_state_dict(src_sd, strict=True)


def _copy_conv_bn(dst: nn.Module, conv: nn.Module, bn: nn.Module, what: str) -> None:
    _copy(dst.conv, conv, what + " conv")
    _copy(dst.bn, bn, what + " bn")


def _resnet_info(net: nn.Module, what: str) -> tuple[str, int, bool]:
    """(depth name, output stride, dilate_first_block) of a torchvision-style ResNet."""
    from torchvision.models.resnet import Bottleneck

    layers = [getattr(net, f"layer{i}", None) for i in range(1, 5)]
    if any(layer is None for layer in layers) or not isinstance(layers[0][0], Bottleneck):
        raise TypeError(f"unsupported {what}: expected a bottleneck ResNet-50/101; supported: {TORCHVISION_SUPPORTED}")
    counts = tuple(len(layer) for layer in layers)
    depth = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}.get(counts)
    if depth is None:
        raise TypeError(
            f"unsupported {what}: ResNet with blocks {counts}; only ResNet-50 (3,4,6,3) and -101 (3,4,23,3)"
        )
    if net.conv1.in_channels != 3:
        raise TypeError(f"unsupported {what}: {net.conv1.in_channels} input channels; only 3 (RGB)")
    stride = 4
    for layer in layers[1:]:
        stride *= layer[0].conv2.stride[0]
    last = layers[3]
    first_dil, later_dil = last[0].conv2.dilation[0], last[1].conv2.dilation[0]
    dilate_first = first_dil == later_dil
    if stride not in (8, 16, 32):
        raise TypeError(f"unsupported {what}: output stride {stride}")
    return depth, stride, dilate_first


def _aspp_settings(aspp: nn.Module) -> dict[str, Any]:
    """ASPP rates, dropout, channels and separable flag of a torchvision/smp ASPP module."""
    branches = aspp.convs[1:4]
    separable = type(branches[0]).__name__ == "ASPPSeparableConv"
    if separable:
        rates = tuple(b[0][0].dilation[0] for b in branches)
    else:
        rates = tuple(b[0].dilation[0] for b in branches)
    return {
        "aspp_rates": rates,
        "aspp_dropout": float(aspp.project[3].p),
        "aspp_channels": aspp.project[0].out_channels,
        "aspp_separable": separable,
        "aspp_pool_position": "last",
    }


def _copy_aspp(dst: nn.Module, aspp: nn.Module) -> None:
    _copy_conv_bn(dst.branch1x1, aspp.convs[0][0], aspp.convs[0][1], "ASPP 1x1 branch")
    for i, (d, s) in enumerate(zip(dst.branches, aspp.convs[1:4], strict=True)):
        if hasattr(d, "depthwise"):
            _copy(d.depthwise, s[0][0], f"ASPP branch {i} depthwise")
            _copy(d.pointwise, s[0][1], f"ASPP branch {i} pointwise")
            _copy(d.pw_bn, s[1], f"ASPP branch {i} bn")
        else:
            _copy_conv_bn(d, s[0], s[1], f"ASPP branch {i}")
    _copy_conv_bn(dst.pool, aspp.convs[4][1], aspp.convs[4][2], "ASPP pooling")
    _copy_conv_bn(dst.project, aspp.project[0], aspp.project[1], "ASPP projection")


def _copy_smp_separable(dst: nn.Module, sep: nn.Module, bn: nn.Module, what: str) -> None:
    _copy(dst.depthwise, sep[0], what + " depthwise")
    _copy(dst.pointwise, sep[1], what + " pointwise")
    _copy(dst.pw_bn, bn, what + " bn")


def from_torchvision(model: nn.Module) -> DeepLab:
    """Convert torchvision's deeplabv3_resnet50/101 (aux classifier or not) to an equivalent DeepLab.

    The result's forward returns {"out": (N, K, H, W)} plus "aux" when the source has an aux classifier,
    like torchvision's. Output stride, ASPP rates, dropout and the dilation rule are read from the model.
    """
    try:
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
        from torchvision.models.segmentation.fcn import FCNHead
    except ImportError as exc:  # pragma: no cover - torchvision is a test dependency
        raise ImportError("from_torchvision needs torchvision installed") from exc
    if not isinstance(model, DeepLabV3) or not isinstance(model.classifier, DeepLabHead):
        raise TypeError(f"from_torchvision supports {TORCHVISION_SUPPORTED}; got {type(model).__name__}")
    depth, stride, dilate_first = _resnet_info(model.backbone, "torchvision backbone")
    head = model.classifier
    aux = model.aux_classifier
    if aux is not None and not isinstance(aux, FCNHead):
        raise TypeError(f"unsupported aux classifier {type(aux).__name__}; supported: {TORCHVISION_SUPPORTED}")
    num_classes = head[4].out_channels
    out = deeplabv3plus(
        depth,
        num_classes=num_classes,
        output_stride=stride,
        separable=False,
        decoder=False,
        align_corners=False,
        post_aspp_conv="dense",
        dilate_first_block=dilate_first,
        bn_eps=model.backbone.bn1.eps,
        aux_head=aux is not None,
        output_dict=True,
        **_aspp_settings(head[0]),
    )
    _copy(out.backbone, model.backbone, "backbone")
    _copy_aspp(out.aspp, head[0])
    _copy_conv_bn(out.post_aspp, head[1], head[2], "conv after ASPP")
    _copy(out.classifier, head[4], "classifier")
    if aux is not None:
        _copy_conv_bn(out.aux.conv, aux[0], aux[1], "aux classifier")
        _copy(out.aux.classifier, aux[4], "aux classifier")
    return out.train(model.training)


def from_smp(model: nn.Module) -> DeepLab:
    """Convert segmentation_models_pytorch DeepLabV3 / DeepLabV3Plus to an equivalent DeepLab.

    Supported encoders: resnet50, resnet101, mobilenet_v2 (depth 5). Forward returns a (N, K, H, W)
    tensor like smp's. Inputs must have sides divisible by the output stride (smp's own requirement);
    then the outputs match.
    """
    try:
        import segmentation_models_pytorch as smp
        from segmentation_models_pytorch.encoders.mobilenet import MobileNetV2Encoder
        from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
    except ImportError as exc:  # pragma: no cover
        raise ImportError("from_smp needs segmentation_models_pytorch installed") from exc
    plus = isinstance(model, smp.DeepLabV3Plus)
    if not plus and not isinstance(model, smp.DeepLabV3):
        raise TypeError(f"from_smp supports {SMP_SUPPORTED}; got {type(model).__name__}")
    enc = model.encoder
    if getattr(model, "classification_head", None) is not None:
        raise TypeError(f"from_smp: aux_params (classification head) is not supported; supported: {SMP_SUPPORTED}")
    act = model.segmentation_head[2]
    if not isinstance(getattr(act, "activation", None), nn.Identity):
        raise TypeError(f"from_smp: an output activation is not supported (use activation=None); {SMP_SUPPORTED}")
    if getattr(enc, "_depth", 5) != 5:
        raise TypeError(f"from_smp: encoder_depth={enc._depth} is not supported; {SMP_SUPPORTED}")
    options: dict[str, Any] = {}
    if isinstance(enc, ResNetEncoder):
        backbone, _, dilate_first = _resnet_info(enc, "smp encoder")
        options["dilate_first_block"] = dilate_first
    elif isinstance(enc, MobileNetV2Encoder):
        backbone = "mobilenet_v2"
        if enc.features[0][0].in_channels != 3 or len(enc.features) != 19 or enc.features[18][0].out_channels != 1280:
            raise TypeError(f"from_smp: unsupported MobileNetV2 variant; {SMP_SUPPORTED}")
    else:
        raise TypeError(f"from_smp: unsupported encoder {type(enc).__name__}; {SMP_SUPPORTED}")
    stride = int(getattr(enc, "_output_stride", 32))
    head_conv, up = model.segmentation_head[0], model.segmentation_head[1]
    scale = float(getattr(up, "scale_factor", 1.0) or 1.0)
    align = bool(getattr(up, "align_corners", False))
    if head_conv.kernel_size != (1, 1):
        raise TypeError(f"from_smp: a {head_conv.kernel_size} head conv is not supported, only 1x1; {SMP_SUPPORTED}")
    dec = model.decoder
    if plus:
        aspp = dec.aspp[0]
        expected = 4 if stride == 16 else 2
        if dec.up.scale_factor != expected or scale * expected != stride:
            raise TypeError(
                f"from_smp: upsampling factors {dec.up.scale_factor}, {scale} do not restore the input size"
            )
        if bool(dec.up.align_corners) != align:
            raise TypeError("from_smp: decoder and head use different align_corners; not supported")
        options.update(
            post_aspp_conv="separable",
            decoder_convs=1,
            decoder_separable=True,
            low_level_channels=dec.block1[0].out_channels,
            separable_inner_bn=False,
        )
    else:
        aspp = dec.aspp
        if scale != stride:
            raise TypeError(f"from_smp: upsampling={scale} differs from the output stride {stride}; not supported")
        options.update(post_aspp_conv="dense", separable_inner_bn=False)
    options.update(_aspp_settings(aspp))
    out = deeplabv3plus(
        backbone,
        num_classes=head_conv.out_channels,
        output_stride=stride,
        separable=True,
        decoder=plus,
        align_corners=align,
        **options,
    )
    _copy(out.backbone, enc, "encoder")
    _copy_aspp(out.aspp, aspp)
    if plus:
        _copy_smp_separable(out.post_aspp, dec.aspp[1], dec.aspp[2], "conv after ASPP")
        _copy_conv_bn(out.decoder.reduce, dec.block1[0], dec.block1[1], "decoder low-level conv")
        _copy_smp_separable(out.decoder.convs[0], dec.block2[0], dec.block2[1], "decoder conv")
    else:
        _copy_conv_bn(out.post_aspp, dec.conv, dec.bn, "conv after ASPP")
    _copy(out.classifier, head_conv, "segmentation head")
    return out.train(model.training)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deprecated (removed in the next release): use deeplab_fast.testing.randomize_batchnorm.

    Gives every BatchNorm of `model` random affine parameters and running statistics in place; returns `model`.
    """
    warnings.warn(
        "deeplab_fast.models.convert.randomize_batchnorm is deprecated and will be removed in the next release; "
        "use deeplab_fast.testing.randomize_batchnorm",
        DeprecationWarning,
        stacklevel=2,
    )
    from deeplab_fast.testing import randomize_batchnorm as supported

    return supported(model, seed)
