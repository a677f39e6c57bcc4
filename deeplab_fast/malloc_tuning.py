"""Process-wide glibc malloc settings for CPU inference with large activations.

glibc hands every allocation above its mmap threshold (adaptive, at most 32 MiB) a fresh mmap and trims
freed memory at the top of the heap back to the OS, so a DeepLab forward at 513x513 page-faults and zeroes
most of its large activations on every call. On this class of machine that is a quarter of an optimized
Xception-65 forward. `keep_freed_memory` raises both thresholds, so freed blocks are recycled the way
onnxruntime's arena and PyTorch's CUDA caching allocator recycle theirs. The price: the process keeps
its peak heap mapped (resident set does not shrink after a large forward). `optimize()` calls it for CPU
models unless called with tune_malloc=False; `restore_malloc_defaults()` sets glibc's default thresholds back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# glibc's compiled-in defaults of both thresholds (DEFAULT_MMAP_THRESHOLD_MIN, DEFAULT_TRIM_THRESHOLD)
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024

_applied: int | None = None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory(limit_mb: int = 1024) -> bool:
    """Let glibc malloc keep and recycle freed blocks up to `limit_mb` MiB instead of unmapping them.

    Sets M_MMAP_THRESHOLD to `limit_mb` MiB and M_TRIM_THRESHOLD to twice that, for the whole process.
    Idempotent; a no-op returning False where the C library is not glibc. restore_malloc_defaults() undoes it.

    Args:
        limit_mb: allocations up to this size (MiB, 1..4096) come from the heap and are reused.

    Returns:
        True if the settings are in effect.
    """
    global _applied
    if isinstance(limit_mb, bool) or not isinstance(limit_mb, int) or not 1 <= limit_mb <= 4096:
        raise ValueError(f"limit_mb must be an int in [1, 4096], got {limit_mb!r}")
    if _applied is not None and _applied >= limit_mb:
        return True
    libc = _libc()
    if libc is None:
        return False
    limit = limit_mb << 20
    ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(limit)) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(2 * limit, 2**31 - 1))) == 1 and ok
    if ok:
        _applied = limit_mb
    return ok


def freed_memory_kept() -> int | None:
    """The limit (MiB) set by keep_freed_memory in this process, or None if it has not taken effect."""
    return _applied


def restore_malloc_defaults() -> bool:
    """Undo keep_freed_memory(): set glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD back to their defaults (128 KiB).

    Process-wide, like keep_freed_memory. Large blocks are then mmapped and freed memory is trimmed again; the free
    memory the heap kept is given back to the OS now (malloc_trim). One difference from a fresh process remains:
    glibc stops adapting the mmap threshold to the program's frees once any mallopt call has set it.

    Returns:
        True if glibc's defaults are in effect (without any call when keep_freed_memory had not taken effect);
        False where the C library is not glibc or mallopt refused.
    """
    global _applied
    if _applied is None:
        return _libc() is not None
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_GLIBC_DEFAULT_THRESHOLD)) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_GLIBC_DEFAULT_THRESHOLD)) == 1 and ok
    if ok:
        _applied = None
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(ctypes.c_size_t(0))
    return ok
