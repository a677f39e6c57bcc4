"""optimize(): an inference copy of a DeepLab model with BatchNorm folded and fused ops swapped in place.

The copy keeps the model's own structure (DeepLab, ResNet / Xception / MobileNetV2, Decoder, AuxHead and
their forwards). Leaves are swapped where they are: every conv + BN (+ activation) becomes a FusedConv,
every depthwise conv + BN (+ activation) a FusedDWConv (deeplab_fast.ops.dwconv_bn_act), every separable
conv a FusedSeparable, every resize + concat (decoder, final upsampling) a FusedResizeConcat
(deeplab_fast.ops.upsample_concat). A block is swapped only where a fusion spans its leaves:

- ResNet Bottleneck -> FusedBottleneck: the skip addition and the last ReLU ride on conv3.
- Xception XceptionBlock -> FusedXceptionBlock: the pre-activation ReLUs of sep2/sep3 move onto the previous
  pointwise conv, and the skip addition rides on sep3's pointwise conv.
- MobileNetV2 InvertedResidual with a skip -> FusedInvertedResidual: the skip addition rides on the projection.
- ASPP -> FusedASPP: the image-pool branch becomes a per-image bias of the projection (its broadcast map is
  never built) and the branches are concatenated by upsample_concat.

How each dense convolution runs is the `conv_engine` argument of optimize() (see CONV_ENGINES). What depends on
the device is decided in one place, `device_plan`: on a CPU the oneDNN / Winograd engines and malloc tuning; on
a CUDA device every dense and pointwise conv runs F.conv2d (cuDNN) on channels_last activations with
channels_last weights, and every depthwise conv the CUDA kernel with its weight packed once (FusedDWConv).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deeplab_fast import _ext
from deeplab_fast.malloc_tuning import keep_freed_memory
from deeplab_fast.models.aspp import ASPP
from deeplab_fast.models.backbones.mobilenetv2 import InvertedResidual, MobileNetV2, pad_input
from deeplab_fast.models.backbones.resnet import Bottleneck, ResNet
from deeplab_fast.models.backbones.xception import Xception, XceptionBlock
from deeplab_fast.models.deeplab import DeepLab
from deeplab_fast.models.layers import ConvBNAct, SeparableConv, apply_act
from deeplab_fast.ops import (
    dwconv_bn_act,
    dwconv_bn_act_packed,
    dwconv_pack_width,
    fold_bn,
    pack_dwconv_weight,
    upsample_concat,
)
from deeplab_fast.ops._autocast import autocast_dtype
from deeplab_fast.ops._backend import BACKENDS, device_of, resolve_backend
from deeplab_fast.ops._common import is_channels_last
from deeplab_fast.ops.winograd import winograd_conv3x3, winograd_weight

# conv_engine values of optimize():
#   "auto":     oneDNN's fused convolution for 1x1 convs (measured 4-5% faster per model than F.conv2d on a quiet
#               2-core machine: resnet101 774 vs 812 ms, xception65 724 vs 753 ms), Winograd F(4x4, 3x3) for 3x3
#               stride-1 convs with >= 64 input and output channels, ATen (F.conv2d) for the rest.
#   "onednn":   oneDNN's fused convolution for every dense conv (3x3 ran slower than F.conv2d on channels_last:
#               resnet101 1090 vs 859 ms).
#   "winograd": Winograd for every 3x3 stride-1 dense conv whatever its width, oneDNN for 1x1, ATen for the rest.
#   "aten":     F.conv2d + activation everywhere.
# The oneDNN and Winograd engines run only on CPU fp32 inputs, with autograd off, outside torch.compile and with
# backend "auto" or "cpu"; elsewhere every conv runs through F.conv2d.
CONV_ENGINES = ("auto", "onednn", "winograd", "aten")

# dtype values of optimize(): None keeps the model's dtype
OPTIMIZE_DTYPES = (None, torch.float32, torch.float16, torch.bfloat16)
# the 16-bit ones: the classifiers stay float32 (float32 logits), the model takes float32 or 16-bit inputs
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class DevicePlan:
    """What optimize() does differently per device: the one place that looks at the device type.

    cpu_engines: the oneDNN / Winograd conv engines may run (CPU tensors, backend "auto" or "cpu"; they also
        need fp32 inputs with autograd off, checked per call). tune_malloc: glibc malloc tuning applies (a CPU
        model). dense_weights_channels_last: dense conv weights are stored channels_last, so cuDNN reads them
        without a per-call transpose of the weight to the activations' layout (a CUDA model with channels_last).
    """

    cpu_engines: bool
    tune_malloc: bool
    dense_weights_channels_last: bool


@functools.cache
def device_plan(device_type: str, backend: str, channels_last: bool = True) -> DevicePlan:
    """The DevicePlan for tensors on `device_type` ("cpu", "cuda", ...) run with op `backend` and layout."""
    on_cpu = device_type == "cpu"
    return DevicePlan(
        cpu_engines=on_cpu and backend in ("auto", "cpu"),
        tune_malloc=on_cpu,
        dense_weights_channels_last=device_type == "cuda" and channels_last,
    )


# below 64 channels Winograd's GEMMs are too thin to beat oneDNN's direct convolution here
_WINOGRAD_MIN_CHANNELS = 64

# oneDNN post-op spelling of our activations
_ONEDNN_ACT = {"relu": ("relu", [None]), "relu6": ("hardtanh", [0.0, 6.0]), "none": ("none", [None])}


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's fused convolution (torch.ops.mkldnn._convolution_pointwise)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX-512-BF16 or AMX):
    torch.ops.mkldnn._is_mkldnn_bf16_supported(). Without it a bfloat16 conv is emulated and slow."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def onednn_runs_dtype(dtype: torch.dtype) -> bool:
    """Whether FusedConv runs its oneDNN engine (weight pre-packed, activation and residual as post-ops) on CPU
    inputs of `dtype`: float32 always, bfloat16 where the CPU has native bf16 (cpu_has_native_bf16), else not
    (F.conv2d runs them)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_native_bf16())


def _conv_engine(engine: str, weight: torch.Tensor, stride: int, padding: int, dilation: int, groups: int) -> str:
    """The engine ("onednn", "winograd" or "aten") one dense conv runs with under optimize()'s `engine`.

    An engine this build lacks (checked by optimize() when asked for explicitly) falls back to "aten" under "auto".
    """
    k = tuple(weight.shape[2:])
    if engine == "aten" or groups != 1:
        return "aten"
    if engine == "onednn":
        return "onednn"
    wide = min(weight.shape[0], weight.shape[1]) >= _WINOGRAD_MIN_CHANNELS
    winograd_shape = k == (3, 3) and stride == 1 and padding == dilation
    if winograd_shape and (engine == "winograd" or wide) and _ext.has_kernel("winograd_conv3x3", "cpu"):
        return "winograd"
    return "onednn" if k == (1, 1) and onednn_available() else "aten"


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = conv.weight.detach()
    if bn is None:
        return weight.clone(), None if conv.bias is None else conv.bias.detach().clone()
    scale, shift = fold_bn(bn, conv.bias)
    return weight * scale.reshape(-1, 1, 1, 1), shift


class FusedConv(nn.Module):
    """act(conv(x) + bias [+ residual]) with BN already folded into weight/bias.

    (N, Cin, H, W) float -> (N, Cout, Ho, Wo). `engine` ("auto", "onednn", "winograd" or "aten", see
    CONV_ENGINES) picks the implementation; oneDNN (weight pre-packed for the input shape, activation and
    residual as post-ops) and Winograd (weight transformed once) run on CPU inputs with autograd off, outside
    torch.compile and with backend "auto"/"cpu": Winograd on float32 only, oneDNN on float32 and, where the CPU
    has native bf16 (onednn_runs_dtype), on bfloat16 too (then for the Winograd convs as well); otherwise
    F.conv2d + activation. `full_precision` (the classifier of a 16-bit optimized model): the input is cast to
    the weight's dtype (float32) and autocast is ignored, so the result is in the weight's dtype.
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
        engine: str = "auto",
        full_precision: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.act = act
        self.backend = backend
        self.engine = _conv_engine(engine, weight, stride, padding, dilation, groups)
        self.full_precision = full_precision
        self._packed: tuple[torch.Tensor, tuple] | None = None
        self._wino: tuple[torch.Tensor, tuple] | None = None
        # weight and bias cast to the autocast dtype, with the key they were cast under
        self._cast: tuple[tuple, tuple[torch.Tensor, torch.Tensor | None]] | None = None

    # (a class default too, for modules pickled before the attribute existed)
    full_precision = False

    @classmethod
    def from_modules(
        cls,
        conv: nn.Conv2d,
        bn: nn.BatchNorm2d | None,
        act: str,
        backend: str,
        engine: str = "auto",
        full_precision: bool = False,
    ) -> FusedConv:
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
            engine=engine,
            full_precision=full_precision,
        )

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles leave out the engine caches (an opaque oneDNN tensor cannot be copied); the next
        # forward rebuilds them
        state = dict(self.__dict__)
        state["_packed"] = state["_wino"] = state["_cast"] = None
        return state

    def engine_for(self, x: torch.Tensor) -> str:
        """The engine ("onednn", "winograd" or "aten") this module runs input `x` with (outside autocast)."""
        fast = (
            not torch.compiler.is_compiling()
            and not torch.is_grad_enabled()
            and x.dtype == self.weight.dtype
            and device_plan(x.device.type, self.backend).cpu_engines
        )
        if not fast or self.engine == "aten":
            return "aten"
        if x.dtype == torch.float32:
            return self.engine
        # 16-bit: Winograd is float32-only; oneDNN takes every conv it runs where the CPU computes the dtype
        return "onednn" if onednn_available() and onednn_runs_dtype(x.dtype) else "aten"

    def _use_onednn(self, x: torch.Tensor) -> bool:
        return self.engine_for(x) == "onednn"

    def _use_winograd(self, x: torch.Tensor) -> bool:
        return self.engine_for(x) == "winograd"

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

    def _winograd_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version)
        if self._wino is None or self._wino[1] != key:
            # F(4x4, 3x3): measured 1.3-1.7x faster than F(2x2, 3x3) on every ResNet shape here (error ~1e-5)
            self._wino = (winograd_weight(self.weight, tile=4), key)
        return self._wino[0]

    def _params_in(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias cast to `dtype` once, re-cast only when a parameter changes (autocast)."""
        params = (self.weight, self.bias)
        key = (dtype, *((p.data_ptr(), p._version) for p in params if p is not None))
        if self._cast is None or self._cast[0] != key:
            with torch.no_grad():
                bias = None if self.bias is None else self.bias.detach().to(dtype)
                self._cast = (key, (self.weight.detach().to(dtype), bias))
        return self._cast[1]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.full_precision:
            return self._forward_full_precision(x, residual)
        cast = autocast_dtype(x.device.type)
        if cast is not None and (self.weight.dtype != cast or x.dtype != cast):
            # Under autocast: compute in its dtype with the weight cast once (autocast's own weight cache keeps
            # only weights that require grad, so F.conv2d would cast this one on every call).
            weight, bias = self._params_in(cast)
            with torch.autocast(x.device.type, enabled=False):
                res = None if residual is None else residual.to(cast)
                return self._conv_act(x.to(cast), res, weight, bias)
        return self._run(x, residual)

    def _forward_full_precision(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        # 16-bit features upcast once, float32 weights, float32 accumulation and result (argmax/softmax and the
        # final upsampling see float32 logits), under autocast too
        dtype = self.weight.dtype
        x = x if x.dtype == dtype else x.to(dtype)
        residual = residual if residual is None or residual.dtype == dtype else residual.to(dtype)
        if autocast_dtype(x.device.type) is None:
            return self._run(x, residual)
        with torch.autocast(x.device.type, enabled=False):
            return self._run(x, residual)

    def _run(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The conv in x's dtype by the engine engine_for(x) chooses."""
        engine = self.engine_for(x)
        if engine == "winograd":
            return winograd_conv3x3(
                x, self._winograd_weight(), self.bias, residual, dilation=self.dilation, activation=self.act
            )
        if engine == "onednn":
            # one path for every dtype oneDNN runs here (float32; bfloat16 on CPUs with native bf16): the weight
            # packed once in its own dtype, activation and residual as post-ops
            args = ([self.padding] * 2, [self.stride] * 2, [self.dilation] * 2, self.groups)
            attr, scalars = _ONEDNN_ACT[self.act]
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self._packed_weight(x), self.bias, *args, attr, scalars, ""
                )
            if residual.shape == (x.shape[0], self.weight.shape[0], *residual.shape[2:]) and residual.dtype == x.dtype:
                unary = None if self.act == "none" else attr
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, self._packed_weight(x), self.bias, *args, "add", None, unary,
                    scalars if unary else [], None,
                )  # fmt: skip
        return self._conv_act(x, residual, self.weight, self.bias)

    def _conv_act(
        self, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        y = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
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
    """Depthwise conv + folded BN + activation through deeplab_fast.ops.dwconv_bn_act_packed.

    (N, C, H, W) float -> (N, C, Ho, Wo); parameters: weight (C, 1, k, k), scale (C,), shift (C,), float32 for
    a float32 model whatever optimize()'s dtype (the kernels read float32 parameters). The weight packed for
    the kernels (pack_dwconv_weight) is kept per (device, dtype, width) and re-packed only when a parameter
    changes, so a call of the compiled op runs one kernel and no conversion. Under torch.compile, and with
    the triton / reference backends, the unpacked dwconv_bn_act runs (parameters cast to x's dtype).
    """

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
        # (device, accumulation dtype, width) -> (parameter stamp, (packed weight, scale, shift))
        self._packs: dict[tuple, tuple[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles leave the packed weights out; the next forward packs again
        state = dict(self.__dict__)
        state["_packs"] = {}
        return state

    def kernel_backend(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """The backend ("cpu", "cuda" or "cuda_emu") whose kernels read the packed weight for inputs of
        `dtype` on `device`, or None when the unpacked op runs (torch.compile, triton, reference, no build)."""
        if not _ext.HAS_EXT or torch.compiler.is_compiling():
            return None
        chosen = resolve_backend(self.backend, device, "dwconv_bn_act")
        if chosen == "cuda" and dtype == torch.float64:
            return None  # float64 is a checking dtype: the reference serves it on CUDA
        return chosen if chosen in ("cpu", "cuda", "cuda_emu") else None

    def packed_params(
        self, dtype: torch.dtype, backend: str, channels_last: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(packed weight, scale, shift) for inputs of `dtype` and layout run by `backend`'s kernels on the
        parameters' device: packed once, then served from the cache until a parameter changes."""
        width = dwconv_pack_width(dtype, backend, channels_last=channels_last)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        key = (self.weight.device, acc, width)
        params = (self.weight, self.scale, self.shift)
        stamp = tuple((p.data_ptr(), p._version) for p in params)
        entry = self._packs.get(key)
        if entry is None or entry[0] != stamp:
            with torch.no_grad():
                packed = (
                    pack_dwconv_weight(self.weight, width),
                    self.scale.detach().to(acc).contiguous(),
                    self.shift.detach().to(acc).contiguous(),
                )
            entry = self._packs[key] = (stamp, packed)
        return entry[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = {"stride": self.stride, "dilation": self.dilation, "activation": self.act, "backend": self.backend}
        cast = autocast_dtype(device_of(x, "x").type)
        if cast is not None and x.is_floating_point() and x.dtype != cast:
            x = x.to(cast)  # under autocast the op computes in its dtype (the packed weight stays float32)
        kernels = self.kernel_backend(x.device, x.dtype)
        if kernels is not None:
            w, s, b = self.packed_params(x.dtype, kernels, is_channels_last(x))
            return dwconv_bn_act_packed(x, w, s, b, k=self.weight.shape[-1], **args)
        params = [p if p.dtype == x.dtype else p.to(x.dtype) for p in (self.weight, self.scale, self.shift)]
        return dwconv_bn_act(x, *params, **args)


class FusedSeparable(nn.Module):
    """SeparableConv fused: [ReLU] -> depthwise (+BN+act) -> pointwise conv with folded BN and activation.

    (N, Cin, H, W) -> (N, Cout, Ho, Wo); forward takes an optional residual added before the output activation.
    """

    def __init__(self, m: SeparableConv, backend: str, engine: str, out_act: str | None = None) -> None:
        super().__init__()
        self.pre_act = m.pre_act
        self.dw = FusedDWConv(m.depthwise, m.dw_bn, m.inner_act, backend)
        self.pw = FusedConv.from_modules(m.pointwise, m.pw_bn, out_act or m.out_act, backend, engine)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_act:
            x = F.relu(x)
        return self.pw(self.dw(x), residual)


class FusedResizeConcat(nn.Module):
    """ResizeConcat through deeplab_fast.ops.upsample_concat (each input read once, output written once)."""

    def __init__(self, align_corners: bool, backend: str) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.backend = backend

    def forward(self, tensors: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        # the final upsampling too (one input): 3x faster than F.interpolate on channels_last
        return upsample_concat(tensors, size, align_corners=self.align_corners, backend=self.backend)


def _fuse_leaf(m: nn.Module, backend: str, engine: str) -> nn.Module:
    """ConvBNAct -> FusedConv, SeparableConv -> FusedSeparable."""
    if isinstance(m, ConvBNAct):
        return FusedConv.from_modules(m.conv, m.bn, m.act, backend, engine)
    if isinstance(m, SeparableConv):
        return FusedSeparable(m, backend, engine)
    raise TypeError(f"optimize() cannot fuse a {type(m).__name__} (expected ConvBNAct or SeparableConv)")


class FusedBottleneck(nn.Module):
    """ResNet Bottleneck with BN folded; the skip addition and the last ReLU ride on conv3 (same names), except in
    the unit whose pre-addition conv3 output is the low-level tap (resnet*_beta). A Subsample shortcut stays."""

    def __init__(self, m: Bottleneck, backend: str, engine: str) -> None:
        super().__init__()
        self.tap = m.tap
        self.conv1 = FusedConv.from_modules(m.conv1, m.bn1, "relu", backend, engine)
        self.conv2 = FusedConv.from_modules(m.conv2, m.bn2, "relu", backend, engine)
        self.conv3 = FusedConv.from_modules(m.conv3, m.bn3, "none" if m.tap else "relu", backend, engine)
        self.downsample = m.downsample
        if isinstance(m.downsample, nn.Sequential):
            self.downsample = FusedConv.from_modules(m.downsample[0], m.downsample[1], "none", backend, engine)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        identity = x if self.downsample is None else self.downsample(x)
        if self.tap:
            pre = self.conv3(self.conv2(self.conv1(x)))
            return F.relu(pre + identity), pre
        return self.conv3(self.conv2(self.conv1(x)), identity)


class FusedXceptionBlock(nn.Module):
    """XceptionBlock whose sep2/sep3 pre-activation ReLUs move onto the previous pointwise conv (unless sep2's
    raw output is the low-level tap) and whose skip addition rides on sep3's pointwise conv (same names)."""

    def __init__(self, m: XceptionBlock, backend: str, engine: str) -> None:
        super().__init__()
        self.tap = m.tap
        move = m.sep2.pre_act and not m.tap
        self.sep1 = FusedSeparable(m.sep1, backend, engine, out_act="relu" if m.sep2.pre_act else None)
        self.sep2 = FusedSeparable(m.sep2, backend, engine, out_act="relu" if move else None)
        self.sep2.pre_act = False
        self.sep3 = FusedSeparable(m.sep3, backend, engine)
        self.sep3.pre_act = m.sep3.pre_act and not move
        self.skip = m.skip
        self.shortcut = None if m.shortcut is None else _fuse_leaf(m.shortcut, backend, engine)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mid = self.sep2(self.sep1(x))
        residual = self.shortcut(x) if self.skip == "conv" else (x if self.skip == "sum" else None)
        out = self.sep3(mid, residual)
        return (out, mid) if self.tap else out


class FusedInvertedResidual(nn.Module):
    """MobileNetV2 unit with a skip: its fused layers (`conv`), the skip addition riding on the projection (the
    input zero-padded by `input_pad` first, as the unit it replaces does)."""

    def __init__(self, conv: nn.Sequential, input_pad: int = 0) -> None:
        super().__init__()
        self.conv = conv
        self.input_pad = input_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv[-1](self.conv[:-1](pad_input(x, self.input_pad)), x)


class FusedASPP(nn.Module):
    """ASPP whose image-pool branch becomes a per-image bias of the projection.

    project(cat[pool, b0..b3]) = W_rest * cat[b0..b3] + W_pool * pool: the pool branch is constant over
    space, so W_pool * pool is an (N, C) vector added before the projection's ReLU.
    """

    def __init__(self, m: ASPP, backend: str, engine: str) -> None:
        super().__init__()
        self.branch1x1 = _fuse_leaf(m.branch1x1, backend, engine)
        self.branches = nn.ModuleList(_fuse_leaf(b, backend, engine) for b in m.branches)
        self.pool = _fuse_leaf(m.pool, backend, engine)
        weight, bias = _fold(m.project.conv, m.project.bn)
        c = weight.shape[0]
        if m.pool_position == "first":
            pool_w, rest_w = weight[:, :c], weight[:, c:]
        else:
            rest_w, pool_w = weight[:, :-c], weight[:, -c:]
        self.pool_weight = nn.Parameter(pool_w[:, :, 0, 0].contiguous(), requires_grad=False)
        self.project = FusedConv(
            rest_w.contiguous(), None, stride=1, padding=0, dilation=1, act="none", backend=backend, engine=engine
        )
        self.project_bias = nn.Parameter(bias, requires_grad=False)
        self.concat = FusedResizeConcat(False, backend)
        # TensorFlow's image pooling (ASPP.pool_input): a pooled map larger than 1x1 makes the bias a map,
        # W_pool * resize(pool) = resize(W_pool * pool) (bilinear weights sum to 1)
        self.image_pooling_crop_size = m.image_pooling_crop_size
        self.output_stride = m.output_stride
        self.align_corners = m.align_corners

    pool_kernel = ASPP.pool_kernel
    pool_input = ASPP.pool_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.pool_input(x))
        if pooled.shape[2:] == (1, 1):
            bias = F.linear(pooled.flatten(1), self.pool_weight, self.project_bias)[:, :, None, None]
        else:
            bias = F.conv2d(pooled, self.pool_weight[:, :, None, None])
            size = (x.shape[2], x.shape[3])
            bias = F.interpolate(bias, size, mode="bilinear", align_corners=self.align_corners)
            bias = bias + self.project_bias[:, None, None]
        feats = [self.branch1x1(x), *(b(x) for b in self.branches)]
        y = self.concat(feats, (x.shape[2], x.shape[3]))
        return F.relu(self.project(y) + bias)


def _fuse_conv_bn_act_seq(seq: nn.Sequential, backend: str, engine: str) -> nn.Module:
    """Sequential(Conv2d, BatchNorm2d, ReLU6) (MobileNetV2) -> FusedDWConv if depthwise, else FusedConv."""
    conv, bn = seq[0], seq[1]
    # dwconv_bn_act pads by the dilation; a depthwise conv padded otherwise (VainF's units) stays a FusedConv
    same_padding = conv.padding[0] == conv.dilation[0] * (conv.kernel_size[0] - 1) // 2
    if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels and same_padding:
        return FusedDWConv(conv, bn, "relu6", backend)
    return FusedConv.from_modules(conv, bn, "relu6", backend, engine)


def _fuse_resnet(net: ResNet, backend: str, engine: str) -> None:
    if net.beta:
        net.stem = nn.Sequential(*(_fuse_leaf(m, backend, engine) for m in net.stem))
    else:
        net.conv1 = FusedConv.from_modules(net.conv1, net.bn1, "relu", backend, engine)
        net.bn1, net.relu = nn.Identity(), nn.Identity()  # ResNet.forward keeps calling them
    for i in range(1, 5):
        layer = getattr(net, f"layer{i}")
        for j, unit in enumerate(layer):
            layer[j] = FusedBottleneck(unit, backend, engine)


def _fuse_xception(net: Xception, backend: str, engine: str) -> None:
    net.conv1 = _fuse_leaf(net.conv1, backend, engine)
    net.conv2 = _fuse_leaf(net.conv2, backend, engine)
    for flow in (net.entry_flow, net.middle_flow, net.exit_flow):
        for j, block in enumerate(flow):
            flow[j] = FusedXceptionBlock(block, backend, engine)


def _fuse_mobilenet(net: MobileNetV2, backend: str, engine: str) -> None:
    for j, f in enumerate(net.features):
        if not isinstance(f, InvertedResidual):
            net.features[j] = _fuse_conv_bn_act_seq(f, backend, engine)
            continue
        layers = [_fuse_conv_bn_act_seq(s, backend, engine) for s in f.conv[:-2]]
        layers.append(FusedConv.from_modules(f.conv[-2], f.conv[-1], "none", backend, engine))
        if f.use_res_connect:
            net.features[j] = FusedInvertedResidual(nn.Sequential(*layers), f.input_pad)
        else:
            f.conv = nn.Sequential(*layers)


_BACKBONE_FUSERS = {ResNet: _fuse_resnet, Xception: _fuse_xception, MobileNetV2: _fuse_mobilenet}


def _fuser_for(backbone: nn.Module) -> Callable[[Any, str, str], None]:
    """The function that fuses this backbone in place; TypeError naming an unknown backbone."""
    fuser = _BACKBONE_FUSERS.get(type(backbone))
    if fuser is None:
        known = ", ".join(t.__name__ for t in _BACKBONE_FUSERS)
        raise TypeError(
            f"optimize() does not know the backbone {type(backbone).__name__}; it knows {known} "
            "(deeplabv3plus() backbones)"
        )
    return fuser


def _fuse_deeplab(model: DeepLab, backend: str, engine: str) -> None:
    """Swap the fused leaves and blocks into `model` (an eval copy) in place."""
    _fuser_for(model.backbone)(model.backbone, backend, engine)
    model.aspp = FusedASPP(model.aspp, backend, engine)
    if model.post_aspp is not None:
        model.post_aspp = _fuse_leaf(model.post_aspp, backend, engine)
    if model.decoder is not None:
        model.decoder.reduce = _fuse_leaf(model.decoder.reduce, backend, engine)
        for j, conv in enumerate(model.decoder.convs):
            model.decoder.convs[j] = _fuse_leaf(conv, backend, engine)
        model.decoder.merge = FusedResizeConcat(model.decoder.align_corners, backend)
    # the classifiers compute in full precision: float32 logits from a 16-bit model (see optimize's dtype)
    model.classifier = FusedConv.from_modules(model.classifier, None, "none", backend, engine, full_precision=True)
    if model.aux is not None:
        model.aux.conv = _fuse_leaf(model.aux.conv, backend, engine)
        model.aux.classifier = FusedConv.from_modules(
            model.aux.classifier, None, "none", backend, engine, full_precision=True
        )
    model.resize = FusedResizeConcat(model.align_corners, backend)


def _reconfigure(model: DeepLab, backend: str, engine: str) -> None:
    """An already optimized copy: set the backend and conv engine of every fused module."""
    for m in model.modules():
        if isinstance(m, FusedConv):
            m.engine = _conv_engine(engine, m.weight, m.stride, m.padding, m.dilation, m.groups)
            m._packed = m._wino = None
        if isinstance(m, (FusedConv, FusedDWConv, FusedResizeConcat)):
            m.backend = backend


def optimize(
    model: nn.Module,
    *,
    backend: str = "auto",
    channels_last: bool = True,
    conv_engine: str = "auto",
    tune_malloc: bool = True,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Return an inference copy of a DeepLab model with BN folded and fused ops; `model` is not changed.

    The copy keeps the model's class and structure (see this module's docstring for what is swapped);
    `model.config` is kept, and `copy.optimized` records the settings below.

    Args:
        model: a DeepLab from deeplabv3plus() or a converter (ResNet, Xception or MobileNetV2 backbone; any
            other backbone is a TypeError naming it), or an already optimized one (re-configured with these
            arguments). Any other nn.Module gets only the generic part: each Conv2d directly followed by a
            BatchNorm2d in an nn.Sequential is folded. In training mode the model is copied and the copy put in
            eval mode, with a warning (BN folding uses running statistics).
        backend: "auto", "cpu", "cuda", "triton" or "reference": passed to every fused op; any backend but
            "auto"/"cpu" also runs every dense conv through F.conv2d.
        channels_last: convert the input to channels_last memory format first (the fast layout for oneDNN and
            cuDNN); activations stay channels_last through the network.
        conv_engine: how dense convolutions run: "auto" (oneDNN's fused convolution for 1x1 convs, Winograd
            F(4x4, 3x3) for 3x3 stride-1 convs with >= 64 channels, F.conv2d for the rest), "onednn" (oneDNN for
            every dense conv), "winograd" (Winograd for every 3x3 stride-1 conv, oneDNN for 1x1) or "aten"
            (F.conv2d everywhere). oneDNN and Winograd run on CPU fp32 inputs with autograd off and outside
            torch.compile; elsewhere every engine falls back to F.conv2d. Depthwise convs always run
            deeplab_fast.ops.dwconv_bn_act.
        tune_malloc: for a CPU model, make glibc malloc keep and recycle freed blocks up to 1 GiB
            (deeplab_fast.malloc_tuning.keep_freed_memory). This changes the whole process (its resident
            memory stays at its peak); deeplab_fast.restore_malloc_defaults() undoes it. No effect off glibc.
        dtype: None (keep the model's dtype), torch.float32, torch.float16 or torch.bfloat16: BatchNorm is
            folded in the model's dtype first, then the dense conv weights and biases are cast once; the
            depthwise parameters stay as folded (the kernels read float32 weights, packed once). For float16 and
            bfloat16 the classifiers (the final 1x1 conv and the aux head's) keep float32 weights: they take the
            16-bit features upcast, accumulate in float32 and return float32 logits, so softmax/argmax and the
            final upsampling see float32; the model takes float32 images (cast once at its entry) or images in
            the dtype. On the CPU the Winograd engine runs float32 only; bfloat16 dense convs run oneDNN with
            the weight pre-packed once where the CPU has native bf16 (AVX-512-BF16 or AMX:
            cpu_has_native_bf16()), else F.conv2d, and optimize() then warns once per process that bfloat16
            will be slow on this CPU. float16 dense convs run F.conv2d.

    The device (the model's parameters') decides the rest (device_plan): for a CUDA model the dense and
    pointwise convs run F.conv2d (cuDNN) with channels_last weights and the depthwise convs the CUDA kernel
    with its weight packed here, once; nothing CPU-only runs. (Compiled and emulated, never run on a GPU.)

    Returns:
        nn.Module in eval mode with the same forward contract ((N, 3, H, W) float -> (N, K, H, W) logits or
        the same dict); parameters do not require gradients. An image with a NaN or inf pixel gets NaN logits
        (the fused activations could otherwise turn NaN into finite values).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (a deeplab_fast DeepLab), got {type(model).__name__}")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if not isinstance(conv_engine, str) or conv_engine not in CONV_ENGINES:
        raise ValueError(f"conv_engine must be one of {', '.join(map(repr, CONV_ENGINES))}; got {conv_engine!r}")
    for name, value in (("channels_last", channels_last), ("tune_malloc", tune_malloc)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or dtype not in OPTIMIZE_DTYPES):
        raise ValueError(f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16; got {dtype!r}")
    if conv_engine in ("onednn", "winograd") and backend not in ("auto", "cpu"):
        raise ValueError(
            f"conv_engine={conv_engine!r} runs on the CPU: it needs backend 'auto' or 'cpu', got {backend!r}"
        )
    if conv_engine == "onednn" and not onednn_available():
        raise RuntimeError("conv_engine='onednn': this torch build has no oneDNN fused convolution; use 'auto'")
    if conv_engine == "winograd" and not _ext.has_kernel("winograd_conv3x3", "cpu"):
        raise RuntimeError("conv_engine='winograd': the compiled extension has no CPU Winograd kernel; use 'auto'")
    if model.training:
        warnings.warn(
            "optimize() folds BatchNorm with its running statistics, so it needs eval mode; optimizing an "
            "eval() copy (your model is unchanged). Call model.eval() first to silence this.",
            UserWarning,
            stacklevel=2,
        )
    if isinstance(model, DeepLab) and model.optimized is None:
        _fuser_for(model.backbone)  # an unknown backbone fails here, before anything changes
    device = _model_device(model)
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        warn_slow_bf16_once()
    plan = device_plan(device.type, backend, channels_last)
    if tune_malloc and plan.tune_malloc:
        # Large activations are freshly page-faulted on every forward otherwise (see malloc_tuning).
        keep_freed_memory()
    with torch.no_grad():
        out = copy.deepcopy(model).eval()
        if not isinstance(out, DeepLab):
            out = _fold_generic(out, channels_last)
            return (out if dtype is None else out.to(dtype)).eval()
        if out.optimized is None:
            _fuse_deeplab(out, backend, conv_engine)
        else:
            _reconfigure(out, backend, conv_engine)
        _cast_dense(out, dtype, plan.dense_weights_channels_last)
        for p in out.parameters():
            p.requires_grad_(False)
        _pack_depthwise(out, device, dtype, channels_last)
    out.channels_last = channels_last
    out.optimized = {
        "backend": backend,
        "channels_last": channels_last,
        "conv_engine": conv_engine,
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
    }
    return out.eval()


_SLOW_BF16_WARNED = False


def warn_slow_bf16_once() -> None:
    """Warn (once per process) that bfloat16 runs emulated, and slowly, on this CPU."""
    global _SLOW_BF16_WARNED
    if _SLOW_BF16_WARNED:
        return
    _SLOW_BF16_WARNED = True
    warnings.warn(
        "optimize(dtype=torch.bfloat16): this CPU has no native bfloat16 (no AVX-512-BF16 or AMX; "
        "torch.ops.mkldnn._is_mkldnn_bf16_supported() is False), so bfloat16 convolutions are emulated and "
        "slower than float32 here; use dtype=torch.float32 (or None) on this CPU",
        UserWarning,
        stacklevel=3,
    )


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def _cast_dense(model: nn.Module, dtype: torch.dtype | None, weights_channels_last: bool) -> None:
    """Cast every floating parameter and buffer but the depthwise ones to `dtype` (None: keep; the full-precision
    classifiers to float32 for a 16-bit dtype), and store 4-D dense conv weights channels_last when asked (cuDNN
    on channels_last activations)."""
    for m in model.modules():
        if isinstance(m, FusedDWConv):
            continue
        to = dtype
        if isinstance(m, FusedConv) and m.full_precision and dtype in LOW_PRECISION_DTYPES:
            to = torch.float32
        for table in (m._parameters, m._buffers):
            for name, t in table.items():
                if t is None or not t.is_floating_point():
                    continue
                new = t if to is None else t.to(to)
                if weights_channels_last and isinstance(m, FusedConv) and name == "weight" and new.dim() == 4:
                    new = new.contiguous(memory_format=torch.channels_last)
                if new is not t:
                    table[name] = nn.Parameter(new, requires_grad=False) if isinstance(t, nn.Parameter) else new
        if isinstance(m, FusedConv):
            m._packed = m._wino = None


def _pack_depthwise(model: nn.Module, device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> None:
    """Pack every depthwise weight for the kernels that will run it on `device` (the forward packs for any
    other device, dtype or layout it meets)."""
    for m in model.modules():
        if not isinstance(m, FusedDWConv):
            continue
        act_dtype = m.weight.dtype if dtype is None else dtype
        try:
            kernels = m.kernel_backend(device, act_dtype)
        except RuntimeError:
            continue  # a backend this device cannot run: the forward raises the clear error
        if kernels is not None:
            m.packed_params(act_dtype, kernels, channels_last)


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


__all__ = [
    "CONV_ENGINES",
    "FusedConv",
    "FusedDWConv",
    "FusedResizeConcat",
    "FusedSeparable",
    "cpu_has_native_bf16",
    "onednn_runs_dtype",
    "optimize",
]
