"""Triton backend of dwconv_bn_act: fused depthwise conv + folded BatchNorm + activation.

Exposed as the custom op `deeplab_fast::dwconv_bn_act_triton` (torch.library.triton_op + wrap_triton), so
torch.compile sees the kernel itself. Each program computes a tile of BLOCK_P output pixels x BLOCK_C
channels of one image; addresses come from strides, so one kernel serves NCHW and channels_last (the
faster-moving tile axis follows the layout). Out-of-image taps are masked off and never loaded.
Gradients use the compiled backward kernels when the extension has them for the device, else the
reference's VJP (deeplab_fast.ops.dwconv_bn_act.kernel_backward).
"""

from __future__ import annotations

import importlib
import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# The module, not the function of the same name that deeplab_fast.ops re-exports.
_api = importlib.import_module("deeplab_fast.ops.dwconv_bn_act")


@triton.jit
def _dwconv_bn_act_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    shift_ptr,
    y_ptr,
    C,
    H,
    W,
    Ho,
    Wo,
    xs_n,
    xs_c,
    xs_h,
    xs_w,
    ys_n,
    ys_c,
    ys_h,
    ys_w,
    stride,
    dilation,
    pad,
    K: tl.constexpr,
    ACT: tl.constexpr,
    ACC_F64: tl.constexpr,
    OUT_BF16: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    n = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_ok = pix < Ho * Wo
    c_ok = ch < C
    ho = pix // Wo
    wo = pix % Wo
    acc_ty = tl.float64 if ACC_F64 else tl.float32
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=acc_ty)
    x_base = x_ptr + n.to(tl.int64) * xs_n + ch[None, :].to(tl.int64) * xs_c
    for i in tl.static_range(K):
        hi = ho * stride - pad + i * dilation
        h_ok = p_ok & (hi >= 0) & (hi < H)
        for j in tl.static_range(K):
            wi = wo * stride - pad + j * dilation
            ok = h_ok & (wi >= 0) & (wi < W)
            offs = hi.to(tl.int64) * xs_h + wi.to(tl.int64) * xs_w
            xv = tl.load(x_base + offs[:, None], mask=ok[:, None] & c_ok[None, :], other=0.0).to(acc_ty)
            wv = tl.load(w_ptr + ch * (K * K) + (i * K + j), mask=c_ok, other=0.0).to(acc_ty)
            acc += xv * wv[None, :]
    s = tl.load(scale_ptr + ch, mask=c_ok, other=0.0).to(acc_ty)
    b = tl.load(shift_ptr + ch, mask=c_ok, other=0.0).to(acc_ty)
    out = acc * s[None, :] + b[None, :]
    if ACT == 1:
        out = tl.maximum(out, 0.0)
    if ACT == 2:
        out = tl.minimum(tl.maximum(out, 0.0), 6.0)
    y_offs = n.to(tl.int64) * ys_n + ch[None, :].to(tl.int64) * ys_c + (ho.to(tl.int64) * ys_h + wo * ys_w)[:, None]
    if OUT_BF16:
        # Round to nearest even explicitly: the CPU interpreter's fp32 -> bf16 cast truncates.
        u = out.to(tl.float32).to(tl.uint32, bitcast=True)
        u = u + 0x7FFF + ((u >> 16) & 1)
        res = (u >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        res = out.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + y_offs, res, mask=p_ok[:, None] & c_ok[None, :])


def _blocks(hw: int, c: int, channels_last: bool, interpret: bool) -> tuple[int, int]:
    """Tile sizes: large ones under the interpreter (each program costs ~50 ms), GPU-friendly ones otherwise."""
    if interpret:
        return min(1024, triton.next_power_of_2(max(hw, 1))), min(64, triton.next_power_of_2(max(c, 1)))
    if channels_last:  # channels are contiguous: wide in C
        return 32, min(64, triton.next_power_of_2(max(c, 1)))
    return 128, min(4, triton.next_power_of_2(max(c, 1)))  # pixels are contiguous: wide in P


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
    """Triton dwconv_bn_act. x (N, C, H, W) float, weight (C, 1, k, k), scale/shift (C,); activation code
    0 none / 1 relu / 2 relu6. Returns (N, C, Ho, Wo) in x's dtype and memory format (fp32 accumulation,
    float64 for float64)."""
    y = _api.fake_output(x, weight, stride, dilation)
    n, c, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    if y.numel() == 0:
        return y
    k = weight.shape[-1]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    w2 = weight.to(acc).reshape(c, k * k).contiguous()
    s = scale.to(acc).contiguous()
    b = shift.to(acc).contiguous()
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    channels_last = y.stride(1) == 1 and c > 1
    block_p, block_c = _blocks(ho * wo, c, channels_last, interpret)
    grid = (n, triton.cdiv(ho * wo, block_p), triton.cdiv(c, block_c))
    wrap_triton(_dwconv_bn_act_kernel)[grid](
        x, w2, s, b, y,
        c, h, w, ho, wo,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2), y.stride(3),
        stride, dilation, dilation * (k - 1) // 2,
        K=k, ACT=activation, ACC_F64=x.dtype == torch.float64, OUT_BF16=x.dtype == torch.bfloat16,
        BLOCK_P=block_p, BLOCK_C=block_c,
    )  # fmt: skip
    return y


dwconv_bn_act_triton.register_autograd(_api.backward, setup_context=_api.setup_context)
