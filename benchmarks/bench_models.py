"""Model benchmarks: DeepLabV3+ from deeplab_fast (eager, optimize()d, torch.compile of each) against peers.

Peers run on the same input: segmentation_models_pytorch DeepLabV3Plus(resnet101), torchvision
deeplabv3_resnet101 and onnxruntime on an ONNX export of our eager model (CPU, fp32 only). A provider runs in
one dtype: ours in float32 as built, in bfloat16/float16 as `optimize(model, dtype=...)` (BN folded in fp32,
then cast) or the eager model cast with `.to(dtype)`. Every (provider, dtype) of one (model, batch) is timed
interleaved (A B C A B C ...) after warm-up, so optimize() in bf16 and onnxruntime in fp32 meet the same
machine load; rows carry the dtype, the median latency, images/s, multiply-adds, achieved GFLOP/s against a
GEMM peak (of the row's dtype) measured in the same run, peak memory and the speedups of optimize() and
torch.compile(optimize()) of the row's dtype, and of optimize() in bf16, over the provider.

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
# providers that exist only in some dtypes (the others run in every dtype): onnxruntime runs the fp32 export.
# In another dtype such a provider is left out (never a row), and run.py's plan says so.
PROVIDER_DTYPES = {"onnxruntime": ("float32",)}


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


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as the rows' dtype column spells it: torch.bfloat16 -> "bfloat16"."""
    return str(dtype).replace("torch.", "")


def runs_in(provider: str, dtype: torch.dtype | str) -> bool:
    """Whether `provider` exists in `dtype` (onnxruntime: float32 only; the others: every dtype)."""
    name = dtype if isinstance(dtype, str) else dtype_name(dtype)
    return name in PROVIDER_DTYPES.get(provider, (name,))


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
    """Build one provider in `dtype` and its input (in `dtype`); raises with a reason if it cannot run here.

    eager: our eager model of `case` in float32 on `device` (built here if None). Ours in float32 use it as it
    is; in another dtype optimize() gets `dtype=` (BN folded in fp32, then cast once) and the eager providers
    a cast copy. tune_malloc: passed to optimize() (the memory worker turns the process-wide glibc tuning off).
    """
    if not runs_in(provider, dtype):
        raise RuntimeError(f"{provider} runs in {', '.join(PROVIDER_DTYPES[provider])} only")
    side = peer_size(provider, size)
    x = torch.randn(batch, 3, side, side, device=device, dtype=dtype)
    if provider in OURS:
        api, why = our_api()
        if api is None:
            raise RuntimeError(why)
        base = eager if eager is not None else build_ours(case, device, torch.float32)
        layout = "NCHW"
        note = ""
        if provider in ("optimize", "compile_optimize"):
            cast = None if dtype == torch.float32 else dtype
            model = api.optimize(base, tune_malloc=tune_malloc, dtype=cast)
            layout = "channels_last"
            if cast is not None:
                note = f"optimize(model, dtype=torch.{dtype_name(dtype)})"
        else:
            model = base if dtype == torch.float32 else copy.deepcopy(base).to(dtype)
        macs_model = base  # multiply-adds do not depend on the dtype: one count per model
        params = _params_mb(model)
        if provider.startswith("compile"):
            model = torch.compile(model, **compile_options(device))
            note = "; ".join(n for n in (f"torch.compile {compile_label(device)}", note) if n)
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
        "dtype": dtype_name(dtype),
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
        "dtype": dtype_name(dtype),
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
    dtypes: tuple[torch.dtype, ...],
    *,
    size: int,
    batch: int,
    reps: int,
    warmup: int = 1,
    models: tuple[str, ...] = ("resnet101", "xception65"),
    providers: tuple[str, ...] = PROVIDERS,
    memory: tuple[str, ...] = PROVIDERS,
    skip: dict[str, str] | None = None,
    gemm_gflops: dict[str, float] | None = None,
    progress: Any = None,
    work_dir: str | None = None,
    budget_s: float | None = None,
    min_reps: int = 5,
) -> list[dict[str, Any]]:
    """Benchmark every model case x provider x dtype at one (batch, size); returns rows (skipped ones included).

    Args:
        device: where to run. dtypes: the dtypes of the providers (float32/float16/bfloat16); every
            (provider, dtype) of one model is timed in one interleaved rotation.
        size: input side (size x size; smp rounds down to a multiple of 16). batch: images per forward.
        reps: timed forwards per provider, or with budget_s the most a provider gets;
            warmup: untimed forwards before (the first one is reported as first_call_s: it includes
            torch.compile's compilation).
        models: cases of MODELS. providers: which run, each entry a provider name (in every dtype of
            `dtypes` it exists in, see runs_in), optionally "case:" before it (one model only) and/or "@dtype"
            after it (one dtype only, e.g. "optimize@bfloat16"). memory: providers whose memory is measured,
            named the same way (on a CPU each costs a subprocess that builds, and for compiled ones compiles,
            the model again). skip: entries named the same way -> reason: a selected provider that matches
            gets a skipped row with that reason instead of running.
        gemm_gflops: dtype name -> the GEMM peak measured in this run, for pct_gemm. progress:
            harness.Progress or None. work_dir: folder for ONNX exports (a temporary one if None).
        budget_s: seconds of timed forwards per provider: a slow provider gets as many as fit, but at least
            min_reps (harness.time_interleaved); None: exactly `reps` each. The row's `reps` says how many ran.
    """
    progress = progress if progress is not None else harness.Progress(None)
    rows: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="deeplab_fast_bench_") if work_dir is None else None
    work = work_dir if work_dir is not None else tmp.name
    try:
        for case in models:
            entries = wanted(case, tuple(dtypes), providers)
            rows.extend(
                _run_case(
                    case,
                    entries,
                    device,
                    size,
                    batch,
                    reps,
                    warmup,
                    memory,
                    skip or {},
                    gemm_gflops or {},
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


def selected(entries: tuple[str, ...] | dict[str, Any], case: str, provider: str, dtype: str | None = None) -> bool:
    """Whether `provider` of model `case` in `dtype` is named in `entries`.

    An entry is a provider name, optionally with "case:" before it and "@dtype" after it ("optimize",
    "resnet101:onnxruntime", "optimize@bfloat16", "xception65:optimize@bfloat16"). dtype None: an entry with
    any dtype suffix matches.
    """
    for entry in entries:
        name, _, want_dtype = entry.partition("@")
        if name not in (provider, f"{case}:{provider}"):
            continue
        if not want_dtype or dtype is None or want_dtype == dtype:
            return True
    return False


def wanted(case: str, dtypes: tuple[torch.dtype, ...], providers: tuple[str, ...]) -> list[tuple[str, torch.dtype]]:
    """The (provider, dtype) pairs of `case` that `providers` selects, in PROVIDERS order, dtype by dtype."""
    out = []
    for dtype in dtypes:
        for p in PROVIDERS:
            if (
                PEER_BACKBONE.get(p, case) == case
                and runs_in(p, dtype)
                and selected(providers, case, p, dtype_name(dtype))
            ):
                out.append((p, dtype))
    return out


def steps(
    models: tuple[str, ...], providers: tuple[str, ...], dtypes: tuple[torch.dtype, ...], reps: int, warmup: int
) -> int:
    """Progress-bar steps that `run` will report for these arguments (an upper bound)."""
    per_call = 1 + max(warmup, 1) + reps + 1  # build, warm-up, timed calls, memory
    return sum(per_call * len(wanted(case, tuple(dtypes), providers)) for case in models)


def _key(provider: str, dtype: torch.dtype) -> str:
    return f"{provider}@{dtype_name(dtype)}"


def _run_case(
    case: str,
    entries: list[tuple[str, torch.dtype]],
    device: torch.device,
    size: int,
    batch: int,
    reps: int,
    warmup: int,
    memory: tuple[str, ...],
    skip: dict[str, str],
    gemm_gflops: dict[str, float],
    progress: Any,
    work: str,
    budget_s: float | None = None,
    min_reps: int = 5,
) -> list[dict[str, Any]]:
    """Rows of every (provider, dtype) of one model, all timed in one interleaved rotation."""
    rows: dict[str, dict[str, Any]] = {}
    built: dict[str, Built] = {}
    dtype_of = {_key(p, d): d for p, d in entries}
    provider_of = {_key(p, d): p for p, d in entries}
    onnx_path = None
    eager = None
    eager_error = ""

    def skipped(key: str, reason: str) -> None:
        rows[key] = skipped_row(case, provider_of[key], dtype_of[key], batch, size, reason)

    with torch.no_grad():
        if any(p in OURS or p == "onnxruntime" for p, _ in entries):
            progress.set_postfix_str(f"{case}: building")
            api, eager_error = our_api()
            if api is not None:
                try:
                    eager = build_ours(case, device, torch.float32)
                except Exception as exc:  # noqa: BLE001
                    eager_error = "building our model failed: " + _reason(exc)
        for key, p in provider_of.items():
            dtype = dtype_of[key]
            progress.set_postfix_str(f"{case}: {key} build")
            reason = next((why for entry, why in skip.items() if selected((entry,), case, p, dtype_name(dtype))), "")
            try:
                if reason:
                    skipped(key, reason)
                    progress.update(1)
                    continue
                if p in OURS and eager is None:
                    skipped(key, eager_error)
                    progress.update(1)
                    continue
                if p == "onnxruntime":
                    if eager is None:
                        skipped(key, f"no eager model to export: {eager_error}")
                        progress.update(1)
                        continue
                    if device.type != "cpu":
                        raise RuntimeError("onnxruntime is benchmarked on the CPU only")
                    onnx_path = os.path.join(work, f"{case}_b{batch}_{size}.onnx")
                    t0 = time.perf_counter()
                    export_onnx(eager, batch, size, onnx_path)
                    export_s = time.perf_counter() - t0
                b = build_provider(p, case, device, dtype, size, batch, onnx_path=onnx_path, eager=eager)
                if p == "onnxruntime":
                    b.note += f"; export {export_s:.0f} s"
                built[key] = b
            except Exception as exc:  # noqa: BLE001  (listed as skipped with the reason, never hidden)
                skipped(key, _reason(exc))
            progress.update(1)

        # first call alone (it compiles), so a provider that fails there is dropped without stopping the others
        first: dict[str, float] = {}
        for key in list(built):
            progress.set_postfix_str(f"{case}: {key} first call")
            t0 = time.perf_counter()
            try:
                built[key].fn()
                harness.synchronize(device)
            except Exception as exc:  # noqa: BLE001
                skipped(key, "failed on the first call: " + _reason(exc))
                del built[key]
            first[key] = time.perf_counter() - t0
            progress.update(1)

        progress.set_postfix_str(f"{case}: timing {len(built)} providers interleaved")
        failures: dict[str, str] = {}
        times = harness.time_interleaved(
            {key: _guarded(key, b.fn, failures) for key, b in built.items()},
            device,
            warmup=max(warmup - 1, 0),
            reps=reps,
            on_call=lambda _name: progress.update(1),
            budget_s=budget_s,
            min_reps=min_reps,
        )
        for key, why in failures.items():
            skipped(key, "failed while timing: " + why)
            del built[key]

    macs_cache: dict[int, int | None] = {}
    for key, b in built.items():
        p, dname = provider_of[key], dtype_name(dtype_of[key])
        if b.macs_model is not None and id(b.macs_model) not in macs_cache:
            macs_cache[id(b.macs_model)] = count_macs(b.macs_model, batch, b.size)
        macs = macs_cache.get(id(b.macs_model)) if b.macs_model is not None else None
        if p == "onnxruntime" and eager is not None:
            macs = macs_cache.get(id(eager))
            if macs is None and id(eager) not in macs_cache:
                macs = macs_cache[id(eager)] = count_macs(eager, batch, b.size)
        med = harness.median(times[key])
        gflops = 2 * macs / med / 1e9 if macs else None
        peak = gemm_gflops.get(dname)
        rows[key] = {
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
            "min_ms": min(times[key]) * 1e3,
            "reps": len(times[key]),
            "first_call_s": first.get(key),
            "images_s": batch / med,
            "gmacs": macs / 1e9 if macs else None,
            "gflop_s": gflops,
            "pct_gemm": 100 * gflops / peak if gflops and peak else None,
            "params_mb": b.params_mb,
            "peak_mem_mb": None,
            "mem_method": "",
            "note": b.note,
            "skipped": "",
        }

    # memory after timing, so the subprocesses never overlap a timed call
    for key in list(built):
        p, dtype = provider_of[key], dtype_of[key]
        row = rows[key]
        if not selected(memory, case, p, dtype_name(dtype)):
            row["mem_method"] = "not measured in this suite"
            progress.update(1)
            continue
        progress.set_postfix_str(f"{case}: {key} memory")
        if device.type == "cuda":
            with torch.no_grad():
                row["peak_mem_mb"] = _mem_cuda(built[key].fn)
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
    add_speedups(list(rows.values()))
    return [rows[key] for key in provider_of if key in rows]


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Set each row's `<target>_speedup` = its time / the time of our `target` provider, for the rows of one
    model and batch (timed together).

    optimize_speedup and compile_optimize_speedup compare with our provider in the row's own dtype (like for
    like); optimize_bf16_speedup with optimize() in bfloat16 (e.g. onnxruntime fp32 against our bf16 model).
    None where either side did not run.
    """
    ref = {(r.get("provider_key"), r.get("dtype")): r.get("median_ms") for r in rows if not r.get("skipped")}
    for row in rows:
        t = row.get("median_ms")
        for column, target, dtype in (
            ("optimize_speedup", "optimize", row.get("dtype")),
            ("compile_optimize_speedup", "compile_optimize", row.get("dtype")),
            ("optimize_bf16_speedup", "optimize", "bfloat16"),
        ):
            base = ref.get((target, dtype))
            row[column] = t / base if base and t else None


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
