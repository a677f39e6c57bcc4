"""Shared benchmark machinery: timing, same-run bandwidth yardsticks, environment facts, result files.

Every benchmark family (benchmarks/bench_*.py) builds rows with these helpers, so times, GB/s and
ratios are measured the same way everywhere.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from deeplab_fast._files import atomic_write_text


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], Any], device: torch.device | str, *, warmup: int = 2, reps: int = 5, min_time: float = 0.0
) -> list[float]:
    """Run `fn` `warmup` times, then time each of `reps` calls (seconds). Repeats until `min_time`."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return times


def reps_for(seconds_per_call: float, *, reps: int, min_reps: int, budget_s: float | None) -> int:
    """Timed repetitions one provider gets: `reps`, or with a budget as many as fit in `budget_s` seconds,
    never fewer than `min_reps` (nor more than `reps`).

    seconds_per_call: the provider's median timed call so far. Without a budget (an explicit --reps) every
    provider gets exactly `reps`.
    """
    if budget_s is None:
        return reps
    fit = int(budget_s / max(seconds_per_call, 1e-9))
    return min(reps, max(min_reps, fit))


def time_interleaved(
    providers: dict[str, Callable[[], Any]],
    device: torch.device | str,
    *,
    warmup: int | Mapping[str, int] = 2,
    reps: int = 5,
    first_call: dict[str, float] | None = None,
    on_call: Callable[[str], None] | None = None,
    budget_s: float | None = None,
    min_reps: int = 5,
) -> dict[str, list[float]]:
    """Time providers in turn (A B C A B C ...) after warm-up, so drift in machine load hits all alike.

    Returns the list of per-call seconds for each provider; its length is the repetitions that provider got.
    warmup: untimed calls per provider (an int, or a name -> count mapping for providers already called,
    e.g. by torch.compile). reps: timed calls per provider, or with `budget_s` the most a provider gets.
    budget_s: time budget in seconds for one provider's timed calls. Every provider is timed in the first
    round; from then on each provider runs until it has `reps_for(median of its calls so far, ...)` calls,
    so fast providers get `reps` and slow ones as many as fit in the budget, but at least `min_reps`, and the
    providers still running stay interleaved. With a budget a provider's warm-up also stops after its first
    call that takes longer than `budget_s / min_reps` (one-time costs are paid by then, and caches do not
    matter at that scale). None: exactly `reps` for everyone (an explicit --reps).
    If `first_call` is given, it receives the seconds of each provider's first warm-up call (which includes
    torch.compile's compilation, lazy initialisation and cache misses). `on_call(name)` is called after
    every call (progress bars).
    """
    slow = budget_s / max(min_reps, 1) if budget_s is not None else float("inf")
    for name, fn in providers.items():
        count = warmup.get(name, 2) if isinstance(warmup, Mapping) else warmup
        for i in range(max(count, 1 if first_call is not None else 0)):
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            took = time.perf_counter() - t0
            if i == 0 and first_call is not None:
                first_call[name] = took
            if on_call is not None:
                on_call(name)
            if took > slow:
                break
    times: dict[str, list[float]] = {name: [] for name in providers}
    wanted = dict.fromkeys(providers, reps)
    while any(len(times[name]) < wanted[name] for name in providers):
        for name, fn in providers.items():
            if len(times[name]) >= wanted[name]:
                continue
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
            wanted[name] = reps_for(median(times[name]), reps=reps, min_reps=min_reps, budget_s=budget_s)
            if on_call is not None:
                on_call(name)
    return times


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def copy_time(like: torch.Tensor, device: torch.device | str, *, warmup: int = 2, reps: int = 5) -> float:
    """Median seconds of `out.copy_(src)` for a tensor of `like`'s shape, dtype and layout.

    This is the memory-bound speed of light for one read and one write of that tensor, measured in the
    same run as the op it is compared with.
    """
    src = torch.empty_like(like).normal_()
    out = torch.empty_like(like)
    return median(time_fn(lambda: out.copy_(src), device, warmup=warmup, reps=reps))


COPY_PROVIDER = "copy (yardstick)"


def copy_provider(like: torch.Tensor) -> Callable[[], Any]:
    """`out.copy_(src)` for a tensor of `like`'s shape, dtype and layout, to time among a case's providers.

    Timed in the same interleaved rotation as the op it is compared with (harness.time_interleaved), the copy
    meets the same cache state: when a slow eager provider has just run, an op finds its input and output
    buffers evicted to memory, and so does the copy. A copy timed back to back (copy_time) keeps a tensor
    that fits in L3 hot and is the yardstick of an op that runs back to back; benchmarks record both.
    """
    src = torch.empty_like(like).normal_()
    out = torch.empty_like(like)
    return lambda: out.copy_(src)


def measure_bandwidth(device: torch.device | str, nbytes: int = 256 * 2**20) -> float:
    """Measured copy bandwidth in GB/s (bytes read + written) of a large buffer on `device`."""
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    t = median(time_fn(lambda: dst.copy_(src), device, warmup=2, reps=7))
    return 2 * n * 4 / t / 1e9


# (m, k, n) of the GEMM yardstick: square ones, and the 1x1 convolution 728 -> 728 of Xception's middle flow
# at 33x33 as a matmul (1089 x 728) @ (728 x 728), the shape DeepLab's pointwise convolutions have.
GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (1089, 728, 728))
TINY_GEMM_SHAPES = ((256, 256, 256),)


def measure_gemm_gflops(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    shapes: Sequence[tuple[int, int, int]] = GEMM_SHAPES,
    *,
    reps: int = 5,
) -> float:
    """Measured GEMM peak (GFLOP/s): the best over `shapes` of 2*m*k*n / the fastest of `reps` torch.mm calls.

    The compute yardstick of a run: a (m, k) @ (k, n) matmul in `dtype` on `device` with torch's current
    threads. The best shape and the fastest call are taken because a peak is what the machine can do; load
    from elsewhere only slows calls down, and one GEMM shape alone can sit below what a convolution of
    another shape reaches.
    """
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        t = min(time_fn(lambda a=a, b=b: torch.mm(a, b), device, warmup=1, reps=reps))
        best = max(best, 2 * m * k * n / t / 1e9)
    return best


def environment(device: torch.device | str) -> dict[str, Any]:
    """Facts recorded in every result file: device, versions, CPU/GPU model, threads, and under "cpu_info" the
    CPU's kernel path in use, supported paths, ISA flags, AMX and native bf16 (cpu_facts)."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "onednn": torch.backends.mkldnn.is_available() and _onednn_version(),
        "torch_cuda_build": torch.version.cuda,
    }
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    for package in ("torchvision", "segmentation_models_pytorch", "onnxruntime", "triton"):
        env[package] = _package_version(package)
    try:
        import deeplab_fast

        env["deeplab_fast"] = deeplab_fast.__version__
        env["deeplab_fast_ext"] = deeplab_fast.HAS_EXT
        env["deeplab_fast_cuda_kernels"] = deeplab_fast.built_with_cuda()
    except ImportError:
        pass
    env["cpu_info"] = cpu_facts()
    return env


def _package_version(name: str) -> str | None:
    from importlib import metadata

    dist = {"segmentation_models_pytorch": "segmentation-models-pytorch"}.get(name, name)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_facts() -> dict[str, Any]:
    """deeplab_fast.cpu_info() as JSON data, recorded in every result file; {"error": why} where it fails.

    Keys (see deeplab_fast.cpu_info): "capability" (the CPU kernel path in use: "default", "avx2" or "avx512"),
    "supported" (the paths this CPU and build can run, lowest first), "isa" (ISA flags found by cpuid), "amx"
    (bool), "bf16_native" (bool: oneDNN has native bf16 on this CPU), "cpu" (model name).
    """
    try:
        import deeplab_fast

        info = deeplab_fast.cpu_info()
    except Exception as exc:  # noqa: BLE001  (recorded as the reason; the benchmark still runs)
        return {"error": f"deeplab_fast.cpu_info() failed: {type(exc).__name__}: {exc}"[:300]}
    return {k: list(v) if isinstance(v, (tuple, set, frozenset)) else v for k, v in info.items()}


def native_dtype(device: torch.device | str, dtype_name: str) -> bool:
    """Whether `device` computes convolutions and GEMMs in `dtype_name` natively ("float32" always; a GPU in
    every dtype; a CPU in bfloat16 where cpu_info()["bf16_native"], in float16 where oneDNN has native fp16)."""
    if torch.device(device).type != "cpu" or dtype_name == "float32":
        return True
    if dtype_name == "bfloat16":
        return cpu_facts().get("bf16_native") is True
    fp16 = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", None)
    return bool(fp16 is not None and fp16())


def native_dtype_reason(device: torch.device | str, dtype_name: str) -> str:
    """Why native_dtype(device, dtype_name) is False, in words ("" when it is True)."""
    if native_dtype(device, dtype_name):
        return ""
    if dtype_name == "bfloat16":
        facts = cpu_facts()
        if "error" in facts:
            return f"native bf16 unknown on this CPU ({facts['error']})"
        return "no native bf16 on this CPU (deeplab_fast.cpu_info()['bf16_native'] is False: no AVX512-BF16/AMX)"
    return "no native fp16 on this CPU (torch.ops.mkldnn._is_mkldnn_fp16_supported() is False)"


def cpu_capabilities(device: torch.device | str) -> tuple[str, ...]:
    """The CPU kernel paths a kernel benchmark times on `device`, lowest first: every path this CPU and build
    support (deeplab_fast.testing.supported_cpu_capabilities()) on a CPU, none on a GPU."""
    if torch.device(device).type != "cpu":
        return ()
    from deeplab_fast.testing import supported_cpu_capabilities

    return tuple(supported_cpu_capabilities())


def capability_of(provider: str) -> str:
    """The CPU kernel path in a kernel provider's name ("deeplab_fast-cpu[avx2]" -> "avx2"; "" for the others)."""
    return provider[provider.index("[") + 1 : -1] if provider.endswith("]") and "[" in provider else ""


def on_cpu_capability(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with deeplab_fast's CPU kernels forced to path `name` (deeplab_fast.testing.cpu_capability),
    the previous path restored after every call, also when `fn` raises. The forcing is process-wide while a
    call runs, so providers timed interleaved with it (eager, the copy yardstick) keep the default path."""
    from deeplab_fast.testing import cpu_capability

    def call() -> Any:
        with cpu_capability(name):
            return fn()

    return call


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _onednn_version() -> str:
    config = torch.__config__.show()
    for line in config.splitlines():
        if "oneDNN" in line or "MKL-DNN" in line:
            return line.strip().lstrip("-").strip()
    return "available"


def baseline_name(device: torch.device | str) -> str:
    """Honest name of the eager library a baseline runs on: cuDNN on a GPU, oneDNN on a CPU."""
    return "cuDNN" if torch.device(device).type == "cuda" else "oneDNN"


def write_rows(
    rows: list[dict[str, Any]], out_dir: str, stem: str, env: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write rows as `<stem>.json` (with the environment and `extra` keys) and `<stem>.csv`; returns the paths.

    The CSV starts with one `# {environment JSON}` comment line, so every result file records the machine.
    """
    json_path = os.path.join(out_dir, stem + ".json")
    csv_path = os.path.join(out_dir, stem + ".csv")
    payload = {"environment": env, **(extra or {}), "rows": rows}
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str))
    atomic_write_text(csv_path, csv_text(rows, env))
    return {"json": json_path, "csv": csv_path}


def csv_text(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """Every row as CSV (the union of the rows' keys as columns), after one `# {environment JSON}` line."""
    import io

    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    buf.write("# " + json.dumps(env, default=str) + "\n")
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def markdown_table(rows: list[dict[str, Any]], columns: list[str], floatfmt: str = ".3g") -> str:
    """Render `rows` as a Markdown table with the given columns (missing cells are blank)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


TINY_ENV = "DEEPLAB_FAST_BENCH_TINY"


def tiny_requested() -> bool:
    """True when benchmarks/run.py runs with --tiny (a smoke test): families may then shrink their cases
    further and leave out torch.compile, whose compilation alone takes many seconds per case on a CPU."""
    return os.environ.get(TINY_ENV) == "1"


def proc_status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (e.g. "VmRSS", "VmHWM") in KiB; None where /proc is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (VmHWM) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Progress:
    """A tolerant progress handle that benchmark families receive as `progress`.

    Families may call it as `progress()` / `progress(n)` / `progress("message")`, or use the tqdm-like
    `update(n)`, `set_postfix_str(s)` and `write(s)`. Without a bar underneath it does nothing, so
    families never need to check for None if they wrap it: `progress = progress or Progress(None)`.
    """

    def __init__(self, bar: Any = None, prefix: str = "") -> None:
        self.bar = bar
        self.prefix = prefix

    def __call__(self, arg: int | str | None = None, *_args: Any, **_kwargs: Any) -> None:
        if isinstance(arg, str):
            self.set_postfix_str(arg)
        else:
            self.update(1 if arg is None else arg)

    @property
    def total(self) -> int | None:
        return getattr(self.bar, "total", None)

    @total.setter
    def total(self, value: int | None) -> None:
        if self.bar is not None:
            self.bar.total = value
            self.bar.refresh()

    def set_postfix(self, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()))

    def close(self) -> None:
        """Does nothing: the bar belongs to run.py, which closes it."""

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str((self.prefix + text)[:60], refresh=True)

    def set_description(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
