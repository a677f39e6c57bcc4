"""Where each test's tensors live, and which backend runs the CUDA kernels on this machine.

On a machine with CUDA the CUDA and Triton tests use CUDA tensors (the Triton interpreter stays off); without
CUDA, Triton runs through its interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1) and the CUDA
kernels run on CPU tensors through the host emulation (backend "cuda_emu"). No test hands CPU tensors to a
GPU-only path: tensors for a backend are made on `backend_device(backend)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from deeplab_fast.cpu import CPU_CAPABILITIES

HAS_CUDA = torch.cuda.is_available()
# The device of the GPU paths' tensors (the `device` fixture of tests/conftest.py).
DEVICE = "cuda" if HAS_CUDA else "cpu"
# The backend that runs the CUDA kernels here: the real ones on a GPU, the emulated ones on a CPU.
CUDA_KERNELS = "cuda" if HAS_CUDA else "cuda_emu"


# The instruction-set variants of the CPU kernels (deeplab_fast.cpu), lowest first. A CPU op grid runs on each
# through tests/conftest.py's `cpu_variant` fixture (test ids cpu-default / cpu-avx2 / cpu-avx512); a variant this
# machine lacks skips, naming it.
CPU_VARIANTS = CPU_CAPABILITIES


def cpu_variant_id(name: str) -> str:
    """The test id of the CPU kernel variant `name`: "cpu-default", "cpu-avx2", "cpu-avx512"."""
    return f"cpu-{name}"


# Decorator: run the test once per CPU kernel variant (its `cpu_variant` argument is the variant's name).
each_cpu_variant = pytest.mark.parametrize(
    "cpu_variant", [pytest.param(name, id=cpu_variant_id(name)) for name in CPU_VARIANTS], indirect=True
)


def backend_rows(backend: str) -> list[tuple[str, str | None]]:
    """(test id, cpu_variant) for `backend`'s rows of a grid that mixes backends: one row per CPU kernel variant for
    "cpu" (ids cpu-default, ...), one row with None (the variant left as it is) for the others."""
    if backend == "cpu":
        return [(cpu_variant_id(name), name) for name in CPU_VARIANTS]
    return [(backend, None)]


def backend_variant_params(*backends: str) -> list:
    """pytest.params of (backend, cpu_variant) for a test parametrized over `backends`, with backend_rows' rows and
    ids: parametrize("backend,cpu_variant", backend_variant_params(...), indirect=["cpu_variant"])."""
    return [pytest.param(b, variant, id=label) for b in backends for label, variant in backend_rows(b)]


@contextlib.contextmanager
def forced_cpu_variant(name: str) -> Iterator[None]:
    """Run the body on the CPU kernels of variant `name` (deeplab_fast.testing.cpu_capability), restoring the previous
    one afterwards even when the body raises; pytest.skip naming the missing capability when this machine (or build)
    cannot run it, e.g. "needs a CPU with AVX-512 (this CPU: avx2)"."""
    from deeplab_fast import _ext, cpu
    from deeplab_fast.testing import cpu_capability

    if not _ext.HAS_EXT:
        pytest.skip(f"deeplab_fast._C is not built ({_ext.EXT_ERROR})")
    reason = cpu.unsupported_reason(name)
    if reason is not None:
        pytest.skip(reason)
    with cpu_capability(name):
        yield


def backend_device(backend: str) -> str:
    """The device of the tensors `backend` takes on this machine: DEVICE for "triton" and "cuda", CPU otherwise
    ("cpu", "reference", "cuda_emu", "auto")."""
    return DEVICE if backend in ("triton", "cuda") else "cpu"


def to_backend(backend: str, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """`tensors` moved to backend_device(backend), keeping their memory format and requires_grad leaves
    (a moved leaf is a new leaf; the caller differentiates with respect to the returned tensors)."""
    device = backend_device(backend)
    out = []
    for t in tensors:
        moved = t.detach().to(device)
        out.append(moved.requires_grad_() if t.requires_grad else moved)
    return out


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """torch.use_deterministic_algorithms(True) for the body, then the previous setting."""
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of `t` as integers (NaN payloads and signed zeros included), for bitwise comparisons."""
    t = t.detach().cpu().contiguous()
    if t.dtype.is_floating_point:
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def offset_view(t: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """A copy of `t` (NCHW or channels_last contiguous) whose data starts `offset` elements into its buffer, on
    t's device: with offset 1 its base pointer is not 16-byte aligned, which sends the CUDA kernels that read
    16-byte packs to their unaligned fallback."""
    buf = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    view = buf[offset:].as_strided(t.shape, t.stride(), offset)
    view.copy_(t)
    return view
