"""DeepLabV3/V3+ models: deeplabv3plus() factory, backbones, BN folding (optimize), converters, weights."""

from deeplab_fast.models.deeplab import OPTIONS, DeepLab, deeplabv3plus, list_backbones

__all__ = ["DeepLab", "OPTIONS", "deeplabv3plus", "list_backbones"]
