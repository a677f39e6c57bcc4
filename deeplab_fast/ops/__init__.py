"""Fused ops of deeplab_fast. Each takes `backend=` ("auto", "cuda", "cpu", "triton", "reference")."""

from deeplab_fast.ops.dwconv_bn_act import dwconv_bn_act, fold_bn
from deeplab_fast.ops.upsample_argmax import upsample_argmax
from deeplab_fast.ops.upsample_concat import upsample_concat
from deeplab_fast.ops.upsample_softmax_accumulate import upsample_softmax_accumulate
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
