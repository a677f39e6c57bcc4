"""Reading images and label masks from disk, with checks that name the offending file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as RGB. Returns a uint8 tensor (3, H, W)."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_label_array(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG (mode L, P or I) as an int64 array (H, W) of raw values."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(
                    f"label mask {path} has mode {im.mode!r}; expected a single-channel index image "
                    "(mode L or P: one class index per pixel, 255 = ignore), not a color image"
                )
            array = np.asarray(im, dtype=np.int64)
    except OSError as exc:
        raise ValueError(f"cannot read label mask {path}: {exc}") from exc
    return array


def check_mask_values(mask: torch.Tensor, num_classes: int, ignore_index: int, path: str | Path) -> None:
    """Raise ValueError naming `path` if `mask` (int64, any shape) has values outside [0, num_classes) + ignore."""
    bad = (mask < 0) | (mask >= num_classes)
    bad &= mask != ignore_index
    if bool(bad.any()):
        values = torch.unique(mask[bad])[:10].tolist()
        raise ValueError(
            f"label mask {path} has values {values} outside the classes 0..{num_classes - 1} "
            f"and not the ignore label {ignore_index}"
        )


def check_same_size(image: torch.Tensor, mask: torch.Tensor, image_path: str | Path, mask_path: str | Path) -> None:
    """Raise ValueError if image (3, H, W) and mask (H, W) differ in size, naming both files."""
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        raise ValueError(
            f"image {image_path} is {image.shape[-1]}x{image.shape[-2]} (WxH) but its mask {mask_path} is "
            f"{mask.shape[-1]}x{mask.shape[-2]}; image and mask must have the same size"
        )


def require_dir(path: Path, what: str, layout: str) -> None:
    """Raise FileNotFoundError naming `path` and the expected folder `layout` if `path` is not a directory."""
    if not path.is_dir():
        found = "is a file, not a folder" if path.exists() else "not found"
        raise FileNotFoundError(f"{what}: folder {path} {found}. Expected layout:\n{layout}")


def read_list(path: Path, what: str, layout: str) -> list[str]:
    """Read a split list file (one id per line, blank lines skipped); clear error if it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: split list {path} not found. Expected layout:\n{layout}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
