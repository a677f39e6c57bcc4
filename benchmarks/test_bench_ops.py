"""pytest-benchmark microbenchmarks of the fused ops (not part of the test suite; tests/ is).

    pytest benchmarks/ -n 0 --benchmark-only
    pytest benchmarks/ -n 0 --benchmark-only --benchmark-columns=median,ops --benchmark-sort=name

Shapes are DeepLabV3+ ones at 513x513 (output stride 16: 33x33 ASPP maps, 129x129 decoder maps), batch 1.
Every op is timed next to its eager PyTorch baseline (oneDNN on a CPU, cuDNN on a GPU); each benchmark's
extra_info records the GB/s it reached (bytes the op must move / median time). On a CPU our op is timed on
every CPU kernel path this CPU supports (providers "deeplab_fast[default]", "deeplab_fast[avx2]", ...), each
call forced to its path with deeplab_fast.testing.cpu_capability; extra_info records the path.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deeplab_fast import ops
from deeplab_fast.testing import cpu_capability, supported_cpu_capabilities

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
EAGER = "cuDNN" if DEVICE.type == "cuda" else "oneDNN"
# our providers: one per CPU kernel path on a CPU ("deeplab_fast[avx2]"), one on a GPU
OURS = [f"deeplab_fast[{p}]" for p in supported_cpu_capabilities()] if DEVICE.type == "cpu" else ["deeplab_fast"]


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _path(provider: str) -> str | None:
    """The CPU kernel path of a provider ("deeplab_fast[avx2]" -> "avx2"), None for the others."""
    return provider[provider.index("[") + 1 : -1] if provider.endswith("]") else None


def _bench(benchmark, fn, nbytes: int, provider: str = "") -> None:
    path = _path(provider)

    def call():
        if path is None:
            fn()
        else:
            with cpu_capability(path):  # restores the previous path after the call, also on an error
                fn()
        _sync()

    benchmark.pedantic(call, warmup_rounds=2, rounds=20, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: each op ran once as a smoke test, nothing was timed
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info["gb_s"] = nbytes / median / 1e9
    benchmark.extra_info["device"] = DEVICE.type
    benchmark.extra_info["cpu_capability"] = path or ""


# (channels, side, dilation): ASPP branches at 33x33 (xception65 / resnet101 ASPP on 2048 channels) and
# decoder / entry-flow maps at 129x129
DWCONV_SHAPES = [(2048, 33, 6), (2048, 33, 18), (728, 33, 2), (256, 129, 1)]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("c, side, dilation", DWCONV_SHAPES, ids=[f"c{c}-{s}x{s}-d{d}" for c, s, d in DWCONV_SHAPES])
@pytest.mark.parametrize("provider", [*OURS, f"eager-{EAGER}"])
def test_dwconv_bn_act(benchmark, provider, c, side, dilation, channels_last):
    x = torch.randn(1, c, side, side, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, 3, 3, device=DEVICE)
    bn = torch.nn.BatchNorm2d(c).to(DEVICE).eval()
    scale, shift = ops.fold_bn(bn)
    nbytes = 2 * x.numel() * x.element_size()
    benchmark.group = f"dwconv_bn_act c{c} {side}x{side} d{dilation} {'nhwc' if channels_last else 'nchw'}"
    with torch.no_grad():
        if provider in OURS:
            _bench(benchmark, lambda: ops.dwconv_bn_act(x, weight, scale, shift, dilation=dilation), nbytes, provider)
        else:
            # eager conv -> BN -> ReLU, what an unfused model runs
            _bench(
                benchmark,
                lambda: F.relu(bn(F.conv2d(x, weight, padding=dilation, dilation=dilation, groups=c))),
                nbytes,
            )


@pytest.mark.parametrize("provider", [*OURS, "eager"])
def test_upsample_concat_decoder(benchmark, provider):
    # decoder: ASPP output (256 ch, 33x33) upsampled 4x and concatenated with low-level features (48 ch, 129x129)
    aspp = torch.randn(1, 256, 33, 33, device=DEVICE)
    low = torch.randn(1, 48, 129, 129, device=DEVICE)
    size = (129, 129)
    out_elems = (256 + 48) * 129 * 129
    nbytes = 4 * (aspp.numel() + low.numel() + out_elems)
    benchmark.group = "upsample_concat decoder 129x129"
    with torch.no_grad():
        if provider in OURS:
            _bench(benchmark, lambda: ops.upsample_concat([aspp, low], size), nbytes, provider)
        else:
            _bench(benchmark, lambda: torch.cat([F.interpolate(aspp, size=size, mode="bilinear"), low], 1), nbytes)


@pytest.mark.parametrize("provider", [*OURS, "eager"])
def test_upsample_argmax_head(benchmark, provider):
    # head: 21-class logits at 129x129 resized to 513x513, then argmax over classes
    logits = torch.randn(1, 21, 129, 129, device=DEVICE)
    size = (513, 513)
    nbytes = logits.numel() * 4 + 513 * 513 * 8
    benchmark.group = "upsample_argmax 129->513"
    with torch.no_grad():
        if provider in OURS:
            _bench(benchmark, lambda: ops.upsample_argmax(logits, size), nbytes, provider)
        else:
            _bench(benchmark, lambda: F.interpolate(logits, size=size, mode="bilinear").argmax(1), nbytes)
