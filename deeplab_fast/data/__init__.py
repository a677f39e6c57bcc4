"""Datasets (PASCAL VOC, Cityscapes, image/mask folders, synthetic shapes), the DeepLab transforms and samplers.

Every dataset yields (image, mask); with a TrainTransform/EvalTransform: float32 (3, H, W) normalized and int64
(H, W) class indices with 255 = ignore.
"""

from deeplab_fast.data.base import SegmentationDataset
from deeplab_fast.data.cityscapes import CITYSCAPES_CLASSES, Cityscapes
from deeplab_fast.data.folder import FolderDataset
from deeplab_fast.data.samplers import ResumableDistributedSampler, ShardSampler, augmentation_seed
from deeplab_fast.data.synthetic import SyntheticShapes
from deeplab_fast.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, pad_collate
from deeplab_fast.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "SegmentationDataset",
    "VOCSegmentation",
    "Cityscapes",
    "FolderDataset",
    "SyntheticShapes",
    "TrainTransform",
    "EvalTransform",
    "pad_collate",
    "ResumableDistributedSampler",
    "ShardSampler",
    "augmentation_seed",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "CITYSCAPES_CLASSES",
]
