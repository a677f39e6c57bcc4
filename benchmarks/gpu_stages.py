"""The stages of gpu_check as limited subprocesses, and how each one's outcome is judged.

Every stage runs in its own process group with a wall-clock limit: on expiry the whole group is killed
(compile workers included) and the stage is reported "timed out" with the records it wrote so far. A
non-zero exit is "crashed"; a record with ok=False makes the stage "failed"; cases left out at the soft
deadline make it "incomplete"; otherwise "passed". "skipped" says a stage had nothing to do here (with why).

- build: `pip install --no-index --no-deps --no-build-isolation -e .` (sm_90 only, DEEPLAB_FAST_CUDA=1, 16
  jobs; `python setup.py build_ext --inplace` where pip is missing) when
  deeplab_fast._C is missing, does not import, lacks CUDA kernels on a GPU, or is older than a C++ source.
- correctness, timings, models: benchmarks/gpu_worker.py.
- sanitizer: the worker's small correctness subset under `compute-sanitizer --tool memcheck` and `racecheck`
  (PyTorch's caching allocator off, so an access past a tensor is past an allocation); without the tool the
  subset runs plainly and the stage is "skipped".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "gpu_worker.py"

BUILD_ENV = {"TORCH_CUDA_ARCH_LIST": "9.0", "DEEPLAB_FAST_CUDA": "1", "MAX_JOBS": "16"}
SOURCES = ("csrc", "setup.py")
LOG_TAIL_CHARS = 3000


@dataclass
class StageResult:
    """The outcome of one stage, as the report shows it."""

    name: str
    status: str = "not run"  # passed, failed, incomplete, timed out, crashed, skipped, not run
    seconds: float = 0.0
    limit_s: float = 0.0
    note: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""
    logs: dict[str, str] = field(default_factory=dict)  # log name -> full text (written beside the report)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "logs"}
        d["seconds"] = round(self.seconds, 2)
        return d


@dataclass
class Limited:
    """What run_limited returns: exit status (None when killed), seconds, and the output."""

    returncode: int | None
    seconds: float
    timed_out: bool
    output: str


def run_limited(cmd: list[str], *, timeout: float, env: dict[str, str], log_path: Path) -> Limited:
    """Run `cmd` in the repository root in a new process group, stdout and stderr into `log_path`; after
    `timeout` seconds the whole group is killed."""
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            return Limited(None, 0.0, False, f"cannot start {cmd[0]}: {exc}")
        timed_out = False
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        except BaseException:  # Ctrl-C: the stage's own session would not see it; end it before leaving
            _kill_group(proc)
            raise
    output = log_path.read_text(encoding="utf-8", errors="replace")
    return Limited(None if timed_out else proc.returncode, time.monotonic() - t0, timed_out, output)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group that `proc` leads (it was started in its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def child_env(plan: Any) -> dict[str, str]:
    """The environment of a stage process: this checkout first on the path, the Triton interpreter on only
    in a rehearsal."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if plan.triton_interpret:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of `path`; a last line cut short by a kill is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def judge(result: StageResult, run: Limited) -> StageResult:
    """Status of a worker stage from its exit and records (see the module docstring)."""
    result.seconds = run.seconds
    result.log_tail = run.output[-LOG_TAIL_CHARS:]
    failed = [r for r in result.records if r.get("ok") is False]
    stage_error = [r["error"] for r in result.records if r.get("kind") == "stage_error"]
    not_reached = [n for r in result.records if r.get("kind") == "not_reached" for n in r["names"]]
    if run.timed_out:
        result.status = "timed out"
        result.note = f"killed after {result.limit_s:.0f} s; {len(result.records)} records were written before"
    elif run.returncode != 0:
        result.status = "crashed"
        last = stage_error[0] if stage_error else _last_line(run.output)
        result.note = f"exit status {run.returncode}: {last}"
    elif failed:
        result.status = "failed"
        result.note = f"{len(failed)} of {_counted(result.records)} checks failed"
    elif not_reached:
        result.status = "incomplete"
        result.note = f"{len(not_reached)} cases not reached within the time limit"
    else:
        result.status = "passed"
        result.note = f"{_counted(result.records)} records"
    if not_reached and result.status != "incomplete":
        result.note += f"; {len(not_reached)} cases not reached within the time limit"
    return result


def _counted(records: list[dict[str, Any]]) -> int:
    return sum(1 for r in records if "ok" in r)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


# ----------------------------------------------------------------------------------------------- workers


def run_worker_stage(stage: str, plan: Any, plan_path: Path, work: Path) -> StageResult:
    """Run correctness, timings or models in gpu_worker.py under the stage's limit."""
    result = StageResult(stage, limit_s=plan.limits_s[stage])
    results_path = work / f"{stage}.jsonl"
    cmd = [sys.executable, str(WORKER), stage, str(plan_path), str(results_path)]
    run = run_limited(cmd, timeout=result.limit_s, env=child_env(plan), log_path=work / f"{stage}.log")
    result.records = read_records(results_path)
    result.logs[stage] = run.output
    return judge(result, run)


# ------------------------------------------------------------------------------------------------- build


_STATE_CODE = """
import json, os
state = {"imports": False}
try:
    import torch, deeplab_fast._C as c
    from deeplab_fast import _ext
    state.update(imports=True, path=os.path.realpath(c.__file__), mtime=os.path.getmtime(c.__file__),
                 cuda_kernels=_ext.built_with_cuda(), torch=torch.__version__)
except Exception as exc:
    state["error"] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(state))
"""


def extension_state(env: dict[str, str]) -> dict[str, Any]:
    """Whether deeplab_fast._C imports in a fresh interpreter, from where, how old, with CUDA kernels."""
    proc = subprocess.run(
        [sys.executable, "-c", _STATE_CODE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"imports": False, "error": _last_line(proc.stderr)}
    return json.loads(lines[-1])


def newest_source() -> tuple[float, str]:
    """(mtime, path) of the newest C++/CUDA source or build file of the checkout."""
    newest = (0.0, "")
    for name in SOURCES:
        root = REPO / name
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in paths:
            newest = max(newest, (p.stat().st_mtime, str(p.relative_to(REPO))))
    return newest


def stale_reason(state: dict[str, Any], need_cuda: bool) -> str:
    """Why deeplab_fast._C must be (re)built, or "" when it is current."""
    if not state.get("imports"):
        return f"deeplab_fast._C does not import ({state.get('error', 'unknown error')})"
    if not Path(state["path"]).is_relative_to(REPO.resolve()):
        return f"deeplab_fast._C is loaded from {state['path']}, outside this checkout"
    if need_cuda and not state.get("cuda_kernels"):
        return "deeplab_fast._C holds no CUDA kernels"
    mtime, path = newest_source()
    if mtime > state["mtime"]:
        return f"deeplab_fast._C is older than {path}"
    return ""


PIP_FLAGS = ["--no-index", "--disable-pip-version-check", "--no-deps", "--no-build-isolation"]


def build_command(pip: bool = True) -> list[str]:
    """pip's editable install against the installed torch, never touching the network (no index, no
    dependency resolution, no version check); without pip, setup.py's in-place build."""
    if not pip:
        return [sys.executable, "setup.py", "build_ext", "--inplace"]
    return [sys.executable, "-m", "pip", "install", "-v", *PIP_FLAGS, "-e", "."]


def has_pip(env: dict[str, str]) -> bool:
    """Whether `python -m pip` runs here."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], env=env, capture_output=True, timeout=60)
    return proc.returncode == 0


def run_build_stage(plan: Any, work: Path) -> StageResult:
    """Build deeplab_fast._C when plan.build asks for it (see the module docstring)."""
    result = StageResult("build", limit_s=plan.limits_s["build"])
    env = child_env(plan)
    need_cuda = plan.mode == "gpu"
    t0 = time.monotonic()
    if plan.build == "never":
        result.status, result.note = "skipped", "not asked for (--no-build, or a rehearsal without --build)"
        return result
    before = extension_state(env)
    reason = stale_reason(before, need_cuda)
    result.records.append({"kind": "extension", "when": "before", **before, "stale": reason})
    if plan.build == "auto" and not reason:
        result.status, result.note = "skipped", "deeplab_fast._C is current"
        result.seconds = time.monotonic() - t0
        return result
    build_env = dict(env, **BUILD_ENV)
    cmd = build_command(pip=has_pip(env))
    # without ninja, torch's BuildExtension compiles one file at a time: MAX_JOBS does nothing then
    ninja = shutil.which("ninja") is not None
    result.records.append(
        {"kind": "build_command", "command": " ".join(cmd), "env": BUILD_ENV, "why": reason, "ninja": ninja}
    )
    remaining = result.limit_s - (time.monotonic() - t0)
    run = run_limited(cmd, timeout=remaining, env=build_env, log_path=work / "build.log")
    result.logs["build"] = run.output
    result.log_tail = run.output[-LOG_TAIL_CHARS:]
    after = extension_state(env) if not run.timed_out else {"imports": False, "error": "build timed out"}
    still = stale_reason(after, need_cuda)
    result.records.append({"kind": "extension", "when": "after", **after, "stale": still, "ok": not still})
    result.seconds = time.monotonic() - t0
    if run.timed_out:
        result.status, result.note = "timed out", f"the build was killed after {result.limit_s:.0f} s"
    elif run.returncode != 0:
        result.status, result.note = "failed", f"the build exited with {run.returncode}: {_last_line(run.output)}"
    elif still:
        result.status, result.note = "failed", f"built, but {still}"
    else:
        result.status, result.note = "passed", f"built in {run.seconds:.0f} s ({reason})"
    if not ninja:
        result.note += "; ninja not found: the files compiled one at a time"
    return result


# --------------------------------------------------------------------------------------------- sanitizer


def find_sanitizer(explicit: str | None) -> str | None:
    """The compute-sanitizer to use: `explicit`, else on PATH, else in the CUDA toolkit."""
    if explicit:
        return explicit if shutil.which(explicit) else None
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", "compute-sanitizer"), os.X_OK):
            return os.path.join(home, "bin", "compute-sanitizer")
    return None


_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+)\s+error")
_RACE = re.compile(r"RACECHECK SUMMARY:.*?\((\d+)\s+errors?")


def sanitizer_errors(output: str) -> int | None:
    """The error count compute-sanitizer printed last (racecheck's hazard errors where given); None when
    there is no summary (the tool did not run to the end)."""
    races = _RACE.findall(output)
    if races:
        return int(races[-1])
    found = _SUMMARY.findall(output)
    return int(found[-1]) if found else None


def run_sanitizer_stage(plan: Any, plan_path: Path, work: Path, sanitizer: str | None) -> StageResult:
    """The correctness subset under each of plan.sanitizer_tools, sharing the stage's limit."""
    result = StageResult("sanitizer", limit_s=plan.limits_s["sanitizer"])
    env = child_env(plan)
    env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    t0 = time.monotonic()
    if sanitizer is None:
        results_path = work / "sanitizer_plain.jsonl"
        cmd = [sys.executable, str(WORKER), "sanitizer_subset", str(plan_path), str(results_path)]
        run = run_limited(cmd, timeout=result.limit_s, env=env, log_path=work / "sanitizer_plain.log")
        result.records = read_records(results_path)
        result.logs["sanitizer_plain"] = run.output
        judge(result, run)
        if result.status == "passed":
            result.status = "skipped"
        result.note = f"compute-sanitizer not found: the subset ran without it ({result.note})"
        return result
    tools = list(plan.sanitizer_tools)
    notes, statuses = [], []
    for i, tool in enumerate(tools):
        remaining = result.limit_s - (time.monotonic() - t0)
        share = remaining / (len(tools) - i)
        results_path = work / f"sanitizer_{tool}.jsonl"
        cmd = [sanitizer, "--tool", tool, "--print-limit", "20", sys.executable, str(WORKER), "sanitizer_subset"]
        cmd += [str(plan_path), str(results_path)]
        run = run_limited(cmd, timeout=share, env=env, log_path=work / f"sanitizer_{tool}.log")
        result.logs[f"sanitizer_{tool}"] = run.output
        records = read_records(results_path)
        for r in records:
            r["tool"] = tool
        errors = None if run.timed_out else sanitizer_errors(run.output)
        summary = {"kind": "sanitizer", "tool": tool, "errors": errors, "seconds": round(run.seconds, 1)}
        summary["ok"] = errors == 0 and run.returncode == 0
        result.records += [summary, *records]
        sub = judge(StageResult(tool, limit_s=share, records=records), run)
        if sub.status == "passed" and errors != 0:
            sub.status = "failed"
        statuses.append(sub.status)
        if errors is None and not run.timed_out:
            notes.append(f"{tool}: no ERROR SUMMARY line ({sub.note})")
        else:
            notes.append(f"{tool}: {sub.status}, {errors if errors is not None else '?'} errors ({sub.note})")
        result.log_tail = run.output[-LOG_TAIL_CHARS:]
    result.seconds = time.monotonic() - t0
    order = ("crashed", "timed out", "failed", "incomplete", "passed")
    result.status = next(s for s in order if s in statuses)
    result.note = "; ".join(notes)
    return result
