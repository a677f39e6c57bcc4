"""The process of one gpu_check stage: `python benchmarks/gpu_worker.py STAGE PLAN.json RESULTS.jsonl`.

benchmarks/gpu_check.py starts one such process per stage with a time limit, so that a hang, a crash or a
CUDA error in one stage cannot take the others down. The worker appends one JSON object per line to
RESULTS.jsonl as it goes (flushed at once), so the records of a stage that is killed are still read back.

Stages: "correctness", "sanitizer_subset" (the small correctness subset that runs under compute-sanitizer),
"timings", "models". The first record is the environment (devices, versions).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

WORKER_STAGES = ("correctness", "sanitizer_subset", "timings", "models")

# After these errors the CUDA context is unusable: every later case would fail with the same message.
STICKY_CUDA_ERRORS = (
    "illegal memory access",
    "unspecified launch failure",
    "device-side assert",
    "misaligned address",
    "illegal instruction",
)


class StageAborted(RuntimeError):
    """A case hit an error that leaves the CUDA context unusable: the stage ends here."""


class StageContext:
    """What a stage function receives: the plan, a record writer and the stage's soft deadline.

    `case(name, **fields)` wraps one case: an exception inside it becomes a failed record (with the error's
    first line) and the stage goes on with the next case, unless the error leaves the CUDA context unusable
    (STICKY_CUDA_ERRORS): then StageAborted ends the stage, naming the case.
    """

    def __init__(self, plan: Any, results_path: str, deadline: float) -> None:
        self.plan = plan
        self.deadline = deadline
        self._fh = open(results_path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self.skipped_for_time: list[str] = []

    def emit(self, record: dict[str, Any]) -> None:
        """Append `record` as one JSON line, flushed now (the stage may be killed any time after)."""
        self._fh.write(json.dumps(record, default=_json_default) + "\n")
        self._fh.flush()

    def time_left(self) -> float:
        """Seconds until the soft deadline."""
        return self.deadline - time.monotonic()

    def out_of_time(self, name: str, reserve: float = 0.0) -> bool:
        """True (and `name` noted as not reached) once less than `reserve` seconds are left before the soft
        deadline (the reserve keeps time for what comes after)."""
        if self.time_left() > reserve:
            return False
        self.skipped_for_time.append(name)
        return True

    @contextlib.contextmanager
    def case(self, kind: str, name: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Run one case; the body fills the yielded record (set "ok"), which is emitted at the end. An
        exception emits the record with ok=False and the error instead of propagating."""
        record: dict[str, Any] = {"kind": kind, "name": name, **fields}
        t0 = time.perf_counter()
        try:
            yield record
        except Exception as exc:  # noqa: BLE001  (one failing case must not end the stage)
            record["ok"] = False
            record["error"] = error_line(exc)
            if is_sticky(exc):
                record["seconds"] = round(time.perf_counter() - t0, 3)
                self.emit(record)
                raise StageAborted(f"{kind} {name} {fields}: {record['error']}") from exc
        record["seconds"] = round(time.perf_counter() - t0, 3)
        record.setdefault("ok", True)
        self.emit(record)

    def close(self) -> None:
        if self.skipped_for_time:
            self.emit({"kind": "not_reached", "names": self.skipped_for_time})
        self._fh.close()


def is_sticky(exc: BaseException) -> bool:
    """Whether `exc` is a CUDA error after which the process's CUDA context is unusable."""
    return any(text in str(exc) for text in STICKY_CUDA_ERRORS)


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in WORKER_STAGES:
        print(f"usage: gpu_worker.py {{{','.join(WORKER_STAGES)}}} PLAN.json RESULTS.jsonl", file=sys.stderr)
        return 2
    stage, plan_path, results_path = argv
    for p in (HERE, REPO):
        if p not in sys.path:
            sys.path.insert(0, p)
    import gpu_plan

    with open(plan_path, encoding="utf-8") as f:
        plan = gpu_plan.Plan.from_dict(json.load(f))
    # The interpreter is chosen when triton is first imported: before anything imports it.
    if plan.triton_interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    limit_stage = "sanitizer" if stage == "sanitizer_subset" else stage
    ctx = StageContext(plan, results_path, time.monotonic() + plan.soft_deadline_s(limit_stage))
    try:
        import harness
        import torch

        if plan.threads:
            torch.set_num_threads(plan.threads)

        ctx.emit({"kind": "environment", **harness.environment(plan.device), **_devices(plan.device)})
        if stage in ("correctness", "sanitizer_subset"):
            import gpu_correctness

            gpu_correctness.run(ctx, subset=stage == "sanitizer_subset")
        elif stage == "timings":
            import gpu_timings

            gpu_timings.run(ctx)
        else:
            import gpu_models

            gpu_models.run(ctx)
    except Exception as exc:  # noqa: BLE001  (reported as the stage's error; the traceback goes to its log)
        traceback.print_exc()
        ctx.emit({"kind": "stage_error", "error": error_line(exc)})
        ctx.close()
        return 1
    ctx.close()
    return 0


def _devices(device: str) -> dict[str, Any]:
    import torch

    if device != "cuda":
        return {"gpus": []}
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "sms": p.multi_processor_count,
                "l2_mib": round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
            }
        )
    return {"gpus": gpus}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
