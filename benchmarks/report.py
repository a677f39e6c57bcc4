"""Result files of benchmarks/run.py: JSON + CSV (all rows), a Markdown summary and a PNG chart of speedups.

The summary states the machine, the yardsticks measured in the same run (copy bandwidth, GEMM peak), the
project's targets as PASS/FAIL lines, the kernel and model tables, every skipped provider with its reason
and what the suite left out.
"""

from __future__ import annotations

import os
import re
from typing import Any

import harness

from deeplab_fast._files import atomic_path, atomic_write_text

# (model, our provider, reference provider, target speedup). The project's targets: CPU, fp32, 513, batch 1.
TARGETS = (
    ("resnet101", "optimize", "eager", 1.3),
    ("resnet101", "optimize", "smp", 1.3),
    ("xception65", "optimize", "eager", 1.5),
)
TARGET_CONFIG = {"device": "cpu", "dtype": "float32", "size": 513, "batch": 1}
AIM_SPEEDUP = 2.0
AIM_PCT_GEMM = 50.0
# Issue 17's targets on a CPU with AVX-512 and AMX (the same configuration, 2 threads): (model, our provider,
# its dtype, reference provider, its dtype, speedup, strict). Judged only where cpu_info() reports the avx512
# path and AMX; elsewhere they are computed and shown as n/a (an AVX2 CPU answers to "no regression" instead).
AMX_TARGETS = (
    ("resnet101", "optimize", "float32", "onnxruntime", "float32", 1.0, True),
    ("xception65", "optimize", "float32", "onnxruntime", "float32", 1.0, True),
    ("resnet101", "optimize", "bfloat16", "onnxruntime", "float32", 2.0, False),
    ("xception65", "optimize", "bfloat16", "onnxruntime", "float32", 2.0, False),
)
AMX_AIM_BF16 = 3.0

KERNEL_COLUMNS = [
    "family",
    "case",
    "provider",
    "dtype",
    "layout",
    "batch",
    "median_ms",
    "reps",
    "gb_s",
    "pct_bw",
    "copy_ratio",
    "copy_hot_ratio",
]
MODEL_COLUMNS = [
    "model",
    "provider",
    "dtype",
    "batch",
    "input",
    "median_ms",
    "reps",
    "images_s",
    "gmacs",
    "gflop_s",
    "pct_gemm",
    "peak_mem_mb",
    "optimize_speedup",
    "compile_optimize_speedup",
    "optimize_bf16_speedup",
    "first_call_s",
]
MODEL_HEADERS = {
    "median_ms": "median ms",
    "images_s": "images/s",
    "gmacs": "GMACs",
    "gflop_s": "GFLOP/s",
    "pct_gemm": "% GEMM peak",
    "peak_mem_mb": "peak MiB",
    "optimize_speedup": "optimize() is x faster",
    "compile_optimize_speedup": "compile(optimize()) is x faster",
    "optimize_bf16_speedup": "optimize(bf16) is x faster",
    "first_call_s": "first call s",
}
KERNEL_HEADERS = {
    "median_ms": "median ms",
    "gb_s": "GB/s",
    "pct_bw": "% of copy BW",
    "copy_ratio": "time / copy time",
    "copy_hot_ratio": "time / hot copy time",
}


def _rows(rows: list[dict[str, Any]], part: str, *, skipped: bool) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("part") == part and bool(r.get("skipped")) == skipped]


def _find(rows: list[dict[str, Any]], model: str, provider: str, dtype: str, batch: int) -> dict[str, Any] | None:
    for r in rows:
        if (
            r.get("part") == "models"
            and r.get("model") == model
            and r.get("provider_key") == provider
            and r.get("dtype") == dtype
            and r.get("batch") == batch
        ):
            return r
    return None


def targets(rows: list[dict[str, Any]], env: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's must-reach targets and aims, evaluated on this run's rows.

    Each entry: kind ("target"/"aim"), text, status ("PASS", "FAIL" or "n/a") and value. Results from another
    configuration than CPU/fp32/513/batch 1 are still computed but flagged in the text.
    """
    plan = meta.get("plan", {})
    size = plan.get("size")
    off = []
    if env.get("device") != TARGET_CONFIG["device"]:
        off.append(f"device {env.get('device')}")
    if size != TARGET_CONFIG["size"]:
        off.append(f"size {size}")
    caveat = f" [not the target configuration: {', '.join(off)}]" if off else ""
    dtype, batch = TARGET_CONFIG["dtype"], TARGET_CONFIG["batch"]
    out: list[dict[str, Any]] = []

    def ratio(
        model: str, fast: str, slow: str, fast_dtype: str = dtype, slow_dtype: str = dtype, brief: bool = False
    ) -> tuple[float | None, str]:
        a = _find(rows, model, fast, fast_dtype, batch)
        b = _find(rows, model, slow, slow_dtype, batch)
        for r, name, d in ((a, fast, fast_dtype), (b, slow, slow_dtype)):
            if r is None:
                return None, f"{name} in {d} was not run"
            if r.get("skipped"):
                reason = "see Skipped" if brief else r["skipped"]
                return None, f"{r['provider']} in {d} skipped: {reason}"
        return b["median_ms"] / a["median_ms"], ""

    from bench_models import LABELS, MODELS

    for model, fast, slow, goal in TARGETS:
        value, why = ratio(model, fast, slow)
        text = f"{model}: {LABELS[fast]} is {speed_words(value)} than {LABELS[slow]} (target >= {goal}x faster)"
        out.append(_entry("target", text + (f": {why}" if why else "") + caveat, value, goal))
    for model in ("resnet101", "xception65"):
        value, why = ratio(model, "optimize", "eager")
        text = (
            f"{model}: {LABELS['optimize']} is {speed_words(value)} than {LABELS['eager']} "
            f"(aim >= {AIM_SPEEDUP}x faster)"
        )
        out.append(_entry("aim", text + (f": {why}" if why else "") + caveat, value, AIM_SPEEDUP))
        for other in ("compile", "onnxruntime"):
            value, why = ratio(model, "optimize", other)
            text = f"{model}: {LABELS['optimize']} is {speed_words(value)} than {LABELS[other]} (aim: faster)"
            out.append(_entry("aim", text + (f": {why}" if why else "") + caveat, value, 1.0, strict=True))
        row = _find(rows, model, "optimize", dtype, batch)
        pct = row.get("pct_gemm") if row and not row.get("skipped") else None
        text = (
            f"{model}: {LABELS['optimize']} reaches {_fmt(pct, '.0f')}% of the GEMM peak measured in this run "
            f"(aim >= {AIM_PCT_GEMM:.0f}%)"
        )
        why = "" if pct is not None else ": no MAC count or no row"
        out.append(_entry("aim", text + why + caveat, pct, AIM_PCT_GEMM))

    # issue 17: fp32 and bf16 against onnxruntime fp32, judged on an AVX-512/AMX CPU only
    judged, _ = amx_machine(env)
    checks = [("target", *t) for t in AMX_TARGETS]
    checks += [("aim", m, "optimize", "bfloat16", "onnxruntime", "float32", AMX_AIM_BF16, False) for m in MODELS]
    for kind, model, fast, fast_dtype, slow, slow_dtype, goal, strict in checks:
        value, why = ratio(model, fast, slow, fast_dtype, slow_dtype, brief=True)
        want = "faster" if strict and goal == 1.0 else f">= {goal:g}x faster"
        text = (
            f"{model}: {LABELS[fast]} in {fast_dtype} is {speed_words(value)} than {LABELS[slow]} in {slow_dtype} "
            f"({kind} on an AVX-512/AMX CPU: {want})"
        )
        entry = _entry(kind, text + (f": {why}" if why else "") + caveat, value, goal, strict)
        entry["scope"] = "avx512_amx"
        if not judged:
            entry["status"] = "n/a"
        out.append(entry)
    return out


def amx_machine(env: dict[str, Any]) -> tuple[bool, str]:
    """(whether the run's CPU uses the avx512 kernel path and has AMX, the CPU facts in words)."""
    info = env.get("cpu_info") or {}
    if env.get("device") != "cpu":
        return False, f"this run is on {env.get('device')}"
    if "capability" not in info:
        return False, f"CPU facts unknown ({info.get('error', 'no cpu_info in this result')})"
    yes = info.get("capability") == "avx512" and bool(info.get("amx"))
    return yes, f"this CPU: path {info.get('capability')}, AMX {'yes' if info.get('amx') else 'no'}"


def cpu_facts_line(env: dict[str, Any]) -> str:
    """The CPU facts of a result in one line: kernel path in use, supported paths, ISA flags, AMX, native bf16."""
    info = env.get("cpu_info")
    if not info:
        return "CPU facts: not recorded (a result from before deeplab_fast.cpu_info())"
    if "capability" not in info:
        return f"CPU facts: unknown ({info.get('error', '?')})"
    isa = ", ".join(info.get("isa") or []) or "none"
    return (
        f"CPU kernel path in use: {info.get('capability')} (supported: {', '.join(info.get('supported') or [])}); "
        f"ISA flags: {isa}; AMX: {'yes' if info.get('amx') else 'no'}; "
        f"native bf16: {'yes' if info.get('bf16_native') else 'no'}"
    )


def _entry(kind: str, text: str, value: float | None, goal: float, strict: bool = False) -> dict[str, Any]:
    if value is None:
        status = "n/a"
    else:
        status = "PASS" if (value > goal if strict else value >= goal) else "FAIL"
    return {"kind": kind, "status": status, "text": text, "value": value, "goal": goal, "scope": "project"}


def speed_words(ratio: float | None) -> str:
    """`ratio` = other time / our time as words: 1.53 -> "1.53x faster", 0.65 -> "1.53x slower"."""
    if ratio is None:
        return "?x faster"
    if ratio >= 1:
        return f"{ratio:.2f}x faster"
    return f"{1 / ratio:.2f}x slower"


def _fmt(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def _reps_text(plan: dict[str, Any], part: str) -> str:
    """How the repetitions of `part` ("kernel" or "model") were chosen, in words."""
    most, budget = plan.get(f"{part}_reps"), plan.get(f"{part}_budget_s")
    if budget is None or (most or 0) <= (plan.get("min_reps") or 0):
        return f"{most} for every provider"
    return f"as many as fit in {budget:g} s per shape and provider, at least {plan.get('min_reps')}, at most {most}"


def _gemm_shapes(meta: dict[str, Any]) -> str:
    shapes = meta.get("gemm_shapes") or []
    return ", ".join(f"({m}x{k})@({k}x{n})" for m, k, n in shapes) or "the GEMM shapes"


def _table(rows: list[dict[str, Any]], columns: list[str], headers: dict[str, str]) -> str:
    renamed = [{headers.get(k, k): v for k, v in r.items()} for r in rows]
    return harness.markdown_table(renamed, [headers.get(c, c) for c in columns])


def summary_markdown(rows: list[dict[str, Any]], env: dict[str, Any], meta: dict[str, Any]) -> str:
    """The Markdown summary: machine, yardsticks, targets, tables, skipped providers, what was left out."""
    plan = meta.get("plan", {})
    runtime = meta.get("runtime_s") or 0.0
    device = env.get("device")
    hw = env.get("gpu") if device == "cuda" else env.get("cpu")
    versions = [f"torch {env.get('torch')}"]
    if device == "cuda":
        versions += [f"CUDA {env.get('cuda')}", f"cuDNN {env.get('cudnn')}"]
    versions.append(f"oneDNN: {env.get('onednn') or 'not available'}")
    lines = [
        f"# deeplab_fast benchmarks: {plan.get('suite', '?')} suite on {device}",
        "",
        f"- Machine: {hw}, {env.get('threads')} threads; {'; '.join(versions)}; Python {env.get('python')}",
        f"- Date: {env.get('date')}; command: `{env.get('command', '')}`; runtime {int(runtime // 60)} min "
        f"{runtime % 60:.0f} s",
        f"- Yardsticks measured in this run: copy bandwidth {_fmt(meta.get('bandwidth_gb_s'), '.1f')} GB/s "
        f"(read + write); GEMM peak (torch.mm, the best of {_gemm_shapes(meta)}; sampled before and after the "
        "models) " + ", ".join(f"{d} {v:.0f} GFLOP/s" for d, v in (meta.get("gemm_gflops") or {}).items()),
        f"- deeplab_fast extension built: {env.get('deeplab_fast_ext')}; CUDA kernels in it: "
        f"{env.get('deeplab_fast_cuda_kernels')}",
        f"- {cpu_facts_line(env)}",
    ]
    phases = meta.get("phases_s") or {}
    if phases:
        lines.append("- Time per phase: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in phases.items()))
    if "models" in plan.get("parts", []):
        checks = targets(rows, env, meta)
        project = [c for c in checks if c.get("scope") == "project"]
        amx = [c for c in checks if c.get("scope") == "avx512_amx"]
        lines += ["", "## Targets (CPU, fp32, 513x513, batch 1)", ""]
        lines += [f"- **{c['status']}** {c['text']}" for c in project if c["kind"] == "target"]
        lines += ["", "Aims (reported, not required):", ""]
        lines += [f"- {c['status']} {c['text']}" for c in project if c["kind"] == "aim"]
        judged, where = amx_machine(env)
        verdict = "judged here" if judged else "computed, not judged here (n/a)"
        lines += ["", f"On an AVX-512/AMX CPU, against onnxruntime fp32 ({where}: {verdict}):", ""]
        lines += [
            f"- **{c['status']}** {c['text']}" if c["kind"] == "target" else f"- {c['status']} {c['text']}" for c in amx
        ]

    kernels = _rows(rows, "kernels", skipped=False)
    if "kernels" in plan.get("parts", []):
        lines += ["", "## Kernels", ""]
        lines += [
            "Time is the median over the repetitions (`reps`: " + _reps_text(plan, "kernel") + "); GB/s counts the "
            "bytes the op must move (read inputs, write output once); `% of copy BW` compares it with the copy "
            "bandwidth yardstick. `time / copy time`: against a copy of the output tensor timed in the same "
            "interleaved rotation as the providers (so in the same cache state: after a slow eager provider, "
            "inputs and outputs come from memory); `time / hot copy time`: against the same copy timed back to "
            "back (a tensor that fits in L3 then copies from L3).",
            "",
        ]
        lines.append(_table(kernels, KERNEL_COLUMNS, KERNEL_HEADERS) if kernels else "(no kernel rows ran)")

    models = _rows(rows, "models", skipped=False)
    if "models" in plan.get("parts", []):
        lines += ["", "## Models", ""]
        lines += [
            "Eval forward, timed interleaved (A B C A B C ...) after warm-up, every provider and dtype of one "
            f"model in one rotation; median over `reps` runs per provider ({_reps_text(plan, 'model')}). "
            "`x faster` columns: this provider's time divided by optimize()'s / torch.compile(optimize())'s in "
            "the row's dtype, and by optimize()'s in bfloat16 (above 1: ours is faster). GMACs by "
            "deeplab_fast.count_macs; GFLOP/s = 2 x MACs / time; `first call s` includes torch.compile's "
            "compilation.",
            "",
        ]
        lines.append(_table(models, MODEL_COLUMNS, MODEL_HEADERS) if models else "(no model rows ran)")
        notes = sorted({f"{r['model']}, {r['provider']}: {r['note']}" for r in models if r.get("note")})
        if any((r.get("pct_gemm") or 0) > 100 for r in models):
            notes.append(
                "% GEMM peak above 100: the GEMM yardstick (best of the samples taken before and after the models) "
                "ran at a busier moment than that provider, or the provider beats every GEMM shape of the yardstick; "
                "on a shared machine, read it as noise"
            )
        methods = sorted({r["mem_method"] for r in models if r.get("mem_method")})
        if notes or methods:
            lines += ["", "Notes:", ""]
            lines += [f"- {n}" for n in notes]
            lines += [f"- peak MiB: {m}" for m in methods]

    lines += ["", "## Skipped", ""]
    lines += skipped_lines(rows) or ["- nothing"]
    lines += ["", "## Left out of this suite", ""]
    lines += [f"- {item}" for item in plan.get("left_out", [])] or ["- nothing"]
    return "\n".join(lines) + "\n"


def skipped_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One Markdown line per distinct reason: how many rows it skipped and which providers (family: provider)."""
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("skipped"):
            by_reason.setdefault(str(r["skipped"]), []).append(r)
    lines = []
    for reason, group in by_reason.items():
        who: list[str] = []
        for r in group:
            name = f"{r.get('model') or r.get('family')}: {r.get('provider')}"
            if name not in who:
                who.append(name)
        shown = ", ".join(who[:6]) + (f" and {len(who) - 6} more" if len(who) > 6 else "")
        count = f"{len(group)} row{'s' if len(group) > 1 else ''}"
        lines.append(f"- {reason} ({count}: {shown})")
    return lines


def machine_line(env: dict[str, Any]) -> str:
    """One line naming the machine and the versions, for the chart and the summary."""
    device = env.get("device")
    parts = [
        f"{device}: {env.get('gpu') if device == 'cuda' else env.get('cpu')}",
        f"{env.get('threads')} threads",
        f"torch {env.get('torch')}",
    ]
    if device == "cuda":
        parts += [f"CUDA {env.get('cuda')}", f"cuDNN {env.get('cudnn')}"]
    version = re.search(r"v\d+(\.\d+)+", str(env.get("onednn") or ""))
    parts.append(f"oneDNN {version.group(0) if version else 'n/a'}")
    info = env.get("cpu_info") or {}
    if "capability" in info:
        parts.append(f"CPU path {info['capability']}{', AMX' if info.get('amx') else ''}")
    parts.append(str(env.get("date", "")))
    return ", ".join(parts)


OURS_COLOR = "tab:orange"
PEER_COLOR = "tab:gray"


def is_ours(provider: str) -> bool:
    """Whether a kernel row's provider is one of deeplab_fast's own backends (highlighted in the chart)."""
    return provider.startswith(("deeplab_fast", "ours"))


def plot_speedups(rows: list[dict[str, Any]], path: str, caption: str = "") -> list[str]:
    """PNG chart: one panel for the models (speedup of optimize() over every provider) and one per kernel family
    (time / copy time on a log scale, our backends highlighted, each label naming case, layout and batch).

    Kernel panels show one dtype (float32 when it ran; the tables hold the rest). With nothing to plot it still
    writes a PNG that says so (the file always exists). Returns the panel titles (empty: nothing plotted).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [
        r
        for r in _rows(rows, "models", skipped=False)
        if r.get("optimize_speedup") and r.get("provider_key") != "optimize"
    ]
    kernels = [r for r in _rows(rows, "kernels", skipped=False) if r.get("copy_ratio")]
    kernel_dtypes = sorted({str(r.get("dtype")) for r in kernels})
    kernel_dtype = "float32" if "float32" in kernel_dtypes else (kernel_dtypes[0] if kernel_dtypes else "")
    kernels = [r for r in kernels if str(r.get("dtype")) == kernel_dtype]
    panels: list[tuple[str, list[dict[str, Any]]]] = [("models", models)] if models else []
    for family in dict.fromkeys(str(r.get("family")) for r in kernels):
        # grouped by case, layout and batch, so the providers of one measurement sit together
        members = [r for r in kernels if str(r.get("family")) == family]
        first = {case: i for i, case in reversed(list(enumerate(str(r.get("case")) for r in members)))}
        group = sorted(members, key=lambda r: (first[str(r.get("case"))], r.get("batch") or 0, str(r.get("layout"))))
        panels.append((family, group))
    if not panels:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "No speedups to plot: every provider needed for one was skipped (see the summary).",
            ha="center",
            va="center",
            fontsize=9,
            wrap=True,
        )
        fig.text(0.5, 0.02, caption, ha="center", fontsize=7)
        _save(fig, path)
        return []
    heights = [max(1.6, 0.16 * len(data) + 1.0) for _, data in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, (kind, data) in zip(axes[:, 0], panels, strict=True):
        if kind == "models":
            labels = [f"{r['model']} {r['dtype']} batch {r['batch']}: vs {r['provider']}" for r in data]
            values = [r["optimize_speedup"] for r in data]
            colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
            texts = [speed_words(v) for v in values]
            bold = [False] * len(data)
            ax.set_xlabel("deeplab_fast optimize() against each provider (provider time / optimize() time)")
            ax.set_title("Models")
        else:
            labels = [f"{r.get('case')}, {r.get('layout')}, batch {r.get('batch')}: {r.get('provider')}" for r in data]
            values = [r["copy_ratio"] for r in data]
            bold = [is_ours(str(r.get("provider"))) for r in data]
            colors = [OURS_COLOR if b else PEER_COLOR for b in bold]
            texts = [f"{v:.2f}" for v in values]
            ax.set_xscale("log")
            ax.set_xlabel("time / time of a copy of the output (log scale; 1 = speed of a copy; lower is better)")
            ax.set_title(f"Kernels: {kind} ({kernel_dtype}; deeplab_fast highlighted)")
        ax.axvline(1.0, color="black", linewidth=0.8)
        pos = list(range(len(values)))
        ax.barh(pos, values, color=colors)
        ax.set_yticks(pos, [label[:90] for label in labels], fontsize=6)
        for tick, strong in zip(ax.get_yticklabels(), bold, strict=True):
            if strong:
                tick.set_fontweight("bold")
                tick.set_color(OURS_COLOR)
        ax.set_ylim(len(values) - 0.5, -0.5)  # first row on top, no empty band
        for y, v, text in zip(pos, values, texts, strict=True):
            ax.text(v, y, f" {text}", va="center", fontsize=6)
        ax.margins(x=0.12)
    titles = [ax.get_title() for ax in axes[:, 0]]
    fig.tight_layout()
    if caption:
        fig.text(0.5, 0.0, caption, ha="center", va="top", fontsize=7)
    _save(fig, path)
    return titles


def _save(fig: Any, path: str) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)


def write_all(
    rows: list[dict[str, Any]], env: dict[str, Any], meta: dict[str, Any], out_dir: str, stem: str
) -> dict[str, Any]:
    """Write <stem>.json/.csv/.md/.png under `out_dir` (atomically); returns their paths and the Markdown text."""
    text = summary_markdown(rows, env, meta)
    extra = dict(meta)
    if "models" in meta.get("plan", {}).get("parts", []):
        extra["targets"] = targets(rows, env, meta)
    paths: dict[str, Any] = harness.write_rows(rows, out_dir, stem, env, extra=extra)
    paths["md"] = os.path.join(out_dir, stem + ".md")
    atomic_write_text(paths["md"], text)
    png = os.path.join(out_dir, stem + ".png")
    plot_speedups(rows, png, caption=machine_line(env))
    paths["png"] = png
    paths["markdown_text"] = text
    return paths
