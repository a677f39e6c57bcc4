"""deeplab_fast.configure: the one function for process-wide settings of the ops."""

from __future__ import annotations

import torch

from deeplab_fast import _ext

# Largest pool cap, in MiB, whose size in bytes fits an int64 (csrc/cpu/output_pool.h: kMaxPoolMb).
MAX_CPU_OUTPUT_POOL_MB = (2**63 - 1) >> 20
DEFAULT_CPU_OUTPUT_POOL_MB = 256

# The setting itself lives in the extension; this copy answers when it is not built.
_settings = {"cpu_output_pool_mb": DEFAULT_CPU_OUTPUT_POOL_MB}


def configure(*, cpu_output_pool_mb: int | None = None) -> dict[str, int]:
    """Change process-wide settings of deeplab_fast's ops; return the current settings.

    Every argument left as None keeps its current value, so `configure()` only reads them. The settings
    apply to the whole process (every thread, every model) until changed again.

    Args:
        cpu_output_pool_mb: cap, in MiB, on the memory the CPU output pool keeps for reuse (default 256).
            Large CPU outputs of the fused ops (>= 1 MiB) come from a pool of recycled blocks, which saves
            the page faults of a fresh allocation on every call; freed blocks are kept up to this cap (the
            ones freed longest ago go first). 0 turns the pool off; lowering the cap frees blocks at once.
            An int in [0, 2**43 - 1] (the cap in bytes must fit an int64).

    Returns:
        {"cpu_output_pool_mb": int}: the settings now in force.
    """
    if cpu_output_pool_mb is not None:
        value = cpu_output_pool_mb
        if type(value) is not int or not 0 <= value <= MAX_CPU_OUTPUT_POOL_MB:
            raise ValueError(
                f"cpu_output_pool_mb must be an int in [0, {MAX_CPU_OUTPUT_POOL_MB}] (MiB; 0 turns the pool "
                f"off), got {value!r}"
            )
        if _ext.HAS_EXT:
            torch.ops.deeplab_fast.set_cpu_output_pool_mb(value)
        _settings["cpu_output_pool_mb"] = value
    if _ext.HAS_EXT:
        _settings["cpu_output_pool_mb"] = int(torch.ops.deeplab_fast.cpu_output_pool_mb())
    return dict(_settings)
