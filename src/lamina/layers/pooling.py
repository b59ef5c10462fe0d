"""Pooling layers: max and average over windows (2-d and 1-d), global average.

The window sweeps run in C++ on the CPU (``lamina._C``) and on NumPy/CuPy
references elsewhere; see :mod:`lamina.ops.conv`.  1-d pooling is 2-d
pooling with a height-1 window.
"""

import math

import numpy as np

from .. import backend, ops
from ..errors import DeviceError, DTypeError, ShapeError
from ..module import Layer, _describe
from ._utils import adaptive_sizes, as_tuple


class _PoolNd(Layer):
    _nd = 2

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        name = type(self).__name__
        nd = self._nd
        self.kernel_size = as_tuple(kernel_size, nd, name, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, nd, name, "stride")
        self.padding = as_tuple(padding, nd, name, "padding", minimum=0)
        self.dilation = as_tuple(dilation, nd, name, "dilation")
        self.ceil_mode = bool(ceil_mode)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{name}: expected padding at most half the kernel size {self.kernel_size}, received {self.padding}"
            )

    def _geometry(self, x):
        self._check_input(x, ndim=self._nd + 2)
        if self._nd == 2:
            shape, k, s, d = x.shape, self.kernel_size, self.stride, self.dilation
            p = (self.padding[0], self.padding[0], self.padding[1], self.padding[1])
        else:
            shape = (x.shape[0], x.shape[1], 1, x.shape[2])
            k, s, d = (1, *self.kernel_size), (1, *self.stride), (1, *self.dilation)
            p = (0, 0, self.padding[0], self.padding[0])
        g = ops.geometry(shape, k, s, p, d)
        if self.ceil_mode:
            g = g._replace(oh=_ceil_output(g.h, g.kh, g.sh, g.pt, g.dh), ow=_ceil_output(g.w, g.kw, g.sw, g.pl, g.dw))
        if g.oh < 1 or g.ow < 1:
            raise ShapeError(
                f"{self._label()}: expected an input at least as large as the kernel {self.kernel_size} "
                f"(after padding), received shape {tuple(x.shape)}"
            )
        return g

    def _out_shape(self, g):
        return (g.n, g.c, g.oh, g.ow) if self._nd == 2 else (g.n, g.c, g.ow)

    def _in_shape(self, g):
        return (g.n, g.c, g.h, g.w) if self._nd == 2 else (g.n, g.c, g.w)

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if getattr(self, "return_indices", False):
            s += ", return_indices=True"
        return s + (", ceil_mode=True" if self.ceil_mode else "")


def _ceil_output(size, k, s, pad, d):
    """Windows with ``ceil_mode``: rounding up adds a last window that hangs
    over the bottom/right edge, provided it starts inside the input or the
    left padding (PyTorch's rule), so every window reads at least one value."""
    out = -(-(size + 2 * pad - d * (k - 1) - 1) // s) + 1
    return out - 1 if (out - 1) * s >= size + pad else out


def _window_counts(size, k, s, pad, out):
    """Per output position of one axis: the window's values inside the input,
    and its extent clipped to the padded input (PyTorch's count_include_pad
    divisor, which leaves out a ceil_mode window's overhang)."""
    start = np.arange(out) * s - pad
    inside = np.minimum(start + k, size) - np.maximum(start, 0)
    padded = np.minimum(start + k, size + pad) - start
    return inside, padded


class _MaxPool(_PoolNd):
    """y = max over each window (padding counts as -inf).

    Backward: dx[argmax of window o] += dy[o]; only the argmax indices
    (int64, ih*W + iw within each plane, as PyTorch's return_indices) are cached.
    With ``return_indices`` the forward returns (y, indices), the indices
    shaped as y, for :class:`MaxUnpool2D`; backward still takes dy alone.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        g = self._geometry(x)
        y, idx = ops.maxpool2d_forward(x.reshape(g.n, g.c, g.h, g.w), g)
        y = y.reshape(self._out_shape(g))
        self._save(idx, g, out=y)  # idx: (N, C, OH, OW) int64
        return (y, idx.reshape(y.shape)) if self.return_indices else y

    def backward(self, dy):
        idx, g = self._take_cache(dy)
        dx = ops.maxpool2d_backward(dy.reshape(g.n, g.c, g.oh, g.ow), idx, g)
        return dx.reshape(self._in_shape(g))


class _AvgPool(_PoolNd):
    """y = mean over each window.

    With ``count_include_pad`` (PyTorch's default) the divisor is always
    KH·KW; without it, the number of window elements inside the input.
    Backward: each input pixel gets dy[o] / divisor from every window o that
    covers it.  Nothing but the geometry is cached.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True, ceil_mode=False, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                             or divisor_override < 1):
            raise ValueError(f"{type(self).__name__}: expected divisor_override as a positive int or None, "
                             f"received {divisor_override!r}")
        self.divisor_override = divisor_override

    def _rescale(self, g, x):
        """None, or the (OH, OW) factors that turn the kernel's mean over the
        window's values inside the input (count_include_pad=False) into the
        mean PyTorch takes: over the window clipped to the padded input with
        count_include_pad (a ceil_mode window's overhang left out), or over
        divisor_override.  The kernels know only those two divisors."""
        inside_h, padded_h = _window_counts(g.h, g.kh, g.sh, g.pt, g.oh)
        inside_w, padded_w = _window_counts(g.w, g.kw, g.sw, g.pl, g.ow)
        inside = np.outer(inside_h, inside_w)
        if self.divisor_override is not None:
            divisor = np.full(inside.shape, float(self.divisor_override))
        elif self.count_include_pad and (padded_h.min() < g.kh or padded_w.min() < g.kw):
            divisor = np.outer(padded_h, padded_w)
        else:
            return None  # the kernel's own divisor is PyTorch's
        return backend.to_device((inside / divisor).astype(x.dtype), backend.device_of(x))

    def forward(self, x):
        g = self._geometry(x)
        scale = self._rescale(g, x)
        y = ops.avgpool2d_forward(x.reshape(g.n, g.c, g.h, g.w), g, self.count_include_pad and scale is None)
        if scale is not None:
            y = y * scale
        y = y.reshape(self._out_shape(g))
        self._save(g, scale, out=y)
        return y

    def backward(self, dy):
        g, scale = self._take_cache(dy)
        dy4 = dy.reshape(g.n, g.c, g.oh, g.ow)
        if scale is not None:
            dy4 = dy4 * scale
        dx = ops.avgpool2d_backward(dy4, g, self.count_include_pad and scale is None)
        return dx.reshape(self._in_shape(g))

    def extra_repr(self):
        s = super().extra_repr()
        s = s if self.count_include_pad else s + ", count_include_pad=False"
        return s if self.divisor_override is None else s + f", divisor_override={self.divisor_override}"


class MaxPool2D(_MaxPool):
    """2-d max pooling, PyTorch's ``nn.MaxPool2d``: (N, C, H, W) → (N, C, OH, OW).

    Args:
        kernel_size: int or (KH, KW).
        stride: defaults to kernel_size.
        padding: implicit -inf padding, at most half the kernel.
        dilation: spacing of the window's taps (int or pair).
        return_indices: return (y, indices): where each maximum lies,
            ih*W + iw within its (H, W) plane (int64, PyTorch's), for
            :class:`MaxUnpool2D`.
        ceil_mode: round the output size up, so a last window may hang over
            the bottom/right edge (it must start inside the input or the
            left padding); the overhang is ignored.
    """

    _nd = 2


class MaxPool1D(_MaxPool):
    """1-d max pooling, PyTorch's ``nn.MaxPool1d``: (N, C, L) → (N, C, OL)."""

    _nd = 1


class AvgPool2D(_AvgPool):
    """2-d average pooling, PyTorch's ``nn.AvgPool2d``: (N, C, H, W) → (N, C, OH, OW).

    Args:
        kernel_size, stride, padding, ceil_mode: as :class:`MaxPool2D` (zero padding).
        count_include_pad: divide by the window, padding included (but not
            a ceil_mode window's overhang past the padding, as PyTorch);
            False: by the window's values inside the input.
        divisor_override: divide every window's sum by this instead.
    """

    _nd = 2


class AvgPool1D(_AvgPool):
    """1-d average pooling, PyTorch's ``nn.AvgPool1d``: (N, C, L) → (N, C, OL)."""

    _nd = 1


class GlobalAvgPool2D(Layer):
    """Mean over the spatial dimensions: (N, C, H, W) → (N, C), or
    (N, C, 1, 1) with ``keepdims`` (PyTorch's ``nn.AdaptiveAvgPool2d(1)``).

    Backward: dx = dy / (H·W) broadcast over every pixel.
    """

    def __init__(self, keepdims=False):
        super().__init__()
        self.keepdims = bool(keepdims)

    def forward(self, x):
        self._check_input(x, ndim=4)
        y = x.mean(axis=(2, 3), keepdims=self.keepdims, dtype=x.dtype)
        self._save(x.shape, out=y)
        return y

    def backward(self, dy):
        shape = self._take_cache(dy)
        xp = backend.get_array_module(dy)
        n, c, h, w = shape
        scaled = dy.reshape(n, c, 1, 1) / (h * w)
        return xp.broadcast_to(scaled, shape).astype(dy.dtype, copy=True)

    def extra_repr(self):
        return "keepdims=True" if self.keepdims else ""


class _AdaptiveMaxPool(Layer):
    """y = the maximum of each adaptive window: output i of an axis of size L
    reads ⌊i·L/O⌋ .. ⌈(i+1)·L/O⌉ - 1, so any input size gives the output size
    (windows overlap where O does not divide L).

    Backward: dx[argmax of window o] += dy[o], as max pooling; the indices
    (ih*W + iw, int64) are all that is cached.
    """

    _nd = 2

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        sizes = adaptive_sizes(output_size, self._nd, type(self).__name__)
        self.output_size = sizes if self._nd > 1 else sizes[0]
        self.return_indices = bool(return_indices)

    def forward(self, x):
        self._check_input(x, ndim=self._nd + 2)
        if 0 in x.shape[2:]:
            raise ShapeError(f"{self._label()}: expected non-empty spatial dimensions, received shape {tuple(x.shape)}")
        sizes = self.output_size if self._nd > 1 else (self.output_size,)
        out = tuple(n if s is None else s for n, s in zip(x.shape[2:], sizes))
        n, c, *spatial = x.shape
        h, w = spatial if self._nd == 2 else (1, spatial[0])
        oh, ow = out if self._nd == 2 else (1, out[0])
        y, idx = ops.adaptive_maxpool2d_forward(x.reshape(n, c, h, w), oh, ow)
        y, idx = y.reshape(n, c, *out), idx.reshape(n, c, *out)
        self._save((idx, h, w, tuple(x.shape)), out=y)
        return (y, idx) if self.return_indices else y

    def backward(self, dy):
        idx, h, w, shape = self._take_cache(dy)
        return ops.maxpool_scatter_backward(dy, idx, h, w).reshape(shape)

    def extra_repr(self):
        return f"output_size={self.output_size}" + (", return_indices=True" if self.return_indices else "")


class AdaptiveMaxPool2D(_AdaptiveMaxPool):
    """Max pooling to a fixed output size, PyTorch's ``nn.AdaptiveMaxPool2d``:
    (N, C, H, W) → (N, C, OH, OW) for any H, W.

    Args:
        output_size: int or (OH, OW); None in a place keeps that input size.
        return_indices: return (y, indices) as :class:`MaxPool2D` does.
    """

    _nd = 2


class AdaptiveMaxPool1D(_AdaptiveMaxPool):
    """Max pooling of (N, C, L) to a fixed length, PyTorch's ``nn.AdaptiveMaxPool1d``."""

    _nd = 1


class _MaxUnpool(Layer):
    """The partial inverse of max pooling, PyTorch's ``nn.MaxUnpool2d``:
    y is zero except y[n, c, indices[n, c, o]] = x[n, c, o], the indices being
    those a max pooling layer returned (``return_indices=True``).

    Backward: dx[o] = dy[indices[o]], a gather; the indices get no gradient.
    Caches the indices.  Where windows overlap, one input can be the maximum
    of two windows, so an index repeats: y keeps one of the values written
    there and both get that position's gradient, as in PyTorch.
    """

    _nd = 2

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = as_tuple(kernel_size, self._nd, name, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, self._nd, name, "stride")
        self.padding = as_tuple(padding, self._nd, name, "padding", minimum=0)

    def _output_spatial(self, x, output_size):
        """The output's spatial size: (in - 1)·stride - 2·padding + kernel per
        axis, or ``output_size`` (spatial, or the whole shape), which may add
        up to stride - 1 and remove up to stride - 1, as PyTorch allows."""
        default = tuple((i - 1) * s - 2 * p + k for i, s, p, k in zip(x.shape[2:], self.stride, self.padding, self.kernel_size))
        if output_size is None:
            size = default
        else:
            size = tuple(output_size)
            size = size[2:] if len(size) == self._nd + 2 else size
            if len(size) != self._nd or not all(isinstance(v, (int, np.integer)) for v in size):
                raise ValueError(f"{self._label()}: expected output_size as {self._nd} ints (or the whole shape of "
                                 f"{self._nd + 2}), received {output_size!r}")
            size = tuple(int(v) for v in size)
            for v, d, s in zip(size, default, self.stride):
                if not d - s < v < d + s:
                    lo = tuple(d - s + 1 for d, s in zip(default, self.stride))
                    hi = tuple(d + s - 1 for d, s in zip(default, self.stride))
                    raise ShapeError(f"{self._label()}: expected output_size between {lo} and {hi} for an input of "
                                     f"shape {tuple(x.shape)}, received {output_size!r}")
        if min(size) < 1:
            raise ShapeError(f"{self._label()}: an input of shape {tuple(x.shape)} gives an empty output {size}")
        return size

    def forward(self, x, indices, output_size=None):
        self._check_input(x, ndim=self._nd + 2)
        if not backend.is_array(indices) or indices.dtype.kind not in "iu":
            raise DTypeError(f"{self._label()}: expected integer indices as an array, received {_describe(indices)}")
        if backend.device_of(indices) != backend.device_of(x):
            raise DeviceError(f"{self._label()}: expected the indices on {backend.device_of(x)} (where the input is), "
                              f"received them on {backend.device_of(indices)}")
        if indices.shape != x.shape:
            raise ShapeError(f"{self._label()}: expected indices of the input's shape {tuple(x.shape)}, "
                             f"received {tuple(indices.shape)}")
        spatial = self._output_spatial(x, output_size)
        size = int(np.prod(spatial))
        if indices.size:
            lo, hi = int(indices.min()), int(indices.max())  # one host synchronisation on the GPU, for a clear error
            if lo < 0 or hi >= size:
                raise IndexError(f"{self._label()}: expected indices in [0, {size}) for an output of spatial size "
                                 f"{spatial}, received values from {lo} to {hi}")
        n, c = x.shape[:2]
        idx = indices.astype(np.int64, copy=False).reshape(n, c, -1)
        y = ops.max_unpool_forward(x.reshape(n, c, -1), idx, size).reshape(n, c, *spatial)
        self._save(idx, tuple(x.shape), out=y)
        return y

    def backward(self, dy):
        idx, shape = self._take_cache(dy)
        n, c = shape[:2]
        return ops.max_unpool_backward(dy.reshape(n, c, -1), idx).reshape(shape)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool2D(_MaxUnpool):
    """Undo :class:`MaxPool2D` with its indices: (N, C, OH, OW) → (N, C, H, W),
    each value back where its maximum was, zeros elsewhere.

    Call as ``unpool(y, indices)`` or ``unpool(y, indices, output_size=x.shape)``
    when the pooled input's size is not the default (in - 1)·stride - 2·padding + kernel.
    """

    _nd = 2


class MaxUnpool1D(_MaxUnpool):
    """Undo :class:`MaxPool1D` with its indices: (N, C, OL) → (N, C, L)."""

    _nd = 1


class _LPPool(_AvgPool):
    """Power-average pooling (PyTorch's ``nn.LPPool2d``/``nn.LPPool1d``): the
    p-norm of each window, y = (Σ_window xᵖ)^(1/p): p = 1 is sum pooling,
    p → ∞ max pooling.  With K the kernel's size and s = K · mean(xᵖ)
    (PyTorch's: a ceil_mode window that hangs over the edge is scaled up
    to K by the mean),

        y = s^(1/p),   ds = dy y / (p s)  (0 where s = 0),   dx = p x^(p-1) · avgpool_backward(K ds)

    No padding.  Caches x, s and y.
    """

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__(kernel_size, stride, 0, count_include_pad=True, ceil_mode=ceil_mode)
        if not float(norm_type) > 0 or not np.isfinite(float(norm_type)):
            raise ValueError(f"{type(self).__name__}: expected a finite norm_type > 0, received {norm_type!r}")
        self.norm_type = float(norm_type)

    def forward(self, x):
        g = self._geometry(x)
        scale = self._rescale(g, x)
        p = x.dtype.type(self.norm_type)
        mean = ops.avgpool2d_forward((x ** p).reshape(g.n, g.c, g.h, g.w), g, scale is None)
        s = (mean if scale is None else mean * scale) * x.dtype.type(math.prod(self.kernel_size))
        with np.errstate(invalid="ignore"):
            y = s ** (1 / p)
        self._save(g, scale, x, s, y, out=y.reshape(self._out_shape(g)))
        return y.reshape(self._out_shape(g))

    def backward(self, dy):
        g, scale, x, s, y = self._take_cache(dy)
        xp = backend.get_array_module(dy)
        p = x.dtype.type(self.norm_type)
        with np.errstate(invalid="ignore", divide="ignore"):
            ds = xp.where(s != 0, dy.reshape(s.shape) * y / (p * s), 0).astype(x.dtype, copy=False)
        dm = ds * x.dtype.type(math.prod(self.kernel_size))
        dz = ops.avgpool2d_backward(dm if scale is None else dm * scale, g, scale is None)
        return (dz.reshape(x.shape) * p * x ** (p - 1)).astype(dy.dtype, copy=False)

    def extra_repr(self):
        s = f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}"
        return s + (", ceil_mode=True" if self.ceil_mode else "")


class LPPool2D(_LPPool):
    """2-d power-average pooling, PyTorch's ``nn.LPPool2d``: (N, C, H, W) → (N, C, OH, OW)."""

    _nd = 2


class LPPool1D(_LPPool):
    """1-d power-average pooling, PyTorch's ``nn.LPPool1d``: (N, C, L) → (N, C, OL)."""

    _nd = 1
