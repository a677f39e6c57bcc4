"""Run logs on rank 0: scalars appended to scalars.csv (step,name,value), TensorBoard when installed, and a PNG of
the loss and mIoU curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from deeplab_fast._files import atomic_path, atomic_write_text


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
            atomic_write_text(self.csv_path, "step,name,value\n")
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
        atomic_write_text(self.csv_path, "step,name,value\n" + "".join(f"{s},{n},{v!r}\n" for s, n, v in rows))

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
    try:
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
