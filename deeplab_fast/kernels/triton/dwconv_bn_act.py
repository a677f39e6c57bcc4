"""Triton kernel of dwconv_bn_act (fused depthwise conv + folded BatchNorm + activation) and its launcher.

Each program computes a tile of BLOCK_P output pixels x BLOCK_C channels of one image; addresses come from
strides, so one kernel serves NCHW and channels_last (the faster-moving tile axis follows the layout).
Out-of-image taps are masked off and never loaded. The op around it (checks, output, fake, autograd) is
deeplab_fast.ops.dwconv.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from deeplab_fast.kernels.triton import INTERPRET


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
    # Selects, not max/min: a comparison with NaN is false, so NaN passes through (as torch's relu).
    if ACT == 1:
        out = tl.where(out < 0.0, 0.0, out)
    if ACT == 2:
        out = tl.where(out < 0.0, 0.0, tl.where(out > 6.0, 6.0, out))
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


def launch_dwconv_bn_act(
    x: torch.Tensor,
    w2: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    y: torch.Tensor,
    k: int,
    stride: int,
    dilation: int,
    activation: int,
) -> None:
    """Write act(dwconv(x) * scale + shift) into y (N, C, Ho, Wo), y non-empty. x (N, C, H, W) in any
    strides; w2 (C, k * k) (k odd), scale and shift (C,) contiguous in the accumulation dtype (float64 for float64
    x, else float32); dilation at most max(H, W) (deeplab_fast.ops._common.effective_dilation)."""
    n, c, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    channels_last = y.stride(1) == 1 and c > 1
    block_p, block_c = _blocks(ho * wo, c, channels_last, INTERPRET)
    grid = (n, triton.cdiv(ho * wo, block_p), triton.cdiv(c, block_c))
    wrap_triton(_dwconv_bn_act_kernel)[grid](
        x, w2, scale, shift, y,
        c, h, w, ho, wo,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2), y.stride(3),
        stride, dilation, dilation * (k - 1) // 2,
        K=k, ACT=activation, ACC_F64=x.dtype == torch.float64, OUT_BF16=x.dtype == torch.bfloat16,
        BLOCK_P=block_p, BLOCK_C=block_c,
    )  # fmt: skip
