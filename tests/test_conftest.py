"""The test run fails at once, naming the import error, when the compiled extension is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_missing_extension_fails_the_run(tmp_path):
    # a checkout whose extension does not import: the package (its _C a module that raises ImportError, which
    # shadows the built one and an editable install's mapping of it), this folder's conftest, one trivial test
    shutil.copytree(ROOT / "deeplab_fast", tmp_path / "deeplab_fast", ignore=shutil.ignore_patterns("_C*.so"))
    (tmp_path / "deeplab_fast" / "_C.py").write_text('raise ImportError("simulated broken build")\n')
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_one.py").write_text("def test_one():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k != "DEEPLAB_FAST_TEST_WITHOUT_EXT"}
    env["PYTHONPATH"] = str(tmp_path)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "tests"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "deeplab_fast._C does not import (simulated broken build)" in run.stdout + run.stderr
    assert "1 passed" not in run.stdout

    env["DEEPLAB_FAST_TEST_WITHOUT_EXT"] = "1"  # the deliberate opt-out runs the tests
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr
