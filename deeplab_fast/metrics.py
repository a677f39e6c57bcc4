"""Segmentation metrics from a confusion matrix: mIoU (the DeepLab paper's metric), pixel and mean accuracy,
frequency-weighted IoU.

Definitions, with M[t, p] the number of pixels of true class t predicted as p (ignored pixels excluded):
- IoU_c = M[c, c] / (sum_p M[c, p] + sum_t M[t, c] - M[c, c]); nan when class c is absent from both the
  predictions and the targets (0 / 0), so such classes do not drag the mean down.
- mIoU = nanmean_c IoU_c.
- pixel_acc = sum_c M[c, c] / sum M.
- mean_acc = nanmean_c M[c, c] / sum_p M[c, p] (nan for classes absent from the targets).
- fw_IoU = sum_c (sum_p M[c, p] / sum M) * IoU_c over classes present in the targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist


def check_classes(num_classes: object, ignore_index: object) -> tuple[int, int]:
    """Validate a label space: num_classes a positive int, ignore_index an int that is not a class index.

    An ignore label inside 0..num_classes-1 would silently drop that class from training and from the metrics.
    Returns (num_classes, ignore_index). Raises ValueError naming the argument.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int; got {ignore_index!r}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index={ignore_index} is one of the classes 0..{num_classes - 1}, so that class would be "
            f"ignored; use a label outside them (255 for up to 255 classes, or -1)"
        )
    return num_classes, ignore_index


class ConfusionMatrix:
    """Accumulates a (num_classes, num_classes) int64 confusion matrix (rows: target, columns: prediction).

    update(pred, target): int tensors of equal shape (any shape, any device); target pixels equal to
    ignore_index (which must not be a class index: ValueError) are skipped. all_reduce() sums the matrix over
    the ranks of a torch.distributed run (call it on every rank before compute()). compute() returns {"mIoU",
    "IoU", "pixel_acc", "mean_acc", "fw_IoU"}.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None) -> None:
        self.num_classes, self.ignore_index = check_classes(num_classes, ignore_index)
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Zero the matrix."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. pred, target: integer tensors of the same shape (e.g. (N, H, W)); pred in [0, K)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(
                f"pred and target must be integer tensors (class indices), got {pred.dtype} and "
                f"{target.dtype}; take argmax over the class dimension first"
            )
        k = self.num_classes
        if self.matrix.device != target.device:
            self.matrix = self.matrix.to(target.device)
        pred = pred.to(target.device).reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(
                f"target has class indices outside 0..{k - 1} that are not the ignore label {self.ignore_index}"
            )
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= k):
            raise ValueError(f"pred has class indices outside 0..{k - 1}")
        self.matrix += torch.bincount(target * k + pred, minlength=k * k).view(k, k)

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> None:
        """Sum the matrix over all ranks (no-op outside a distributed run). Every rank must call it."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM, group=group)

    def compute(self) -> dict[str, float | list[float]]:
        """Metrics of the accumulated matrix; see the module docstring. IoU is a list of K floats (nan = absent)."""
        m = self.matrix.double().cpu()
        tp = m.diag()
        gt = m.sum(1)
        predicted = m.sum(0)
        total = m.sum()
        union = gt + predicted - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
        freq = gt / total if total > 0 else torch.zeros_like(gt)
        present = gt > 0
        return {
            "mIoU": _nanmean(iou),
            "IoU": iou.tolist(),
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_acc": _nanmean(acc),
            "fw_IoU": float((freq[present] * iou[present]).sum()) if bool(present.any()) else math.nan,
        }


def _nanmean(x: torch.Tensor) -> float:
    return float(x.nanmean()) if bool((~x.isnan()).any()) else math.nan


def format_table(result: dict[str, float | list[float]], class_names: Sequence[str] | None = None) -> str:
    """A plain-text table of per-class IoU (in %) and the summary metrics of a ConfusionMatrix.compute() result."""
    ious = result["IoU"]
    assert isinstance(ious, list)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(ious))]
    width = max([len(n) for n in names] + [9])
    lines = [f"{'class':<{width}}  IoU (%)", f"{'-' * width}  -------"]
    for name, v in zip(names, ious, strict=True):
        lines.append(f"{name:<{width}}  {'   n/a' if math.isnan(v) else f'{100 * v:6.2f}'}")
    lines.append(f"{'-' * width}  -------")
    for key in ("mIoU", "pixel_acc", "mean_acc", "fw_IoU"):
        v = result[key]
        assert isinstance(v, float)
        lines.append(f"{key:<{width}}  {100 * v:6.2f}")
    return "\n".join(lines)
