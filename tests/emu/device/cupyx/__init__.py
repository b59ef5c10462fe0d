"""The stand-in's ``cupyx``: what lamina uses of it."""

import numpy as _np

import cupy as _cp


def scatter_add(a, slices, value):
    """``a[slices] += value`` with repeated indices adding up, in place (CuPy's atomics)."""
    if type(a) is not _cp.ndarray:
        raise TypeError("cupyx.scatter_add: expected a cupy.ndarray")
    _np.add.at(a._a, _cp._unwrap_index(slices), _cp._unwrap(value, "scatter_add"))
