"""Resampling along each spatial axis: upsampling by interpolation
(PyTorch's ``nn.Upsample``) and adaptive average pooling
(``nn.AdaptiveAvgPool1d/2d``).

Each is a fixed linear map along each spatial axis, so each axis gets a
matrix A (out × in) and, for an image,

    y = A_h x A_wᵀ            (for every sample and channel)
    dx = A_hᵀ dy A_w          (the transposed map)

A row of A holds the weights of the input positions that make one output:
one 1 for nearest upsampling, two weights summing to 1 for linear and
bilinear, four for bicubic, 1/k over the k inputs of a bin for adaptive
average pooling.
Backward is the same two matrix products, transposed.
"""

import math

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..module import Layer
from ..ops import reference
from ._utils import adaptive_sizes

_MODES = {"nearest": (3, 4), "nearest-exact": (3, 4), "linear": (3,), "bilinear": (4,), "bicubic": (4,)}
_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def interpolation_matrix(in_size, out_size, mode, align_corners=False, scale_factor=None):
    """A (out_size, in_size) float64 matrix with PyTorch's source positions.

    The scale s is in / out, or 1 / scale_factor when given.

    nearest: output o reads input min(⌊o · s⌋, in - 1), computed in float32
    as PyTorch does; nearest-exact reads min(⌊(o + ½) · s⌋, in - 1), the
    nearest input centre (PIL's and scikit-image's choice).
    linear: output o sits at source position
        align_corners=False: max((o + ½) s - ½, 0)
        align_corners=True:  o (in - 1) / (out - 1)
    between inputs i0 = ⌊src⌋ and i1 = min(i0 + 1, in - 1), with weights
    1 - λ and λ, λ = src - i0.
    cubic: the same source position, unclamped, read from inputs i0 - 1 ..
    i0 + 2 (clamped to the edge, so an edge pixel may collect several
    weights) with Keys' cubic convolution weights, a = -0.75:
        W(d) = (a + 2)|d|³ - (a + 3)|d|² + 1        for |d| ≤ 1
        W(d) = a|d|³ - 5a|d|² + 8a|d| - 4a          for 1 < |d| < 2
    at the distances 1 + λ, λ, 1 - λ, 2 - λ.
    """
    a = np.zeros((out_size, in_size))
    o = np.arange(out_size)
    if mode in ("nearest", "nearest-exact"):
        s = np.float32(1.0 / scale_factor if scale_factor else in_size / out_size)
        pos = o.astype(np.float32) + (np.float32(0.5) if mode == "nearest-exact" else np.float32(0))
        src = np.minimum(np.floor(pos * s).astype(np.int64), in_size - 1)
        a[o, src] = 1.0
        return a
    if align_corners:
        s = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = o * s
    else:
        s = 1.0 / scale_factor if scale_factor else in_size / out_size
        src = (o + 0.5) * s - 0.5
    if mode == "cubic":
        i0 = np.floor(src).astype(np.int64)
        lam = src - i0
        w = (_cubic_far(1 + lam), _cubic_near(lam), _cubic_near(1 - lam), _cubic_far(2 - lam))
        for k, wk in enumerate(w):
            np.add.at(a, (o, np.clip(i0 - 1 + k, 0, in_size - 1)), wk)
        return a
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = src - i0
    np.add.at(a, (o, i0), 1.0 - lam)
    np.add.at(a, (o, i1), lam)
    return a


def _cubic_near(d):
    """Keys' cubic convolution weight for a distance |d| ≤ 1."""
    return ((_CUBIC_A + 2) * d - (_CUBIC_A + 3)) * d * d + 1


def _cubic_far(d):
    """Keys' cubic convolution weight for a distance 1 < |d| < 2."""
    return ((_CUBIC_A * d - 5 * _CUBIC_A) * d + 8 * _CUBIC_A) * d - 4 * _CUBIC_A


def adaptive_pool_matrix(in_size, out_size):
    """A (out_size, in_size) float64 matrix: output o averages inputs
    ⌊o · in / out⌋ to ⌈(o + 1) · in / out⌉ - 1 (PyTorch's adaptive bins,
    which overlap when out does not divide in)."""
    a = np.zeros((out_size, in_size))
    for o, (lo, hi) in enumerate(zip(*reference.adaptive_bins(in_size, out_size))):
        a[o, lo:hi] = 1.0 / (hi - lo)
    return a


class _AxisMaps(Layer):
    """A layer that is a fixed linear map along each spatial axis of
    (N, C, L) or (N, C, H, W): subclasses give the matrices (``_build``)."""

    _ndims = (3, 4)

    def __init__(self):
        super().__init__()
        self._matrices = {}  # (input spatial shape, dtype, device) -> (output spatial shape, matrices)

    def _build(self, spatial):
        """(output spatial shape, [float64 matrix (out, in) per axis])."""
        raise NotImplementedError

    def _plan(self, x):
        spatial = tuple(x.shape[2:])
        key = (spatial, x.dtype.str, str(backend.device_of(x)))
        if key not in self._matrices:
            out, mats = self._build(spatial)
            xp = backend.get_array_module(x)
            work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype
            self._matrices = {key: (out, tuple(xp.asarray(m.astype(work)) for m in mats))}  # one shape kept
        return self._matrices[key]

    def forward(self, x):
        self._check_input(x)
        if x.ndim not in self._ndims:
            raise ShapeError(f"{self._label()}: expected a {' or '.join(f'{d}-d' for d in self._ndims)} input "
                             f"(N, C, {'L' if self._ndims == (3,) else 'H, W' if self._ndims == (4,) else 'L or H, W'}), "
                             f"received shape {tuple(x.shape)}")
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


class Upsample(_AxisMaps):
    """Upsample (N, C, L) or (N, C, H, W) by interpolation (PyTorch's ``nn.Upsample``).

    Args:
        size: the output's spatial size (an int or one per axis), or
        scale_factor: a float (or one per axis); output = ⌊in · scale⌋.
        mode: ``"nearest"`` and ``"nearest-exact"`` (1-d or 2-d),
            ``"linear"`` (1-d), ``"bilinear"`` and ``"bicubic"`` (2-d).
        align_corners: for linear, bilinear and bicubic: map the corner
            pixels' centres onto each other (True) or the corners of the
            grid (False, PyTorch's default).

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
        if align_corners is not None and mode.startswith("nearest"):
            raise ValueError("Upsample: align_corners applies to linear, bilinear and bicubic modes only")
        self.size = None if size is None else (tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else int(size))
        self.scale_factor = None if scale_factor is None else (
            tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (tuple, list)) else float(scale_factor))
        for v in np.atleast_1d(self.size if self.size is not None else self.scale_factor):
            if not v > 0:
                raise ValueError(f"Upsample: expected a positive size or scale_factor, received {size or scale_factor!r}")
        self.mode = mode
        self.align_corners = bool(align_corners)

    def _per_axis(self, value, k):
        if isinstance(value, tuple):
            if len(value) != k:
                raise ShapeError(f"{self._label()}: expected {len(value)} spatial dimensions, received {k}")
            return value
        return (value,) * k

    @property
    def _ndims(self):
        return _MODES[self.mode]

    def _build(self, spatial):
        k = len(spatial)
        if self.size is not None:
            out, scales = self._per_axis(self.size, k), (None,) * k
        else:
            scales = self._per_axis(self.scale_factor, k)
            out = tuple(int(math.floor(n * s)) for n, s in zip(spatial, scales))
        if min(out) < 1:
            raise ShapeError(f"{self._label()}: an input of spatial shape {spatial} gives an empty output {out}")
        mode = {"bilinear": "linear", "bicubic": "cubic"}.get(self.mode, self.mode)
        return out, [interpolation_matrix(n, o, mode, self.align_corners, s) for n, o, s in zip(spatial, out, scales)]

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode='{self.mode}'" + (", align_corners=True" if self.align_corners else "")


class _AdaptiveAvgPool(_AxisMaps):
    def __init__(self, output_size):
        super().__init__()
        k = self._ndims[0] - 2
        sizes = adaptive_sizes(output_size, k, type(self).__name__)
        self.output_size = sizes if k > 1 else sizes[0]

    def _build(self, spatial):
        sizes = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,)
        out = tuple(n if s is None else int(s) for n, s in zip(spatial, sizes))
        return out, [adaptive_pool_matrix(n, o) for n, o in zip(spatial, out)]

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2D(_AdaptiveAvgPool):
    """Average pooling to a fixed output size (PyTorch's
    ``nn.AdaptiveAvgPool2d``): output (i, j) averages input rows
    ⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉ - 1 and the columns likewise, so any input
    size gives (N, C, OH, OW); ``output_size=1`` is global average pooling.
    A separable linear map: y = A_h x A_wᵀ, dx = A_hᵀ dy A_w."""

    _ndims = (4,)


class AdaptiveAvgPool1D(_AdaptiveAvgPool):
    """Average pooling of (N, C, L) to a fixed length (PyTorch's
    ``nn.AdaptiveAvgPool1d``): y = x Aᵀ, dx = dy A."""

    _ndims = (3,)


class _PixelShuffleBase(Layer):
    """PixelShuffle and PixelUnshuffle: a permutation (``_map``) and its
    inverse (``_inverse``, the backward)."""

    _arg = ""

    def __init__(self, factor):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ValueError(f"{type(self).__name__}: expected {self._arg} as a positive int, received {factor!r}")
        self.factor = int(factor)

    def forward(self, x):
        self._check_input(x, min_ndim=3)
        c, h, w = x.shape[-3:]
        r = self.factor
        shuffle = isinstance(self, PixelShuffle)
        if c % (r * r) if shuffle else (h % r or w % r):
            need = f"channels divisible by {r * r}" if shuffle else f"height and width divisible by {r}"
            raise ShapeError(f"{self._label()}: expected an input (*, C, H, W) with {need}, received shape {tuple(x.shape)}")
        y = type(self)._map(x, r)
        self._save(None, out=y)
        return y

    def backward(self, dy):
        self._take_cache(dy)
        return type(self)._inverse(dy, self.factor)

    def extra_repr(self):
        return f"{self._arg}={self.factor}"


def _shuffle(x, r):
    """(*, C r², H, W) → (*, C, H r, W r): channel c r² + i r + j moves to
    position (h r + i, w r + j) of channel c."""
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)  # (*, C, H, r, W, r)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def _unshuffle(x, r):
    """The inverse of :func:`_shuffle`: (*, C, H r, W r) → (*, C r², H, W)."""
    *lead, c, hr, wr = x.shape
    y = x.reshape(*lead, c, hr // r, r, wr // r, r)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3)  # (*, C, r, r, H, W)
    return y.reshape(*lead, c * r * r, hr // r, wr // r)


class PixelShuffle(_PixelShuffleBase):
    """Rearranges (*, C·r², H, W) into (*, C, H·r, W·r), PyTorch's
    ``nn.PixelShuffle`` (sub-pixel convolution upsampling, Shi et al., 2016):
    y[c, h·r + i, w·r + j] = x[c·r² + i·r + j, h, w].

    A permutation, so backward applies its inverse: dx = PixelUnshuffle(r)(dy).
    """

    _arg = "upscale_factor"
    _map, _inverse = staticmethod(_shuffle), staticmethod(_unshuffle)

    def __init__(self, upscale_factor):
        super().__init__(upscale_factor)


class PixelUnshuffle(_PixelShuffleBase):
    """The inverse of :class:`PixelShuffle`, PyTorch's ``nn.PixelUnshuffle``:
    (*, C, H·r, W·r) → (*, C·r², H, W).  Backward: dx = PixelShuffle(r)(dy)."""

    _arg = "downscale_factor"
    _map, _inverse = staticmethod(_unshuffle), staticmethod(_shuffle)

    def __init__(self, downscale_factor):
        super().__init__(downscale_factor)


class ChannelShuffle(Layer):
    """ShuffleNet's channel shuffle (Zhang et al., 2018; PyTorch's
    ``nn.ChannelShuffle``): the C channels, seen as ``groups`` groups of
    C/groups, are transposed so that the next grouped convolution mixes
    every group.  (N, C, *) → (N, C, *): channel g·(C/groups) + i moves to
    i·groups + g.  Backward: the inverse permutation."""

    def __init__(self, groups):
        super().__init__()
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"ChannelShuffle: expected groups as a positive int, received {groups!r}")
        self.groups = int(groups)

    @staticmethod
    def _permute(x, a, b):
        """Channels read as (a, b) written as (b, a)."""
        n, rest = x.shape[0], x.shape[2:]
        return x.reshape(n, a, b, *rest).swapaxes(1, 2).reshape(x.shape)

    def forward(self, x):
        self._check_input(x, min_ndim=3)
        if x.shape[1] % self.groups:
            raise ShapeError(f"{self._label()}: expected an input (N, C, *) with C divisible by {self.groups}, "
                             f"received shape {tuple(x.shape)}")
        y = self._permute(x, self.groups, x.shape[1] // self.groups)
        self._save(None, out=y)
        return y

    def backward(self, dy):
        self._take_cache(dy)
        return self._permute(dy, dy.shape[1] // self.groups, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"
