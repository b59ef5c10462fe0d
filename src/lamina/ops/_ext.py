"""Loading of the compiled kernel modules, with the reason when one is missing."""

import importlib
import os

from ..errors import warn_once

_modules = {}
_errors = {}


def _openmp_loaded():
    """True when an OpenMP runtime (libgomp) is already in this process: its
    wait policy was then read from the environment when it loaded, and
    setting OMP_WAIT_POLICY now changes nothing.  (Linux; False elsewhere.)"""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


# Read at ``import lamina``, before anything here changes the environment:
# whether the user chose a wait policy, and whether another library (PyTorch,
# say) had already started the OpenMP runtime that lamina._C will share.
_USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
_OPENMP_STARTED_ELSEWHERE = _USER_WAIT_POLICY is None and _openmp_loaded()
# lamina's OpenMP threads, and those of any library that loads the runtime
# after this, sleep between parallel regions: see cpu_module()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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

    ``import lamina`` sets ``OMP_WAIT_POLICY`` to ``PASSIVE`` (unless the
    user set it): lamina's OpenMP threads then sleep between kernels instead
    of spinning, which on a machine with few cores would take the cores
    NumPy's BLAS threads need for the GEMM that follows (measured in
    csrc/NOTES.md).  Set ``OMP_WAIT_POLICY=ACTIVE`` to get the spinning back.

    The OpenMP runtime reads the policy once, when it loads, and lamina._C
    shares the one already in the process.  If another library started it
    first (``import torch`` before ``import lamina``) without the variable
    set, the threads spin, and this says so once: an LSTM step measured 8x
    slower on 2 cores.
    """
    if "_C" not in _modules and _OPENMP_STARTED_ELSEWHERE:
        warn_once(
            "openmp started elsewhere",
            "lamina: an OpenMP runtime was already loaded when lamina was imported (by PyTorch, if torch was "
            "imported first), with OMP_WAIT_POLICY unset, so its idle threads spin and take the cores from NumPy's "
            "BLAS: lamina's CPU kernels can run several times slower. Import lamina before torch, or set "
            "OMP_WAIT_POLICY=PASSIVE in the environment before starting Python",
        )
    return _load("_C")


def cuda_module():
    """``lamina._C_cuda`` (CUDA kernels), or None if it was not built."""
    return _load("_C_cuda")


def import_error(name):
    _load(name)
    return _errors.get(name)
