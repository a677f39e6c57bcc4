"""Inference: the Segmenter (multi-scale, flip, sliding window), palettes, image I/O, export and the CLI."""

from deeplab_fast.inference.export import export_onnx, export_torchscript
from deeplab_fast.inference.palettes import colorize, get_palette, overlay
from deeplab_fast.inference.segmenter import Segmenter

__all__ = ["Segmenter", "colorize", "overlay", "get_palette", "export_onnx", "export_torchscript"]
