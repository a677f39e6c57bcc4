"""How the Triton kernels are launched: the device guard, grids within CUDA's limits at any map size, the
autotune configs (one fixed config under the interpreter), and the bf16 rounding of the depthwise kernel
keeping NaN a NaN. Kernels run through the interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without a
GPU); grid functions are checked directly at sizes no test could launch."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from deeplab_fast.kernels.triton import INTERPRET, common  # noqa: E402
from deeplab_fast.kernels.triton import dwconv_bn_act as dw  # noqa: E402
from deeplab_fast.kernels.triton import upsample as up  # noqa: E402
from deeplab_fast.ops import dwconv_bn_act, upsample_argmax, upsample_concat, upsample_softmax_accumulate  # noqa: E402

needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="runs Triton kernels through the interpreter on CPU")


@needs_interpreter
def test_bf16_output_keeps_the_gpus_canonical_nan():
    # A GPU's arithmetic NaN is 0x7fffffff; rounding it to bf16 with integer ops carried into the sign bit and
    # stored -0.0. A scale holding that NaN makes every output of channel 0 NaN.
    x = torch.randn(1, 2, 3, 3).to(torch.bfloat16)
    scale = torch.tensor([0x7FFFFFFF, 0x3F800000], dtype=torch.int32).view(torch.float32)
    y = torch.empty_like(x)
    dw.launch_dwconv_bn_act(x, torch.ones(2, 9), scale, torch.zeros(2), y, 3, 1, 1, 0)
    assert y[0, 0].isnan().all()
    assert not y[0, 1].isnan().any()


def test_dwconv_grid_stays_within_cuda_limits_for_any_map():
    # 16 images of 8192 x 8192 with 256 channels (2^38 elements): a grid with pixel tiles on axis 1 would
    # need up to 2^22 programs there, far over 65,535.
    for config in dw.NHWC_CONFIGS + dw.NCHW_CONFIGS:
        bp, bc = config.kwargs["BLOCK_P"], config.kwargs["BLOCK_C"]
        for n, pixels, c in [(16, 8192 * 8192, 256), (1, 1, 1), (3, 1025 * 2049, 21)]:
            grid = dw.dwconv_grid(n, pixels, c, bp, bc)
            assert len(grid) == 1 and 0 < grid[0] <= common.MAX_GRID_X
            assert grid[0] == n * triton.cdiv(pixels, bp) * triton.cdiv(c, bc)  # every tile has a program
    with pytest.raises(ValueError, match="grid limit"):
        dw.dwconv_grid(1024, 2**31, 2048, 16, 128)


def test_upsample_grids_stay_within_cuda_limits():
    total = 16 * 304 * 2049 * 2049  # a concat at 2049 x 2049, batch 16
    for config in up.CONFIGS:
        (programs,) = up.flat_grid(total)(config.kwargs)
        assert programs == triton.cdiv(total, config.kwargs["BLOCK"]) <= common.MAX_GRID_X
    with pytest.raises(ValueError, match="grid limit"):
        up.flat_grid(2**42)({"BLOCK": 512})
    with pytest.raises(ValueError, match="axis 1"):
        common.check_grid((1, 65536, 1))


def test_autotune_configs_are_few_and_the_interpreter_runs_the_kernel_itself():
    for configs in (dw.NHWC_CONFIGS, dw.NCHW_CONFIGS, up.CONFIGS):
        assert 2 <= len(configs) <= 4
    kernels = (dw._nhwc_kernel, dw._nchw_kernel, up._concat_tuned, up._argmax_tuned)
    if INTERPRET:  # triton.autotune with more than one config fails under the interpreter
        assert not any(isinstance(k, triton.runtime.Autotuner) for k in kernels)
    else:
        assert all(isinstance(k, triton.runtime.Autotuner) for k in kernels)


class _OnSecondGpu:
    """Stands in for a tensor on cuda:1 (no GPU here): device_guard only reads is_cuda and device."""

    is_cuda = True
    device = torch.device("cuda", 1)


def test_device_guard_selects_the_tensors_device():
    guard = common.device_guard(_OnSecondGpu())
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(common.device_guard(torch.zeros(1)), torch.cuda.device)


@needs_interpreter
def test_every_launch_goes_through_the_device_guard(monkeypatch):
    guarded = []

    def recording_guard(t):
        guarded.append(t)
        return common.device_guard(t)

    monkeypatch.setattr(dw, "device_guard", recording_guard)
    monkeypatch.setattr(up, "device_guard", recording_guard)
    x = torch.randn(1, 4, 5, 5)
    dwconv_bn_act(x, torch.randn(4, 1, 3, 3), torch.ones(4), torch.zeros(4), backend="triton")
    upsample_concat([x, torch.randn(1, 2, 3, 3)], (5, 5), backend="triton")
    upsample_argmax(x, (7, 7), backend="triton")
    upsample_softmax_accumulate(x, torch.zeros(1, 4, 7, 7), backend="triton")
    assert len(guarded) == 4
