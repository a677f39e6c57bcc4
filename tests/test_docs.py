"""The documentation runs as written and its tables match the code.

Every ```python block of README.md and docs/*.md runs in a fresh subprocess, in an empty folder. Two markers
adapt a block for the test, and say so in the block itself:
- a line ending in `# tiny: <statement>` runs as <statement> (a smaller size than the one shown);
- a block containing `# needs network` runs with its downloads turned off: `weights="..."` becomes
  `weights=None, weights_backbone=None` and `encoder_weights="..."` becomes `encoder_weights=None`.
The option, configuration and flag tables are compared with the code they describe, so they fail when
either side drifts.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(REPO)}:{line}", m.group(1)))
    return found


def adapt(code: str) -> str:
    """The block as the test runs it (see the module docstring)."""
    lines = []
    for line in code.splitlines():
        m = re.match(r"^(\s*).*#\s*tiny:\s*(.+)$", line)
        lines.append(m.group(1) + m.group(2) if m else line)
    code = "\n".join(lines) + "\n"
    if "# needs network" in code:
        code = re.sub(r"\bweights=\"[^\"]*\"", "weights=None, weights_backbone=None", code)
        code = re.sub(r"\bencoder_weights=\"[^\"]*\"", "encoder_weights=None", code)
    return code


def test_adapt_rewrites_tiny_lines_and_network_weights():
    code = 'x = big()  # tiny: x = small()\n# needs network\nm = f(weights="DEFAULT")\n'
    code += 's = g(encoder_weights="imagenet")\n'
    assert adapt(code) == (
        "x = small()\n# needs network\nm = f(weights=None, weights_backbone=None)\ns = g(encoder_weights=None)\n"
    )


BLOCKS = _blocks()
# blocks that train or export take a minute on a 2-core CPU: they run in the whole suite, not the quick loop
HEAVY = ("trainer.train()", "export_onnx(")


def _param(name: str, code: str):
    marks = [pytest.mark.slow] if any(h in code for h in HEAVY) else []
    return pytest.param(code, id=name, marks=marks)


@pytest.mark.parametrize("code", [_param(name, code) for name, code in BLOCKS])
def test_python_block_runs(code, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    proc = subprocess.run(
        [sys.executable, "-c", adapt(code)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _table(path: Path, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the Markdown table whose header row starts with `| {header} |`."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| {header} |"):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table with header {header!r} in {path}")


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_model_options_table_matches_the_builder():
    from deeplab_fast.models.deeplab import OPTIONS

    rows = _table(REPO / "docs" / "models.md", "option")
    documented = {_ticked(r[0])[0]: ast.literal_eval(_ticked(r[1])[0]) for r in rows}
    assert documented == {name: default for name, (default, _) in OPTIONS.items()}


def test_optimize_arguments_table_matches_the_signature():
    import deeplab_fast

    rows = _table(REPO / "docs" / "models.md", "argument")
    documented = {_ticked(r[0])[0]: ast.literal_eval(_ticked(r[1])[0]) for r in rows}
    params = inspect.signature(deeplab_fast.optimize).parameters
    actual = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert documented == actual


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_training_config_table_matches_the_config():
    from deeplab_fast.training.config import Config

    rows = _table(REPO / "docs" / "training.md", "key")
    documented = {_ticked(r[0])[0]: yaml.safe_load(_ticked(r[1])[0]) for r in rows}
    assert documented == _flatten(Config().to_dict())


def _flags(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def _subcommands() -> dict:
    from deeplab_fast.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


def test_predict_flags_table_matches_the_cli():
    rows = _table(REPO / "docs" / "inference.md", "flag")
    documented = {flag for r in rows for flag in _ticked(r[0])}
    assert documented == _flags(_subcommands()["predict"])


def test_train_and_eval_flags_table_matches_the_cli():
    rows = _table(REPO / "docs" / "training.md", "command")
    commands = _subcommands()
    for row in rows:
        name = _ticked(row[0])[0]
        assert set(_ticked(row[1])) == _flags(commands[name]), name


def test_benchmark_flags_table_matches_run_py():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import run

    rows = _table(REPO / "docs" / "benchmarks.md", "flag")
    assert {_ticked(r[0])[0] for r in rows} == _flags(run.build_parser())


def test_readme_results_table_matches_the_published_summary():
    import csv

    lines = (REPO / "docs" / "benchmarks" / "cpu_amd-epyc.csv").read_text().splitlines()[1:]
    published = {
        (r["model"], r["provider"]): float(r["median_ms"])
        for r in csv.DictReader(lines)
        if r.get("part") == "models" and r.get("median_ms")
    }
    rows = _table(REPO / "README.md", "model")
    assert rows
    for model, provider, ms, _ in rows:
        provider = provider.replace(" (512x512)", "")
        assert round(published[(model, provider)]) == int(ms), (model, provider)


def test_readme_matrix_names_every_public_op():
    import deeplab_fast.ops as ops

    rows = _table(REPO / "README.md", "op")
    names = [_ticked(r[0])[0] for r in rows]
    assert all(callable(getattr(ops, n)) for n in names)
    assert set(names) >= {"dwconv_bn_act", "winograd_conv3x3", "upsample_concat", "upsample_argmax"}


def test_links_point_to_files():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.relative_to(REPO)} links to missing {target}"


def test_readme_is_short_and_docs_speak_to_users():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
    for path in DOCS:
        text = path.read_text()
        for word in (r"\bsession\b", r"\bissue #", r"\blead\b", r"\bhelper\b"):
            assert not re.search(word, text, re.I), f"{path.relative_to(REPO)}: {word}"


def test_quickstart_second_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme
