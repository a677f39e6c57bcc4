"""Triton kernel of dwconv_bn_act (fused depthwise conv + folded BatchNorm + activation) and its launcher.

Each program computes a tile of BLOCK_P output pixels x BLOCK_C channels of one image; addresses come from
strides, so one kernel serves NCHW and channels_last (the faster-moving tile axis follows the layout).
Out-of-image taps are masked off and never loaded. The grid is one axis of (image, pixel tile, channel tile)
programs, so any map size stays within CUDA's grid limits (dwconv_grid). On a GPU the tile is autotuned over
a few configs per layout; the interpreter runs one fixed tile. The op around it (checks, output, fake,
autograd) is deeplab_fast.ops.dwconv.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from deeplab_fast.kernels.triton import INTERPRET
from deeplab_fast.kernels.triton.common import MAX_GRID_X, check_grid, device_guard, to_output, tuned


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
    # Programs enumerate (image, pixel tile, channel tile), channel tiles fastest (dwconv_grid).
    pid = tl.program_id(0)
    tiles_c = tl.cdiv(C, BLOCK_C)
    tiles_p = tl.cdiv(Ho * Wo, BLOCK_P)
    n = pid // (tiles_c * tiles_p)
    pix = ((pid // tiles_c) % tiles_p) * BLOCK_P + tl.arange(0, BLOCK_P)
    ch = (pid % tiles_c) * BLOCK_C + tl.arange(0, BLOCK_C)
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
        # Rounded to nearest even explicitly (the interpreter's cast truncates), NaN kept a NaN.
        res = to_output(out.to(tl.float32), y_ptr)
    else:
        res = out.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + y_offs, res, mask=p_ok[:, None] & c_ok[None, :])


# Tiles for a GPU, per layout: channels_last is wide in C (channels are contiguous), NCHW wide in P.
NHWC_CONFIGS = [
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_P": 16, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=8),
]
NCHW_CONFIGS = [
    triton.Config({"BLOCK_P": 128, "BLOCK_C": 4}, num_warps=4),
    triton.Config({"BLOCK_P": 256, "BLOCK_C": 2}, num_warps=4),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 8}, num_warps=4),
]
_TUNE_KEY = ["C", "Ho", "Wo", "stride"]
_nhwc_kernel = tuned(NHWC_CONFIGS, _TUNE_KEY)(_dwconv_bn_act_kernel)
_nchw_kernel = tuned(NCHW_CONFIGS, _TUNE_KEY)(_dwconv_bn_act_kernel)


def _interpreter_blocks(hw: int, c: int) -> dict:
    """The interpreter's one tile: large, since each program costs tens of milliseconds there."""
    block_p = min(1024, triton.next_power_of_2(max(hw, 1)))
    return {"BLOCK_P": block_p, "BLOCK_C": min(64, triton.next_power_of_2(max(c, 1)))}


def dwconv_grid(n: int, pixels: int, channels: int, block_p: int, block_c: int) -> tuple[int]:
    """The launch grid: one axis of n * cdiv(pixels, block_p) * cdiv(channels, block_c) programs, within
    CUDA's 2^31 - 1 for any map a GPU can hold (a ValueError beyond it)."""
    programs = n * triton.cdiv(pixels, block_p) * triton.cdiv(channels, block_c)
    if programs > MAX_GRID_X:
        raise ValueError(f"dwconv_bn_act: {programs} Triton programs exceed CUDA's grid limit of {MAX_GRID_X}")
    return check_grid((programs,))


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
    kernel = _nhwc_kernel if channels_last else _nchw_kernel
    meta = _interpreter_blocks(ho * wo, c) if INTERPRET else {}

    def grid(m: dict) -> tuple[int]:
        return dwconv_grid(n, ho * wo, c, m["BLOCK_P"], m["BLOCK_C"])

    with device_guard(x):
        wrap_triton(kernel)[grid](
            x, w2, scale, shift, y,
            c, h, w, ho, wo,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3),
            y.stride(0), y.stride(1), y.stride(2), y.stride(3),
            stride, dilation, dilation * (k - 1) // 2,
            K=k, ACT=activation, ACC_F64=x.dtype == torch.float64, OUT_BF16=x.dtype == torch.bfloat16,
            **meta,
        )  # fmt: skip
