"""Fused ops of deeplab_fast. Each takes `backend=` ("auto", "cuda", "cpu", "triton", "reference")."""

from deeplab_fast.ops.dwconv_bn_act import dwconv_bn_act, fold_bn
from deeplab_fast.ops.upsample_argmax import upsample_argmax
from deeplab_fast.ops.upsample_concat import upsample_concat
from deeplab_fast.ops.upsample_softmax_accumulate import upsample_softmax_accumulate

__all__ = ["dwconv_bn_act", "fold_bn", "upsample_concat", "upsample_argmax", "upsample_softmax_accumulate"]
