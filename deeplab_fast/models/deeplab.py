"""DeepLabV3 / DeepLabV3+ model and its factory."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from deeplab_fast.models.aspp import ASPP
from deeplab_fast.models.backbones.mobilenetv2 import PADDINGS, InvertedResidual, MobileNetV2
from deeplab_fast.models.backbones.resnet import ResNet, Subsample
from deeplab_fast.models.backbones.xception import Xception
from deeplab_fast.models.decoder import Decoder
from deeplab_fast.models.layers import ConvBNAct, ResizeConcat, conv_block

BACKBONES = (
    "resnet50",
    "resnet101",
    "xception65",
    "xception71",
    "mobilenet_v2",
    "resnet50_beta",
    "resnet101_beta",
    "xception41",
)
OUTPUT_STRIDES = (8, 16, 32)
MIN_SIZE = 32

# option -> (default, description); the README's options table is generated from the same words.
OPTIONS: dict[str, tuple[Any, str]] = {
    "aspp_rates": (
        None,
        "three ASPP dilations, or () for no atrous branches (TensorFlow's MobileNetV2 models); default "
        "(6, 12, 18) x 16 / output_stride",
    ),
    "aspp_channels": (256, "channels of every ASPP branch and of its projection"),
    "aspp_dropout": (0.1, "dropout after the ASPP projection"),
    "aspp_separable": (None, "separable ASPP 3x3 branches; default: `separable`"),
    "aspp_pool_position": (
        "first",
        "image-pool branch 'first' (TensorFlow) or 'last' (torchvision, smp) in the concat",
    ),
    "image_pooling_crop_size": (
        None,
        "(h, w): image pooling averages with TensorFlow's kernel for that crop, (crop - 1) // output_stride + 1; "
        "None: global mean",
    ),
    "separable_inner_bn": (True, "BN + ReLU between depthwise and pointwise convs of the heads (False: smp)"),
    "post_aspp_conv": ("none", "extra 3x3 conv + BN + ReLU after ASPP: 'none', 'dense' or 'separable'"),
    "decoder_convs": (2, "number of 3x3 conv blocks in the decoder"),
    "decoder_separable": (None, "separable decoder convs; default: `separable`"),
    "low_level_channels": (48, "channels the stride-4 features are reduced to in the decoder"),
    "bn_eps": (None, "backbone BatchNorm eps; default 1e-3 for Xception (TensorFlow), 1e-5 otherwise"),
    "head_bn_eps": (None, "BatchNorm eps of ASPP, decoder and aux head; default: the backbone's (TensorFlow: 1e-5)"),
    "input_mean": (None, "per-channel mean of the input normalisation, of pixels in [0, 1]; default ImageNet's"),
    "input_std": (None, "per-channel std of the input normalisation; default ImageNet's (TensorFlow: 0.5 and 0.5)"),
    "multi_grid": (
        None,
        "dilation multipliers of the last block: ResNet layer4's 3 units, Xception's last 3 separable convs, "
        "e.g. (1, 2, 4); default all ones (resnet*_beta: (1, 2, 4))",
    ),
    "dilate_first_block": (
        None,
        "the unit whose stride became a dilation uses the new dilation (True) or the old one (False: torchvision, "
        "TensorFlow, exact atrous); default True for resnet50/101 and MobileNetV2, False for Xception and *_beta",
    ),
    "width_mult": (1.0, "scales every backbone width (small models for tests)"),
    "mobilenet_last_conv": (True, "MobileNetV2: keep the final 1x1 conv to 1280 channels"),
    "mobilenet_divisible_by": (
        8,
        "MobileNetV2: width_mult rounds channels to multiples of this (TensorFlow DeepLab's 0.5 multiplier: 1)",
    ),
    "mobilenet_padding": (
        "zero",
        "MobileNetV2: 'zero' pads each 3x3 conv (torchvision); 'block_input' pads each unit's input before its "
        "expansion and not the stem (VainF/DeepLabV3Plus-Pytorch)",
    ),
    "aux_head": (False, "auxiliary FCN head on the stride-16 stage (torchvision's aux classifier)"),
    "output_dict": (False, "forward returns {'out': logits[, 'aux': aux logits]} (torchvision style)"),
}


def list_backbones() -> list[str]:
    """Names accepted by deeplabv3plus(backbone=...)."""
    return list(BACKBONES)


def check_image_batch(x: Any) -> None:
    """Raise a clear error unless x is a float (N, 3, H, W) tensor with H, W >= 32."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"input must be 4-D (N, 3, H, W), got {x.dim()}-D with shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"input must have 3 channels (N, 3, H, W), got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating point tensor (normalized image), got {x.dtype}; use x.float()")
    if x.shape[2] < MIN_SIZE or x.shape[3] < MIN_SIZE:
        raise ValueError(f"input height and width must be >= {MIN_SIZE}, got {tuple(x.shape[2:])}")


class AuxHead(nn.Module):
    """torchvision's FCN auxiliary head: 3x3 conv (C/4) + BN + ReLU, dropout 0.1, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, eps: float) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, in_channels // 4, 3, eps=eps)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(in_channels // 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def _check_input_dtype(x: torch.Tensor, model: nn.Module) -> None:
    """Raise before any conv runs when x's dtype differs from the model's (outside autocast)."""
    param = next(model.parameters(), None)
    if param is None or x.dtype == param.dtype or torch.is_autocast_enabled(x.device.type):
        return
    raise TypeError(
        f"input dtype {x.dtype} does not match the model's dtype {param.dtype}; convert the input with "
        f"x.to({param.dtype}) (or the model with model.to({x.dtype}))"
    )


class DeepLab(nn.Module):
    """DeepLabV3+ (decoder=True) or DeepLabV3: (N, 3, H, W) float -> (N, num_classes, H, W) logits.

    Build it with deeplabv3plus(); attributes: backbone, aspp, post_aspp (or None), decoder (or None),
    classifier (1x1 conv with bias), aux (AuxHead or None), resize (the final bilinear upsampling, a
    ResizeConcat), align_corners, output_dict, config (the builder's keyword arguments: deeplabv3plus(**config)
    rebuilds the architecture), channels_last (input converted to channels_last first) and optimized (None, or
    the settings of the deeplab_fast.optimize() call that made this copy).
    """

    def __init__(
        self,
        backbone: nn.Module,
        aspp: ASPP,
        post_aspp: nn.Module | None,
        decoder: Decoder | None,
        classifier: nn.Conv2d,
        aux: AuxHead | None,
        *,
        align_corners: bool,
        output_dict: bool,
        config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = aspp
        self.post_aspp = post_aspp
        self.decoder = decoder
        self.classifier = classifier
        self.aux = aux
        self.resize = ResizeConcat(align_corners)
        self.align_corners = align_corners
        self.output_dict = output_dict
        self.config = config
        self.channels_last = False
        self.optimized: dict[str, Any] | None = None

    def set_output_stride(self, output_stride: int) -> None:
        """Switch the encoder to another output stride in place (8, 16 or 32), keeping every weight.

        The strides and dilations of the backbone's convolutions and the ASPP rates become those that
        deeplabv3plus(**config, output_stride=output_stride) builds (explicit `aspp_rates` are scaled by
        old / new stride), and config["output_stride"] follows; the paper evaluates OS16-trained weights at OS8
        this way. With dilate_first_block=False (the exact atrous rule) the OS8 backbone output subsampled by 2
        (x[..., ::2, ::2], odd input sizes) equals the OS16 one. Call it on the eager model, before optimize().

        Raises ValueError for another stride or explicit ASPP rates that do not scale to ints, RuntimeError on an
        optimize()d copy.
        """
        if self.optimized is not None:
            raise RuntimeError(
                "set_output_stride changes the eager model's convolutions; call it before deeplab_fast.optimize() "
                "(or on the model this optimized copy came from) and optimize again"
            )
        if not _is_int(output_stride) or output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of the ints {OUTPUT_STRIDES}, got {output_stride!r}")
        old = self.config["output_stride"]
        if output_stride == old:
            return
        config = {**self.config, "output_stride": output_stride}
        if config.get("aspp_rates") is not None:
            rates = [r * old / output_stride for r in config["aspp_rates"]]
            if not all(r == int(r) and r >= 1 for r in rates):
                raise ValueError(
                    f"aspp_rates {self.config['aspp_rates']} at output stride {old} do not scale to ints at output "
                    f"stride {output_stride} ({rates})"
                )
            config["aspp_rates"] = [int(r) for r in rates]
        with torch.device("meta"):  # the same architecture at the new stride, without memory or initialisation
            template = deeplabv3plus(**config)
        own = dict(self.named_modules())
        for name, t in template.named_modules():
            m = own.get(name)
            if type(m) is not type(t):
                raise RuntimeError(f"set_output_stride: module {name!r} is {type(m).__name__}, expected {type(t)}")
            if isinstance(t, nn.Conv2d):
                m.stride, m.padding, m.dilation = t.stride, t.padding, t.dilation
            elif isinstance(t, Subsample):
                m.stride = t.stride
            elif isinstance(t, InvertedResidual):
                m.input_pad = t.input_pad
        self.aspp.rates = template.aspp.rates
        self.aspp.output_stride = template.aspp.output_stride  # sets the image_pooling_crop_size kernel
        self.config = template.config

    def low_precision_dtype(self) -> torch.dtype | None:
        """torch.float16 / torch.bfloat16 for a copy made by optimize(dtype=...) with that dtype, else None.

        Such a model takes float32 images too (cast once at its entry) and returns float32 logits."""
        name = None if self.optimized is None else self.optimized.get("dtype")
        return {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(name)

    def _check_batch(self, x: torch.Tensor) -> None:
        check_image_batch(x)
        low = self.low_precision_dtype()
        if low is None or x.dtype not in (torch.float32, low):  # a 16-bit optimized model takes float32 too
            _check_input_dtype(x, self)
        pool = getattr(self.aspp, "pool", None)
        if x.shape[0] == 1 and isinstance(pool, ConvBNAct) and pool.bn.training:
            raise ValueError(
                "a batch of 1 image in training mode: the BatchNorm of the ASPP image-pool branch sees one value "
                "per channel and cannot normalize it; train with batch size >= 2, or call model.eval() (or freeze "
                "the BatchNorm layers) for single images"
            )

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits at low resolution, the stride-16 features, which images are finite or None)."""
        self._check_batch(x)
        # a 16-bit optimized model casts a float32 image once, together with the layout change
        dtype = self.low_precision_dtype() or x.dtype
        if self.channels_last or dtype != x.dtype:
            layout = torch.channels_last if self.channels_last else torch.preserve_format
            x = x.to(dtype=dtype, memory_format=layout)
        # oneDNN's fused activations turn NaN into 0, so an optimized model marks the logits of an image with a
        # NaN or inf pixel as NaN itself (the eager model's are non-finite too, through the image-pool branch,
        # unless ReLU6 clamps an inf away); one pass over the input, no synchronisation. (After the cast: a
        # float32 pixel beyond float16's range is inf there.)
        finite = None if self.optimized is None else torch.isfinite(x).flatten(1).all(dim=1)
        low, mid, high = self.backbone(x)
        y = self.aspp(high)
        if self.post_aspp is not None:
            y = self.post_aspp(y)
        if self.decoder is not None:
            y = self.decoder(y, low)
        return _mark_nonfinite(self.classifier(y), finite), mid, finite

    def forward_lowres(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_classes, h, w) logits before the final upsampling (stride 4 with the
        decoder, the output stride without). Used by deeplab_fast.Segmenter to resize once, fused."""
        return self._heads(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = (x.shape[2], x.shape[3]) if isinstance(x, torch.Tensor) and x.dim() == 4 else None
        logits, mid, finite = self._heads(x)
        out = self.resize([logits], size)
        if not self.output_dict:
            return out
        result = {"out": out}
        if self.aux is not None:
            result["aux"] = self.resize([_mark_nonfinite(self.aux(mid), finite)], size)
        return result


def _mark_nonfinite(logits: torch.Tensor, finite: torch.Tensor | None) -> torch.Tensor:
    """NaN for every image whose input was not finite ((N,) bool `finite`); logits unchanged when None."""
    if finite is None:
        return logits
    return torch.where(finite.view(-1, 1, 1, 1), logits, float("nan"))


_BOOL_OPTIONS = ("separable_inner_bn", "mobilenet_last_conv", "aux_head", "output_dict")
_BOOL_OR_NONE_OPTIONS = ("aspp_separable", "decoder_separable")
_POSITIVE_INT_OPTIONS = ("aspp_channels", "low_level_channels", "decoder_convs", "mobilenet_divisible_by")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_arguments(
    backbone: Any,
    num_classes: Any,
    output_stride: Any,
    separable: Any,
    decoder: Any,
    align_corners: Any,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Validate deeplabv3plus()'s arguments (errors name the argument); return every option, defaults filled in."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known backbones: {', '.join(BACKBONES)}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not _is_int(output_stride) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of the ints {OUTPUT_STRIDES}, got {output_stride!r}")
    for name, value in (("separable", separable), ("decoder", decoder), ("align_corners", align_corners)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; known options: {', '.join(OPTIONS)}")
    opt = {k: options.get(k, default) for k, (default, _) in OPTIONS.items()}
    for name in _BOOL_OPTIONS:
        if not isinstance(opt[name], bool):
            raise TypeError(f"{name} must be True or False, got {opt[name]!r}")
    dilate_first = opt["dilate_first_block"]
    if dilate_first is not None and not isinstance(dilate_first, bool):
        raise TypeError(f"dilate_first_block must be True or False (or None: per backbone), got {dilate_first!r}")
    for name in _BOOL_OR_NONE_OPTIONS:
        if opt[name] is not None and not isinstance(opt[name], bool):
            raise TypeError(f"{name} must be True, False or None (follow `separable`), got {opt[name]!r}")
    for name in _POSITIVE_INT_OPTIONS:
        if not _is_int(opt[name]) or opt[name] < 1:
            raise ValueError(f"{name} must be an int >= 1, got {opt[name]!r}")
    if opt["mobilenet_padding"] not in PADDINGS:
        raise ValueError(f"mobilenet_padding must be one of {PADDINGS}, got {opt['mobilenet_padding']!r}")
    if opt["post_aspp_conv"] not in ("none", "dense", "separable"):
        raise ValueError(f"post_aspp_conv must be 'none', 'dense' or 'separable', got {opt['post_aspp_conv']!r}")
    if not _is_number(opt["width_mult"]) or opt["width_mult"] <= 0:
        raise ValueError(f"width_mult must be a finite number > 0, got {opt['width_mult']!r}")
    if not _is_number(opt["aspp_dropout"]) or not 0 <= opt["aspp_dropout"] <= 1:
        raise ValueError(f"aspp_dropout must be a number in [0, 1], got {opt['aspp_dropout']!r}")
    for name in ("bn_eps", "head_bn_eps"):
        if opt[name] is not None and (not _is_number(opt[name]) or opt[name] <= 0):
            raise ValueError(f"{name} must be a finite number > 0 or None, got {opt[name]!r}")
    for name in ("input_mean", "input_std"):
        value = opt[name]
        if value is None:
            continue
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) for v in value):
            raise ValueError(f"{name} must be three finite numbers (R, G, B) or None, got {value!r}")
        if name == "input_std" and any(v <= 0 for v in value):
            raise ValueError(f"input_std must be three numbers > 0, got {value!r}")
        opt[name] = tuple(float(v) for v in value)
    grid = opt["multi_grid"]
    if grid is not None:
        if not isinstance(grid, (list, tuple)) or not all(_is_int(g) and g >= 1 for g in grid):
            raise ValueError(f"multi_grid must be a sequence of ints >= 1 (or None), got {grid!r}")
        if backbone == "mobilenet_v2":
            raise ValueError("multi_grid applies to ResNet and Xception backbones; mobilenet_v2 has no multi-grid")
        opt["multi_grid"] = tuple(grid)
    rates = opt["aspp_rates"]
    if rates is not None:
        if (
            not isinstance(rates, (list, tuple))
            or len(rates) not in (0, 3)
            or not all(_is_int(r) and r >= 1 for r in rates)
        ):
            raise ValueError(f"aspp_rates must be three ints >= 1, () (no atrous branches) or None, got {rates!r}")
        opt["aspp_rates"] = tuple(rates)
    return opt


def deeplabv3plus(
    backbone: str = "xception65",
    num_classes: int = 21,
    output_stride: int = 16,
    separable: bool = True,
    decoder: bool = True,
    align_corners: bool = False,
    **options: Any,
) -> DeepLab:
    """Build DeepLabV3+ (decoder=True) or DeepLabV3 (decoder=False) with random weights.

    Args:
        backbone: one of list_backbones().
        num_classes: >= 1 output channels.
        output_stride: 8, 16 or 32 (encoder output stride; atrous convs replace the later strides).
        separable: depthwise separable 3x3 convs in ASPP and decoder (the paper's "SC" variant).
        decoder: add the DeepLabV3+ decoder (stride-4 features); False gives DeepLabV3.
        align_corners: bilinear resize convention of the decoder and the final upsampling.
        **options: see OPTIONS (also documented in README.md, "## Models").

    Returns:
        DeepLab module; forward maps (N, 3, H, W) float (H, W >= 32) to (N, num_classes, H, W) logits
        (or a dict with output_dict=True).
    """
    opt = _check_arguments(backbone, num_classes, output_stride, separable, decoder, align_corners, options)
    eps = opt["bn_eps"] if opt["bn_eps"] is not None else (1e-3 if backbone.startswith("xception") else 1e-5)
    head_eps = opt["head_bn_eps"] if opt["head_bn_eps"] is not None else eps
    width = opt["width_mult"]
    dilate_first = opt["dilate_first_block"]
    if dilate_first is None:
        dilate_first = not (backbone.startswith("xception") or backbone.endswith("_beta"))
    if backbone.startswith("resnet"):
        net: nn.Module = ResNet(
            backbone,
            output_stride=output_stride,
            multi_grid=opt["multi_grid"],
            dilate_first_block=dilate_first,
            width_mult=width,
            eps=eps,
        )
    elif backbone.startswith("xception"):
        net = Xception(
            backbone,
            output_stride=output_stride,
            multi_grid=opt["multi_grid"],
            dilate_first_block=dilate_first,
            width_mult=width,
            eps=eps,
        )
    else:
        net = MobileNetV2(
            output_stride=output_stride,
            dilate_first_block=dilate_first,
            width_mult=width,
            last_conv=opt["mobilenet_last_conv"],
            eps=eps,
            padding=opt["mobilenet_padding"],
            divisible_by=opt["mobilenet_divisible_by"],
        )
    rates = opt["aspp_rates"]
    if rates is None:
        rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
    ch = opt["aspp_channels"]
    aspp_sep = separable if opt["aspp_separable"] is None else opt["aspp_separable"]
    inner_bn = opt["separable_inner_bn"]
    aspp = ASPP(
        net.out_channels,
        ch,
        tuple(rates),
        separable=aspp_sep,
        separable_inner_bn=inner_bn,
        pool_position=opt["aspp_pool_position"],
        dropout=opt["aspp_dropout"],
        eps=head_eps,
        image_pooling_crop_size=opt["image_pooling_crop_size"],
        output_stride=output_stride,
        align_corners=align_corners,
    )
    post = None
    if opt["post_aspp_conv"] != "none":
        post = conv_block(ch, ch, separable=opt["post_aspp_conv"] == "separable", inner_bn=inner_bn, eps=head_eps)
    dec = None
    head_in = ch
    if decoder:
        dec = Decoder(
            ch,
            net.low_level_channels,
            low_level_channels=opt["low_level_channels"],
            channels=ch,
            num_convs=opt["decoder_convs"],
            separable=separable if opt["decoder_separable"] is None else opt["decoder_separable"],
            separable_inner_bn=inner_bn,
            align_corners=align_corners,
            eps=head_eps,
        )
        head_in = dec.out_channels
    aux = AuxHead(net.mid_channels, num_classes, head_eps) if opt["aux_head"] else None
    # every keyword argument, defaults included, in JSON types (tuples as lists): deeplabv3plus(**config)
    # rebuilds this architecture, and a checkpoint can store it as is
    config = {
        "backbone": backbone,
        "num_classes": num_classes,
        "output_stride": output_stride,
        "separable": separable,
        "decoder": decoder,
        "align_corners": align_corners,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in opt.items()},
    }
    return DeepLab(
        net,
        aspp,
        post,
        dec,
        nn.Conv2d(head_in, num_classes, 1),
        aux,
        align_corners=align_corners,
        output_dict=opt["output_dict"],
        config=config,
    )
