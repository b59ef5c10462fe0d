"""Loading of the compiled kernel modules, with the reason when one is missing."""

import importlib
import os

_modules = {}
_errors = {}


def _load(name):
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f"lamina.{name}")
        except ImportError as e:
            _modules[name] = None
            _errors[name] = str(e)
    return _modules[name]


def cpu_module():
    """``lamina._C`` (C++/OpenMP kernels), or None if it was not built.

    Before the first import, ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``
    (unless the user set it): lamina's OpenMP threads then sleep between
    kernels instead of spinning, which on a machine with few cores would take
    the cores NumPy's BLAS threads need for the GEMM that follows (measured in
    csrc/NOTES.md).  Set ``OMP_WAIT_POLICY=ACTIVE`` to get the spinning back.
    """
    if "_C" not in _modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return _load("_C")


def cuda_module():
    """``lamina._C_cuda`` (CUDA kernels), or None if it was not built."""
    return _load("_C_cuda")


def import_error(name):
    _load(name)
    return _errors.get(name)
