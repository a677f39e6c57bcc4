"""gpu_check stage "correctness": the CUDA and Triton backends against deeplab_fast.ops.reference.

Every depthwise case x batch x dtype x layout runs forward and backward on each backend; every resize case
x batch x dtype x layout runs forward (and backward for upsample_concat). References are the functions of
deeplab_fast/ops/reference.py evaluated in float64 (dwconv) or float32 (the resize ops, as their reference
defines) on the same device, with TF32 off. The tolerances are the tests':

- float32: torch.testing's allclose with rtol = atol = 1e-5 forward and 1e-4 for gradients, or at most
  twice PyTorch's own float32 error (parameter gradients sum over N*H*W terms at these shapes);
- float16/bfloat16: the error against the float32/float64 reference at most twice PyTorch's own error in
  that dtype (cuDNN/ATen on the same input) plus 1e-3 (1e-6 for upsample_concat);
- upsample_argmax: labels equal, except where the reference's two best classes are within 1e-5 (relative)
  of each other (a GPU's interpolation rounds differently from the CPU's);
- upsample_softmax_accumulate: rtol = atol = 1e-5 for every logits dtype (both sides upcast the same values).

Last come the extras (the grids stop early enough to leave them time): a tensor on cuda:1 while cuda:0 is
current (two GPUs), a CUDA-graph capture and replay, and torch.compile(fullgraph=True) of a fused
decoder-like module (FusedDWConv + FusedResizeConcat).

`run(ctx, subset=True)` is the small subset that runs under compute-sanitizer: the kernel backend only, the
plan's subset shapes, plus a misaligned input; no extras.
"""

from __future__ import annotations

from typing import Any

import gpu_inputs
import torch
from gpu_inputs import dtype_of

from deeplab_fast.ops import dwconv_bn_act, upsample_argmax, upsample_concat, upsample_softmax_accumulate
from deeplab_fast.ops._common import memory_format_of
from deeplab_fast.ops.reference import (
    dwconv_bn_act_reference,
    upsample_concat_reference,
    upsample_softmax_accumulate_reference,
)

TIE_RTOL = 1e-5
# seconds of the stage kept for the extras (a cold inductor compile per backend on a GPU)
EXTRAS_RESERVE_S = {"cuda": 40.0, "cpu": 0.0}


def run(ctx: Any, subset: bool = False) -> None:
    """Emit one "check" record per (case, backend, batch, dtype, layout, direction), then the extras."""
    plan = ctx.plan
    torch.backends.cudnn.allow_tf32 = False  # the fp32 yardstick must be fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    backends = [plan.kernel_backend] if subset else [plan.kernel_backend, "triton"]
    backends = [b for b in backends if _available(ctx, b)]
    if not backends:
        return
    dw_cases = plan.subset_dw_cases if subset else plan.dw_cases
    up_cases = plan.subset_up_cases if subset else plan.up_cases
    batches = [min(plan.batches)] if subset else plan.batches
    # the extras run last, with this much of the stage kept for them (torch.compile compiles cold)
    reserve = 0.0 if subset else EXTRAS_RESERVE_S.get(plan.device, 0.0)
    for case in dw_cases:
        for batch in batches:
            for dname in plan.dtypes:
                for layout in plan.layouts:
                    label = f"{case.name} b{batch} {dname} {layout}"
                    if ctx.out_of_time(f"dwconv_bn_act {label}", reserve):
                        continue
                    check_dw(ctx, case, batch, dname, layout, backends)
    for dname in plan.dtypes:  # 16-byte packs broken by a one-element storage offset
        case = dw_cases[0]
        if not ctx.out_of_time(f"dwconv_bn_act {case.name} misaligned {dname}", reserve):
            check_dw(ctx, case, batches[0], dname, "channels_last", backends, misalign=True)
    for case in up_cases:
        for batch in batches:
            for dname in plan.dtypes:
                for layout in plan.layouts:
                    if ctx.out_of_time(f"{case.op} {case.name} b{batch} {dname} {layout}", reserve):
                        continue
                    check_up(ctx, case, batch, dname, layout, backends)
    if not subset:
        run_extras(ctx, backends)


def _available(ctx: Any, backend: str) -> bool:
    """Probe `backend` on a tiny input; a backend that cannot run is a failed check (this stage exists to
    run it), with the op's own message."""
    x = torch.zeros(1, 8, 5, 5, device=ctx.plan.device)
    w = torch.zeros(8, 1, 3, 3, device=ctx.plan.device)
    s = torch.ones(8, device=ctx.plan.device)
    with ctx.case("check", "backend available", op="dwconv_bn_act", backend=backend) as rec:
        dwconv_bn_act(x, w, s, s, backend=backend)
        rec["ok"] = True
    return rec["ok"]


# ------------------------------------------------------------------------------------------------ judging


def max_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| in float64 (0 for empty tensors)."""
    if ours.numel() == 0:
        return 0.0
    return float((ours.double() - ref.double()).abs().max().item())


def judge(
    ours: torch.Tensor, ref: torch.Tensor, theirs: torch.Tensor | None, fp32_tol: float, low_floor: float
) -> dict[str, Any]:
    """The test rule for one tensor (see the module docstring): max_err, torch_err and ok."""
    err = max_error(ours, ref)
    base = max_error(theirs, ref) if theirs is not None else None
    if ours.dtype == torch.float32:
        close = bool(torch.allclose(ours.double(), ref.double(), rtol=fp32_tol, atol=fp32_tol))
        ok = close or (base is not None and err <= 2 * base)
    else:
        ok = base is not None and err <= 2 * base + low_floor
    return {"max_err": err, "torch_err": base, "ok": bool(ok)}


def _merge(rec: dict[str, Any], parts: dict[str, dict[str, Any]]) -> None:
    """One record from several judged tensors: the worst error, ok if all are; failing tensors named."""
    rec["max_err"] = max(p["max_err"] for p in parts.values())
    bases = [p["torch_err"] for p in parts.values() if p["torch_err"] is not None]
    rec["torch_err"] = max(bases) if bases else None
    rec["ok"] = all(p["ok"] for p in parts.values())
    if not rec["ok"]:
        rec["error"] = "out of tolerance: " + ", ".join(
            f"{name} err {p['max_err']:.3g} (torch {p['torch_err']})" for name, p in parts.items() if not p["ok"]
        )


# ------------------------------------------------------------------------------------------------ dwconv


def check_dw(
    ctx: Any, case: Any, batch: int, dname: str, layout: str, backends: list[str], *, misalign: bool = False
) -> None:
    """Forward and backward of dwconv_bn_act on each backend against the float64 reference."""
    dev = ctx.plan.device
    dtype = dtype_of(dname)
    common = dict(op="dwconv_bn_act", case=case.name, batch=batch, dtype=dname, layout=layout)
    if misalign:
        common["layout"] = layout + " misaligned"
    with ctx.case("reference", case.name, **common) as rec:
        x, w, s, b = gpu_inputs.dw_inputs(case, batch, dtype, layout, dev, misalign=misalign)
        conf = (case.stride, case.dilation, "relu")
        leaves64 = [t.detach().double().requires_grad_() for t in (x, w, s, b)]
        ref = dwconv_bn_act_reference(*leaves64, *conf)
        g = torch.randn(ref.shape, generator=gpu_inputs.generator(dev, 1), device=dev)
        grads_ref = torch.autograd.grad(ref, leaves64, g.double())
        ref = ref.detach()
        theirs_in = [t.detach().clone().requires_grad_() for t in (x, w, s, b)]
        theirs = gpu_inputs.eager_dw(*theirs_in, case.stride, case.dilation)
        grads_theirs = torch.autograd.grad(theirs, theirs_in, g.to(dtype))
        rec["ok"] = True
    if not rec["ok"]:
        return
    for backend in backends:
        with ctx.case("check", case.name, backend=backend, direction="forward", **common) as rec:
            y = dwconv_bn_act(x, w, s, b, stride=case.stride, dilation=case.dilation, backend=backend)
            _check_like(y, ref.to(dtype), memory_format_of(x))
            _merge(rec, {"y": judge(y, ref, theirs, 1e-5, 1e-3)})
        if misalign:
            continue
        with ctx.case("check", case.name, backend=backend, direction="backward", **common) as rec:
            inputs = [t.detach().clone().requires_grad_() for t in (x, w, s, b)]
            y = dwconv_bn_act(*inputs, stride=case.stride, dilation=case.dilation, backend=backend)
            grads = torch.autograd.grad(y, inputs, g.to(dtype))
            parts = {}
            for name, ours, want, base in zip(
                ("dx", "dweight", "dscale", "dshift"), grads, grads_ref, grads_theirs, strict=True
            ):
                parts[name] = judge(ours, want, base, 1e-4, 1e-3)
            _check_like(grads[0], x, memory_format_of(x))
            _merge(rec, parts)


def _check_like(out: torch.Tensor, like: torch.Tensor, fmt: torch.memory_format) -> None:
    if out.shape != like.shape or out.dtype != like.dtype:
        raise AssertionError(f"got {tuple(out.shape)} {out.dtype}, expected {tuple(like.shape)} {like.dtype}")
    if not out.is_contiguous(memory_format=fmt):
        raise AssertionError(f"output is not contiguous in {fmt}")


# ------------------------------------------------------------------------------------------------ resize


def check_up(ctx: Any, case: Any, batch: int, dname: str, layout: str, backends: list[str]) -> None:
    """One resize case on each backend against its reference."""
    dev = ctx.plan.device
    dtype = dtype_of(dname)
    common = dict(op=f"upsample_{case.op}", case=case.name, batch=batch, dtype=dname, layout=layout)
    tensors = gpu_inputs.up_inputs(case, batch, dtype, layout, dev)
    if case.op == "concat":
        _check_concat(ctx, case, tensors, backends, common)
    elif case.op == "argmax":
        _check_argmax(ctx, case, tensors[0], backends, common)
    else:
        _check_softmax_acc(ctx, tensors, backends, common, flips=(False, True) if dname == "float32" else (False,))


def _check_concat(ctx, case, tensors, backends, common) -> None:
    size = case.size
    leaves = [t.double().requires_grad_() for t in tensors]
    ref = upsample_concat_reference(leaves, size)
    g = torch.randn(ref.shape, generator=gpu_inputs.generator(ctx.plan.device, 2), device=ctx.plan.device)
    grads_ref = torch.autograd.grad(ref, leaves, g.double())
    ref = ref.detach()
    theirs = gpu_inputs.eager_up("concat", tensors, size)
    for backend in backends:
        with ctx.case("check", case.name, backend=backend, direction="forward", **common) as rec:
            out = upsample_concat(tensors, size, backend=backend)
            _check_like(out, theirs, memory_format_of(tensors[0]))
            _merge(rec, {"out": judge(out, ref, theirs, 1e-5, 1e-6)})
        with ctx.case("check", case.name, backend=backend, direction="backward", **common) as rec:
            inputs = [t.detach().clone().requires_grad_() for t in tensors]
            grads = torch.autograd.grad(upsample_concat(inputs, size, backend=backend), inputs, g.to(tensors[0].dtype))
            theirs_in = [t.detach().clone().requires_grad_() for t in tensors]
            base = torch.autograd.grad(
                gpu_inputs.eager_up("concat", theirs_in, size), theirs_in, g.to(tensors[0].dtype)
            )
            _merge(
                rec,
                {
                    f"d{i}": judge(a, r, t, 1e-5, 1e-6)
                    for i, (a, r, t) in enumerate(zip(grads, grads_ref, base, strict=True))
                },
            )


def _check_argmax(ctx, case, logits, backends, common) -> None:
    up = torch.nn.functional.interpolate(logits.float(), size=case.size, mode="bilinear", align_corners=False)
    best, ref = up.max(1)
    for backend in backends:
        with ctx.case("check", case.name, backend=backend, direction="forward", **common) as rec:
            labels = upsample_argmax(logits, case.size, backend=backend)
            if labels.shape != ref.shape or labels.dtype != torch.int64:
                raise AssertionError(f"labels {tuple(labels.shape)} {labels.dtype}, expected {tuple(ref.shape)} int64")
            differ = labels != ref
            n_differ = int(differ.sum().item())
            ties = 0
            if n_differ:
                if int(labels.min().item()) < 0 or int(labels.max().item()) >= up.shape[1]:
                    raise AssertionError(f"labels outside [0, {up.shape[1]})")
                picked = up.gather(1, labels.unsqueeze(1)).squeeze(1)
                near = (best - picked) <= TIE_RTOL * (1 + best.abs())
                ties = int((differ & near).sum().item())
            rec.update(labels_differ=n_differ, near_ties=ties, max_err=float(n_differ - ties), ok=n_differ == ties)
            if n_differ != ties:
                rec["error"] = f"{n_differ - ties} labels differ from the reference beyond a near tie"


def _check_softmax_acc(ctx, tensors, backends, common, flips) -> None:
    logits, accum = tensors
    for flip in flips:
        ref = upsample_softmax_accumulate_reference(logits, accum.clone(), 0.5, flip)
        for backend in backends:
            fields = dict(common, direction="forward" + (" flip" if flip else ""))
            with ctx.case("check", common["case"], backend=backend, **fields) as rec:
                out = upsample_softmax_accumulate(logits, accum.clone(), weight=0.5, flip=flip, backend=backend)
                _merge(rec, {"accum": judge(out, ref, None, 1e-5, 0.0)})


# ------------------------------------------------------------------------------------------------ extras


class _DecoderLike(torch.nn.Module):
    """The fused modules optimize() builds, as a decoder has them: depthwise conv + BN + ReLU
    (FusedDWConv), then resize + concat with a skip feature (FusedResizeConcat)."""

    def __init__(self, channels: int, backend: str) -> None:
        from deeplab_fast.models.fuse import FusedDWConv, FusedResizeConcat

        super().__init__()
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(channels, channels, 3, padding=2, dilation=2, groups=channels, bias=False)
        bn = torch.nn.BatchNorm2d(channels).eval()
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
        self.dw = FusedDWConv(conv, bn, "relu", backend)
        self.cat = FusedResizeConcat(False, backend)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.cat([self.dw(x), skip], (skip.shape[-2], skip.shape[-1]))


def _decoder_inputs(device: str, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(2, 8, 17, 17, generator=g).contiguous(memory_format=torch.channels_last)
    return x.to(device), skip.to(device)


def run_extras(ctx: Any, backends: list[str]) -> None:
    """Device guard on cuda:1, CUDA-graph capture, torch.compile(fullgraph=True); each per backend."""
    for backend in backends:
        _second_gpu(ctx, backend)
        _cuda_graph(ctx, backend)
        _compiled(ctx, backend)


def _skip(ctx, name: str, backend: str, why: str) -> None:
    ctx.emit({"kind": "check", "name": name, "op": name, "backend": backend, "ok": True, "skipped": why})


def _second_gpu(ctx, backend: str) -> None:
    name = "tensors on cuda:1"
    if ctx.plan.device != "cuda" or torch.cuda.device_count() < 2:
        _skip(ctx, name, backend, "needs two GPUs")
        return
    if ctx.out_of_time(f"{name} {backend}"):
        return
    with ctx.case("check", name, op=name, backend=backend, direction="forward+backward") as rec:
        torch.cuda.set_device(0)
        case = ctx.plan.subset_dw_cases[0]
        x, w, s, b = gpu_inputs.dw_inputs(case, 2, torch.float32, "channels_last", "cuda:1")
        inputs = [t.requires_grad_() for t in (x, w, s, b)]
        y = dwconv_bn_act(*inputs, stride=case.stride, dilation=case.dilation, backend=backend)
        grads = torch.autograd.grad(y.sum(), inputs)
        ref_in = [t.detach().clone().requires_grad_() for t in (x, w, s, b)]
        ref = dwconv_bn_act_reference(*ref_in, case.stride, case.dilation, "relu")
        ref_grads = torch.autograd.grad(ref.sum(), ref_in)
        cat = upsample_concat([y.detach(), x.detach()], (11, 13), backend=backend)
        parts = {
            "y": judge(y, ref, None, 1e-5, 0.0),
            "concat": judge(cat, upsample_concat_reference([ref.detach(), x.detach()], (11, 13)), None, 1e-5, 0.0),
        }
        parts.update(
            {f"d{i}": judge(a, r, None, 1e-4, 0.0) for i, (a, r) in enumerate(zip(grads, ref_grads, strict=True))}
        )
        devices = {t.device for t in (y, cat, *grads)}
        if devices != {torch.device("cuda:1")}:
            raise AssertionError(f"outputs on {sorted(map(str, devices))}, expected cuda:1")
        _merge(rec, parts)


def _cuda_graph(ctx, backend: str) -> None:
    name = "CUDA graph capture"
    if ctx.plan.device != "cuda":
        _skip(ctx, name, backend, "CUDA graphs need a GPU")
        return
    if ctx.out_of_time(f"{name} {backend}"):
        return
    with ctx.case("check", name, op=name, backend=backend, direction="forward") as rec:
        module = _DecoderLike(16, backend).cuda().eval()
        x, skip = _decoder_inputs("cuda")
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up off the default stream, as torch.cuda.graphs asks
                    module(x, skip)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = module(x, skip)
            x2, skip2 = _decoder_inputs("cuda", seed=4)
            x.copy_(x2)
            skip.copy_(skip2)
            graph.replay()
            torch.cuda.synchronize()
            want = module(x2, skip2)
        _merge(rec, {"replay": judge(out, want, None, 1e-5, 0.0)})


def _compiled(ctx, backend: str) -> None:
    name = "torch.compile(fullgraph=True)"
    plan = ctx.plan
    if ctx.out_of_time(f"{name} {backend}"):
        return
    if backend == "triton" and plan.triton_interpret:
        _skip(ctx, name, backend, "the Triton interpreter cannot be traced (it would run on fake tensors)")
        return
    with ctx.case(
        "check", name, op=name, backend=backend, direction="forward", compile_backend=plan.compile_backend
    ) as rec:
        torch._dynamo.reset()
        module = _DecoderLike(16, backend).to(plan.device).eval()
        x, skip = _decoder_inputs(plan.device)
        compiled = torch.compile(module, fullgraph=True, backend=plan.compile_backend)
        with torch.no_grad():
            got = compiled(x, skip)
            want = module(x, skip)
        _merge(rec, {"out": judge(got, want, None, 1e-5, 0.0)})
