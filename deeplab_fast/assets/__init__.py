"""Files that ship with deeplab_fast: a small demo model trained on the synthetic shapes and a sample image.

    import deeplab_fast
    from deeplab_fast.assets import demo_model, sample_image

    model = demo_model()                      # DeepLabV3+ (MobileNetV2 x0.35), 4 classes, eval mode
    labels = deeplab_fast.Segmenter(model).predict(sample_image())   # (H, W) int64 class indices

Classes: 0 background, 1 ellipse, 2 rectangle, 3 triangle (see deeplab_fast.data.SyntheticShapes). The model
was trained by deeplab_fast/assets/make_demo.py with the packaged config configs/demo_shapes.yaml; it knows
nothing but these shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from deeplab_fast.models.deeplab import DeepLab

ASSETS_DIR = Path(__file__).resolve().parent
DEMO_MODEL = "demo_shapes.safetensors"
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo_shapes.yaml"
SAMPLE_IMAGE = "sample.png"
SAMPLE_LABELS = "sample_labels.png"
SAMPLE_SIZE = 128
SAMPLE_SEED = 2070
DEMO_CLASS_NAMES = ("background", "ellipse", "rectangle", "triangle")
# background black, then the base colours SyntheticShapes draws classes 1..3 with
DEMO_PALETTE = ((0, 0, 0), (230, 60, 50), (50, 200, 70), (60, 90, 230))

__all__ = ["demo_model", "demo_model_path", "sample_image", "sample_image_path", "sample_labels"]


def _asset(name: str) -> Path:
    path = ASSETS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from this installation (rebuild it with python -m deeplab_fast.assets.make_demo)"
        )
    return path


def demo_model_path() -> Path:
    """Path of the demo model file (.safetensors, about 1.3 MB, self-describing: deeplab_fast.load_model reads it)."""
    return _asset(DEMO_MODEL)


def demo_model(device: str = "cpu") -> DeepLab:
    """The demo DeepLabV3+ (MobileNetV2 x0.35 backbone, 4 classes: background, ellipse, rectangle, triangle),
    float32, in eval mode on `device`. Input: ImageNet-normalized float (N, 3, H, W); output logits (N, 4, H, W)."""
    from deeplab_fast.models.weights import load_model

    return load_model(demo_model_path(), device=device)


def sample_image_path() -> Path:
    """Path of the sample image (128 x 128 RGB PNG of synthetic shapes)."""
    return _asset(SAMPLE_IMAGE)


def sample_image() -> Image.Image:
    """The sample image: a 128 x 128 RGB PIL image of synthetic shapes the demo model never saw in training."""
    from PIL import Image

    with Image.open(sample_image_path()) as img:
        return img.convert("RGB")


def sample_labels() -> np.ndarray:
    """The sample image's exact labels: (128, 128) uint8 numpy array, 0 background, 1 ellipse, 2 rectangle,
    3 triangle."""
    import numpy as np
    from PIL import Image

    with Image.open(_asset(SAMPLE_LABELS)) as img:
        return np.array(img, dtype=np.uint8)
