"""Fused atrous depthwise conv + folded BatchNorm + activation: Python API, checks, backends, fake impls,
autograd.

Semantics: deeplab_fast.ops.reference.dwconv_bn_act_reference. The compiled op is
`torch.ops.deeplab_fast.dwconv_bn_act` (csrc/ops/dwconv_bn_act.cpp) with its gradient op
`torch.ops.deeplab_fast.dwconv_bn_act_backward`; the Triton one, `torch.ops.deeplab_fast.dwconv_bn_act_triton`,
is registered here on first use around the kernel of deeplab_fast/kernels/triton/dwconv_bn_act.py.

Checks: the compiled ops check their tensors in C++; `check_inputs` says the same in Python for the
reference and Triton backends and the fake implementations.
"""

from __future__ import annotations

import torch
from torch import nn

from deeplab_fast import _ext
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
