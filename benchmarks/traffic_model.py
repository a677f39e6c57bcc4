"""Traffic model of the CUDA kernels at DeepLab shapes: a prediction, not a measurement.

    python benchmarks/traffic_model.py --out build/traffic_model

For each fused op and DeepLab shape it runs the real CUDA kernel through the host emulation (backend
"cuda_emu") with deeplab_fast.testing.cuda_emu_counters() on the shape scaled down in channels and batch
(same map, same rate: per output the kernel touches the same sectors), and turns the counts into:
- DRAM bytes per output element: the unavoidable traffic (input read once, output written once, parameters);
- L2 bytes per output element: every 32-byte sector the warps request (the emulation does not model L1 hits,
  so this is the traffic an L1 that keeps nothing would send to L2: an upper bound);
- a predicted time on an H100 SXM at batch 16: max(DRAM bytes / 3.35 TB/s, L2 bytes / 5.5 TB/s), and the
  fraction of the HBM roofline that is (roofline time / predicted time).
The bandwidth figures and the model are ../shared/GPU.md's; no GPU has run these kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HBM_BYTES_PER_S = 3.35e12  # H100 SXM
L2_BYTES_PER_S = 5.5e12
BATCH = 16  # the batch the predictions are for
SCALED_CHANNELS = 64  # channels the emulation runs (the kernels treat 16-byte channel packs independently)

# name, channels, map side, rate
DWCONV_SHAPES = (
    ("ASPP 2048ch 33x33 r6", 2048, 33, 6),
    ("ASPP 2048ch 33x33 r12", 2048, 33, 12),
    ("ASPP 2048ch 33x33 r18", 2048, 33, 18),
    ("ASPP 2048ch 65x65 r12", 2048, 65, 12),
    ("ASPP 2048ch 65x65 r24", 2048, 65, 24),
    ("ASPP 2048ch 65x65 r36", 2048, 65, 36),
    ("decoder 304ch 129x129", 304, 129, 1),
    ("decoder 256ch 129x129", 256, 129, 1),
)


@dataclass
class Row:
    """One op, shape and dtype."""

    op: str
    shape: str
    dtype: str
    launches: int
    dram_bytes_per_output: float
    l2_bytes_per_output: float
    predicted_us: float
    roofline_us: float
    roofline_fraction: float


def _predict(op: str, shape: str, dtype: torch.dtype, counts: dict, outputs_scaled: int, dram_per_output: float,
             outputs_full: int) -> Row:  # fmt: skip
    l2_per_output = 32.0 * (counts["load_sectors"] + counts["store_sectors"]) / outputs_scaled
    roofline = dram_per_output * outputs_full / HBM_BYTES_PER_S
    predicted = max(roofline, l2_per_output * outputs_full / L2_BYTES_PER_S)
    return Row(op, shape, str(dtype).removeprefix("torch."), counts["launches"], dram_per_output, l2_per_output,
               predicted * 1e6, roofline * 1e6, roofline / predicted)  # fmt: skip


def dwconv_rows(dtypes: tuple[torch.dtype, ...]) -> list[Row]:
    """dwconv_bn_act forward, channels_last, 3x3, stride 1, relu."""
    from deeplab_fast.ops import dwconv_bn_act
    from deeplab_fast.testing import cuda_emu_counters

    rows = []
    for name, channels, side, rate in DWCONV_SHAPES:
        for dtype in dtypes:
            c = SCALED_CHANNELS
            x = torch.randn(1, c, side, side).to(dtype).contiguous(memory_format=torch.channels_last)
            w, s, b = torch.randn(c, 1, 3, 3, dtype=dtype), torch.rand(c, dtype=dtype), torch.randn(c, dtype=dtype)
            with cuda_emu_counters() as counts:
                dwconv_bn_act(x, w, s, b, dilation=rate, backend="cuda_emu")
            elem = x.element_size()
            dram = 2.0 * elem + (4.0 * 11) / (side * side * BATCH)  # x once, y once; fp32 weights/scale/shift
            rows.append(_predict("dwconv_bn_act", name, dtype, counts, x.numel(), dram, BATCH * channels * side**2))
    return rows


def upsample_rows(dtypes: tuple[torch.dtype, ...]) -> list[Row]:
    """upsample_concat at the decoder (ASPP 256ch 33x33 -> 129x129 next to 48ch at 129x129) and upsample_argmax
    of 21-class logits 129x129 -> 513x513."""
    from deeplab_fast.ops import upsample_argmax, upsample_concat
    from deeplab_fast.testing import cuda_emu_counters

    rows = []
    for dtype in dtypes:
        scale = 8  # 256 and 48 channels scaled to 32 and 6
        a = torch.randn(1, 256 // scale, 33, 33).to(dtype).contiguous(memory_format=torch.channels_last)
        low = torch.randn(1, 48 // scale, 129, 129).to(dtype).contiguous(memory_format=torch.channels_last)
        with cuda_emu_counters() as counts:
            y = upsample_concat([a, low], (129, 129), backend="cuda_emu")
        elem = a.element_size()
        outputs = y.numel()
        dram = (a.numel() + low.numel() + outputs) * elem / outputs
        rows.append(_predict("upsample_concat", "decoder 256+48ch ->129x129", dtype, counts, outputs, dram,
                             BATCH * 304 * 129 * 129))  # fmt: skip
        logits = torch.randn(1, 21, 129, 129).to(dtype)
        with cuda_emu_counters() as counts:
            labels = upsample_argmax(logits, (513, 513), backend="cuda_emu")
        dram = (logits.numel() * elem + labels.numel() * 8) / labels.numel()
        rows.append(_predict("upsample_argmax", "21 classes 129->513", dtype, counts, labels.numel(), dram,
                             BATCH * 513 * 513))  # fmt: skip
    return rows


def markdown(rows: list[Row], label: str) -> str:
    """The table of predictions."""
    lines = [
        f"### {label}",
        "",
        "| op | shape | dtype | launches | DRAM B/output | L2 B/output (no L1 hits) | predicted us (H100, batch 16) "
        "| roofline us | fraction of roofline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.op} | {r.shape} | {r.dtype} | {r.launches} | {r.dram_bytes_per_output:.2f} | "
            f"{r.l2_bytes_per_output:.2f} | {r.predicted_us:.0f} | {r.roofline_us:.0f} | {r.roofline_fraction:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/traffic_model", help="report folder")
    parser.add_argument("--label", default="kernels of this checkout", help="heading of the table")
    args = parser.parse_args(argv)
    from deeplab_fast._files import atomic_write_text

    torch.manual_seed(0)
    dtypes = (torch.bfloat16, torch.float32)
    rows = dwconv_rows(dtypes) + upsample_rows(dtypes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "traffic_model.md", markdown(rows, args.label))
    atomic_write_text(out / "traffic_model.json", json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    print(markdown(rows, args.label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
