"""optimize(): an inference copy of a DeepLab model with BatchNorm folded and fused ops swapped in.

Every conv + BN pair becomes one conv with folded weights and bias; the activation (and in residual
units the skip addition) rides on the conv through oneDNN's fused convolution when it can run
(CPU fp32, eager mode). Each depthwise conv + BN (+ activation) becomes deeplab_fast.ops.dwconv_bn_act,
each resize + concat deeplab_fast.ops.upsample_concat, and the ASPP image-pool branch is folded into
a per-image bias of the projection (its broadcast map is never built). Activations are channels_last.
"""

from __future__ import annotations

import copy
import os
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from deeplab_fast import _ext
from deeplab_fast.malloc_tuning import keep_freed_memory
from deeplab_fast.models.aspp import ASPP
from deeplab_fast.models.backbones.mobilenetv2 import InvertedResidual, MobileNetV2
from deeplab_fast.models.backbones.resnet import Bottleneck, ResNet
from deeplab_fast.models.backbones.xception import Xception, XceptionBlock
from deeplab_fast.models.decoder import Decoder
from deeplab_fast.models.deeplab import AuxHead, DeepLab, DeepLabForward
from deeplab_fast.models.layers import ConvBNAct, SeparableConv, apply_act
from deeplab_fast.ops import dwconv_bn_act, fold_bn, upsample_concat
from deeplab_fast.ops._backend import BACKENDS
from deeplab_fast.ops.winograd import winograd_conv3x3, winograd_weight

# oneDNN post-op spelling of our activations
_ONEDNN_ACT = {"relu": ("relu", [None]), "relu6": ("hardtanh", [0.0, 6.0]), "none": ("none", [None])}


def _onednn_ok(kernel_size: int) -> bool:
    """Whether a conv of this kernel size runs oneDNN's fused convolution (pre-packed weight, post-ops).

    DEEPLAB_FAST_ONEDNN_FUSED: unset = 1x1 convolutions only (measured 4-5% faster per model on a quiet
    2-core machine: resnet101 774 vs 812 ms, xception65 724 vs 753 ms, with the ReLU and the residual
    addition as post-ops); "1" = every convolution, depthwise included (3x3 ran slower than F.conv2d on
    channels_last: resnet101 1090 vs 859 ms); "0" = none.
    """
    mode = os.environ.get("DEEPLAB_FAST_ONEDNN_FUSED", "")
    if mode == "0" or (mode != "1" and kernel_size != 1):
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = conv.weight.detach()
    if bn is None:
        return weight.clone(), None if conv.bias is None else conv.bias.detach().clone()
    scale, shift = fold_bn(bn, conv.bias)
    return weight * scale.reshape(-1, 1, 1, 1), shift


class FusedConv(nn.Module):
    """act(conv(x) + bias [+ residual]) with BN already folded into weight/bias.

    (N, Cin, H, W) float -> (N, Cout, Ho, Wo). On CPU fp32 in eager mode with backend "auto"/"cpu" it
    runs oneDNN's fused convolution with a weight pre-packed once (re-packed if the weight changes);
    otherwise (torch.compile, other devices/dtypes, backend "reference") F.conv2d + activation.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        stride: int,
        padding: int,
        dilation: int,
        groups: int = 1,
        act: str = "none",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.act = act
        self.backend = backend
        self._packed: tuple[torch.Tensor, tuple] | None = None
        self._wino: tuple[torch.Tensor, tuple] | None = None

    @classmethod
    def from_modules(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, act: str, backend: str) -> FusedConv:
        """Fold `bn` (or nothing) into `conv`; the activation is applied after the folded conv."""
        weight, bias = _fold(conv, bn)
        return cls(
            weight,
            bias,
            stride=conv.stride[0],
            padding=conv.padding[0],
            dilation=conv.dilation[0],
            groups=conv.groups,
            act=act,
            backend=backend,
        )

    def _use_onednn(self, x: torch.Tensor) -> bool:
        return (
            self.backend in ("auto", "cpu")
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.compiler.is_compiling()
            and not torch.is_grad_enabled()
            and _onednn_ok(self.weight.shape[-1])
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN picks the packed layout for an input shape: packed without one, a 3x3 conv measured 4x
        # slower. One layout is kept, re-packed when the input shape or the weight changes.
        key = (self.weight.data_ptr(), self.weight._version, tuple(x.shape))
        if self._packed is None or self._packed[1] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.detach(),
                [self.padding] * 2,
                [self.stride] * 2,
                [self.dilation] * 2,
                self.groups,
                list(x.shape),
            )
            self._packed = (packed, key)
        return self._packed[0]

    def _use_winograd(self, x: torch.Tensor) -> bool:
        w = self.weight
        return (
            tuple(w.shape[2:]) == (3, 3)
            and self.stride == 1
            and self.groups == 1
            and self.padding == self.dilation
            # below 64 channels the GEMMs are too thin to beat oneDNN's direct convolution here
            and min(w.shape[0], w.shape[1]) >= 64
            and os.environ.get("DEEPLAB_FAST_WINOGRAD", "1") != "0"
            and self.backend in ("auto", "cpu")
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and w.dtype == torch.float32
            and not torch.compiler.is_compiling()
            and not torch.is_grad_enabled()
            and _ext.has_kernel("winograd_conv3x3", "cpu")
        )

    def _winograd_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version)
        if self._wino is None or self._wino[1] != key:
            # F(4x4, 3x3): measured 1.3-1.7x faster than F(2x2, 3x3) on every ResNet shape here (error ~1e-5)
            self._wino = (winograd_weight(self.weight, tile=4), key)
        return self._wino[0]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self._use_winograd(x):
            return winograd_conv3x3(
                x,
                self._winograd_weight(),
                self.bias,
                residual,
                dilation=self.dilation,
                activation=self.act,
            )
        if self._use_onednn(x):
            args = ([self.padding] * 2, [self.stride] * 2, [self.dilation] * 2, self.groups)
            attr, scalars = _ONEDNN_ACT[self.act]
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self._packed_weight(x), self.bias, *args, attr, scalars, ""
                )
            if residual.shape == (x.shape[0], self.weight.shape[0], *residual.shape[2:]) and residual.dtype == x.dtype:
                unary = None if self.act == "none" else attr
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x,
                    residual,
                    self._packed_weight(x),
                    self.bias,
                    *args,
                    "add",
                    None,
                    unary,
                    scalars if unary else [],
                    None,
                )
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return apply_act(y, self.act)
        # y is a fresh buffer: activate it in place (no second activation-sized allocation and its page faults)
        if self.act == "relu":
            return y.relu_()
        if self.act == "relu6":
            return y.clamp_(0.0, 6.0)
        return y


class FusedDWConv(nn.Module):
    """Depthwise 3x3 conv + folded BN + activation through deeplab_fast.ops.dwconv_bn_act."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, act: str, backend: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        if bn is None:
            scale = torch.ones_like(self.weight[:, 0, 0, 0])
            shift = torch.zeros_like(scale) if conv.bias is None else conv.bias.detach().clone()
        else:
            scale, shift = fold_bn(bn, conv.bias)
        self.scale = nn.Parameter(scale.clone(), requires_grad=False)
        self.shift = nn.Parameter(shift.clone(), requires_grad=False)
        self.stride, self.dilation, self.act, self.backend = conv.stride[0], conv.dilation[0], act, backend
        # With DEEPLAB_FAST_ONEDNN_FUSED=1 and backend="auto" on a CPU, oneDNN's depthwise conv (BN folded,
        # activation as a post-op) runs instead; every explicit backend always runs dwconv_bn_act.
        self.onednn = None
        if backend == "auto":
            self.onednn = FusedConv(
                self.weight.detach() * self.scale.detach().reshape(-1, 1, 1, 1),
                self.shift.detach().clone(),
                stride=self.stride,
                padding=conv.padding[0],
                dilation=self.dilation,
                groups=conv.groups,
                act=act,
                backend="cpu",
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn is not None and self.onednn._use_onednn(x):
            return self.onednn(x)
        return dwconv_bn_act(
            x,
            self.weight,
            self.scale,
            self.shift,
            stride=self.stride,
            dilation=self.dilation,
            activation=self.act,
            backend=self.backend,
        )


class FusedSeparable(nn.Module):
    """[ReLU] -> fused depthwise (+BN+act) -> pointwise conv with folded BN and activation."""

    def __init__(self, m: SeparableConv, backend: str, out_act: str | None = None) -> None:
        super().__init__()
        self.pre_act = m.pre_act
        self.dw = FusedDWConv(m.depthwise, m.dw_bn, m.inner_act, backend)
        self.pw = FusedConv.from_modules(m.pointwise, m.pw_bn, out_act or m.out_act, backend)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_act:
            x = F.relu(x)
        return self.pw(self.dw(x), residual)


def _fuse_block(m: nn.Module, backend: str) -> nn.Module:
    if isinstance(m, ConvBNAct):
        return FusedConv.from_modules(m.conv, m.bn, m.act, backend)
    if isinstance(m, SeparableConv):
        return FusedSeparable(m, backend)
    raise TypeError(f"cannot fuse {type(m).__name__}")


class FusedBottleneck(nn.Module):
    """ResNet bottleneck with BN folded; the skip addition and last ReLU ride on conv3."""

    def __init__(self, m: Bottleneck, backend: str) -> None:
        super().__init__()
        self.conv1 = FusedConv.from_modules(m.conv1, m.bn1, "relu", backend)
        self.conv2 = FusedConv.from_modules(m.conv2, m.bn2, "relu", backend)
        self.conv3 = FusedConv.from_modules(m.conv3, m.bn3, "relu", backend)
        self.downsample = None
        if m.downsample is not None:
            self.downsample = FusedConv.from_modules(m.downsample[0], m.downsample[1], "none", backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.conv2(self.conv1(x)), identity)


class FusedResNet(nn.Module):
    """Fused ResNet backbone: (N, 3, H, W) -> (low, mid, out) like ResNet."""

    def __init__(self, m: ResNet, backend: str) -> None:
        super().__init__()
        self.stem = FusedConv.from_modules(m.conv1, m.bn1, "relu", backend)
        self.maxpool = m.maxpool
        self.layers = nn.ModuleList(
            nn.Sequential(*(FusedBottleneck(b, backend) for b in getattr(m, f"layer{i}"))) for i in range(1, 5)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.layers[0](self.maxpool(self.stem(x)))
        mid = self.layers[2](self.layers[1](low))
        return low, mid, self.layers[3](mid)


class FusedXceptionBlock(nn.Module):
    """Xception block: the pre-activation ReLUs of sep2/sep3 move onto the previous pointwise conv (unless
    sep2's raw output is the low-level tap) and the skip addition rides on sep3's pointwise conv."""

    def __init__(self, m: XceptionBlock, backend: str) -> None:
        super().__init__()
        self.tap = m.tap
        move = m.sep2.pre_act and not m.tap
        self.sep1 = FusedSeparable(m.sep1, backend, out_act="relu" if m.sep2.pre_act else None)
        self.sep2 = FusedSeparable(m.sep2, backend, out_act="relu" if move else None)
        self.sep2.pre_act = False
        self.sep3 = FusedSeparable(m.sep3, backend)
        self.sep3.pre_act = m.sep3.pre_act and not move
        self.skip = m.skip
        self.shortcut = None
        if m.shortcut is not None:
            self.shortcut = FusedConv.from_modules(m.shortcut.conv, m.shortcut.bn, "none", backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mid = self.sep2(self.sep1(x))
        residual = self.shortcut(x) if self.skip == "conv" else (x if self.skip == "sum" else None)
        out = self.sep3(mid, residual)
        return (out, mid) if self.tap else out


class FusedXception(nn.Module):
    """Fused Xception backbone: (N, 3, H, W) -> (low, mid, out) like Xception."""

    def __init__(self, m: Xception, backend: str) -> None:
        super().__init__()
        self.conv1 = _fuse_block(m.conv1, backend)
        self.conv2 = _fuse_block(m.conv2, backend)
        self.entry_flow = nn.ModuleList(FusedXceptionBlock(b, backend) for b in m.entry_flow)
        self.middle_flow = nn.Sequential(*(FusedXceptionBlock(b, backend) for b in m.middle_flow))
        self.exit_flow = nn.Sequential(*(FusedXceptionBlock(b, backend) for b in m.exit_flow))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv2(self.conv1(x))
        low = None
        for block in self.entry_flow:
            x = block(x)
            if isinstance(x, tuple):
                x, low = x
        mid = self.middle_flow(x)
        return low, mid, self.exit_flow(mid)


class FusedInvertedResidual(nn.Module):
    """MobileNetV2 unit: expand (ReLU6) -> fused depthwise (ReLU6) -> project with the skip added."""

    def __init__(self, m: InvertedResidual, backend: str) -> None:
        super().__init__()
        layers = list(m.conv)
        self.expand = None
        if len(layers) == 4:
            self.expand = FusedConv.from_modules(layers[0][0], layers[0][1], "relu6", backend)
            layers = layers[1:]
        self.dw = FusedDWConv(layers[0][0], layers[0][1], "relu6", backend)
        self.project = FusedConv.from_modules(layers[1], layers[2], "none", backend)
        self.use_res_connect = m.use_res_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        return self.project(self.dw(y), x if self.use_res_connect else None)


class FusedMobileNetV2(nn.Module):
    """Fused MobileNetV2 backbone: (N, 3, H, W) -> (low, mid, out) like MobileNetV2."""

    def __init__(self, m: MobileNetV2, backend: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for f in m.features:
            if isinstance(f, InvertedResidual):
                layers.append(FusedInvertedResidual(f, backend))
            else:
                layers.append(FusedConv.from_modules(f[0], f[1], "relu6", backend))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = self.features[:4](x)
        mid = self.features[4:14](low)
        return low, mid, self.features[14:](mid)


class FusedASPP(nn.Module):
    """ASPP whose image-pool branch becomes a per-image bias of the projection.

    project(cat[pool, b0..b3]) = W_rest * cat[b0..b3] + W_pool * pool: the pool branch is constant over
    space, so W_pool * pool is an (N, C) vector added before the projection's ReLU.
    """

    def __init__(self, m: ASPP, backend: str) -> None:
        super().__init__()
        self.branch1x1 = _fuse_block(m.branch1x1, backend)
        self.branches = nn.ModuleList(_fuse_block(b, backend) for b in m.branches)
        self.pool = _fuse_block(m.pool, backend)
        weight, bias = _fold(m.project.conv, m.project.bn)
        c = weight.shape[0]
        if m.pool_position == "first":
            pool_w, rest_w = weight[:, :c], weight[:, c:]
        else:
            rest_w, pool_w = weight[:, :-c], weight[:, -c:]
        self.pool_weight = nn.Parameter(pool_w[:, :, 0, 0].contiguous(), requires_grad=False)
        self.project = FusedConv(
            rest_w.contiguous(), None, stride=1, padding=0, dilation=1, act="none", backend=backend
        )
        self.project_bias = nn.Parameter(bias, requires_grad=False)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True)).flatten(1)
        bias = F.linear(pooled, self.pool_weight, self.project_bias)
        feats = [self.branch1x1(x), *(b(x) for b in self.branches)]
        y = upsample_concat(feats, (x.shape[2], x.shape[3]), backend=self.backend)
        return F.relu(self.project(y) + bias[:, :, None, None])


class FusedDecoder(nn.Module):
    """Decoder with upsample_concat for the resize + concatenation."""

    def __init__(self, m: Decoder, backend: str) -> None:
        super().__init__()
        self.reduce = _fuse_block(m.reduce, backend)
        self.convs = nn.Sequential(*(_fuse_block(c, backend) for c in m.convs))
        self.align_corners = m.align_corners
        self.backend = backend

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.reduce(low)
        y = upsample_concat(
            [high, low], (low.shape[2], low.shape[3]), align_corners=self.align_corners, backend=self.backend
        )
        return self.convs(y)


class FusedAuxHead(nn.Module):
    """AuxHead with BN folded (dropout is the identity in eval)."""

    def __init__(self, m: AuxHead, backend: str) -> None:
        super().__init__()
        self.conv = _fuse_block(m.conv, backend)
        self.classifier = FusedConv.from_modules(m.classifier, None, "none", backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


class FusedDeepLab(DeepLabForward):
    """Inference-only DeepLab made by optimize(); same forward contract as DeepLab."""

    def __init__(self, m: DeepLab, backend: str, channels_last: bool) -> None:
        super().__init__()
        if isinstance(m.backbone, ResNet):
            self.backbone: nn.Module = FusedResNet(m.backbone, backend)
        elif isinstance(m.backbone, Xception):
            self.backbone = FusedXception(m.backbone, backend)
        else:
            self.backbone = FusedMobileNetV2(m.backbone, backend)
        self.aspp = FusedASPP(m.aspp, backend)
        self.post_aspp = None if m.post_aspp is None else _fuse_block(m.post_aspp, backend)
        self.decoder = None if m.decoder is None else FusedDecoder(m.decoder, backend)
        self.classifier = FusedConv.from_modules(m.classifier, None, "none", backend)
        self.aux = None if m.aux is None else FusedAuxHead(m.aux, backend)
        self.align_corners = m.align_corners
        self.output_dict = m.output_dict
        self.channels_last = channels_last
        self.backend = backend
        self.config = dict(m.config)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # the final upsampling as the fused resize (one input): 3x faster than F.interpolate on channels_last
        return upsample_concat([x], size, align_corners=self.align_corners, backend=self.backend)


def optimize(model: nn.Module, *, backend: str = "auto", channels_last: bool = True) -> nn.Module:
    """Return an inference copy of a DeepLab model with BN folded and fused ops; `model` is not changed.

    Args:
        model: a DeepLab from deeplabv3plus() or a converter. Any other nn.Module gets only the generic part:
            each Conv2d directly followed by a BatchNorm2d in an nn.Sequential is folded. In training mode the
            model is copied and the copy put in eval mode, with a warning (BN folding uses running statistics).
        backend: "auto", "cpu", "cuda", "triton" or "reference": passed to every fused op; "reference"
            also turns off oneDNN's fused convolutions.
        channels_last: run in channels_last memory format (the fast layout for oneDNN and cuDNN).

    A CPU model also makes glibc malloc recycle large freed blocks, process-wide
    (deeplab_fast.malloc_tuning.keep_freed_memory; DEEPLAB_FAST_MALLOPT=0 turns that off).

    Returns:
        nn.Module in eval mode with the same forward contract ((N, 3, H, W) float -> (N, K, H, W) logits or
        the same dict); parameters do not require gradients.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (a deeplab_fast DeepLab), got {type(model).__name__}")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    inner = model
    if model.training:
        warnings.warn(
            "optimize() folds BatchNorm with its running statistics, so it needs eval mode; optimizing an "
            "eval() copy (your model is unchanged). Call model.eval() first to silence this.",
            UserWarning,
            stacklevel=2,
        )
    if all(t.device.type == "cpu" for t in model.parameters()):
        # Large activations are freshly page-faulted on every forward otherwise (see malloc_tuning).
        keep_freed_memory()
    with torch.no_grad():
        source = copy.deepcopy(inner).eval()
        if isinstance(source, DeepLab):
            return FusedDeepLab(source, backend, channels_last).eval()
        return _fold_generic(source, channels_last).eval()


def _fold_generic(model: nn.Module, channels_last: bool) -> nn.Module:
    """Any other model: fold each Conv2d directly followed by a BatchNorm2d inside an nn.Sequential."""
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names[:-1], names[1:], strict=True):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                weight, bias = _fold(conv, bn)
                conv.weight = nn.Parameter(weight, requires_grad=False)
                conv.bias = nn.Parameter(bias, requires_grad=False)
                module._modules[b] = nn.Identity()
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
