"""`deeplab-fast train` and `deeplab-fast eval` (also `python -m deeplab_fast ...`, and under torchrun)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from deeplab_fast.dtypes import amp_dtype
from deeplab_fast.training.checkpoint import CheckpointError
from deeplab_fast.training.config import ConfigError, check_device_available

_USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, ValueError)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` and `eval` subcommands."""
    train = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (torchrun for many GPUs)",
        description="Train DeepLabV3+ as a YAML config describes. Multi-GPU / multi-node: "
        "torchrun --nproc_per_node=G -m deeplab_fast train --config ...",
    )
    train.add_argument(
        "--config",
        required=True,
        help="YAML config file, or the name of a packaged config (synthetic_demo, demo_shapes, voc_xception65, "
        "cityscapes_xception65)",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config key (value parsed as YAML); repeatable",
    )
    train.add_argument("--output-dir", help="run folder (overrides train.output_dir)")
    train.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue from a checkpoint; without a path, the newest one in the run folder",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run files (checkpoints, best weights, logs, config.yaml) of another run in the output "
        "folder before starting; without it (or --resume) such a folder is refused",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    ev = subparsers.add_parser(
        "eval",
        help="evaluate weights on a validation set (mIoU and per-class IoU)",
        description="Evaluate a checkpoint with the paper's metric (mIoU), optionally "
        "multi-scale + flip. Runs under torchrun too (the confusion matrix is all-reduced).",
    )
    ev.add_argument(
        "--config",
        required=True,
        help="YAML config (or packaged config name) naming the dataset; its model section is used only for "
        "weights that do not describe their model",
    )
    ev.add_argument(
        "--weights",
        required=True,
        help="model weights, e.g. <run>/best.safetensors; the model is rebuilt from the configuration stored in "
        "the file (--set model.KEY=VALUE overrides it)",
    )
    ev.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    ev.add_argument("--split", help="dataset split to evaluate (overrides data.val_split)")
    ev.add_argument("--scales", type=float, nargs="+", help="evaluation scales, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    ev.add_argument("--flip", action="store_true", help="also average the horizontally flipped images")
    ev.add_argument("--batch-size", type=int, help="images per process (overrides eval.batch_size)")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from deeplab_fast.training.config import load_config
    from deeplab_fast.training.trainer import Trainer

    try:
        if args.resume is not None and args.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        overrides = list(args.set) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
        config = load_config(args.config, overrides)
        check_device_available(config.train.device)
        trainer = Trainer(config, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
        metrics = trainer.train()
    except _USER_ERRORS as exc:
        print(f"deeplab-fast train: error: {exc}", file=sys.stderr)
        return 2
    if trainer.dist.is_main and metrics:
        print(f"final mIoU {100 * float(metrics['mIoU']):.2f}%  (run folder: {trainer.run_dir})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from deeplab_fast.data import ShardSampler, pad_collate
    from deeplab_fast.metrics import format_table
    from deeplab_fast.training.builders import build_datasets, build_model
    from deeplab_fast.training.checkpoint import load_model_state
    from deeplab_fast.training.config import load_config
    from deeplab_fast.training.distributed import init_distributed
    from deeplab_fast.training.evaluate import evaluate

    try:
        overrides = list(args.set)
        if args.split:
            overrides.append(f"data.val_split={args.split}")
        if args.scales:
            overrides.append(f"eval.scales={args.scales}")
        if args.flip:
            overrides.append("eval.flip=true")
        if args.batch_size:
            overrides.append(f"eval.batch_size={args.batch_size}")
        config = load_config(args.config, _model_overrides(args.weights) + overrides)
        check_device_available(config.train.device)
        info = init_distributed(config.train.device, config.train.dist_backend)
        _, dataset = build_datasets(config, train=False, val=True)
        if dataset is None:
            raise ConfigError("the config names no validation data (data.val_images / data.val_masks)")
        model = build_model(config.model)
        load_model_state(model, args.weights)
        model.to(info.device)
        if config.train.channels_last:
            model.to(memory_format=torch.channels_last)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=config.eval.batch_size,
            sampler=ShardSampler(len(dataset), info.world_size, info.rank),
            num_workers=config.data.num_workers,
            collate_fn=pad_collate,
        )
        amp = amp_dtype(config.train.amp)
        cm = evaluate(
            model,
            loader,
            config.model.num_classes,
            info.device,
            scales=config.eval.scales,
            flip=config.eval.flip,
            align_corners=config.model.align_corners,
            amp_dtype=amp,
            channels_last=config.train.channels_last,
        )
    except _USER_ERRORS as exc:
        print(f"deeplab-fast eval: error: {exc}", file=sys.stderr)
        return 2
    if info.is_main:
        metrics = cm.compute()
        print(f"{args.weights}: {len(dataset)} images, scales {config.eval.scales}, flip {config.eval.flip}")
        print(format_table(metrics, getattr(dataset, "class_names", None)))
        if args.json:
            from deeplab_fast._files import atomic_write_text

            atomic_write_text(args.json, json.dumps(metrics, indent=2) + "\n")
    return 0


def _model_overrides(weights: str) -> list[str]:
    """`model.KEY=VALUE` overrides that make a config's model section the one stored in `weights` ([] for a file
    that does not describe a deeplabv3plus model). The command's own --set options come after them and win."""
    from deeplab_fast.models.weights import read_model_info

    if not Path(weights).is_file():
        raise CheckpointError(f"--weights {weights} not found")
    info = read_model_info(weights)
    if info is None or "factory" in info:
        return []  # a custom factory's model: the config's model section (naming that factory) builds it
    fixed = ("backbone", "num_classes", "output_stride", "separable", "decoder", "align_corners")
    kwargs = info["model"]
    out = [f"model.{k}={json.dumps(kwargs[k])}" for k in fixed if k in kwargs]
    options = {k: v for k, v in kwargs.items() if k not in fixed}
    # YAML, not JSON: the value is read back with yaml.safe_load, which takes JSON's 1e-05 for a string
    out.append("model.options=" + yaml.safe_dump(options, default_flow_style=True, width=float("inf")).strip())
    return out
