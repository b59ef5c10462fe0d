"""cupyx.scipy.special on the emulated device: SciPy's, over stand-in arrays."""

import scipy.special as _special

import cupy


def __getattr__(name):
    return cupy._Function(name, getattr(_special, name))
