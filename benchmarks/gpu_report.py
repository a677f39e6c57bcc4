"""The report of gpu_check: `gpu_check.json` (everything) and `gpu_check.md` (what a reader needs), written
atomically (deeplab_fast._files) after every stage, so a run that is cut short still leaves one.

Markdown sections: the stage table (status, time, limit, note), then per stage its rows: failed checks
first and a count of the passed ones (correctness, sanitizer), the timing table per case, the model table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeplab_fast._files import atomic_write_text

BAD = ("failed", "timed out", "crashed")


def report_dict(meta: dict[str, Any], stages: list[Any]) -> dict[str, Any]:
    """The JSON report: meta (mode, command, times, plan), environment and each stage's result."""
    env = next((r for s in stages for r in s.records if r.get("kind") == "environment"), {})
    env = {k: v for k, v in env.items() if k != "kind"}
    return {**meta, "environment": env, "stages": [s.to_dict() for s in stages], "ok": overall_ok(stages)}


def overall_ok(stages: list[Any]) -> bool:
    """True when no stage failed, timed out or crashed."""
    return not any(s.status in BAD for s in stages)


def write_report(out: Path, meta: dict[str, Any], stages: list[Any]) -> dict[str, Path]:
    """Write gpu_check.json, gpu_check.md and each stage's full logs (logs/<name>.log) into `out`."""
    data = report_dict(meta, stages)
    paths = {"json": out / "gpu_check.json", "md": out / "gpu_check.md"}
    atomic_write_text(paths["json"], json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(paths["md"], markdown(data))
    for s in stages:
        for name, text in s.logs.items():
            atomic_write_text(out / "logs" / f"{name}.log", text)
    return paths


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)).replace("|", "/") for k, _ in columns) + " |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    """The Markdown report of `data` (report_dict's result)."""
    env = data.get("environment", {})
    gpus = env.get("gpus") or []
    machine = ", ".join(f"{g['name']} (sm_{g['capability'].replace('.', '')})" for g in gpus) or env.get("cpu", "?")
    lines = [f"# gpu_check: {'all stages ran clean' if data['ok'] else 'FAILURES'} ({data['mode']})", ""]
    if data["mode"] == "rehearse":
        lines += [
            "A rehearsal on a machine without a GPU, at tiny shapes: the CUDA kernels ran through their host",
            "emulation, Triton through its interpreter, times are host-clock times of emulated or interpreted",
            "code. It shows that every stage runs; no figure here is a GPU measurement.",
            "",
        ]
    lines += [
        f"- machine: {machine}; torch {env.get('torch', '?')}, CUDA {env.get('torch_cuda_build', '?')}, "
        f"cuDNN {env.get('cudnn', '-')}, triton {env.get('triton', '?')}, Python {env.get('python', '?')}",
        f"- command: `{data['command']}`; started {data['started']}, {data['total_s']:.0f} s in all",
        "",
        "| stage | status | seconds | limit | note |",
        "|---|---|---|---|---|",
    ]
    for s in data["stages"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['limit_s']:.0f} | {s['note']} |")
    for s in data["stages"]:
        body = _SECTIONS.get(s["name"], lambda s: [])(s)
        if body or s["status"] in BAD:
            lines += ["", f"## {s['name']}: {s['status']}", ""]
            lines += body
            if s["status"] in BAD and s.get("log_tail"):
                lines += ["", "Last lines of the log:", "", "```", *s["log_tail"].strip().splitlines()[-15:], "```"]
    return "\n".join(lines) + "\n"


def _build_section(s: dict[str, Any]) -> list[str]:
    out = []
    for r in s["records"]:
        if r.get("kind") == "extension":
            where = r.get("path") or r.get("error", "")
            state = r["stale"] or "current"
            out.append(f"- deeplab_fast._C {r['when']}: {where}; CUDA kernels: {r.get('cuda_kernels')}; {state}")
        elif r.get("kind") == "build_command":
            out.append(f"- ran `{r['command']}` with {r['env']}; ninja: {r['ninja']}")
    return out


CHECK_COLUMNS = [
    ("op", "op"),
    ("case", "case"),
    ("backend", "backend"),
    ("batch", "batch"),
    ("dtype", "dtype"),
    ("layout", "layout"),
    ("direction", "direction"),
    ("max_err", "max error"),
    ("torch_err", "PyTorch's error"),
    ("error", "why"),
]


def _checks_section(s: dict[str, Any]) -> list[str]:
    checks = [r for r in s["records"] if r.get("kind") == "check"]
    failed = [r for r in checks if r.get("ok") is False]
    skipped = [r for r in checks if r.get("skipped")]
    out = [f"{len(checks) - len(failed) - len(skipped)} checks passed, {len(failed)} failed, {len(skipped)} skipped."]
    if failed:
        out += ["", "Failed:", "", *_table(failed, CHECK_COLUMNS)]
    for r in skipped:
        out.append(f"- skipped: {r['name']} ({r['backend']}): {r['skipped']}")
    extras = [r for r in checks if r.get("op") == r.get("name") and r.get("ok") and not r.get("skipped")]
    for r in extras:
        out.append(f"- passed: {r['name']} ({r['backend']})")
    worst = _worst_by_backend(checks)
    if worst:
        out += ["", "Largest error per backend, op and dtype (passed checks):", ""]
        out += _table(worst, [("backend", "backend"), ("op", "op"), ("dtype", "dtype"), ("max_err", "max error"),
                              ("torch_err", "PyTorch's error then"), ("at", "at")])  # fmt: skip
    return out


def _worst_by_backend(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[tuple, dict[str, Any]] = {}
    for r in checks:
        if not r.get("ok") or r.get("max_err") is None or r.get("skipped") or r.get("op") == r.get("name"):
            continue  # failed, skipped, or an extra (graph, compile: compared with the eager module)
        key = (r.get("backend"), r.get("op"), r.get("dtype"))
        if key not in best or r["max_err"] > best[key]["max_err"]:
            best[key] = dict(r, at=f"{r.get('case')} b{r.get('batch')} {r.get('layout')} {r.get('direction')}")
    return [best[k] for k in sorted(best, key=lambda k: tuple(str(x) for x in k))]


def _sanitizer_section(s: dict[str, Any]) -> list[str]:
    out = ["The subset of correctness checks ran once under each tool; the counts below add up both runs.", ""]
    for r in s["records"]:
        if r.get("kind") == "sanitizer":
            out.append(
                f"- {r['tool']}: {r['errors'] if r['errors'] is not None else 'no summary'} errors, {r['seconds']} s"
            )
    return out + _checks_section(s)


TIMING_COLUMNS = [
    ("case", "case"),
    ("direction", "direction"),
    ("provider", "provider"),
    ("median_us", "median us"),
    ("min_us", "min us"),
    ("gb_s", "GB/s"),
    ("pct_copy_bw", "% of copy"),
    ("speedup_vs_eager", "eager / this"),
    ("error", "why not"),
]


def _timings_section(s: dict[str, Any]) -> list[str]:
    out = []
    for r in s["records"]:
        if r.get("kind") == "bandwidth":
            clock = "CUDA events, L2 flushed before each repetition" if r["clock"] == "cuda_events" else "host clock"
            out.append(f"Device-to-device copy: {r['copy_gb_s']:.0f} GB/s (read + write). Clock: {clock}.")
    rows = [r for r in s["records"] if r.get("kind") == "timing"]
    if rows:
        first = rows[0]
        out += ["", f"Batch {first['batch']}, {first['dtype']}, {first['layout']}; GB/s of the ideal traffic.", ""]
        out += _table(rows, TIMING_COLUMNS)
    return out


MODEL_COLUMNS = [
    ("model", "model"),
    ("batch", "batch"),
    ("dtype", "dtype"),
    ("variant", "variant"),
    ("median_ms", "median ms"),
    ("images_per_s", "images/s"),
    ("rel_diff_vs_eager", "max diff vs eager (rel.)"),
    ("error", "why"),
]


def _models_section(s: dict[str, Any]) -> list[str]:
    rows = [r for r in s["records"] if r.get("kind") in ("model", "train_step")]
    return _table(rows, MODEL_COLUMNS) if rows else []


_SECTIONS = {
    "build": _build_section,
    "correctness": _checks_section,
    "sanitizer": _sanitizer_section,
    "timings": _timings_section,
    "models": _models_section,
}
