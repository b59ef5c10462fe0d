"""Shared fixtures: a backend fixture that runs a test on NumPy and, when a
GPU and CuPy are present, on CuPy; PyTorch as the reference; MNIST-1D once."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("LAMINA_EMU_DEVICE") == "1":  # tests/emu/device.py: the GPU tests on an emulated device
    sys.path.insert(0, str(Path(__file__).parent / "emu"))
    import device

    _why = device.install()
    if _why is not None:
        raise RuntimeError(f"LAMINA_EMU_DEVICE=1 but the emulated device cannot be built: {_why}")

import lamina  # noqa: E402
from lamina import backend  # noqa: E402


def _cuda_skip_reason():
    if backend.cupy_module() is None:
        return f"CuPy not available ({backend.cupy_import_error()})"
    if backend.cuda_device_count() == 0:
        return "no CUDA device"
    if not lamina.cuda_available():
        return "lamina._C_cuda not built"
    return None


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LAMINA_EMU_DEVICE") != "1":
        return
    skip = pytest.mark.skip(reason="emulated device: a big case (one CPU thread per CUDA thread); the smaller cases "
                                   "take the same code paths")
    for item in items:
        if item.get_closest_marker("big"):
            item.add_marker(skip)


CUDA_SKIP = _cuda_skip_reason()
requires_cuda = pytest.mark.skipif(CUDA_SKIP is not None, reason=CUDA_SKIP or "")


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, requires_cuda])])
def xp(request):
    """The array module a test body runs on."""
    return np if request.param == "numpy" else backend.cupy_module()


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, whatever ran before
    it: lamina's, and PyTorch's (the parity tests copy PyTorch's freshly
    initialised weights into lamina, so they depend on it)."""
    lamina.manual_seed(1234)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(1234)
    yield


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1234)  # as _seed does from now on, for the test that imported it
    torch.set_num_threads(2)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


@pytest.fixture(scope="session")
def mnist1d():
    from lamina.data import load_mnist1d

    return load_mnist1d()
