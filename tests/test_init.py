"""Initialisers: PyTorch's formulas, checked on the empirical distribution."""

import math

import numpy as np
import pytest

import lamina as lm
from lamina import init


def test_calculate_gain_matches_torch(torch):
    for name, param in [("linear", None), ("relu", None), ("tanh", None), ("leaky_relu", 0.2), ("leaky_relu", None),
                        ("sigmoid", None), ("selu", None), ("conv2d", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


@pytest.mark.parametrize("shape", [(300, 200), (64, 16, 3, 3)])
def test_bounds_and_stds_match_torch_formulas(torch, shape):
    w = np.empty(shape, dtype=np.float32)
    fan_in, fan_out = init.fan_in_and_fan_out(shape)
    t = torch.empty(shape)
    assert (fan_in, fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(t)

    init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    init.xavier_normal_(w)
    assert w.std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.03)
    init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.03)
    assert abs(w.mean()) < 0.01


def test_dense_default_matches_torch_linear_bounds(torch):
    layer = lm.Dense(500, 400)
    bound = 1 / math.sqrt(500)
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound
    tl = torch.nn.Linear(500, 400)
    assert layer.weight.data.std() == pytest.approx(tl.weight.detach().std().item(), rel=0.03)


def test_initialisers_modify_parameters_in_place_and_respect_dtype():
    p = lm.Parameter(np.zeros((3, 4), dtype=np.float64))
    data = p.data
    init.uniform_(p, -1, 1)
    assert p.data is data and p.dtype == np.float64 and np.abs(p.data).max() > 0
    init.constant_(p, 3.0)
    np.testing.assert_array_equal(p.data, 3.0)
    init.zeros_(p)
    np.testing.assert_array_equal(p.data, 0.0)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(np.zeros(3))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(np.zeros((3, 3)), mode="fan_avg")
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
