"""gradcheck must fail loudly on a wrong backward, not only pass on right ones."""

import numpy as np
import pytest

import lamina as lm
from lamina.testing import GradcheckError, gradcheck


class WrongTanh(lm.Layer):
    """Backward forgets the square: dx = dy (1 - y)."""

    def forward(self, x):
        y = np.tanh(x)
        self._save(y, out=y)
        return y

    def backward(self, dy):
        return dy * (1 - self._take_cache(dy))


class WrongBiasDense(lm.Dense):
    """Correct dx and dW, but the bias gradient is doubled."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.bias.grad *= 2
        return dx


def test_wrong_input_gradient_is_caught():
    with pytest.raises(GradcheckError, match=r"WrongTanh\(\): d/dinput 0\[0, 0\]: backward gives"):
        gradcheck(WrongTanh(), np.full((2, 3), 0.5))


def test_wrong_parameter_gradient_is_caught_and_named():
    with pytest.raises(GradcheckError, match="parameter 'bias'"):
        gradcheck(WrongBiasDense(3, 2), np.random.default_rng(0).standard_normal((4, 3)))


def test_gradcheck_leaves_caller_objects_alone():
    layer = lm.Dense(3, 2)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    w, xc = layer.weight.data.copy(), x.copy()
    assert gradcheck(layer, x)
    assert layer.weight.dtype == np.float32 and layer.weight.grad is None
    np.testing.assert_array_equal(layer.weight.data, w)
    np.testing.assert_array_equal(x, xc)


def test_gradcheck_subsamples_large_arrays():
    assert gradcheck(lm.Dense(40, 30), np.random.default_rng(0).standard_normal((8, 40)), max_elements=20)


def test_gradcheck_rejects_non_layers():
    with pytest.raises(TypeError, match="expected a Layer or a Loss"):
        gradcheck(lambda x: x, np.ones(3))
