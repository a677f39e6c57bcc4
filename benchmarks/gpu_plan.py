"""What benchmarks/gpu_check.py runs: the stages, their time limits, and the shapes of each stage.

Two plans share one structure: "gpu" (DeepLab shapes on one H100/H200) and "rehearse" (the same stages at
tiny shapes on a CPU: the CUDA kernels through backend "cuda_emu", Triton through its interpreter, timings with
the host clock). A plan is plain data (`Plan.to_dict` / `Plan.from_dict`), handed to each stage's subprocess
as JSON. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STAGES = ("build", "correctness", "sanitizer", "timings", "models")

# Seconds each stage may take before it is killed. On the GPU the sum stays under the 10 minutes of the
# whole command (the command itself adds a few seconds of start-up and report writing). In a rehearsal the
# limits only catch hangs.
GPU_LIMITS_S = {"build": 200, "correctness": 120, "sanitizer": 90, "timings": 120, "models": 60}
REHEARSE_LIMITS_S = {"build": 900, "correctness": 120, "sanitizer": 120, "timings": 120, "models": 120}

# A stage stops starting new cases this many seconds before its limit, so that it ends on its own and
# reports what it did not reach, rather than being killed mid-case.
SOFT_MARGIN_S = 12.0

DTYPES = ("float32", "float16", "bfloat16")
LAYOUTS = ("nchw", "channels_last")


@dataclass(frozen=True)
class DwCase:
    """One depthwise layer: `channels` x `height` x `width` input, 3x3 taps, `stride`, `dilation`."""

    name: str
    channels: int
    height: int
    width: int
    stride: int = 1
    dilation: int = 1


@dataclass(frozen=True)
class UpCase:
    """One resize op call. op: "concat" (inputs resized to `size` and concatenated), "argmax" or
    "softmax_accumulate" (one logits input of (K, h, w)). inputs: (C, H, W) of each input, batch apart."""

    name: str
    op: str
    inputs: tuple[tuple[int, int, int], ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class ModelCase:
    """A DeepLabV3+ built by deeplab_fast.models.deeplabv3plus(**options) at `size` x `size` input."""

    name: str
    options: dict[str, Any]
    size: int


# DeepLabV3+ with Xception-65 at 513x513: the ASPP at output stride 16 (33x33) and 8 (65x65), the middle
# flow, the decoder
GPU_DW_CASES = (
    DwCase("aspp33_r6", 2048, 33, 33, 1, 6),
    DwCase("aspp33_r12", 2048, 33, 33, 1, 12),
    DwCase("aspp33_r18", 2048, 33, 33, 1, 18),
    DwCase("aspp65_r12", 2048, 65, 65, 1, 12),
    DwCase("aspp65_r24", 2048, 65, 65, 1, 24),
    DwCase("aspp65_r36", 2048, 65, 65, 1, 36),
    DwCase("xc_middle728_33", 728, 33, 33, 1, 1),
    DwCase("decoder304_129", 304, 129, 129, 1, 1),
    DwCase("decoder256_129", 256, 129, 129, 1, 1),
)
GPU_UP_CASES = (
    UpCase("decoder_concat", "concat", ((256, 33, 33), (48, 129, 129)), (129, 129)),
    UpCase("aspp_pool_concat", "concat", ((256, 33, 33),) * 4 + ((256, 1, 1),), (33, 33)),
    UpCase("logits_voc_argmax", "argmax", ((21, 129, 129),), (513, 513)),
    UpCase("logits_city_argmax", "argmax", ((19, 257, 513),), (1025, 2049)),
    UpCase("logits_voc_softmax_acc", "softmax_accumulate", ((21, 129, 129),), (513, 513)),
)
# Tiny stand-ins: channel counts that reach the 16-byte packs (multiples of 8) and tails that do not, a
# dilation beyond the map, a strided layer; a 1x1 pooled branch.
REHEARSE_DW_CASES = (
    DwCase("tiny_aspp_r6", 16, 7, 7, 1, 6),
    DwCase("tiny_tail_s2", 12, 9, 8, 2, 1),
)
REHEARSE_UP_CASES = (
    UpCase("tiny_decoder_concat", "concat", ((16, 5, 5), (8, 9, 9)), (9, 9)),
    UpCase("tiny_pool_concat", "concat", ((8, 5, 5), (8, 1, 1)), (5, 5)),
    UpCase("tiny_argmax", "argmax", ((5, 5, 6),), (17, 21)),
    UpCase("tiny_softmax_acc", "softmax_accumulate", ((5, 5, 6),), (17, 21)),
)

# Timings on the GPU: the review's forward table (batch 16, bf16, channels_last); torch.compile of the eager
# chain only on a few cases (each compiles for minutes' worth of the budget otherwise).
GPU_TIMING_COMPILE = ("aspp33_r12", "aspp65_r24", "decoder256_129", "decoder_concat", "logits_voc_argmax")
GPU_TIMING_BACKWARD = ("aspp33_r12", "aspp65_r12", "decoder256_129", "decoder_concat")

GPU_MODELS = (ModelCase("xception65", {"backbone": "xception65", "output_stride": 16}, 513),)
REHEARSE_MODELS = (ModelCase("mobilenet_v2_w025", {"backbone": "mobilenet_v2", "width_mult": 0.25}, 65),)


@dataclass
class Plan:
    """Everything a run does; see make_plan for the two presets."""

    mode: str  # "gpu" or "rehearse"
    device: str  # "cuda" or "cpu"
    kernel_backend: str  # the op backend of the CUDA kernels: "cuda", or "cuda_emu" in a rehearsal
    triton_interpret: bool  # Triton through its interpreter (TRITON_INTERPRET=1 in every stage's process)
    clock: str  # "cuda_events" (L2 flushed before each repetition) or "host"
    compile_backend: str  # torch.compile backend of the compiled checks and providers ("inductor", "eager")
    build: str  # "auto" (build when deeplab_fast._C is missing or stale), "always" or "never"
    limits_s: dict[str, float]
    dw_cases: list[DwCase]
    up_cases: list[UpCase]
    batches: list[int]
    dtypes: list[str] = field(default_factory=lambda: list(DTYPES))
    layouts: list[str] = field(default_factory=lambda: list(LAYOUTS))
    sanitizer_tools: list[str] = field(default_factory=lambda: ["memcheck", "racecheck"])
    # the small subset that runs under compute-sanitizer (10-100x slower there): tiny shapes that reach
    # every kernel path, and one DeepLab shape
    subset_dw_cases: list[DwCase] = field(default_factory=lambda: list(REHEARSE_DW_CASES))
    subset_up_cases: list[UpCase] = field(default_factory=lambda: list(REHEARSE_UP_CASES))
    timing_batch: int = 16
    timing_dtype: str = "bfloat16"
    timing_compile: list[str] = field(default_factory=list)
    timing_backward: list[str] = field(default_factory=list)
    timing_reps: int = 20
    timing_warmup: int = 3
    models: list[ModelCase] = field(default_factory=list)
    model_batches: list[int] = field(default_factory=lambda: [1, 16])
    model_dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    train_autocast: str | None = "bfloat16"
    model_reps: int = 5
    train_batch: int = 8
    threads: int | None = None  # torch.set_num_threads in every stage process (None: torch's default)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (cases as dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Inverse of to_dict."""
        data = dict(data)
        for key in ("dw_cases", "subset_dw_cases"):
            data[key] = [DwCase(**c) for c in data[key]]
        for key in ("up_cases", "subset_up_cases"):
            data[key] = [
                UpCase(c["name"], c["op"], tuple(map(tuple, c["inputs"])), tuple(c["size"])) for c in data[key]
            ]
        data["models"] = [ModelCase(**m) for m in data["models"]]
        return cls(**data)

    def soft_deadline_s(self, stage: str) -> float:
        """Seconds after its start at which `stage` stops starting new cases."""
        return max(self.limits_s[stage] - SOFT_MARGIN_S, self.limits_s[stage] * 0.5)


def make_plan(mode: str, *, build: str = "auto", kernel_backend: str | None = None) -> Plan:
    """The "gpu" or "rehearse" plan. build: "auto", "always" or "never" (a rehearsal passes "never" unless
    asked). kernel_backend: the op backend that runs the CUDA kernels (default "cuda" on the GPU, "cuda_emu"
    in a rehearsal)."""
    if mode == "gpu":
        return Plan(
            mode="gpu",
            device="cuda",
            kernel_backend=kernel_backend or "cuda",
            triton_interpret=False,
            clock="cuda_events",
            compile_backend="inductor",
            build=build,
            limits_s=dict(GPU_LIMITS_S),
            dw_cases=list(GPU_DW_CASES),
            up_cases=list(GPU_UP_CASES),
            batches=[1, 16],
            subset_dw_cases=[*REHEARSE_DW_CASES, GPU_DW_CASES[2]],
            timing_compile=list(GPU_TIMING_COMPILE),
            timing_backward=list(GPU_TIMING_BACKWARD),
            models=list(GPU_MODELS),
        )
    if mode == "rehearse":
        return Plan(
            mode="rehearse",
            device="cpu",
            kernel_backend=kernel_backend or "cuda_emu",
            triton_interpret=True,
            clock="host",
            # the interpreter cannot be traced and inductor's C++ compile takes a minute here: Dynamo's
            # full-graph capture is what a rehearsal can check
            compile_backend="eager",
            build=build,
            limits_s=dict(REHEARSE_LIMITS_S),
            dw_cases=list(REHEARSE_DW_CASES),
            up_cases=list(REHEARSE_UP_CASES),
            batches=[2],
            # the correctness stage already ran these shapes: the sanitizer stage rehearses its plumbing
            subset_dw_cases=[REHEARSE_DW_CASES[0]],
            subset_up_cases=[REHEARSE_UP_CASES[0], REHEARSE_UP_CASES[2]],
            timing_batch=2,
            timing_dtype="float32",
            timing_compile=["tiny_aspp_r6"],
            timing_backward=["tiny_aspp_r6", "tiny_decoder_concat"],
            timing_reps=2,
            timing_warmup=1,
            models=list(REHEARSE_MODELS),
            model_batches=[2],
            # bf16 convolutions on a CPU without native bf16 take seconds per call (a training step a minute)
            model_dtypes=["float32"],
            train_autocast=None,
            model_reps=1,
            train_batch=2,
            # one thread: tiny shapes gain nothing from more, and a shared CI machine suffers least
            threads=1,
        )
    raise ValueError(f"mode must be 'gpu' or 'rehearse', got {mode!r}")


def describe(plan: Plan, stages: tuple[str, ...] = STAGES) -> str:
    """The plan in words (what --dry-run prints): stages, limits, shapes."""
    total = sum(plan.limits_s[s] for s in stages)
    where = (
        "one CUDA GPU"
        if plan.mode == "gpu"
        else "this CPU at tiny shapes (CUDA kernels through backend 'cuda_emu', Triton through its interpreter)"
    )
    lines = [
        f"gpu_check plan: {plan.mode} on {where}",
        f"stages and time limits (s), {total:.0f} s at most in all:",
    ]
    for s in stages:
        lines.append(f"  {s:<12} {plan.limits_s[s]:>5.0f}  {_stage_words(plan, s)}")
    lines.append("depthwise cases (C x H x W, stride, dilation):")
    for c in plan.dw_cases:
        lines.append(f"  {c.name:<18} {c.channels} x {c.height} x {c.width}, stride {c.stride}, dilation {c.dilation}")
    lines.append("resize cases (inputs -> size):")
    for u in plan.up_cases:
        ins = " + ".join("x".join(map(str, s)) for s in u.inputs)
        lines.append(f"  {u.name:<22} {u.op}: {ins} -> {u.size[0]}x{u.size[1]}")
    lines.append("models:")
    for m in plan.models:
        lines.append(f"  {m.name}: {m.options} at {m.size}x{m.size}, batches {plan.model_batches}")
    return "\n".join(lines)


def _stage_words(plan: Plan, stage: str) -> str:
    kb = plan.kernel_backend
    if stage == "build":
        pip = "pip install --no-index --no-deps --no-build-isolation -e ."
        return {
            "auto": f"{pip} when deeplab_fast._C is missing or stale",
            "always": f"{pip} (asked for)",
            "never": "no build (deeplab_fast._C as it is)",
        }[plan.build]
    if stage == "correctness":
        return (
            f"backends {kb!r} and 'triton' vs the reference: batches {plan.batches}, {', '.join(plan.dtypes)}, "
            f"{' and '.join(plan.layouts)}, forward and backward; device guard, CUDA graph, torch.compile"
        )
    if stage == "sanitizer":
        return f"compute-sanitizer --tool {' / '.join(plan.sanitizer_tools)} on a small subset of backend {kb!r}"
    if stage == "timings":
        clock = "CUDA events, L2 flushed before each repetition" if plan.clock == "cuda_events" else "host clock"
        return (
            f"batch {plan.timing_batch} {plan.timing_dtype} channels_last, {plan.timing_reps} reps, {clock}; "
            f"vs the eager chain and torch.compile ({plan.compile_backend})"
        )
    return f"latency at batches {plan.model_batches} (eager, optimize(), bf16) and one training step"
