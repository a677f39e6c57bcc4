"""The one dispatch path of every fused op: backend resolution and its cache, availability errors, the
no-grad fast call, and registrations made on first use.

Backends: "auto", "cuda", "cpu", "triton", "reference", and "cuda_emu": the CUDA kernels run on CPU tensors
through the host emulation of CUDA (csrc/emu), a test backend that "auto" never chooses. `resolve_backend`
answers from one cache and is evaluated once at trace time under torch.compile (it queries the dispatcher,
which Dynamo cannot trace); `run_op` calls a compiled op below the Autograd key when there is nothing to record.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from deeplab_fast import _ext

BACKENDS = ("auto", "cuda", "cpu", "triton", "reference", "cuda_emu")

# The ops with CUDA kernels, which the "cuda_emu" backend runs (each as its `<op>_cuda_emu` twin).
CUDA_EMU_OPS = ("dwconv_bn_act", "upsample_concat", "upsample_argmax", "upsample_softmax_accumulate")
_CUDA_EMU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable[..., Any])


def constant_result(fn: F) -> F:
    """Mark `fn` as torch.compiler.assume_constant_result does: Dynamo calls it at trace time with constant
    arguments and folds its result into the graph. The mark is set directly because the public decorator
    imports torch._dynamo (about a second), which `import deeplab_fast` must not pay."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


def triton_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether Triton kernels can run on tensors of `device`, and why not if they cannot.

    On a CPU they run only through the Triton interpreter, which TRITON_INTERPRET=1 selects when triton is
    first imported; meta tensors need only the package (their fake implementations answer).
    """
    device_type = getattr(device, "type", device)
    if importlib.util.find_spec("triton") is None:
        return False, "the triton package is not installed (pip install triton==3.8.0)"
    if device_type in ("cuda", "meta") or os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, (
        f"Triton kernels need CUDA tensors (got a {device_type} tensor); on a CPU they run only "
        "through the interpreter, with TRITON_INTERPRET=1 set before deeplab_fast is imported"
    )


# The single cache of successful resolutions, by (backend, device type, op). Errors are raised anew each
# time, not cached.
_RESOLVED: dict[tuple[str, str, str], str] = {}


@constant_result
def resolve_backend(backend: str, device: torch.device | str, op: str) -> str:
    """Map a user's `backend` argument to the concrete backend for `op` on tensors of `device`.

    Raises ValueError for an unknown name and RuntimeError for a backend this machine or build cannot
    run, naming the argument and what would work.
    """
    device_type = getattr(device, "type", device)
    try:
        return _RESOLVED[(backend, device_type, op)]
    except (KeyError, TypeError):  # TypeError: an unhashable `backend`, which _resolve rejects
        pass
    chosen = _resolve(backend, device_type, op)
    _RESOLVED[(backend, device_type, op)] = chosen
    return chosen


def _resolve(backend: object, device_type: str, op: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if device_type in ("cpu", "cuda") and _ext.has_kernel(op, device_type):
            return device_type
        if device_type == "cuda" and triton_available(device_type)[0] and op != "winograd_conv3x3":
            return "triton"
        return "reference"
    if backend == "reference":
        return backend
    if backend == "cuda_emu":
        if op not in CUDA_EMU_OPS:
            raise RuntimeError(f"backend='cuda_emu' is unavailable for {op}: it has no CUDA kernel")
        if device_type != "cpu":
            raise RuntimeError(
                f"backend='cuda_emu' runs the CUDA kernels of {op} on the CPU through the host emulation and takes "
                f"CPU tensors, but the input is on {device_type} (use backend='cuda' for CUDA tensors)"
            )
        _ext.require_ext(backend)
        if not _ext.has_kernel(f"{op}_cuda_emu", "cpu"):
            raise RuntimeError(f"backend='cuda_emu' has no kernel for {op} in this build. {_ext.BUILD_HINT}")
        return backend
    if backend == "triton":
        if op == "winograd_conv3x3":
            raise RuntimeError("backend='triton' is unavailable for winograd_conv3x3: it has no Triton kernel")
        ok, why = triton_available(device_type)
        if not ok:
            raise RuntimeError(f"backend='triton' is unavailable for {op}: {why}")
        return backend
    # cpu / cuda: compiled kernels
    if device_type != backend:
        raise RuntimeError(
            f"backend={backend!r} runs on {backend} tensors, but the input of {op} is on {device_type}; "
            f"move the tensors or use backend='auto'"
        )
    _ext.require_ext(backend)
    if not _ext.has_kernel(op, backend):
        if backend == "cuda":
            raise RuntimeError(
                f"backend='cuda' is unavailable for {op}: deeplab_fast._C was built without CUDA kernels. "
                f"Rebuild with nvcc on PATH (DEEPLAB_FAST_CUDA=1). {_ext.BUILD_HINT}"
            )
        raise RuntimeError(f"backend={backend!r} has no kernel for {op} in this build. {_ext.BUILD_HINT}")
    return backend


def check_cuda_emu_input(t: torch.Tensor, name: str, op: str) -> None:
    """What the emulated CUDA kernels accept for tensor argument `name` of `op`: the C++ check of the
    `<op>_cuda_emu` ops (csrc/common/checks.h, check_cuda_emu_input) in the same words, for the fake impls."""
    if t.device.type != "cpu":
        raise ValueError(
            f"{op}: backend='cuda_emu' runs the CUDA kernels on the CPU through the host emulation, so {name} must "
            f"be a CPU tensor, got one on {t.device} (use backend='cuda' for CUDA tensors)"
        )
    if t.dtype not in _CUDA_EMU_DTYPES:
        raise ValueError(
            f"{op}: backend='cuda_emu' runs the CUDA kernels, which support float32, float16 and bfloat16; {name} is "
            f"{str(t.dtype).removeprefix('torch.')} (use backend='cpu' or 'reference')"
        )


def device_of(t: object, name: str) -> torch.device:
    """The device of tensor argument `name` (a TypeError naming it if it is not a tensor)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t.device


def run_op(op: Callable[..., Any], *args: Any) -> Any:
    """Call the custom op `op` (a torch.ops.deeplab_fast.* overload packet) on `args`.

    With gradients off (torch.no_grad, inference_mode) and outside torch.compile, the call goes straight
    below the Autograd dispatch key: the autograd formulas these ops register from Python would otherwise
    run a Python redispatch on every call (~6 us) only to find there is nothing to record.
    """
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    return op(*args)


def registered_on_first_use(register: Callable[[], None]) -> Callable[[], bool]:
    """A function that runs `register` the first time it is called and returns True.

    For the Triton ops: torch.library.triton_op imports triton (about 0.4 s) when it registers an op, so
    they register when a Triton backend is first used, eagerly or at trace time under torch.compile.
    """
    done = []

    @constant_result
    def ensure() -> bool:
        if not done:
            register()
            done.append(True)
        return True

    return ensure
