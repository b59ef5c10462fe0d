"""Layers of two inputs: their distance, their cosine similarity, and the
bilinear map.  Each returns one gradient per input, ``(dx1, dx2)``; where
the two inputs broadcast against each other, each gradient is summed back
to its own input's shape."""

import math

import numpy as np

from .. import backend, init
from ..backend import get_array_module
from ..errors import DeviceError, DTypeError, ShapeError
from ..module import Layer, Parameter
from ._utils import positive_int


def vector_norm(xp, w, p, axis=-1):
    """(‖w‖ₚ along ``axis``, ∂‖w‖ₚ/∂w) for p > 0 or inf.

        ∂‖w‖ₚ/∂w = sign(w) |w|^(p-1) / ‖w‖ₚ^(p-1)     (w / ‖w‖ for p = 2, sign(w) for p = 1)

    0 where the norm is 0, and for p = inf shared by the tied maxima, as
    PyTorch's norm backward."""
    a = xp.abs(w)
    if p == np.inf:
        d = a.max(axis)
        top = (a == xp.expand_dims(d, axis)).astype(w.dtype)
        return d, xp.sign(w) * top / top.sum(axis, keepdims=True)
    if p == 1:
        return a.sum(axis), xp.sign(w)
    if p == 2:
        d, g = xp.sqrt((w * w).sum(axis)), w
    else:
        d, g = (a ** p).sum(axis) ** (1 / p), xp.sign(w) * a ** (p - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = xp.where(d > 0, 1 / d ** (p - 1), 0)
    return d, g * xp.expand_dims(scale, axis).astype(w.dtype)


def sum_to(g, shape):
    """``g`` summed back to ``shape`` (an input that broadcasting stretched)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


class _Pair(Layer):
    """A parameter-free layer of two inputs that broadcast together."""

    def _inputs(self, x1, x2, min_ndim=1):
        """x1 and x2 validated (floating, one device and dtype, shapes that broadcast)."""
        x1 = self._check_input(x1, "x1", min_ndim=min_ndim)
        x2 = self._check_input(x2, "x2", min_ndim=min_ndim)
        if backend.device_of(x1) != backend.device_of(x2):
            raise DeviceError(f"{self._label()}: expected x2 on {backend.device_of(x1)} (x1's device), received it on "
                              f"{backend.device_of(x2)}")
        if x1.dtype != x2.dtype:
            raise DTypeError(f"{self._label()}: expected x1 and x2 of one dtype, received {x1.dtype} and {x2.dtype}")
        try:
            shape = np.broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
        except ValueError:
            raise ShapeError(f"{self._label()}: expected x1 and x2 of shapes that broadcast together, received "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}") from None
        return x1, x2, shape


class PairwiseDistance(_Pair):
    """The p-norm distance of each pair of rows (PyTorch's ``nn.PairwiseDistance``):

        y = ‖x1 - x2 + ε‖ₚ over the last axis
        dx1 = dy g,  dx2 = -dy g,   g = ∂‖w‖ₚ/∂w at w = x1 - x2 + ε

    (g = w / ‖w‖ for p = 2; see :func:`vector_norm`).  x1 and x2 of shape
    (N, D), (D,), or any shapes that broadcast; the output drops the last
    axis (keeps it, of size 1, with ``keepdim``).
    """

    def __init__(self, p=2.0, eps=1e-6, keepdim=False):
        super().__init__()
        if not float(p) > 0:
            raise ValueError(f"PairwiseDistance: expected a norm degree p > 0, received {p!r}")
        self.p, self.eps, self.keepdim = float(p), float(eps), bool(keepdim)

    def forward(self, x1, x2):
        x1, x2, _ = self._inputs(x1, x2)
        xp = get_array_module(x1)
        d, g = vector_norm(xp, x1 - x2 + x1.dtype.type(self.eps), self.p)
        y = (d[..., None] if self.keepdim else d).astype(x1.dtype, copy=False)
        self._save(g, tuple(x1.shape), tuple(x2.shape), out=y)
        return y

    def backward(self, dy):
        g, shape1, shape2 = self._take_cache(dy)
        dw = (dy if self.keepdim else dy[..., None]) * g
        return sum_to(dw, shape1), sum_to(-dw, shape2)

    def extra_repr(self):
        return f"p={self.p}, eps={self.eps}" + (", keepdim=True" if self.keepdim else "")


class CosineSimilarity(_Pair):
    """Cosine of the angle between x1 and x2 along ``dim`` (PyTorch's
    ``nn.CosineSimilarity``).  With nᵢ = max(‖xᵢ‖, ε), u = x1 / n1 and
    v = x2 / n2:

        y = Σ u v
        dx1 = dy (v - y u) / n1    (dy v / n1 where ‖x1‖ < ε: n1 is then the constant ε)

    and symmetrically for x2.  Below ε this is the derivative of the
    function computed; PyTorch passes the gradient through its clamp as if
    the norm were not clamped.  The inputs broadcast together; the output
    drops ``dim``.
    """

    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        if not float(eps) > 0:
            raise ValueError(f"CosineSimilarity: expected eps > 0, received {eps!r}")
        self.dim, self.eps = int(dim), float(eps)

    def forward(self, x1, x2):
        x1, x2, shape = self._inputs(x1, x2)
        if not -len(shape) <= self.dim < len(shape):
            raise ShapeError(f"{self._label()}: expected inputs with dimension {self.dim}, received shapes "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}")
        xp = get_array_module(x1)
        eps = x1.dtype.type(self.eps)
        n1 = xp.sqrt((x1 * x1).sum(self.dim, keepdims=True))
        n2 = xp.sqrt((x2 * x2).sum(self.dim, keepdims=True))
        c1, c2 = xp.maximum(n1, eps), xp.maximum(n2, eps)
        u, v = x1 / c1, x2 / c2
        y = (u * v).sum(self.dim)
        self._save(u, v, c1, c2, n1 >= eps, n2 >= eps, tuple(x1.shape), tuple(x2.shape), out=y)
        return y

    def backward(self, dy):
        u, v, c1, c2, free1, free2, shape1, shape2 = self._take_cache(dy)
        xp = get_array_module(dy)
        dy = xp.expand_dims(dy, self.dim)
        y = (u * v).sum(self.dim, keepdims=True)
        dx1 = dy * (v - free1 * y * u) / c1
        dx2 = dy * (u - free2 * y * v) / c2
        return sum_to(dx1, shape1), sum_to(dx2, shape2)

    def extra_repr(self):
        return f"dim={self.dim}, eps={self.eps}"


class Bilinear(Layer):
    """y_k = x1ᵀ W_k x2 + b_k (PyTorch's ``nn.Bilinear``): one bilinear form
    per output feature, weight (out_features, in1_features, in2_features).

    Backward (caches x1, x2 and the partial products P_nk = W_k x2_n):

        dx1_n = Σ_k dy_nk W_k x2_n,    dx2_n = Σ_k dy_nk W_kᵀ x1_n
        dW_k = Σ_n dy_nk x1_n x2_nᵀ,   db = Σ_n dy_n

    Inputs (*, in1_features) and (*, in2_features) with the same leading
    axes; initialised as PyTorch's, uniform in ±1/√in1_features.
    """

    def __init__(self, in1_features, in2_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in1_features = positive_int(in1_features, "Bilinear", "in1_features")
        self.in2_features = positive_int(in2_features, "Bilinear", "in2_features")
        self.out_features = positive_int(out_features, "Bilinear", "out_features")
        self.weight = Parameter(np.empty((self.out_features, self.in1_features, self.in2_features), dtype=dtype))
        self.bias = Parameter(np.empty((self.out_features,), dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.in1_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x1, x2):
        x1 = self._check_input(x1, "x1", min_ndim=1, dim=[(-1, self.in1_features, "in1_features")])
        x2 = self._check_input(x2, "x2", min_ndim=1, dim=[(-1, self.in2_features, "in2_features")])
        if tuple(x1.shape[:-1]) != tuple(x2.shape[:-1]):
            raise ShapeError(f"{self._label()}: expected x1 and x2 with the same leading axes, received shapes "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}")
        k, i, j = self.weight.shape
        a, b = x1.reshape(-1, i), x2.reshape(-1, j)
        w = self._compute(self.weight)
        partial = (b @ w.reshape(k * i, j).T).reshape(-1, k, i)  # P_nk = W_k x2_n
        y = (partial @ a[:, :, None])[..., 0]
        if self.bias is not None:
            y = y + self._compute(self.bias)
        self._save(a, b, partial, tuple(x1.shape[:-1]), out=y.reshape(*x1.shape[:-1], k))
        return y.reshape(*x1.shape[:-1], k)

    def backward(self, dy):
        a, b, partial, lead = self._take_cache(dy)
        k, i, j = self.weight.shape
        g = self._compute_grad(dy).reshape(-1, k)
        w = self._compute(self.weight)
        dx1 = (g[:, None, :] @ partial)[:, 0]  # Σ_k dy_nk W_k x2_n
        q = (g @ w.reshape(k, i * j)).reshape(-1, i, j)  # Q_n = Σ_k dy_nk W_k
        dx2 = (a[:, None, :] @ q)[:, 0]  # Q_nᵀ x1_n
        self.weight.accumulate((g.T @ (a[:, :, None] * b[:, None, :]).reshape(-1, i * j)).reshape(k, i, j), owned=True)
        if self.bias is not None:
            self.bias.accumulate(g.sum(0), owned=True)
        return dx1.reshape(*lead, i), dx2.reshape(*lead, j)

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
