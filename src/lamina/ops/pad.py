"""Padding of the trailing axes: constant, reflect, replicate, circular.

Padding is a fixed linear map, separable by axis: padding (H, W) pads H,
then pads W of the result.  So backward applies each axis's adjoint in
reverse order (W, then H).  Along one axis of size n, padded by b before
and a after, y has n + b + a entries and y[b:b + n] = x; the borders are:

    constant   y[j] = value                    dx = dy[b:b + n]
    reflect    y[b - k] = x[k],  k = 1..b      dx[1:b + 1] += flip(dy[:b])
               y[b + n - 1 + k] = x[n - 1 - k] dx[n - 1 - a:n - 1] += flip(dy[b + n:])
    replicate  y[:b] = x[0], y[b + n:] = x[n-1]  dx[0] += Σ dy[:b], dx[n-1] += Σ dy[b + n:]
    circular   y[:b] = x[n - b:], y[b + n:] = x[:a]  dx[n - b:] += dy[:b], dx[:a] += dy[b + n:]

reflect needs b, a < n (the edge itself is not repeated), circular b, a <= n.
The same code serves NumPy and CuPy (``xp.pad`` and slicing).
"""

from .. import backend

MODES = ("constant", "reflect", "replicate", "circular")
_NUMPY_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x, pads, mode="constant", value=0.0):
    """x with its last len(pads) axes padded; pads[i] = (before, after) of
    axis x.ndim - len(pads) + i."""
    xp = backend.get_array_module(x)
    widths = [(0, 0)] * (x.ndim - len(pads)) + [tuple(p) for p in pads]
    if mode == "constant":
        return xp.pad(x, widths, mode="constant", constant_values=value)
    return xp.pad(x, widths, mode=_NUMPY_MODE[mode])


def pad_backward(dy, pads, mode="constant"):
    """dx of :func:`pad`: dy summed back onto the positions each border copied."""
    lead = dy.ndim - len(pads)
    dx = dy
    for i in reversed(range(len(pads))):
        dx = _axis_adjoint(dx, lead + i, *pads[i], mode)
    return dx if dx is not dy else dy.copy()


def _axis_adjoint(dy, axis, before, after, mode):
    def at(start, stop, step=None):
        index = [slice(None)] * dy.ndim
        index[axis] = slice(start, stop, step)
        return tuple(index)

    n = dy.shape[axis] - before - after
    dx = dy[at(before, before + n)].copy()
    if mode == "constant" or before == after == 0:
        return dx
    head, tail = dy[at(0, before)], dy[at(before + n, None)]
    if mode == "reflect":
        dx[at(1, before + 1)] += head[at(None, None, -1)]
        dx[at(n - 1 - after, n - 1)] += tail[at(None, None, -1)]
    elif mode == "replicate":
        dx[at(0, 1)] += head.sum(axis=axis, keepdims=True)
        dx[at(n - 1, n)] += tail.sum(axis=axis, keepdims=True)
    else:  # circular
        dx[at(n - before, n)] += head
        dx[at(0, after)] += tail
    return dx
