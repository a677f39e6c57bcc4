"""The `deeplab-fast` command (also `python -m deeplab_fast`): predict, train, eval and convert-tf subcommands.

Each subcommand lives in its own module that provides `register(subparsers)`, which adds a parser whose
`func` default takes the parsed args and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_SUBCOMMAND_MODULES = (
    "deeplab_fast.inference.cli",  # predict
    "deeplab_fast.training.cli",  # train, eval
    "deeplab_fast.convert.cli",  # convert-tf
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="deeplab-fast",
        description="DeepLabV3+ segmentation: predict on images, train and evaluate models, convert TensorFlow "
        "DeepLab checkpoints.",
    )
    from deeplab_fast import __version__

    parser.add_argument("--version", action="version", version=f"deeplab-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of the package is not there
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
