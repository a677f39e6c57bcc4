"""The CPU output pool (csrc/cpu/output_pool.cpp): large op outputs reuse freed blocks, results stay exact."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import deeplab_fast
from deeplab_fast import _ext
from deeplab_fast.ops import dwconv_bn_act, upsample_argmax, upsample_concat
from deeplab_fast.ops.reference import dwconv_bn_act_reference, upsample_concat_reference

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cached() -> int:
    return torch.ops.deeplab_fast.output_pool_cached_bytes()


def _dw_inputs(seed: int, c: int = 64, hw: int = 130):  # 64 x 130 x 130 fp32 = 4.3 MB: pooled
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, hw, hw, generator=g).contiguous(memory_format=torch.channels_last)
    return x, torch.randn(c, 1, 3, 3, generator=g), torch.rand(c, generator=g), torch.randn(c, generator=g)


def test_large_output_block_is_reused_and_results_stay_exact():
    torch.ops.deeplab_fast.output_pool_release()
    assert _cached() == 0
    x, w, s, b = _dw_inputs(0)
    y = dwconv_bn_act(x, w, s, b, dilation=2, backend="cpu")
    torch.testing.assert_close(y, dwconv_bn_act_reference(x, w, s, b, dilation=2), rtol=1e-5, atol=1e-5)
    ptr = y.data_ptr()
    del y
    assert _cached() >= 64 * 130 * 130 * 4  # the freed block is kept...
    x2, w2, s2, b2 = _dw_inputs(1)
    y2 = dwconv_bn_act(x2, w2, s2, b2, dilation=2, backend="cpu")
    assert y2.data_ptr() == ptr  # ...and serves the next output of that size
    assert _cached() == 0
    # no value of the previous output survives in the recycled block
    torch.testing.assert_close(y2, dwconv_bn_act_reference(x2, w2, s2, b2, dilation=2), rtol=1e-5, atol=1e-5)
    assert y2.is_contiguous(memory_format=torch.channels_last)


def test_concat_and_argmax_outputs_from_the_pool_are_exact():
    torch.ops.deeplab_fast.output_pool_release()
    a = torch.randn(2, 40, 33, 33)
    b = torch.randn(2, 8, 129, 129)
    for _ in range(2):  # the second call runs in the block the first one freed
        y = upsample_concat([a, b], (129, 129), backend="cpu")
        torch.testing.assert_close(y, upsample_concat_reference([a, b], (129, 129)), rtol=1e-5, atol=1e-5)
        del y
    logits = torch.randn(2, 5, 65, 65)
    for _ in range(2):
        labels = upsample_argmax(logits, (513, 513), backend="cpu")  # 2 x 513 x 513 int64 = 4.2 MB
        ref = torch.nn.functional.interpolate(logits, (513, 513), mode="bilinear").argmax(1)
        assert torch.equal(labels, ref)
        del labels


def test_small_outputs_bypass_the_pool():
    torch.ops.deeplab_fast.output_pool_release()
    x, w, s, b = _dw_inputs(0, c=8, hw=17)
    y = dwconv_bn_act(x, w, s, b, backend="cpu")
    del y
    assert _cached() == 0


@pytest.fixture
def pool_cap():
    """Set the pool cap through deeplab_fast.configure for one test, then restore it."""
    before = deeplab_fast.configure()["cpu_output_pool_mb"]
    torch.ops.deeplab_fast.output_pool_release()
    yield lambda mb: deeplab_fast.configure(cpu_output_pool_mb=mb)
    deeplab_fast.configure(cpu_output_pool_mb=before)


def _dw_out(c: int, hw: int = 130) -> torch.Tensor:
    x = torch.randn(1, c, hw, hw).contiguous(memory_format=torch.channels_last)
    return dwconv_bn_act(x, torch.randn(c, 1, 3, 3), torch.ones(c), torch.zeros(c), backend="cpu")


def test_configure_reads_and_sets_the_cap(pool_cap):
    assert deeplab_fast.configure() == {"cpu_output_pool_mb": deeplab_fast.configure()["cpu_output_pool_mb"]}
    assert pool_cap(64) == {"cpu_output_pool_mb": 64}
    assert deeplab_fast.configure() == {"cpu_output_pool_mb": 64}
    assert torch.ops.deeplab_fast.cpu_output_pool_mb() == 64


def test_cap_zero_turns_the_pool_off(pool_cap):
    pool_cap(0)
    y = _dw_out(64)
    del y
    assert _cached() == 0


def test_lowering_the_cap_frees_cached_blocks(pool_cap):
    pool_cap(256)
    y = _dw_out(64)  # 4.3 MB: pooled
    del y
    assert _cached() > 0
    pool_cap(1)
    assert _cached() == 0


@pytest.mark.parametrize("value", [-1, 1.5, "lots", True, 2**43, 2**64])
def test_bad_cap_is_a_clear_error(pool_cap, value):
    """Values that are not whole MiB counts, or whose byte count overflows an int64, are refused."""
    with pytest.raises(ValueError, match=r"cpu_output_pool_mb must be an int in \[0, 8796093022207\]"):
        pool_cap(value)
    assert deeplab_fast.configure()["cpu_output_pool_mb"] != value


def test_cpp_rejects_an_overflowing_cap(pool_cap):
    """The C++ setter checks too (it can be called through torch.ops): 2**62 MiB would overflow size_t."""
    with pytest.raises(ValueError, match="cpu_output_pool_mb must be an int in"):
        torch.ops.deeplab_fast.set_cpu_output_pool_mb(2**62)


def test_environment_variable_is_not_read():
    """The retired DEEPLAB_FAST_CPU_POOL_MB no longer configures anything (configure() does)."""
    code = "import deeplab_fast; print(deeplab_fast.configure()['cpu_output_pool_mb'])"
    env = dict(os.environ, PYTHONPATH=ROOT, DEEPLAB_FAST_CPU_POOL_MB="0")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["256"]


def test_blocks_of_shapes_no_longer_used_make_room_for_new_ones(pool_cap):
    # Cap 12 MiB; outputs of 8 MiB (A), then 3 MiB (B), then 9 MiB (C), none able to use another's block.
    # When C's block comes back, A (given back longest ago) is evicted to make room, and C's next call is
    # served from the pool; blocks of old shapes used to pin the cap, so C came fresh from the system on
    # every call (page faults included).
    pool_cap(12)
    seen = []
    for c in (128, 48, 144):
        y = _dw_out(c, 128)
        del y
        after_first = _cached() >> 20
        y = _dw_out(c, 128)
        seen += [c, after_first, _cached() >> 20]
        del y
    # (channels, MiB cached after the first call, MiB cached while the second call's output lives)
    assert seen == [128, 8, 0, 48, 11, 8, 144, 12, 3]
