"""The emulated device: lamina's GPU tests on a machine without a GPU.

    python tests/emu/device.py                 # every GPU test (pytest -m gpu)
    python tests/emu/device.py -- -k gemm -x   # pytest's own options after --
    python tests/emu/device.py --subset 3      # at most 3 cases per test function

With ``LAMINA_EMU_DEVICE=1`` (this script sets it), tests/conftest.py calls
:func:`install` before anything imports CuPy or ``lamina._C_cuda``:

* ``cupy`` is tests/emu/device/cupy: NumPy arrays behind CuPy's interface
  and its rules (no implicit conversion to NumPy, no mixing, 0-d results);
* ``lamina._C_cuda`` is csrc/bindings/cuda_module.cpp compiled over the
  emulated kernels (tests/emu/emu.h, one CPU thread per CUDA thread), with
  compute capability 9.0 unless ``LAMINA_EMU_CC`` says otherwise.

So the GPU code paths of lamina's Python (kernel choice, argument checks,
addresses, strides, dtypes, workspaces) and the pybind11 bindings run end to
end, with CUDA's numbers, before a GPU ever sees them.  What the stand-in
cannot do it refuses, and those tests are skipped with the reason: CUDA graph
capture, and timing (events are host clocks; nothing here measures a GPU).
"""

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def install(skip_refused=True):
    """Put the stand-in CuPy and the emulated ``lamina._C_cuda`` in place; returns None, or why it could not.
    ``skip_refused``: what the stand-in refuses (CUDA graph capture) skips the pytest test that asked for it;
    otherwise it raises NotImplementedError."""
    sys.path.insert(0, str(HERE))
    import emulate  # noqa: PLC0415

    path, why = emulate.build_module()
    if path is None:
        return why
    sys.path.insert(0, str(HERE / "device"))
    spec = importlib.util.spec_from_file_location("lamina._C_cuda", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["lamina._C_cuda"] = module
    if skip_refused:
        import cupy.cuda  # noqa: PLC0415 - the stand-in, from the path above
        import pytest  # noqa: PLC0415

        cupy.cuda.not_emulated = lambda what: pytest.skip(f"emulated device: {what}")
    import lamina  # noqa: PLC0415

    lamina._C_cuda = module
    return None


def run(subset=0, pytest_args=(), all_tests=False, capture=True):
    """Run the GPU tests (``all_tests``: the whole suite) on the emulated
    device in a child pytest; ``subset`` > 0 keeps that many cases per test
    function (tests/emu/sanitize_subset.py).  Returns (exit status, output)."""
    env = dict(os.environ, LAMINA_EMU_DEVICE="1", LAMINA_EMU_SUBSET=str(subset))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "sanitize_subset", "-rfEs",
           *([] if all_tests else ["-m", "gpu"]), *pytest_args]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=capture, text=True, check=False)
    return r.returncode, ("" if not capture else r.stdout + r.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", type=int, default=0, help="at most this many cases per test function (0: all)")
    p.add_argument("--all-tests", action="store_true", help="the whole suite, not only the GPU tests")
    p.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    a = p.parse_args(argv)
    status, _ = run(a.subset, a.pytest_args, a.all_tests, capture=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
