"""The compiled CUDA kernels, read without a GPU (benchmarks/cuda_resources.py): no register spills on sm_80
and sm_90, a launch-bounds block size and an occupancy for every kernel, and 16-byte global loads in the sm_90
code of the channels_last kernels."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("cuda_resources", ROOT / "benchmarks" / "cuda_resources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cuda_resources", module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> list[dict]:
    # Written where CI keeps build outputs (build/ is git-ignored): the per-kernel report of every run.
    out = ROOT / "build" / "cuda_resources"
    module = _module()
    if module.find_nvcc() is None:
        if os.environ.get("DEEPLAB_FAST_CUDA") == "1" or os.environ.get("CI"):
            pytest.fail("the CUDA kernels are expected (CI / DEEPLAB_FAST_CUDA=1), but nvcc is not installed")
        pytest.skip("nvcc (the CUDA toolkit) is not installed on this machine")
    assert module.find_cuobjdump(), "cuobjdump is needed (pip install the test extras: nvidia-cuda-cuobjdump)"
    code = module.main(["--out", str(out)])
    kernels = json.loads((out / "cuda_resources.json").read_text())
    assert (out / "cuda_resources.md").read_text().startswith("# CUDA kernel resources")
    assert code == 0, "kernels spill registers:\n" + "\n".join(
        f"{k['name']} sm_{k['arch']}: {k['spill_store_bytes']}/{k['spill_load_bytes']} B"
        for k in kernels
        if k["spill_store_bytes"] or k["spill_load_bytes"]
    )
    return kernels


def test_every_kernel_has_bounds_and_occupancy(report):
    assert {k["arch"] for k in report} == {"80", "90"}
    for k in report:
        assert k["block_threads"], f"{k['name']} has no __launch_bounds__"
        assert 0 < k["occupancy_warps"] <= 64, k


def test_packed_depthwise_forward_loads_only_16_bytes_at_a_time(report):
    """Every global load of the packed (V > 1) tiled depthwise forward is one LDG.E.128 (input, weights, scale,
    shift): the review found 88 scalar loads to 9 vector ones in the old kernel."""
    import re

    packed = [
        k
        for k in report
        if k["arch"] == "90"
        and (m := re.search(r"fwd_tiled_kernelI(?:f|N3c104HalfE|N3c108BFloat16E)Li(\d+)E", k["name"]))
        and int(m.group(1)) > 1
    ]
    assert len(packed) >= 6, [k["name"] for k in report if "fwd_tiled" in k["name"]]
    for k in packed:
        access = k["global_access"]
        assert access.get("LDG.128", 0) > 0 and access.get("LDG.32-or-less", 0) == 0, (k["name"], access)


def test_channels_last_kernels_use_16_byte_loads(report):
    vector = [k for k in report if k["arch"] == "90" and "nhwc" in k["name"]]
    assert vector, "no channels_last kernels found"
    # The packed (V > 1) forward kernels load activations 16 bytes at a time.
    packed = [k for k in vector if k["global_access"].get("LDG.128", 0)]
    assert packed, {k["name"]: k["global_access"] for k in vector}


def test_occupancy_arithmetic():
    module = _module()
    # 256 threads, 32 registers: 8 warps x 1024 registers per block -> 8 blocks by registers, 8 by threads.
    assert module.occupancy(32, 0, 256, "90") == (64, "threads")
    # 128 registers per thread: 8 warps x 4096 -> 2 blocks, 16 warps.
    assert module.occupancy(128, 0, 256, "90") == (16, "registers")
    # 48 KiB of shared memory on sm_80: 167936 // (49152 + 1024) = 3 blocks of 4 warps.
    assert module.occupancy(32, 49152, 128, "80") == (12, "shared memory")
