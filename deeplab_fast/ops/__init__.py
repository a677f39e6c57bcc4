"""Fused ops of deeplab_fast. Each takes `backend=`: "auto", "cpu" (C++ kernels), "reference" (plain PyTorch,
the semantics every backend matches) and, where the op has them, "cuda" (CUDA kernels) and "triton"
(Triton kernels; on a CPU through the interpreter only). winograd_conv3x3 has "auto", "cpu" and "reference".

Modules: dwconv (dwconv_bn_act, fold_bn), upsample (upsample_concat, upsample_argmax,
upsample_softmax_accumulate), winograd (winograd_conv3x3, winograd_weight), reference (the semantics),
_backend (the one dispatch path), _common (activation codes, memory formats, argument checks).
"""

from deeplab_fast.ops.dwconv import dwconv_bn_act, fold_bn
from deeplab_fast.ops.upsample import upsample_argmax, upsample_concat, upsample_softmax_accumulate
from deeplab_fast.ops.winograd import winograd_conv3x3, winograd_weight

__all__ = [
    "dwconv_bn_act",
    "fold_bn",
    "upsample_concat",
    "upsample_argmax",
    "upsample_softmax_accumulate",
    "winograd_conv3x3",
    "winograd_weight",
]
