"""Turning user images into model input: RGB in [0, 1], normalisation, scaling, padding small images."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deeplab_fast.data._checks import check_mean_std
from deeplab_fast.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from deeplab_fast.inference.io import pil_to_rgb_array, read_image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageLike",
    "all_finite",
    "check_finite_image",
    "check_mean_std",
    "model_normalization",
    "normalize",
    "pad_to_min",
    "rescale",
    "scaled_size",
    "to_float_rgb",
    "to_uint8_rgb",
]

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

_INT_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def to_float_rgb(image: ImageLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Any supported image as float32 RGB in [0, 1], shape (N, 3, H, W) (N = 1 except for NCHW tensors).

    image: a path; a PIL image (any mode); a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha
    dropped) of uint8 (divided by 255), uint16 (divided by 65535) or float (taken as [0, 1]); a tensor
    (C, H, W) or (N, C, H, W) with C in {1, 3, 4}, uint8 (divided by 255) or float (taken as RGB in [0, 1]).
    device: where the result lives (default: the tensor's device, else CPU).
    Raises ValueError naming what was expected for any other kind, shape, dtype, a zero-size image, or a float
    image holding NaN or infinite values.
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    elif isinstance(image, Image.Image):
        image = pil_to_rgb_array(image)
    if isinstance(image, np.ndarray):
        return _numpy_to_float(image, device)
    if isinstance(image, torch.Tensor):
        return _tensor_to_float(image, device)
    raise ValueError(
        f"image must be a path, PIL image, numpy array (H, W, 3) or tensor (C, H, W)/(N, C, H, W); "
        f"got {type(image).__name__}"
    )


def to_uint8_rgb(image: ImageLike) -> np.ndarray:
    """Any supported image (see to_float_rgb; one image only) as (H, W, 3) uint8 RGB on the CPU."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb_array(image)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    x = to_float_rgb(image, "cpu")
    if x.shape[0] != 1:
        raise ValueError(f"expected one image; got a batch of {x.shape[0]}")
    return (x[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _numpy_to_float(arr: np.ndarray, device: torch.device | str | None) -> torch.Tensor:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"a numpy image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {tuple(arr.shape)}"
        )
    _check_nonempty(arr.shape[0], arr.shape[1])
    if arr.dtype in _INT_RANGES:
        scale = _INT_RANGES[arr.dtype]
        t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32)) / scale
    elif np.issubdtype(arr.dtype, np.floating):
        t = check_finite_image(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
    elif arr.dtype == np.bool_:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    else:
        raise ValueError(f"a numpy image must be uint8, uint16 or float; got dtype {arr.dtype}")
    t = t.permute(2, 0, 1)[None]
    return _to_rgb(t).to(device or "cpu").contiguous()


def _tensor_to_float(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"an image tensor must have shape (C, H, W) or (N, C, H, W) with C in {{1, 3, 4}}; got {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError("the image batch is empty (N = 0)")
    _check_nonempty(t.shape[2], t.shape[3])
    t = t.detach().to(device) if device is not None else t.detach()
    if t.dtype == torch.uint8:
        t = t.to(torch.float32) / 255.0
    elif t.dtype == torch.uint16:
        t = t.to(torch.float32) / 65535.0
    elif t.is_floating_point():
        t = check_finite_image(t.to(torch.float32))
    else:
        raise ValueError(f"an image tensor must be uint8 or floating point (RGB in [0, 1]); got dtype {t.dtype}")
    return _to_rgb(t).contiguous()


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of the floating tensor `t` is finite (neither NaN nor +-inf)."""
    # Any NaN or inf makes the sum NaN or inf, so a finite sum settles it in one reduction (about 20x cheaper
    # than isfinite(t).all() on this CPU); only a non-finite sum, which finite values can give by overflowing,
    # needs the element-wise test.
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_finite_image(x: torch.Tensor) -> torch.Tensor:
    """`x` (an image or batch, any shape, floating) if all its values are finite; ValueError counting the NaN and
    infinite values otherwise (they would turn into plausible-looking labels or colours downstream)."""
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"the image holds {bad} NaN or infinite values; expected finite RGB values in [0, 1]")
    return x


def _to_rgb(t: torch.Tensor) -> torch.Tensor:
    if t.shape[1] == 1:
        return t.expand(-1, 3, -1, -1)
    return t[:, :3]


def _check_nonempty(h: int, w: int) -> None:
    if h == 0 or w == 0:
        raise ValueError(f"the image has zero size ({h}x{w}); expected at least 1x1")


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel: x (N, 3, H, W) float; mean, std: 3 floats. Returns a new tensor."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(int(H * s + 0.5), int(W * s + 0.5)), at least 1 x 1."""
    h, w = size
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def rescale(x: torch.Tensor, scale: float, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of x (N, C, H, W) to scaled_size((H, W), scale) with the given align_corners convention (the
    model's: TensorFlow DeepLab resizes its scaled inputs with align_corners=True); s = 1 is x itself."""
    size = scaled_size((x.shape[-2], x.shape[-1]), scale)
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def model_normalization(model: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a model expects of RGB in [0, 1]: its config's input_mean / input_std where set (a
    deeplab_fast model built with them, e.g. from_timm's TensorFlow (0.5, 0.5, 0.5)), else ImageNet's."""
    config = getattr(model, "config", None)
    config = config if isinstance(config, dict) else {}
    mean = config.get("input_mean") or IMAGENET_MEAN
    std = config.get("input_std") or IMAGENET_STD
    return check_mean_std(mean, std)


def pad_to_min(x: torch.Tensor, min_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad x (N, C, h, w) at the bottom and right to at least min_size x min_size.

    Returns (padded, (h, w)); crop the model's output with [..., :h, :w]. After normalisation zero is the
    mean colour, so the pad looks like a flat mean-grey border to the model.
    """
    h, w = x.shape[-2:]
    ph, pw = max(0, min_size - h), max(0, min_size - w)
    if ph == 0 and pw == 0:
        return x, (h, w)
    return F.pad(x, (0, pw, 0, ph)), (h, w)
