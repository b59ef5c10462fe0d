"""Pooling layers: max and average over windows (2-d and 1-d), global average.

The window sweeps run in C++ on the CPU (``lamina._C``) and on NumPy/CuPy
references elsewhere; see :mod:`lamina.ops.conv`.  1-d pooling is 2-d
pooling with a height-1 window.
"""

from .. import backend, ops
from ..errors import ShapeError
from ..module import Layer
from ._utils import as_tuple


class _PoolNd(Layer):
    _nd = 2

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        nd = self._nd
        self.kernel_size = as_tuple(kernel_size, nd, name, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, nd, name, "stride")
        self.padding = as_tuple(padding, nd, name, "padding", minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{name}: expected padding at most half the kernel size {self.kernel_size}, received {self.padding}"
            )

    def _geometry(self, x):
        self._check_input(x, ndim=self._nd + 2)
        if self._nd == 2:
            shape, k, s = x.shape, self.kernel_size, self.stride
            p = (self.padding[0], self.padding[0], self.padding[1], self.padding[1])
        else:
            shape = (x.shape[0], x.shape[1], 1, x.shape[2])
            k, s = (1, *self.kernel_size), (1, *self.stride)
            p = (0, 0, self.padding[0], self.padding[0])
        g = ops.geometry(shape, k, s, p)
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
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _MaxPool(_PoolNd):
    """y = max over each window (padding counts as -inf).

    Backward: dx[argmax of window o] += dy[o]; only the argmax indices
    (int64, ih*W + iw within each plane, as PyTorch's return_indices) are cached.
    """

    def forward(self, x):
        g = self._geometry(x)
        y, idx = ops.maxpool2d_forward(x.reshape(g.n, g.c, g.h, g.w), g)
        y = y.reshape(self._out_shape(g))
        self._save(idx, g, out=y)  # idx: (N, C, OH, OW) int64
        return y

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

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        g = self._geometry(x)
        y = ops.avgpool2d_forward(x.reshape(g.n, g.c, g.h, g.w), g, self.count_include_pad)
        y = y.reshape(self._out_shape(g))
        self._save(g, out=y)
        return y

    def backward(self, dy):
        g = self._take_cache(dy)
        dx = ops.avgpool2d_backward(dy.reshape(g.n, g.c, g.oh, g.ow), g, self.count_include_pad)
        return dx.reshape(self._in_shape(g))

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.count_include_pad else s + ", count_include_pad=False"


class MaxPool2D(_MaxPool):
    """2-d max pooling, PyTorch's ``nn.MaxPool2d``: (N, C, H, W) → (N, C, OH, OW).

    Args:
        kernel_size: int or (KH, KW).
        stride: defaults to kernel_size.
        padding: implicit -inf padding, at most half the kernel.
    """

    _nd = 2


class MaxPool1D(_MaxPool):
    """1-d max pooling, PyTorch's ``nn.MaxPool1d``: (N, C, L) → (N, C, OL)."""

    _nd = 1


class AvgPool2D(_AvgPool):
    """2-d average pooling, PyTorch's ``nn.AvgPool2d``: (N, C, H, W) → (N, C, OH, OW).

    Args:
        kernel_size, stride, padding: as :class:`MaxPool2D` (zero padding).
        count_include_pad: divide by the whole window, padding included.
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
