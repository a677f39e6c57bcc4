"""Atomic file writes: the one helper every writer of the library uses (predictions, weights, checkpoints,
logs, ONNX files, benchmark results).

A write goes to a temporary file in the destination's folder, then `os.replace` puts it in place, so a
reader sees the old file or the new one, never half of one. The new file gets the permissions a plain
`open(path, "w")` would give under the caller's umask (mkstemp alone would leave 0600).

Temporary names carry the writer's pid: `.<name>.<pid>.<random>.tmp`. A process killed mid-write leaves
its temporary behind; a later write to the same folder removes such leftovers only when they are
provably stale (the pid in the name belongs to no running process, or the file is older than a day),
never a file a concurrent writer is still filling.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

STALE_AFTER_S = 24 * 3600.0
_TMP_NAME = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once (the process keeps its umask).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete leftover temporaries of killed writers in `folder`; returns the paths removed.

    A temporary is stale when the pid in its name is not a running process, or when it is older than
    STALE_AFTER_S seconds. Files of running writers and files of other names are never touched.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(m.group(1))
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if pid == os.getpid() or (_pid_alive(pid) and not old):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on normal exit it replaces `path`, on error it is removed.

    For writers that need a file name (safetensors, torch.save, onnx). Missing parent folders are created.
    `suffix` lets writers that infer the format from the name see the right extension (e.g. ".tmp.onnx").
    The final file has the mode 0o666 & ~umask.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` atomically by calling `write(binary_file)`; the file is flushed and fsynced first."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_path)."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see atomic_path)."""
    atomic_write_bytes(path, text.encode("utf-8"))
