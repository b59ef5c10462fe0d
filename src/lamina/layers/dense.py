"""Fully connected layer."""

import math

import numpy as np

from .. import init, ops
from ..module import Layer, Parameter


class Dense(Layer):
    """Affine map y = x Wᵀ + b (PyTorch's ``nn.Linear``).

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        bias: learn an additive bias b.
        dtype: parameter dtype (float32 by default).

    Shape:
        x: (*, in_features)  →  y: (*, out_features); leading dimensions are
        flattened into one batch dimension M internally.

    Parameters:
        weight: (out_features, in_features), initialised U(-1/√in, 1/√in)
            (kaiming_uniform with a=√5, as PyTorch); bias: (out_features,) likewise.

    Backward, with x and dy flattened to (M, in) and (M, out):
        dx = dy W          (M, in)
        dW += dyᵀ x        (out, in)
        db += Σ_m dy[m]    (out,)
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"Dense: expected {name} to be a positive int, received {v!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty((self.out_features,), dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        x = self._check_input(x, min_ndim=1, dim=[(-1, self.in_features, "in_features")])
        x2 = x.reshape(-1, self.in_features)
        y2 = ops.linear_forward(x2, self._compute(self.weight), None if self.bias is None else self._compute(self.bias))
        y = y2.reshape(*x.shape[:-1], self.out_features)
        self._save(x2, out=y)  # x2: (M, in_features)
        return y

    def backward(self, dy):
        x2 = self._take_cache(dy)
        dy2 = self._compute_grad(dy).reshape(-1, self.out_features)
        dx2, dweight, dbias = ops.linear_backward(dy2, x2, self._compute(self.weight))
        self.weight.accumulate(dweight)
        if self.bias is not None:
            self.bias.accumulate(dbias)
        return dx2.reshape(*dy.shape[:-1], self.in_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
