"""Fused ops of deeplab_fast. Each takes `backend=`: "auto", "cpu" (C++ kernels), "reference" (plain PyTorch,
the semantics every backend matches) and, where the op has them, "cuda" (CUDA kernels) and "triton"
(Triton kernels; on a CPU through the interpreter only). winograd_conv3x3 has "auto", "cpu" and "reference".

Modules: dwconv (dwconv_bn_act, fold_bn; dwconv_bn_act_packed, pack_dwconv_weight, dwconv_pack_width),
upsample (upsample_concat, upsample_argmax, upsample_softmax_accumulate), winograd (winograd_conv3x3,
winograd_weight), reference (the semantics), _backend (the one dispatch
path), _common (activation codes, memory formats, argument checks).
"""

from deeplab_fast.ops import dwconv as _dwconv
from deeplab_fast.ops import upsample as _upsample
from deeplab_fast.ops.dwconv import (
    dwconv_bn_act,
    dwconv_bn_act_packed,
    dwconv_pack_width,
    fold_bn,
    pack_dwconv_weight,
)
from deeplab_fast.ops.upsample import upsample_argmax, upsample_concat, upsample_softmax_accumulate
from deeplab_fast.ops.winograd import winograd_conv3x3, winograd_weight


def register_triton_ops() -> None:
    """Register the Triton custom ops (torch.ops.deeplab_fast.dwconv_bn_act_triton, upsample_concat_triton,
    upsample_argmax_triton, upsample_softmax_accumulate_triton) now.

    The ops register themselves the first time a function above runs with backend="triton" (eagerly or
    under torch.compile), because registering imports triton (about 0.4 s). Call this only to use the
    torch.ops entries directly before that. Needs the triton package.
    """
    _dwconv._triton_registered()
    _upsample._triton_registered()


__all__ = [
    "dwconv_bn_act",
    "dwconv_bn_act_packed",
    "dwconv_pack_width",
    "fold_bn",
    "pack_dwconv_weight",
    "upsample_concat",
    "upsample_argmax",
    "upsample_softmax_accumulate",
    "winograd_conv3x3",
    "winograd_weight",
    "register_triton_ops",
]
