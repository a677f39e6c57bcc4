"""deeplab_fast._files: atomic writes with the user's umask, and removal of provably stale temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from deeplab_fast._files import STALE_AFTER_S, atomic_path, atomic_write_text, remove_stale_temporaries


def test_atomic_write_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_old_file(tmp_path):
    dest = tmp_path / "w.bin"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_only_stale_temporaries_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".x.png.{dead_pid}.abc123.tmp"
        busy = tmp_path / f".y.png.{live.pid}.def456.tmp"
        old_busy = tmp_path / f".z.png.{live.pid}.ghi789.tmp"
        other = tmp_path / "notes.tmp"
        for p in (stale, busy, old_busy, other):
            p.write_text("x")
        past = time.time() - STALE_AFTER_S - 60
        os.utime(old_busy, (past, past))
        removed = remove_stale_temporaries(tmp_path)
        assert sorted(p.name for p in removed) == sorted([stale.name, old_busy.name])
        assert busy.exists() and other.exists()
        atomic_write_text(tmp_path / "y.png", "done")  # a later write cleans up too, and keeps the busy one
        assert busy.exists()
    finally:
        live.kill()
        live.wait()
