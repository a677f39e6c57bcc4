import os

# Triton kernels run through the interpreter on CPU tensors; it must be set before triton is imported.
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.manual_seed(0)
