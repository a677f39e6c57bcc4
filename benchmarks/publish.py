"""Keep one benchmark summary per machine model in docs/benchmarks/ (Markdown, CSV, PNG).

    python benchmarks/publish.py                       # newest result of each machine in benchmarks/results/
    python benchmarks/publish.py RESULT.json [...]     # these result files (the newest one per machine wins)

A machine is the device and its CPU or GPU model as the result file records it (e.g. "cpu / AMD EPYC"). For
each machine the newest full-suite run is published, or the newest run of any suite when it has no full run.
The summary and the chart are rebuilt from the result's rows with the current report code (the summary names
the CPU kernel path in use, the supported paths, the ISA flags, AMX and native bf16 from the result's
cpu_info, also printed here), and overwrite the machine's previous summary:
docs/benchmarks/<device>_<model>.{md,csv,png}. These summaries are the baselines that later "no regression"
claims compare against (re-run the old commit on the same idle machine).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _folder in (str(REPO), str(HERE)):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

import harness  # noqa: E402
import report  # noqa: E402

from deeplab_fast._files import atomic_write_text  # noqa: E402

DEFAULT_RESULTS = HERE / "results"
DEFAULT_DOCS = REPO / "docs" / "benchmarks"


def machine_of(env: dict[str, Any]) -> str:
    """File-name slug of the machine a result was measured on: <device>_<cpu or gpu model>."""
    model = env.get("gpu") if env.get("device") == "cuda" else env.get("cpu")
    slug = re.sub(r"[^a-z0-9]+", "-", str(model or "unknown").lower()).strip("-")[:40]
    return f"{env.get('device', 'unknown')}_{slug}"


def load(path: Path) -> dict[str, Any]:
    """A result JSON written by benchmarks/run.py (environment, plan, yardsticks, rows)."""
    data = json.loads(path.read_text())
    if "environment" not in data or "rows" not in data:
        raise ValueError(f"{path} is not a result of benchmarks/run.py (no 'environment' or 'rows')")
    return data


def newest_per_machine(paths: list[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """machine -> (path, result) of its newest full run, or of its newest run when it has no full one."""
    best: dict[str, tuple[tuple[bool, str], Path, dict[str, Any]]] = {}
    for path in paths:
        data = load(path)
        if "plan" not in data:  # a family's standalone output (bench_dwconv.py alone), not a run of run.py
            continue
        full = data["plan"].get("suite") == "full"
        key = (full, str(data["environment"].get("date", "")))
        machine = machine_of(data["environment"])
        if machine not in best or key > best[machine][0]:
            best[machine] = (key, path, data)
    return {m: (p, d) for m, (_, p, d) in best.items()}


def publish(path: Path, data: dict[str, Any], docs: Path) -> list[Path]:
    """Write docs/<machine>.{md,csv,png} from one result; returns the paths written."""
    env, rows = data["environment"], data["rows"]
    meta = {k: v for k, v in data.items() if k not in ("environment", "rows")}
    stem = docs / machine_of(env)
    text = report.summary_markdown(rows, env, meta)
    source = f"\n_Published from `{path.name}` by `python benchmarks/publish.py`._\n"
    atomic_write_text(f"{stem}.md", text + source)
    atomic_write_text(f"{stem}.csv", harness.csv_text(rows, env))
    report.plot_speedups(rows, f"{stem}.png", caption=report.machine_line(env))
    return [Path(f"{stem}.{ext}") for ext in ("md", "csv", "png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help="result JSON files (default: benchmarks/results/*)")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="summary folder (default docs/benchmarks)")
    args = parser.parse_args(argv)
    paths = args.results or sorted(DEFAULT_RESULTS.glob("*.json"))
    if not paths:
        print(f"publish.py: error: no result files (looked in {DEFAULT_RESULTS})", file=sys.stderr)
        return 2
    try:
        chosen = newest_per_machine(paths)
    except (OSError, ValueError) as exc:
        print(f"publish.py: error: {exc}", file=sys.stderr)
        return 2
    for machine, (path, data) in sorted(chosen.items()):
        written = publish(path, data, args.docs)
        print(f"{machine}: {path.name} -> {', '.join(str(p) for p in written)}")
        print(f"  {report.cpu_facts_line(data['environment'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
