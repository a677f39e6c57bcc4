"""gpu_check stage "timings": kernel times against the eager chain and torch.compile, with bandwidth.

On a GPU each repetition is timed with CUDA events, and a buffer larger than the L2 cache is overwritten
before each one, so no repetition finds its inputs in L2 (the flush also keeps the GPU busy while the host
queues the timed call, so launch overhead shows only where it exceeds the flush). In a rehearsal the host
clock times each call, without a flush: the figures then only show that the stage runs.

Providers per case: our kernel backend and Triton, the eager chain in PyTorch (depthwise conv + BatchNorm +
ReLU modules for dwconv, cuDNN on a GPU; interpolate + cat, interpolate + argmax, interpolate + softmax + add
for the resize ops), and torch.compile of that eager chain (default mode: no max-autotune) on the plan's
compile cases. "forward+backward" rows time one forward and its backward together (the gradient of every
input), for every provider alike.

Each row: median and minimum time, the ideal traffic (every input read once, every output written once) as
GB/s and as a fraction of the device-to-device copy bandwidth measured at the start of the stage, and the
eager chain's time over the provider's (above 1: faster than eager).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import gpu_inputs
import torch
from gpu_inputs import dtype_of
from gpu_worker import StageAborted, error_line, is_sticky

from deeplab_fast.ops import dwconv_bn_act, upsample_argmax, upsample_concat, upsample_softmax_accumulate

EAGER = "eager"


class Timer:
    """Times a callable: CUDA events with an L2 flush before each repetition, or the host clock."""

    def __init__(self, clock: str, device: str) -> None:
        self.clock = clock
        self.device = device
        self.flush_bytes = 0
        if clock == "cuda_events":
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            l2 = getattr(props, "L2_cache_size", 0) or 64 * 2**20
            self.flush_bytes = max(4 * l2, 256 * 2**20)
            self._flush = torch.empty(self.flush_bytes // 4, dtype=torch.int32, device=device)

    def time(self, fn: Callable[[], Any], *, reps: int, warmup: int) -> list[float]:
        """Seconds of each of `reps` calls of `fn`, after `warmup` untimed calls."""
        for _ in range(warmup):
            fn()
        if self.clock != "cuda_events":
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return times
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for start, end in zip(starts, ends, strict=True):
            self._flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True)]


def copy_bandwidth(timer: Timer, device: str, nbytes: int, reps: int) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written) of an `nbytes` buffer."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t = statistics.median(timer.time(lambda: dst.copy_(src), reps=reps, warmup=2))
    return 2 * nbytes / t / 1e9


def run(ctx: Any) -> None:
    """Emit the copy bandwidth, then one "timing" record per (case, direction, provider)."""
    plan = ctx.plan
    torch.backends.cudnn.benchmark = True  # the eager baseline at its best algorithm
    timer = Timer(plan.clock, plan.device)
    big = plan.device == "cuda"
    bw = copy_bandwidth(timer, plan.device, (2**30 if big else 16 * 2**20), reps=10 if big else 3)
    ctx.emit({"kind": "bandwidth", "copy_gb_s": bw, "clock": plan.clock, "flush_bytes": timer.flush_bytes})
    providers_of_kernels = [
        (f"deeplab_fast {plan.kernel_backend}", plan.kernel_backend),
        ("deeplab_fast triton", "triton"),
    ]
    for case in plan.dw_cases:
        if ctx.out_of_time(f"timings {case.name}"):
            continue
        _time_dw(ctx, timer, bw, case, providers_of_kernels)
    for case in plan.up_cases:
        if ctx.out_of_time(f"timings {case.name}"):
            continue
        _time_up(ctx, timer, bw, case, providers_of_kernels)


def _compile_label(plan: Any) -> str:
    if plan.compile_backend == "inductor":
        return "torch.compile"
    return f"torch.compile (backend={plan.compile_backend})"


def _compile(plan: Any, fn: Callable) -> Callable:
    torch._dynamo.reset()
    return torch.compile(fn, backend=plan.compile_backend)


def _time_all(
    ctx: Any,
    timer: Timer,
    bw: float,
    providers: dict[str, Callable[[], Any] | str],
    nbytes: int,
    fields: dict[str, Any],
) -> None:
    """Time each provider (or report why it cannot run) and emit its row; speedups against EAGER."""
    plan = ctx.plan
    results: dict[str, dict[str, Any]] = {}
    for name, fn in providers.items():
        row: dict[str, Any] = {"kind": "timing", "provider": name, **fields}
        results[name] = row
        if isinstance(fn, str):
            row.update(ok=False, error=fn)
            continue
        try:
            times = timer.time(fn, reps=plan.timing_reps, warmup=plan.timing_warmup)
        except Exception as exc:  # noqa: BLE001  (a provider that fails is reported, the others still run)
            row.update(ok=False, error=error_line(exc))
            if is_sticky(exc):
                ctx.emit(row)
                raise StageAborted(f"{fields.get('case')} {name}: {row['error']}") from exc
            continue
        med = statistics.median(times)
        row.update(
            ok=True,
            reps=len(times),
            median_us=med * 1e6,
            min_us=min(times) * 1e6,
            gb_s=nbytes / med / 1e9,
            pct_copy_bw=100 * nbytes / med / 1e9 / bw,
            ideal_mb=nbytes / 1e6,
        )
    eager = results.get(EAGER, {}).get("median_us")
    for row in results.values():
        if eager and row.get("median_us"):
            row["speedup_vs_eager"] = eager / row["median_us"]
        ctx.emit(row)


def _eager_chain(case: Any, dtype: torch.dtype, device: str) -> torch.nn.Module:
    """Depthwise conv + BatchNorm (random statistics, eval) + ReLU as modules, channels_last."""
    c = case.channels
    torch.manual_seed(0)
    chain = torch.nn.Sequential(
        torch.nn.Conv2d(c, c, 3, case.stride, padding=case.dilation, dilation=case.dilation, groups=c, bias=False),
        torch.nn.BatchNorm2d(c),
        torch.nn.ReLU(),
    )
    with torch.no_grad():
        chain[1].running_mean.uniform_(-0.5, 0.5)
        chain[1].running_var.uniform_(0.5, 1.5)
    return chain.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)


def _time_dw(ctx: Any, timer: Timer, bw: float, case: Any, kernels: list[tuple[str, str]]) -> None:
    plan = ctx.plan
    dtype = dtype_of(plan.timing_dtype)
    x, w, s, b = gpu_inputs.dw_inputs(case, plan.timing_batch, dtype, "channels_last", plan.device)
    chain = _eager_chain(case, dtype, plan.device)
    conf = dict(stride=case.stride, dilation=case.dilation, activation="relu")
    fields = dict(
        op="dwconv_bn_act", case=case.name, batch=plan.timing_batch, dtype=plan.timing_dtype, layout="channels_last"
    )
    y_bytes = x.numel() // case.stride**2 * x.element_size()
    x_bytes = x.numel() * x.element_size()
    with torch.no_grad():
        fwd: dict[str, Callable[[], Any] | str] = {}
        for label, backend in kernels:
            fwd[label] = lambda backend=backend: dwconv_bn_act(x, w, s, b, **conf, backend=backend)
        fwd[EAGER] = lambda: chain(x)
        if case.name in plan.timing_compile:
            fwd[_compile_label(plan)] = _guard_compile(plan, chain, x)
        _time_all(ctx, timer, bw, fwd, x_bytes + y_bytes, dict(fields, direction="forward"))
    if case.name not in plan.timing_backward:
        return
    g = torch.randn(plan.timing_batch, case.channels, *_out_hw(case), device=plan.device, dtype=dtype)
    g = g.contiguous(memory_format=torch.channels_last)
    xg = x.detach().requires_grad_()
    leaves = [xg, *(t.detach().requires_grad_() for t in (w, s, b))]
    both: dict[str, Callable[[], Any] | str] = {}
    for label, backend in kernels:
        both[label] = lambda backend=backend: torch.autograd.grad(
            dwconv_bn_act(*leaves, **conf, backend=backend), leaves, g
        )
    params = [xg, *chain.parameters()]
    both[EAGER] = lambda: torch.autograd.grad(chain(xg), params, g)
    if case.name in plan.timing_compile:
        compiled = _guard_compile(plan, chain, xg, grad=(params, g))
        both[_compile_label(plan)] = compiled
    # forward reads x, writes y; backward reads g and x, writes dx (parameters are small)
    nbytes = 3 * x_bytes + 2 * y_bytes
    _time_all(ctx, timer, bw, both, nbytes, dict(fields, direction="forward+backward"))


def _out_hw(case: Any) -> tuple[int, int]:
    return -(-case.height // case.stride), -(-case.width // case.stride)


def _guard_compile(plan: Any, fn: Callable, *args: Any, grad: tuple | None = None) -> Callable[[], Any] | str:
    """A compiled `fn(*args)` (its first call compiles, untimed), or why compiling failed."""
    try:
        compiled = _compile(plan, fn)
        if grad is None:
            call = lambda: compiled(*args)  # noqa: E731
        else:
            params, g = grad
            call = lambda: torch.autograd.grad(compiled(*args), params, g)  # noqa: E731
        call()
        return call
    except Exception as exc:  # noqa: BLE001  (reported in the provider's row)
        return f"torch.compile failed: {error_line(exc)}"


def _time_up(ctx: Any, timer: Timer, bw: float, case: Any, kernels: list[tuple[str, str]]) -> None:
    plan = ctx.plan
    dtype = dtype_of(plan.timing_dtype)
    tensors = gpu_inputs.up_inputs(case, plan.timing_batch, dtype, "channels_last", plan.device)
    fields = dict(
        op=f"upsample_{case.op}",
        case=case.name,
        batch=plan.timing_batch,
        dtype=plan.timing_dtype,
        layout="channels_last",
    )
    size = case.size
    n = plan.timing_batch
    in_bytes = sum(t.numel() * t.element_size() for t in tensors)
    if case.op == "concat":
        out_bytes = n * sum(s[0] for s in case.inputs) * size[0] * size[1] * tensors[0].element_size()
        ours = lambda backend: lambda: upsample_concat(tensors, size, backend=backend)  # noqa: E731
    elif case.op == "argmax":
        out_bytes = n * size[0] * size[1] * 8
        ours = lambda backend: lambda: upsample_argmax(tensors[0], size, backend=backend)  # noqa: E731
    else:
        out_bytes = tensors[1].numel() * 4  # accum is read (counted in in_bytes) and written
        ours = lambda backend: lambda: upsample_softmax_accumulate(tensors[0], tensors[1], weight=0.5, backend=backend)  # noqa: E731
    eager = lambda *ts: gpu_inputs.eager_up(case.op, list(ts), size)  # noqa: E731
    with torch.no_grad():
        fwd: dict[str, Callable[[], Any] | str] = {label: ours(backend) for label, backend in kernels}
        fwd[EAGER] = lambda: eager(*tensors)
        if case.name in plan.timing_compile:
            fwd[_compile_label(plan)] = _guard_compile(plan, eager, *tensors)
        _time_all(ctx, timer, bw, fwd, in_bytes + out_bytes, dict(fields, direction="forward"))
    if case.op != "concat" or case.name not in plan.timing_backward:
        return
    leaves = [t.detach().requires_grad_() for t in tensors]
    g = torch.randn(n, sum(s[0] for s in case.inputs), *size, device=plan.device, dtype=dtype)
    g = g.contiguous(memory_format=torch.channels_last)
    both: dict[str, Callable[[], Any] | str] = {}
    for label, backend in kernels:
        both[label] = lambda backend=backend: torch.autograd.grad(
            upsample_concat(leaves, size, backend=backend), leaves, g
        )
    both[EAGER] = lambda: torch.autograd.grad(eager(*leaves), leaves, g)
    if case.name in plan.timing_compile:
        both[_compile_label(plan)] = _guard_compile(plan, eager, *leaves, grad=(leaves, g))
    # forward: inputs read, output written; backward: g read, input gradients written
    _time_all(ctx, timer, bw, both, 2 * (in_bytes + out_bytes), dict(fields, direction="forward+backward"))
