"""deeplab_fast.testing: the public testing utilities."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import torch
from torch import nn

from deeplab_fast.testing import one_thread, randomize_batchnorm


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm1d(2, affine=False))


def test_one_thread_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    target = 2 if before == 1 else before
    torch.set_num_threads(target)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == target
        with pytest.raises(KeyError), one_thread():
            raise KeyError("boom")
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)


def test_conftest_fixture_gives_one_thread(one_thread):
    assert torch.get_num_threads() == 1


def test_randomize_batchnorm_ranges_seed_and_untouched_layers():
    net = _net()
    conv_before = net[0].weight.detach().clone()
    assert randomize_batchnorm(net, seed=3) is net
    bn, bn1d = net[1], net[3]
    assert torch.equal(net[0].weight, conv_before)  # only BatchNorm layers change
    for t, low in ((bn.running_mean, -0.5), (bn.running_var, 0.5), (bn.weight, 0.5), (bn.bias, -0.5)):
        assert t.shape == (4,) and t.dtype == torch.float32
        assert bool(((t >= low) & (t < low + 1)).all()), t
        assert t.unique().numel() == 4  # random per channel, not a constant
    assert bn1d.weight is None and not torch.equal(bn1d.running_var, torch.ones(2))
    again = randomize_batchnorm(_net(), seed=3)
    other = randomize_batchnorm(_net(), seed=4)
    assert torch.equal(again[1].running_mean, bn.running_mean)
    assert not torch.equal(other[1].running_mean, bn.running_mean)


def test_randomize_batchnorm_keeps_dtype():
    net = _net().to(torch.float64)
    randomize_batchnorm(net)
    assert net[1].running_var.dtype == torch.float64 and net[1].weight.dtype == torch.float64


def test_testing_module_imports_only_torch():
    # what `import deeplab_fast.testing` adds on top of `import deeplab_fast` (the package's own import cost
    # is checked where the package is)
    code = (
        "import sys, deeplab_fast; before = set(sys.modules); import deeplab_fast.testing; "
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    added = ast.literal_eval(out)
    assert added == ["deeplab_fast.testing"], added


def test_importing_testing_loads_neither_triton_nor_dynamo():
    code = "import sys, deeplab_fast.testing; print('triton' in sys.modules, 'torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"], out
