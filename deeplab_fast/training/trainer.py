"""The Trainer: the DeepLab recipe (SGD + momentum, poly lr, cross-entropy ignoring 255) on one process or many
(torchrun + DistributedDataParallel + SyncBatchNorm), with AMP, gradient accumulation, channels_last,
resumable checkpoints and logs."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from deeplab_fast._files import atomic_write_text
from deeplab_fast.data import ResumableDistributedSampler, ShardSampler, pad_collate
from deeplab_fast.dtypes import amp_dtype
from deeplab_fast.metrics import format_table
from deeplab_fast.models.weights import model_info
from deeplab_fast.training import checkpoint as ckpt
from deeplab_fast.training.builders import build_datasets, build_model, describe_model, normalization
from deeplab_fast.training.config import Config, ConfigError
from deeplab_fast.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    convert_sync_batchnorm,
    init_distributed,
)
from deeplab_fast.training.evaluate import evaluate
from deeplab_fast.training.logging import RunLogger
from deeplab_fast.training.schedule import PolyLR

IGNORE_INDEX = 255


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # As in the paper's TensorFlow code, weight decay applies to conv/linear kernels, not to biases or BN params.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Train and evaluate a segmentation model as a Config describes.

    model / train_dataset / val_dataset override what the config would build (the model maps float (N, 3, H, W)
    to logits (N, num_classes, H, W); datasets yield float (3, H, W) images and int64 (H, W) masks, taking
    (index, seed) items for seeded augmentation). resume: None, "auto" (newest checkpoint in train.output_dir, if
    any) or a checkpoint path. A fresh run (nothing to resume) refuses an output_dir that holds another run's files
    (ConfigError) unless overwrite=True, which deletes them first. Under torchrun, every rank builds a Trainer;
    rank 0 logs and writes checkpoints. Checkpoints and best.safetensors describe their model (load them with
    deeplab_fast.load_model) when the model has a `config` or comes from the configuration.
    """

    def __init__(
        self,
        config: Config,
        *,
        model: nn.Module | None = None,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        resume: str | Path | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        config.validate()
        if resume is not None and overwrite:
            raise ConfigError("resume and overwrite exclude each other: continue the run in the folder, or replace it")
        self.config = config
        t = config.train
        self.dist: DistInfo = init_distributed(t.device, t.dist_backend)
        self.device = self.dist.device
        self.run_dir = Path(t.output_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"train.output_dir={t.output_dir!r} is a file; it must be a folder (new or existing)")
        self.progress = progress and self.dist.is_main
        self.amp_dtype = amp_dtype(t.amp)
        per_step = self.dist.world_size * t.grad_accum
        if t.batch_size % per_step:
            raise ConfigError(
                f"train.batch_size={t.batch_size} must be divisible by world size "
                f"({self.dist.world_size}) x train.grad_accum ({t.grad_accum})"
            )
        self.micro_batch = t.batch_size // per_step

        torch.manual_seed(t.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        if train_dataset is None:  # datasets passed in replace the configured ones (both)
            train_dataset, val_dataset = build_datasets(config)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.model = model if model is not None else build_model(config.model)
        self.model_name = describe_model(config.model) if model is None else type(model).__name__
        self.model_info = self._describe(model is None)

        self.step = 0
        self.epoch = 0
        self.position = 0  # samples of the current epoch this rank has consumed
        self.best_miou = -math.inf
        self.history: list[tuple[int, float]] = []
        self.last_metrics: dict[str, Any] = {}
        resume_path = self._find_resume(resume)
        state = None
        self.run_id = uuid.uuid4().hex  # marks this run's checkpoints: pruning never touches another run's
        if resume_path is not None:
            meta = ckpt.load_model_state(self.model, resume_path)  # clear error if made for another model
            state = ckpt.load_train_state(resume_path)
            self.run_id = meta.get("run_id", self.run_id)
        else:
            self._claim_run_dir(overwrite, resume is not None)

        if t.freeze_bn:
            for bn in _batchnorms(self.model):
                bn.requires_grad_(False)
        elif self.dist.distributed:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.model.to(self.device)
        if t.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ddp: nn.Module = self.model
        if self.dist.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # SyncBatchNorm keeps running stats equal on all ranks, so no per-step buffer broadcast is needed
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids, broadcast_buffers=False)

        self.optimizer = torch.optim.SGD(_param_groups(self.model, t.weight_decay), lr=t.lr, momentum=t.momentum)
        self.scheduler = PolyLR(self.optimizer, t.iterations, t.poly_power, t.warmup_iters, t.warmup_factor)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.amp == "fp16" else None

        self.sampler = ResumableDistributedSampler(
            self.train_dataset, self.dist.world_size, self.dist.rank, shuffle=True, seed=t.seed
        )
        if len(self.sampler) < self.micro_batch:
            raise ConfigError(
                f"the training set has {len(self.train_dataset)} samples: fewer than one batch of "
                f"{self.micro_batch} per process"
            )
        pin = self.device.type == "cuda"
        # The loader draws worker base seeds when an iterator starts; its own generator keeps that draw out of the
        # global RNG stream (dropout), which would otherwise differ between a resumed and an uninterrupted run.
        loader_rng = torch.Generator().manual_seed(t.seed + self.dist.rank)
        workers = config.data.num_workers
        self.train_loader = DataLoader(
            self.train_dataset,
            batch_size=self.micro_batch,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=pin,
            drop_last=True,
            persistent_workers=False,
            generator=loader_rng,
        )
        self.val_loader = None
        if self.val_dataset is not None:
            shard = ShardSampler(len(self.val_dataset), self.dist.world_size, self.dist.rank)
            self.val_loader = DataLoader(
                self.val_dataset,
                batch_size=config.eval.batch_size,
                sampler=shard,
                num_workers=workers,
                pin_memory=pin,
                collate_fn=pad_collate,
            )
        if state is not None:
            self._load_state(state)
        if state is None:  # dropout etc.: a different stream per rank (a resume restores the saved ones)
            torch.manual_seed(t.seed + self.dist.rank)
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_position(self.position)
        self._batches = None
        self.logger = RunLogger(self.run_dir, enabled=self.dist.is_main, tensorboard=t.tensorboard)
        if state is not None:
            self.logger.truncate_after(self.step)
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))

    # ----------------------------------------------------------------------------------------------- state
    def _describe(self, from_config: bool) -> dict[str, Any] | None:
        """The model description stored in checkpoints (None for a passed-in model without a `config`)."""
        d, m = self.config.data, self.config.model
        names = getattr(self.train_dataset, "class_names", None)
        if names is not None and len(names) != m.num_classes:
            names = None
        palette = getattr(self.train_dataset, "palette", None)
        if palette is None and d.dataset in ("voc", "cityscapes"):
            from deeplab_fast.inference.palettes import get_palette

            palette = get_palette(d.dataset, m.num_classes)[: m.num_classes]
        mean, std = normalization(self.config)
        extras = {"class_names": names, "palette": palette, "mean": mean, "std": std}
        if isinstance(getattr(self.model, "config", None), dict):
            return model_info(self.model, **extras)
        if from_config and m.factory is not None:  # a custom factory: record its spec and keyword arguments
            kwargs = {
                "backbone": m.backbone,
                "num_classes": m.num_classes,
                "output_stride": m.output_stride,
                "separable": m.separable,
                "decoder": m.decoder,
                "align_corners": m.align_corners,
                **m.options,
            }
            return model_info(self.model, config=kwargs, factory=m.factory, **extras)
        return None

    def _claim_run_dir(self, overwrite: bool, resume_asked: bool) -> None:
        """A fresh run needs a folder without another run's files; overwrite=True deletes them (rank 0)."""
        if self.dist.is_main:
            existing = ckpt.run_files(self.run_dir)
            shown = ", ".join(p.name for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
            if existing and resume_asked:
                raise ConfigError(
                    f"train.output_dir={str(self.run_dir)!r} holds no checkpoint to resume but another run's files "
                    f"({shown}); pass --overwrite instead of --resume to replace them, or choose another --output-dir"
                )
            if existing and not overwrite:
                raise ConfigError(
                    f"train.output_dir={str(self.run_dir)!r} holds another run ({shown}); pass --resume to continue "
                    "it, --overwrite to replace it, or choose another --output-dir"
                )
            if existing:
                ckpt.clear_run(self.run_dir)
        barrier()

    def _find_resume(self, resume: str | Path | None) -> Path | None:
        if resume is None:
            return None
        if str(resume) == "auto":
            found = ckpt.list_checkpoints(self.run_dir)
            return found[-1] if found else None
        path = Path(resume)
        if not path.is_file():
            raise ckpt.CheckpointError(f"--resume checkpoint {path} not found")
        return path

    def _rng_states(self) -> dict[str, Any]:
        local = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            local["cuda"] = torch.cuda.get_rng_state(self.device)
        if not self.dist.distributed:
            return {"ranks": [local]}
        gathered: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(gathered, local)
        return {"ranks": gathered}

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "best_miou": self.best_miou if math.isfinite(self.best_miou) else None,
            "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": self._rng_states(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self.best_miou = -math.inf if state["best_miou"] is None else float(state["best_miou"])
        if int(state["world_size"]) != self.dist.world_size:
            # a different world size splits the data differently: restart the epoch's position on a fresh order
            self.position = 0
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        ranks = state["rng"]["ranks"]
        if len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            torch.set_rng_state(mine["torch"].to(torch.uint8).cpu())
            if "cuda" in mine and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"].to(torch.uint8).cpu(), self.device)
        else:
            torch.manual_seed(self.config.train.seed + self.dist.rank + self.step)

    def save_checkpoint(self) -> Path | None:
        """Write ckpt_<step> (weights + training state) on rank 0 and prune to train.keep_last; every rank must
        call it. Returns the weights path on rank 0."""
        state = self._state()  # collective (RNG gather): all ranks
        path = None
        if self.dist.is_main:
            meta = {
                "model": self.model_name,
                "step": str(self.step),
                "run_id": self.run_id,
                "config": yaml.safe_dump(self.config.to_dict(), sort_keys=False),
            }
            path = ckpt.save_checkpoint(self.run_dir, self.step, self.model.state_dict(), state, meta, self.model_info)
            ckpt.prune_checkpoints(self.run_dir, self.config.train.keep_last, run_id=self.run_id)
        barrier()
        return path

    # -------------------------------------------------------------------------------------------- training
    def _train_mode(self) -> None:
        self.model.train()
        if self.config.train.freeze_bn:  # frozen BN normalizes with its running statistics
            for bn in _batchnorms(self.model):
                bn.eval()

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batches is None:
            self._batches = iter(self.train_loader)
        try:
            batch = next(self._batches)
        except StopIteration:
            self.epoch += 1
            self.sampler.set_epoch(self.epoch)
            self.position = 0
            self._batches = iter(self.train_loader)
            batch = next(self._batches)
        self.position += self.micro_batch
        return batch

    def train_step(self) -> float:
        """One optimizer step over train.batch_size images (all ranks and accumulation steps); returns the mean
        cross-entropy per labelled pixel of the whole step (the same on every rank)."""
        t = self.config.train
        self._train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64)
        batches = [self._next_batch() for _ in range(t.grad_accum)]
        # Normalize by the labelled pixels of the whole step (all micro-batches, all ranks): then DDP's gradient
        # average and gradient accumulation both equal the mean loss of one big batch, even when ranks or
        # micro-batches hold different numbers of ignored pixels.
        labelled = sum(int((m != IGNORE_INDEX).sum()) for _, m in batches)
        count = all_reduce_sum(torch.tensor(float(labelled), device=self.device)) / self.dist.world_size
        for i, (images, masks) in enumerate(batches):
            images = images.to(self.device, non_blocking=True)
            masks = masks.to(self.device, non_blocking=True)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            last = i == t.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.distributed else self.ddp.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    out = self.ddp(images)
                if isinstance(out, dict):  # output_dict=True models: {"out": logits[, "aux": aux logits]}
                    loss_sum = F.cross_entropy(out["out"].float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
                    if "aux" in out:
                        aux = F.cross_entropy(out["aux"].float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
                        loss_sum = loss_sum + t.aux_weight * aux
                else:
                    loss_sum = F.cross_entropy(out.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
                loss = loss_sum / count.clamp(min=1.0)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            total += loss.detach().double().cpu()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        value = float(all_reduce_sum(total) / self.dist.world_size)
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss is {value} at step {self.step}; lower train.lr or use amp")
        self.history.append((self.step, value))
        return value

    def train(self, iterations: int | None = None) -> dict[str, Any]:
        """Run until step train.iterations (or `iterations` more steps), evaluating every train.eval_every steps
        and at the end, checkpointing every train.checkpoint_every steps and at the end. Returns the last
        evaluation's metrics ({} without a validation set)."""
        t = self.config.train
        stop = t.iterations if iterations is None else min(t.iterations, self.step + iterations)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.iterations, initial=self.step, desc="train", dynamic_ncols=True)
        tic = time.perf_counter()
        while self.step < stop:
            loss = self.train_step()
            lr = self.optimizer.param_groups[0]["lr"]
            if self.step % t.log_every == 0 or self.step == stop:
                elapsed = time.perf_counter() - tic
                rate = t.batch_size * (t.log_every if self.step % t.log_every == 0 else 1) / max(elapsed, 1e-9)
                tic = time.perf_counter()
                self.logger.log(self.step, {"train/loss": loss, "train/lr": lr, "train/img_per_s": rate})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
            if bar is not None:
                bar.update(1)
            final = self.step == t.iterations
            if self.val_loader is not None and ((t.eval_every and self.step % t.eval_every == 0) or final):
                self.evaluate(log=True)
            if self.step % t.checkpoint_every == 0 or final:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if self.step == t.iterations:
            self.logger.close()
        return self.last_metrics

    @torch.no_grad()
    def evaluate(
        self, scales: list[float] | None = None, flip: bool | None = None, log: bool = False
    ) -> dict[str, Any]:
        """Evaluate on the validation set (all ranks); returns ConfusionMatrix.compute()'s dict. With log=True,
        records val/* scalars, prints the per-class table and keeps best.safetensors on rank 0."""
        if self.val_loader is None:
            raise RuntimeError("no validation dataset: configure data.val_* or pass val_dataset")
        e = self.config.eval
        cm = evaluate(
            self.model,
            self.val_loader,
            self.config.model.num_classes,
            self.device,
            scales=e.scales if scales is None else scales,
            flip=e.flip if flip is None else flip,
            align_corners=self.config.model.align_corners,
            amp_dtype=self.amp_dtype,
            channels_last=self.config.train.channels_last,
        )
        metrics = cm.compute()
        self.last_metrics = metrics
        if log and self.dist.is_main:
            scalars = {f"val/{k}": float(v) for k, v in metrics.items() if k != "IoU"}
            self.logger.log(self.step, scalars)
            names = getattr(self.val_dataset, "class_names", None)
            from tqdm import tqdm

            tqdm.write(f"step {self.step}\n" + format_table(metrics, names))  # keeps a running progress bar intact
            miou = float(metrics["mIoU"])
            if math.isfinite(miou) and miou > self.best_miou:
                self.best_miou = miou
                ckpt.save_weights_file(
                    self.model.state_dict(),
                    self.run_dir / "best.safetensors",
                    {"model": self.model_name, "step": str(self.step), "mIoU": repr(miou), "run_id": self.run_id},
                    self.model_info,
                )
        return metrics
