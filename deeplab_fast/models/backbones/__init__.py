"""Backbones: each maps (N, 3, H, W) to (low_level, mid, out) features.

low_level: stride 4 (decoder input); mid: the stride-16 stage's output (at most stride 16; the auxiliary
head's input); out: the encoder output at the requested output stride (8, 16 or 32).
"""

from __future__ import annotations


def dilation_schedule(
    strides: list[int], start_stride: int, output_stride: int, dilate_first_block: bool
) -> list[tuple[int, int, int]]:
    """For units with nominal `strides`, return (stride, first_dilation, dilation) per unit.

    first_dilation is what the unit's strided conv uses, dilation what the units after it use.

    A unit that would push the running stride past `output_stride` keeps stride 1 and multiplies the
    dilation instead. With dilate_first_block=False (torchvision) that unit itself still uses the previous
    dilation; with True (smp, TensorFlow multi-grid style) it already uses the new one.
    """
    current, dilation, out = start_stride, 1, []
    for s in strides:
        if s > 1 and current * s > output_stride:
            previous = dilation
            dilation *= s
            out.append((1, dilation if dilate_first_block else previous, dilation))
        else:
            current *= s
            out.append((s, dilation, dilation))
    return out
