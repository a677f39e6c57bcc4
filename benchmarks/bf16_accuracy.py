"""Accuracy of bfloat16 inference against float32: optimize(model, dtype=torch.bfloat16) vs optimize(model).

    python benchmarks/bf16_accuracy.py [--size 513] [--models xception65 resnet101] [--demo-images 64]
                                       [--threads 2] [--out benchmarks/results/bf16_accuracy]

Reports, in <out>.json and <out>.md:
(a) for random-weight models (the benchmark models of bench_models.MODELS, 21 classes, BatchNorm statistics
    randomized by deeplab_fast.testing.randomize_batchnorm with a fixed seed) on one N(0, 1) image of
    size x size: the label agreement (% of pixels with the same argmax) and the logits' relative error
    ||bf16 - fp32|| / ||fp32||, with the time of one forward of each after a warm-up one (on a CPU without
    native bf16 the bf16 one is emulated and slow, so the size can be lowered);
(b) the mIoU of the packaged synthetic-shapes demo model (deeplab_fast.assets.demo_model) through
    deeplab_fast.Segmenter(dtype=...) in float32 and bfloat16 on held-out SyntheticShapes images (the
    validation split of configs/demo_shapes.yaml: size 80, seed 0 + 7919), and their label agreement.

The machine is recorded in both files (CPU model, whether oneDNN has native bf16 here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from bench_models import MODELS, NUM_CLASSES  # noqa: E402  (benchmarks/ is not a package)

import deeplab_fast  # noqa: E402
from deeplab_fast._files import atomic_write_text  # noqa: E402

# the validation split of configs/demo_shapes.yaml (training.builders: a held-out seed, seed + 7919)
DEMO_VAL_SEED = 0 + 7919
DEMO_VAL_SIZE = 80
DEMO_MAX_SHAPES = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"bf16_accuracy.py: error: {message}", file=sys.stderr)
        sys.exit(2)


def label_agreement(reference: torch.Tensor, other: torch.Tensor) -> float:
    """% of pixels whose argmax over classes (dim 1 of (N, K, H, W) logits) is the same in both."""
    return 100.0 * (reference.argmax(1) == other.argmax(1)).double().mean().item()


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """||other - reference|| / ||reference|| (Frobenius norms, computed in float64)."""
    ref = reference.double()
    return ((other.double() - ref).norm() / ref.norm()).item()


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, native bf16, threads, torch version (and cpu_info() where it exists)."""
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
    }
    cpu_info = getattr(deeplab_fast, "cpu_info", None)
    if callable(cpu_info):
        info["cpu_info"] = cpu_info()
    return info


def _timed_forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(model(x), seconds of a second forward): the first one packs weights (oneDNN, Winograd) and warms up."""
    with torch.inference_mode():
        out = model(x)
        tic = time.perf_counter()
        model(x)
        return out, time.perf_counter() - tic


def random_model_row(name: str, size: int, seed: int) -> dict[str, Any]:
    """Label agreement, logits relative error and forward times of fp32 vs bf16 optimize() for model `name`."""
    from deeplab_fast.models import deeplabv3plus
    from deeplab_fast.testing import randomize_batchnorm

    torch.manual_seed(seed)
    model = randomize_batchnorm(deeplabv3plus(**MODELS[name], num_classes=NUM_CLASSES), seed=seed).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    fp32, fp32_s = _timed_forward(deeplab_fast.optimize(model, tune_malloc=False), x)
    bf16, bf16_s = _timed_forward(deeplab_fast.optimize(model, dtype=torch.bfloat16, tune_malloc=False), x)
    return {
        "model": name,
        "size": size,
        "label_agreement_pct": label_agreement(fp32, bf16),
        "logits_rel_error": relative_error(fp32, bf16),
        "bf16_logits_dtype": str(bf16.dtype).removeprefix("torch."),
        "fp32_forward_s": fp32_s,
        "bf16_forward_s": bf16_s,
    }


def demo_predictions(dtype: torch.dtype, images: torch.Tensor) -> torch.Tensor:
    """Label maps (N, H, W) of the demo model on uint8 images (N, 3, H, W) through Segmenter(dtype=dtype)."""
    from deeplab_fast.assets import demo_model

    seg = deeplab_fast.Segmenter(demo_model(), device="cpu", dtype=dtype)
    with torch.inference_mode():
        return torch.stack(seg.predict_batch(images))


def demo_dataset(n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n_images of the demo's validation split: uint8 images (N, 3, 80, 80), int64 labels (N, 80, 80)."""
    from deeplab_fast.assets import DEMO_CLASS_NAMES
    from deeplab_fast.data import SyntheticShapes

    ds = SyntheticShapes(n_images, DEMO_VAL_SIZE, len(DEMO_CLASS_NAMES), DEMO_VAL_SEED, DEMO_MAX_SHAPES)
    items = [ds.load(i) for i in range(n_images)]
    return torch.stack([im for im, _ in items]), torch.stack([lab for _, lab in items])


def demo_miou(n_images: int) -> dict[str, Any]:
    """mIoU (in %) of the demo model in float32 and bfloat16 on n_images held-out images, and their agreement."""
    from deeplab_fast.assets import DEMO_CLASS_NAMES
    from deeplab_fast.metrics import ConfusionMatrix

    images, labels = demo_dataset(n_images)
    result: dict[str, Any] = {"images": n_images, "size": DEMO_VAL_SIZE}
    preds = {}
    for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        preds[key] = demo_predictions(dtype, images)
        cm = ConfusionMatrix(len(DEMO_CLASS_NAMES))
        cm.update(preds[key], labels)
        result[f"{key}_miou_pct"] = 100.0 * float(cm.compute()["mIoU"])
    result["miou_diff_points"] = result["bf16_miou_pct"] - result["fp32_miou_pct"]
    result["label_agreement_pct"] = 100.0 * (preds["fp32"] == preds["bf16"]).double().mean().item()
    return result


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (the form docs/bf16.md quotes)."""
    m = report["machine"]
    lines = [
        "# bf16 accuracy: optimize(dtype=torch.bfloat16) vs float32",
        "",
        f"CPU: {m['cpu']}; oneDNN native bf16: {m['bf16_native']}; {m['threads']} threads; torch {m['torch']}; "
        f"load average (1 min) at the end: {m['load_average_1min']:.1f}.",
        "",
        "| model | size | label agreement | logits rel. error | fp32 forward | bf16 forward |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["random_models"]:
        lines.append(
            f"| {r['model']} (random weights) | {r['size']}x{r['size']} | {r['label_agreement_pct']:.3f}% | "
            f"{r['logits_rel_error']:.2e} | {r['fp32_forward_s']:.2f} s | {r['bf16_forward_s']:.2f} s |"
        )
    d = report.get("demo")
    if d:
        lines += [
            "",
            "| demo model (synthetic shapes) | images | fp32 mIoU | bf16 mIoU | difference | label agreement |",
            "|---|---|---|---|---|---|",
            f"| mobilenet_v2 x0.35 | {d['images']} x {d['size']}x{d['size']} | {d['fp32_miou_pct']:.2f}% | "
            f"{d['bf16_miou_pct']:.2f}% | {d['miou_diff_points']:+.2f} points | {d['label_agreement_pct']:.3f}% |",
        ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODELS), help="random-weight models (default: %(default)s)")
    p.add_argument("--size", type=int, default=513, help="image side of the random-model runs (default: 513)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, BatchNorm statistics and image")
    p.add_argument("--demo-images", type=int, default=64, help="demo validation images, 0 to skip (default: 64)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", default=str(HERE / "results" / "bf16_accuracy"), help="path prefix of .json and .md")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.size < 32:
        parser.error(f"--size must be >= 32 (the models' smallest input), got {args.size}")
    if args.demo_images < 0:
        parser.error(f"--demo-images must be >= 0, got {args.demo_images}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"machine": machine(), "random_models": [], "demo": None}
    for name in args.models:
        row = random_model_row(name, args.size, args.seed)
        print(
            f"{name} {args.size}x{args.size}: agreement {row['label_agreement_pct']:.3f}%, rel. error "
            f"{row['logits_rel_error']:.2e}, fp32 {row['fp32_forward_s']:.2f} s, bf16 {row['bf16_forward_s']:.2f} s",
            flush=True,
        )
        report["random_models"].append(row)
    if args.demo_images:
        report["demo"] = demo_miou(args.demo_images)
        d = report["demo"]
        print(f"demo mIoU fp32 {d['fp32_miou_pct']:.2f}% bf16 {d['bf16_miou_pct']:.2f}%", flush=True)
    report["machine"]["load_average_1min"] = machine()["load_average_1min"]  # how busy the CPU was
    out = Path(args.out)
    try:
        atomic_write_text(Path(f"{out}.json"), json.dumps(report, indent=2) + "\n")
        atomic_write_text(Path(f"{out}.md"), markdown(report))
    except OSError as exc:
        print(f"bf16_accuracy.py: error: --out {str(out)!r} cannot be written: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}.json and {out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
