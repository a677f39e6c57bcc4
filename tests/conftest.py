import os

# Triton kernels run through the interpreter on CPU tensors; it must be set before triton is imported.
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """torch.set_num_threads(1) for a whole test module, restored afterwards.

    The test machines are small and shared; tiny convolutions gain nothing from more threads, and one thread
    keeps float reductions in one order. Use it with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    from deeplab_fast.testing import one_thread as _one_thread

    with _one_thread():
        yield
