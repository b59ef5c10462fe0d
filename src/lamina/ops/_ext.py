"""Loading of the compiled kernel modules, with the reason when one is missing."""

import importlib

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
    """``lamina._C`` (C++/OpenMP kernels), or None if it was not built."""
    return _load("_C")


def cuda_module():
    """``lamina._C_cuda`` (CUDA kernels), or None if it was not built."""
    return _load("_C_cuda")


def import_error(name):
    _load(name)
    return _errors.get(name)
