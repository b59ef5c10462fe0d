"""Layers of two inputs: PairwiseDistance, CosineSimilarity and Bilinear
against PyTorch (forward, both input gradients, parameter gradients), in
float64 by finite differences, with broadcasting, and their errors."""

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina.testing import gradcheck

PAIRS = [((5, 4), (5, 4)), ((4,), (4,)), ((1, 7), (1, 7)), ((3, 1, 4), (5, 4)), ((5, 4), (1, 4))]


def _parity(torch, xp, layer, tlayer, a, b, rtol=2e-5, atol=1e-6):
    """Float32 forward and (dx1, dx2) against PyTorch; returns PyTorch's layer."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ta, tb = (torch.from_numpy(v.copy()).requires_grad_(True) for v in (a32, b32))
    ty = tlayer(ta, tb)
    dy = np.random.default_rng(4).standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    y = layer(xp.asarray(a32), xp.asarray(b32))
    d1, d2 = layer.backward(xp.asarray(dy))
    assert y.dtype == d1.dtype == d2.dtype == np.float32 and d1.shape == a.shape and d2.shape == b.shape
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(to_numpy(d1), ta.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(to_numpy(d2), tb.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, np.inf])
@pytest.mark.parametrize("shapes", PAIRS, ids=str)
def test_pairwise_distance(torch, xp, p, shapes):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    for keepdim in (False, True):
        _parity(torch, xp, lm.PairwiseDistance(p, keepdim=keepdim), torch.nn.PairwiseDistance(p, keepdim=keepdim), a, b)
        assert gradcheck(lm.PairwiseDistance(p, keepdim=keepdim), a, b)


@pytest.mark.parametrize("dim,shapes", [(1, ((5, 4), (5, 4))), (0, ((4,), (4,))), (-1, ((3, 1, 4), (5, 4))),
                                        (1, ((2, 3, 4), (2, 3, 1))), (1, ((1, 1), (1, 1)))], ids=str)
def test_cosine_similarity(torch, xp, dim, shapes):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    _parity(torch, xp, lm.CosineSimilarity(dim), torch.nn.CosineSimilarity(dim), a, b)
    assert gradcheck(lm.CosineSimilarity(dim), a, b)


def test_cosine_similarity_below_eps_is_the_derivative_of_what_it_computes(torch):
    """A norm below eps is replaced by eps: lamina's gradient is that
    function's (finite differences agree); PyTorch passes its gradient
    through the clamp. Above eps the two agree."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)) * 1e-9, rng.standard_normal((3, 4))
    layer = lm.CosineSimilarity(eps=1e-6)
    assert gradcheck(layer, a, b, eps=1e-13)
    layer(a, b)
    d1, _ = layer.backward(np.ones(3))
    v = b / np.linalg.norm(b, axis=1, keepdims=True)
    np.testing.assert_allclose(d1, v / 1e-6, rtol=1e-10)  # x1 / eps: its gradient is v / eps
    ta = torch.tensor(a, requires_grad=True)
    torch.nn.CosineSimilarity(eps=1e-6)(ta, torch.tensor(b)).sum().backward()
    assert not np.allclose(ta.grad.numpy(), d1)


@pytest.mark.parametrize("shapes", [((5, 3), (5, 4)), ((3,), (4,)), ((2, 3, 3), (2, 3, 4)), ((1, 3), (1, 4))], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_bilinear_matches_pytorch(torch, xp, shapes, bias):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    tlayer = torch.nn.Bilinear(3, 4, 6, bias=bias)
    layer = lm.Bilinear(3, 4, 6, bias=bias)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tlayer.state_dict().items()})
    assert layer.weight.shape == (6, 3, 4)
    layer.to("cpu" if xp is np else "cuda")
    _parity(torch, xp, layer, tlayer, a, b)
    for name, tp in tlayer.named_parameters():
        np.testing.assert_allclose(to_numpy(getattr(layer, name).grad), tp.grad.numpy(), rtol=2e-5, atol=1e-6)
    assert gradcheck(lm.Bilinear(3, 4, 6, bias=bias), a, b)


def test_bilinear_initialisation_and_training():
    """PyTorch's ±1/√in1 uniform initialisation, and a Bilinear layer fits
    y = x1ᵀ A x2 by SGD."""
    lm.manual_seed(0)
    layer = lm.Bilinear(16, 5, 300)
    bound = 1 / np.sqrt(16)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.95 * bound
    assert layer.weight.data.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    rng = np.random.default_rng(0)
    target = rng.standard_normal((1, 3, 4)).astype(np.float32)
    model = lm.Bilinear(3, 4, 1)
    opt = lm.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = lm.MSELoss()
    for step in range(300):
        x1, x2 = rng.standard_normal((32, 3)).astype(np.float32), rng.standard_normal((32, 4)).astype(np.float32)
        y = np.einsum("ni,kij,nj->nk", x1, target, x2)
        opt.zero_grad()
        loss = loss_fn(model(x1, x2), y)
        model.backward(loss_fn.backward())
        opt.step()
    assert loss < 1e-3
    np.testing.assert_allclose(model.weight.data, target, atol=0.02)


def test_errors_name_the_layer_and_keep_it_unchanged():
    a = np.zeros((4, 3), np.float32)
    for layer, args, error, match in [
        (lm.PairwiseDistance(), (a, np.zeros((4, 2), np.float32)), lm.ShapeError,
         r"PairwiseDistance\(p=2.0, eps=1e-06\): expected x1 and x2 of shapes that broadcast together, received \(4, 3\) "
         r"and \(4, 2\)"),
        (lm.PairwiseDistance(), (a, a.astype(np.float64)), lm.DTypeError,
         r"expected x1 and x2 of one dtype, received float32 and float64"),
        (lm.CosineSimilarity(dim=2), (a, a), lm.ShapeError,
         r"CosineSimilarity\(dim=2, eps=1e-08\): expected inputs with dimension 2, received shapes \(4, 3\) and \(4, 3\)"),
        (lm.CosineSimilarity(), (a, a.astype(np.int32)), lm.DTypeError, r"expected a floating-point x2, received dtype int32"),
        (lm.Bilinear(3, 4, 2), (a, np.zeros((4, 3), np.float32)), lm.ShapeError, r"Bilinear\(.*\): .*in2_features"),
        (lm.Bilinear(3, 4, 2), (a, np.zeros((5, 4), np.float32)), lm.ShapeError,
         r"expected x1 and x2 with the same leading axes, received shapes \(4, 3\) and \(5, 4\)"),
        (lm.Bilinear(3, 4, 2), (a.astype(np.float64), np.zeros((4, 4))), lm.DTypeError, r"Bilinear\(.*float64"),
    ]:
        before = {k: v.copy() for k, v in layer.state_dict().items()}
        with pytest.raises(error, match=match):
            layer(*args)
        with pytest.raises(lm.CacheError):
            layer.backward(np.zeros(4, np.float32))
        for k, v in layer.state_dict().items():
            np.testing.assert_array_equal(v, before[k])
    for make, match in [(lambda: lm.PairwiseDistance(p=0), r"PairwiseDistance: expected a norm degree p > 0, received 0"),
                        (lambda: lm.CosineSimilarity(eps=0), r"CosineSimilarity: expected eps > 0, received 0"),
                        (lambda: lm.Bilinear(3, 0, 2), r"Bilinear: expected in2_features to be a positive int, received 0")]:
        with pytest.raises(ValueError, match=match):
            make()


def test_a_siamese_pair_through_pairwise_distance_and_a_shared_encoder():
    """Contrastive learning in the explicit style: one encoder over both
    halves of a batch, PairwiseDistance between them, and the two distance
    gradients stacked back in the batch's order."""
    lm.manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = lm.Sequential(lm.Dense(6, 16), lm.Tanh(), lm.Dense(16, 3))
    dist = lm.PairwiseDistance()
    opt = lm.optim.Adam(encoder.parameters(), lr=1e-2)
    centers = rng.standard_normal((2, 6)) * 2
    first = None
    for _ in range(150):
        cls = rng.integers(0, 2, (2, 32))
        x = np.concatenate([centers[c] + 0.3 * rng.standard_normal((32, 6)) for c in cls]).astype(np.float32)
        same = (cls[0] == cls[1]).astype(np.float32)
        e = encoder(x)
        d = dist(e[:32], e[32:])
        # contrastive loss: d² for similar pairs, max(0, 2 - d)² for the others (mean over the batch)
        hinge = np.maximum(0, 2 - d)
        loss = float((same * d**2 + (1 - same) * hinge**2).mean())
        first = loss if first is None else first
        dd = (2 * same * d - 2 * (1 - same) * hinge) / 32
        d1, d2 = dist.backward(dd.astype(np.float32))
        opt.zero_grad()
        encoder.backward(np.concatenate([d1, d2]))
        opt.step()
    assert loss < 0.1 * first


def test_inputs_on_two_devices_are_a_device_error(xp):
    if xp is np:
        pytest.skip("needs CuPy for the second device")
    with pytest.raises(lm.DeviceError, match=r"PairwiseDistance\(.*\): expected x2 on cuda.* \(x1's device\), received it "
                                             r"on cpu"):
        lm.PairwiseDistance()(xp.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
