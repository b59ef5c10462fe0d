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
        activation: None, or ``"relu"``, ``"gelu"`` or ``"gelu_tanh"``
            applied to the result: y = act(x Wᵀ + b).  The same as a separate
            activation layer after this one, but on CuPy arrays with lamina's
            kernels (:func:`lamina.backend.use_kernels`) the bias and the
            activation run in the GEMM's epilogue, and backward computes
            act'(z) and the bias gradient in one fused kernel.

    Shape:
        x: (*, in_features)  →  y: (*, out_features); leading dimensions are
        flattened into one batch dimension M internally.

    Parameters:
        weight: (out_features, in_features), initialised U(-1/√in, 1/√in)
            (kaiming_uniform with a=√5, as PyTorch); bias: (out_features,) likewise.

    Backward, with x and dy flattened to (M, in) and (M, out), and
    dz = dy ⊙ act'(z) for z = x Wᵀ + b (dz = dy without an activation):
        dx = dz W          (M, in)
        dW += dzᵀ x        (out, in)
        db += Σ_m dz[m]    (out,)
    """

    ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, activation=None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"Dense: expected {name} to be a positive int, received {v!r}")
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"Dense: expected activation in {self.ACTIVATIONS}, received {activation!r}")
        self.activation = activation
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
        weight = self._compute(self.weight)
        bias = None if self.bias is None else self._compute(self.bias)
        if self.activation is None:
            y2, saved = ops.linear_forward(x2, weight, bias), (x2,)  # x2: (M, in_features)
        else:
            y2, z2 = ops.linear_act_forward(x2, weight, bias, self.activation)
            # x2: (M, in_features); y2 for ReLU or z2 (pre-activation) for GELU: (M, out_features)
            saved = (x2, y2 if z2 is None else z2)
        y = y2.reshape(*x.shape[:-1], self.out_features)
        self._save(*saved, out=y)
        return y

    def backward(self, dy):
        return self._backward(dy, need_dx=True)

    def backward_parameters(self, dy):
        """dW and db only: skips dx = dy W (:meth:`Layer.backward_parameters`)."""
        self._backward(dy, need_dx=False)

    def _backward(self, dy, need_dx):
        cache = self._take_cache(dy)
        dy2 = self._compute_grad(dy).reshape(-1, self.out_features)
        weight = self._compute(self.weight)
        if self.activation is None:
            dx2, dweight, dbias = ops.linear_backward(dy2, cache, weight, need_dx=need_dx)
        else:
            x2, z2 = cache
            dz2, dbias = ops.bias_act_backward(dy2, z2, self.activation, need_bias=self.bias is not None)
            dx2, dweight, _ = ops.linear_backward(dz2, x2, weight, need_dx=need_dx, need_bias=False)
        self.weight.accumulate(dweight, owned=True)
        if self.bias is not None:
            self.bias.accumulate(dbias, owned=True)
        return None if dx2 is None else dx2.reshape(*dy.shape[:-1], self.in_features)

    def extra_repr(self):
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return s if self.activation is None else s + f", activation={self.activation!r}"
