"""Sliding-window inference: tile positions and overlap-averaged class probabilities."""

from __future__ import annotations

from collections.abc import Callable

import torch


def check_stride(window: tuple[int, int], stride: tuple[int, int]) -> None:
    """Raise ValueError naming both if `stride` (H, W) exceeds `window` (H, W) on either side.

    Windows further apart than their size would leave the pixels between them without any prediction.
    """
    if stride[0] > window[0] or stride[1] > window[1]:
        raise ValueError(
            f"stride {tuple(stride)} must not exceed window {tuple(window)} on either side: the pixels between "
            "two windows would get no prediction"
        )


def tile_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` along `length`, `stride` apart, the last one flush with the end.

    A length that fits in one window gives [0] (that window is then cut to `length`); stride must be at most
    window (ValueError otherwise), so that the windows cover every position.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive; got window={window}, stride={stride}")
    if length <= window:
        return [0]
    if stride > window:
        raise ValueError(f"stride {stride} must not exceed window {window}: positions between windows would be missed")
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def tiles(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Windows (y0, y1, x0, x1) covering an image of `size` (H, W); every pixel is in at least one."""
    h, w = size
    wh, ww = min(window[0], h), min(window[1], w)
    return [(y, y + wh, x, x + ww) for y in tile_starts(h, wh, stride[0]) for x in tile_starts(w, ww, stride[1])]


def needs_sliding(size: tuple[int, int], window: tuple[int, int] | None) -> bool:
    """Whether an image of `size` (H, W) is larger than `window` (H, W) in either direction."""
    return window is not None and (size[0] > window[0] or size[1] > window[1])


def sliding_probabilities(
    x: torch.Tensor,
    window: tuple[int, int],
    stride: tuple[int, int],
    tile_probs: Callable[[torch.Tensor], torch.Tensor],
    tiles_per_forward: int = 1,
) -> torch.Tensor:
    """Class probabilities of x (N, 3, H, W), averaged over the overlapping windows that cover each pixel.

    tile_probs(tiles) -> (M, K, h, w) float32: the softmax probabilities of `tiles` (M, 3, h, w) at the tiles'
    own resolution. All windows have the same size, so up to `tiles_per_forward` of them (times N images) go
    through one call. Returns (N, K, H, W) float32: each pixel's mean over the windows containing it, so the
    probabilities of every pixel still sum to 1.
    """
    n, _, h, w = x.shape
    boxes = tiles((h, w), window, stride)
    total: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), dtype=torch.float32, device=x.device)
    step = max(1, int(tiles_per_forward))
    for first in range(0, len(boxes), step):
        group = boxes[first : first + step]
        batch = torch.cat([x[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in group])
        probs = tile_probs(batch)
        if total is None:
            total = torch.zeros((n, probs.shape[1], h, w), dtype=torch.float32, device=x.device)
        for i, (y0, y1, x0, x1) in enumerate(group):
            total[:, :, y0:y1, x0:x1] += probs[i * n : (i + 1) * n]
            count[:, :, y0:y1, x0:x1] += 1.0
    assert total is not None  # tiles() always yields at least one window
    return total / count
