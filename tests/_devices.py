"""Where each test's tensors live, and which backend runs the CUDA kernels on this machine.

On a machine with CUDA the CUDA and Triton tests use CUDA tensors (the Triton interpreter stays off); without
CUDA, Triton runs through its interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1) and the CUDA
kernels run on CPU tensors through the host emulation (backend "cuda_emu"). No test hands CPU tensors to a
GPU-only path: tensors for a backend are made on `backend_device(backend)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

HAS_CUDA = torch.cuda.is_available()
# The device of the GPU paths' tensors (the `device` fixture of tests/conftest.py).
DEVICE = "cuda" if HAS_CUDA else "cpu"
# The backend that runs the CUDA kernels here: the real ones on a GPU, the emulated ones on a CPU.
CUDA_KERNELS = "cuda" if HAS_CUDA else "cuda_emu"


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
