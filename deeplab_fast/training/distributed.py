"""torch.distributed setup for torchrun launches, and synchronized BatchNorm on GPUs and CPUs.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; init_distributed reads them through
torch.distributed.init_process_group("env://"). torch's own nn.SyncBatchNorm only runs on GPUs, so on CPU
(gloo) CPUSyncBatchNorm computes the global batch statistics with differentiable all-reduces
(torch.distributed.nn.functional.all_reduce), which give the same gradients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass
class DistInfo:
    """Where this process runs: rank, world size, local rank (GPU index on its node) and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPUs, gloo on CPU unless `backend` says);
    pick the device ("auto": this rank's GPU if CUDA is available, else CPU). Safe to call twice."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available on this machine")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
        dist.init_process_group(
            backend=chosen,
            init_method="env://",
            world_size=world_size,
            rank=rank,
            device_id=dev if chosen == "nccl" else None,
        )
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken over the whole batch of all ranks, for CPU tensors (gloo),
    where torch's nn.SyncBatchNorm does not run (and DistributedDataParallel refuses it). Plain BatchNorm in eval
    mode or outside a process group. Input (N, C, ...) float; output the same shape and dtype."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"CPUSyncBatchNorm expects input (N, C, ...), got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        group = self.process_group or dist.group.WORLD
        if dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, c] + [1] * (input.dim() - 2)
        x = input.float()
        count = torch.full((1,), x.numel() // c, dtype=torch.float32)
        # Differentiable all-reduces: their backward sums the gradients of every rank's loss w.r.t. the shared
        # statistics, which is what nn.SyncBatchNorm's backward computes. Two passes (mean, then centered sum of
        # squares) are stabler than E[x^2] - E[x]^2.
        totals = dist_fn.all_reduce(torch.cat([x.sum(dims), count]), group=group)
        n = totals[c]
        mean = totals[:c] / n
        centered = x - mean.view(shape)
        var = dist_fn.all_reduce((centered * centered).sum(dims), group=group) / n
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y.to(input.dtype)


def convert_sync_batchnorm(
    module: nn.Module, device: torch.device | str = "cpu", process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Replace every BatchNorm in `module` by a synchronized one sharing its parameters and buffers: torch's
    nn.SyncBatchNorm for GPU training, CPUSyncBatchNorm for CPU training."""
    if torch.device(device).type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        sync = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, process_group
        )
        if module.affine:
            sync.weight = module.weight
            sync.bias = module.bias
        sync.running_mean = module.running_mean
        sync.running_var = module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, device, process_group)
        if new is not child:
            setattr(module, name, new)
    return module


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum `value` over ranks (returns it unchanged outside a distributed run); not differentiable."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier() -> None:
    """Wait for all ranks (no-op outside a distributed run)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
