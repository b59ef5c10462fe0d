"""Power-average pooling on every p, alpha dropout, and the errors of the
classic CNN layers (LocalResponseNorm, LPPool, ChannelShuffle); their
PyTorch parity and gradcheck on odd shapes run in test_layers's contract."""

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina.testing import gradcheck


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0, 4.0])
@pytest.mark.parametrize("nd,kernel,stride,ceil", [(2, 2, None, False), (2, (3, 2), (2, 1), True), (1, 3, 2, True),
                                                   (1, 2, 1, False)])
def test_lp_pool_matches_pytorch_for_any_p(torch, xp, p, nd, kernel, stride, ceil):
    """Positive inputs (a power pooling follows a ReLU or a softplus): any
    p, overlapping and ceil_mode windows."""
    rng = np.random.default_rng(0)
    shape = (2, 3, 5, 6) if nd == 2 else (2, 3, 7)
    x = np.abs(rng.standard_normal(shape)) + 0.1
    layer = (lm.LPPool2D if nd == 2 else lm.LPPool1D)(p, kernel, stride=stride, ceil_mode=ceil)
    tlayer = (torch.nn.LPPool2d if nd == 2 else torch.nn.LPPool1d)(p, kernel, stride=stride, ceil_mode=ceil)
    tx = torch.tensor(x.astype(np.float32), requires_grad=True)
    ty = tlayer(tx)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    y = layer(xp.asarray(x.astype(np.float32)))
    dx = layer.backward(xp.asarray(dy))
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=2e-4, atol=1e-5)
    assert gradcheck(layer, x)


def test_lp_pool_gives_a_zero_window_a_zero_gradient_as_pytorch(torch):
    """After a ReLU whole windows are 0: s^(1/p) has an infinite slope
    there, and PyTorch's sign(s)·relu(|s|) makes the gradient 0, not NaN."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, :2, :2] = [[1.0, 2.0], [0.0, 2.0]]
    layer, tlayer = lm.LPPool2D(2, 2), torch.nn.LPPool2d(2, 2)
    tx = torch.tensor(x, requires_grad=True)
    tlayer(tx).sum().backward()
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y[0, 0, 0, 0] == pytest.approx(3.0) and (y.ravel()[1:] == 0).all()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6)
    assert np.isfinite(dx).all()


@pytest.mark.parametrize("cls", ["AlphaDropout", "FeatureAlphaDropout"])
def test_alpha_dropout_keeps_selu_statistics_and_pytorchs_constants(torch, xp, cls):
    """On a standard normal input, alpha dropout keeps mean 0 and variance 1
    (what SELU networks need); a dropped unit takes PyTorch's value, a kept
    one PyTorch's affine map, and dx = a m dy."""
    p = 0.3
    layer = getattr(lm, cls)(p)
    x = np.random.default_rng(0).standard_normal((64, 32, 8, 8)).astype(np.float32)
    lm.manual_seed(0)
    y = to_numpy(layer(xp.asarray(x)))
    assert abs(y.mean()) < 0.02 and abs(y.var() - 1) < 0.03
    zeros = torch.zeros(16, 8, 4, 4)
    tvalues = np.unique(np.round(getattr(torch.nn, cls)(p).train()(zeros).numpy(), 6))
    layer(xp.zeros((16, 8, 4, 4), np.float32))
    values = np.unique(np.round(to_numpy(layer.backward(xp.ones((16, 8, 4, 4), np.float32))), 6))
    a = 1 / np.sqrt((1.7580993408473766**2 * p + 1) * (1 - p))
    np.testing.assert_allclose(values, [0.0, a], rtol=1e-5)  # dx / dy: 0 where dropped, a where kept
    lm.manual_seed(1)
    y0 = to_numpy(layer(xp.zeros((16, 8, 4, 4), np.float32)))
    np.testing.assert_allclose(np.unique(np.round(y0, 6)), tvalues, rtol=1e-5)  # α a (p - 1) dropped, α a p kept
    if cls == "FeatureAlphaDropout":  # one draw per (sample, channel)
        assert (y0 == y0[:, :, :1, :1]).all()
    layer.eval()
    np.testing.assert_array_equal(to_numpy(layer(xp.asarray(x))), x)  # eval: the identity


def test_alpha_dropout_gradcheck_and_replay():
    """gradcheck replays the generator on every evaluation, so the mask is
    fixed and the layer is affine in x."""
    x = np.random.default_rng(1).standard_normal((4, 3, 5))
    assert gradcheck(lm.AlphaDropout(0.4), x)
    assert gradcheck(lm.FeatureAlphaDropout(0.4), x)
    layer = lm.AlphaDropout(0.5)
    state = lm.get_rng_state()
    y1 = layer(x)
    lm.set_rng_state(state)
    np.testing.assert_array_equal(layer(x), y1)


def test_errors_name_the_layer():
    for layer, x, match in [
        (lm.LocalResponseNorm(3), np.zeros((2, 4), np.float32),
         r"LocalResponseNorm\(3, alpha=0.0001, beta=0.75, k=1.0\): expected .*3"),
        (lm.ChannelShuffle(4), np.zeros((2, 6, 3), np.float32),
         r"ChannelShuffle\(groups=4\): expected an input \(N, C, \*\) with C divisible by 4, received shape \(2, 6, 3\)"),
        (lm.LPPool2D(2, 3), np.zeros((1, 1, 2, 5), np.float32),
         r"LPPool2D\(norm_type=2.0, kernel_size=\(3, 3\), stride=\(3, 3\)\): expected an input at least as large as the "
         r"kernel"),
        (lm.FeatureAlphaDropout(0.2), np.zeros(5, np.float32), r"FeatureAlphaDropout\(p=0.2\): expected an input \(N, C, \*\)"),
    ]:
        with pytest.raises(lm.ShapeError, match=match):
            layer(x)
        with pytest.raises(lm.CacheError):
            layer.backward(np.zeros(1, np.float32))
    for make, match in [(lambda: lm.LPPool1D(0, 2), r"LPPool1D: expected a finite norm_type > 0, received 0"),
                        (lambda: lm.LPPool2D(np.inf, 2), r"LPPool2D: expected a finite norm_type > 0, received inf"),
                        (lambda: lm.ChannelShuffle(0), r"ChannelShuffle: expected groups as a positive int, received 0"),
                        (lambda: lm.LocalResponseNorm(0), r"LocalResponseNorm: expected size to be a positive int"),
                        (lambda: lm.AlphaDropout(1.0), r"AlphaDropout: expected p in \[0, 1\), received 1.0")]:
        with pytest.raises(ValueError, match=match):
            make()
