"""Layer.backward_parameters: the parameter gradients of backward, bit for
bit, without the input gradient that the outermost model of a training step
does not need (Dense and Conv skip computing it; Sequential and Checkpoint
hand the request to their first layer; every other layer runs its backward
and drops dx)."""

import numpy as np
import pytest

import lamina as lm
from lamina import ops
from lamina.errors import CacheError


def _models():
    return {
        "mlp": (lambda: lm.Sequential(lm.Dense(7, 5), lm.ReLU(), lm.Dense(5, 3)), (4, 7)),
        "dense_act": (lambda: lm.Sequential(lm.Dense(7, 5, activation="gelu"), lm.Dense(5, 3)), (4, 7)),
        "cnn": (lambda: lm.Sequential(lm.Conv2D(2, 4, 3, padding=1), lm.BatchNorm2d(4), lm.ReLU(), lm.MaxPool2D(2),
                                      lm.Flatten(), lm.Dense(4 * 3 * 3, 3)), (2, 2, 6, 6)),
        "conv1d": (lambda: lm.Sequential(lm.Conv1D(3, 4, 3, stride=2), lm.Flatten(), lm.Dense(4 * 4, 3)), (2, 3, 9)),
        "relu_first": (lambda: lm.Sequential(lm.ReLU(), lm.Dense(7, 3)), (4, 7)),
        "nested": (lambda: lm.Sequential(lm.Sequential(lm.Dense(7, 5), lm.Tanh()), lm.Dense(5, 3)), (4, 7)),
        "checkpointed": (lambda: lm.Sequential(lm.Dense(7, 6), lm.ReLU(), lm.Dense(6, 6), lm.Dropout(0.3),
                                               lm.Dense(6, 3), checkpoint_segments=2), (4, 7)),
        "checkpoint_layer": (lambda: lm.Sequential(lm.Checkpoint(lm.Sequential(lm.Dense(7, 5), lm.ReLU())),
                                                   lm.Dense(5, 3)), (4, 7)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_parameter_gradients_equal_those_of_backward(name):
    make, shape = _models()[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = None
    grads = []
    for method in ("backward", "backward_parameters"):
        lm.manual_seed(0)
        model = make()
        lm.manual_seed(1)  # the same dropout masks in both runs
        y = model(x)
        dy = rng.standard_normal(y.shape).astype(np.float32) if dy is None else dy
        out = getattr(model, method)(dy)
        assert (out is None) == (method == "backward_parameters")
        grads.append({n: p.grad.copy() for n, p in model.named_parameters()})
        assert not any(m.has_cache() for m in model.modules())  # caches consumed either way
        with pytest.raises(CacheError):
            model.backward(dy)
    for n in grads[0]:
        np.testing.assert_array_equal(grads[1][n], grads[0][n], err_msg=n)


def test_dense_and_conv_skip_the_input_gradient(monkeypatch):
    asked = []
    def spy(kind, fn):
        def wrapper(*args, need_dx=True, **kwargs):
            asked.append((kind, need_dx))
            return fn(*args, need_dx=need_dx, **kwargs)

        return wrapper

    monkeypatch.setattr(ops, "linear_backward", spy("dense", ops.linear_backward))
    for name in ("conv2d_backward", "conv2d_backward_col_free"):  # im2col, or direct / implicit GEMM
        monkeypatch.setattr(ops, name, spy("conv", getattr(ops, name)))
    model = lm.Sequential(lm.Conv2D(1, 2, 3), lm.Flatten(), lm.Dense(2 * 3 * 3, 4), lm.ReLU(), lm.Dense(4, 2))
    y = model(np.ones((1, 1, 5, 5), np.float32))
    model.backward_parameters(np.ones_like(y))
    assert asked == [("dense", True), ("dense", True), ("conv", False)]  # only the first layer skips dx


def test_a_layer_with_only_backward_gets_the_default():
    class Double(lm.Layer):
        def forward(self, x):
            self._save(None, out=x)
            return 2 * x

        def backward(self, dy):
            self._take_cache(dy)
            return 2 * dy

    layer = Double()
    layer(np.ones(3, np.float32))
    assert layer.backward_parameters(np.ones(3, np.float32)) is None
    assert not layer.has_cache()
