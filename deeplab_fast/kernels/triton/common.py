"""Pieces every Triton launcher and kernel here shares: the device guard around launches, CUDA's grid limits,
the explicitly rounded store to bf16, and the choice between autotuning (GPUs) and one fixed config (the
interpreter, where triton.autotune with more than one config fails)."""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from deeplab_fast.kernels.triton import INTERPRET

# CUDA's launch limits: grid axis 0 up to 2^31 - 1 programs, axes 1 and 2 up to 65,535.
MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65535


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make t's CUDA device current around a launch (a tensor on cuda:1 launches on cuda:1); a no-op for CPU
    tensors (the interpreter) and under torch.compile, whose generated code sets the device itself."""
    if t.is_cuda and not torch.compiler.is_compiling():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def check_grid(grid: tuple[int, ...]) -> tuple[int, ...]:
    """`grid` if every axis is within CUDA's limits, else a ValueError naming the axis."""
    limits = (MAX_GRID_X, MAX_GRID_YZ, MAX_GRID_YZ)
    for axis, (size, limit) in enumerate(zip(grid, limits[: len(grid)], strict=True)):
        if size > limit:
            raise ValueError(f"Triton grid axis {axis} has {size} programs, more than the {limit} CUDA allows")
    return grid


def tuned(configs: list[triton.Config], key: list[str]):
    """Decorator for a jitted kernel: autotuned over `configs`, keyed by the arguments named in `key`, on a
    GPU; under the interpreter the kernel itself, which its launcher calls with one fixed set of
    meta-parameters (large programs: each costs tens of milliseconds there)."""

    def wrap(kernel):
        if INTERPRET:
            return kernel
        return triton.autotune(configs=configs, key=key)(kernel)

    return wrap


@triton.jit
def to_output(v, ptr):
    """v (fp32) in the element type of `ptr`. bf16 is rounded to nearest even with integer ops: the
    interpreter's own conversion truncates (and its round-to-nearest does not carry into the exponent); NaN
    stays NaN (the integer rounding would carry a NaN's payload into the sign bit and give -0.0)."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        rounded = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        return tl.where(v != v, v.to(tl.bfloat16), rounded)
    else:
        return v.to(ptr.dtype.element_ty)
