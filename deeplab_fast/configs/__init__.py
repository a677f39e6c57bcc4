"""Training configs that ship with deeplab_fast: `deeplab-fast train --config NAME` finds them from any folder.

synthetic_demo         narrow MobileNetV2 on synthetic shapes, 3 classes: a few minutes on a CPU
demo_shapes            the model shipped as deeplab_fast.assets.demo_model() (4 classes)
voc_xception65         the paper's PASCAL VOC 2012 recipe (needs data.root)
cityscapes_xception65  the Cityscapes recipe (needs data.root)
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def list_configs() -> list[str]:
    """Names of the packaged configs (file stems of deeplab_fast/configs/*.yaml), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(path: str | os.PathLike) -> Path:
    """`path` itself when it is an existing file, else the packaged config of that name ("synthetic_demo" or
    "synthetic_demo.yaml"). Raises ConfigError (a ValueError) naming both when neither exists."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    packaged = CONFIG_DIR / f"{name}.yaml"
    if p.parent == Path(".") and packaged.is_file():
        return packaged
    from deeplab_fast.training.config import ConfigError

    raise ConfigError(f"config file {p} not found, and it is not a packaged config ({', '.join(list_configs())})")
