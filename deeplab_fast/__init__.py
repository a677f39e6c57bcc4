"""deeplab_fast: DeepLabV3+ end to end, with fused CUDA, C++ and Triton kernels."""

from deeplab_fast import ops
from deeplab_fast._ext import HAS_EXT, built_with_cuda

__version__ = "0.1.0"
__all__ = ["ops", "HAS_EXT", "built_with_cuda", "__version__"]
