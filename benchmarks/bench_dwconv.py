"""Benchmark family `dwconv`: fused atrous depthwise conv + BN + ReLU on DeepLabV3+ shapes (513x513 input).

Providers: our backends (cpu / cuda / triton, each where it runs; the CPU backend once per CPU kernel path
this CPU supports, "deeplab_fast-cpu[default]", "deeplab_fast-cpu[avx2]", ..., each call forced to its path
and the path restored after it), the eager chain conv2d(groups=C) + batch_norm + relu in NCHW and
channels_last (oneDNN on a CPU, cuDNN on a GPU), and torch.compile of that chain (default, and with
freezing, which folds BN into the conv). Every row reports the median time, GB/s
of the ideal traffic (read x once, write y once), % of the copy bandwidth measured in this run, and
copy_ratio = time / time of a copy of the output tensor (same shape and layout), the copy timed in the
providers' interleaved rotation (same cache state), and copy_hot_ratio against that copy timed back to back.

Run alone: `python benchmarks/bench_dwconv.py [--full] [--batch N] [--reps R] [--threads T]` prints a
Markdown table and writes CSV/JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from deeplab_fast.ops import dwconv_bn_act, fold_bn  # noqa: E402

FAMILY = "dwconv"


@dataclass(frozen=True)
class Case:
    """One depthwise layer of DeepLabV3+ (Xception-65 backbone, output stride 16) at 513x513."""

    name: str
    channels: int
    size: int
    stride: int
    dilation: int


CASES = (
    Case("aspp33_r6", 2048, 33, 1, 6),
    Case("aspp33_r12", 2048, 33, 1, 12),
    Case("aspp33_r18", 2048, 33, 1, 18),
    Case("aspp65_r12", 2048, 65, 1, 12),
    Case("aspp65_r24", 2048, 65, 1, 24),
    Case("aspp65_r36", 2048, 65, 1, 36),
    Case("decoder304_129", 304, 129, 1, 1),
    Case("decoder256_129", 256, 129, 1, 1),
    Case("xc_entry1_128_257", 128, 257, 1, 1),
    Case("xc_entry1_128_257_s2", 128, 257, 2, 1),
    Case("xc_entry2_256_129", 256, 129, 1, 1),
    Case("xc_entry2_256_129_s2", 256, 129, 2, 1),
    Case("xc_entry3_728_65", 728, 65, 1, 1),
    Case("xc_entry3_728_65_s2", 728, 65, 2, 1),
    Case("xc_middle_728_33", 728, 33, 1, 1),
    Case("xc_exit_1024_33_d2", 1024, 33, 1, 2),
    Case("xc_exit_1536_33_d2", 1536, 33, 1, 2),
)
TINY = (Case("tiny_aspp_r12", 64, 17, 1, 12), Case("tiny_s2", 32, 33, 2, 1))
# The quick suite: the ASPP at both map sizes (a small and the largest rate), the decoder, a strided and a
# middle-flow Xception layer. aspp33_r18 and the plain torch.compile provider are full-suite only: on a fresh
# machine every torch.compile of a case compiles from a cold cache, which dominates the quick suite's time.
QUICK = ("aspp33_r6", "aspp65_r36", "decoder304_129", "xc_entry2_256_129_s2", "xc_middle_728_33")
QUICK_COMPILE = ("torch.compile+freezing",)


def chosen_cases(quick: bool, cases: tuple[str, ...] | None = None) -> list[Case]:
    """The cases a run times: `cases` by name, else QUICK or all of CASES (--tiny: TINY)."""
    if harness.tiny_requested():
        return list(TINY)
    return [c for c in CASES if (cases and c.name in cases) or (not cases and (not quick or c.name in QUICK))]


def count_steps(quick: bool, batch: int | None) -> int:
    """Progress steps of run(): one per (batch, case)."""
    return len(chosen_cases(quick)) * len([batch] if batch else ([1] if quick else [1, 4]))


def _probe(backend: str, device: torch.device, cpu_path: str | None = None) -> str:
    """Why `backend` cannot run dwconv_bn_act on `device` ("" when it can), asked of the op itself (on the CPU
    kernel path `cpu_path` when given)."""
    if backend == "triton" and device.type != "cuda":
        return "the Triton interpreter on a CPU is a test tool, not a benchmark target"
    if backend == "cuda" and device.type != "cuda":
        return "backend='cuda' needs CUDA tensors: this run is on the CPU"
    x = torch.zeros(1, 8, 5, 5, device=device)
    w = torch.zeros(8, 1, 3, 3, device=device)
    s = torch.ones(8, device=device)

    def call() -> torch.Tensor:
        return dwconv_bn_act(x, w, s, s, stride=1, dilation=1, activation="relu", backend=backend)

    try:
        (harness.on_cpu_capability(cpu_path, call) if cpu_path else call)()
    except (RuntimeError, ValueError, TypeError, ImportError) as exc:
        return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ""


def _chain(case: Case, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The eager baseline: depthwise conv, BatchNorm (random eval statistics), ReLU."""
    c = case.channels
    block = nn.Sequential(
        nn.Conv2d(c, c, 3, case.stride, padding=case.dilation, dilation=case.dilation, groups=c, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
    )
    with torch.no_grad():
        block[1].running_mean.normal_()
        block[1].running_var.uniform_(0.5, 2.0)
        block[1].weight.normal_()
        block[1].bias.normal_()
    return block.eval().to(device=device, dtype=dtype)


def _compiled(block: nn.Module, x: torch.Tensor, freezing: bool) -> Callable[[], torch.Tensor]:
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch(freezing=freezing), torch.no_grad():
        fn = torch.compile(block)
        fn(x)  # compile now, under the config
    return lambda: fn(x)


def _providers(
    case: Case, x_nchw: torch.Tensor, block: nn.Module, quick: bool
) -> dict[str, tuple[str, Callable | str]]:
    """name -> (layout, callable or the reason it cannot run)."""
    device = x_nchw.device
    x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
    weight = block[0].weight.detach()
    scale, shift = fold_bn(block[1])
    scale, shift = scale.to(x_nchw.dtype), shift.to(x_nchw.dtype)
    kw = dict(stride=case.stride, dilation=case.dilation, activation="relu")
    out: dict[str, tuple[str, Callable | str]] = {}
    for backend in ("cpu", "cuda", "triton"):
        # the CPU kernels on every path this CPU supports ("deeplab_fast-cpu[avx2]", ...), each call forced
        # to its path; on a GPU run the CPU backend is one skipped provider
        paths = harness.cpu_capabilities(device) if backend == "cpu" else ()
        for path in paths or (None,):
            why = _probe(backend, device, path)
            name = f"deeplab_fast-{backend}" + (f"[{path}]" if path else "")
            for layout, x in (("channels_last", x_cl), ("nchw", x_nchw)):
                fn = lambda x=x, b=backend: dwconv_bn_act(x, weight, scale, shift, **kw, backend=b)
                if path:
                    fn = harness.on_cpu_capability(path, fn)
                out[f"{name}|{layout}"] = (layout, why or fn)
    base = harness.baseline_name(device)
    cl_block = block.to(memory_format=torch.channels_last)
    out[f"{base} eager|nchw"] = ("nchw", lambda: block(x_nchw))
    out[f"{base} eager|channels_last"] = ("channels_last", lambda: cl_block(x_cl))
    for name, freezing in (("torch.compile", False), ("torch.compile+freezing", True)):
        if not quick or name in QUICK_COMPILE:
            out[f"{name}|channels_last"] = ("channels_last", ("compile", freezing))
    return out


def run(
    device: torch.device,
    dtype: torch.dtype,
    *,
    quick: bool,
    batch: int | None,
    reps: int,
    progress: Callable[[str], None] | None = None,
    cases: tuple[str, ...] | None = None,
    compile_providers: bool = True,
    budget_s: float | None = None,
    min_reps: int = 5,
) -> list[dict]:
    """Time every provider on every case; rows as described in the module docstring.

    quick: batch 1 and the QUICK subset; batch overrides the batches (default 1 and 4); cases picks cases
    by name; compile_providers=False leaves the torch.compile rows out as skipped (they compile per shape).
    reps: timed calls per provider, or with budget_s (seconds per case and provider) the most it gets: slow
    providers get as many as fit, never fewer than min_reps (harness.time_interleaved). Rows record `reps`.
    """
    device = torch.device(device)
    tiny = harness.tiny_requested()  # benchmarks/run.py --tiny: a smoke test, tiny cases and no compile
    batches = [batch] if batch else ([1] if quick else [1, 4])
    chosen = chosen_cases(quick, cases)
    if tiny:
        compile_providers = False
    bandwidth = harness.measure_bandwidth(device, nbytes=(16 if tiny else 256) * 2**20)
    rows: list[dict] = []
    for n in batches:
        for case in chosen:
            if progress:
                progress(f"{FAMILY}: {case.name} batch {n}")
            x = torch.randn(n, case.channels, case.size, case.size, device=device, dtype=dtype)
            block = _chain(case, dtype, device)
            runnable: dict[str, Callable] = {}
            meta: dict[str, tuple[str, str]] = {}
            with torch.no_grad():
                for key, (layout, impl) in _providers(case, x, block, quick).items():
                    if isinstance(impl, str):
                        meta[key] = (layout, impl)
                        continue
                    if isinstance(impl, tuple):
                        if not compile_providers:
                            why = "--tiny run (compiling takes minutes on a CPU)" if tiny else "disabled for this run"
                            meta[key] = (layout, f"torch.compile providers {why}")
                            continue
                        freezing = impl[1]
                        src = block.to(memory_format=torch.channels_last)
                        try:
                            impl = _compiled(src, x.contiguous(memory_format=torch.channels_last), freezing)
                        except Exception as exc:  # report, never hide, a provider that cannot run
                            meta[key] = (layout, f"torch.compile failed: {type(exc).__name__}: {exc}"[:200])
                            continue
                    runnable[key] = impl
                    meta[key] = (layout, "")
                y = block(x)
                like = {"nchw": y, "channels_last": y.contiguous(memory_format=torch.channels_last)}
                # the copy yardstick runs in the providers' rotation (same cache state as theirs) ...
                copy_keys = {layout: f"{harness.COPY_PROVIDER}|{layout}" for layout in like}
                for layout, key in copy_keys.items():
                    runnable[key] = harness.copy_provider(like[layout])
                # a compiled provider has run once already (compiling it), which counts as a warm-up call
                warmup = {k: 1 if k.startswith("torch.compile") else 2 for k in runnable}
                times = harness.time_interleaved(
                    runnable, device, warmup=warmup, reps=reps, budget_s=budget_s, min_reps=min_reps
                )
                copy = {layout: harness.median(times.pop(key)) for layout, key in copy_keys.items()}
                # ... and back to back as well (a map that fits in L3 then copies from L3)
                copy_hot = {layout: harness.copy_time(t, device, reps=max(reps, 5)) for layout, t in like.items()}
            nbytes = (x.numel() + y.numel()) * x.element_size()
            for key, (layout, skipped) in meta.items():
                provider = key.split("|")[0]
                row = {
                    "family": FAMILY,
                    "case": case.name,
                    "provider": provider,
                    "cpu_capability": harness.capability_of(provider),
                    "dtype": str(dtype).replace("torch.", ""),
                    "layout": layout,
                    "batch": n,
                    "channels": case.channels,
                    "size": case.size,
                    "stride": case.stride,
                    "dilation": case.dilation,
                    "median_ms": None,
                    "gb_s": None,
                    "pct_bw": None,
                    "copy_ms": copy[layout] * 1e3,
                    "copy_hot_ms": copy_hot[layout] * 1e3,
                    "copy_ratio": None,
                    "copy_hot_ratio": None,
                    "reps": None,
                    "skipped": skipped,
                }
                if not skipped:
                    t = harness.median(times[key])
                    row.update(
                        reps=len(times[key]),
                        median_ms=t * 1e3,
                        gb_s=nbytes / t / 1e9,
                        pct_bw=100 * nbytes / t / 1e9 / bandwidth,
                        copy_ratio=t / copy[layout],
                        copy_hot_ratio=t / copy_hot[layout],
                    )
                rows.append(row)
            if progress:
                progress(1)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--full", action="store_true", help="every case, batches 1 and 4")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on a CPU")
    parser.add_argument("--cases", default=None, help="comma-separated case names")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile providers")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = run(
        device,
        getattr(torch, args.dtype),
        quick=not args.full,
        batch=args.batch,
        reps=args.reps,
        progress=lambda msg: isinstance(msg, str) and print(msg, file=sys.stderr, flush=True),
        cases=tuple(args.cases.split(",")) if args.cases else None,
        compile_providers=not args.no_compile,
    )
    columns = ["case", "batch", "provider", "layout", "median_ms", "gb_s", "pct_bw", "copy_ratio", "skipped"]
    print(harness.markdown_table(rows, columns))
    paths = harness.write_rows(rows, args.out, f"{FAMILY}_{device.type}_{args.dtype}", harness.environment(device))
    print(f"wrote {paths['csv']} and {paths['json']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
