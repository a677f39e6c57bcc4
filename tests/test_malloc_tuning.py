"""deeplab_fast.malloc_tuning: glibc thresholds for recycling large activations, and optimize() applying them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deeplab_fast import malloc_tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = malloc_tuning._libc() is not None


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("bad", [0, 5000, -1, 1.5, "64", True])
def test_bad_limit_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"limit_mb must be an int in \[1, 4096\]"):
        malloc_tuning.keep_freed_memory(bad)


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("DEEPLAB_FAST_MALLOPT", "0")
    assert malloc_tuning.keep_freed_memory(64) is False


@pytest.mark.skipif(not GLIBC, reason="needs glibc (this machine's C library)")
def test_optimize_on_cpu_sets_the_thresholds_once():
    code = (
        "import torch, deeplab_fast\n"
        "from deeplab_fast import malloc_tuning\n"
        "assert malloc_tuning.freed_memory_kept() is None\n"
        "m = deeplab_fast.models.deeplabv3plus(num_classes=3, backbone='mobilenet_v2', output_stride=16)\n"
        "deeplab_fast.optimize(m.eval())\n"
        "print('kept', malloc_tuning.freed_memory_kept(), malloc_tuning.keep_freed_memory(512))\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "kept 1024 True" in proc.stdout
    off = _python(code, DEEPLAB_FAST_MALLOPT="0")
    assert off.returncode == 0, off.stderr
    assert "kept None False" in off.stdout
