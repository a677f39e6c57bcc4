"""Model benchmarks: DeepLabV3+ from deeplab_fast (eager, optimize()d, torch.compile of each) against peers.

Peers run on the same input: segmentation_models_pytorch DeepLabV3Plus(resnet101), torchvision
deeplabv3_resnet101 and onnxruntime on an ONNX export of our eager model (CPU only). Every provider of one
(model, batch, dtype) is timed interleaved (A B C A B C ...) after warm-up; rows carry the median latency,
images/s, multiply-adds, achieved GFLOP/s against a GEMM peak measured in the same run, peak memory and the
speedups of optimize() and torch.compile(optimize()) over the provider.

Memory on a CPU is measured in a fresh subprocess per provider (this file with --memory-worker): after one
warm-up forward the kernel's peak-RSS counter is reset (/proc/self/clear_refs), and the peak RSS growth of
one more forward is reported, with glibc told to return large blocks to the OS at once
(MALLOC_MMAP_THRESHOLD_) so that freed activations cannot hide in malloc's heap. It is the working memory
of one inference (activations, workspaces), not the weights, which are reported apart (params_mb).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# model case -> arguments of deeplab_fast.models.deeplabv3plus. ResNet-101 uses separable ASPP and
# decoder convolutions too, which is also what smp's DeepLabV3Plus builds, so the two compare like for like.
MODELS: dict[str, dict[str, Any]] = {
    "resnet101": {"backbone": "resnet101", "separable": True, "output_stride": 16},
    "xception65": {"backbone": "xception65", "separable": True, "output_stride": 16},
}
NUM_CLASSES = 21

PROVIDERS = ("eager", "optimize", "compile", "compile_optimize", "smp", "torchvision", "onnxruntime")
OURS = ("eager", "optimize", "compile", "compile_optimize")
LABELS = {
    "eager": "deeplab_fast eager",
    "optimize": "deeplab_fast optimize()",
    "compile": "torch.compile(eager)",
    "compile_optimize": "torch.compile(optimize())",
    "smp": "smp DeepLabV3Plus",
    "torchvision": "torchvision deeplabv3",
    "onnxruntime": "onnxruntime (ONNX of eager)",
}
# peers that exist only for one backbone
PEER_BACKBONE = {"smp": "resnet101", "torchvision": "resnet101"}


@dataclass
class Built:
    """A provider ready to time: `fn()` runs one forward on its input."""

    fn: Callable[[], Any]
    size: tuple[int, int]
    layout: str
    macs_model: torch.nn.Module | None
    params_mb: float | None
    note: str = ""
    keep: list[Any] = field(default_factory=list)


def our_api() -> tuple[Any, str]:
    """(deeplab_fast module with models and optimize, "") or (None, why they are unavailable)."""
    try:
        import deeplab_fast
        from deeplab_fast.models import deeplabv3plus  # noqa: F401

        deeplab_fast.optimize  # noqa: B018  (load it now, so a missing module is reported here)
    except Exception as exc:  # noqa: BLE001  (any failure means the provider cannot run; say why)
        return None, f"deeplab_fast.models is not available in this checkout ({exc})"
    return deeplab_fast, ""


def compile_options(device: torch.device) -> dict[str, Any]:
    """How torch.compile is called: freezing on a CPU (folds BN into weights), max-autotune on a GPU."""
    if device.type == "cuda":
        return {"mode": "max-autotune"}
    return {"options": {"freezing": True}}


def compile_label(device: torch.device) -> str:
    """Short description of the torch.compile settings, for notes."""
    return 'mode="max-autotune"' if device.type == "cuda" else "freezing=True"


def _params_mb(model: torch.nn.Module) -> float:
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total / 2**20


def build_ours(case: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """Our eager DeepLabV3+ for `case` (random weights from `seed`), eval mode, on `device` in `dtype`."""
    api, why = our_api()
    if api is None:
        raise RuntimeError(why)
    torch.manual_seed(seed)
    model = api.models.deeplabv3plus(num_classes=NUM_CLASSES, **MODELS[case])
    return model.eval().to(device=device, dtype=dtype)


def peer_size(provider: str, size: int) -> int:
    """Input side a provider runs at: smp needs sides divisible by 16 (we round down: 513 -> 512)."""
    return size - size % 16 if provider == "smp" else size


def build_provider(
    provider: str,
    case: str,
    device: torch.device,
    dtype: torch.dtype,
    size: int,
    batch: int,
    *,
    onnx_path: str | None = None,
    eager: torch.nn.Module | None = None,
    tune_malloc: bool = True,
) -> Built:
    """Build one provider and its input; raises with a reason if it cannot run here.

    tune_malloc: passed to optimize() (the memory worker turns the process-wide glibc tuning off).
    """
    side = peer_size(provider, size)
    x = torch.randn(batch, 3, side, side, device=device, dtype=dtype)
    if provider in OURS:
        api, why = our_api()
        if api is None:
            raise RuntimeError(why)
        model = eager if eager is not None else build_ours(case, device, dtype)
        layout = "NCHW"
        note = ""
        if provider in ("optimize", "compile_optimize"):
            model = api.optimize(copy.deepcopy(model), tune_malloc=tune_malloc)
            layout = "channels_last"
        macs_model = eager if eager is not None else model
        params = _params_mb(model)
        if provider.startswith("compile"):
            model = torch.compile(model, **compile_options(device))
            note = f"torch.compile {compile_label(device)}"
        return Built(lambda: model(x), (side, side), layout, macs_model, params, note, [model, x])
    if provider == "smp":
        try:
            import segmentation_models_pytorch as smp
        except ImportError as exc:
            raise RuntimeError(f"segmentation_models_pytorch is not installed ({exc})") from exc
        torch.manual_seed(0)
        model = smp.DeepLabV3Plus(
            encoder_name="resnet101", encoder_weights=None, encoder_output_stride=16, classes=NUM_CLASSES
        )
        model = model.eval().to(device=device, dtype=dtype)
        note = f"input {side}x{side}: smp needs sides divisible by 16" if side != size else ""
        return Built(lambda: model(x), (side, side), "NCHW", model, _params_mb(model), note, [model, x])
    if provider == "torchvision":
        try:
            from torchvision.models.segmentation import deeplabv3_resnet101
        except ImportError as exc:
            raise RuntimeError(f"torchvision is not installed ({exc})") from exc
        torch.manual_seed(0)
        model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)
        model = model.eval().to(device=device, dtype=dtype)
        note = "DeepLabV3 (no decoder) at output stride 8: more work than V3+ at 16"
        return Built(lambda: model(x)["out"], (side, side), "NCHW", model, _params_mb(model), note, [model, x])
    if provider == "onnxruntime":
        if device.type != "cpu":
            raise RuntimeError("onnxruntime is benchmarked on the CPU only (CPUExecutionProvider)")
        if dtype != torch.float32:
            raise RuntimeError("onnxruntime runs the fp32 export only")
        if onnx_path is None or not os.path.exists(onnx_path):
            raise RuntimeError("no ONNX export of the eager model")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if os.environ.get("DEEPLAB_FAST_BENCH_ORT_NO_ARENA") == "1":
            # memory worker: without the arena, freed buffers go back to malloc and the peak is measurable
            options.enable_cpu_mem_arena = False
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        feed = {name: x.numpy()}
        note = f"CPUExecutionProvider, intra_op_num_threads={options.intra_op_num_threads}"
        return Built(lambda: session.run(None, feed), (side, side), "NCHW", None, None, note, [session, feed])
    raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


def export_onnx(model: torch.nn.Module, batch: int, size: int, path: str) -> None:
    """Export our eager fp32 CPU model to ONNX at a fixed input shape (TorchScript exporter; falls back to dynamo)."""
    x = torch.randn(batch, 3, size, size)
    errors = []
    for dynamo in (False, True):
        try:
            # the exporters warn (deprecation) and print progress on stdout, where the summary goes
            with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), path, dynamo=dynamo, opset_version=18, input_names=["image"])
            return
        except Exception as exc:  # noqa: BLE001  (try the other exporter, report both if both fail)
            errors.append(f"dynamo={dynamo}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise RuntimeError("torch.onnx.export failed: " + "; ".join(errors))


def count_macs(model: torch.nn.Module, batch: int, size: tuple[int, int]) -> int | None:
    """Multiply-adds of one forward of `batch` images, with deeplab_fast.count_macs; None if it cannot count."""
    try:
        import deeplab_fast

        macs = deeplab_fast.count_macs(model, (batch, 3, *size))
    except Exception:  # noqa: BLE001  (a peer model it cannot walk: leave the cell blank)
        return None
    if isinstance(macs, dict):
        macs = macs.get("total", macs.get("macs"))
    try:
        return int(macs)
    except (TypeError, ValueError):
        return None


def layout_of(provider: str) -> str:
    """Memory format a provider's activations use."""
    return "channels_last" if provider in ("optimize", "compile_optimize") else "NCHW"


def skipped_row(case: str, provider: str, dtype: torch.dtype, batch: int, size: int, reason: str) -> dict[str, Any]:
    """A row for a provider that did not run, with the reason."""
    return {
        "part": "models",
        "family": "models",
        "case": f"{case} {size}x{size}",
        "model": case,
        "provider": LABELS[provider],
        "provider_key": provider,
        "dtype": str(dtype).replace("torch.", ""),
        "layout": layout_of(provider),
        "batch": batch,
        "input": "",
        "median_ms": None,
        "skipped": reason,
    }


def _mem_cuda(fn: Callable[[], Any]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


CUDA_MEM_METHOD = "torch.cuda.max_memory_allocated growth over one forward (caching allocator only)"
CPU_MEM_METHOD = "peak RSS growth of one forward after warm-up (/proc VmHWM, fresh subprocess)"


def memory_in_subprocess(
    provider: str, case: str, dtype: torch.dtype, size: int, batch: int, onnx_path: str | None, timeout: float = 900.0
) -> tuple[float | None, str]:
    """Run the memory worker for one CPU provider; (MiB, "") or (None, why not)."""
    spec = {
        "provider": provider,
        "case": case,
        "dtype": str(dtype).replace("torch.", ""),
        "size": size,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "onnx_path": onnx_path,
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    # recycling allocators hide a forward's peak from the RSS growth: onnxruntime's arena, and for ours
    # optimize()'s glibc tuning and the op output pool, are all off in the memory worker
    env["DEEPLAB_FAST_BENCH_ORT_NO_ARENA"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__)), "--memory-worker", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, f"memory worker timed out after {timeout:.0f} s"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"memory worker failed: {tail[:200]}"
    result = json.loads(lines[-1])
    return result.get("peak_mb"), result.get("error", "")


def _memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(int(spec["threads"]))
    api, _ = our_api()
    if api is not None:
        api.configure(cpu_output_pool_mb=0)
    dtype = getattr(torch, spec["dtype"])
    device = torch.device("cpu")
    with torch.no_grad():
        built = build_provider(
            spec["provider"],
            spec["case"],
            device,
            dtype,
            int(spec["size"]),
            int(spec["batch"]),
            onnx_path=spec.get("onnx_path"),
            tune_malloc=False,
        )
        built.fn()  # warm-up: lazy initialisation, compilation, oneDNN primitive caches
        if not harness.reset_peak_rss():
            return {"peak_mb": None, "error": "cannot reset the peak RSS (/proc/self/clear_refs)"}
        before = harness.proc_status_kib("VmRSS")
        built.fn()
        peak = harness.proc_status_kib("VmHWM")
    if before is None or peak is None:
        return {"peak_mb": None, "error": "/proc/self/status is unavailable"}
    return {"peak_mb": (peak - before) / 1024}


def run(
    device: torch.device,
    dtype: torch.dtype,
    *,
    size: int,
    batch: int,
    reps: int,
    warmup: int = 1,
    models: tuple[str, ...] = ("resnet101", "xception65"),
    providers: tuple[str, ...] = PROVIDERS,
    memory: tuple[str, ...] = PROVIDERS,
    gemm_gflops: float | None = None,
    progress: Any = None,
    work_dir: str | None = None,
    budget_s: float | None = None,
    min_reps: int = 5,
) -> list[dict[str, Any]]:
    """Benchmark every model case x provider at one (dtype, batch, size); returns rows (skipped ones included).

    Args:
        device: where to run. dtype: float32/float16/bfloat16 for models and inputs.
        size: input side (size x size; smp rounds down to a multiple of 16). batch: images per forward.
        reps: timed forwards per provider (interleaved), or with budget_s the most a provider gets;
            warmup: untimed forwards before (the first one is reported as first_call_s: it includes
            torch.compile's compilation).
        models: cases of MODELS. providers: which run, each a name of PROVIDERS or "case:provider" (one
            model only). memory: providers whose memory is measured, named the same way
            (on a CPU each costs a subprocess that builds, and for compiled ones compiles, the model again).
        gemm_gflops: the GEMM peak measured in this run, for pct_gemm. progress: harness.Progress or None.
        work_dir: folder for ONNX exports (a temporary one if None).
        budget_s: seconds of timed forwards per provider: a slow provider gets as many as fit, but at least
            min_reps (harness.time_interleaved); None: exactly `reps` each. The row's `reps` says how many ran.
    """
    progress = progress if progress is not None else harness.Progress(None)
    dname = str(dtype).replace("torch.", "")
    rows: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="deeplab_fast_bench_") if work_dir is None else None
    work = work_dir if work_dir is not None else tmp.name
    try:
        for case in models:
            rows.extend(
                _run_case(
                    case,
                    device,
                    dtype,
                    dname,
                    size,
                    batch,
                    reps,
                    warmup,
                    providers,
                    memory,
                    gemm_gflops,
                    progress,
                    work,
                    budget_s,
                    min_reps,
                )
            )
    finally:
        if tmp is not None:
            tmp.cleanup()
    return rows


def selected(entries: tuple[str, ...], case: str, provider: str) -> bool:
    """Whether `provider` of model `case` is in `entries` (each a provider name or "case:provider")."""
    return provider in entries or f"{case}:{provider}" in entries


def steps(models: tuple[str, ...], providers: tuple[str, ...], reps: int, warmup: int) -> int:
    """Progress-bar steps that `run` will report for these arguments (an upper bound)."""
    per_case = 0
    for case in models:
        for p in PROVIDERS:
            if PEER_BACKBONE.get(p, case) == case and selected(providers, case, p):
                per_case += 1 + max(warmup, 1) + reps + 1  # build, warm-up, timed calls, memory
    return per_case


def _run_case(
    case,
    device,
    dtype,
    dname,
    size,
    batch,
    reps,
    warmup,
    providers,
    memory,
    gemm_gflops,
    progress,
    work,
    budget_s=None,
    min_reps=5,
) -> list[dict[str, Any]]:
    wanted = [p for p in PROVIDERS if PEER_BACKBONE.get(p, case) == case and selected(providers, case, p)]
    rows: dict[str, dict[str, Any]] = {}
    built: dict[str, Built] = {}
    onnx_path = None
    eager = None
    eager_error = ""
    with torch.no_grad():
        if any(p in OURS or p == "onnxruntime" for p in wanted):
            progress.set_postfix_str(f"{case}: building")
            api, eager_error = our_api()
            if api is not None:
                try:
                    eager = build_ours(case, device, dtype)
                except Exception as exc:  # noqa: BLE001
                    eager_error = "building our model failed: " + _reason(exc)
        for p in wanted:
            progress.set_postfix_str(f"{case}: {p} build")
            try:
                if p in OURS and eager is None:
                    rows[p] = skipped_row(case, p, dtype, batch, size, eager_error)
                    progress.update(1)
                    continue
                if p == "onnxruntime":
                    if eager is None:
                        rows[p] = skipped_row(case, p, dtype, batch, size, f"no eager model to export: {eager_error}")
                        progress.update(1)
                        continue
                    if device.type != "cpu" or dtype != torch.float32:
                        raise RuntimeError("onnxruntime is benchmarked on the CPU in fp32 only")
                    onnx_path = os.path.join(work, f"{case}_b{batch}_{size}.onnx")
                    t0 = time.perf_counter()
                    export_onnx(eager, batch, size, onnx_path)
                    export_s = time.perf_counter() - t0
                b = build_provider(p, case, device, dtype, size, batch, onnx_path=onnx_path, eager=eager)
                if p == "onnxruntime":
                    b.note += f"; export {export_s:.0f} s"
                built[p] = b
            except Exception as exc:  # noqa: BLE001  (listed as skipped with the reason, never hidden)
                rows[p] = skipped_row(case, p, dtype, batch, size, _reason(exc))
            progress.update(1)

        # first call alone (it compiles), so a provider that fails there is dropped without stopping the others
        first: dict[str, float] = {}
        for p in list(built):
            progress.set_postfix_str(f"{case}: {p} first call")
            t0 = time.perf_counter()
            try:
                built[p].fn()
                harness.synchronize(device)
            except Exception as exc:  # noqa: BLE001
                rows[p] = skipped_row(case, p, dtype, batch, size, "failed on the first call: " + _reason(exc))
                del built[p]
            first[p] = time.perf_counter() - t0
            progress.update(1)

        progress.set_postfix_str(f"{case}: timing {len(built)} providers interleaved")
        failures: dict[str, str] = {}
        times = harness.time_interleaved(
            {p: _guarded(p, b.fn, failures) for p, b in built.items()},
            device,
            warmup=max(warmup - 1, 0),
            reps=reps,
            on_call=lambda _name: progress.update(1),
            budget_s=budget_s,
            min_reps=min_reps,
        )
        for p, why in failures.items():
            rows[p] = skipped_row(case, p, dtype, batch, size, "failed while timing: " + why)
            del built[p]

    macs_cache: dict[int, int | None] = {}
    for p, b in built.items():
        key = id(b.macs_model)
        if b.macs_model is not None and key not in macs_cache:
            macs_cache[key] = count_macs(b.macs_model, batch, b.size)
        macs = macs_cache.get(key) if b.macs_model is not None else None
        if p == "onnxruntime" and "eager" in built:
            macs = macs_cache.get(id(built["eager"].macs_model))
        med = harness.median(times[p])
        gflops = 2 * macs / med / 1e9 if macs else None
        rows[p] = {
            "part": "models",
            "family": "models",
            "case": f"{case} {size}x{size}",
            "model": case,
            "provider": LABELS[p],
            "provider_key": p,
            "dtype": dname,
            "layout": b.layout,
            "batch": batch,
            "input": f"{b.size[0]}x{b.size[1]}",
            "median_ms": med * 1e3,
            "min_ms": min(times[p]) * 1e3,
            "reps": len(times[p]),
            "first_call_s": first.get(p),
            "images_s": batch / med,
            "gmacs": macs / 1e9 if macs else None,
            "gflop_s": gflops,
            "pct_gemm": 100 * gflops / gemm_gflops if gflops and gemm_gflops else None,
            "params_mb": b.params_mb,
            "peak_mem_mb": None,
            "mem_method": "",
            "note": b.note,
            "skipped": "",
        }

    # memory after timing, so the subprocesses never overlap a timed call
    for p in list(built):
        row = rows[p]
        if not selected(memory, case, p):
            row["mem_method"] = "not measured in this suite"
            progress.update(1)
            continue
        progress.set_postfix_str(f"{case}: {p} memory")
        if device.type == "cuda":
            with torch.no_grad():
                row["peak_mem_mb"] = _mem_cuda(built[p].fn)
            row["mem_method"] = CUDA_MEM_METHOD
        else:
            mb, err = memory_in_subprocess(p, case, dtype, size, batch, onnx_path)
            row["peak_mem_mb"] = mb
            off = {"onnxruntime": " (onnxruntime arena off)"}.get(p, "")
            if p in OURS:
                off = " (deeplab_fast malloc tuning and output pool off)"
            row["mem_method"] = CPU_MEM_METHOD + off
            if err:
                row["mem_method"] = err
        progress.update(1)
    built.clear()

    for target in ("optimize", "compile_optimize"):
        ref = rows.get(target, {}).get("median_ms")
        for row in rows.values():
            t = row.get("median_ms")
            row[f"{target}_speedup"] = t / ref if ref and t else None
    return [rows[p] for p in wanted if p in rows]


def _guarded(name: str, fn: Callable[[], Any], failures: dict[str, str]) -> Callable[[], Any]:
    """`fn` that records its first exception in `failures[name]` and then does nothing (so the others go on)."""

    def call() -> Any:
        if name in failures:
            return None
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001  (e.g. out of memory at batch 8: reported as skipped)
            failures[name] = _reason(exc)
            return None

    return call


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        try:
            out = _memory_worker(json.loads(sys.argv[2]))
        except Exception as exc:  # noqa: BLE001  (reported to the parent as the reason)
            out = {"peak_mb": None, "error": "memory worker: " + _reason(exc)}
        print(json.dumps(out))
        sys.exit(0)
    print("bench_models.py is driven by benchmarks/run.py (python benchmarks/run.py --only models)", file=sys.stderr)
    sys.exit(2)
