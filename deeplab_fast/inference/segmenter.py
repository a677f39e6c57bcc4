"""Segmenter: a trained segmentation model turned into one call from images to label maps.

Semantics (the slow reference in tests/test_inference.py composes exactly this from F.interpolate + softmax):

1. The image becomes float RGB in [0, 1] (uint8 / 255), then (x - mean) / std (by default the model config's
   input_mean / input_std, else ImageNet's).
2. For every scale s and (with flip=True) both orientations, the normalised image is resized bilinearly
   (with `align_corners`, the model's by default) to (int(H*s + 0.5), int(W*s + 0.5)), flipped left-right for
   the flipped pass, and
   run through the model. Inputs smaller than `min_size` are zero-padded at the bottom/right and the pad is
   cropped off the logits.
3. Each pass's logits are flipped back, resized bilinearly to (H, W) and softmaxed over classes; the passes'
   probabilities are averaged (deeplab_fast.ops.upsample_softmax_accumulate does resize + softmax + add in
   one step). With a window, a pass whose input is larger than the window is tiled instead: the windows'
   probabilities are averaged where they overlap, then resized to (H, W).
4. predict() takes the argmax. A single pass (one scale, no flip, no tiling) skips the probabilities and
   goes through deeplab_fast.ops.upsample_argmax.

A pass's logits are the model's lowest-resolution class scores when the model can produce them (a
DeepLabV3+ from deeplab_fast.models at output stride 16 gives 1/4-resolution logits from its decoder); the
one bilinear resize straight to (H, W) is then cheaper than the model's own upsampling followed by a second
resize. Other models (any nn.Module mapping (N, 3, H, W) to (N, K, h, w) logits, or to a dict with "out") are
used through their forward.

Non-finite numbers never become labels: a float image holding NaN or inf raises ValueError before any pass, and
NaN or infinite logits raise RuntimeError (rather than propagating NaN probabilities: labels cannot carry NaN, and
a fused, optimize()d model is not bound to propagate NaN the way the eager model does).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deeplab_fast import ops
from deeplab_fast.data._checks import check_bool, float_tuple, positive_int, positive_pair
from deeplab_fast.dtypes import parse_dtype
from deeplab_fast.inference.cuda_graphs import GraphedForward
from deeplab_fast.inference.preprocess import (
    ImageLike,
    all_finite,
    check_mean_std,
    model_normalization,
    normalize,
    pad_to_min,
    rescale,
    to_float_rgb,
)
from deeplab_fast.inference.sliding import check_stride, needs_sliding, sliding_probabilities
from deeplab_fast.ops._common import is_channels_last


class Segmenter:
    """Predict label maps and class probabilities of images with a segmentation model.

    model: an nn.Module mapping (N, 3, H, W) normalised RGB to logits (N, K, h, w) (any h, w: they are resized
        to the image), or to a dict holding them under "out" (torchvision's models). The caller's model is never
        changed: when it must move to `device` or be cast to `dtype` (or be optimized) the Segmenter runs a
        copy; otherwise it runs the model itself, in eval mode for the duration of each call (its own mode is
        restored afterwards).
    mean, std: per-channel normalisation of RGB in [0, 1]; None (default): the model config's input_mean /
        input_std where set (e.g. TensorFlow's 0.5 / 0.5 of deeplab_fast.from_timm), else ImageNet's.
    scales: image scales of the passes (e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) for the paper's evaluation).
    flip: also run each scale on the left-right flipped image (a bool).
    window: (H, W) or int: tile inputs larger than this into overlapping windows (Cityscapes-size images).
    stride: (H, W) or int step between windows, at most the window on each side (default: two thirds of the
        window, one third overlap).
    device: "auto" (CUDA when available, else CPU), or any torch.device / string that can hold weights (not
        "meta").
    dtype: the model's compute dtype (torch.float32, torch.float16, torch.bfloat16, or "fp16", "bf16", ...), or
        None for the dtype the model already has; probabilities are always accumulated in float32. With
        optimize=True a deeplab_fast DeepLab gets it through deeplab_fast.optimize(model, dtype=...) (its
        classifier stays float32, so the logits are float32); any other model is cast whole (model.to(dtype)).
    optimize: for a deeplab_fast DeepLab, run on deeplab_fast.optimize(model) (BN folded, fused kernels; a copy,
        so `model` keeps its modules); other models run as they are.
    align_corners: how the scaled inputs and the logits are resized (default: the model's `align_corners`
        attribute, else False).
    min_size: inputs smaller than this (either side) are padded up to it, and the pad is cropped away.
    batch_size: most images (or sliding windows) per forward.
    cuda_graphs: replay the model's forward from a CUDA graph captured once per input shape (a bool; CUDA devices
        only: batch-1 latency on a GPU is bound by kernel launches). Each distinct input shape keeps its graph's
        memory for the Segmenter's life. Compiled, never run on a GPU here.

    Non-finite values: an image holding NaN or inf raises ValueError, and a model that produces NaN or inf logits
    raises RuntimeError (labels cannot carry NaN, and an optimized model may not propagate it), so no call ever
    returns plausible labels or probabilities computed from non-finite numbers.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        window: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        device: str | torch.device = "auto",
        dtype: torch.dtype | str | None = torch.float32,
        optimize: bool = True,
        align_corners: bool | None = None,
        min_size: int = 32,
        batch_size: int = 8,
        cuda_graphs: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        default_mean, default_std = model_normalization(model)
        self.mean, self.std = check_mean_std(
            default_mean if mean is None else mean, default_std if std is None else std
        )
        self.scales = _check_scales(scales)
        self.flip = check_bool(flip, "flip")
        optimize = check_bool(optimize, "optimize")
        self.min_size = positive_int(min_size, "min_size")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.window = None if window is None else positive_pair(window, "window")
        if self.window is not None and min(self.window) < self.min_size:
            raise ValueError(f"window must be at least min_size={self.min_size} on each side; got {self.window}")
        if stride is not None and self.window is None:
            raise ValueError("stride is only used with window; pass window=(H, W) too")
        if self.window is None:
            self.stride = None
        elif stride is None:
            self.stride = (max(1, (2 * self.window[0]) // 3), max(1, (2 * self.window[1]) // 3))
        else:
            self.stride = positive_pair(stride, "stride")
            check_stride(self.window, self.stride)
        self.device = resolve_device(device)
        self.cuda_graphs = check_bool(cuda_graphs, "cuda_graphs")
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError(
                f"cuda_graphs=True captures the forward in CUDA graphs and needs a CUDA device; this Segmenter runs "
                f"on {self.device} (use device='cuda', or cuda_graphs=False)"
            )
        if align_corners is None:
            align_corners = bool(getattr(model, "align_corners", False))
        self.align_corners = check_bool(align_corners, "align_corners")
        self.dtype = _model_dtype(model) if dtype is None else resolve_dtype(dtype)
        _check_has_weights(model)

        # Work on a copy whenever the model has to change; the caller's model is never moved or cast.
        owned = False
        if not _on_device(model, self.device):
            model, owned = copy.deepcopy(model).to(device=self.device), True
        self.optimized = False
        if optimize:
            with _eval_mode(model):  # optimize() copies the model; it folds BatchNorm with running statistics
                model, self.optimized = _try_optimize(model, self.dtype)
            owned = owned or self.optimized
        if not _computes_in(model, self.dtype):  # not optimized (or not optimizable): cast it whole
            model, owned = (model if owned else copy.deepcopy(model)).to(dtype=self.dtype), True
        self.model = model.eval() if owned else model
        self._borrowed = not owned  # the caller's own model: switched to eval mode around each forward only
        self._channels_last = _uses_channels_last(self.model)
        self._lowres = lowres_logits_fn(self.model)
        # one GraphedForward per model entry point (the low-resolution logits, the full forward)
        self._graphed: dict[str, GraphedForward] = {}

    def __repr__(self) -> str:
        return (
            f"Segmenter({type(self.model).__name__}, scales={self.scales}, flip={self.flip}, window={self.window}, "
            f"stride={self.stride}, device={self.device}, dtype={self.dtype}, optimized={self.optimized})"
        )

    @property
    def passes(self) -> list[tuple[float, bool]]:
        """(scale, flipped) of every pass, in the order they run."""
        flips = (False, True) if self.flip else (False,)
        return [(s, f) for s in self.scales for f in flips]

    # ---- public API -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, image: ImageLike) -> torch.Tensor:
        """Label map (H, W) int64 of one image (path, PIL image, HxWx3 numpy, or (C, H, W)/(1, C, H, W) tensor).

        The result is on the input tensor's device for tensors, on the CPU otherwise.
        """
        x = self._prepare_one(image)
        return self._labels(x)[0].to(_result_device(image))

    __call__ = predict

    @torch.inference_mode()
    def predict_proba(self, image: ImageLike) -> torch.Tensor:
        """Class probabilities (C, H, W) float32 of one image: softmax averaged over scales, flips and windows."""
        x = self._prepare_one(image)
        return self._probabilities(x)[0].to(_result_device(image))

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[ImageLike] | torch.Tensor) -> list[torch.Tensor]:
        """Label maps [(H_i, W_i) int64] of several images (a sequence of images, or an (N, C, H, W) tensor).

        Consecutive images of the same size run together, up to batch_size per forward.
        """
        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise ValueError(f"a batch tensor must have shape (N, C, H, W); got {tuple(images.shape)}")
            images = list(images.unbind(0))
        elif isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ValueError(f"images must be a list of images or an (N, C, H, W) tensor; got {type(images).__name__}")
        results: list[torch.Tensor] = []
        group: list[torch.Tensor] = []
        devices: list[torch.device] = []

        def flush() -> None:
            if group:
                labels = self._labels(torch.cat(group))
                results.extend(lab.to(dev) for lab, dev in zip(labels, devices, strict=True))
                group.clear()
                devices.clear()

        for image in images:
            x = to_float_rgb(image, self.device)
            for one in x.split(1):
                if group and (one.shape[-2:] != group[0].shape[-2:] or len(group) == self.batch_size):
                    flush()
                group.append(normalize(one, self.mean, self.std))
                devices.append(_result_device(image))
        flush()
        return results

    # ---- internals --------------------------------------------------------------------------------------------

    def _prepare_one(self, image: ImageLike) -> torch.Tensor:
        x = to_float_rgb(image, self.device)
        if x.shape[0] != 1:
            raise ValueError(f"predict takes one image; got a batch of {x.shape[0]} (use predict_batch)")
        return normalize(x, self.mean, self.std)

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        """Labels (N, H, W) int64 of normalised images x (N, 3, H, W) float32."""
        size = (x.shape[-2], x.shape[-1])
        if len(self.passes) == 1:
            scale = self.scales[0]
            xs = rescale(x, scale, self.align_corners)
            if not needs_sliding(tuple(xs.shape[-2:]), self.window):
                return ops.upsample_argmax(self._logits(xs), size, align_corners=self.align_corners)
        return self._probabilities(x).argmax(1)

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Averaged probabilities (N, K, H, W) float32 of normalised images x (N, 3, H, W) float32."""
        n, _, h, w = x.shape
        passes = self.passes
        weight = 1.0 / len(passes)
        accum: torch.Tensor | None = None
        for scale in self.scales:
            xs = rescale(x, scale, self.align_corners)
            for flipped in (False, True) if self.flip else (False,):
                xin = xs.flip(-1) if flipped else xs
                if needs_sliding(tuple(xin.shape[-2:]), self.window):
                    probs = sliding_probabilities(
                        xin, self.window, self.stride, self._tile_probabilities, max(1, self.batch_size // n)
                    )
                    if flipped:
                        probs = probs.flip(-1)
                    if tuple(probs.shape[-2:]) != (h, w):
                        probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=self.align_corners)
                    if accum is None:
                        accum = torch.zeros((n, probs.shape[1], h, w), dtype=torch.float32, device=x.device)
                    accum.add_(probs, alpha=weight)
                else:
                    logits = self._logits(xin)
                    if accum is None:
                        accum = torch.zeros((n, logits.shape[1], h, w), dtype=torch.float32, device=x.device)
                    ops.upsample_softmax_accumulate(
                        logits, accum, weight=weight, flip=flipped, align_corners=self.align_corners
                    )
        assert accum is not None  # there is at least one scale
        return accum

    def _tile_probabilities(self, tile: torch.Tensor) -> torch.Tensor:
        logits = self._logits(tile)
        accum = torch.zeros(
            (tile.shape[0], logits.shape[1], tile.shape[-2], tile.shape[-1]), dtype=torch.float32, device=tile.device
        )
        return ops.upsample_softmax_accumulate(logits, accum, align_corners=self.align_corners)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, h', w') of normalised x (N, 3, h, w), covering exactly the image (pads cropped away).

        float32/float16/bfloat16 (float64 logits are rounded to float32, the ops' accumulation dtype); raises
        RuntimeError if any logit is NaN or infinite.
        """
        n = x.shape[0]
        xp, (h, w) = pad_to_min(x, self.min_size)
        padded = tuple(xp.shape[-2:]) != (h, w)
        inp = xp.to(self.dtype)
        if self._channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        use_lowres = self._lowres is not None and not padded
        with _eval_mode(self.model) if self._borrowed else contextlib.nullcontext():
            out = model_logits(self._run_model(inp, use_lowres), n)
        check_finite_logits(out)
        if out.dtype == torch.float64:
            out = out.float()
        if padded:
            # crop in input pixels: bring the logits to the padded input's size first
            if tuple(out.shape[-2:]) != tuple(xp.shape[-2:]):
                out = F.interpolate(
                    out.float(), size=tuple(xp.shape[-2:]), mode="bilinear", align_corners=self.align_corners
                )
            out = out[..., :h, :w]
        return out

    def _run_model(self, inp: torch.Tensor, lowres: bool) -> Any:
        fn = self._lowres if lowres else self.model
        if not self.cuda_graphs:
            return fn(inp)
        name = "lowres" if lowres else "forward"
        if name not in self._graphed:
            self._graphed[name] = GraphedForward(fn)
        return self._graphed[name](inp)


def lowres_logits_fn(model: nn.Module) -> Callable[[torch.Tensor], Any] | None:
    """The model's way to produce its logits before the final upsampling, or None if it has none.

    Recognised: a `forward_logits(x, upsample=False)` / `forward_lowres(x)` method (deeplab_fast's DeepLabV3+).
    """
    fn = getattr(model, "forward_lowres", None)
    if callable(fn):
        return fn
    fn = getattr(model, "forward_logits", None)
    if callable(fn):
        return lambda x: fn(x, upsample=False)
    return None


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; other values through torch.device, checked to be usable."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; got {device!r}") from None
    if dev.type == "meta":
        raise ValueError(
            f"device={str(dev)!r} cannot hold the model's weights (meta tensors have no data); use 'cpu' or 'cuda'"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} asks for CUDA, but no CUDA device is available; use device='cpu'")
    return dev


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch.float32 / float16 / bfloat16, or one of their names ("float32", "fp16", "bf16", ...)."""
    return parse_dtype(dtype)


def check_finite_logits(logits: torch.Tensor) -> None:
    """Raise RuntimeError if the model's logits (any shape, floating) hold NaN or infinite values.

    Labels cannot carry NaN, so a non-finite logit would otherwise become a plausible-looking label.
    """
    if not all_finite(logits):
        raise RuntimeError(
            f"the model produced NaN or infinite logits ({logits.dtype}); its weights may hold non-finite values "
            "(e.g. a diverged training run), or a float16 model overflowed (try dtype=torch.float32)"
        )


def _try_optimize(model: nn.Module, dtype: torch.dtype) -> tuple[nn.Module, bool]:
    """(optimize(model, dtype=...), True) for a deeplab_fast DeepLab, else (model, False).

    optimize() does the cast (a 16-bit model keeps its float32 classifier: float32 logits); the dtype is passed
    only when the model does not compute in it already. An already optimized model keeps the caller's settings
    (backend, conv engine, layout) and is re-optimized with them only to change its dtype.
    """
    from deeplab_fast.models.deeplab import DeepLab
    from deeplab_fast.models.fuse import optimize

    if not isinstance(getattr(model, "model", model), DeepLab):
        return model, False  # other models run as they are
    settings = getattr(model, "optimized", None)
    if settings is not None:
        if _computes_in(model, dtype):
            return model, False
        keep = {k: settings[k] for k in ("backend", "channels_last", "conv_engine") if k in settings}
        return optimize(model, **keep, dtype=dtype), True
    return optimize(model, dtype=None if _computes_in(model, dtype) else dtype), True


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()


def _check_has_weights(model: nn.Module) -> None:
    if any(t.device.type == "meta" for t in _tensors(model)):
        raise ValueError(
            "model has tensors on the meta device (no weights); load its weights first "
            "(e.g. model.to_empty(device='cpu') and load_state_dict)"
        )


def _on_device(model: nn.Module, device: torch.device) -> bool:
    """Whether every parameter and buffer of `model` is on `device` (a device without index: any index)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # where .to("cuda") would put them
    return all(t.device.type == device.type and device.index in (None, t.device.index) for t in _tensors(model))


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter or buffer (float32 for a model without any)."""
    return next((t.dtype for t in _tensors(model) if t.is_floating_point()), torch.float32)


def _computes_in(model: nn.Module, dtype: torch.dtype) -> bool:
    """Whether `model` computes in `dtype`: an optimize(dtype=float16/bfloat16) copy in that dtype (its float32
    classifier included), any other model when all its floating tensors have the dtype."""
    low = getattr(model, "low_precision_dtype", None)
    if callable(low) and low() is not None:
        return low() == dtype
    return all(t.dtype == dtype for t in _tensors(model) if t.is_floating_point())


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run a block with every module of `model` in eval mode; the modules in training mode are put back after."""
    training = [m for m in model.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True


def _uses_channels_last(model: nn.Module) -> bool:
    p = next((p for p in model.parameters() if p.dim() == 4), None)
    return p is not None and is_channels_last(p)


def model_logits(out: Any, n: int) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, a dict's "out" entry (torchvision's models) or a
    tuple's first item; checked to be float (N=n, K, h, w). Raises ValueError saying what the model returned."""
    if isinstance(out, dict):
        if "out" not in out:
            raise ValueError(f"the model returned a dict without an 'out' entry (keys: {sorted(out)})")
        out = out["out"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != n or not out.is_floating_point():
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return float logits of shape (N={n}, K, h, w); got {got}")
    return out


def _result_device(image: Any) -> torch.device:
    return image.device if isinstance(image, torch.Tensor) else torch.device("cpu")


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = (scales,)
    vals = float_tuple(scales, "scales", "a non-empty sequence of positive numbers")
    if not vals or any(not (s > 0 and s < float("inf")) for s in vals):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers; got {scales!r}")
    return vals
