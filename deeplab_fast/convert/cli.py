"""`deeplab-fast convert-tf`: a TensorFlow DeepLab checkpoint -> a self-describing .safetensors (or .pt) file."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `convert-tf` subcommand."""
    p = subparsers.add_parser(
        "convert-tf",
        help="convert a TensorFlow DeepLab checkpoint (model zoo tarball) to a deeplab_fast weights file",
        description="Read a TensorFlow DeepLab checkpoint (no TensorFlow needed) and write a self-describing "
        "weights file in TensorFlow-exact mode; deeplab-fast predict/eval and deeplab_fast.load_model read it. "
        "The options are the TensorFlow flags of the same names.",
    )
    p.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="checkpoint prefix (model.ckpt), its .index file, a folder or a .tar.gz holding one checkpoint",
    )
    p.add_argument("--out", required=True, help="output file, .safetensors (or .pt/.pth)")
    p.add_argument("--model-variant", default="xception_65", help="xception_65 (default), xception_71 or mobilenet_v2")
    p.add_argument("--num-classes", type=int, help="default: read from the checkpoint's logits layer")
    p.add_argument("--output-stride", type=int, default=16, help="8, 16 (default) or 32")
    p.add_argument(
        "--atrous-rates",
        type=int,
        nargs="*",
        metavar="R",
        help="three ASPP rates, or none after the flag for no atrous branches (default: the model zoo's, "
        "6 12 18 at output stride 16 for Xception, none for mobilenet_v2)",
    )
    p.add_argument(
        "--depth-multiplier", type=float, default=1.0, help="mobilenet_v2's depth multiplier (default 1.0; zoo: 0.5)"
    )
    p.add_argument(
        "--multi-grid",
        type=int,
        nargs=3,
        metavar="M",
        help="atrous multipliers of the last block (TensorFlow's flag, e.g. 1 2 4; default: all ones)",
    )
    p.add_argument(
        "--decoder-output-stride",
        default="4",
        help="4 (DeepLabV3+, default) or none (DeepLabV3, no decoder: mobilenet_v2)",
    )
    p.add_argument(
        "--image-pooling-crop-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="only for a graph built with this TensorFlow flag (default: none, a global mean)",
    )
    p.add_argument("--class-names", nargs="+", help="class names to store in the file (one per class)")
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from deeplab_fast.convert.tf_deeplab import TF_EXACT_OPTIONS, from_tf_checkpoint
    from deeplab_fast.models.weights import save_weights

    try:
        dos = args.decoder_output_stride.strip().lower()
        if dos not in ("4", "none"):
            raise ValueError(f"--decoder-output-stride must be 4 or none, got {args.decoder_output_stride!r}")
        model = from_tf_checkpoint(
            args.checkpoint,
            model_variant=args.model_variant,
            num_classes=args.num_classes,
            output_stride=args.output_stride,
            atrous_rates=None if args.atrous_rates is None else tuple(args.atrous_rates),
            decoder_output_stride=None if dos == "none" else 4,
            image_pooling_crop_size=args.image_pooling_crop_size,
            depth_multiplier=args.depth_multiplier,
            multi_grid=args.multi_grid,
        )
        save_weights(
            model,
            args.out,
            class_names=args.class_names,
            mean=TF_EXACT_OPTIONS["input_mean"],
            std=TF_EXACT_OPTIONS["input_std"],
        )
    except (FileNotFoundError, ValueError, TypeError, OSError) as exc:
        print(f"deeplab-fast convert-tf: error: {exc}", file=sys.stderr)
        return 2
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {model.config['backbone']}, {model.config['num_classes']} classes, {n:,} parameters")
    return 0
