"""Upsampling by interpolation (PyTorch's ``nn.Upsample``).

Both modes are linear maps along each spatial axis, so each axis gets an
interpolation matrix A (out × in) and, for an image,

    y = A_h x A_wᵀ            (for every sample and channel)
    dx = A_hᵀ dy A_w          (the transposed map)

A row of A holds the weights of the input positions that make one output:
one 1 for ``nearest``, two weights summing to 1 for ``linear`` /
``bilinear``.  Backward is the same two matrix products, transposed.
"""

import math

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..module import Layer

_MODES = {"nearest": (3, 4), "linear": (3,), "bilinear": (4,)}


def interpolation_matrix(in_size, out_size, mode, align_corners=False, scale_factor=None):
    """A (out_size, in_size) float64 matrix with PyTorch's source positions.

    nearest: output o reads input min(⌊o · s⌋, in - 1), s = in / out (or 1 /
    scale_factor when given), computed in float32 as PyTorch does.
    linear: output o sits at source position
        align_corners=False: max((o + ½) s - ½, 0)
        align_corners=True:  o (in - 1) / (out - 1)
    between inputs i0 = ⌊src⌋ and i1 = min(i0 + 1, in - 1), with weights
    1 - λ and λ, λ = src - i0.
    """
    a = np.zeros((out_size, in_size))
    o = np.arange(out_size)
    if mode == "nearest":
        s = np.float32(1.0 / scale_factor if scale_factor else in_size / out_size)
        src = np.minimum(np.floor(o.astype(np.float32) * s).astype(np.int64), in_size - 1)
        a[o, src] = 1.0
        return a
    if align_corners:
        s = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = o * s
    else:
        s = 1.0 / scale_factor if scale_factor else in_size / out_size
        src = np.maximum((o + 0.5) * s - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = src - i0
    np.add.at(a, (o, i0), 1.0 - lam)
    np.add.at(a, (o, i1), lam)
    return a


class Upsample(Layer):
    """Upsample (N, C, L) or (N, C, H, W) by interpolation (PyTorch's ``nn.Upsample``).

    Args:
        size: the output's spatial size (an int or one per axis), or
        scale_factor: a float (or one per axis); output = ⌊in · scale⌋.
        mode: ``"nearest"`` (1-d or 2-d), ``"linear"`` (1-d), ``"bilinear"`` (2-d).
        align_corners: for linear and bilinear: map the corner pixels'
            centres onto each other (True) or the corners of the grid (False,
            PyTorch's default).

    Forward and backward are two matrix products with the interpolation
    matrices (see the module docstring), built once per input shape and
    kept: exact, readable, and cheap for feature maps of up to a few
    hundred pixels a side (the products cost out × in per row).
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"Upsample: expected mode in {sorted(_MODES)}, received {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: expected exactly one of size and scale_factor")
        if align_corners is not None and mode == "nearest":
            raise ValueError("Upsample: align_corners applies to linear and bilinear modes only")
        self.size = None if size is None else (tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else int(size))
        self.scale_factor = None if scale_factor is None else (
            tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (tuple, list)) else float(scale_factor))
        for v in np.atleast_1d(self.size if self.size is not None else self.scale_factor):
            if not v > 0:
                raise ValueError(f"Upsample: expected a positive size or scale_factor, received {size or scale_factor!r}")
        self.mode = mode
        self.align_corners = bool(align_corners)
        self._matrices = {}  # (input spatial shape, dtype, device) -> interpolation matrices

    def _per_axis(self, value, k):
        if isinstance(value, tuple):
            if len(value) != k:
                raise ShapeError(f"{self._label()}: expected {len(value)} spatial dimensions, received {k}")
            return value
        return (value,) * k

    def _plan(self, x):
        """The output's spatial shape and the interpolation matrices of x's axes."""
        spatial = tuple(x.shape[2:])
        key = (spatial, x.dtype.str, str(backend.device_of(x)))
        if key not in self._matrices:
            k = len(spatial)
            if self.size is not None:
                out = self._per_axis(self.size, k)
                scales = (None,) * k
            else:
                scales = self._per_axis(self.scale_factor, k)
                out = tuple(int(math.floor(n * s)) for n, s in zip(spatial, scales))
            if min(out) < 1:
                raise ShapeError(f"{self._label()}: an input of spatial shape {spatial} gives an empty output {out}")
            mode = "nearest" if self.mode == "nearest" else "linear"
            xp = backend.get_array_module(x)
            work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype
            mats = tuple(xp.asarray(interpolation_matrix(n, o, mode, self.align_corners, s).astype(work))
                         for n, o, s in zip(spatial, out, scales))
            self._matrices = {key: (out, mats)}  # one shape kept: the layer's usual input
        return self._matrices[key]

    def forward(self, x):
        ndims = _MODES[self.mode]
        self._check_input(x)
        if x.ndim not in ndims:
            raise ShapeError(f"{self._label()}: expected a {' or '.join(f'{d}-d' for d in ndims)} input "
                             f"(N, C, {'L' if x.ndim == 3 else 'H, W'}), received shape {tuple(x.shape)}")
        _, mats = self._plan(x)
        xw = x.astype(mats[0].dtype, copy=False)
        if x.ndim == 3:
            y = xw @ mats[0].T
        else:
            y = mats[0] @ (xw @ mats[1].T)  # A_h x A_wᵀ, batched over N and C
        y = backend.narrow(y, x.dtype) if y.dtype != x.dtype else y
        self._save(mats, out=y)
        return y

    def backward(self, dy):
        mats = self._take_cache(dy)
        dyw = dy.astype(mats[0].dtype, copy=False)
        if dy.ndim == 3:
            dx = dyw @ mats[0]
        else:
            dx = (mats[0].T @ dyw) @ mats[1]  # A_hᵀ dy A_w
        return backend.narrow(dx, dy.dtype) if dx.dtype != dy.dtype else dx

    def _release(self):
        super()._release()
        self._matrices = {}

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode='{self.mode}'" + (", align_corners=True" if self.align_corners else "")
