"""Elementwise activations and softmax.

Each caches the one array its derivative needs: the output where the
derivative is a function of the output (ReLU, Sigmoid, Tanh, Softmax), the
input otherwise (LeakyReLU, GELU).
"""

import numpy as np

from .. import ops
from ..backend import get_array_module
from ..module import Layer


class ReLU(Layer):
    """y = max(x, 0).  Backward: dx = dy · [y > 0]  (caches y).

    On CuPy arrays forward and backward run lamina's CUDA kernels.
    """

    def forward(self, x):
        self._check_input(x)
        y = ops.relu_forward(x)
        self._save(y, out=y)  # y: same shape as x
        return y

    def backward(self, dy):
        y = self._take_cache(dy)
        return ops.relu_backward(dy, y)


class LeakyReLU(Layer):
    """y = x if x > 0 else s·x.  Backward: dx = dy · (1 if x > 0 else s)  (caches x)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        if not np.isscalar(negative_slope) or not np.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU: expected a finite negative_slope, received {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = xp.where(x > 0, x, x * self.negative_slope).astype(x.dtype, copy=False)
        self._save(x, out=y)  # x: same shape as y
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        return xp.where(x > 0, dy, dy * self.negative_slope).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Layer):
    """y = 1 / (1 + e^(-x)).  Backward: dx = dy · y (1 - y)  (caches y).

    Computed as e^x / (1 + e^x) for x < 0 so that no exponential overflows.
    """

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self._save(y, out=y)  # y: same shape as x
        return y

    def backward(self, dy):
        y = self._take_cache(dy)
        return dy * y * (1 - y)


class Tanh(Layer):
    """y = tanh(x).  Backward: dx = dy · (1 - y²)  (caches y)."""

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = xp.tanh(x)
        self._save(y, out=y)  # y: same shape as x
        return y

    def backward(self, dy):
        y = self._take_cache(dy)
        return dy * (1 - y * y)


class GELU(Layer):
    """Gaussian error linear unit (caches x).

    exact (``approximate="none"``):
        y = x Φ(x),  Φ(x) = ½ (1 + erf(x/√2));  dy/dx = Φ(x) + x φ(x),  φ(x) = e^(-x²/2)/√(2π)
    tanh (``approximate="tanh"``):
        y = ½ x (1 + tanh u),  u = √(2/π) (x + 0.044715 x³)
        dy/dx = ½ (1 + tanh u) + ½ x (1 - tanh² u) √(2/π) (1 + 3·0.044715 x²)

    Runs on lamina's C++ kernels on the CPU and CUDA kernels on the GPU.
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: expected approximate 'none' or 'tanh', received {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        self._check_input(x)
        y = ops.gelu_forward(x, self.approximate)
        self._save(x, out=y)  # x: same shape as y
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        return ops.gelu_backward(dy, x, self.approximate)

    def extra_repr(self):
        return f"approximate='{self.approximate}'"


class Softmax(Layer):
    """y_i = e^(x_i - m) / Σ_j e^(x_j - m) along ``dim`` (m the maximum, for stability).

    Backward (Jacobian-vector product, caches y):
        dx = y ⊙ (dy - Σ_j dy_j y_j)
    For classification use :class:`lamina.SoftmaxCrossEntropy`, which fuses
    softmax into the loss and is more accurate.
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = int(dim)

    def forward(self, x):
        self._check_input(x, min_ndim=1)
        if not -x.ndim <= self.dim < x.ndim:
            from ..errors import ShapeError  # noqa: PLC0415

            raise ShapeError(f"{self._label()}: expected an input with dimension {self.dim}, received shape {tuple(x.shape)}")
        xp = get_array_module(x)
        # the kernels run along the last axis; 16-bit inputs reduce in float32
        y = xp.moveaxis(ops.softmax_forward(xp.moveaxis(x, self.dim, -1)), -1, self.dim)
        self._save(y, out=y)  # y: same shape as x
        return y

    def backward(self, dy):
        y = self._take_cache(dy)
        xp = get_array_module(dy)
        return xp.moveaxis(ops.softmax_backward(xp.moveaxis(dy, self.dim, -1), xp.moveaxis(y, self.dim, -1)), -1, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"
