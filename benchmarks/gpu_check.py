"""One command for a GPU: build, correctness, compute-sanitizer, kernel timings and model latency, in one report.

    python benchmarks/gpu_check.py --out DIR             # on a machine with a CUDA GPU (H100/H200)
    python benchmarks/gpu_check.py --rehearse --out DIR  # every stage on a CPU at tiny shapes
    python benchmarks/gpu_check.py --dry-run             # the plan: stages, limits, shapes

Each stage runs in its own process under its own time limit (benchmarks/gpu_plan.py), so a hang or a crash
ends that stage only; the report (DIR/gpu_check.md and DIR/gpu_check.json, logs in DIR/logs/) is rewritten
after every stage. Exit status: 0 when no stage failed, timed out or crashed, 1 otherwise, 2 for a bad
command line or a machine without a GPU (without --rehearse or --dry-run). See docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(HERE.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import gpu_plan  # noqa: E402  (no torch: --dry-run and bad flags answer at once)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"gpu_check.py: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for gpu_check.md, gpu_check.json and logs/ (created)")
    parser.add_argument("--rehearse", action="store_true", help="run every stage on this CPU at tiny shapes")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument(
        "--build",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build deeplab_fast._C first (--no-build: never); default: when it is missing or stale, on a GPU only",
    )
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(gpu_plan.STAGES)} (default: all)")
    parser.add_argument(
        "--kernel-backend",
        choices=("cuda", "cuda_emu"),
        help="op backend of the CUDA kernels (default: cuda; cuda_emu in a rehearsal)",
    )
    parser.add_argument("--sanitizer", help="path of compute-sanitizer (default: found on PATH or in CUDA_HOME)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    stages = tuple(gpu_plan.STAGES)
    if args.stages:
        asked = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in asked if s not in gpu_plan.STAGES]
        if unknown or not asked:
            _fail(f"--stages must name stages of {', '.join(gpu_plan.STAGES)}; got {args.stages!r}")
        stages = tuple(s for s in gpu_plan.STAGES if s in asked)
    args.stage_list = stages
    if not args.dry_run and not args.out:
        _fail("--out DIR is required (the folder for the report), unless --dry-run")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:  # the running stage's process group was killed on the way out
        print("gpu_check.py: interrupted; the report holds the stages that finished", file=sys.stderr)
        return 130


def _fail(message: str) -> None:
    print(f"gpu_check.py: {message}", file=sys.stderr)
    sys.exit(2)


def _check_out(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".gpu_check_probe.", delete=True)
        probe.close()
    except OSError as exc:
        _fail(f"--out {path!r} cannot be written: {exc.strerror or exc}")
    return out


def run(argv: list[str] | None = None) -> int:
    """The command (see the module docstring); returns the exit status."""
    args = parse_args(argv)
    mode = "rehearse" if args.rehearse else "gpu"
    build = {True: "always", False: "never", None: "auto" if mode == "gpu" else "never"}[args.build]
    plan = gpu_plan.make_plan(mode, build=build, kernel_backend=args.kernel_backend)
    if args.dry_run:
        print(gpu_plan.describe(plan, args.stage_list))
        return 0
    try:
        import torch
    except ImportError as exc:
        _fail(f"torch does not import with {sys.executable} ({exc}); run it in the environment that has torch")
    if mode == "gpu":
        if not torch.cuda.is_available():
            _fail(
                "no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a GPU machine, or use "
                "--rehearse (every stage at tiny shapes on this CPU) or --dry-run (the plan)"
            )
    import gpu_stages

    sanitizer = gpu_stages.find_sanitizer(args.sanitizer)
    if args.sanitizer and sanitizer is None:
        _fail(f"--sanitizer {args.sanitizer!r} is not an executable")
    out = _check_out(args.out)

    import gpu_report

    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    meta = {
        "tool": "benchmarks/gpu_check.py",
        "mode": mode,
        "command": shlex.join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "started": started,
        "total_s": 0.0,
        "plan": plan.to_dict(),
    }
    results = [gpu_stages.StageResult(s, limit_s=plan.limits_s[s]) for s in args.stage_list]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        plan_path = work / "plan.json"
        plan_path.write_text(json.dumps(plan.to_dict()), encoding="utf-8")
        for i, stage in enumerate(args.stage_list):
            print(f"gpu_check: {stage} (limit {plan.limits_s[stage]:.0f} s) ...", file=sys.stderr, flush=True)
            if stage == "build":
                result = gpu_stages.run_build_stage(plan, work)
            elif stage == "sanitizer":
                result = gpu_stages.run_sanitizer_stage(plan, plan_path, work, sanitizer)
            else:
                result = gpu_stages.run_worker_stage(stage, plan, plan_path, work)
            results[i] = result
            print(f"gpu_check: {stage}: {result.status} in {result.seconds:.0f} s; {result.note}", file=sys.stderr)
            meta["total_s"] = time.monotonic() - t0
            paths = gpu_report.write_report(out, meta, results)
    print(f"gpu_check: wrote {paths['md']} and {paths['json']} ({meta['total_s']:.0f} s)", file=sys.stderr)
    return 0 if gpu_report.overall_ok(results) else 1


if __name__ == "__main__":
    sys.exit(main())
