"""`deeplab-fast predict`: segment image files and folders, writing label PNGs (and colour overlays)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from deeplab_fast.assets import ASSETS_DIR
from deeplab_fast.assets import SAMPLE_IMAGE as _SAMPLE_NAME
from deeplab_fast.inference.palettes import PALETTE_NAMES

SAMPLE_IMAGE = ASSETS_DIR / _SAMPLE_NAME
DEMO_OUT = "deeplab_fast_demo"
DEFAULT_ARCHITECTURE = {"backbone": "xception65", "num_classes": 21, "output_stride": 16}

_EXAMPLES = """\
examples:
  deeplab-fast predict photos/ --weights runs/voc/best.safetensors --out predictions/
  deeplab-fast predict a.jpg b.jpg --weights voc.safetensors --out out/ --overlay
  deeplab-fast predict frames/ --weights cs.safetensors --backbone resnet101 --num-classes 19 \\
      --palette cityscapes --window 769 --out out/ --device cuda --dtype float16
  deeplab-fast predict img.jpg --weights voc.safetensors --out out/ --scales 0.5 0.75 1 1.25 1.5 1.75 --flip
  deeplab-fast predict --demo --out demo/   # the bundled sample image and demo model (synthetic shapes)

Weights saved by deeplab_fast (save_weights, the trainer's best.safetensors and checkpoints) carry their model's
configuration, input mean/std, class names and palette: no architecture flags are needed, and flags given
override what the file says. Files without that description need --backbone, --num-classes, --output-stride.
Folders are searched recursively for images; each INPUT's relative paths are kept under --out (one
<name>.png label map, palette-indexed, per image, plus <name>_overlay.png with --overlay). Images that cannot be
read are reported and skipped; the exit status is 1 if any image failed, 2 for a usage or setup error.
"""


def register(subparsers: Any) -> None:
    """Add the `predict` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "predict",
        help="segment images with a trained DeepLabV3+ and write label maps",
        description="Segment image files and folders with a DeepLabV3+ and write one label PNG per image.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument(
        "--weights",
        metavar="W",
        help="model weights (.safetensors or .pth); with --demo the demo model; random weights if left out",
    )
    p.add_argument("--backbone", help="backbone (default: from --weights, else xception65)")
    p.add_argument("--num-classes", type=int, metavar="K", help="number of classes (default: from --weights, else 21)")
    p.add_argument(
        "--output-stride", type=int, choices=(8, 16, 32), help="model output stride (default: from --weights, else 16)"
    )
    p.add_argument("--out", metavar="DIR", help=f"output folder (default with --demo: ./{DEMO_OUT})")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S", help="image scales (default: 1)")
    p.add_argument("--flip", action="store_true", help="also predict on left-right flipped images and average")
    p.add_argument("--window", type=int, nargs="+", metavar="N", help="sliding window H [W] for large images")
    p.add_argument("--stride", type=int, nargs="+", metavar="N", help="sliding window step H [W] (default 2/3 window)")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png: colours over the image")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument(
        "--palette",
        choices=PALETTE_NAMES,
        help="label colours (default: the weights' palette, else voc for 21 classes, cityscapes for 19, ade20k "
        "for 150, generic otherwise)",
    )
    p.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        metavar="M",
        help="RGB mean (default: the weights', else the model config's, else ImageNet)",
    )
    p.add_argument(
        "--std",
        type=float,
        nargs=3,
        default=None,
        metavar="S",
        help="RGB std (default: the weights', else the model config's, else ImageNet)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="compute dtype")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="images of the same size per forward")
    p.add_argument("--no-optimize", action="store_true", help="run the eager model (no fused kernels)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="segment the sample image that ships with deeplab_fast, with the demo model unless --weights",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)


def default_palette(num_classes: int) -> str:
    """The palette that fits a class count: voc (21), cityscapes (19), ade20k (150), else generic."""
    return {21: "voc", 19: "cityscapes", 150: "ade20k"}.get(num_classes, "generic")


def read_weights_info(args: argparse.Namespace) -> dict[str, Any] | None:
    """The model description stored in --weights (deeplab_fast.models.weights.model_info), or None.

    Fills args.backbone, args.num_classes and args.output_stride that were not given from it (or the defaults
    xception65 / 21 / 16) and sets args.model_options to the stored options. Raises SetupError for a missing,
    unreadable or corrupt file.
    """
    info = None
    if args.weights is not None:
        w = Path(args.weights)
        if not w.is_file():
            raise SetupError(f"--weights {w}: no such file")
        from deeplab_fast.models.weights import read_model_info

        try:
            info = read_model_info(w)
        except (ValueError, OSError) as exc:
            raise SetupError(f"--weights {w}: {exc}") from None
    stored = dict(info["model"]) if info is not None and "factory" not in info else {}
    for key, default in DEFAULT_ARCHITECTURE.items():
        if getattr(args, key) is None:
            setattr(args, key, stored.get(key, default))
    args.model_options = {k: v for k, v in stored.items() if k not in DEFAULT_ARCHITECTURE}
    return info


def build_model(args: argparse.Namespace) -> Any:
    """The DeepLabV3+ that the arguments describe (after read_weights_info), with --weights loaded when given.

    Raises SetupError with a message for the user (missing file, unknown backbone, mismatched weights).
    """
    from deeplab_fast.models import deeplabv3plus

    options = getattr(args, "model_options", {})
    try:
        model = deeplabv3plus(
            backbone=args.backbone, num_classes=args.num_classes, output_stride=args.output_stride, **options
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SetupError(
            f"cannot build --backbone {args.backbone} with --num-classes {args.num_classes}: {exc}"
        ) from None
    if args.weights is not None:
        from deeplab_fast.models.weights import load_weights

        try:
            load_weights(model, args.weights)
        except FileNotFoundError as exc:
            raise SetupError(f"--weights {args.weights}: {exc}") from None
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise SetupError(
                f"--weights {args.weights} do not fit --backbone {args.backbone} --num-classes {args.num_classes} "
                f"--output-stride {args.output_stride}:\n{exc}"
            ) from None
    return model


class SetupError(Exception):
    """A problem with the arguments or the environment, reported as one message and exit status 2."""


def run_predict(args: argparse.Namespace) -> int:
    """Run `deeplab-fast predict`; returns 0 if every image was written, 1 if some failed, 2 on a setup error."""
    try:
        return _run(args)
    except SetupError as exc:
        print(f"deeplab-fast predict: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deeplab_fast.inference import io
    from deeplab_fast.inference.palettes import get_palette, overlay
    from deeplab_fast.inference.segmenter import Segmenter

    inputs = list(args.inputs)
    if args.demo:
        from deeplab_fast import assets

        try:
            inputs.append(str(assets.sample_image_path()))
            if args.weights is None:
                args.weights = str(assets.demo_model_path())
        except FileNotFoundError as exc:
            raise SetupError(str(exc)) from None
    if not inputs:
        raise SetupError("no INPUT given (image files or folders), and no --demo")
    out_dir = Path(args.out if args.out is not None else (DEMO_OUT if args.demo else ""))
    if args.out is None and not args.demo:
        raise SetupError("--out DIR is required")
    if not 0.0 <= args.alpha <= 1.0:
        raise SetupError(f"--alpha must be in [0, 1]; got {args.alpha}")
    try:
        pairs = io.find_images(inputs)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    if not pairs:
        raise SetupError(f"no images found in {', '.join(inputs)} (looked for {', '.join(io.IMAGE_EXTENSIONS)})")
    _check_writable(out_dir)
    _check_device(args.device)

    info = read_weights_info(args)
    model = build_model(args)
    if args.weights is None:
        print(
            "deeplab-fast predict: note: no --weights given, so the model has random weights and the labels are "
            "meaningless (this only shows that the pipeline runs)",
            file=sys.stderr,
        )
    try:
        seg = Segmenter(
            model,
            # None: the model config's input_mean / input_std, else ImageNet's (the Segmenter decides)
            mean=args.mean or (info or {}).get("mean"),
            std=args.std or (info or {}).get("std"),
            scales=args.scales,
            flip=args.flip,
            window=_pair_arg(args.window, "--window"),
            stride=_pair_arg(args.stride, "--stride"),
            device=args.device,
            dtype=args.dtype,
            optimize=not args.no_optimize,
            batch_size=args.batch_size,
        )
    except (ValueError, RuntimeError, TypeError) as exc:
        raise SetupError(str(exc)) from None
    stored_palette = (info or {}).get("palette")
    try:
        palette = get_palette(args.palette or stored_palette or default_palette(args.num_classes), args.num_classes)
    except ValueError as exc:
        raise SetupError(f"palette: {exc}") from None

    failed: list[tuple[Path, str]] = []
    done = 0
    start = time.perf_counter()
    bar = tqdm(total=len(pairs), unit="img", disable=True if args.quiet else None, file=sys.stderr)

    def fail(src: Path, why: str) -> None:
        failed.append((src, why))
        bar.write(f"deeplab-fast predict: skipped {src}: {why}", file=sys.stderr)

    for chunk in io.iter_chunks(pairs, args.batch_size):
        images, kept = [], []
        for src, rel in chunk:
            try:
                images.append(io.read_image(src))
                kept.append((src, rel))
            except io.ImageReadError as exc:
                fail(src, str(exc).removeprefix(f"{src}: "))
                bar.update(1)
        if not images:
            continue
        try:
            labels = seg.predict_batch(images)
        except (RuntimeError, ValueError):
            # one bad image in a batch should not take the others down: retry them one by one
            labels = []
            for (src, _), img in zip(kept, images, strict=True):
                try:
                    labels.append(seg.predict(img))
                except (RuntimeError, ValueError) as one_exc:
                    labels.append(None)
                    fail(src, f"prediction failed ({type(one_exc).__name__}: {one_exc})")
        for (src, rel), img, lab in zip(kept, images, labels, strict=True):
            if lab is not None:
                try:
                    io.save_labels(lab, out_dir / rel.with_suffix(".png"), palette, num_classes=args.num_classes)
                    if args.overlay:
                        blended = overlay(img, lab, alpha=args.alpha, palette=palette)
                        io.save_rgb(blended, out_dir / rel.parent / f"{rel.name}_overlay.png")
                    done += 1
                except OSError as exc:
                    fail(src, f"cannot write its output ({exc})")
            bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    rate = done / elapsed if elapsed > 0 else float("inf")
    print(
        f"deeplab-fast predict: {done} image{'s' if done != 1 else ''} in {elapsed:.2f} s ({rate:.2f} images/s), "
        f"{len(failed)} failed; output in {out_dir}"
    )
    return 1 if failed else 0


def _check_writable(out_dir: Path) -> None:
    from deeplab_fast._files import atomic_write_bytes

    probe = out_dir / ".deeplab_fast_write_test"
    try:
        atomic_write_bytes(probe, b"")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise SetupError(f"cannot write to --out {out_dir}: {exc.strerror or exc}") from None


def _check_device(device: str) -> None:
    """--device must be auto, cpu, cuda or cuda:N, and CUDA must exist when asked for."""
    import torch

    kind, _, index = device.partition(":")
    if device not in ("auto", "cpu", "cuda") and not (kind == "cuda" and index.isdigit()):
        raise SetupError(f"--device {device}: accepted values are auto, cpu, cuda, cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"--device {device}: no CUDA device is available on this machine; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise SetupError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _pair_arg(values: list[int] | None, name: str) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) not in (1, 2):
        raise SetupError(f"{name} takes H or H W; got {len(values)} numbers")
    return (values[0], values[-1])
