"""gpu_check stage "models": DeepLabV3+ latency (eager, deeplab_fast.optimize(), float32 and bfloat16) and
one training step.

Each model of the plan is built with random weights and random BatchNorm statistics, and run at each batch
of the plan: the eager model, optimize(model, backend=<the kernel backend>), and both again with weights and
input in bfloat16 (optimize() takes the cast model: autocast would hand bf16 activations to fp32 folded
weights). Times come from the stage's Timer (CUDA events on a GPU); each row also records how far the
optimized logits are from the eager ones (max |difference| / max |eager|), and for float32 fails above 1e-3.
The training step is SGD with momentum on a cross-entropy loss, forward under the plan's autocast
(bfloat16 on a GPU), at the plan's training batch: the time of a whole step (zero_grad, forward, backward,
optimizer step).
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

import torch
from gpu_timings import Timer

from deeplab_fast.models import deeplabv3plus
from deeplab_fast.testing import randomize_batchnorm

NUM_CLASSES = 21
FP32_MODEL_RTOL = 1e-3


def run(ctx: Any) -> None:
    """Emit one "model" record per (model, batch, variant) and one "train_step" record per model."""
    plan = ctx.plan
    # cuDNN's heuristics, not its autotuner: autotuning every layer shape of every variant would take much of
    # the stage's minute
    torch.backends.cudnn.benchmark = False
    timer = Timer(plan.clock, plan.device)
    for case in plan.models:
        if ctx.out_of_time(f"models {case.name}"):
            continue
        torch.manual_seed(0)
        eager = randomize_batchnorm(deeplabv3plus(num_classes=NUM_CLASSES, **case.options), seed=0)
        eager = eager.eval().to(plan.device)
        for batch in plan.model_batches:
            _latency(ctx, timer, case, eager, batch)
        if not ctx.out_of_time(f"train step {case.name}"):
            _train_step(ctx, timer, case, eager)


def _latency(ctx: Any, timer: Timer, case: Any, eager: torch.nn.Module, batch: int) -> None:
    import deeplab_fast

    plan = ctx.plan
    x32 = torch.randn(batch, 3, case.size, case.size, generator=torch.Generator().manual_seed(batch)).to(plan.device)
    reference: dict[str, torch.Tensor] = {}
    for dname in plan.model_dtypes:
        dtype = getattr(torch, dname)
        x = x32.to(dtype)
        model = eager if dtype == torch.float32 else _cast(eager, dtype)
        for variant in ("eager", "optimize()"):
            if ctx.out_of_time(f"models {case.name} b{batch} {dname} {variant}"):
                continue
            fields = dict(model=case.name, size=case.size, batch=batch, dtype=dname, variant=variant)
            if variant == "optimize()":
                fields["backend"] = plan.kernel_backend
            with ctx.case("model", case.name, **fields) as rec:
                if variant == "optimize()":
                    model = deeplab_fast.optimize(model, backend=plan.kernel_backend, tune_malloc=False)
                with torch.no_grad():
                    out = model(x)  # the warm-up call, and the logits compared below
                    times = timer.time(lambda model=model, x=x: model(x), reps=plan.model_reps, warmup=0)
                med = statistics.median(times)
                rec.update(median_ms=med * 1e3, images_per_s=batch / med, reps=len(times))
                if variant == "eager":
                    reference[dname] = out.float()
                else:
                    diff = _relative_diff(out.float(), reference.get(dname))
                    rec["rel_diff_vs_eager"] = diff
                    rec["ok"] = bool(dname != "float32" or (diff is not None and diff <= FP32_MODEL_RTOL))
                    if not rec["ok"]:
                        rec["error"] = (
                            f"optimize() logits differ from eager by {diff} (relative), over {FP32_MODEL_RTOL}"
                        )


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(dtype)


def _relative_diff(a: torch.Tensor, b: torch.Tensor | None) -> float | None:
    if b is None:
        return None
    scale = b.abs().max().item() or 1.0
    return float((a - b).abs().max().item() / scale)


def _autocast(device: str, dtype_name: str | None) -> contextlib.AbstractContextManager:
    if dtype_name is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype_name))


def _train_step(ctx: Any, timer: Timer, case: Any, eager: torch.nn.Module) -> None:
    import copy

    plan = ctx.plan
    batch = plan.train_batch
    autocast = plan.train_autocast
    dname = f"{autocast} autocast" if autocast else "float32"
    fields = dict(model=case.name, size=case.size, batch=batch, dtype=dname, variant="train step")
    with ctx.case("train_step", case.name, **fields) as rec:
        model = copy.deepcopy(eager).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(batch, 3, case.size, case.size, generator=g).to(plan.device)
        labels = torch.randint(0, NUM_CLASSES, (batch, case.size, case.size), generator=g).to(plan.device)
        losses: list[float] = []

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with _autocast(plan.device, autocast):
                out = model(x)
                out = out["out"] if isinstance(out, dict) else out
                loss = torch.nn.functional.cross_entropy(out.float(), labels, ignore_index=255)
            loss.backward()
            opt.step()
            losses.append(loss.detach())

        times = timer.time(step, reps=plan.model_reps, warmup=1)
        med = statistics.median(times)
        finite = all(bool(torch.isfinite(v).item()) for v in losses)
        rec.update(median_ms=med * 1e3, images_per_s=batch / med, reps=len(times), ok=finite)
        rec["loss"] = float(losses[-1].item())
        if not finite:
            rec["error"] = "a training step gave a non-finite loss"
