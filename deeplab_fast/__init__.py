"""deeplab_fast: DeepLabV3+ end to end, with fused CUDA, C++ and Triton kernels.

Heavier parts (models, inference, training) load on first use, so `import deeplab_fast` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

from deeplab_fast import ops
from deeplab_fast._ext import HAS_EXT, built_with_cuda
from deeplab_fast.ops._settings import configure

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "models": "deeplab_fast.models",
    "optimize": "deeplab_fast.models.fuse",
    "from_torchvision": "deeplab_fast.models.convert",
    "from_smp": "deeplab_fast.models.convert",
    "from_timm": "deeplab_fast.models.timm_import",
    "from_tf_checkpoint": "deeplab_fast.convert.tf_deeplab",
    "count_macs": "deeplab_fast.models.macs",
    "load_weights": "deeplab_fast.models.weights",
    "load_model": "deeplab_fast.models.weights",
    "save_weights": "deeplab_fast.models.weights",
    "Segmenter": "deeplab_fast.inference.segmenter",
    "colorize": "deeplab_fast.inference.palettes",
    "overlay": "deeplab_fast.inference.palettes",
    "export_onnx": "deeplab_fast.inference.export",
    "data": "deeplab_fast.data",
    "metrics": "deeplab_fast.metrics",
    "training": "deeplab_fast.training",
    "assets": "deeplab_fast.assets",
    "testing": "deeplab_fast.testing",
    "restore_malloc_defaults": "deeplab_fast.malloc_tuning",
    "cpu_capability": "deeplab_fast.cpu",
    "cpu_info": "deeplab_fast.cpu",
}

__all__ = ["ops", "HAS_EXT", "built_with_cuda", "configure", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if module.__name__.endswith("." + name) else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deeplab_fast' has no attribute {name!r}")
