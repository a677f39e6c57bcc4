"""Rebuild the demo assets: a small DeepLabV3+ trained on the synthetic shapes, and a sample image of such shapes.

    python -m deeplab_fast.assets.make_demo [--iterations N] [--device cpu|cuda] [--out DIR]

writes demo_shapes.safetensors (the model, its configuration, class names and palette in its metadata),
sample.png (a synthetic-shapes image the model never saw in training) and sample_labels.png (its exact labels,
mode "L") into deeplab_fast/assets/ (or --out). Training uses the project's own Trainer and the packaged config
deeplab_fast/configs/demo_shapes.yaml; on one CPU thread it takes a few minutes.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplab_fast._files import atomic_write_bytes
from deeplab_fast.assets import (
    DEMO_CLASS_NAMES,
    DEMO_CONFIG,
    DEMO_MODEL,
    DEMO_PALETTE,
    SAMPLE_IMAGE,
    SAMPLE_LABELS,
    SAMPLE_SEED,
    SAMPLE_SIZE,
)

ASSETS = Path(__file__).resolve().parent


def make_sample(out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write sample.png and sample_labels.png; returns (image (H, W, 3) uint8, labels (H, W) uint8)."""
    from deeplab_fast.data import SyntheticShapes

    ds = SyntheticShapes(1, SAMPLE_SIZE, len(DEMO_CLASS_NAMES), seed=SAMPLE_SEED, max_shapes=4)
    image, labels = ds.load(0)
    rgb = image.permute(1, 2, 0).numpy()
    lab = labels.numpy().astype(np.uint8)
    for name, arr in ((SAMPLE_IMAGE, rgb), (SAMPLE_LABELS, lab)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", optimize=True)
        atomic_write_bytes(out_dir / name, buf.getvalue())
    return rgb, lab


def train_model(iterations: int | None, device: str, run_dir: Path) -> torch.nn.Module:
    """Train the demo model with deeplab_fast.training.Trainer as the packaged demo config says."""
    from deeplab_fast.training import Trainer, load_config

    overrides = [f"train.output_dir={run_dir}", f"train.device={device}"]
    if iterations is not None:
        overrides.append(f"train.iterations={iterations}")
    config = load_config(DEMO_CONFIG, overrides)
    trainer = Trainer(config, progress=True, overwrite=True)
    metrics = trainer.train()
    print(f"validation mIoU {100 * float(metrics['mIoU']):.1f}%")
    return trainer.model.cpu().eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, help="training steps (default: the config's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", default=str(ASSETS), help="folder for the three files (default: the package's)")
    parser.add_argument("--run-dir", default="runs/demo_shapes", help="training run folder (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    rgb, lab = make_sample(out)
    tic = time.perf_counter()
    model = train_model(args.iterations, args.device, Path(args.run_dir))
    print(f"trained in {time.perf_counter() - tic:.0f} s")
    from deeplab_fast.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from deeplab_fast.models.weights import save_weights

    save_weights(
        model,
        out / DEMO_MODEL,
        class_names=DEMO_CLASS_NAMES,
        palette=DEMO_PALETTE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    from deeplab_fast.inference.segmenter import Segmenter

    pred = Segmenter(model, optimize=False).predict(rgb).numpy()
    print(f"{out / DEMO_MODEL}: {(out / DEMO_MODEL).stat().st_size / 1e6:.2f} MB")
    print(f"pixel accuracy on {SAMPLE_IMAGE}: {100 * float((pred == lab).mean()):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
