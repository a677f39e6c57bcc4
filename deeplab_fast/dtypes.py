"""The names of the floating dtypes the library computes in: one table for every argument, config key and
command-line flag that takes a dtype by name ("float32", "fp16", "bf16", ...)."""

from __future__ import annotations

import torch

# Accepted spellings (lower case) -> dtype.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: torch.dtype | str, name: str = "dtype") -> torch.dtype:
    """torch.float32 / float16 / bfloat16, given as the dtype or one of its names (see DTYPE_NAMES).

    Raises ValueError naming the argument `name` for anything else.
    """
    if isinstance(dtype, str):
        key = dtype.lower()
        if key not in DTYPE_NAMES:
            raise ValueError(f"{name} must be one of {', '.join(sorted(DTYPE_NAMES))}; got {dtype!r}")
        return DTYPE_NAMES[key]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"{name} must be torch.float32, torch.float16 or torch.bfloat16; got {dtype!r}")
    return dtype


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of a training `amp` setting: None for "none", else parse_dtype(amp)."""
    return None if amp == "none" else parse_dtype(amp, "train.amp")
