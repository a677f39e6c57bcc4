"""Resources of every CUDA kernel, without a GPU: registers, shared memory, spills, occupancy, vector loads.

    python benchmarks/cuda_resources.py --out build/cuda_resources

compiles each csrc/cuda/*.cu to a cubin for sm_80 and sm_90 (nvcc -Xptxas -v, keeping the PTX), and writes
`cuda_resources.md` and `.json` there:
- per kernel and architecture: registers per thread, static shared memory, spill stores/loads, stack frame,
  the block size of its __launch_bounds__ (the PTX's .maxntid), and the occupancy those allow (resident warps
  per SM out of 64, from the register file, shared memory and thread limits of the architecture);
- from the sm_90 SASS (cuobjdump, from the nvidia-cuda-cuobjdump package): global loads and stores per kernel
  by width (LDG.E.128 is one 16-byte load), so vector access in the compiled code is checked, not assumed.
Every figure is a property of the compiled code; none is a GPU measurement. tests/test_cuda_resources.py runs
this and fails on any spill.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("80", "90")

# Per-SM limits (CUDA C Programming Guide, compute capability tables).
SM_LIMITS = {
    "80": {"regs": 65536, "threads": 2048, "blocks": 32, "smem": 167936, "warps": 64},
    "90": {"regs": 65536, "threads": 2048, "blocks": 32, "smem": 233472, "warps": 64},
}
SMEM_RESERVED_PER_BLOCK = 1024  # the driver reserves 1 KiB of shared memory per resident block (sm_80+)

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(?:, (\d+) bytes smem)?")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTX_ENTRY = re.compile(r"\.entry\s+([A-Za-z0-9_$]+)\s*\(")
_MAXNTID = re.compile(r"\.maxntid\s+(\d+),\s*(\d+),\s*(\d+)")
_SASS_FUNCTION = re.compile(r"Function : (\S+)")
_SASS_GLOBAL = re.compile(r"\b(LDG|STG)\.E((?:\.[A-Z0-9_]+)*)")


@dataclass
class Kernel:
    """One kernel compiled for one architecture."""

    name: str
    arch: str
    source: str
    registers: int = 0
    barriers: int = 0
    smem_bytes: int = 0
    stack_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    block_threads: int | None = None
    occupancy_warps: int | None = None
    limited_by: str = ""
    global_access: dict[str, int] = field(default_factory=dict)


def find_nvcc() -> str | None:
    """The real nvcc (as setup.py finds it), or None."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc")


def find_cuobjdump() -> str | None:
    """cuobjdump from the nvidia-cuda-cuobjdump wheel (with nvdisasm beside it), the toolkit, or PATH."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for base in list(spec.submodule_search_locations or []) if spec else []:
        for path in glob.glob(os.path.join(base, "*", "bin", "cuobjdump")):
            if os.path.exists(os.path.join(os.path.dirname(path), "nvdisasm")):
                return path
    nvcc = find_nvcc()
    if nvcc and os.path.exists(os.path.join(os.path.dirname(nvcc), "cuobjdump")):
        return os.path.join(os.path.dirname(nvcc), "cuobjdump")
    return shutil.which("cuobjdump")


def occupancy(registers: int, smem: int, threads: int, arch: str) -> tuple[int, str]:
    """Resident warps per SM for blocks of `threads` threads, and the limit that binds."""
    lim = SM_LIMITS[arch]
    warps_per_block = -(-threads // 32)
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256  # allocated per warp in units of 256
    # On a tie the first limit named binds: the thread limit is the one no kernel change can lift.
    limits = {
        "threads": lim["threads"] // (warps_per_block * 32),
        "registers": lim["regs"] // (regs_per_warp * warps_per_block),
        "blocks": lim["blocks"],
    }
    if smem:
        limits["shared memory"] = lim["smem"] // (smem + SMEM_RESERVED_PER_BLOCK)
    binding = min(limits, key=lambda k: limits[k])
    return min(limits[binding] * warps_per_block, lim["warps"]), binding


def _compile(nvcc: str, source: str, arch: str, work: Path) -> tuple[subprocess.Popen, Path, Path]:
    from torch.utils.cpp_extension import include_paths

    keep = work / f"{Path(source).stem}.sm_{arch}"
    keep.mkdir(parents=True, exist_ok=True)
    cubin = keep / "out.cubin"
    cmd = [nvcc, "-cubin", "-O3", "-std=c++20", f"-arch=sm_{arch}", "-Xptxas", "-v", "-DDLF_WITH_CUDA"]
    cmd += ["--keep", f"--keep-dir={keep}"]
    cmd += [f"-I{p}" for p in [str(ROOT / "csrc"), *include_paths()]]
    cmd += ["-o", str(cubin), source]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), keep, cubin


def _parse_ptxas(text: str, arch: str, source: str) -> dict[str, Kernel]:
    kernels: dict[str, Kernel] = {}
    current: Kernel | None = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = kernels.setdefault(m.group(1), Kernel(m.group(1), arch, source))
        elif current is not None and (m := _SPILL.search(line)):
            current.stack_bytes, current.spill_store_bytes, current.spill_load_bytes = map(int, m.groups())
        elif current is not None and (m := _USED.search(line)):
            current.registers = int(m.group(1))
            current.barriers = int(m.group(2) or 0)
            current.smem_bytes = int(m.group(3) or 0)
    return kernels


def _parse_maxntid(keep: Path) -> dict[str, int]:
    threads: dict[str, int] = {}
    for ptx in keep.glob("*.ptx"):
        name = None
        for line in ptx.read_text().splitlines():
            if m := _PTX_ENTRY.search(line):
                name = m.group(1)
            elif name and (m := _MAXNTID.search(line)):
                threads[name] = int(m.group(1)) * int(m.group(2)) * int(m.group(3))
                name = None
    return threads


def _parse_sass(cuobjdump: str, cubin: Path) -> dict[str, dict[str, int]]:
    text = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    counts: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if m := _SASS_FUNCTION.search(line):
            current = counts.setdefault(m.group(1), {})
        elif current is not None:
            for op, suffix in _SASS_GLOBAL.findall(line):
                width = next((w for w in (".128", ".64") if w in suffix), "")
                key = f"{op}{width or '.32-or-less'}"
                current[key] = current.get(key, 0) + 1
    return counts


def collect(work: Path) -> list[Kernel]:
    """Compile every CUDA source for every architecture in `work` and gather the kernels' resources."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc was not found (set CUDA_HOME)")
    cuobjdump = find_cuobjdump()
    sources = sorted(glob.glob(str(ROOT / "csrc" / "cuda" / "*.cu")))
    jobs = [(src, arch, *_compile(nvcc, src, arch, work)) for src in sources for arch in ARCHS]
    kernels: list[Kernel] = []
    for source, arch, proc, keep, cubin in jobs:
        text, _ = proc.communicate(timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed on {source} for sm_{arch}:\n{text[-4000:]}")
        found = _parse_ptxas(text, arch, os.path.relpath(source, ROOT))
        threads = _parse_maxntid(keep)
        sass = _parse_sass(cuobjdump, cubin) if cuobjdump and arch == "90" else {}
        for k in found.values():
            k.block_threads = threads.get(k.name)
            if k.block_threads:
                k.occupancy_warps, k.limited_by = occupancy(k.registers, k.smem_bytes, k.block_threads, arch)
            k.global_access = sass.get(k.name, {})
            kernels.append(k)
    return kernels


def demangle(names: list[str]) -> dict[str, str]:
    """Readable names through c++filt (the mangled name where it is absent)."""
    if not shutil.which("c++filt"):
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out, strict=True)) if len(out) == len(names) else {n: n for n in names}


def markdown(kernels: list[Kernel]) -> str:
    """The report: one row per kernel and architecture."""
    readable = demangle(sorted({k.name for k in kernels}))
    lines = [
        "# CUDA kernel resources (compiled code, not GPU measurements)",
        "",
        "Occupancy: resident warps per SM out of 64 for a block of the kernel's `__launch_bounds__`, from its",
        "registers and shared memory. Global accesses: SASS load/store instructions by width (sm_90).",
        "",
        "| kernel | arch | regs | smem B | spill st/ld B | block | warps/SM | limited by "
        "| LDG 128/64/<=32 | STG 128/64/<=32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in sorted(kernels, key=lambda k: (k.source, readable[k.name], k.arch)):
        g = k.global_access

        def widths(op: str, g: dict[str, int] = g) -> str:
            return "/".join(str(g.get(f"{op}{w}", 0)) for w in (".128", ".64", ".32-or-less")) if g else ""

        lines.append(
            f"| `{readable[k.name]}` | sm_{k.arch} | {k.registers} | {k.smem_bytes} | "
            f"{k.spill_store_bytes}/{k.spill_load_bytes} | {k.block_threads or ''} | {k.occupancy_warps or ''} | "
            f"{k.limited_by} | {widths('LDG')} | {widths('STG')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "cuda_resources"), help="report folder")
    args = parser.parse_args(argv)
    from deeplab_fast._files import atomic_write_text

    try:
        with tempfile.TemporaryDirectory() as tmp:
            kernels = collect(Path(tmp))
    except RuntimeError as e:
        print(f"cuda_resources: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cuda_resources.md", markdown(kernels))
    atomic_write_text(out / "cuda_resources.json", json.dumps([asdict(k) for k in kernels], indent=1) + "\n")
    spills = [k for k in kernels if k.spill_store_bytes or k.spill_load_bytes]
    print(f"{len(kernels)} kernels, {len(spills)} with spills; report in {out}")
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
