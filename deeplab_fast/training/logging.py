"""Run logs on rank 0: scalars appended to scalars.csv (step,name,value), TensorBoard when installed, and a PNG of
the loss and mIoU curves."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path


class RunLogger:
    """Appends scalars to <run_dir>/scalars.csv (and TensorBoard when the package is installed and asked for).
    Does nothing when `enabled` is False (every rank but 0)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.csv_path = self.run_dir / "scalars.csv"
        self._writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.csv_path.exists():
            self.csv_path.write_text("step,name,value\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._writer = SummaryWriter(str(self.run_dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run rewrites the steps after its checkpoint)."""
        if not self.enabled or not self.csv_path.exists():
            return
        rows = [r for r in read_scalars(self.csv_path) if r[0] <= step]
        _atomic_write(self.csv_path, "step,name,value\n" + "".join(f"{s},{n},{v!r}\n" for s, n, v in rows))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Record each name=value at `step`."""
        if not self.enabled:
            return
        with self.csv_path.open("a", newline="") as f:
            writer = csv.writer(f)
            for name, value in scalars.items():
                writer.writerow([step, name, repr(float(value))])
        if self._writer is not None:
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush TensorBoard and write curves.png."""
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.close()
        plot_curves(self.csv_path, self.run_dir / "curves.png")


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """Rows (step, name, value) of a scalars.csv."""
    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        return [(int(s), n, float(v)) for s, n, v in reader]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_curves(csv_path: str | Path, png_path: str | Path) -> None:
    """Plot train/loss and val/mIoU against step from a scalars.csv into a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_scalars(csv_path)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for step, name, value in rows:
        if math.isfinite(value):
            xs, ys = series.setdefault(name, ([], []))
            xs.append(step)
            ys.append(value)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name, title in ((axes[0], "train/loss", "training loss"), (axes[1], "val/mIoU", "validation mIoU")):
        if name in series:
            ax.plot(*series[name], marker="o" if len(series[name][0]) < 20 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    fd, tmp = tempfile.mkstemp(prefix=png_path.name + ".", suffix=".png", dir=png_path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
