"""lamina's GPU code paths run in CI, without a GPU: the GPU tests (pytest -m
gpu) on the emulated device of tests/emu/device.py, a NumPy stand-in for
CuPy and lamina._C_cuda's own pybind11 bindings built over the emulated
kernels.  Two cases per test function here (drawn at random, seeded by the
test's name); ``python tests/emu/device.py`` runs every case."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import device  # noqa: E402
import emulate  # noqa: E402
import pytest  # noqa: E402

SUBSET = 2


def test_the_gpu_tests_pass_on_the_emulated_device():
    path, why = emulate.build_module()
    if path is None:
        pytest.skip(f"the emulated device cannot be built: {why}")
    status, output = device.run(SUBSET, ["-q"])
    assert " passed" in output, output[-3000:]  # the cases ran (not all deselected or skipped)
    assert status == 0, output[-6000:]
