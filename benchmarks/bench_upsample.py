"""Benchmark family "upsample": fused bilinear resize ops against eager PyTorch and torch.compile.

Cases (DeepLabV3+ at 513x513, output stride 16):
  decoder        upsample_concat: 256 ch 33x33 -> 129x129, concat with 48 ch at 129x129
  aspp_pool      upsample_concat: 4 x 256 ch at 33x33 + the 1x1x256 image-pooling branch broadcast
  predict_voc    upsample_argmax: 21 classes 129x129 -> 513x513
  predict_city   upsample_argmax: 19 classes 129x129 -> 513x513
  predict_city_full  upsample_argmax: 19 classes 257x513 -> 1025x2049 (Cityscapes-size image)
  msaccum_voc    upsample_softmax_accumulate: 21 classes 129x129 -> 513x513 into an fp32 accumulator
Providers: ours-<backend> for every backend (rows with `skipped` set where one cannot run; the CPU backend once
per CPU kernel path this CPU supports, "ours-cpu[default]", "ours-cpu[avx2]", ..., each call forced to its
path and the path restored after it), eager
(F.interpolate + torch.cat / argmax / softmax + add_) and torch.compile of the same eager function.
Each row: median time, GB/s (bytes the op must move: inputs read once, output written once), % of the
copy bandwidth measured in the same run, copy_ratio = time / time of copying the output tensor (the copy
timed in the providers' interleaved rotation: same cache state) and copy_hot_ratio against that copy
timed back to back.

Run alone: python benchmarks/bench_upsample.py [--quick] [--device cpu] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (_HERE, os.path.dirname(_HERE)):  # harness as benchmarks/run.py imports it; the package from here
    if _p not in sys.path:
        sys.path.insert(0, _p)

import harness  # noqa: E402

from deeplab_fast._files import atomic_write_text  # noqa: E402
from deeplab_fast.ops import upsample_argmax, upsample_concat, upsample_softmax_accumulate  # noqa: E402

FAMILY = "upsample"


def _cases(quick: bool) -> list[dict[str, Any]]:
    cases = [
        {"case": "decoder", "op": "concat", "inputs": [(256, 33, 33), (48, 129, 129)], "size": (129, 129)},
        {"case": "aspp_pool", "op": "concat", "inputs": [(256, 33, 33)] * 4 + [(256, 1, 1)], "size": (33, 33)},
        {"case": "predict_voc", "op": "argmax", "inputs": [(21, 129, 129)], "size": (513, 513)},
        {"case": "predict_city", "op": "argmax", "inputs": [(19, 129, 129)], "size": (513, 513)},
        {"case": "predict_city_full", "op": "argmax", "inputs": [(19, 257, 513)], "size": (1025, 2049)},
        {"case": "msaccum_voc", "op": "softmax_accumulate", "inputs": [(21, 129, 129)], "size": (513, 513)},
    ]
    if harness.tiny_requested():  # smoke test: same code paths, small shapes
        return [
            {"case": "decoder_tiny", "op": "concat", "inputs": [(16, 9, 9), (8, 33, 33)], "size": (33, 33)},
            {"case": "predict_tiny", "op": "argmax", "inputs": [(5, 17, 17)], "size": (65, 65)},
            {"case": "msaccum_tiny", "op": "softmax_accumulate", "inputs": [(5, 17, 17)], "size": (65, 65)},
        ]
    if quick:
        cases = [c for c in cases if c["case"] in ("decoder", "aspp_pool", "predict_voc")]
    return cases


def _eager(op: str, size: tuple[int, int]) -> Callable:
    if op == "concat":
        return lambda ts: torch.cat([F.interpolate(t, size=size, mode="bilinear") for t in ts], 1)
    if op == "argmax":
        return lambda ts: F.interpolate(ts[0], size=size, mode="bilinear").argmax(1)

    def accumulate(ts):
        logits, accum = ts
        return accum.add_(torch.softmax(F.interpolate(logits.float(), size=size, mode="bilinear"), 1), alpha=0.5)

    return accumulate


def _ours(op: str, size: tuple[int, int], backend: str) -> Callable:
    if op == "concat":
        return lambda ts: upsample_concat(ts, size, backend=backend)
    if op == "argmax":
        return lambda ts: upsample_argmax(ts[0], size, backend=backend)
    return lambda ts: upsample_softmax_accumulate(ts[0], ts[1], weight=0.5, backend=backend)


def _available(backend: str, device: torch.device, op: str, cpu_path: str | None = None) -> str:
    """Why `backend` cannot run `op` on `device` ("" when it can), asked of the op itself on a tiny input (on the
    CPU kernel path `cpu_path` when given)."""
    if cpu_path:
        try:
            return harness.on_cpu_capability(cpu_path, lambda: _available(backend, device, op))()
        except (RuntimeError, ValueError) as exc:  # the path itself cannot be forced here
            return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if backend == "triton" and device.type != "cuda":
        return "the Triton interpreter on a CPU is a test tool, not a benchmark target"
    if backend == "cuda" and device.type != "cuda":
        return "backend='cuda' needs CUDA tensors: this run is on the CPU"
    x = torch.zeros(1, 2, 3, 3, device=device)
    try:
        if op == "upsample_concat":
            upsample_concat([x], (4, 4), backend=backend)
        elif op == "upsample_argmax":
            upsample_argmax(x, (4, 4), backend=backend)
        else:
            upsample_softmax_accumulate(x, torch.zeros(1, 2, 4, 4, device=device), backend=backend)
    except (RuntimeError, ValueError, TypeError, ImportError) as exc:
        return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ""


def count_steps(quick: bool, batch: int | None) -> int:
    """Progress steps of run(): one per (case, layout)."""
    return len(_cases(quick)) * (1 if quick else 2)


def run(
    device: torch.device,
    dtype: torch.dtype,
    *,
    quick: bool,
    batch: int | None,
    reps: int,
    progress: Callable[[str], None] | None = None,
    budget_s: float | None = None,
    min_reps: int = 5,
) -> list[dict[str, Any]]:
    """Time every case x layout x provider; returns one row per (case, layout, provider).

    reps: timed calls per provider, or with budget_s (seconds per case, layout and provider) the most it
    gets: slow providers get as many as fit, never fewer than min_reps (harness.time_interleaved). Rows
    record `reps`.
    """
    device = torch.device(device)
    n = batch or 1
    bw = harness.measure_bandwidth(device)
    rows: list[dict[str, Any]] = []
    layouts = ["channels_last"] if quick else ["channels_last", "nchw"]
    for spec in _cases(quick):
        op, size = spec["op"], spec["size"]
        op_name = {"concat": "upsample_concat", "argmax": "upsample_argmax"}.get(op, "upsample_softmax_accumulate")
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            ts = [
                torch.randn((n, *s), device=device, dtype=dtype).contiguous(memory_format=fmt) for s in spec["inputs"]
            ]
            if op == "softmax_accumulate":
                ts.append(torch.zeros((n, spec["inputs"][0][0], *size), device=device, dtype=torch.float32))
            eager = _eager(op, size)
            out = eager(ts)
            in_bytes = sum(t.numel() * t.element_size() for t in ts)
            moved = in_bytes + out.numel() * out.element_size() * (2 if op == "softmax_accumulate" else 1)
            # int64 labels are timed as a float32 tensor of the same bytes (copy_time fills with normal_)
            copy_like = out if out.is_floating_point() else out.view(torch.float32)
            copy_hot_s = harness.copy_time(copy_like, device, reps=max(reps, 5))
            providers: dict[str, Callable[[], Any]] = {}
            skipped: dict[str, str] = {}
            warm: dict[str, int] = {}
            for backend in ("cpu", "cuda", "triton"):
                # the CPU kernels on every path this CPU supports ("ours-cpu[avx2]", ...), each call forced to it
                paths = harness.cpu_capabilities(device) if backend == "cpu" else ()
                for path in paths or (None,):
                    name = f"ours-{backend}" + (f"[{path}]" if path else "")
                    why = _available(backend, device, op_name, path)
                    if why:
                        skipped[name] = why
                        continue
                    fn = _ours(op, size, backend)
                    call = lambda fn=fn, ts=ts: fn(ts)  # noqa: E731
                    providers[name] = harness.on_cpu_capability(path, call) if path else call
            providers["eager"] = lambda eager=eager, ts=ts: eager(ts)
            if harness.tiny_requested():
                skipped["torch.compile"] = "left out with --tiny (compilation takes many seconds per case)"
            else:
                try:
                    compiled = torch.compile(eager, fullgraph=True)
                    with torch.no_grad():  # compiled for the mode it is timed in
                        compiled(ts)
                    providers["torch.compile"] = lambda c=compiled, ts=ts: c(ts)
                    warm["torch.compile"] = 1  # compiling it ran it once: one warm-up call done
                except Exception as exc:  # noqa: BLE001  (a baseline that cannot compile is reported, not fatal)
                    skipped["torch.compile"] = f"torch.compile failed: {type(exc).__name__}: {exc}"[:200]
            if progress:
                progress(f"{FAMILY}: {spec['case']} {layout} ({', '.join(providers)})")
            # the copy yardstick runs in the providers' rotation too: the same cache state as theirs
            providers[harness.COPY_PROVIDER] = harness.copy_provider(copy_like)
            warmup = {name: warm.get(name, 2) for name in providers}
            with torch.no_grad():  # inference ops: every provider runs as in a model's eval forward
                times = harness.time_interleaved(
                    providers, device, warmup=warmup, reps=reps, budget_s=budget_s, min_reps=min_reps
                )
            copy_s = harness.median(times.pop(harness.COPY_PROVIDER))
            del providers[harness.COPY_PROVIDER]
            for name in [*providers, *skipped]:
                row = {
                    "family": FAMILY,
                    "case": spec["case"],
                    "provider": name,
                    "cpu_capability": harness.capability_of(name),
                    "dtype": str(dtype).replace("torch.", ""),
                    "layout": layout,
                    "batch": n,
                    "median_ms": None,
                    "gb_s": None,
                    "pct_bw": None,
                    "copy_ratio": None,
                    "reps": len(times[name]) if name in times else None,
                    "copy_ms": copy_s * 1e3,
                    "copy_hot_ms": copy_hot_s * 1e3,
                    "copy_hot_ratio": None,
                    "bw_gb_s": bw,
                    "skipped": skipped.get(name, ""),
                }
                if name in times:
                    t = harness.median(times[name])
                    row["min_ms"] = min(times[name]) * 1e3
                    row.update(
                        median_ms=t * 1e3,
                        gb_s=moved / t / 1e9,
                        pct_bw=100 * moved / t / 1e9 / bw,
                        copy_ratio=t / copy_s,
                        copy_hot_ratio=t / copy_hot_s,
                    )
                rows.append(row)
            # speedups against the two baselines, for the summary
            for row in rows[-len(providers) - len(skipped) :]:
                if row["median_ms"] is not None:
                    for base in ("eager", "torch.compile"):
                        if base in times:
                            row[f"speedup_vs_{base}"] = harness.median(times[base]) * 1e3 / row["median_ms"]
            if progress:
                progress(1)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the family alone and write <out>/upsample.{json,csv,md}."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--stem", default=FAMILY, help="result file name stem (default: upsample)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(
        device,
        getattr(torch, args.dtype),
        quick=args.quick,
        batch=args.batch,
        reps=args.reps,
        progress=lambda msg: isinstance(msg, str) and print(msg, flush=True),
    )
    env = harness.environment(device)
    paths = harness.write_rows(rows, args.out, args.stem, env)
    cols = [
        "case",
        "layout",
        "provider",
        "median_ms",
        "gb_s",
        "pct_bw",
        "copy_ratio",
        "speedup_vs_eager",
        "speedup_vs_torch.compile",
        "skipped",
    ]
    title = f"# upsample benchmarks ({device.type}, {args.dtype}, {torch.get_num_threads()} threads)"
    md = f"{title}\n\n{harness.markdown_table(rows, cols)}\n"
    md_path = os.path.join(args.out, args.stem + ".md")
    atomic_write_text(md_path, md)
    print(md)
    print(f"wrote {paths['json']}, {paths['csv']}, {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
