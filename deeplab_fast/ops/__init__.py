"""Fused ops of deeplab_fast. Each takes `backend=` ("auto", "cuda", "cpu", "triton", "reference")."""

from deeplab_fast.ops.dwconv_bn_act import dwconv_bn_act, fold_bn

__all__ = ["dwconv_bn_act", "fold_bn"]
