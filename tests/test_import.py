"""`import deeplab_fast` stays light and the ops' modules have no cycles and no shadowed names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import types

import deeplab_fast.ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "deeplab_fast")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    environ.update(PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=300)


def test_import_loads_neither_triton_nor_dynamo():
    """triton (~0.4 s) and torch._dynamo (~1-2 s) load on first use of a Triton backend or torch.compile."""
    proc = _run(
        "import sys, torch, deeplab_fast, deeplab_fast.ops\n"
        "print(sorted(m for m in ('triton', 'torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_triton_loads_on_first_use_of_the_triton_backend():
    proc = _run(
        "import sys, torch, deeplab_fast\n"
        "from deeplab_fast.ops import dwconv_bn_act\n"
        "x, w = torch.randn(1, 2, 3, 3, device='meta'), torch.randn(2, 1, 3, 3, device='meta')\n"
        "s = torch.ones(2, device='meta')\n"
        "y = dwconv_bn_act(x, w, s, s, stride=2, backend='triton')\n"
        "print(y.device, tuple(y.shape), 'triton' in sys.modules)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["meta", "(1,", "2,", "2,", "2)", "True"], proc.stdout


def _imports(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_triton_kernel_modules_import_nothing_of_the_ops():
    """kernels/triton/* hold the jit kernels and their launchers only: no import of the ops (or anything else
    of deeplab_fast outside deeplab_fast.kernels)."""
    folder = os.path.join(PACKAGE, "kernels", "triton")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            deps = _imports(os.path.join(folder, name))
            deps = {m for m in deps if m.startswith("deeplab_fast") and not m.startswith("deeplab_fast.kernels")}
            assert not deps, f"kernels/triton/{name} imports {deps}"


def test_no_importlib_workarounds_in_the_ops():
    for folder in ("ops", os.path.join("kernels", "triton")):
        for name in os.listdir(os.path.join(PACKAGE, folder)):
            if name.endswith(".py"):
                assert "importlib" not in _imports(os.path.join(PACKAGE, folder, name)), f"{folder}/{name}"


def test_public_op_names_are_functions_not_shadowed_modules():
    for name in deeplab_fast.ops.__all__:
        assert isinstance(getattr(deeplab_fast.ops, name), types.FunctionType), name
        assert not os.path.exists(os.path.join(PACKAGE, "ops", f"{name}.py")), f"module ops/{name}.py shadows it"
