"""The poly learning-rate schedule of DeepLab, with an optional linear warm-up."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler


def poly_warmup_factor(
    step: int, total: int, power: float = 0.9, warmup_iters: int = 0, warmup_factor: float = 0.1
) -> float:
    """Multiplier of the base lr at `step` (0-based): (1 - step / total) ** power, times a linear ramp from
    warmup_factor to 1 over the first warmup_iters steps."""
    poly = max(0.0, 1.0 - step / total) ** power
    if step < warmup_iters:
        alpha = step / warmup_iters
        poly *= warmup_factor * (1.0 - alpha) + alpha
    return poly


class PolyLR(LRScheduler):
    """lr = base_lr * poly_warmup_factor(step, total_iters, power, warmup_iters, warmup_factor); step() once per
    optimizer step. Its state_dict holds plain numbers only."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_iters: int,
        power: float = 0.9,
        warmup_iters: int = 0,
        warmup_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if total_iters < 1:
            raise ValueError(f"total_iters must be >= 1, got {total_iters}")
        self.total_iters = total_iters
        self.power = power
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = poly_warmup_factor(self.last_epoch, self.total_iters, self.power, self.warmup_iters, self.warmup_factor)
        return [base * f for base in self.base_lrs]
