"""benchmarks/gpu_check.py: the rehearsal of every stage on this CPU (CUDA kernels through cuda_emu, Triton
through its interpreter), the plan, the command line's answers, and the stage machinery (limits, judging,
staleness, sanitizer summaries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_plan  # noqa: E402  (benchmarks/ is not a package; its modules import each other by name)
import gpu_report  # noqa: E402
import gpu_stages  # noqa: E402


def _run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("TRITON_INTERPRET", None)  # the script decides for its stages
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


FAKE_SANITIZER = """\
#!{python}
# Stands in for compute-sanitizer: runs the program it wraps, then prints the tool's summary line with
# no error under memcheck and two hazards under racecheck.
import subprocess, sys
args = sys.argv[1:]
tool = args[args.index("--tool") + 1]
rc = subprocess.call(args[args.index({python!r}):])
if tool == "racecheck":
    print("========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)")
else:
    print("========= ERROR SUMMARY: 0 errors")
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """One rehearsal for the tests below (about 40 s of CPU time: every stage in its own process)."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    fake = tmp / "compute-sanitizer"
    fake.write_text(FAKE_SANITIZER.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp / "report"
    proc = _run("--rehearse", "--out", str(out), "--sanitizer", str(fake))
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else None
    return proc, out, report


def _stage(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


@pytest.mark.slow
def test_rehearsal_runs_every_stage_and_reports_the_failing_one(rehearsal):
    proc, out, report = rehearsal
    assert report is not None, proc.stderr[-3000:]
    status = {s["name"]: s["status"] for s in report["stages"]}
    # the fake racecheck reports two hazards: that stage fails, and every later stage still runs
    assert status == {
        "build": "skipped",
        "correctness": "passed",
        "sanitizer": "failed",
        "timings": "passed",
        "models": "passed",
    }, [(s["name"], s["status"], s["note"]) for s in report["stages"]]
    assert proc.returncode == 1 and report["ok"] is False
    sanitizer = {r["tool"]: r["errors"] for r in _stage(report, "sanitizer")["records"] if r["kind"] == "sanitizer"}
    assert sanitizer == {"memcheck": 0, "racecheck": 2}
    md = (out / "gpu_check.md").read_text()
    assert "| sanitizer | failed |" in md and "no figure here is a GPU measurement" in md
    assert (out / "logs" / "correctness.log").exists() and (out / "logs" / "sanitizer_racecheck.log").exists()
    assert report["environment"]["device"] == "cpu"


@pytest.mark.slow
def test_rehearsal_checks_every_op_and_direction_on_both_backends(rehearsal):
    _, _, report = rehearsal
    checks = [r for r in _stage(report, "correctness")["records"] if r["kind"] == "check" and not r.get("skipped")]
    assert checks and all(r["ok"] for r in checks)
    seen = {(r["op"], r["backend"], r.get("direction")) for r in checks}
    for backend in ("cuda_emu", "triton"):
        for op, direction in (
            ("dwconv_bn_act", "forward"),
            ("dwconv_bn_act", "backward"),
            ("upsample_concat", "forward"),
            ("upsample_concat", "backward"),
            ("upsample_argmax", "forward"),
            ("upsample_softmax_accumulate", "forward"),
        ):
            assert (op, backend, direction) in seen, (op, backend, direction)
    layouts = {r.get("layout") for r in checks}
    dtypes = {r.get("dtype") for r in checks}
    assert {"nchw", "channels_last", "channels_last misaligned"} <= layouts
    assert {"float32", "float16", "bfloat16"} <= dtypes
    compiled = [r for r in checks if r["op"] == "torch.compile(fullgraph=True)"]
    assert [r["backend"] for r in compiled] == ["cuda_emu"]
    # the subset under the (fake) sanitizer ran the emulated CUDA kernels
    subset = [r for r in _stage(report, "sanitizer")["records"] if r.get("kind") == "check" and r.get("op")]
    assert {r["backend"] for r in subset} == {"cuda_emu"} and all(r["ok"] for r in subset)


@pytest.mark.slow
def test_rehearsal_times_every_provider_with_bandwidth(rehearsal):
    _, _, report = rehearsal
    records = _stage(report, "timings")["records"]
    bandwidth = [r for r in records if r["kind"] == "bandwidth"]
    assert len(bandwidth) == 1 and bandwidth[0]["copy_gb_s"] > 0 and bandwidth[0]["clock"] == "host"
    rows = [r for r in records if r["kind"] == "timing"]
    providers = {r["provider"] for r in rows}
    assert providers == {"deeplab_fast cuda_emu", "deeplab_fast triton", "eager", "torch.compile (backend=eager)"}
    assert {r["direction"] for r in rows} == {"forward", "forward+backward"}
    for r in rows:
        assert r["ok"] and r["median_us"] > 0 and r["gb_s"] > 0 and r["pct_copy_bw"] > 0, r
    models = [r for r in _stage(report, "models")["records"] if r["kind"] in ("model", "train_step")]
    assert {r["variant"] for r in models} == {"eager", "optimize()", "train step"}
    assert all(r["ok"] and r["median_ms"] > 0 for r in models)


def test_dry_run_prints_the_plan_without_running():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    for text in ("build", "correctness", "sanitizer", "timings", "models", "2048 x 65 x 65", "19x257x513 -> 1025x2049"):
        assert text in proc.stdout, text
    assert sum(gpu_plan.GPU_LIMITS_S.values()) < 600  # the whole command, build included, under 10 minutes


@pytest.mark.parametrize(
    "args,message",
    [
        (("--out", "OUT"), "no CUDA GPU is visible"),
        (("--stages", "correctness,nope", "--out", "OUT"), "--stages must name stages"),
        (("--rehearse",), "--out DIR is required"),
        (("--rehearse", "--out", "/proc/nope"), "cannot be written"),
        (("--bogus",), "unrecognized arguments"),
        (("--rehearse", "--kernel-backend", "cpu", "--out", "OUT"), "invalid choice"),
        (("--rehearse", "--sanitizer", "/nonexistent/compute-sanitizer", "--out", "OUT"), "is not an executable"),
    ],
)
def test_bad_command_lines_get_one_line_and_exit_2(args, message, tmp_path):
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    proc = _run(*args, env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_plan_round_trips_through_json():
    for mode in ("gpu", "rehearse"):
        plan = gpu_plan.make_plan(mode)
        again = gpu_plan.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
        assert again == plan


def test_a_hanging_stage_is_killed_at_its_limit(tmp_path):
    sleep = "import time; time.sleep(60)"
    code = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {sleep!r}]); {sleep}"
    run = gpu_stages.run_limited(
        [sys.executable, "-c", code], timeout=1.5, env=dict(os.environ), log_path=tmp_path / "log"
    )
    assert run.timed_out and run.returncode is None and run.seconds < 30
    result = gpu_stages.judge(gpu_stages.StageResult("x", limit_s=1.5, records=[{"kind": "check", "ok": True}]), run)
    assert result.status == "timed out" and "1 records" in result.note


def _judged(records, returncode=0, output=""):
    run = gpu_stages.Limited(returncode, 1.0, False, output)
    return gpu_stages.judge(gpu_stages.StageResult("x", records=records), run)


def test_stage_status_from_exit_and_records():
    assert _judged([{"kind": "check", "ok": True}]).status == "passed"
    failed = _judged([{"kind": "check", "ok": True}, {"kind": "check", "ok": False}])
    assert failed.status == "failed" and failed.note.startswith("1 of 2")
    crashed = _judged([{"kind": "stage_error", "error": "RuntimeError: boom"}], returncode=1)
    assert crashed.status == "crashed" and "RuntimeError: boom" in crashed.note
    assert _judged([{"kind": "not_reached", "names": ["a", "b"]}]).status == "incomplete"
    assert _judged([], returncode=-11, output="Segmentation fault\n").note.endswith("Segmentation fault")
    assert gpu_report.overall_ok([gpu_stages.StageResult("a", "passed"), gpu_stages.StageResult("b", "skipped")])
    assert not gpu_report.overall_ok([gpu_stages.StageResult("a", "passed"), gpu_stages.StageResult("b", "timed out")])


def test_a_case_error_is_a_record_and_a_sticky_cuda_error_ends_the_stage(tmp_path):
    import gpu_worker

    ctx = gpu_worker.StageContext(plan=None, results_path=str(tmp_path / "r.jsonl"), deadline=float("inf"))
    with ctx.case("check", "a", backend="cuda") as rec:
        raise ValueError("x must be 4-D\nmore")
    assert rec == {"kind": "check", "name": "a", "backend": "cuda", "ok": False, "error": "ValueError: x must be 4-D",
                   "seconds": rec["seconds"]}  # fmt: skip
    with pytest.raises(gpu_worker.StageAborted, match="illegal memory access"):
        with ctx.case("check", "b"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    ctx.close()
    records = gpu_stages.read_records(tmp_path / "r.jsonl")
    assert [(r["name"], r["ok"]) for r in records] == [("a", False), ("b", False)]


def test_sanitizer_summaries():
    assert gpu_stages.sanitizer_errors("========= ERROR SUMMARY: 0 errors\n") == 0
    assert gpu_stages.sanitizer_errors("... \n========= ERROR SUMMARY: 3 errors\n") == 3
    race = "========= RACECHECK SUMMARY: 5 hazards displayed (1 error, 4 warnings)\n"
    assert gpu_stages.sanitizer_errors(race) == 1
    assert gpu_stages.sanitizer_errors("Segmentation fault\n") is None


def test_extension_staleness(tmp_path):
    inside = str(gpu_stages.REPO / "deeplab_fast" / "_C.so")
    current = {"imports": True, "path": inside, "mtime": 4e9, "cuda_kernels": True}
    assert gpu_stages.stale_reason(current, need_cuda=True) == ""
    assert "does not import" in gpu_stages.stale_reason({"imports": False, "error": "undefined symbol"}, True)
    assert "outside this checkout" in gpu_stages.stale_reason(dict(current, path=str(tmp_path / "_C.so")), True)
    assert "no CUDA kernels" in gpu_stages.stale_reason(dict(current, cuda_kernels=False), need_cuda=True)
    assert gpu_stages.stale_reason(dict(current, cuda_kernels=False), need_cuda=False) == ""
    assert "older than" in gpu_stages.stale_reason(dict(current, mtime=0.0), need_cuda=True)
    pip = gpu_stages.build_command()
    assert pip[1:4] == ["-m", "pip", "install"] and pip[-2:] == ["-e", "."]
    assert {"--no-index", "--no-deps", "--no-build-isolation"} <= set(pip)  # no network, the installed torch
    assert gpu_stages.build_command(pip=False)[1:] == ["setup.py", "build_ext", "--inplace"]


@pytest.mark.slow
def test_build_stage_runs_the_build_and_checks_the_extension_after(monkeypatch, tmp_path):
    """The build command is replaced by a stand-in (a real build takes minutes and installs into the
    environment); the stage still checks deeplab_fast._C before and after, in fresh interpreters."""
    monkeypatch.setattr(gpu_stages, "build_command", lambda pip=True: [sys.executable, "-c", "print('building')"])
    result = gpu_stages.run_build_stage(gpu_plan.make_plan("rehearse", build="always"), tmp_path)
    assert result.status == "passed", (result.note, result.records)
    assert [r["kind"] for r in result.records] == ["extension", "build_command", "extension"]
    assert result.records[1]["env"] == {"TORCH_CUDA_ARCH_LIST": "9.0", "DEEPLAB_FAST_CUDA": "1", "MAX_JOBS": "16"}
    assert result.records[2]["imports"] and "building" in result.logs["build"]
    skipped = gpu_stages.run_build_stage(gpu_plan.make_plan("rehearse", build="never"), tmp_path)
    assert skipped.status == "skipped" and skipped.records == []


def test_report_is_written_atomically_with_every_stage(tmp_path):
    stages = [gpu_stages.StageResult("build", "skipped", note="not asked for", logs={"build": "log text"})]
    meta = {"mode": "gpu", "command": "python benchmarks/gpu_check.py --out X", "started": "now", "total_s": 1.0}
    paths = gpu_report.write_report(tmp_path, meta, stages)
    assert json.loads(paths["json"].read_text())["stages"][0]["status"] == "skipped"
    assert "| build | skipped |" in paths["md"].read_text()
    assert (tmp_path / "logs" / "build.log").read_text() == "log text"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_docs_describe_the_one_command():
    text = (REPO / "docs" / "gpu_check.md").read_text()
    assert "python benchmarks/gpu_check.py --out" in text
    assert "not yet run on a GPU" in text
    for stage in gpu_plan.STAGES:
        assert f"(`{stage}`)" in text, stage
