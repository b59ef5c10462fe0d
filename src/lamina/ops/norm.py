"""Batch normalisation kernels over x viewed as (N, C, L); the math is in
docs/normalization.md and csrc/cpu/batchnorm.cpp.  ``lamina._C`` on the CPU,
the NumPy/CuPy reference otherwise."""

import numpy as np

from .. import backend
from . import _addr, _contiguous, _name, _cpu_kernel, reference


def batchnorm_stats(x):
    """Per-channel mean and biased variance of x (N, C, L): two (C,) arrays."""
    xp = backend.get_array_module(x)
    if xp is np and (mod := _cpu_kernel("batchnorm_stats", x)) is not None:
        (x,) = _contiguous(np, x)
        n, c, l = x.shape
        mean, var = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)
        mod.batchnorm_stats(_addr(mean), _addr(var), _addr(x), n, c, l, _name(x.dtype))
        return mean, var
    return reference.batchnorm_stats(xp, x)


def batchnorm_apply(x, mean, inv_std, gamma=None, beta=None, need_xhat=True):
    """(y, xhat): xhat = (x - mean) inv_std, y = gamma xhat + beta; xhat is None unless need_xhat."""
    xp = backend.get_array_module(x)
    if xp is np and (mod := _cpu_kernel("batchnorm_apply", x)) is not None:
        x, mean, inv_std = _contiguous(np, x, mean, inv_std)
        n, c, l = x.shape
        y = np.empty_like(x)
        xhat = np.empty_like(x) if need_xhat else None
        mod.batchnorm_apply(
            _addr(y), 0 if xhat is None else _addr(xhat), _addr(x), _addr(mean), _addr(inv_std),
            0 if gamma is None else _addr(gamma), 0 if beta is None else _addr(beta), n, c, l, _name(x.dtype),
        )
        return y, xhat
    return reference.batchnorm_apply(xp, x, mean, inv_std, gamma, beta, need_xhat)


def batchnorm_backward(dy, xhat, inv_std, gamma=None, batch_stats=True):
    """(dx, dgamma, dbeta) for dy, xhat (N, C, L)."""
    xp = backend.get_array_module(dy, xhat)
    if xp is np and (mod := _cpu_kernel("batchnorm_backward", dy)) is not None:
        dy, xhat = _contiguous(np, dy, xhat)
        n, c, l = dy.shape
        dx = np.empty_like(dy)
        dgamma, dbeta = np.empty(c, dtype=dy.dtype), np.empty(c, dtype=dy.dtype)
        mod.batchnorm_backward(
            _addr(dx), _addr(dgamma), _addr(dbeta), _addr(dy), _addr(xhat), 0 if gamma is None else _addr(gamma),
            _addr(inv_std), n, c, l, bool(batch_stats), _name(dy.dtype),
        )
        return dx, dgamma, dbeta
    return reference.batchnorm_backward(xp, dy, xhat, inv_std, gamma, batch_stats)
