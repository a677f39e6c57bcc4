"""Smoke tests of benchmarks/run.py: one tiny end-to-end run (files and fields, no timing assertions) and
the command line's answers to bad input (one line, non-zero exit, no traceback)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"
sys.path.insert(0, str(REPO / "benchmarks"))

import publish  # noqa: E402
import report  # noqa: E402  (benchmarks/ is not a package; its modules import each other by name)


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("TRITON_INTERPRET", None)  # the benchmark itself decides; the interpreter is not a measurement
    return subprocess.run(
        [sys.executable, str(RUN), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # one thread: this is a smoke test, and one thread suffers least from a shared, busy machine
    proc = _run("--tiny", "--reps", "1", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def _one(out: Path, suffix: str) -> Path:
    found = sorted(out.glob(f"*{suffix}"))
    assert len(found) == 1, f"expected one {suffix} file in {out}, found {[p.name for p in found]}"
    return found[0]


def test_tiny_run_writes_every_file_with_environment(tiny_run):
    proc, out = tiny_run
    data = json.loads(_one(out, ".json").read_text())
    env = data["environment"]
    for key in ("device", "torch", "cpu", "onednn", "threads", "date"):
        assert key in env, key
    assert env["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert env["threads"] == 1 and data["plan"]["threads"] == 1
    assert data["plan"]["suite"] == "tiny"
    assert data["bandwidth_gb_s"] > 0
    # the GEMM yardstick in the dtypes this CPU computes natively (fp32 always, bf16 where cpu_info says so)
    assert set(data["gemm_gflops"]) == {"float32"} | ({"bfloat16"} if env["cpu_info"]["bf16_native"] else set())
    assert data["plan"]["model_dtypes"] == ["float32", "bfloat16"]
    assert data["runtime_s"] > 0
    assert {"torch.compile providers (--tiny: compiling takes minutes on a CPU)"} <= set(data["plan"]["left_out"])

    # the CPU facts (deeplab_fast.cpu_info()) in every result file
    info = env["cpu_info"]
    assert set(info) >= {"capability", "supported", "isa", "amx", "bf16_native", "cpu"}, info
    assert info["capability"] in info["supported"] and isinstance(info["isa"], list)
    assert isinstance(info["amx"], bool) and isinstance(info["bf16_native"], bool)

    lines = _one(out, ".csv").read_text().splitlines()
    assert lines[0].startswith("# {") and json.loads(lines[0][2:])["torch"] == torch.__version__
    assert json.loads(lines[0][2:])["cpu_info"] == info
    header = next(csv.reader([lines[1]]))
    for field in ("part", "family", "case", "provider", "dtype", "layout", "batch", "median_ms", "skipped"):
        assert field in header, field
    assert len(lines) - 2 == len(data["rows"])

    assert _one(out, ".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = _one(out, ".md").read_text()
    for heading in ("## Targets", "## Kernels", "## Models", "## Skipped", "## Left out of this suite"):
        assert heading in md, heading
    assert f"CPU kernel path in use: {info['capability']} (supported: {', '.join(info['supported'])})" in md
    assert "ISA flags: " + (", ".join(info["isa"]) or "none") in md
    assert md in proc.stdout  # the summary is printed too
    assert "Total runtime:" in proc.stderr
    # the kernel progress bar has a total (2 dwconv + 3 upsample cases in --tiny) and reaches it
    assert re.search(r"kernels: 100%.*\b5/5\b", proc.stderr), proc.stderr[-2000:]
    phases = data["phases_s"]
    assert {"startup", "yardsticks", "models", "kernels/dwconv/float32", "kernels/upsample/float32"} <= set(phases)
    assert "- Time per phase: " in md


def test_tiny_run_rows_cover_kernels_and_models(tiny_run):
    _, out = tiny_run
    data = json.loads(_one(out, ".json").read_text())
    rows = data["rows"]
    kernel_rows = [r for r in rows if r["part"] == "kernels"]
    # each family is there: measured, or listed as skipped with the reason
    for family in ("dwconv", "upsample"):
        fam = [r for r in kernel_rows if family in r["family"]]
        assert fam, f"no row for kernel family {family}"
        assert all(r["skipped"] or r["median_ms"] > 0 for r in fam)
    for r in kernel_rows:
        for field in (
            "family",
            "case",
            "provider",
            "dtype",
            "layout",
            "batch",
            "median_ms",
            "gb_s",
            "pct_bw",
            "copy_ratio",
            "copy_hot_ratio",
            "skipped",
        ):
            assert field in r, (field, r)
        if not r["skipped"]:
            assert r["gb_s"] > 0 and r["copy_ratio"] > 0 and r["copy_hot_ratio"] > 0
            # the copy yardstick is timed among the providers but never reported as one
            assert "yardstick" not in r["provider"], r["provider"]
        # a CPU run never names a baseline after a GPU library
        if r["dtype"] and not torch.cuda.is_available():
            assert "cudnn" not in r["provider"].lower(), r["provider"]
    # the CPU kernels ran on every path this CPU supports, each a provider, in each family
    from deeplab_fast.testing import supported_cpu_capabilities

    paths = list(supported_cpu_capabilities())
    assert len(paths) >= 1
    for family, ours in (("dwconv", "deeplab_fast-cpu"), ("upsample", "ours-cpu")):
        timed = [r for r in kernel_rows if r["family"] == family and not r["skipped"]]
        for path in paths:
            got = [r for r in timed if r["provider"] == f"{ours}[{path}]"]
            assert got and all(r["cpu_capability"] == path and r["copy_ratio"] > 0 for r in got), (family, path)
        assert all(r["cpu_capability"] == "" for r in timed if "[" not in r["provider"])

    models = [r for r in rows if r["part"] == "models"]
    ran = {(r["model"], r["provider_key"]) for r in models if not r["skipped"]}
    for model in ("resnet101", "xception65"):
        for provider in ("eager", "optimize"):
            assert (model, provider) in ran, (model, provider, [r["skipped"] for r in models])
    assert ("resnet101", "smp") in ran
    for r in models:
        assert r["skipped"] or (r["median_ms"] > 0 and r["images_s"] > 0), r
        if r["provider_key"] in ("eager", "optimize") and not r["skipped"]:
            assert r["gmacs"] > 0 and r["gflop_s"] > 0
            # % of the GEMM peak where the peak was measured in the row's dtype (a native one), else blank
            assert (r["pct_gemm"] > 0) if r["dtype"] in data["gemm_gflops"] else r["pct_gemm"] is None, r
            assert r["optimize_speedup"] > 0
        if r["provider_key"] == "smp" and not r["skipped"]:
            assert r["input"] == "64x64" and "divisible by 16" in r["note"]
    assert ("resnet101", "onnxruntime") in ran or torch.cuda.is_available()
    # bf16: optimize(model, dtype=torch.bfloat16) for both models (tiny runs it even without native bf16),
    # timed with the fp32 rows; onnxruntime has fp32 rows only
    bf16 = {r["model"]: r for r in models if r["dtype"] == "bfloat16"}
    assert set(bf16) == {"resnet101", "xception65"}
    for r in bf16.values():
        assert r["provider_key"] == "optimize" and not r["skipped"] and r["median_ms"] > 0, r
        assert "dtype=torch.bfloat16" in r["note"] and r["layout"] == "channels_last"
        assert r["optimize_speedup"] == pytest.approx(1.0) and r["optimize_bf16_speedup"] == pytest.approx(1.0)
    assert {r["dtype"] for r in models if r["provider_key"] == "onnxruntime"} == {"float32"}
    ort = [r for r in models if r["provider_key"] == "onnxruntime" and not r["skipped"]]
    for r in ort:
        assert r["optimize_bf16_speedup"] == pytest.approx(r["median_ms"] / bf16[r["model"]]["median_ms"])
    # memory: measured for resnet101's optimize() in --tiny, honestly marked elsewhere
    measured = [r for r in models if r["peak_mem_mb"] is not None]
    assert [(r["model"], r["provider_key"]) for r in measured] == [("resnet101", "optimize")]
    assert measured[0]["peak_mem_mb"] >= 0 and "VmHWM" in measured[0]["mem_method"]
    assert all(r["mem_method"] for r in models if not r["skipped"])
    # --tiny leaves torch.compile and torchvision out, and says so in the plan (checked above)
    assert not any(r["provider_key"].startswith("compile") or r["provider_key"] == "torchvision" for r in models)


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--reps", "0"], "--reps"),
        (["--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["--only", "everything"], "--only"),
        (["--full", "--tiny"], "exclude each other"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args, expect):
    proc = _run(*args, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], proc.stderr


def test_unwritable_out_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = _run("--tiny", "--out", str(blocker / "results"), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "not a writable folder" in lines[0], proc.stderr
    assert not list(tmp_path.glob("**/*.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu_is_one_line(tmp_path):
    proc = _run("--device", "cuda", "--tiny", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def _model_row(model, provider, ms, **kw):
    row = {
        "part": "models",
        "model": model,
        "provider_key": provider,
        "provider": provider,
        "dtype": "float32",
        "batch": 1,
        "median_ms": ms,
        "skipped": "",
    }
    row.update(kw)
    return row


def test_targets_pass_fail_and_missing():
    env = {"device": "cpu"}
    meta = {"plan": {"size": 513, "parts": ["models"]}}
    rows = [
        _model_row("resnet101", "eager", 130.0),
        _model_row("resnet101", "optimize", 100.0, pct_gemm=55.0),
        _model_row("resnet101", "smp", 120.0),
        _model_row("xception65", "eager", 300.0),
        _model_row("xception65", "optimize", 100.0),
        _model_row("xception65", "compile", None, skipped="no compiler"),
    ]
    got = [c for c in report.targets(rows, env, meta) if c["scope"] == "project"]
    tgt = [c for c in got if c["kind"] == "target"]
    assert [c["status"] for c in tgt] == ["PASS", "FAIL", "PASS"]
    assert tgt[0]["value"] == pytest.approx(1.3)
    aims = {c["text"].split(" (aim")[0]: c for c in got if c["kind"] == "aim"}
    assert aims["xception65: deeplab_fast optimize() is 3.00x faster than deeplab_fast eager"]["status"] == "PASS"
    skipped = [c for c in got if "torch.compile(eager)" in c["text"] and c["text"].startswith("xception65")]
    assert skipped[0]["status"] == "n/a" and "no compiler" in skipped[0]["text"]
    gemm = [c for c in got if "GEMM" in c["text"] and c["text"].startswith("resnet101")]
    assert gemm[0]["status"] == "PASS"
    # another configuration is computed but flagged
    flagged = report.targets(rows, {"device": "cpu"}, {"plan": {"size": 65}})
    assert all("not the target configuration: size 65" in c["text"] for c in flagged)


AMX_CPU = {
    "capability": "avx512",
    "supported": ["default", "avx2", "avx512"],
    "isa": ["amx_bf16", "amx_tile"],
    "amx": True,
    "bf16_native": True,
    "cpu": "Xeon",
}
AVX2_CPU = {
    "capability": "avx2",
    "supported": ["default", "avx2"],
    "isa": ["avx2", "f16c", "fma"],
    "amx": False,
    "bf16_native": False,
    "cpu": "EPYC",
}


def test_amx_targets_are_judged_only_on_an_avx512_amx_cpu():
    meta = {"plan": {"size": 513, "parts": ["models"]}}
    rows = [
        _model_row("resnet101", "optimize", 90.0),
        _model_row("resnet101", "optimize", 30.0, dtype="bfloat16"),
        _model_row("resnet101", "onnxruntime", 100.0),
        _model_row("xception65", "optimize", 110.0),
        _model_row("xception65", "optimize", None, dtype="bfloat16", skipped="no native bf16"),
        _model_row("xception65", "onnxruntime", 100.0),
    ]
    got = [c for c in report.targets(rows, {"device": "cpu", "cpu_info": AMX_CPU}, meta) if c["scope"] != "project"]
    assert [(c["kind"], c["status"]) for c in got] == [
        ("target", "PASS"),  # resnet101 fp32: 100 / 90 > 1
        ("target", "FAIL"),  # xception65 fp32: 100 / 110
        ("target", "PASS"),  # resnet101 bf16: 100 / 30 >= 2
        ("target", "n/a"),  # xception65 bf16 skipped: the reason is in the text
        ("aim", "PASS"),  # resnet101 bf16 >= 3x
        ("aim", "n/a"),
    ]
    assert got[2]["value"] == pytest.approx(100 / 30)
    assert "in bfloat16 skipped: see Skipped" in got[3]["text"]  # the reason itself is in the Skipped section
    assert "in bfloat16 is 3.33x faster than onnxruntime in float32" in got[2]["text"].replace(
        "deeplab_fast optimize() ", ""
    ).replace("onnxruntime (ONNX of eager)", "onnxruntime")
    # on an AVX2 CPU the same ratios are computed and shown, never judged
    avx2 = [c for c in report.targets(rows, {"device": "cpu", "cpu_info": AVX2_CPU}, meta) if c["scope"] != "project"]
    assert [c["status"] for c in avx2] == ["n/a"] * 6 and avx2[2]["value"] == pytest.approx(100 / 30)
    md = report.summary_markdown(rows, {"device": "cpu", "cpu_info": AVX2_CPU}, meta)
    assert "this CPU: path avx2, AMX no: computed, not judged here (n/a)" in md
    assert "CPU kernel path in use: avx2 (supported: default, avx2); ISA flags: avx2, f16c, fma; AMX: no" in md
    assert "CPU facts: not recorded" in report.summary_markdown(rows, {"device": "cpu"}, meta)


def test_report_writes_files_from_rows(tmp_path):
    rows = [
        {
            "part": "kernels",
            "family": "dwconv",
            "case": "c256 65x65 d1",
            "provider": p,
            "dtype": d,
            "layout": "NCHW",
            "batch": 1,
            "median_ms": ms,
            "gb_s": 10.0,
            "pct_bw": 50.0,
            "copy_ratio": ms / 0.1,
            "skipped": "",
        }
        for p, ms in (("deeplab_fast cpu", 0.2), ("eager oneDNN", 0.5))
        for d in ("float32", "bfloat16")
    ]
    rows.append(
        {
            "part": "kernels",
            "family": "upsample",
            "case": "(all cases)",
            "provider": "(all providers)",
            "dtype": "float32",
            "median_ms": None,
            "skipped": "benchmarks/bench_upsample.py is not in this checkout",
        }
    )
    rows += [
        _model_row("resnet101", "eager", 130.0, optimize_speedup=1.3),
        _model_row("resnet101", "optimize", 100.0, optimize_speedup=1.0),
        _model_row("resnet101", "smp", None, skipped="segmentation_models_pytorch is not installed"),
    ]
    env = {"device": "cpu", "cpu": "test cpu", "torch": torch.__version__, "threads": 2}
    meta = {
        "plan": {"suite": "quick", "size": 513, "parts": ["kernels", "models"], "left_out": ["x (why)"]},
        "bandwidth_gb_s": 10.0,
        "gemm_gflops": {"float32": 100.0},
        "runtime_s": 61.0,
    }
    paths = report.write_all(rows, env, meta, str(tmp_path), "stem")
    assert Path(paths["png"]).read_bytes()[:4] == b"\x89PNG"
    md = Path(paths["md"]).read_text()
    assert "**PASS** resnet101: deeplab_fast optimize() is 1.30x faster than deeplab_fast eager" in md
    assert "segmentation_models_pytorch is not installed" in md and "bench_upsample.py is not in this checkout" in md
    assert "- x (why)" in md and "runtime 1 min 1 s" in md
    data = json.loads(Path(paths["json"]).read_text())
    assert data["targets"][0]["status"] == "PASS" and len(data["rows"]) == len(rows)


def test_reps_for_budget_floor_and_cap():
    import harness

    assert harness.reps_for(0.001, reps=20, min_reps=5, budget_s=1.0) == 20  # fast: the cap
    assert harness.reps_for(0.1, reps=20, min_reps=5, budget_s=1.0) == 10  # what fits in the budget
    assert harness.reps_for(3.0, reps=20, min_reps=5, budget_s=1.0) == 5  # slow: never below the floor
    assert harness.reps_for(3.0, reps=20, min_reps=5, budget_s=None) == 20  # explicit --reps: fixed
    assert harness.reps_for(3.0, reps=1, min_reps=5, budget_s=None) == 1


def test_time_interleaved_budget_gives_slow_providers_fewer_reps_and_keeps_them_interleaved():
    import time

    import harness

    calls: list[str] = []

    def provider(name, seconds):
        def fn():
            calls.append(name)
            if seconds:
                time.sleep(seconds)

        return fn

    providers = {"slow": provider("slow", 0.05), "fast": provider("fast", 0.0)}
    # slow sleeps >= 0.05 s: 0.1 s of budget fits at most 2 calls, so it gets the floor of 5; fast gets the cap
    times = harness.time_interleaved(providers, "cpu", warmup=2, reps=8, budget_s=0.1, min_reps=5)
    assert len(times["slow"]) == 5 and len(times["fast"]) == 8
    # warm-up: slow stops after one call (it took longer than budget / min_reps), fast has both
    assert calls[:3] == ["slow", "fast", "fast"]
    # timed: A B A B ... while both run, then the fast one alone
    assert calls[3:] == ["slow", "fast"] * 5 + ["fast"] * 3

    calls.clear()
    fixed = harness.time_interleaved(providers, "cpu", warmup={"slow": 0, "fast": 1}, reps=3)
    assert len(fixed["slow"]) == len(fixed["fast"]) == 3
    assert calls == ["fast"] + ["slow", "fast"] * 3


def test_gemm_peak_takes_the_given_shapes():
    import harness

    got = harness.measure_gemm_gflops("cpu", torch.float32, [(64, 64, 64), (96, 32, 80)], reps=2)
    assert got > 0
    assert {(1024, 1024, 1024), (2048, 2048, 2048), (1089, 728, 728)} == set(harness.GEMM_SHAPES)


def test_speed_words_say_slower_below_one():
    assert report.speed_words(1.534) == "1.53x faster"
    assert report.speed_words(0.65) == "1.54x slower"
    assert report.speed_words(1.0) == "1.00x faster"
    rows = [_model_row("xception65", "eager", 65.0), _model_row("xception65", "optimize", 100.0)]
    got = report.targets(rows, {"device": "cpu"}, {"plan": {"size": 513}})
    text = [c["text"] for c in got if c["kind"] == "target" and c["text"].startswith("xception65")][0]
    assert "optimize() is 1.54x slower than deeplab_fast eager" in text and "0.65" not in text


def test_skipped_rows_are_one_line_per_reason():
    rows = [
        {"family": "dwconv", "provider": p, "case": c, "skipped": why}
        for c in ("a", "b", "c")
        for p, why in (("deeplab_fast-cuda", "no GPU"), ("deeplab_fast-triton", "no GPU"), ("cpu", ""))
    ]
    rows.append({"model": "resnet101", "provider": "smp DeepLabV3Plus", "skipped": "smp is not installed"})
    lines = report.skipped_lines(rows)
    assert lines == [
        "- no GPU (6 rows: dwconv: deeplab_fast-cuda, dwconv: deeplab_fast-triton)",
        "- smp is not installed (1 row: resnet101: smp DeepLabV3Plus)",
    ]


def test_model_notes_name_their_model(tmp_path):
    rows = [
        _model_row("resnet101", "onnxruntime", 90.0, note="export 2 s", optimize_speedup=1.1),
        _model_row("xception65", "onnxruntime", 90.0, note="export 3 s", optimize_speedup=0.9),
    ]
    env = {"device": "cpu", "cpu": "test cpu", "threads": 2}
    md = report.summary_markdown(rows, env, {"plan": {"suite": "quick", "parts": ["models"]}})
    assert "- resnet101, onnxruntime: export 2 s" in md and "- xception65, onnxruntime: export 3 s" in md


def test_chart_has_one_log_panel_per_kernel_family(tmp_path):
    def krow(family, case, provider, ratio, layout="channels_last", batch=1):
        return {
            "part": "kernels",
            "family": family,
            "case": case,
            "provider": provider,
            "dtype": "float32",
            "layout": layout,
            "batch": batch,
            "copy_ratio": ratio,
            "skipped": "",
        }

    rows = [
        krow("dwconv", "aspp", "deeplab_fast-cpu", 1.9),
        krow("dwconv", "aspp", "oneDNN eager", 105.0, layout="nchw", batch=4),
        krow("upsample", "decoder", "ours-cpu", 0.8),
        krow("upsample", "decoder", "eager", 2.5),
        _model_row("resnet101", "eager", 130.0, optimize_speedup=1.3),
    ]
    titles = report.plot_speedups(rows, str(tmp_path / "c.png"), caption="test machine")
    assert titles[0] == "Models" and len(titles) == 3
    assert titles[1].startswith("Kernels: dwconv") and titles[2].startswith("Kernels: upsample")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert report.is_ours("deeplab_fast-cpu") and report.is_ours("ours-cpu") and not report.is_ours("eager")


def _result(path: Path, cpu: str, suite: str, date: str) -> Path:
    env = {"device": "cpu", "cpu": cpu, "threads": 2, "date": date, "torch": "x", "cpu_info": AVX2_CPU}
    rows = [_model_row("resnet101", "eager", 130.0, optimize_speedup=1.3)]
    data = {"environment": env, "plan": {"suite": suite, "parts": ["models"], "size": 513}, "rows": rows}
    path.write_text(json.dumps(data))
    return path


def test_publish_keeps_the_newest_full_run_per_machine(tmp_path):
    old_full = _result(tmp_path / "a.json", "AMD EPYC", "full", "2026-11-24T01:00:00")
    new_full = _result(tmp_path / "b.json", "AMD EPYC", "full", "2026-11-24T03:00:00")
    newer_quick = _result(tmp_path / "c.json", "AMD EPYC", "quick", "2026-11-24T04:00:00")
    xeon = _result(tmp_path / "d.json", "Intel(R) Xeon(R) Platinum", "quick", "2026-12-02T01:00:00")
    docs = tmp_path / "docs"
    assert publish.main([str(p) for p in (old_full, new_full, newer_quick, xeon)] + ["--docs", str(docs)]) == 0
    assert sorted(p.name for p in docs.iterdir()) == [
        "cpu_amd-epyc.csv",
        "cpu_amd-epyc.md",
        "cpu_amd-epyc.png",
        "cpu_intel-r-xeon-r-platinum.csv",
        "cpu_intel-r-xeon-r-platinum.md",
        "cpu_intel-r-xeon-r-platinum.png",
    ]
    assert "Published from `b.json`" in (docs / "cpu_amd-epyc.md").read_text()
    # the published summary names the CPU kernel path and the ISA flags
    assert (
        "CPU kernel path in use: avx2 (supported: default, avx2); ISA flags: avx2, f16c, fma"
        in (docs / "cpu_amd-epyc.md").read_text()
    )
    assert (docs / "cpu_amd-epyc.csv").read_text().startswith("# {")
    assert publish.main([str(tmp_path / "missing.json"), "--docs", str(docs)]) == 2


def test_default_results_folder_is_git_ignored():
    import run

    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(run.DEFAULT_OUT / "x.json")], cwd=REPO, capture_output=True
    )
    assert ignored.returncode == 0, "benchmarks/run.py's default --out must be git-ignored"
    tracked = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout == ""


def test_provider_entries_select_by_model_and_dtype():
    import bench_models

    entries = ("eager@float32", "resnet101:onnxruntime", "optimize@bfloat16", "xception65:smp")
    assert bench_models.selected(entries, "xception65", "eager", "float32")
    assert not bench_models.selected(entries, "xception65", "eager", "bfloat16")
    assert bench_models.selected(entries, "resnet101", "onnxruntime", "float32")
    assert not bench_models.selected(entries, "xception65", "onnxruntime", "float32")
    assert bench_models.selected(entries, "resnet101", "optimize")  # any dtype
    # onnxruntime exists in fp32 only: in bf16 it is left out, never a row; smp only for resnet101
    got = bench_models.wanted("resnet101", (torch.float32, torch.bfloat16), ("optimize", "onnxruntime", "smp"))
    assert got == [
        ("optimize", torch.float32),
        ("smp", torch.float32),
        ("onnxruntime", torch.float32),
        ("optimize", torch.bfloat16),
        ("smp", torch.bfloat16),
    ]
    assert bench_models.wanted("xception65", (torch.bfloat16,), ("onnxruntime", "smp")) == []
    assert bench_models.steps(("resnet101",), ("optimize",), (torch.float32, torch.bfloat16), 5, 1) == 2 * 8


def test_speedups_compare_like_dtypes_and_bf16():
    import bench_models

    rows = [
        _model_row("resnet101", "eager", 200.0),
        _model_row("resnet101", "optimize", 100.0),
        _model_row("resnet101", "onnxruntime", 120.0),
        _model_row("resnet101", "optimize", 40.0, dtype="bfloat16"),
        _model_row("resnet101", "eager", 80.0, dtype="bfloat16"),
        _model_row("resnet101", "compile_optimize", None, dtype="bfloat16", skipped="no compiler"),
    ]
    bench_models.add_speedups(rows)
    by = {(r["provider_key"], r["dtype"]): r for r in rows}
    assert by[("onnxruntime", "float32")]["optimize_speedup"] == pytest.approx(1.2)
    assert by[("onnxruntime", "float32")]["optimize_bf16_speedup"] == pytest.approx(3.0)
    assert by[("eager", "bfloat16")]["optimize_speedup"] == pytest.approx(2.0)  # against optimize() in bf16
    assert all(r["compile_optimize_speedup"] is None for r in rows)
    assert by[("compile_optimize", "bfloat16")]["optimize_bf16_speedup"] is None


@pytest.mark.parametrize("native", [False, True])
def test_quick_plan_skips_bf16_only_without_native_bf16(monkeypatch, native):
    import harness
    import run

    monkeypatch.setattr(harness, "native_dtype", lambda device, d: d == "float32" or native)
    plan = run.Plan(run.parse_args(["--only", "models"]), torch.device("cpu"))
    assert plan.model_dtypes == ["float32", "bfloat16"]
    assert "optimize@bfloat16" in plan.providers and "onnxruntime@float32" in plan.providers
    assert not any(p.endswith("@bfloat16") and not p.startswith("optimize") for p in plan.providers)
    assert plan.gemm_dtypes == (["float32", "bfloat16"] if native else ["float32"])
    if native:
        assert plan.model_skip == {}
    else:
        reason = plan.model_skip["optimize@bfloat16"]
        assert "no native bf16" in reason.lower() and "--full or --dtype bf16 runs it" in reason
    # --full runs bf16 anyway, with eager and torch.compile(optimize()) too; --dtype bf16 runs it in the quick suite
    full = run.Plan(run.parse_args(["--only", "models", "--full"]), torch.device("cpu"))
    assert {"eager@bfloat16", "optimize@bfloat16", "compile_optimize@bfloat16"} <= set(full.providers)
    # ... but without native bf16 only optimize() (the others are skipped rows saying how to run them)
    assert set(full.model_skip) == (set() if native else {"eager@bfloat16", "compile_optimize@bfloat16"})
    assert all("--full --dtype fp32,bf16 runs it" in why for why in full.model_skip.values())
    asked = run.Plan(run.parse_args(["--only", "models", "--dtype", "bf16"]), torch.device("cpu"))
    assert asked.model_skip == {} and asked.providers == ("optimize@bfloat16",)
    assert any("onnxruntime in bf16/fp16" in item for item in asked.left_out)


def test_forced_cpu_path_is_restored_after_an_error():
    import harness

    import deeplab_fast

    before = deeplab_fast.cpu_capability()
    paths = harness.cpu_capabilities("cpu")
    assert paths and paths[-1] == before and harness.cpu_capabilities("cuda") == ()
    seen = []

    def failing():
        seen.append(deeplab_fast.cpu_capability())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        harness.on_cpu_capability(paths[0], failing)()
    assert seen == [paths[0]] and deeplab_fast.cpu_capability() == before
    assert harness.capability_of("ours-cpu[avx2]") == "avx2" and harness.capability_of("eager") == ""
