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


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04), (1.0, 2.0, 1.5, 2.0),
                                          (0.0, 1.0, 2.0, 3.0)])
def test_trunc_normal_matches_the_truncated_distribution(torch, mean, std, a, b):
    """Both sampling branches (mass above and below 30%): bounds, and mean and
    std against PyTorch's draw of the same distribution."""
    w = np.empty((400, 250), dtype=np.float32)
    init.trunc_normal_(w, mean, std, a, b)
    assert w.min() >= np.float32(a) and w.max() <= np.float32(b)
    t = torch.nn.init.trunc_normal_(torch.empty(400, 250, dtype=torch.float64), mean, std, a, b).numpy()
    width = b - a
    assert abs(w.mean() - t.mean()) < 0.01 * width
    assert w.std() == pytest.approx(t.std(), rel=0.02)


def test_trunc_normal_is_seeded():
    lm.manual_seed(3)
    a = init.trunc_normal_(np.empty((5, 7)), std=0.02, a=-0.04, b=0.04)
    lm.manual_seed(3)
    b = init.trunc_normal_(np.empty((5, 7)), std=0.02, a=-0.04, b=0.04)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(6, 6), (5, 9), (9, 5), (8, 3, 3, 3), (1, 4)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    w = init.orthogonal_(np.empty(shape), gain=1.5)
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, 2.25 * np.eye(gram.shape[0]), atol=1e-12)


def test_orthogonal_keeps_the_rnn_recurrence_norm():
    """The use case: an orthogonal recurrent weight neither grows nor shrinks a state."""
    layer = lm.RNN(4, 16)
    init.orthogonal_(layer.weight_hh_l0)
    h = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    assert np.linalg.norm(layer.weight_hh_l0.data @ h) == pytest.approx(np.linalg.norm(h), rel=1e-5)


def test_eye_and_dirac_match_torch(torch):
    for shape in [(3, 5), (5, 3), (4, 4)]:
        np.testing.assert_array_equal(init.eye_(np.empty(shape)), torch.nn.init.eye_(torch.empty(shape)).numpy())
    for shape, groups in [((4, 4, 3, 3), 1), ((6, 2, 3), 3), ((3, 5, 2, 2), 1), ((4, 2, 3, 3, 3), 2), ((8, 3, 1, 1), 2)]:
        ours = init.dirac_(np.empty(shape), groups)
        np.testing.assert_array_equal(ours, torch.nn.init.dirac_(torch.empty(shape), groups).numpy())


def test_dirac_conv_is_the_identity():
    conv = lm.Conv2D(3, 3, 3, padding=1, bias=False)
    init.dirac_(conv.weight)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(conv(x), x, rtol=1e-6, atol=1e-6)


def test_new_initialiser_errors():
    with pytest.raises(ValueError, match=r"trunc_normal_: expected a < b"):
        init.trunc_normal_(np.empty(3), a=1.0, b=-1.0)
    with pytest.raises(ValueError, match=r"trunc_normal_: expected std > 0"):
        init.trunc_normal_(np.empty(3), std=0.0)
    with pytest.raises(ValueError, match=r"orthogonal_: expected at least 2 dimensions, received shape \(3,\)"):
        init.orthogonal_(np.empty(3))
    with pytest.raises(ValueError, match=r"eye_: expected a 2-d target"):
        init.eye_(np.empty((2, 2, 2)))
    with pytest.raises(ValueError, match=r"dirac_: expected a 3-, 4- or 5-d"):
        init.dirac_(np.empty((2, 2)))
    with pytest.raises(ValueError, match=r"dirac_: expected dimension 0 \(3\) divisible by groups \(2\)"):
        init.dirac_(np.empty((3, 2, 3, 3)), groups=2)
