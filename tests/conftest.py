import os

import pytest
import torch

# Without CUDA, Triton kernels run through the interpreter on CPU tensors (it must be set before triton is
# imported); with CUDA it stays off and the Triton tests use CUDA tensors (tests/_devices.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.manual_seed(0)

# Set to 1 to run the suite against a checkout without the compiled extension on purpose (the reference and
# Triton backends only); the tests that need deeplab_fast._C then skip, naming it.
WITHOUT_EXT = os.environ.get("DEEPLAB_FAST_TEST_WITHOUT_EXT") == "1"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the run at once when deeplab_fast._C does not import: the install builds it, so a missing
    extension is a broken build, not hundreds of skipped tests."""
    from deeplab_fast import _ext

    if not _ext.HAS_EXT and not WITHOUT_EXT:
        pytest.exit(
            f"deeplab_fast._C does not import ({_ext.EXT_ERROR}); build it (pip install --no-build-isolation -e .), "
            "or set DEEPLAB_FAST_TEST_WITHOUT_EXT=1 to test the reference and Triton backends alone",
            returncode=1,
        )


@pytest.fixture(scope="module")
def one_thread():
    """torch.set_num_threads(1) for a whole test module, restored afterwards.

    The test machines are small and shared; tiny convolutions gain nothing from more threads, and one thread
    keeps float reductions in one order. Use it with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    from deeplab_fast.testing import one_thread as _one_thread

    with _one_thread():
        yield


@pytest.fixture
def cpu_variant(request: pytest.FixtureRequest):
    """The instruction-set variant of the CPU kernels the test runs on: "default", "avx2" or "avx512", forced for the
    test and restored afterwards, also when it fails; a variant this machine lacks skips, naming it. Parametrized
    indirectly: `@each_cpu_variant` (tests/_devices.py) runs a test once per variant; a grid that mixes backends
    gives None to the other backends' rows (the variant left as it is)."""
    from tests._devices import forced_cpu_variant

    if not hasattr(request, "param"):
        pytest.fail("parametrize cpu_variant indirectly: @each_cpu_variant (tests/_devices.py)")
    if request.param is None:
        yield None
        return
    with forced_cpu_variant(request.param):
        yield request.param


@pytest.fixture(scope="session")
def device() -> str:
    """The string "cuda" on a machine with CUDA, else "cpu": the device of the tensors of the CUDA-kernel and
    Triton tests (on a CPU the CUDA kernels run through backend "cuda_emu", Triton through its interpreter)."""
    from tests._devices import DEVICE

    return DEVICE
