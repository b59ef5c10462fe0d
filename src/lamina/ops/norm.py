"""Normalisation kernels: batch normalisation over x viewed as (N, C, L),
layer normalisation over the rows of x viewed as (R, D); the math is in
docs/normalization.md, csrc/cpu/batchnorm.cpp, csrc/cpu/vector_loops.h and
csrc/cuda/batchnorm.cu.  ``lamina._C`` on the CPU (float32, float64),
``lamina._C_cuda`` on CuPy (float32, float64), the
NumPy/CuPy reference otherwise."""

import numpy as np

from .. import backend
from ..errors import warn_once
from . import _addr, _contiguous, _cpu_kernel, _cuda_kernel, _name, _stream, _vector_kernel, reference


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
    if xp is np and (mod := _cpu_kernel("batchnorm_apply", x, mean, inv_std, gamma, beta)) is not None:
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


def _cuda_batchnorm(name, x, *others):
    """``lamina._C_cuda`` when its normalisation kernel ``name`` takes x
    (CuPy, float32 or float64) and the other arrays (None, or of x's dtype);
    else None."""
    if not backend.is_cupy_array(x):
        return None
    if _name(x.dtype) not in ("float32", "float64") or any(a is not None and a.dtype != x.dtype for a in others):
        dtypes = ", ".join(str(a.dtype) for a in (x, *others) if a is not None)
        warn_once(f"{name} dtypes {dtypes}", f"lamina._C_cuda.{name} takes float32 or float64 arrays of one dtype, "
                  f"received {dtypes}; it runs on CuPy's elementwise operations (many launches)")
        return None
    return _cuda_kernel(name, x)


def batchnorm_forward(x, gamma, beta, eps, batch_stats=True, running=None, need_xhat=True):
    """(y, xhat, inv_std) for x (N, C, L): xhat = (x - mean) inv_std,
    y = gamma xhat + beta (gamma, beta (C,) or None), inv_std = 1/sqrt(var + eps).

    batch_stats: mean and (biased) var of x; ``running`` = (running_mean,
    running_var, f) then become (1 - f) running + f (mean, var m/(m - 1)) in
    place, m = N L (None: left alone).  Otherwise ``running`` =
    (running_mean, running_var) are the statistics.  On CuPy: two launches
    (csrc/cuda/batchnorm.cu), the running statistics updated by the second.
    """
    xp = backend.get_array_module(x)
    rm, rv = (running[0], running[1]) if running is not None else (None, None)
    mod = _cuda_batchnorm("batchnorm_forward", x, gamma, beta, rm, rv)
    if mod is not None:
        (x,) = _contiguous(xp, x)
        n, c, l = x.shape
        f = float(running[2]) if batch_stats and running is not None else -1.0
        with x.device:
            y = xp.empty_like(x)
            xhat = xp.empty_like(x) if need_xhat else None
            inv_std = xp.empty(c, dtype=x.dtype)
            ws = xp.empty(3 * c * mod.batchnorm_slices(n, c, l), dtype=np.float64) if batch_stats else None
            mod.batchnorm_forward(
                _addr(y), 0 if xhat is None else _addr(xhat), 0, 0, _addr(inv_std), 0 if rm is None else _addr(rm),
                0 if rv is None else _addr(rv), 0 if ws is None else _addr(ws), _addr(x),
                0 if gamma is None else _addr(gamma), 0 if beta is None else _addr(beta), n, c, l, float(eps),
                bool(batch_stats), f, _name(x.dtype), _stream(xp), workspace_bytes=0 if ws is None else ws.nbytes,
            )
        return y, xhat, inv_std
    if batch_stats:
        mean, var = batchnorm_stats(x)
        if running is not None:
            f = running[2]
            m = x.shape[0] * x.shape[2]
            unbiased = var * (m / (m - 1))
            rm[...] = (1 - f) * rm + f * mean.astype(rm.dtype)
            rv[...] = (1 - f) * rv + f * unbiased.astype(rv.dtype)
    else:
        mean, var = rm.astype(x.dtype), rv.astype(x.dtype)
    inv_std = (1 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
    y, xhat = batchnorm_apply(x, mean, inv_std, gamma, beta, need_xhat)
    return y, xhat, inv_std


def batchnorm_backward(dy, xhat, inv_std, gamma=None, batch_stats=True):
    """(dx, dgamma, dbeta) for dy, xhat (N, C, L)."""
    xp = backend.get_array_module(dy, xhat)
    if (mod := _cuda_batchnorm("batchnorm_backward", dy, xhat, inv_std, gamma)) is not None:
        dy, xhat = _contiguous(xp, dy, xhat)
        n, c, l = dy.shape
        with dy.device:
            dx = xp.empty_like(dy)
            dgamma, dbeta = xp.empty(c, dtype=dy.dtype), xp.empty(c, dtype=dy.dtype)
            ws = xp.empty(2 * c * mod.batchnorm_slices(n, c, l), dtype=np.float64)
            mod.batchnorm_backward(
                _addr(dx), _addr(dgamma), _addr(dbeta), _addr(ws), _addr(dy), _addr(xhat),
                0 if gamma is None else _addr(gamma), _addr(inv_std), n, c, l, bool(batch_stats), _name(dy.dtype),
                _stream(xp), workspace_bytes=ws.nbytes,
            )
        return dx, dgamma, dbeta
    if xp is np and (mod := _cpu_kernel("batchnorm_backward", dy, xhat, gamma, inv_std)) is not None:
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


def layernorm_forward(x, weight=None, bias=None, eps=1e-5):
    """(y, xhat, rstd) for x (R, D) normalised over D: rstd (R,), xhat (R, D),
    y = xhat ⊙ weight + bias (weight, bias (D,) or None, of x's dtype)."""
    xp = backend.get_array_module(x)
    if xp is np and x.size and (mod := _vector_kernel("layernorm_forward", x)) is not None:
        (x,) = _contiguous(np, x)
        rows, d = x.shape
        # held in names until the call returns: a temporary's address would dangle
        w, b = (None if a is None else np.ascontiguousarray(a, dtype=x.dtype) for a in (weight, bias))
        y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty(rows, dtype=x.dtype)
        mod.layernorm_forward(
            _addr(y), _addr(xhat), _addr(rstd), _addr(x), 0 if w is None else _addr(w), 0 if b is None else _addr(b),
            rows, d, float(eps), _name(x.dtype),
        )
        return y, xhat, rstd
    if (mod := _cuda_batchnorm("layernorm_forward", x, weight, bias)) is not None and x.size:  # one warp a row
        (x,) = _contiguous(xp, x)
        rows, d = x.shape
        w, b = (None if a is None else xp.ascontiguousarray(a) for a in (weight, bias))
        with x.device:
            y, xhat, rstd = xp.empty_like(x), xp.empty_like(x), xp.empty(rows, dtype=x.dtype)
            mod.layernorm_forward(_addr(y), _addr(xhat), _addr(rstd), _addr(x), 0 if w is None else _addr(w),
                                  0 if b is None else _addr(b), rows, d, float(eps), _name(x.dtype), _stream(xp))
        return y, xhat, rstd
    return reference.layernorm_forward(xp, x, weight, bias, eps)


def layernorm_backward(dy, xhat, rstd, weight=None, need_params=True):
    """(dx, dweight, dbias) for dy, xhat (R, D) and rstd (R,); dweight and
    dbias (D,) are None unless need_params."""
    xp = backend.get_array_module(dy, xhat)
    if xp is np and dy.size and (mod := _vector_kernel("layernorm_backward", dy)) is not None:
        (dy,) = _contiguous(np, dy)
        xhat, rstd = (np.ascontiguousarray(a, dtype=dy.dtype) for a in (xhat, rstd))
        rows, d = dy.shape
        w = None if weight is None else np.ascontiguousarray(weight, dtype=dy.dtype)
        dx = np.empty_like(dy)
        dw, db = (np.empty(d, dtype=dy.dtype), np.empty(d, dtype=dy.dtype)) if need_params else (None, None)
        mod.layernorm_backward(
            _addr(dx), 0 if dw is None else _addr(dw), 0 if db is None else _addr(db), _addr(dy), _addr(xhat),
            _addr(rstd), 0 if w is None else _addr(w), rows, d, _name(dy.dtype),
        )
        return dx, dw, db
    if (mod := _cuda_batchnorm("layernorm_backward", dy, xhat, rstd, weight)) is not None and dy.size:
        dy, xhat, rstd = _contiguous(xp, dy, xhat, rstd)
        rows, d = dy.shape
        w = None if weight is None else xp.ascontiguousarray(weight)
        with dy.device:
            dx = xp.empty_like(dy)
            dw, db = (xp.empty(d, dtype=dy.dtype), xp.empty(d, dtype=dy.dtype)) if need_params else (None, None)
            ws = xp.empty(2 * d * mod.layernorm_row_chunks(rows, d), dtype=np.float64) if need_params else None
            mod.layernorm_backward(_addr(dx), 0 if dw is None else _addr(dw), 0 if db is None else _addr(db),
                                   0 if ws is None else _addr(ws), _addr(dy), _addr(xhat), _addr(rstd),
                                   0 if w is None else _addr(w), rows, d, _name(dy.dtype), _stream(xp),
                                   workspace_bytes=0 if ws is None else ws.nbytes)
        return dx, dw, db
    return reference.layernorm_backward(xp, dy, xhat, rstd, weight, need_params)
