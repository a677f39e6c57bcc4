"""Benchmarks of deeplab_fast: fused kernels and whole models against eager PyTorch, torch.compile and peers.

    python benchmarks/run.py               # quick suite on the detected device (CPU: under 6 minutes)
    python benchmarks/run.py --full        # every shape, dtype and provider
    python benchmarks/run.py --only models --device cpu --reps 7 --out /tmp/results

Writes <out>/<device>_<machine>_<suite>_<date>.{json,csv,md,png} (default out: benchmarks/results/, which git
ignores) and prints the Markdown summary. `python benchmarks/publish.py` turns the newest result of each machine
into the summary kept in docs/benchmarks/. See docs/benchmarks.md for what every provider and column means.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results"
KERNEL_FAMILIES = {
    "dwconv": "dwconv_bn_act (atrous depthwise conv + folded BN + activation)",
    "upsample": "upsample_concat / upsample_argmax (bilinear resize fused with concat / argmax)",
}
MODEL_SIZE = 513
TINY_SIZE = 65
# Repetitions (see docs/benchmarks.md, "How many repetitions"): without --reps every (shape, provider) gets at most the
# suite's reps, as many as fit in a time budget, and never fewer than MIN_REPS timed runs.
MIN_REPS = 5
KERNEL_BUDGET_S = 1.0
MODEL_BUDGET_S = 8.0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"run.py: error: {message} (see python benchmarks/run.py --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _dtypes(text: str) -> list[str]:
    _setup_paths()
    from deeplab_fast.dtypes import DTYPE_NAMES
    from deeplab_fast.ops._common import dtype_name

    names = []
    for part in text.split(","):
        key = part.strip().lower()
        if key not in DTYPE_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown dtype {part.strip()!r}; expected fp32, fp16 or bf16 (comma-separated)"
            )
        if dtype_name(DTYPE_NAMES[key]) not in names:
            names.append(dtype_name(DTYPE_NAMES[key]))
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line of benchmarks/run.py (docs/benchmarks.md documents every flag; a test compares)."""
    p = _Parser(
        prog="python benchmarks/run.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--full", action="store_true", help="every shape, dtype and provider (slow on a CPU)")
    p.add_argument(
        "--tiny",
        action="store_true",
        help=f"tiny sizes ({TINY_SIZE}x{TINY_SIZE} models, no torch.compile): a smoke test, not a benchmark",
    )
    p.add_argument("--only", choices=("kernels", "models"), help="run one part only")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if a GPU is visible, else cpu")
    p.add_argument("--dtype", type=_dtypes, help="fp32, fp16, bf16 or a comma-separated list (default: per device)")
    p.add_argument("--batch", type=_positive_int, help="batch size for kernels and models (default: per part)")
    p.add_argument("--size", type=_positive_int, help=f"model input side (default {MODEL_SIZE}; --tiny {TINY_SIZE})")
    p.add_argument("--reps", type=_positive_int, help="timed repetitions per provider (default: per suite)")
    p.add_argument(
        "--threads", type=_positive_int, help="CPU threads for torch and onnxruntime (default: torch's default)"
    )
    p.add_argument(
        "--out", default=str(DEFAULT_OUT), help="folder for the result files (default benchmarks/results, git-ignored)"
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (without importing torch, so bad flags fail fast)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.full and args.tiny:
        p.error("--full and --tiny exclude each other")
    if args.size is not None and args.size < 33:
        p.error(f"--size must be at least 33 (the models downsample 16x), got {args.size}")
    return args


def check_out_dir(path: str) -> str | None:
    """Create `path` if needed and prove it writable; returns an error message or None."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"--out {path!r} is not a writable folder ({exc.strerror or exc})"
    return None


def _setup_paths() -> None:
    # `python benchmarks/run.py` puts benchmarks/ on sys.path, not the repository; families and the
    # package are imported from this checkout.
    for folder in (str(REPO), str(HERE)):
        if folder not in sys.path:
            sys.path.insert(0, folder)


class Plan:
    """What one invocation runs: suite, dtypes, batches, providers, repetitions, and what it leaves out."""

    def __init__(self, args: argparse.Namespace, device: Any) -> None:
        import bench_models
        import harness
        import torch

        self.device = device
        gpu = device.type == "cuda"
        self.suite = "full" if args.full else "tiny" if args.tiny else "quick"
        self.parts = [args.only] if args.only else ["kernels", "models"]
        self.left_out: list[str] = []
        all_dtypes = ["float32", "float16", "bfloat16"]

        # kernels
        if args.dtype:
            self.kernel_dtypes = list(args.dtype)
        elif gpu or args.full:
            self.kernel_dtypes = all_dtypes
        else:
            self.kernel_dtypes = ["float32"]
            self.left_out.append("kernels in fp16/bf16 (CPU quick suite; --full or --dtype adds them)")
        if not args.full and not args.tiny:
            self.left_out.append(
                "dwconv aspp33_r18 and the plain torch.compile provider of the dwconv cases (quick suite: "
                "torch.compile+freezing is kept, the stronger baseline; --full includes them)"
            )
        self.kernel_batch = args.batch
        self.kernel_reps = args.reps or (20 if args.full else 10)
        # an explicit --reps is taken as it is; otherwise slow calls get fewer repetitions (at least MIN_REPS)
        self.min_reps = MIN_REPS
        self.kernel_budget_s = None if args.reps else KERNEL_BUDGET_S
        self.model_budget_s = None if args.reps else MODEL_BUDGET_S

        # models: every dtype's providers of one model are timed in one interleaved rotation. A provider entry
        # is "name", "case:name", "name@dtype" (bench_models.selected).
        native = {d: harness.native_dtype(device, d) for d in all_dtypes}
        if args.dtype:
            self.model_dtypes = list(args.dtype)
        elif gpu:
            self.model_dtypes = all_dtypes
        else:
            # fp32 and bf16 on a CPU (float16 with --dtype): the comparison is bf16 against fp32 peers
            self.model_dtypes = ["float32", "bfloat16"]
        self.model_batches = [args.batch] if args.batch else ([1, 8] if gpu else [1])
        self.size = args.size or (TINY_SIZE if args.tiny else MODEL_SIZE)
        self.model_reps = args.reps or (10 if args.full else 5)
        self.model_warmup = 2 if args.full else 1
        self.models = tuple(bench_models.MODELS)
        self.model_skip: dict[str, str] = {}
        providers = list(bench_models.PROVIDERS)
        memory = list(bench_models.PROVIDERS)
        if args.tiny:
            # a smoke test: every code path once (one ONNX export, one memory subprocess), nothing twice
            providers = [
                p for p in providers if not p.startswith("compile") and p not in ("torchvision", "onnxruntime")
            ]
            providers.append("resnet101:onnxruntime")
            self.left_out.append("torch.compile providers (--tiny: compiling takes minutes on a CPU)")
            self.left_out.append("torchvision deeplabv3_resnet101 (--tiny: output stride 8, the slowest peer)")
            self.left_out.append("onnxruntime for xception65 (--tiny: one ONNX export is enough for a smoke test)")
            memory = ["resnet101:optimize@float32"]
            self.left_out.append("memory of every provider but resnet101's fp32 optimize() (--tiny)")
        elif not args.full:
            # Quick suite: torchvision's DeepLabV3 at output stride 8 costs several times our model per forward
            # and is no target; each torch.compile of a whole model takes minutes (max-autotune on a GPU too,
            # for every dtype and batch), and on a CPU would compile again in each memory subprocess.
            providers = [p for p in providers if p not in ("torchvision", "compile_optimize")]
            self.left_out.append(
                "torchvision deeplabv3_resnet101 (quick suite: output stride 8 makes it several times slower "
                "than the rest, and it is no target; --full includes it)"
            )
            self.left_out.append(
                "torch.compile(optimize()) (quick suite: each torch.compile of a whole model takes minutes; "
                "--full includes it)"
            )
            if not gpu:
                # each memory measurement on a CPU is a fresh subprocess that builds the model again
                memory = ["eager@float32", "optimize"]
                self.left_out.append(
                    "memory of the peers and of torch.compile(eager) (CPU quick suite: each measurement is a "
                    "subprocess that builds, or compiles, the model again; --full measures them)"
                )
        if not gpu:
            providers = self._cpu_entries(args, providers, native)
        if "onnxruntime" in bench_models.PROVIDERS and any(d != "float32" for d in self.model_dtypes):
            self.left_out.append("onnxruntime in bf16/fp16 (it runs the fp32 ONNX export only)")
        # The GEMM yardstick (pct_gemm) in the dtypes the device computes natively: torch.mm in bf16 without
        # native bf16 runs a reference kernel (minutes for 2048^3 on an AVX2 CPU) and would be no peak anyway.
        self.gemm_dtypes = [d for d in self.model_dtypes if native[d]]
        for d in self.model_dtypes:
            if not native[d]:
                self.left_out.append(
                    f"the GEMM peak in {d} and % GEMM peak of {d} rows ({harness.native_dtype_reason(device, d)})"
                )
        self.providers = tuple(providers)
        self.memory = tuple(memory)
        self.threads = torch.get_num_threads()

    def _cpu_entries(self, args: argparse.Namespace, providers: list[str], native: dict[str, bool]) -> list[str]:
        """The CPU's provider entries per dtype: fp32 runs `providers`; bf16/fp16 run our models only (optimize()
        in the quick and tiny suites; eager, optimize() and torch.compile(optimize()) in --full), the peers'
        comparison being against their fp32 rows."""
        import bench_models
        import harness

        entries: list[str] = []
        low = [d for d in self.model_dtypes if d != "float32"]
        if "float32" in self.model_dtypes:
            entries += [f"{p}@float32" for p in providers]
        ours_low = ("eager", "optimize", "compile_optimize") if args.full else ("optimize",)
        for d in low:
            entries += [f"{p}@{d}" for p in ours_low]
            if native[d] or args.dtype or self.suite == "tiny":
                continue
            # Without native bf16 a forward at 513 takes tens of seconds (xception65: 35-43 s on the AVX2 AMD
            # EPYC, against 5 s in fp32 on the same busy machine), each provider at least 6 of them: the quick
            # suite leaves optimize() out, --full runs optimize() only; an explicit --dtype runs them all.
            why = harness.native_dtype_reason(self.device, d) + (
                f": one {d} forward of these models at 513x513 takes tens of seconds here"
            )
            if self.suite == "quick":
                self.model_skip[f"optimize@{d}"] = f"{why}; --full or --dtype {_short(d)} runs it"
            else:
                for p in ours_low:
                    if p != "optimize":
                        self.model_skip[f"{p}@{d}"] = (
                            f"{why}; --full runs only optimize() in {_short(d)} on such a CPU, "
                            f"--full --dtype fp32,{_short(d)} runs it"
                        )
        others = [p for p in bench_models.PROVIDERS if p not in ours_low and bench_models.runs_in(p, "bfloat16")]
        if low:
            self.left_out.append(
                f"{', '.join(_short(d) for d in low)} rows of {', '.join(others)} on a CPU (ours against the fp32 "
                "peers; --dtype alone does not add them)"
            )
        return entries

    def describe(self) -> dict[str, Any]:
        """The plan as plain data, recorded in the JSON."""
        return {
            "suite": self.suite,
            "parts": self.parts,
            "kernel_dtypes": self.kernel_dtypes,
            "kernel_batch": self.kernel_batch,
            "kernel_reps": self.kernel_reps,
            "kernel_budget_s": self.kernel_budget_s,
            "model_dtypes": self.model_dtypes,
            "model_batches": self.model_batches,
            "size": self.size,
            "model_reps": self.model_reps,
            "model_budget_s": self.model_budget_s,
            "model_skip": self.model_skip,
            "gemm_dtypes": self.gemm_dtypes,
            "min_reps": self.min_reps if self.kernel_budget_s is not None else None,
            "model_warmup": self.model_warmup,
            "models": list(self.models),
            "providers": list(self.providers),
            "memory_providers": list(self.memory),
            "left_out": self.left_out,
            "threads": self.threads,
        }


def _short(dtype_name: str) -> str:
    """A dtype name as --dtype spells it: "bfloat16" -> "bf16"."""
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype_name, dtype_name)


def _family_skip(family: str, dtype: str, reason: str) -> dict[str, Any]:
    return {
        "part": "kernels",
        "family": family,
        "case": "(all cases)",
        "provider": "(all providers)",
        "dtype": dtype,
        "layout": "",
        "batch": None,
        "median_ms": None,
        "gb_s": None,
        "pct_bw": None,
        "copy_ratio": None,
        "copy_hot_ratio": None,
        "skipped": reason,
    }


def _budget_kwargs(run: Any, budget_s: float | None, min_reps: int) -> dict[str, Any]:
    """budget_s / min_reps for a family's run() that takes them (a family without them times `reps` fixed)."""
    import inspect

    params = inspect.signature(run).parameters
    return {"budget_s": budget_s, "min_reps": min_reps} if "budget_s" in params and "min_reps" in params else {}


def run_kernels(plan: Plan, bar_factory: Any, phases: dict[str, float]) -> list[dict[str, Any]]:
    """Rows of every kernel family present in this checkout; a missing or failing family is a skipped row.

    phases receives the seconds each family took ("kernels/<family>/<dtype>").
    """
    import harness
    import torch

    rows: list[dict[str, Any]] = []
    modules: dict[str, Any] = {}
    for family in KERNEL_FAMILIES:
        try:
            modules[family] = importlib.import_module(f"bench_{family}")
        except ImportError as exc:
            missing = getattr(exc, "name", None) == f"bench_{family}"
            reason = (
                f"benchmarks/bench_{family}.py is not in this checkout"
                if missing
                else f"bench_{family} failed to import: {type(exc).__name__}: {exc}"
            )
            for dtype in plan.kernel_dtypes:
                rows.append(_family_skip(family, dtype, reason))
    quick = plan.suite != "full"
    per_dtype = sum(m.count_steps(quick, plan.kernel_batch) for m in modules.values() if hasattr(m, "count_steps"))
    bar = bar_factory(desc="kernels", total=per_dtype * len(plan.kernel_dtypes) or None, unit="case")
    try:
        for dtype_name in plan.kernel_dtypes:
            dtype = getattr(torch, dtype_name)
            for family, module in modules.items():
                progress = harness.Progress(bar, prefix=f"{family} {dtype_name}: ")
                progress.set_postfix_str("")
                started = time.perf_counter()
                try:
                    got = module.run(
                        plan.device,
                        dtype,
                        quick=quick,
                        batch=plan.kernel_batch,
                        reps=plan.kernel_reps,
                        progress=progress,
                        **_budget_kwargs(module.run, plan.kernel_budget_s, plan.min_reps),
                    )
                except Exception as exc:  # noqa: BLE001  (the other families still run; the reason is reported)
                    got = [_family_skip(family, dtype_name, f"family crashed: {type(exc).__name__}: {exc}"[:300])]
                phases[f"kernels/{family}/{dtype_name}"] = time.perf_counter() - started
                for row in got:
                    row.setdefault("part", "kernels")
                    row.setdefault("family", family)
                    row.setdefault("skipped", "")
                rows.extend(got)
    finally:
        bar.close()
    return rows


def run_models(plan: Plan, bar_factory: Any, gemm: dict[str, float]) -> list[dict[str, Any]]:
    """Rows of the model part for every dtype and batch of the plan."""
    import bench_models
    import harness
    import torch

    rows: list[dict[str, Any]] = []
    dtypes = tuple(getattr(torch, d) for d in plan.model_dtypes)
    per = bench_models.steps(plan.models, plan.providers, dtypes, plan.model_reps, plan.model_warmup)
    bar = bar_factory(desc="models", total=per * len(plan.model_batches), unit="call")
    try:
        for batch in plan.model_batches:
            rows.extend(
                bench_models.run(
                    plan.device,
                    dtypes,
                    size=plan.size,
                    batch=batch,
                    reps=plan.model_reps,
                    warmup=plan.model_warmup,
                    models=plan.models,
                    providers=plan.providers,
                    memory=plan.memory,
                    skip=plan.model_skip,
                    gemm_gflops=gemm,
                    budget_s=plan.model_budget_s,
                    min_reps=plan.min_reps,
                    progress=harness.Progress(bar, prefix=f"b{batch} "),
                )
            )
        # the total counted every provider at the cap of repetitions; the time budget may have given fewer
        bar.total = bar.n
        bar.refresh()
    finally:
        bar.close()
    return rows


def _stem(env: dict[str, Any], suite: str) -> str:
    import re

    model = env.get("gpu") if env.get("device") == "cuda" else env.get("cpu")
    slug = re.sub(r"[^a-z0-9]+", "-", str(model or "").lower()).strip("-")[:32]
    date = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return "_".join(s for s in (env.get("device"), slug, suite, date) if s)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    started = time.perf_counter()
    args = parse_args(argv)
    error = check_out_dir(args.out)
    if error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    _setup_paths()
    # torch.compile on a machine without a GPU logs "No CUDA runtime is found" in the middle of the progress bar
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if args.tiny:
        os.environ["DEEPLAB_FAST_BENCH_TINY"] = "1"  # harness.tiny_requested(): families may shrink further
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "run.py: error: --device cuda needs a CUDA GPU, but torch.cuda.is_available() is False on this "
            "machine (use --device cpu)",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)

    import bench_models  # noqa: F401  (fail early if the benchmark folder is incomplete)
    import harness
    import report

    plan = Plan(args, device)
    env = harness.environment(device)
    env["command"] = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    from tqdm import tqdm

    def bar_factory(**kw: Any) -> Any:
        return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=0.5, leave=True, **kw)

    print(
        f"deeplab_fast benchmarks: {plan.suite} suite on {device.type} "
        f"({env.get('gpu') or env.get('cpu')}, {plan.threads} threads), parts: {', '.join(plan.parts)}",
        file=sys.stderr,
    )
    tiny = plan.suite == "tiny"
    bandwidth = harness.measure_bandwidth(device, nbytes=(16 if tiny else 256) * 2**20)
    gemm: dict[str, float] = {}
    gemm_shapes = harness.TINY_GEMM_SHAPES if tiny else harness.GEMM_SHAPES
    gemm_samples: dict[str, list[float]] = {}

    def sample_gemm() -> None:
        # the best of several samples: on a machine whose load varies, the peak is the least disturbed one
        for dtype_name in plan.gemm_dtypes:
            got = [
                harness.measure_gemm_gflops(
                    device,
                    getattr(torch, dtype_name),
                    gemm_shapes,
                    reps=3 if tiny else 5,
                )
                for _ in range(1 if tiny else 2)
            ]
            gemm_samples.setdefault(dtype_name, []).extend(got)
            gemm[dtype_name] = max(gemm_samples[dtype_name])

    # where the time goes (seconds per phase, recorded in the JSON): the quick suite has a time budget
    phases: dict[str, float] = {"startup": time.perf_counter() - started}
    mark = time.perf_counter()
    if "models" in plan.parts:
        sample_gemm()
    phases["yardsticks"] = time.perf_counter() - mark

    rows: list[dict[str, Any]] = []
    if "kernels" in plan.parts:
        rows.extend(run_kernels(plan, bar_factory, phases))
    if "models" in plan.parts:
        mark = time.perf_counter()
        rows.extend(run_models(plan, bar_factory, gemm))
        phases["models"] = time.perf_counter() - mark
        sample_gemm()  # again after the models, and use the best sample for every row
        for row in rows:
            if row.get("part") == "models" and row.get("gflop_s") and gemm.get(row.get("dtype")):
                row["pct_gemm"] = 100 * row["gflop_s"] / gemm[row["dtype"]]

    meta = {
        "plan": plan.describe(),
        "bandwidth_gb_s": bandwidth,
        "gemm_gflops": gemm,
        "gemm_gflops_samples": gemm_samples,
        "gemm_shapes": [list(shape) for shape in gemm_shapes],
        "runtime_s": time.perf_counter() - started,
        "phases_s": phases,
        "families": {f: d for f, d in KERNEL_FAMILIES.items()},
    }
    stem = _stem(env, plan.suite)
    paths = report.write_all(rows, env, meta, args.out, stem)
    print(paths["markdown_text"])
    for kind in ("json", "csv", "md", "png"):
        if paths.get(kind):
            print(f"{kind:>4}: {paths[kind]}", file=sys.stderr)
    total = time.perf_counter() - started
    print(f"Total runtime: {int(total // 60)} min {total % 60:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("run.py: interrupted", file=sys.stderr)
        sys.exit(130)
