"""Testing utilities for code built on deeplab_fast (as `torch.testing` is for PyTorch).

    from deeplab_fast.testing import one_thread, randomize_batchnorm

    model = randomize_batchnorm(deeplabv3plus("mobilenet_v2", width_mult=0.25).eval(), seed=0)
    with one_thread():
        ...  # compare two implementations without thread-count effects

This module imports only torch: importing it loads neither triton nor torch._dynamo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "CUDA_EMU_COUNTERS",
    "CUDA_EMU_ORDERS",
    "cpu_capability",
    "cuda_emu_counters",
    "cuda_emu_order",
    "one_thread",
    "randomize_batchnorm",
    "supported_cpu_capabilities",
]

CUDA_EMU_ORDERS = ("forward", "reverse", "shuffle")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with `torch.set_num_threads(1)`, then restore the previous intra-op thread count.

    Process-wide while it is active (torch's thread count is global). Useful on shared or small machines,
    where tiny tensors gain nothing from more threads, and for reproducible float sums: a reduction split
    over a different number of threads may round differently.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def cuda_emu_order(order: str, seed: int = 0) -> Iterator[None]:
    """Run the body with the CUDA emulation's threads scheduled in `order`, then restore the previous order.

    Backend "cuda_emu" runs the CUDA kernels on the CPU: the threads of a block are fibers that run one after
    another between barriers (__syncthreads, warp-synchronous calls), and blocks one after another. `order`
    picks who runs first: "forward" (thread 0 first, the default), "reverse", or "shuffle" (a permutation
    drawn per scheduling pass, from a generator seeded with `seed`, an int >= 0). A kernel whose output
    differs between orders has a race (a missing barrier, two threads writing one element); every kernel's
    results must be bitwise identical in all orders under `torch.use_deterministic_algorithms(True)`.

    Process-wide while active (the emulation's schedule is one setting). Needs deeplab_fast._C.
    """
    if order not in CUDA_EMU_ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, CUDA_EMU_ORDERS))}, got {order!r}")
    if type(seed) is not int or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    from deeplab_fast import _ext

    _ext.require_ext("cuda_emu")
    previous = torch.ops.deeplab_fast.cuda_emu_order()
    torch.ops.deeplab_fast.set_cuda_emu_order(order, seed)
    try:
        yield
    finally:
        torch.ops.deeplab_fast.set_cuda_emu_order(*previous)


@contextlib.contextmanager
def cpu_capability(name: str) -> Iterator[None]:
    """Run the body on the CPU kernels compiled for instruction set `name`, then restore the previous variant.

    `name` is "default" (portable), "avx2" or "avx512" (deeplab_fast.cpu_capability() says which runs by default:
    the best this CPU and build support). Forcing a lower variant keeps it tested on a machine that would pick a
    higher one. A variant this CPU or build cannot run, or an unknown name, is a ValueError naming `name` and the
    supported ones (supported_cpu_capabilities()). Process-wide while active (one setting for all threads);
    packed depthwise weights (deeplab_fast.optimize) are re-packed for the variant's lane width when it changes.
    Needs deeplab_fast._C.
    """
    from deeplab_fast import cpu

    previous = cpu.cpu_capability()
    cpu._set_cpu_capability(name)
    try:
        yield
    finally:
        cpu._set_cpu_capability(previous)


def supported_cpu_capabilities() -> tuple[str, ...]:
    """The instruction-set variants of the CPU kernels this CPU and build can run, lowest first: ("default",),
    ("default", "avx2") or ("default", "avx2", "avx512"). Needs deeplab_fast._C."""
    from deeplab_fast import cpu

    return cpu.supported_cpu_capabilities()


CUDA_EMU_COUNTERS = (
    "launches",
    "load_instructions",
    "store_instructions",
    "load_sectors",
    "store_sectors",
    "load_bytes",
    "store_bytes",
)


@contextlib.contextmanager
def cuda_emu_counters() -> Iterator[dict[str, int]]:
    """Count the global-memory traffic of the emulated CUDA kernels run in the body (backend "cuda_emu").

    Yields a dict that is filled when the body ends, with the keys of CUDA_EMU_COUNTERS: kernel launches;
    warp-wide load and store instructions (the i-th global access of each lane of a warp is one
    instruction); the distinct 32-byte sectors those instructions touch, summed (what a GPU's memory system
    transfers, before caching); and the bytes the threads asked for. Every global access of a kernel goes
    through load_global / store_global (csrc/common/memory.h), so nothing escapes the count.

    Process-wide while active; slows the emulation further (each access is recorded). Needs deeplab_fast._C.
    """
    from deeplab_fast import _ext

    _ext.require_ext("cuda_emu")
    result: dict[str, int] = {}
    torch.ops.deeplab_fast.set_cuda_emu_counting(True)
    try:
        yield result
    finally:
        torch.ops.deeplab_fast.set_cuda_emu_counting(False)
        result.update(zip(CUDA_EMU_COUNTERS, torch.ops.deeplab_fast.cuda_emu_counters(), strict=True))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm of `model` random statistics and affine parameters, in place; returns `model`.

    A freshly built model has BatchNorm running_mean 0, running_var 1, weight 1 and bias 0, so BN folding
    and converters that mishandle BN would still match the reference. After this call each BN layer
    (`nn.BatchNorm1d/2d/3d`, `nn.SyncBatchNorm` and other `_BatchNorm` subclasses) has, per channel,
    float values drawn from a CPU generator seeded with `seed`:
    running_mean in [-0.5, 0.5), running_var in [0.5, 1.5), weight in [0.5, 1.5), bias in [-0.5, 0.5)
    (the affine ones only when the layer has them). Each tensor keeps its shape (C,), dtype and device;
    the same `seed` and architecture give the same values on every machine. Nothing else changes (no
    mode switch: call `.eval()` yourself for inference comparisons).
    """
    generator = torch.Generator().manual_seed(seed)

    def draw(like: torch.Tensor, low: float) -> torch.Tensor:
        values = torch.rand(like.shape, generator=generator, dtype=torch.float32) + low
        return values.to(dtype=like.dtype, device=like.device)

    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            if module.running_mean is not None:
                module.running_mean.copy_(draw(module.running_mean, -0.5))
                module.running_var.copy_(draw(module.running_var, 0.5))
            if module.weight is not None:
                module.weight.copy_(draw(module.weight, 0.5))
            if module.bias is not None:
                module.bias.copy_(draw(module.bias, -0.5))
    return model
