"""Elementwise activations, softmax and log-softmax.

Each caches the one array its derivative needs: the output where the
derivative is a function of the output (ReLU, Sigmoid, Tanh, Softmax,
Softmin, LogSoftmax), the input otherwise (LeakyReLU, PReLU, GELU, SiLU, ELU,
SELU, CELU, Softplus, Mish, LogSigmoid, Softsign, Tanhshrink, GLU, and the
piecewise-linear Hardtanh, ReLU6, Hardsigmoid, Hardswish, Hardshrink,
Softshrink, Threshold).
"""

import numpy as np

from .. import backend, ops
from ..backend import get_array_module
from ..errors import ShapeError
from ..module import Layer, Parameter
from ._utils import positive_int


def _sigmoid(xp, x):
    """σ(x), without overflow for any x."""
    e = xp.exp(-xp.abs(x))  # in (0, 1]
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(xp, x):
    """log(1 + e^x) = max(x, 0) + log(1 + e^(-|x|)), without overflow."""
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


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


class PReLU(Layer):
    """LeakyReLU with a learned slope (PyTorch's ``nn.PReLU``): one slope a
    for every channel (dimension 1), or one shared by all.

        y = x if x > 0 else a_c·x
        dx = dy · (1 if x > 0 else a_c),   da_c = Σ_(all but channel c) dy · x · [x ≤ 0]

    Args:
        num_parameters: 1 (a shared slope) or the number of channels.
        init: the slopes' initial value, 0.25.
    """

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32):
        super().__init__()
        self.num_parameters = positive_int(num_parameters, "PReLU", "num_parameters")
        if not np.isscalar(init) or not np.isfinite(init):
            raise ValueError(f"PReLU: expected a finite init, received {init!r}")
        self.weight = Parameter(np.full(self.num_parameters, init, dtype=dtype))

    def _slope(self, x):
        """The slopes, broadcastable to x (channels on dimension 1)."""
        a = self._compute(self.weight)
        if self.num_parameters == 1:
            return a.reshape(())
        return a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, x):
        if self.num_parameters == 1:
            x = self._check_input(x)
        else:
            x = self._check_input(x, min_ndim=2, dim=[(1, self.num_parameters, "num_parameters")])
        xp = get_array_module(x)
        y = xp.where(x > 0, x, x * self._slope(x)).astype(x.dtype, copy=False)
        self._save(x, out=y)  # x: same shape as y
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        dy = self._compute_grad(dy)
        xp = get_array_module(dy)
        a = self._slope(x)
        if self.weight.requires_grad:
            g = xp.where(x > 0, 0, dy * x)
            axes = tuple(i for i in range(x.ndim) if self.num_parameters == 1 or i != 1)
            self.weight.accumulate(g.sum(axis=axes, dtype=np.float32 if x.itemsize == 2 else x.dtype)
                                   .reshape(self.num_parameters).astype(self.weight.data.dtype, copy=False), owned=True)
        return xp.where(x > 0, dy, dy * a).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Hardtanh(Layer):
    """y = clip(x, min_val, max_val).  Backward: dx = dy · [min_val < x < max_val]
    (caches x).  ``ReLU6`` is Hardtanh(0, 6)."""

    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        if not (np.isfinite(min_val) and np.isfinite(max_val) and min_val < max_val):
            raise ValueError(f"{type(self).__name__}: expected finite min_val < max_val, received {min_val!r} and {max_val!r}")
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = xp.clip(x, self.min_val, self.max_val).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        return xp.where((x > self.min_val) & (x < self.max_val), dy, 0).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    """y = min(max(x, 0), 6) (MobileNet's).  Backward: dx = dy · [0 < x < 6]."""

    def __init__(self):
        super().__init__(0.0, 6.0)

    def extra_repr(self):
        return ""


class Hardsigmoid(Layer):
    """y = relu6(x + 3) / 6, a piecewise-linear sigmoid.  Backward:
    dx = dy / 6 where -3 < x < 3, else 0 (caches x)."""

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = (xp.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        return xp.where((x > -3) & (x < 3), dy / 6, 0).astype(dy.dtype, copy=False)


class Hardswish(Layer):
    """y = x · relu6(x + 3) / 6 (MobileNetV3's).  Backward (PyTorch's, kinks
    included): dx = 0 for x ≤ -3, dy · (x/3 + 1/2) for -3 < x < 3, dy for x ≥ 3
    (caches x)."""

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = (x * xp.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        mid = dy * (x / 3 + 0.5)
        return xp.where(x <= -3, 0, xp.where(x < 3, mid, dy)).astype(dy.dtype, copy=False)


class Sigmoid(Layer):
    """y = 1 / (1 + e^(-x)).  Backward: dx = dy · y (1 - y)  (caches y).

    Computed as e^x / (1 + e^x) for x < 0 so that no exponential overflows.
    """

    def forward(self, x):
        self._check_input(x)
        y = _sigmoid(get_array_module(x), x).astype(x.dtype, copy=False)
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


class Softmin(Softmax):
    """y = softmax(-x) along ``dim``.  Backward (caches y): the softmax's
    backward at -x, negated: dx = -y ⊙ (dy - Σ_j dy_j y_j)."""

    def forward(self, x):
        if backend.is_array(x) and x.dtype.kind in "fV":
            return super().forward(-x)
        return super().forward(x)  # the layer's own errors

    def backward(self, dy):
        return -super().backward(dy)


class SiLU(Layer):
    """SiLU (swish): y = x σ(x).  Backward (caches x):

        dy/dx = σ(x) + x σ(x) (1 - σ(x)) = σ(x) (1 + x (1 - σ(x)))
    """

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = (x * _sigmoid(xp, x)).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        s = _sigmoid(get_array_module(dy), x)
        return (dy * (s * (1 + x * (1 - s)))).astype(dy.dtype, copy=False)


class ELU(Layer):
    """y = x for x > 0, α (e^x - 1) otherwise.  Backward (caches x):

        dy/dx = 1 for x > 0, α e^x otherwise
    """

    _scale = 1.0  # SELU scales both pieces

    def __init__(self, alpha=1.0):
        super().__init__()
        if not np.isscalar(alpha) or not np.isfinite(alpha):
            raise ValueError(f"ELU: expected a finite alpha, received {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        k = self._scale
        y = xp.where(x > 0, x * k if k != 1 else x, (self.alpha * k) * xp.expm1(xp.minimum(x, 0))).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        k = self._scale
        dx = xp.where(x > 0, dy * k if k != 1 else dy, dy * ((self.alpha * k) * xp.exp(xp.minimum(x, 0))))
        return dx.astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class SELU(ELU):
    """Scaled ELU (Klambauer et al., 2017), self-normalising with LeCun-normal
    weights: y = λ x for x > 0, λ α (e^x - 1) otherwise, with PyTorch's
    constants α ≈ 1.6733 and λ ≈ 1.0507.  Backward (caches x):

        dy/dx = λ for x > 0, λ α e^x otherwise
    """

    _scale = 1.0507009873554804934193349852946

    def __init__(self):
        super().__init__(1.6732632423543772848170429916717)

    def extra_repr(self):
        return ""


class CELU(Layer):
    """Continuously differentiable ELU (Barron, 2017):
    y = max(0, x) + min(0, α (e^(x/α) - 1)).  Backward (caches x):

        dy/dx = 1 for x > 0, e^(x/α) otherwise    (continuous at 0 for every α)
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        if not np.isscalar(alpha) or not np.isfinite(alpha) or alpha == 0:
            raise ValueError(f"CELU: expected a finite, non-zero alpha, received {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0) / self.alpha)).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        return xp.where(x > 0, dy, dy * xp.exp(xp.minimum(x, 0) / self.alpha)).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Softplus(Layer):
    """y = log(1 + e^(βx)) / β, and y = x where βx > threshold (PyTorch's
    ``nn.Softplus``, for accuracy).  Backward (caches x):

        dy/dx = σ(βx), 1 where βx > threshold
    """

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        if not np.isscalar(beta) or not beta > 0 or not np.isfinite(beta):
            raise ValueError(f"Softplus: expected a finite beta > 0, received {beta!r}")
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        bx = x * self.beta
        y = xp.where(bx > self.threshold, x, _softplus(xp, bx) / self.beta).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        bx = x * self.beta
        return (dy * xp.where(bx > self.threshold, 1, _sigmoid(xp, bx))).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Mish(Layer):
    """y = x tanh(softplus(x)).  Backward (caches x), with t = tanh(softplus(x)):

        dy/dx = t + x (1 - t²) σ(x)          (d softplus(x)/dx = σ(x))
    """

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = (x * xp.tanh(_softplus(xp, x))).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        t = xp.tanh(_softplus(xp, x))
        return (dy * (t + x * (1 - t * t) * _sigmoid(xp, x))).astype(dy.dtype, copy=False)


class LogSigmoid(Layer):
    """y = log σ(x) = -softplus(-x) = min(x, 0) - log(1 + e^(-|x|)), finite
    for any x.  Backward (caches x):

        dy/dx = 1 - σ(x) = σ(-x)
    """

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = (xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        return (dy * _sigmoid(get_array_module(dy), -x)).astype(dy.dtype, copy=False)


class Softsign(Layer):
    """y = x / (1 + |x|).  Backward (caches x): dy/dx = 1 / (1 + |x|)²."""

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = (x / (1 + xp.abs(x))).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        d = 1 + get_array_module(dy).abs(x)
        return (dy / (d * d)).astype(dy.dtype, copy=False)


class Tanhshrink(Layer):
    """y = x - tanh(x).  Backward (caches x): dy/dx = 1 - (1 - tanh²x) = tanh²x."""

    def forward(self, x):
        self._check_input(x)
        y = (x - get_array_module(x).tanh(x)).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        t = get_array_module(dy).tanh(self._take_cache(dy))
        return (dy * t * t).astype(dy.dtype, copy=False)


class Threshold(Layer):
    """y = x where x > threshold, ``value`` elsewhere (PyTorch's
    ``nn.Threshold``).  Backward (caches x): dx = dy · [x > threshold]."""

    def __init__(self, threshold, value):
        super().__init__()
        for name, v in (("threshold", threshold), ("value", value)):
            if not np.isscalar(v) or isinstance(v, (str, bool)) or np.isnan(v):
                raise ValueError(f"Threshold: expected {name} as a number, received {v!r}")
        self.threshold, self.value = float(threshold), float(value)

    def forward(self, x):
        self._check_input(x)
        xp = get_array_module(x)
        y = xp.where(x > self.threshold, x, self.value).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        return get_array_module(dy).where(x > self.threshold, dy, 0).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"threshold={self.threshold}, value={self.value}"


class Hardshrink(Layer):
    """y = x where |x| > λ, 0 elsewhere.  Backward (caches x): dx = dy · [|x| > λ]."""

    def __init__(self, lambd=0.5):
        super().__init__()
        if not np.isscalar(lambd) or isinstance(lambd, (str, bool)) or not np.isfinite(lambd) or lambd < 0:
            raise ValueError(f"{type(self).__name__}: expected a finite lambd >= 0, received {lambd!r}")
        self.lambd = float(lambd)

    def _shrink(self, xp, x):
        return xp.where(xp.abs(x) > self.lambd, x, 0)

    def forward(self, x):
        self._check_input(x)
        y = self._shrink(get_array_module(x), x).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        return xp.where(xp.abs(x) > self.lambd, dy, 0).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"lambd={self.lambd}"


class Softshrink(Hardshrink):
    """y = x - λ sign(x) where |x| > λ, 0 elsewhere (soft thresholding, the
    proximal map of λ|x|).  Backward (caches x): dx = dy · [|x| > λ]."""

    def _shrink(self, xp, x):
        return xp.where(xp.abs(x) > self.lambd, x - xp.sign(x) * x.dtype.type(self.lambd), 0)


class GLU(Layer):
    """Gated linear unit (Dauphin et al., 2017): the input's ``dim`` is cut
    into halves a and b, and y = a ⊙ σ(b) (half the size along ``dim``).
    Backward (caches x), with s = σ(b):

        da = dy ⊙ s,   db = dy ⊙ a ⊙ s (1 - s)
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = int(dim)

    def forward(self, x):
        self._check_input(x, min_ndim=1)
        if not -x.ndim <= self.dim < x.ndim or x.shape[self.dim] % 2:
            raise ShapeError(f"{self._label()}: expected an input with an even size in dimension {self.dim}, "
                             f"received shape {tuple(x.shape)}")
        xp = get_array_module(x)
        a, b = xp.split(x, 2, axis=self.dim)
        y = (a * _sigmoid(xp, b)).astype(x.dtype, copy=False)
        self._save(x, out=y)
        return y

    def backward(self, dy):
        x = self._take_cache(dy)
        xp = get_array_module(dy)
        a, b = xp.split(x, 2, axis=self.dim)
        s = _sigmoid(xp, b)
        da = dy * s
        return xp.concatenate([da, da * a * (1 - s)], axis=self.dim).astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Layer):
    """y_i = x_i - m - log Σ_j e^(x_j - m) along ``dim`` (m the maximum).

    Backward (caches y; softmax p = e^y):
        dx = dy - p Σ_j dy_j
    Followed by :class:`lamina.NLLLoss` it is the cross-entropy;
    :class:`lamina.SoftmaxCrossEntropy` fuses the two.  16-bit inputs are
    reduced in float32.
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = int(dim)

    def forward(self, x):
        self._check_input(x, min_ndim=1)
        if not -x.ndim <= self.dim < x.ndim:
            raise ShapeError(f"{self._label()}: expected an input with dimension {self.dim}, received shape {tuple(x.shape)}")
        xp = get_array_module(x)
        xw = x.astype(np.float32) if backend.is_low_precision(x.dtype) else x
        z = xw - xw.max(axis=self.dim, keepdims=True)
        y = z - xp.log(xp.exp(z).sum(axis=self.dim, keepdims=True))
        y = backend.narrow(y, x.dtype) if y.dtype != x.dtype else y
        self._save(y, out=y)
        return y

    def backward(self, dy):
        y = self._take_cache(dy)
        xp = get_array_module(dy)
        work = np.float32 if backend.is_low_precision(dy.dtype) else dy.dtype
        dyw, yw = dy.astype(work, copy=False), y.astype(work, copy=False)
        dx = dyw - xp.exp(yw) * dyw.sum(axis=self.dim, keepdims=True)
        return backend.narrow(dx, dy.dtype) if dx.dtype != dy.dtype else dx

    def extra_repr(self):
        return f"dim={self.dim}"
