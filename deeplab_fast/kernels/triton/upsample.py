"""Triton kernels of the three bilinear-resize ops and their launchers: launch_upsample_concat,
launch_upsample_argmax and launch_upsample_softmax_accumulate write into outputs the caller allocates. The
ops around them (checks, fake impls, autograd, triton_op registration) are in deeplab_fast.ops.upsample.

`_tap` mirrors csrc/kernels/upsample.h (PyTorch's area_pixel_compute_source_index with the scale from the
sizes, clamping, the exact-copy case, fused multiply-adds in PyTorch's order). On a GPU `tl.fma` is a
true fused multiply-add; the Triton interpreter evaluates it as a multiply then an add, so there the
results can differ from the C++ kernels in the last bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from deeplab_fast.kernels.triton import INTERPRET
from deeplab_fast.kernels.triton.common import MAX_GRID_X, check_grid, device_guard, to_output, tuned

# Program sizes: autotuned on a GPU over these; the interpreter runs few, large programs (each costs tens
# of milliseconds there). softmax_accumulate updates accum in place, which autotuning's repeated launches
# would add to more than once: it runs the first config.
CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 512}, num_warps=4),
]
_INTERPRETER_BLOCK = 4096


def _meta() -> dict:
    return {"BLOCK": _INTERPRETER_BLOCK} if INTERPRET else {}


def flat_grid(total: int):
    """Grid function of a kernel over `total` items, BLOCK per program: one axis, within CUDA's limits."""

    def grid(meta: dict) -> tuple[int]:
        programs = triton.cdiv(total, meta["BLOCK"])
        if programs > MAX_GRID_X:
            raise ValueError(f"{programs} Triton programs exceed CUDA's grid limit of {MAX_GRID_X}")
        return check_grid((programs,))

    return grid


def _scale(in_size: int, out_size: int, align_corners: bool) -> float:
    """fp32 input/output size ratio, as bilinear_scale in csrc/kernels/upsample.h."""
    if align_corners:
        if out_size <= 1:
            return 0.0
        return float(torch.tensor(in_size - 1, dtype=torch.float32) / torch.tensor(out_size - 1, dtype=torch.float32))
    return float(torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32))


@triton.jit
def _tap(dst, in_size, out_size, scale, ALIGN: tl.constexpr):
    d = dst.to(tl.float32)
    if ALIGN:
        src = scale * d
    else:
        src = tl.fma(scale, d + 0.5, -0.5)
        src = tl.where(src < 0.0, 0.0, src)
    i0 = tl.minimum(tl.floor(src).to(tl.int64), in_size - 1)
    l1 = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    i1 = tl.where(i0 < in_size - 1, i0 + 1, i0)
    same = in_size == out_size
    i0 = tl.where(same, dst, i0)
    i1 = tl.where(same, dst, i1)
    l1 = tl.where(same, 0.0, l1)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def _value(base, sh, sw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, mask):
    x00 = tl.load(base + h0 * sh + w0 * sw, mask=mask, other=0.0).to(tl.float32)
    x01 = tl.load(base + h0 * sh + w1 * sw, mask=mask, other=0.0).to(tl.float32)
    x10 = tl.load(base + h1 * sh + w0 * sw, mask=mask, other=0.0).to(tl.float32)
    x11 = tl.load(base + h1 * sh + w1 * sw, mask=mask, other=0.0).to(tl.float32)
    top = tl.fma(lw0, x00, lw1 * x01)
    bot = tl.fma(lw0, x10, lw1 * x11)
    return tl.fma(lh0, top, lh1 * bot)


@triton.jit
def _concat_kernel(
    x_ptr,
    y_ptr,
    total,
    C,
    H,
    W,
    Ho,
    Wo,
    c_off,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    scale_h,
    scale_w,
    ALIGN: tl.constexpr,
    CL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    # Enumerate this input's slice in the output's memory order, so stores are coalesced.
    if CL:
        c = idx % C
        r = idx // C
        wo = r % Wo
        r = r // Wo
        ho = r % Ho
        n = r // Ho
    else:
        wo = idx % Wo
        r = idx // Wo
        ho = r % Ho
        r = r // Ho
        c = r % C
        n = r // C
    h0, h1, lh0, lh1 = _tap(ho, H, Ho, scale_h, ALIGN)
    w0, w1, lw0, lw1 = _tap(wo, W, Wo, scale_w, ALIGN)
    v = _value(x_ptr + n * sxn + c * sxc, sxh, sxw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, mask)
    tl.store(y_ptr + n * syn + (c + c_off) * syc + ho * syh + wo * syw, to_output(v, y_ptr), mask=mask)


_concat_tuned = tuned(CONFIGS, ["C", "CL"])(_concat_kernel)


@triton.jit
def _argmax_kernel(
    x_ptr,
    out_ptr,
    total,
    K,
    H,
    W,
    Ho,
    Wo,
    sxn,
    sxk,
    sxh,
    sxw,
    scale_h,
    scale_w,
    ALIGN: tl.constexpr,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    wo = idx % Wo
    ho = (idx // Wo) % Ho
    n = idx // (Wo * Ho)
    h0, h1, lh0, lh1 = _tap(ho, H, Ho, scale_h, ALIGN)
    w0, w1, lw0, lw1 = _tap(wo, W, Wo, scale_w, ALIGN)
    base = x_ptr + n * sxn
    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    arg = tl.zeros((BLOCK,), tl.int64)
    for k in range(0, K):
        v = _value(base + k * sxk, sxh, sxw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, mask)
        # torch.argmax: the first maximum wins, NaN is the maximum (the first NaN wins).
        take = (v > best) | ((v != v) & (best == best))
        best = tl.where(take, v, best)
        arg = tl.where(take, k, arg)
    tl.store(out_ptr + idx, arg, mask=mask)


_argmax_tuned = tuned(CONFIGS, ["K"])(_argmax_kernel)


@triton.jit
def _softmax_accumulate_kernel(
    x_ptr,
    acc_ptr,
    total,
    K,
    H,
    W,
    Ho,
    Wo,
    sxn,
    sxk,
    sxh,
    sxw,
    scale_h,
    scale_w,
    weight,
    ALIGN: tl.constexpr,
    FLIP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    wo = idx % Wo
    ho = (idx // Wo) % Ho
    n = idx // (Wo * Ho)
    h0, h1, lh0, lh1 = _tap(ho, H, Ho, scale_h, ALIGN)
    w0, w1, lw0, lw1 = _tap(wo, W, Wo, scale_w, ALIGN)
    if FLIP:
        w0 = W - 1 - w0
        w1 = W - 1 - w1
    base = x_ptr + n * sxn
    m = tl.full((BLOCK,), float("-inf"), tl.float32)
    for k in range(0, K):
        m = tl.maximum(
            m,
            _value(base + k * sxk, sxh, sxw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, mask),
            propagate_nan=tl.PropagateNan.ALL,
        )
    s = tl.zeros((BLOCK,), tl.float32)
    for k in range(0, K):
        s += tl.exp(_value(base + k * sxk, sxh, sxw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, mask) - m)
    scale = weight / s
    acc = acc_ptr + n * K * Ho * Wo + ho * Wo + wo
    for k in range(0, K):
        e = tl.exp(_value(base + k * sxk, sxh, sxw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, mask) - m)
        a = tl.load(acc + k * Ho * Wo, mask=mask, other=0.0)
        tl.store(acc + k * Ho * Wo, a + e * scale, mask=mask)


def launch_upsample_concat(
    tensors: list[torch.Tensor], y: torch.Tensor, align_corners: bool, channels_last: bool
) -> None:
    """Resize each (N, C_i, H_i, W_i) input into its channel slice of y (N, sum C_i, H, W), enumerating y
    in its memory order (channels_last or NCHW) so stores are coalesced."""
    ho, wo = y.shape[2], y.shape[3]
    c_off = 0
    with device_guard(y):
        for t in tensors:
            total = t.shape[0] * t.shape[1] * ho * wo
            if total > 0:
                wrap_triton(_concat_tuned)[flat_grid(total)](
                    t, y, total, t.shape[1], t.shape[2], t.shape[3], ho, wo, c_off, *t.stride(), *y.stride(),
                    _scale(t.shape[2], ho, align_corners), _scale(t.shape[3], wo, align_corners),
                    ALIGN=align_corners, CL=channels_last, **_meta(),
                )  # fmt: skip
            c_off += t.shape[1]


def _launch_per_pixel(
    kernel, logits: torch.Tensor, out: torch.Tensor, ho: int, wo: int, align_corners: bool, *extra, **meta
):
    """Launch a class kernel (one lane per output pixel, a loop over the K classes) of logits (N, K, h, w)
    resized to (ho, wo); `extra` follows the scales in the kernel's arguments, `meta` its constexprs."""
    n, k, h, w = logits.shape
    total = n * ho * wo
    if total > 0:
        with device_guard(logits):
            wrap_triton(kernel)[flat_grid(total)](
                logits, out, total, k, h, w, ho, wo, *logits.stride(),
                _scale(h, ho, align_corners), _scale(w, wo, align_corners), *extra,
                ALIGN=align_corners, **meta,
            )  # fmt: skip


def launch_upsample_argmax(logits: torch.Tensor, out: torch.Tensor, align_corners: bool) -> None:
    """Labels (N, H, W) int64 into `out` of the bilinear resize of logits (N, K, h, w) to (H, W)."""
    _launch_per_pixel(_argmax_tuned, logits, out, out.shape[1], out.shape[2], align_corners, **_meta())


def launch_upsample_softmax_accumulate(
    logits: torch.Tensor, accum: torch.Tensor, weight: float, flip: bool, align_corners: bool
) -> None:
    """accum (N, K, H, W) fp32 contiguous += weight * softmax(resize(logits (N, K, h, w)))."""
    ho, wo = accum.shape[2], accum.shape[3]
    block = _INTERPRETER_BLOCK if INTERPRET else CONFIGS[0].kwargs["BLOCK"]
    _launch_per_pixel(
        _softmax_accumulate_kernel, logits, accum, ho, wo, align_corners, float(weight), FLIP=flip, BLOCK=block
    )
