"""The emulated CUDA kernels (test_cuda_emulated.py) under AddressSanitizer
(out-of-bounds reads and writes: the CPU's memcheck) and ThreadSanitizer
(accesses with no barrier between them: the CPU's racecheck), on a spread
of each test's cases.  tests/emu/sanitize.py runs them by hand, --all for
every case."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import emulate  # noqa: E402
import sanitize  # noqa: E402

LIB, WHY = emulate.build()


@pytest.mark.parametrize("sanitizer", ["address", "thread"])
def test_emulated_kernels_are_clean_under_the_sanitizer(sanitizer):
    if LIB is None:
        pytest.skip(f"kernel emulator not built: {WHY}")
    why = sanitize.unusable(sanitizer)
    if why:
        pytest.skip(why)
    status, output, reports = sanitize.run(sanitizer)
    assert "passed" in output, output[-3000:]  # the cases ran (not all deselected or skipped)
    assert not reports, reports[:6000]
    assert status == 0, output[-3000:]
