"""Fused atrous depthwise conv + folded BatchNorm + activation: Python API, checks, backends, fake impls,
autograd.

Semantics: deeplab_fast.ops.reference.dwconv_bn_act_reference. The compiled op is
`torch.ops.deeplab_fast.dwconv_bn_act` (csrc/ops/dwconv_bn_act.cpp) with its gradient op
`torch.ops.deeplab_fast.dwconv_bn_act_backward`; the Triton one, `torch.ops.deeplab_fast.dwconv_bn_act_triton`,
is registered here on first use around the kernel of deeplab_fast/kernels/triton/dwconv_bn_act.py.

Packed weights (docs/ops.md): `dwconv_bn_act_packed` takes the weight prepared once by `pack_dwconv_weight`
in the layout the kernels read, float32 (ceil(C / V), k*k, V) with V from `dwconv_pack_width`, and scale and
shift in float32, so a call of the compiled op runs its one kernel launch and no conversion
(`torch.ops.deeplab_fast.dwconv_bn_act_packed` and its `_cuda_emu` twin); optimize() keeps these per device,
dtype and width in its FusedDWConv modules. `dwconv_bn_act` (training, autograd) prepares them per call.

Checks: the compiled ops check their tensors in C++; `check_inputs` says the same in Python for the
reference and Triton backends and the fake implementations.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from deeplab_fast import _ext, cpu
from deeplab_fast.ops._backend import (
    check_cuda_emu_input,
    device_of,
    registered_on_first_use,
    resolve_backend,
    run_op,
)
from deeplab_fast.ops._common import (
    ACTIVATION_NAMES,
    INT64_MAX,
    activation_code,
    check_dilation,
    check_same,
    check_tensor,
    dtype_name,
    effective_dilation,
    memory_format_of,
    same_out_size,
    sizes,
)
from deeplab_fast.ops.reference import dwconv_bn_act_reference

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_types(weight: object, scale: object, shift: object, stride: object, dilation: object) -> None:
    """What the op schema cannot say: tensor arguments are tensors, stride and dilation Python ints that fit
    an int64 (x is checked when its device is read)."""
    check_tensor(weight, "weight")
    check_tensor(scale, "scale")
    check_tensor(shift, "shift")
    if type(stride) is not int or stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")
    check_dilation(dilation)


def check_settings(x: torch.Tensor, stride: int, dilation: int, activation: int, kernel: bool = True) -> None:
    """The checks every dwconv_bn_act variant ends with (csrc/ops/dwconv_bn_act.cpp, check_settings): stride,
    dilation, activation code, and float64 CUDA tensors refused by the kernels (`kernel`)."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if not 1 <= dilation <= INT64_MAX:
        raise ValueError(f"dilation must be an int >= 1, got {dilation}")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation code must be 0 (none), 1 (relu) or 2 (relu6), got {activation}")
    if kernel and x.device.type == "cuda" and x.dtype == torch.float64:
        raise ValueError(
            "dwconv_bn_act: float64 is not supported on CUDA (the CUDA kernels cover float32, float16 and "
            "bfloat16); use float32 or backend='reference'"
        )


def check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    dilation: int,
    activation: int,
    kernel: bool = True,
) -> None:
    """The C++ check of dwconv_bn_act (csrc/ops/dwconv_bn_act.cpp), in the same order and words, for the
    backends and fake implementations written in Python. `kernel`: float64 CUDA tensors are refused (the
    reference accepts them)."""
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got {x.dim()}-D with shape {sizes(x)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"x must be float32, float16, bfloat16 or float64, got {dtype_name(x.dtype)}")
    c = x.shape[1]
    if weight.dim() != 4 or weight.shape[0] != c or weight.shape[1] != 1:
        raise ValueError(f"weight must have shape (C, 1, k, k) with C={c} (x's channels), got {sizes(weight)}")
    k = weight.shape[2]
    if weight.shape[3] != k:
        raise ValueError(f"weight must be square (C, 1, k, k), got {sizes(weight)}")
    if k % 2 != 1:
        raise ValueError(f"weight's kernel size k must be odd (3, 5, 7, ...), got k={k}")
    for name, t in (("scale", scale), ("shift", shift)):
        if t.dim() != 1 or t.shape[0] != c:
            raise ValueError(f"{name} must have shape ({c},) (x's channels), got {sizes(t)}")
    for name, t in (("weight", weight), ("scale", scale), ("shift", shift)):
        check_same(t, x, name)
    check_settings(x, stride, dilation, activation, kernel)


def dwconv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    stride: int = 1,
    dilation: int = 1,
    activation: str = "relu",
    backend: str = "auto",
) -> torch.Tensor:
    """Fused `act(depthwise_conv2d(x, weight) * scale[c] + shift[c])` with "same" padding.

    Args:
        x: (N, C, H, W) float32/float16/bfloat16 (float64 on the cpu, triton-interpreter and reference
            backends), NCHW or channels_last; other strides are made contiguous first. Any side may be 0
            (the output is then empty).
        weight: (C, 1, k, k) with odd k (3, 5, 7), same dtype and device as x.
        scale, shift: (C,) folded eval BatchNorm (see `fold_bn`), same dtype and device as x.
        stride: 1 or 2.
        dilation: int in [1, 2**63 - 1]; padding is dilation * (k - 1) // 2. Taps outside the image are
            skipped: a dilation of at least max(H, W) keeps only the centre tap.
        activation: "relu", "relu6" or "none"; NaN propagates as in torch (relu(NaN) = NaN).
        backend: "auto" (the CUDA kernels on CUDA tensors, the C++ kernels on CPU tensors), "cuda",
            "cpu", "triton", "reference", or "cuda_emu" (the CUDA kernels run on CPU tensors through the
            host emulation: a slow test backend, float32/float16/bfloat16 only).

    Returns:
        (N, C, Ho, Wo) with Ho = ceil(H / stride) (likewise Wo), in x's dtype and memory format.
        Accumulation is fp32 (float64 for float64 inputs). Differentiable in x, weight, scale, shift.
    """
    code = activation_code(activation)
    chosen = resolve_backend(backend, device_of(x, "x"), "dwconv_bn_act")
    _check_types(weight, scale, shift, stride, dilation)
    if backend == "auto" and chosen in ("cuda", "triton") and x.dtype == torch.float64 and x.device.type == "cuda":
        chosen = "reference"  # the GPU kernels are fp32/fp16/bf16 only; float64 is a checking dtype
    if chosen in ("cpu", "cuda"):  # the C++ op checks the tensors
        return run_op(torch.ops.deeplab_fast.dwconv_bn_act, x, weight, scale, shift, stride, dilation, code)
    if chosen == "cuda_emu":
        return run_op(torch.ops.deeplab_fast.dwconv_bn_act_cuda_emu, x, weight, scale, shift, stride, dilation, code)
    check_inputs(x, weight, scale, shift, stride, dilation, code, kernel=chosen == "triton")
    if chosen == "reference":
        return dwconv_bn_act_reference(x, weight, scale, shift, stride, dilation, activation)
    _triton_registered()
    return torch.ops.deeplab_fast.dwconv_bn_act_triton(x, weight, scale, shift, stride, dilation, code)


# The backends whose kernels read a packed weight as it is; "triton" and "reference" unpack it.
_PACKED_KERNEL_BACKENDS = ("cpu", "cuda", "cuda_emu")


def dwconv_pack_width(dtype: torch.dtype, backend: str, *, channels_last: bool = True) -> int:
    """The width V to pack a depthwise weight with for the kernels of `backend` on inputs of `dtype`.

    Args:
        dtype: the input's dtype (float32, float16, bfloat16 or float64).
        backend: "cpu", "cuda" or "cuda_emu" (the backends whose kernels read the packed weight directly).
        channels_last: the input's layout; the CUDA kernels read V = 16 bytes of channels (4 for float32, 8
            for 16-bit types) in both layouts, the CPU kernels their AVX block for channels_last and 1 for NCHW.

    Returns:
        V, a power of two. Needs deeplab_fast._C.
    """
    if backend not in _PACKED_KERNEL_BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, _PACKED_KERNEL_BACKENDS))} (the triton and reference "
            f"backends unpack any width); got {backend!r}"
        )
    if not isinstance(dtype, torch.dtype) or dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32, float16, bfloat16 or float64, got {dtype!r}")
    if not isinstance(channels_last, bool):
        raise TypeError(f"channels_last must be True or False, got {channels_last!r}")
    _ext.require_ext(backend)
    return _pack_width(dtype, backend, channels_last, cpu.current_key() if backend == "cpu" else None)


@functools.cache
def _pack_width(dtype: torch.dtype, backend: str, channels_last: bool, cpu_variant: str | None) -> int:
    # a pure function of its arguments, asked on every FusedDWConv call: answered once per key. The CPU kernels'
    # width follows their instruction-set variant (deeplab_fast.cpu), which tests may change.
    return torch.ops.deeplab_fast.dwconv_bn_act_pack_width(backend, dtype, channels_last)


def pack_dwconv_weight(weight: torch.Tensor, width: int) -> torch.Tensor:
    """Pack a depthwise weight once for `dwconv_bn_act_packed`.

    Args:
        weight: (C, 1, k, k) float, odd k, any device.
        width: V, a power of two (`dwconv_pack_width` gives the one the kernels read).

    Returns:
        (ceil(C / V), k*k, V) contiguous float32 (float64 for a float64 weight), a new tensor on weight's device:
        element [c // V, t, c % V] is tap t (row-major over the k x k window) of channel c; channels past C are 0.
    """
    check_tensor(weight, "weight")
    if type(width) is not int or width < 1 or width & (width - 1):
        raise ValueError(f"width must be a power of two >= 1, got {width!r}")
    _ext.require_ext("cpu")
    return torch.ops.deeplab_fast.dwconv_bn_act_pack_weight(weight, width)


def unpack_dwconv_weight(packed: torch.Tensor, channels: int) -> torch.Tensor:
    """The (C, 1, k, k) weight of a packed one (ceil(C / V), k*k, V), in the packed weight's dtype."""
    blocks, kk, v = packed.shape
    k = round(kk**0.5)
    return packed.permute(0, 2, 1).reshape(blocks * v, kk)[:channels].reshape(channels, 1, k, k)


def check_packed_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    k: int,
    stride: int,
    dilation: int,
    activation: int,
    kernel: bool = True,
) -> None:
    """The C++ check of dwconv_bn_act_packed (csrc/ops/dwconv_bn_act.cpp, check_packed_inputs), in the same
    order and words, for the backends and fake implementations written in Python."""
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got {x.dim()}-D with shape {sizes(x)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"x must be float32, float16, bfloat16 or float64, got {dtype_name(x.dtype)}")
    c = x.shape[1]
    if type(k) is not int or k < 1 or k % 2 != 1:
        raise ValueError(f"k must be an odd kernel size (3, 5, 7, ...), got k={k}")
    v = weight.shape[2] if weight.dim() == 3 else 0
    if not (v >= 1 and v & (v - 1) == 0 and weight.shape[1] == k * k and weight.shape[0] == -(-c // v)):
        raise ValueError(
            f"weight must be a packed weight (ceil(C / V), k*k, V) with C={c}, k={k} and V a power of two "
            f"(deeplab_fast.ops.pack_dwconv_weight), got {sizes(weight)}"
        )
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    acc_name = "float64 (x is float64)" if acc == torch.float64 else "float32"
    for name, t in (("weight", weight), ("scale", scale), ("shift", shift)):
        if t.dtype != acc:
            raise ValueError(f"dwconv_bn_act_packed: {name} must be {acc_name}, got {dtype_name(t.dtype)}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    if not weight.is_contiguous():
        raise ValueError("dwconv_bn_act_packed: weight must be contiguous")
    for name, t in (("scale", scale), ("shift", shift)):
        if t.dim() != 1 or t.shape[0] != c:
            raise ValueError(f"{name} must have shape ({c},) (x's channels), got {sizes(t)}")
    check_settings(x, stride, dilation, activation, kernel)


def dwconv_bn_act_packed(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    k: int,
    stride: int = 1,
    dilation: int = 1,
    activation: str = "relu",
    backend: str = "auto",
) -> torch.Tensor:
    """`dwconv_bn_act` with the weight prepared once: the inference form optimize() runs.

    Args:
        x: as for dwconv_bn_act.
        weight: packed (ceil(C / V), k*k, V) float32 weight (float64 for float64 x) from `pack_dwconv_weight`,
            on x's device. Packed with `dwconv_pack_width(x.dtype, backend, channels_last=...)`, a call of the
            cpu, cuda or cuda_emu backend runs one kernel launch and no conversion; any other width is correct
            but re-blocked on every call (as is an x whose storage breaks the CUDA kernels' 16-byte alignment).
            The triton and reference backends unpack it.
        scale, shift: (C,) float32 (float64 for float64 x), on x's device.
        k: the kernel size (odd); stride, dilation, activation, backend: as for dwconv_bn_act.

    Returns:
        (N, C, ceil(H / stride), ceil(W / stride)) in x's dtype and memory format. Differentiable (through the
        reference's vector-Jacobian product: train with dwconv_bn_act, whose backward runs the kernels).
    """
    code = activation_code(activation)
    chosen = resolve_backend(backend, device_of(x, "x"), "dwconv_bn_act")
    _check_types(weight, scale, shift, stride, dilation)
    if backend == "auto" and chosen in ("cuda", "triton") and x.dtype == torch.float64 and x.device.type == "cuda":
        chosen = "reference"
    if chosen in ("cpu", "cuda"):
        return run_op(torch.ops.deeplab_fast.dwconv_bn_act_packed, x, weight, scale, shift, k, stride, dilation, code)
    if chosen == "cuda_emu":
        op = torch.ops.deeplab_fast.dwconv_bn_act_packed_cuda_emu
        return run_op(op, x, weight, scale, shift, k, stride, dilation, code)
    check_packed_inputs(x, weight, scale, shift, k, stride, dilation, code, kernel=chosen == "triton")
    w = unpack_dwconv_weight(weight, x.shape[1])
    if chosen == "reference":
        return dwconv_bn_act_reference(x, w, scale, shift, stride, dilation, activation)
    _triton_registered()
    # the Triton op takes its parameters in x's dtype (and computes in float32)
    args = (w.to(x.dtype), scale.to(x.dtype), shift.to(x.dtype))
    return torch.ops.deeplab_fast.dwconv_bn_act_triton(x, *args, stride, dilation, code)


def _packed_reference(x, weight, scale, shift, k, stride, dilation, activation):
    w = unpack_dwconv_weight(weight, x.shape[1])
    return dwconv_bn_act_reference(x, w, scale, shift, stride, dilation, ACTIVATION_NAMES[activation])


def _packed_setup_context(ctx, inputs, output) -> None:
    x, weight, scale, shift, k, stride, dilation, activation = inputs
    ctx.save_for_backward(x, weight, scale, shift)
    ctx.conf = (k, stride, dilation, activation)


def _packed_backward(ctx, grad_out: torch.Tensor):
    # Inference is what the packed op is for: its gradient is the reference's vector-Jacobian product, taken
    # with respect to the packed weight itself (padding channels get 0).
    x, weight, scale, shift = ctx.saved_tensors
    k, stride, dilation, activation = ctx.conf
    _, vjp = torch.func.vjp(
        lambda a, b, c, d: _packed_reference(a, b, c, d, k, stride, dilation, activation), x, weight, scale, shift
    )
    return (*vjp(grad_out), None, None, None, None)


def _packed_fake(x, weight, scale, shift, k, stride, dilation, activation):
    check_packed_inputs(x, weight, scale, shift, k, stride, dilation, activation)
    return fake_output(x, stride)


def fold_bn(bn: nn.BatchNorm2d, conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm (and an optional preceding conv bias) into (scale, shift), each (C,).

    scale = gamma / sqrt(running_var + eps); shift = beta - running_mean * scale + conv_bias * scale.
    Both are returned in the BatchNorm's dtype, detached.
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"bn must be a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn must track running statistics (track_running_stats=True) to be folded")
    var = bn.running_var.detach()
    mean = bn.running_mean.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    shift = beta - mean * scale
    if conv_bias is not None:
        shift = shift + conv_bias.detach() * scale
    return scale, shift


def fake_output(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Empty (N, C, ceil(H / stride), ceil(W / stride)) output with x's dtype, device and memory format."""
    n, c, h, w = x.shape
    shape = (n, c, same_out_size(h, stride), same_out_size(w, stride))
    return x.new_empty(shape).contiguous(memory_format=memory_format_of(x))


def kernel_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    dilation: int,
    activation: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx, dweight, dscale, dshift) of dwconv_bn_act, each shaped and typed like its input.

    Runs the compiled backward kernels when the extension has them for x's device; otherwise (no build,
    or a CUDA build missing on this machine) the reference's vector-Jacobian product.
    """
    if _ext.has_kernel("dwconv_bn_act_backward", x.device.type):
        return torch.ops.deeplab_fast.dwconv_bn_act_backward(
            grad_out, x, weight, scale, shift, stride, dilation, activation
        )
    act_name = ACTIVATION_NAMES[activation]
    _, vjp = torch.func.vjp(
        lambda a, b, c, d: dwconv_bn_act_reference(a, b, c, d, stride, dilation, act_name), x, weight, scale, shift
    )
    return vjp(grad_out)


def _cuda_emu_backward(ctx, grad_out: torch.Tensor):
    # The emulated op's gradient runs the emulated CUDA backward kernels.
    x, weight, scale, shift = ctx.saved_tensors
    stride, dilation, activation = ctx.conf
    gx, gw, gs, gb = torch.ops.deeplab_fast.dwconv_bn_act_backward_cuda_emu(
        grad_out, x, weight, scale, shift, stride, dilation, activation
    )
    return gx, gw, gs, gb, None, None, None


def _setup_context(ctx, inputs, output) -> None:
    # The inputs are saved; the output is recomputed in the backward, not kept.
    x, weight, scale, shift, stride, dilation, activation = inputs
    ctx.save_for_backward(x, weight, scale, shift)
    ctx.conf = (stride, dilation, activation)


def _backward(ctx, grad_out: torch.Tensor):
    x, weight, scale, shift = ctx.saved_tensors
    stride, dilation, activation = ctx.conf
    gx, gw, gs, gb = kernel_backward(grad_out, x, weight, scale, shift, stride, dilation, activation)
    return gx, gw, gs, gb, None, None, None


def _fake(x, weight, scale, shift, stride, dilation, activation):
    check_inputs(x, weight, scale, shift, stride, dilation, activation)
    return fake_output(x, stride)


def _register_triton() -> None:
    from torch.library import triton_op

    @triton_op("deeplab_fast::dwconv_bn_act_triton", mutates_args=())
    def dwconv_bn_act_triton(
        x: torch.Tensor,
        weight: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        stride: int,
        dilation: int,
        activation: int,
    ) -> torch.Tensor:
        """Triton dwconv_bn_act: arguments as the compiled op's (activation is the kernel code)."""
        from deeplab_fast.kernels.triton.dwconv_bn_act import launch_dwconv_bn_act

        y = fake_output(x, stride)
        if y.numel() == 0:
            return y
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        c, k = weight.shape[0], weight.shape[-1]
        d = effective_dilation(dilation, x.shape[2], x.shape[3])
        w2 = weight.to(acc).reshape(c, k * k).contiguous()
        launch_dwconv_bn_act(x, w2, scale.to(acc).contiguous(), shift.to(acc).contiguous(), y, k, stride, d, activation)
        return y

    # An explicit fake: tracing the body would run the interpreter on fake tensors, and meta tensors
    # would try to allocate.
    dwconv_bn_act_triton.register_fake(_fake)
    dwconv_bn_act_triton.register_autograd(_backward, setup_context=_setup_context)


_triton_registered = registered_on_first_use(_register_triton)


if _ext.HAS_EXT:
    torch.library.register_fake("deeplab_fast::dwconv_bn_act")(_fake)

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act_backward")
    def _(grad_out, x, weight, scale, shift, stride, dilation, activation):
        check_inputs(x, weight, scale, shift, stride, dilation, activation)
        fmt = memory_format_of(x)
        return (
            torch.empty_like(x, memory_format=fmt),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            torch.empty_like(scale, memory_format=torch.contiguous_format),
            torch.empty_like(shift, memory_format=torch.contiguous_format),
        )

    torch.library.register_autograd("deeplab_fast::dwconv_bn_act", _backward, setup_context=_setup_context)

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act_cuda_emu")
    def _(x, weight, scale, shift, stride, dilation, activation):
        check_inputs(x, weight, scale, shift, stride, dilation, activation)
        check_cuda_emu_input(x, "x", "dwconv_bn_act")
        return fake_output(x, stride)

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act_backward_cuda_emu")
    def _(grad_out, x, weight, scale, shift, stride, dilation, activation):
        check_inputs(x, weight, scale, shift, stride, dilation, activation)
        check_cuda_emu_input(x, "x", "dwconv_bn_act")
        return (
            torch.empty_like(x, memory_format=memory_format_of(x)),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            torch.empty_like(scale, memory_format=torch.contiguous_format),
            torch.empty_like(shift, memory_format=torch.contiguous_format),
        )

    torch.library.register_autograd(
        "deeplab_fast::dwconv_bn_act_cuda_emu", _cuda_emu_backward, setup_context=_setup_context
    )

    torch.library.register_fake("deeplab_fast::dwconv_bn_act_packed")(_packed_fake)

    @torch.library.register_fake("deeplab_fast::dwconv_bn_act_packed_cuda_emu")
    def _(x, weight, scale, shift, k, stride, dilation, activation):
        check_packed_inputs(x, weight, scale, shift, k, stride, dilation, activation)
        check_cuda_emu_input(x, "x", "dwconv_bn_act")
        return fake_output(x, stride)

    for _name in ("dwconv_bn_act_packed", "dwconv_bn_act_packed_cuda_emu"):
        torch.library.register_autograd(f"deeplab_fast::{_name}", _packed_backward, setup_context=_packed_setup_context)
