"""deeplab_fast.malloc_tuning: glibc thresholds for recycling large activations, optimize(tune_malloc=...) applying
them, and restore_malloc_defaults() undoing them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deeplab_fast import malloc_tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = malloc_tuning._libc() is not None

# Counts the blocks glibc serves with mmap (mallinfo2().hblks) around a 64 MiB malloc: 1 when the block is
# mmapped (glibc's threshold, 128 KiB adapting up to 32 MiB), 0 when it comes from the heap (keep_freed_memory: 1 GiB).
_MMAPPED = """
import ctypes
class _Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Info
_libc.malloc.restype = ctypes.c_void_p
_libc.free.argtypes = [ctypes.c_void_p]
def mmapped():
    before = _libc.mallinfo2().hblks
    p = _libc.malloc(64 << 20)
    n = _libc.mallinfo2().hblks - before
    _libc.free(p)
    return n
"""


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("bad", [0, 5000, -1, 1.5, "64", True])
def test_bad_limit_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"limit_mb must be an int in \[1, 4096\]"):
        malloc_tuning.keep_freed_memory(bad)


@pytest.mark.skipif(not GLIBC, reason="needs glibc (this machine's C library)")
def test_optimize_tunes_malloc_and_restore_undoes_it():
    code = _MMAPPED + (
        "import torch, deeplab_fast\n"
        "from deeplab_fast import malloc_tuning\n"
        "m = deeplab_fast.models.deeplabv3plus(num_classes=3, backbone='mobilenet_v2', width_mult=0.25).eval()\n"
        "print('start', malloc_tuning.freed_memory_kept(), mmapped())\n"
        "deeplab_fast.optimize(m, tune_malloc=False)\n"
        "print('untouched', malloc_tuning.freed_memory_kept(), mmapped())\n"
        "deeplab_fast.optimize(m)\n"
        "print('tuned', malloc_tuning.freed_memory_kept(), mmapped(), malloc_tuning.keep_freed_memory(512))\n"
        "print('restored', malloc_tuning.restore_malloc_defaults(), malloc_tuning.freed_memory_kept(), mmapped())\n"
        "print('again', malloc_tuning.restore_malloc_defaults(), mmapped())\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["start None 1", "untouched None 1", "tuned 1024 0 True", "restored True None 1", "again True 1"]


def test_no_environment_switch(monkeypatch):
    # DEEPLAB_FAST_MALLOPT of earlier versions is gone: tune_malloc=False is the switch
    monkeypatch.setenv("DEEPLAB_FAST_MALLOPT", "0")
    try:
        assert malloc_tuning.keep_freed_memory(64) is GLIBC
    finally:
        malloc_tuning.restore_malloc_defaults()
    assert malloc_tuning.freed_memory_kept() is None
