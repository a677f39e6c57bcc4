"""Image files: reading any common image as RGB uint8, writing label maps and colour images atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from deeplab_fast._files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


class ImageReadError(ValueError):
    """An input file is missing, not an image, corrupt, or empty."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Grayscale, palette, RGBA (alpha dropped), CMYK, 16-bit and float images are converted; EXIF orientation
    is applied; of a multi-frame file the first frame is read. Raises ImageReadError naming the file and
    the reason for a missing, unreadable, non-image, corrupt or zero-size file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, not an image file")
    try:
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return pil_to_rgb_array(img)
    except UnidentifiedImageError:
        raise ImageReadError(f"{p}: not an image file (or a format Pillow cannot read)") from None
    except ImageReadError as exc:
        raise ImageReadError(f"{p}: {exc}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{p}: corrupt or unreadable image ({type(exc).__name__}: {exc})") from None


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image of any mode (16-bit and float images are rescaled to 8 bits)."""
    if img.width == 0 or img.height == 0:
        raise ImageReadError(f"the image has zero size ({img.width}x{img.height})")
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        # 32-bit "I" images are mostly 16-bit PNGs; keep 8-bit ranges as they are
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        gray = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if "transparency" in img.info else img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def find_images(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursively, image extensions only) into (source, relative output stem) pairs.

    Files given directly keep their name; files found in a folder keep their path relative to it, under the
    folder's name when several inputs are given. The relative stems have no suffix. Missing paths are kept
    (reading them reports the error later). Raises ValueError if two inputs would write the same output.
    """
    pairs: list[tuple[Path, Path]] = []
    several = len(inputs) > 1
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            for f in found:
                rel = f.relative_to(p).with_suffix("")
                pairs.append((f, Path(p.resolve().name) / rel if several else rel))
        else:
            pairs.append((p, Path(p.stem)))
    seen: dict[Path, Path] = {}
    for src, rel in pairs:
        if rel in seen and seen[rel] != src:
            raise ValueError(f"inputs {seen[rel]} and {src} would both write the output {rel}.png; rename one")
        seen[rel] = src
    return pairs


def atomic_save(img: Image.Image, path: str | os.PathLike, format: str = "PNG", **params: Any) -> None:
    """Save a PIL image to `path` atomically (deeplab_fast._files.atomic_write: umask permissions, no partial
    file). Creates missing parent folders. On failure `path` is untouched."""
    atomic_write(path, lambda fh: img.save(fh, format=format, **params))


def label_image(
    labels: torch.Tensor | np.ndarray, palette: np.ndarray | None = None, num_classes: int | None = None
) -> Image.Image:
    """A PIL image of a label map (H, W) integer: palette-indexed mode "P", or 16-bit grayscale (mode "I;16").

    num_classes: the model's class count; above 256 every map is written 16-bit, whatever labels it happens to
    hold, so all outputs of one model have one format. None: decided by the labels (16-bit if any is > 255).
    palette: (P, 3) uint8 colours for the "P" image (missing entries are black).
    """
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape (H, W); got shape {tuple(lab.shape)}")
    if lab.size and (lab.min() < 0 or lab.max() > 65535):
        raise ValueError(f"labels must be in [0, 65535] to be written as PNG; got [{lab.min()}, {lab.max()}]")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise TypeError(f"num_classes must be an int or None, got {num_classes!r}")
    if num_classes is not None and num_classes > 65536:
        raise ValueError(f"num_classes={num_classes}: PNG label maps hold at most 65536 classes")
    wide = num_classes > 256 if num_classes is not None else bool(lab.size and lab.max() > 255)
    if not wide:
        img = Image.frombytes("P", (lab.shape[1], lab.shape[0]), np.ascontiguousarray(lab, dtype=np.uint8).tobytes())
        flat = np.zeros((256, 3), dtype=np.uint8)
        if palette is not None:
            pal = np.asarray(palette, dtype=np.uint8)[:256]
            flat[: len(pal)] = pal
        img.putpalette(flat.reshape(-1).tolist())
        return img
    return Image.frombytes("I;16", (lab.shape[1], lab.shape[0]), np.ascontiguousarray(lab, dtype="<u2").tobytes())


def save_labels(
    labels: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    palette: np.ndarray | None = None,
    num_classes: int | None = None,
) -> None:
    """Write a label map (H, W) integer as a PNG atomically: mode "P" with `palette`, or 16-bit when num_classes
    > 256 (see label_image)."""
    atomic_save(label_image(labels, palette, num_classes), path, format="PNG")


def save_rgb(image: np.ndarray | torch.Tensor, path: str | os.PathLike) -> None:
    """Write an (H, W, 3) uint8 image atomically; the format follows the suffix (PNG, JPEG, ...)."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8; got shape {tuple(arr.shape)} dtype {arr.dtype}")
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    atomic_save(Image.fromarray(np.ascontiguousarray(arr)), path, format=fmt)


def iter_chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Consecutive lists of at most `size` items."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
