"""The CUDA emulation itself (csrc/emu), under AddressSanitizer.

Two small executables are compiled here with `-fsanitize=address` from the emulation build of the kernels:
- csrc/emu/tests/selftest.cpp: CUDA kernels for each emulated feature (barriers, shared memory, warp
  shuffles and ballot, atomics, 3-D coordinates) and the classic bugs the emulation must expose (a missing
  barrier changes the result between schedule orders, a barrier after an early exit, a shuffle naming an
  exited lane, a misaligned vector load, invalid launches);
- csrc/emu/tests/asan_check.cpp: every CUDA kernel and specialization on small buffers of exactly the size
  the kernel may touch, so any out-of-bounds read or write stops the run; `--broken` makes one buffer an
  element short to show that such an access is caught.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
EMU_SOURCES = ["emu/runtime.cpp", "emu/dwconv_bn_act_emu.cpp", "emu/upsample_emu.cpp"]
PROGRAMS = {
    "selftest": ["emu/tests/selftest.cpp", "emu/runtime.cpp"],
    "asan_check": ["emu/tests/asan_check.cpp", *EMU_SOURCES],
}
# The fibers switch stacks with swapcontext, which ASan warns about once; leaks of abandoned fibers are not bugs.
ASAN_ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    """Compile every object in parallel, then link the two programs against torch's libc10."""
    out = tmp_path_factory.mktemp("cuda_emu_asan")
    torch_dir = Path(torch.__file__).parent
    flags = ["-std=c++20", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", f"-I{CSRC}"]
    flags.append(f"-I{torch_dir / 'include'}")
    sources = sorted({s for srcs in PROGRAMS.values() for s in srcs})
    objects = {s: out / (s.replace("/", "_") + ".o") for s in sources}
    jobs = [subprocess.Popen(["g++", *flags, "-c", str(CSRC / s), "-o", str(o)], stderr=subprocess.PIPE, text=True)
            for s, o in objects.items()]  # fmt: skip
    for job, source in zip(jobs, objects, strict=True):
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, f"compiling {source} failed:\n{err[-4000:]}"
    built = {}
    for name, srcs in PROGRAMS.items():
        exe = out / name
        link = ["g++", "-fsanitize=address", *[str(objects[s]) for s in srcs], f"-L{torch_dir / 'lib'}", "-lc10"]
        link += [f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(exe)]
        done = subprocess.run(link, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"linking {name} failed:\n{done.stderr[-4000:]}"
        built[name] = exe
    return built


def _run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, env=ASAN_ENV)


def test_emulation_selftest(programs):
    done = _run(programs["selftest"])
    assert done.returncode == 0, done.stdout + done.stderr
    passed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("PASS ")}
    for name in (
        "block_sum_with_barrier_same_in_every_order",
        "block_sum_without_barrier_is_exposed",
        "warp_shuffles_and_ballot_shuffled",
        "coordinates_3d_and_dynamic_shared_memory",
        "atomic_add",
        "traffic_counters",
        "barrier_after_early_exit_is_a_fault",
        "shuffle_naming_an_exited_lane_is_a_fault",
        "misaligned_vector_load_is_a_fault",
        "block_of_2048_threads_is_refused",
        "check_launch_raises",
    ):
        assert name in passed, done.stdout


def test_every_cuda_kernel_is_clean_under_asan(programs):
    done = _run(programs["asan_check"])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "AddressSanitizer" not in done.stderr.replace("ASan doesn't fully support", "")
    cases = int(done.stdout.split()[1])
    assert done.stdout.startswith("ok ") and cases >= 700, done.stdout


def test_an_out_of_bounds_read_is_caught(programs):
    done = _run(programs["asan_check"], "--broken")
    assert done.returncode != 0
    assert "heap-buffer-overflow" in done.stderr and "fwd_tiled_kernel" in done.stderr, done.stderr[-4000:]
