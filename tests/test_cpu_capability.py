"""The run-time choice of the CPU kernels' instruction-set variant (deeplab_fast.cpu, deeplab_fast.testing
.cpu_capability, csrc/cpu/capability.cpp): names, the supported list, forcing a lower variant and its errors, the
variants' results, and packed depthwise weights that follow the variant's lane width."""

from __future__ import annotations

import platform

import pytest
import torch
from torch import nn

import deeplab_fast
from deeplab_fast import _ext, cpu
from deeplab_fast.ops import dwconv_bn_act, dwconv_pack_width, upsample_argmax, winograd_conv3x3, winograd_weight
from deeplab_fast.ops.reference import (
    dwconv_bn_act_reference,
    upsample_argmax_reference,
    winograd_conv3x3_reference,
)
from deeplab_fast.testing import cpu_capability, randomize_batchnorm, supported_cpu_capabilities
from tests._devices import CPU_VARIANTS, bits, forced_cpu_variant

pytestmark = pytest.mark.skipif(not _ext.HAS_EXT, reason="deeplab_fast._C is not built")

ISA_NAMES = {
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
}  # fmt: skip
X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_names_and_supported_list():
    """The variant in use is the best supported one; the supported list is a prefix of the variants, lowest first,
    and agrees with the ISA flags (AVX2 + FMA + F16C for avx2, AVX-512 F/BW/VL/DQ on top for avx512)."""
    supported = supported_cpu_capabilities()
    assert supported == CPU_VARIANTS[: len(supported)] and supported[0] == "default"
    assert deeplab_fast.cpu_capability() == supported[-1]
    info = deeplab_fast.cpu_info()
    assert set(info) == {"capability", "supported", "isa", "amx", "bf16_native", "cpu"}
    assert info["capability"] == supported[-1] and info["supported"] == supported
    isa = info["isa"]
    assert isa == sorted(isa) and set(isa) <= ISA_NAMES
    assert info["amx"] == ("amx_tile" in isa and "amx_bf16" in isa)
    assert isinstance(info["bf16_native"], bool) and isinstance(info["cpu"], str) and info["cpu"]
    if X86:  # both variants are built on x86-64: what runs is what the CPU has
        avx2 = {"avx2", "fma", "f16c"} <= set(isa)
        avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(isa)
        assert supported == CPU_VARIANTS[: 1 + avx2 + avx512]
    else:
        assert supported == ("default",) and isa == []


@pytest.mark.skipif(not X86 or platform.system() != "Linux", reason="/proc/cpuinfo flags are Linux x86-64's")
def test_isa_flags_agree_with_the_kernel():
    """Our cpuid + XGETBV reading names what Linux reports in /proc/cpuinfo (the kernel also hides a family whose
    registers it does not save)."""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        line = next(line for line in f if line.startswith("flags"))
    linux = set(line.partition(":")[2].split()) & ISA_NAMES
    assert set(torch.ops.deeplab_fast.cpu_isa_flags()) == linux


def test_forcing_each_supported_variant_and_restoring():
    """Each supported variant can be forced; cpu_capability() (and the op behind it) says so while it is active, and
    the previous one comes back afterwards, also when the body raises."""
    best = deeplab_fast.cpu_capability()
    for name in supported_cpu_capabilities():
        with cpu_capability(name):
            assert deeplab_fast.cpu_capability() == name == torch.ops.deeplab_fast.cpu_capability()
            with cpu_capability("default"):  # nested: restores the outer one
                assert deeplab_fast.cpu_capability() == "default"
            assert deeplab_fast.cpu_capability() == name
        assert deeplab_fast.cpu_capability() == best
    with pytest.raises(KeyError, match="raised inside"), cpu_capability("default"):
        raise KeyError("raised inside")
    assert deeplab_fast.cpu_capability() == best


def test_unknown_and_unsupported_names_are_clear_errors():
    best = deeplab_fast.cpu_capability()
    for bad in ("sse", "AVX2", "", None):
        with pytest.raises(ValueError, match=r"name must be one of 'default', 'avx2', 'avx512', got"):
            with cpu_capability(bad):
                pass
    with pytest.raises(ValueError, match=r"set_cpu_capability: name must be one of 'default', 'avx2', 'avx512'"):
        torch.ops.deeplab_fast.set_cpu_capability("sse")
    for name in CPU_VARIANTS[len(supported_cpu_capabilities()) :]:  # what this machine lacks (none on an AVX-512 CPU)
        supported = ", ".join(supported_cpu_capabilities())
        with pytest.raises(ValueError, match=rf"name='{name}' cannot be forced: needs a CPU with .*this CPU: {best}"):
            with cpu_capability(name):
                pass
        with pytest.raises(ValueError, match=rf"name='{name}' cannot be forced: .*; this CPU runs: {supported}"):
            torch.ops.deeplab_fast.set_cpu_capability(name)
    assert deeplab_fast.cpu_capability() == best


def test_missing_variant_skip_names_it():
    """tests/_devices.py's forcing skips a variant this machine lacks with the reason from deeplab_fast.cpu, e.g.
    "needs a CPU with AVX-512 (this CPU: avx2)"."""
    best = deeplab_fast.cpu_capability()
    for name in CPU_VARIANTS[len(supported_cpu_capabilities()) :]:
        assert cpu.unsupported_reason(name) == f"needs a CPU with {cpu._NEEDS[name][0]} (this CPU: {best})"
        with pytest.raises(pytest.skip.Exception, match=rf"needs a CPU with .* \(this CPU: {best}\)"):
            with forced_cpu_variant(name):
                pass
    assert cpu.unsupported_reason("default") is None


def test_without_extension_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_EXT", False)
    monkeypatch.setattr(_ext, "EXT_ERROR", "simulated")
    for fn in (deeplab_fast.cpu_capability, deeplab_fast.cpu_info, supported_cpu_capabilities):
        with pytest.raises(RuntimeError, match=r"needs the compiled extension deeplab_fast._C.*\(simulated\)"):
            fn()


def _each_supported(fn):
    """{variant: fn()} with each supported variant forced."""
    out = {}
    for name in supported_cpu_capabilities():
        with cpu_capability(name):
            out[name] = fn()
    return out


def test_variants_agree_with_the_reference():
    """The default and SIMD variants on one op each. Winograd F(2x2, 3x3): its transforms hold only 0 and +-1, so
    every variant does the same additions in the same order and the results are bitwise equal (the bmm between
    them is torch's). upsample_argmax: labels, exact. dwconv_bn_act float32 channels_last: the SIMD variants fuse
    the multiply-add (FMA), the default variant rounds the product first, so they agree to rounding and differ
    bitwise somewhere: evidence that the forced variant is the code that ran."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 24, 13, 11, generator=g).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(16, 24, 3, 3, generator=g) * 0.2, torch.randn(16, generator=g)
    u = winograd_weight(weight, 2)
    wino = _each_supported(lambda: winograd_conv3x3(x, u, bias, None, dilation=2, activation="relu"))
    ref = winograd_conv3x3_reference(x, weight, bias, None, 2, "relu")
    for y in wino.values():
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(bits(y), bits(wino["default"]))

    logits = torch.randn(2, 7, 9, 10, generator=g)
    labels = _each_supported(lambda: upsample_argmax(logits, (33, 37), backend="cpu"))
    for y in labels.values():
        assert torch.equal(y, upsample_argmax_reference(logits, (33, 37)))

    x = torch.randn(1, 64, 17, 19, generator=g).contiguous(memory_format=torch.channels_last)
    w, scale, shift = torch.randn(64, 1, 3, 3, generator=g), torch.rand(64, generator=g) + 0.5, torch.randn(64)
    dw = _each_supported(lambda: dwconv_bn_act(x, w, scale, shift, dilation=2, activation="none", backend="cpu"))
    for y in dw.values():
        torch.testing.assert_close(y, dwconv_bn_act_reference(x, w, scale, shift, 1, 2, "none"), rtol=1e-5, atol=1e-5)
    if "avx2" in dw:
        assert not torch.equal(dw["default"], dw["avx2"])


def test_packed_depthwise_weight_follows_the_variant():
    """optimize()'s FusedDWConv keeps its packed weight per lane width; the CPU kernels' width depends on the variant,
    so forcing one re-packs (a stale width would be an error from the kernel), and going back reuses the first."""
    from deeplab_fast.models.fuse import FusedDWConv

    conv = nn.Conv2d(40, 40, 3, padding=2, dilation=2, groups=40, bias=False)
    bn = randomize_batchnorm(nn.Sequential(nn.BatchNorm2d(40)), seed=1)[0].eval()
    m = FusedDWConv(conv, bn, "relu6", "cpu")
    x = torch.randn(1, 40, 9, 12).contiguous(memory_format=torch.channels_last)
    ref = dwconv_bn_act_reference(x, m.weight, m.scale, m.shift, 1, 2, "relu6")
    widths = {}
    with torch.no_grad():
        for name in (*supported_cpu_capabilities(), *reversed(supported_cpu_capabilities())):
            with cpu_capability(name):
                widths[name] = dwconv_pack_width(torch.float32, "cpu")
                # the width the kernels of this variant ask for, uncached
                assert widths[name] == torch.ops.deeplab_fast.dwconv_bn_act_pack_width("cpu", torch.float32, True)
                torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    assert sorted(key[2] for key in m._packs) == sorted(set(widths.values()))
