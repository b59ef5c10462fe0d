"""Losses: gradcheck, PyTorch parity, numerical edges, errors."""

import warnings

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina.testing import gradcheck

XENT_SHAPES = [(1, 3), (4, 10), (7, 2), (5, 17), (2, 1), (33, 5)]


def _logits_labels(shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * scale, rng.integers(0, shape[1], size=shape[0])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_xent_gradcheck(reduction, smoothing):
    for i, shape in enumerate(XENT_SHAPES):
        x, y = _logits_labels(shape, seed=i)
        assert gradcheck(lm.SoftmaxCrossEntropy(reduction, smoothing), x, y)
    strided = np.random.default_rng(9).standard_normal((6, 14))[:, ::2]
    assert gradcheck(lm.SoftmaxCrossEntropy(reduction, smoothing), strided, np.arange(6) % 7)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_softmax_xent_matches_torch(torch, xp, reduction, smoothing):
    for i, shape in enumerate(XENT_SHAPES):
        x, y = _logits_labels(shape, seed=i, scale=3.0)
        x = x.astype(np.float32)
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        tloss = torch.nn.functional.cross_entropy(tx, torch.from_numpy(y), reduction=reduction, label_smoothing=smoothing)
        tloss.backward()
        fn = lm.SoftmaxCrossEntropy(reduction, smoothing)
        loss = fn(xp.asarray(x), xp.asarray(y))
        dx = fn.backward()
        assert isinstance(loss, float)
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
        assert dx.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent_extreme_logits(torch, xp, dtype):
    cases = [
        np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]]),
        np.full((4, 10), 1e8),
    ]
    for x in cases:
        y = np.arange(len(x)) % x.shape[1]
        fn = lm.SoftmaxCrossEntropy()
        loss = fn(xp.asarray(x.astype(dtype)), xp.asarray(y))
        dx = to_numpy(fn.backward())
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        tloss = torch.nn.functional.cross_entropy(tx, torch.from_numpy(y))
        tloss.backward()
        assert np.isfinite(loss) and np.isfinite(dx).all()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-6)
    # all-equal logits: the loss is exactly log C, whatever their size
    fn = lm.SoftmaxCrossEntropy()
    np.testing.assert_allclose(fn(xp.full((3, 10), 1e8, dtype=dtype), xp.zeros(3, dtype=np.int64)), np.log(10), rtol=1e-6)


def test_softmax_xent_compiled_kernel_matches_reference():
    from lamina import ops
    from lamina.ops import reference

    for dtype in (np.float32, np.float64):
        for n, c in [(1, 1), (3, 7), (64, 10), (129, 1000)]:
            rng = np.random.default_rng(n * c)
            x = (rng.standard_normal((n, c)) * 5).astype(dtype)
            y = rng.integers(0, c, size=n)
            loss, grad = ops.softmax_xent(x, y, 0.1, 0.5, True)
            rloss, rgrad = reference.softmax_xent(np, x.astype(np.float64), y, 0.1, 0.5, True)
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(loss, rloss, rtol=tol, atol=tol)
            np.testing.assert_allclose(grad, rgrad, rtol=tol, atol=tol)
            loss_only, none = ops.softmax_xent(x, y, 0.1, 0.5, False)
            assert none is None
            np.testing.assert_array_equal(loss_only, loss)


def test_softmax_xent_errors():
    fn = lm.SoftmaxCrossEntropy()
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"SoftmaxCrossEntropy.*target of shape \(4,\).*received \(5,\)"):
        fn(x, np.zeros(5, dtype=np.int64))
    with pytest.raises(lm.ShapeError, match=r"integer class indices of shape \(4,\) or class probabilities.*float32"):
        fn(x, np.zeros(4, dtype=np.float32))  # float labels: neither indices nor probabilities
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\], received 3"):
        fn(x, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="received -1"):
        fn(x, np.array([0, -1, 2, 1]))
    with pytest.raises(lm.ShapeError, match=r"logits of shape \(N, C\) or \(N, C, d1, ...\), received \(3,\)"):
        fn(np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.int64))
    with pytest.raises(lm.ShapeError, match=r"target of shape \(2, 4\) to match input \(2, 3, 4\), received \(2,\)"):
        fn(np.zeros((2, 3, 4), dtype=np.float32), np.zeros(2, dtype=np.int64))
    with pytest.raises(lm.CacheError):
        fn.backward()  # nothing above was cached
    with pytest.raises(ValueError, match="reduction"):
        lm.SoftmaxCrossEntropy("avg")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_softmax_xent_per_position_with_ignored_targets_matches_torch(torch, xp, reduction, smoothing):
    """(N, C, d1, d2) logits, as a sequence or an image of predictions, with
    padding targets ignored: loss and gradient against PyTorch."""
    rng = np.random.default_rng(11)
    for shape in [(3, 5, 4, 2), (2, 7, 6), (1, 3)]:
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        y = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
        y.reshape(-1)[:: 3] = -100
        tx = torch.from_numpy(x).requires_grad_()
        tloss = torch.nn.functional.cross_entropy(tx, torch.from_numpy(y), reduction=reduction, label_smoothing=smoothing)
        tloss.backward()
        fn = lm.SoftmaxCrossEntropy(reduction, smoothing, ignore_index=-100)
        loss = fn(xp.asarray(x), xp.asarray(y))
        dx = to_numpy(fn.backward())
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-7)
        assert dx.shape == shape and dx.dtype == np.float32
        assert not np.moveaxis(dx, 1, -1).reshape(-1, shape[1])[y.reshape(-1) == -100].any()
        compute = fn.compute(xp.asarray(x), xp.asarray(y))  # on the device, no wait
        assert compute.shape == ()
        np.testing.assert_allclose(float(compute), tloss.item(), rtol=1e-5)  # (1, 3): all ignored, NaN on both sides


def test_softmax_xent_ignore_index_gradcheck_and_edges():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 5))
    y = np.array([[0, 3, -1, 2, -1], [1, -1, 1, 0, 3]])
    for reduction in ("mean", "sum"):
        assert gradcheck(lm.SoftmaxCrossEntropy(reduction, 0.1, ignore_index=-1), x, y)
    fn = lm.SoftmaxCrossEntropy(ignore_index=7)
    assert np.isnan(fn(np.zeros((2, 3), dtype=np.float32), np.array([7, 7])))  # nothing to average: NaN, as PyTorch
    ignored, plain = lm.SoftmaxCrossEntropy(ignore_index=-100), lm.SoftmaxCrossEntropy()
    logits, labels = rng.standard_normal((6, 4)).astype(np.float32), np.arange(6) % 4
    np.testing.assert_allclose(ignored(logits, labels), plain(logits, labels), rtol=1e-6)  # none ignored: the same
    np.testing.assert_allclose(ignored.backward(), plain.backward(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\], received -1"):
        ignored(logits, np.array([0, -1, 2, 1, 0, 0]))  # only -100 is ignored
    with pytest.raises(ValueError, match="ignore_index as an int or None, received 'pad'"):
        lm.SoftmaxCrossEntropy(ignore_index="pad")
    assert "ignore_index=-100" in repr(ignored)


@pytest.mark.parametrize("reduction,smoothing", [("mean", 0.0), ("mean", 0.2), ("sum", 0.1)])
def test_softmax_xent_class_weights_match_torch(torch, xp, reduction, smoothing):
    """Class weights (imbalanced classes), alone and with ignored targets and
    per-position logits: loss and gradient against PyTorch."""
    rng = np.random.default_rng(13)
    for shape, ignore in [((7, 5), None), ((3, 5, 4, 2), -100), ((1, 3), None), ((2, 6, 3), -100)]:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        y = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
        if ignore is not None:
            y.reshape(-1)[::4] = ignore
        w = (rng.random(shape[1]) + 0.1).astype(np.float32)
        w[0] = 0.0 if y.size > 1 else w[0]  # a class that does not count (alone it leaves nothing to average)
        tx = torch.from_numpy(x).requires_grad_()
        tloss = torch.nn.functional.cross_entropy(tx, torch.from_numpy(y), weight=torch.from_numpy(w),
                                                  reduction=reduction, label_smoothing=smoothing)
        tloss.backward()
        fn = lm.SoftmaxCrossEntropy(reduction, smoothing, ignore_index=ignore, weight=xp.asarray(w))
        loss = fn(xp.asarray(x), xp.asarray(y))
        dx = to_numpy(fn.backward())
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-7)
        assert dx.shape == shape and dx.dtype == np.float32
        np.testing.assert_allclose(float(fn.compute(xp.asarray(x), xp.asarray(y))), tloss.item(), rtol=1e-5)


def test_softmax_xent_class_weights_gradcheck_edges_and_errors():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 5))
    y = np.array([[0, 3, -1, 2, -1], [1, -1, 1, 0, 3]])
    w = [0.5, 2.0, 1.0, 3.0]  # a list is accepted, as a tensor would be
    for reduction in ("mean", "sum"):
        for smoothing in (0.0, 0.15):
            assert gradcheck(lm.SoftmaxCrossEntropy(reduction, smoothing, ignore_index=-1, weight=w), x, y)
    logits, labels = rng.standard_normal((6, 4)).astype(np.float32), np.arange(6) % 4
    ones, plain = lm.SoftmaxCrossEntropy(label_smoothing=0.1, weight=np.ones(4)), lm.SoftmaxCrossEntropy(label_smoothing=0.1)
    np.testing.assert_allclose(ones(logits, labels), plain(logits, labels), rtol=1e-6)  # unit weights: the plain loss
    np.testing.assert_allclose(ones.backward(), plain.backward(), rtol=1e-5, atol=1e-7)
    big = lm.SoftmaxCrossEntropy(label_smoothing=0.1, weight=[1.0, 2.0])
    for row in ([1e4, -1e4], [1e8, 1e8]):  # extreme logits stay finite
        assert np.isfinite(big(np.array([row], dtype=np.float32), np.array([1])))
        assert np.isfinite(big.backward()).all()
    zero = lm.SoftmaxCrossEntropy(weight=[0.0, 1.0])
    assert np.isnan(zero(logits[:2, :2], np.array([0, 0])))  # no weight to average over: NaN, as PyTorch
    assert not zero.backward().any()  # PyTorch's gradient is NaN there; lamina's zero, as with every target ignored
    with pytest.raises(lm.ShapeError, match=r"SoftmaxCrossEntropy\(.*weight=\(3 classes\)\): expected input with 3 "
                                            r"classes \(the size of weight\), received input of shape \(6, 4\)"):
        lm.SoftmaxCrossEntropy(weight=[1, 2, 3])(logits, labels)
    with pytest.raises(ValueError, match="weight as a 1-d array of C class weights"):
        lm.SoftmaxCrossEntropy(weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="finite, non-negative class weights"):
        lm.SoftmaxCrossEntropy(weight=[1.0, -1.0])


def _soft_targets(rng, shape):
    """Class probabilities of the logits' shape (N, C, d...): each row a distribution, some with exact zeros."""
    t = rng.dirichlet(np.full(shape[1], 0.7), size=(shape[0], *shape[2:]))
    t[rng.random(t.shape) < 0.2] = 0.0
    t /= np.maximum(t.sum(axis=-1, keepdims=True), 1e-12)
    return np.moveaxis(t, -1, 1)


SOFT_SHAPES = [(1, 3), (4, 10), (7, 2), (2, 1), (3, 4, 5), (2, 3, 2, 3)]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_softmax_xent_probability_targets_match_torch(torch, xp, reduction, smoothing, weighted):
    rng = np.random.default_rng(11)
    for shape in SOFT_SHAPES:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        t = _soft_targets(rng, shape).astype(np.float32)
        w = rng.uniform(0.2, 3.0, shape[1]) if weighted else None
        fn = lm.SoftmaxCrossEntropy(reduction, smoothing, weight=w)
        loss = fn(xp.asarray(x), xp.asarray(t))
        grad = fn.backward()
        tx = torch.from_numpy(x).requires_grad_(True)
        tfn = torch.nn.CrossEntropyLoss(weight=None if w is None else torch.tensor(w, dtype=torch.float32),
                                        reduction=reduction, label_smoothing=smoothing)
        tl = tfn(tx, torch.from_numpy(t))
        tl.backward()
        np.testing.assert_allclose(loss, tl.item(), rtol=1e-5, err_msg=str(shape))
        np.testing.assert_allclose(to_numpy(grad), tx.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=str(shape))
        assert grad.dtype == np.float32 and grad.shape == shape


def test_softmax_xent_probability_targets_gradcheck_and_edges():
    rng = np.random.default_rng(5)
    for shape in SOFT_SHAPES:
        x, t = rng.standard_normal(shape), _soft_targets(rng, shape)
        for kwargs in ({}, {"reduction": "sum", "label_smoothing": 0.1}, {"weight": rng.uniform(0.5, 2, shape[1])}):
            assert gradcheck(lm.SoftmaxCrossEntropy(**kwargs), x, t)
    strided = rng.standard_normal((5, 12))[:, ::2]
    assert gradcheck(lm.SoftmaxCrossEntropy(), strided, _soft_targets(rng, (5, 6)))
    # one-hot probabilities are the class-index loss
    x, y = _logits_labels((6, 4), seed=2)
    onehot = np.eye(4)[y]
    hard, soft = lm.SoftmaxCrossEntropy(label_smoothing=0.1), lm.SoftmaxCrossEntropy(label_smoothing=0.1)
    np.testing.assert_allclose(soft(x, onehot), hard(x, y), rtol=1e-12)
    np.testing.assert_allclose(soft.backward(), hard.backward(), rtol=1e-10, atol=1e-14)
    # extreme logits stay finite; 16-bit logits give a float32 gradient
    fn = lm.SoftmaxCrossEntropy()
    for row in ([1e4, -1e4, 0.0], [1e8, 1e8, 1e8]):
        assert np.isfinite(fn(np.array([row], dtype=np.float32), np.array([[0.5, 0.25, 0.25]], dtype=np.float32)))
        assert np.isfinite(fn.backward()).all()
    assert fn(np.array([[1e4, -1e4, 0.0]], dtype=np.float32), np.array([[0.5, 0.5, 0.0]], dtype=np.float32)) == 1e4
    np.testing.assert_allclose(fn.backward(), [[0.5, -0.5, 0.0]])


def test_softmax_xent_probability_target_errors():
    x = np.zeros((3, 4), dtype=np.float32)
    t = np.full((3, 4), 0.25, dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"SoftmaxCrossEntropy\(.*\): expected integer class indices of shape \(3,\) "
                                            r"or class probabilities of the input's shape \(3, 4\), received a float32 "
                                            r"target of shape \(3, 5\)"):
        lm.SoftmaxCrossEntropy()(x, np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy\(.*ignore_index=-100\): ignore_index applies to "
                                         r"class indices; received a probability target \(dtype float32\)"):
        lm.SoftmaxCrossEntropy(ignore_index=-100)(x, t)
    with pytest.raises(lm.ShapeError, match=r"expected input with 3 classes \(the size of weight\), received input of shape \(3, 4\)"):
        lm.SoftmaxCrossEntropy(weight=[1.0, 2.0, 3.0])(x, t)
    with pytest.raises(lm.ShapeError, match=r"expected input logits of shape \(N, C\).*received \(4,\)"):
        lm.SoftmaxCrossEntropy()(x[0], t[0])
    fn = lm.SoftmaxCrossEntropy()
    fn(x, t)
    with pytest.raises(lm.ShapeError):
        fn(x, t[:2])
    assert fn.backward().shape == (3, 4)  # the failed call left the last gradient in place


def test_no_grad_loss_caches_nothing():
    fn = lm.SoftmaxCrossEntropy()
    with lm.no_grad():
        fn(np.zeros((2, 3), dtype=np.float32), np.array([0, 1]))
    with pytest.raises(lm.CacheError):
        fn.backward()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_and_bce(torch, xp, reduction):
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (4, 3), (7,), (2, 3, 5), (5, 2), (3, 1)]:
        x = rng.standard_normal(shape)
        t = rng.standard_normal(shape)
        p = rng.uniform(0, 1, shape)
        assert gradcheck(lm.MSELoss(reduction), x, t)
        assert gradcheck(lm.BCEWithLogits(reduction), x * 4, p)
        for fn, tfn, target in (
            (lm.MSELoss(reduction), torch.nn.functional.mse_loss, t),
            (lm.BCEWithLogits(reduction), torch.nn.functional.binary_cross_entropy_with_logits, p),
        ):
            x32, t32 = (x * 4).astype(np.float32), target.astype(np.float32)
            tx = torch.from_numpy(x32.copy()).requires_grad_(True)
            tl = tfn(tx, torch.from_numpy(t32), reduction=reduction)
            tl.backward()
            loss = fn(xp.asarray(x32), xp.asarray(t32))
            np.testing.assert_allclose(loss, tl.item(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(to_numpy(fn.backward()), tx.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_bce_extreme_logits_are_finite(torch):
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32)
    t = np.array([1.0, 0.0, 0.5, 1.0, 0.0], dtype=np.float32)
    fn = lm.BCEWithLogits()
    loss = fn(x, t)
    dx = fn.backward()
    tl = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(t))
    assert np.isfinite(loss) and np.isfinite(dx).all()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-6)


def test_mse_bce_errors():
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"MSELoss.*\(3, 2\).*\(2, 3\)"):
        lm.MSELoss()(x, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(lm.DTypeError, match="BCEWithLogits.*floating-point target"):
        lm.BCEWithLogits()(x, np.zeros((3, 2), dtype=np.int64))


@pytest.mark.parametrize("make", [lm.SoftmaxCrossEntropy, lambda: lm.SoftmaxCrossEntropy("sum", 0.1), lm.MSELoss,
                                  lm.BCEWithLogits, lm.NLLLoss, lm.L1Loss, lm.HuberLoss, lm.BCELoss, lm.KLDivLoss])
def test_compute_returns_the_loss_on_the_device_without_waiting(make, xp):
    """compute() is forward() without the host read: the same value as a
    0-d float64 array on the input's device, and the same cached gradient."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    fn = make()
    classes = isinstance(fn, (lm.SoftmaxCrossEntropy, lm.NLLLoss))
    t = rng.integers(0, 7, 5) if classes else rng.uniform(0, 1, (5, 7)).astype(np.float32)
    if isinstance(fn, lm.BCELoss):
        x = 1 / (1 + np.exp(-x))  # probabilities
    value = fn(xp.asarray(x), xp.asarray(t))
    grad = to_numpy(fn.backward())
    loss = fn.compute(xp.asarray(x), xp.asarray(t))
    assert isinstance(value, float) and loss.dtype == np.float64 and loss.ndim == 0
    assert lm.backend.device_of(loss) == lm.backend.device_of(xp.asarray(x))
    assert float(loss) == value
    np.testing.assert_array_equal(to_numpy(fn.backward()), grad)


def test_compute_checks_labels_on_the_host_for_numpy_and_on_the_device_for_cupy(xp):
    """A class index out of range: forward() raises a ValueError naming the
    loss on every backend; compute() raises too on NumPy, where the check is
    free, and on CuPy gives a NaN loss and NaN gradient rows (the check
    would wait for the GPU)."""
    x = xp.asarray(np.zeros((3, 4), dtype=np.float32))
    y = xp.asarray(np.array([0, 4, 1]))
    nll = lm.NLLLoss()
    with pytest.raises(ValueError, match=r"NLLLoss\(.*\): expected class indices in \[0, 3\], received 4"):
        nll(x, y)
    if xp is not np:
        loss = nll.compute(x, y)
        g = to_numpy(nll.backward())
        assert np.isnan(float(loss)) and np.isnan(g[1]).any() and np.isfinite(g[[0, 2]]).all()
    fn = lm.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy\(.*\): expected class indices in \[0, 3\], received 4"):
        fn(x, y)
    if xp is np:
        with pytest.raises(ValueError, match="received 4"):
            fn.compute(x, y)
        return
    loss = fn.compute(x, y)
    g = to_numpy(fn.backward())
    assert np.isnan(float(loss)) and np.isnan(g[1]).all() and np.isfinite(g[[0, 2]]).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_regression_losses_match_torch(torch, xp, reduction):
    """L1Loss, SmoothL1Loss (β = 1, 0.3 and 0: L1) and HuberLoss (δ = 1, 2.5):
    loss and gradient against PyTorch on differences on both sides of the
    bend, and gradcheck away from it."""
    rng = np.random.default_rng(8)
    pairs = [(lm.L1Loss(reduction), torch.nn.L1Loss(reduction=reduction)),
             (lm.SmoothL1Loss(reduction, beta=1.0), torch.nn.SmoothL1Loss(reduction=reduction, beta=1.0)),
             (lm.SmoothL1Loss(reduction, beta=0.3), torch.nn.SmoothL1Loss(reduction=reduction, beta=0.3)),
             (lm.SmoothL1Loss(reduction, beta=0.0), torch.nn.SmoothL1Loss(reduction=reduction, beta=0.0)),
             (lm.HuberLoss(reduction, delta=1.0), torch.nn.HuberLoss(reduction=reduction, delta=1.0)),
             (lm.HuberLoss(reduction, delta=2.5), torch.nn.HuberLoss(reduction=reduction, delta=2.5))]
    for shape in [(1, 1), (4, 3), (7,), (2, 3, 5)]:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        t = rng.standard_normal(shape).astype(np.float32)
        for fn, tfn in pairs:
            tx = torch.from_numpy(x).requires_grad_()
            tl = tfn(tx, torch.from_numpy(t))
            tl.backward()
            loss = fn(xp.asarray(x), xp.asarray(t))
            np.testing.assert_allclose(loss, tl.item(), rtol=1e-5, atol=1e-6, err_msg=repr(fn))
            np.testing.assert_allclose(to_numpy(fn.backward()), tx.grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=repr(fn))
            d = x.astype(np.float64) - t
            bend = getattr(fn, "beta", getattr(fn, "delta", 0.0))  # where the loss changes form, besides 0
            if xp is np and np.abs(d).min() > 1e-3 and np.abs(np.abs(d) - bend).min() > 1e-3:
                assert gradcheck(fn, x.astype(np.float64), t.astype(np.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_loss_matches_torch_and_log_softmax_nll_is_cross_entropy(torch, xp, reduction):
    rng = np.random.default_rng(12)
    for shape, ignore, weighted in [((6, 4), None, False), ((3, 5, 4), -100, True), ((1, 3), None, True),
                                    ((2, 4, 3, 2), -100, False)]:
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
        if ignore is not None:
            y.reshape(-1)[::3] = ignore
        w = (rng.random(shape[1]) + 0.2).astype(np.float32) if weighted else None
        tx = torch.from_numpy(x).requires_grad_()
        tl = torch.nn.functional.nll_loss(tx, torch.from_numpy(y), reduction=reduction,
                                          weight=None if w is None else torch.from_numpy(w))
        tl.backward()
        fn = lm.NLLLoss(reduction, weight=w, ignore_index=ignore)
        np.testing.assert_allclose(fn(xp.asarray(x), xp.asarray(y)), tl.item(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(fn.backward()), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
        assert gradcheck(lm.NLLLoss(reduction, weight=w, ignore_index=ignore), x.astype(np.float64), y)
    # LogSoftmax then NLLLoss is SoftmaxCrossEntropy, value and gradient
    logits = rng.standard_normal((5, 6)).astype(np.float32) * 4
    labels = rng.integers(0, 6, 5)
    logsm, nll, ce = lm.LogSoftmax(dim=1), lm.NLLLoss(reduction), lm.SoftmaxCrossEntropy(reduction)
    loss = nll(logsm(xp.asarray(logits)), xp.asarray(labels))
    np.testing.assert_allclose(loss, ce(xp.asarray(logits), xp.asarray(labels)), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(logsm.backward(nll.backward())), to_numpy(ce.backward()), rtol=1e-4, atol=1e-6)


def test_new_loss_errors_name_the_loss():
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"HuberLoss\(reduction='mean', delta=1.0\): expected target of shape \(3, 2\), received \(2, 3\)"):
        lm.HuberLoss()(x, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="SmoothL1Loss: expected a finite beta >= 0"):
        lm.SmoothL1Loss(beta=-1)
    with pytest.raises(ValueError, match="HuberLoss: expected a finite delta > 0"):
        lm.HuberLoss(delta=0)
    with pytest.raises(ValueError, match=r"NLLLoss\(reduction='mean'\): expected class indices in \[0, 1\], received 2"):
        lm.NLLLoss()(x, np.array([0, 2, 1]))
    with pytest.raises(lm.ShapeError, match=r"NLLLoss.*input log-probabilities of shape \(N, C\)"):
        lm.NLLLoss()(np.zeros(3, dtype=np.float32), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="NLLLoss: expected finite, non-negative class weights"):
        lm.NLLLoss(weight=[1.0, float("nan")])


@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_divergence_matches_pytorch(torch, xp, reduction, log_target):
    """KLDivLoss on log-probabilities against a target distribution (zeros
    included) or log-target: loss and gradient as PyTorch's, and gradcheck."""
    rng = np.random.default_rng(5)
    for shape in [(1, 3), (4, 5), (2, 3, 4), (6, 1)]:
        x = np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]))
        t = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
        t[..., 0] = 0  # a class the target never gives: contributes nothing
        t /= np.where(t.sum(-1, keepdims=True) > 0, t.sum(-1, keepdims=True), 1)
        target = np.log(np.where(t > 0, t, 1e-30)) if log_target else t
        fn = lm.KLDivLoss(reduction, log_target=log_target)
        assert gradcheck(fn, x, target)
        x32, t32 = x.astype(np.float32), target.astype(np.float32)
        tx = torch.from_numpy(x32.copy()).requires_grad_(True)
        with warnings.catch_warnings():  # PyTorch warns that 'mean' is not the KL divergence
            warnings.simplefilter("ignore", UserWarning)
            tl = torch.nn.functional.kl_div(tx, torch.from_numpy(t32), reduction=reduction, log_target=log_target)
        tl.backward()
        np.testing.assert_allclose(fn(xp.asarray(x32), xp.asarray(t32)), tl.item(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(fn.backward()), tx.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_on_probabilities_matches_pytorch_including_0_and_1(torch, xp, reduction):
    rng = np.random.default_rng(6)
    for shape in [(1, 1), (4, 3), (7,), (2, 3, 5)]:
        p = rng.uniform(0.05, 0.95, shape)
        t = rng.uniform(0, 1, shape)
        assert gradcheck(lm.BCELoss(reduction), p, t)
    p = np.array([0.0, 1.0, 0.5, 1e-8, 1 - 1e-7, 0.3], dtype=np.float32)
    t = np.array([1.0, 0.0, 0.5, 0.0, 1.0, 0.7], dtype=np.float32)
    fn = lm.BCELoss(reduction)
    tp = torch.from_numpy(p.copy()).requires_grad_(True)
    tl = torch.nn.functional.binary_cross_entropy(tp, torch.from_numpy(t), reduction=reduction)
    tl.backward()
    loss = fn(xp.asarray(p), xp.asarray(t))
    dp = to_numpy(fn.backward())
    assert np.isfinite(loss) and np.isfinite(dp).all()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-5)
    np.testing.assert_allclose(dp, tp.grad.numpy(), rtol=1e-5)


def test_bce_and_kl_errors_name_the_loss():
    with pytest.raises(ValueError, match=r"BCELoss\(reduction='mean'\): expected probabilities in \[0, 1\] as input, "
                                         r"received values from -0.5 to 2.0; BCEWithLogits takes logits"):
        lm.BCELoss()(np.array([-0.5, 2.0], dtype=np.float32), np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="KLDivLoss: expected reduction 'mean', 'batchmean', 'sum' or 'none', received 'avg'"):
        lm.KLDivLoss("avg")
    with pytest.raises(lm.ShapeError, match=r"KLDivLoss\(reduction='batchmean', log_target=True\): expected target of shape \(2, 3\)"):
        lm.KLDivLoss("batchmean", log_target=True)(np.zeros((2, 3), dtype=np.float32), np.zeros((3, 2), dtype=np.float32))


# ---------------------------------------------------------------------------
# CTCLoss
# ---------------------------------------------------------------------------


def _ctc_case(seed, t=12, n=4, c=6, s=5, repeats=True):
    """Logits (T, N, C), padded targets without the blank (class 0), input and
    target lengths: a zero-length target, inputs shorter than T, and a
    repeated label (which needs a blank between its copies)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((t, n, c)) * 2
    targets = rng.integers(1, c, (n, s))
    if repeats:
        targets[0, 1] = targets[0, 0]
    target_lengths = np.array([s, 3, 0, 4][:n])
    input_lengths = np.array([t, t - 3, t - 5, t][:n])
    return logits, targets, input_lengths, target_lengths


def _torch_ctc(torch, logits, targets, il, tl, blank=0, reduction="mean", zero_infinity=False, concatenated=False):
    tx = torch.tensor(logits, requires_grad=True)
    tt = torch.tensor(np.concatenate([row[:k] for row, k in zip(targets, tl)]) if concatenated else targets)
    loss = torch.nn.functional.ctc_loss(torch.log_softmax(tx, -1), tt, torch.tensor(il), torch.tensor(tl), blank=blank,
                                        reduction=reduction, zero_infinity=zero_infinity)
    loss.backward()
    return loss.item(), tx.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["padded", "concatenated", "batch_first"])
def test_ctc_matches_torch_through_log_softmax(torch, xp, reduction, dtype, layout):
    """The loss and the logits' gradient (LogSoftmax then CTCLoss, as a model
    uses them) against PyTorch's F.ctc_loss."""
    logits, targets, il, tl = _ctc_case(1)
    want_loss, want_grad = _torch_ctc(torch, logits, targets, il, tl, reduction=reduction, concatenated=layout == "concatenated")
    x = logits.astype(dtype)
    if layout == "batch_first":
        x = x.transpose(1, 0, 2).copy()
    t = np.concatenate([row[:k] for row, k in zip(targets, tl)]) if layout == "concatenated" else targets
    log_softmax = lm.LogSoftmax()
    ctc = lm.CTCLoss(reduction=reduction, batch_first=layout == "batch_first")
    loss = ctc(log_softmax(xp.asarray(x)), xp.asarray(t), il, tl.tolist())
    grad = to_numpy(log_softmax.backward(ctc.backward()))
    if layout == "batch_first":
        grad = grad.transpose(1, 0, 2)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    assert loss == pytest.approx(want_loss, rel=tol["rtol"])
    np.testing.assert_allclose(grad, want_grad, **tol)
    assert grad.dtype == dtype


def test_ctc_gradcheck_against_finite_differences():
    """The derivative with respect to the log-probabilities themselves
    (normalised or not), a non-zero blank among them."""
    for seed, blank in [(2, 0), (3, 4)]:
        logits, targets, il, tl = _ctc_case(seed, t=7, n=3, c=5, s=3)
        targets[targets == blank] = (blank + 1) % 5 or 1
        tl = tl[:3].clip(max=3)
        lp = np.log(np.random.default_rng(seed).dirichlet(np.ones(5), (7, 3)))
        assert gradcheck(lm.CTCLoss(blank=blank), lp, targets, il, tl)
        assert gradcheck(lm.CTCLoss(reduction="sum"), logits * 0.3, targets, il, tl)  # unnormalised too


def test_ctc_is_the_sum_over_alignments_by_brute_force():
    """-log Σ over every path of length T that collapses to the target (merge
    repeats, drop blanks) of Π_t y_t(π_t): the definition, enumerated."""
    import itertools

    rng = np.random.default_rng(4)
    t_len, c = 5, 3
    lp = np.log(rng.dirichlet(np.ones(c), (t_len, 1)))
    target = [1, 1]

    def collapse(path):
        out = [k for i, k in enumerate(path) if k != 0 and (i == 0 or k != path[i - 1])]
        return out

    total = sum(np.exp(sum(lp[t, 0, k] for t, k in enumerate(p)))
                for p in itertools.product(range(c), repeat=t_len) if collapse(p) == target)
    loss = lm.CTCLoss(reduction="sum")(lp, np.array([target]), [t_len], [2])
    assert loss == pytest.approx(-np.log(total), rel=1e-12)


@pytest.mark.parametrize("zero_infinity", [False, True])
def test_ctc_infeasible_targets(torch, zero_infinity):
    """A target longer than its input (counting the blank a repeat needs)
    has no alignment: inf loss and NaN gradient as PyTorch, or zero for
    that sample with zero_infinity, the others untouched."""
    logits, targets, il, tl = _ctc_case(5)
    targets[1, :3] = [2, 2, 2]  # needs 5 steps
    il = il.copy()
    il[1] = 4
    want_loss, want_grad = _torch_ctc(torch, logits, targets, il, tl, reduction="sum", zero_infinity=zero_infinity)
    log_softmax, ctc = lm.LogSoftmax(), lm.CTCLoss(reduction="sum", zero_infinity=zero_infinity)
    loss = ctc(log_softmax(logits), targets, il, tl)
    grad = log_softmax.backward(ctc.backward())
    if zero_infinity:
        assert loss == pytest.approx(want_loss, rel=1e-10)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12)
        assert not grad[:, 1].any()
    else:
        assert loss == np.inf == want_loss
        assert np.isnan(grad[:4, 1]).all() and np.isfinite(grad[:, [0, 2, 3]]).all()
        np.testing.assert_allclose(grad[:, [0, 2, 3]], want_grad[:, [0, 2, 3]], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", ["plain", "batch_first_sum", "infeasible", "infeasible_zero_infinity", "blank_last",
                                  "long_targets"])
def test_ctc_kernels_match_the_array_recursions(case, dtype, monkeypatch, xp):
    """The loss runs lamina's kernel (one CUDA block, or one CPU thread, per
    sample); the NumPy/CuPy recursions it replaces, which remain the path
    without a compiled module, give the same loss and gradient."""
    cp = xp
    t, n, c, s = (40, 3, 7, 12) if case == "long_targets" else (12, 4, 6, 5)
    logits, targets, il, tl = _ctc_case(11, t=t, n=n, c=c, s=s)
    kw = dict(reduction="sum" if case == "batch_first_sum" else "mean", zero_infinity=case.endswith("zero_infinity"),
              batch_first=case == "batch_first_sum", blank=c - 1 if case == "blank_last" else 0)
    if case == "blank_last":
        targets = np.where(targets == c - 1, 0, targets)
    if case.startswith("infeasible"):
        targets[1, :3] = [2, 2, 2]
        il, tl = il.copy(), tl.copy()
        il[1], tl[1] = 4, 3
    lp = np.log(np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)).astype(dtype)
    if kw["batch_first"]:
        lp = np.ascontiguousarray(lp.transpose(1, 0, 2))
    calls = []
    real = lm.ops.ctc_loss
    def counted(*a, **k):
        out = real(*a, **k)
        calls.append(out is not None)  # the kernel ran (None: no compiled module, the recursions would run)
        return out

    monkeypatch.setattr(lm.ops, "ctc_loss", counted)
    fused = lm.CTCLoss(**kw)
    loss = fused(cp.asarray(lp), cp.asarray(targets), il, tl)
    grad = lm.backend.to_device(fused.backward(), "cpu")
    assert calls == [True] and fused._cache is None
    monkeypatch.setattr(lm.ops, "ctc_loss", lambda *a, **k: None)  # the CuPy recursions
    plain = lm.CTCLoss(**kw)
    want = plain(cp.asarray(lp), cp.asarray(targets), il, tl)
    want_grad = lm.backend.to_device(plain.backward(), "cpu")
    # float32: α reaches ~80 at T = 40, where one ulp is 8e-6, and the CPU kernel's vector rows add the three
    # terms of each step in another order than the recursions (both are as far from float64: the test below)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    assert grad.dtype == dtype and grad.shape == lp.shape
    if np.isinf(want):
        assert loss == want
    else:
        assert loss == pytest.approx(want, rel=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * 1e-2)  # NaN where the recursions give NaN
    monkeypatch.setattr(lm.ops, "ctc_loss", real)
    with lm.no_grad():  # without gradients: the forward launch alone, and nothing cached
        again = fused(cp.asarray(lp), cp.asarray(targets), il, tl)
    assert again == loss
    assert fused._cache is None


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
@pytest.mark.parametrize("t,c,s", [(40, 7, 12), (300, 30, 50)])
def test_float32_ctc_kernel_is_as_accurate_as_the_recursions(t, c, s, isa, monkeypatch):
    """The float32 CPU kernel (a vectorised three-way log-sum-exp per row, in
    its AVX2 and its baseline build) against the float64 result on the same
    inputs: its loss and gradient errors are within those of the float32
    NumPy recursions, and small."""
    C = lm.ops._ext.cpu_module()
    if C is None:
        pytest.skip("lamina._C not built")
    if isa == "avx2" and not C.cpu_has_avx2_fma():
        pytest.skip("this CPU lacks AVX2 or FMA")
    previous = C.set_avx2(isa == "avx2")
    logits, targets, il, tl = _ctc_case(11, t=t, n=4, c=c, s=s)
    lp = np.log(np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)).astype(np.float32)
    real = lm.ops.ctc_loss

    def run(x, kernel):
        monkeypatch.setattr(lm.ops, "ctc_loss", real if kernel else (lambda *a, **k: None))
        f = lm.CTCLoss(reduction="sum")
        return f(x, targets, il, tl), f.backward().astype(np.float64)

    try:
        loss64, grad64 = run(lp.astype(np.float64), True)
        errors = {}
        for kernel in (True, False):
            loss, grad = run(lp, kernel)
            errors[kernel] = (abs(loss / loss64 - 1), np.abs(grad - grad64).max())
    finally:
        C.set_avx2(previous)
    assert errors[True][0] <= 2 * errors[False][0] + 1e-7 and errors[True][0] < 1e-6
    assert errors[True][1] <= 1.5 * errors[False][1] + 1e-6 and errors[True][1] < 1e-2


def test_ctc_errors_name_the_loss_and_keep_the_cache():
    logits, targets, il, tl = _ctc_case(6)
    ctc = lm.CTCLoss()
    ctc(logits, targets, il, tl)
    cases = [
        ((logits[0], targets, il, tl), lm.ShapeError, r"expected log_probs of shape \(T, N, C\), received shape \(4, 6\)"),
        ((logits, targets, il[:3], tl), lm.ShapeError, r"expected input_lengths as 4 ints \(one per sample\), received shape \(3,\)"),
        ((logits, targets, il * 2, tl), lm.ShapeError, r"expected input_lengths in \[1, 12\] \(T\), received \[24, 18, 14, 24\]"),
        ((logits, targets, il, tl + 3), lm.ShapeError, r"expected padded targets of shape \(4, S\) with S >= max\(target_lengths\) = 8"),
        ((logits, targets.ravel()[:7], il, tl), lm.ShapeError, r"expected concatenated targets of sum\(target_lengths\) = 12 values"),
        ((logits, targets * 0, il, tl), ValueError, r"expected target classes in \[0, 6\) other than the blank 0, .* including the blank"),
        ((logits, targets + 5, il, tl), ValueError, r"expected target classes in \[0, 6\)"),
        ((logits, targets.astype(np.float32), il, tl), lm.DTypeError, r"expected integer class indices as target"),
        ((logits, targets, il.astype(np.float64), tl), lm.DTypeError, r"expected input_lengths as integers, received dtype float64"),
    ]
    for args, error, match in cases:
        with pytest.raises(error, match=r"CTCLoss\(blank=0, reduction='mean'\): " + match):
            ctc(*args)
    assert ctc.backward().shape == logits.shape  # the first call's gradient survived every failed one
    with pytest.raises(ValueError, match=r"CTCLoss\(blank=6.*expected blank < the number of classes 6, received 6"):
        lm.CTCLoss(blank=6)(logits, targets, il, tl)
    with pytest.raises(ValueError, match=r"CTCLoss: expected blank as a non-negative int, received -1"):
        lm.CTCLoss(blank=-1)


def test_ctc_trains_an_lstm_to_transcribe_unaligned_sequences():
    """A bidirectional LSTM reads noisy symbol sequences in which each symbol
    lasts 1 to 3 steps, and learns, from the unaligned label sequences
    alone, to transcribe sequences it has never seen (greedy CTC decoding:
    best class per step, repeats merged, blanks dropped)."""
    rng = np.random.default_rng(0)
    classes, steps = 5, 24

    def batch(size):
        x = np.zeros((size, steps, classes), dtype=np.float32)
        labels, lengths = np.zeros((size, 8), dtype=np.int64), np.zeros(size, dtype=np.int64)
        for i in range(size):
            t, k = 0, 0
            while k < 8:
                sym, dur = rng.integers(1, classes), rng.integers(1, 4)
                if k and sym == labels[i, k - 1]:
                    continue
                if t + dur > steps:
                    break
                x[i, t:t + dur, sym] = 1
                labels[i, k], t, k = sym, t + dur, k + 1
            lengths[i] = k
        return x + 0.1 * rng.standard_normal(x.shape).astype(np.float32), labels, lengths

    lm.manual_seed(0)
    lstm, head, log_softmax = lm.LSTM(classes, 32, bidirectional=True), lm.Dense(64, classes), lm.LogSoftmax()
    ctc = lm.CTCLoss(batch_first=True)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = lm.optim.Adam(params, lr=0.01)
    losses = []
    for _ in range(200):
        x, labels, lengths = batch(64)  # fresh sequences every step
        losses.append(ctc(log_softmax(head(lstm(x))), labels, np.full(64, steps), lengths))
        for p in params:
            p.grad = None
        lstm.backward(head.backward(log_softmax.backward(ctc.backward())))
        opt.step()
    assert np.mean(losses[-10:]) < 0.05 * np.mean(losses[:10])
    x, labels, lengths = batch(128)
    with lm.no_grad():
        best = head(lstm(x)).argmax(-1)
    decoded = [[k for j, k in enumerate(row) if k and (j == 0 or k != row[j - 1])] for row in best]
    exact = np.mean([d == labels[i, :lengths[i]].tolist() for i, d in enumerate(decoded)])
    assert exact > 0.95, exact


@pytest.mark.parametrize("make,target", [
    (lambda: lm.SoftmaxCrossEntropy(), np.array([0, 2])), (lambda: lm.NLLLoss(), np.array([0, 2])),
    (lambda: lm.MSELoss(), np.zeros((2, 3), np.float32)), (lambda: lm.BCEWithLogits(), np.zeros((2, 3), np.float32)),
    (lambda: lm.SoftmaxCrossEntropy(), np.full((2, 3), 1 / 3, np.float32)),  # probabilities
], ids=["xent", "nll", "mse", "bce", "xent-probs"])
def test_a_loss_given_the_wrong_kind_of_input_names_itself_and_keeps_no_gradient(make, target):
    """A list, an integer input, or an empty batch: the error names the loss
    and what it expected, and no gradient is cached for backward."""
    loss_fn = make()
    name = type(loss_fn).__name__
    x = np.zeros((2, 3), np.float32)
    bad = [
        ((x.tolist(), target), lm.DTypeError, "expected input as a numpy.ndarray or cupy.ndarray, received list"),
        ((x, target.tolist()), lm.DTypeError, "expected target as a numpy.ndarray or cupy.ndarray, received list"),
        ((x.astype(np.int64), target), lm.DTypeError, "expected a floating-point input, received dtype int64"),
    ]
    if isinstance(loss_fn, lm.NLLLoss) or target.dtype.kind in "iu":
        bad.append(((x[:0], target[:0]), lm.ShapeError, r"expected at least one row, received input of shape \(0, 3\)"))
    for args, error, match in bad:
        with pytest.raises(error, match=rf"{name}.*{match}"):
            loss_fn(*args)
        with pytest.raises(lm.CacheError):
            loss_fn.backward()
    assert np.isfinite(loss_fn(x, target))


# ---------------------------------------------------------------------------
# reduction="none", element weights, and backward(dloss)
# ---------------------------------------------------------------------------


def _unreduced_cases(rng):
    """(id, lamina loss, PyTorch loss, input, target) with reduction="none":
    every loss, with its options, on an input with a spatial axis where it
    takes one."""
    x3 = rng.standard_normal((3, 4, 5)) * 2
    idx3 = rng.integers(0, 4, (3, 5))
    probs = rng.dirichlet(np.ones(4), (3, 5)).transpose(0, 2, 1)
    x2, idx2 = rng.standard_normal((6, 5)) * 2, rng.integers(0, 5, 6)
    w5, w4 = rng.uniform(0.2, 2, 5), rng.uniform(0.2, 2, 4)
    y, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    p = rng.uniform(0.02, 0.98, (4, 3))
    logp = np.log(rng.dirichlet(np.ones(3), 4))
    return [
        ("xent", lambda r, nn: (lm.SoftmaxCrossEntropy(r), nn.CrossEntropyLoss(reduction=r)), x2, idx2),
        ("xent_spatial_smooth_ignore", lambda r, nn: (lm.SoftmaxCrossEntropy(r, 0.1, ignore_index=2),
                                                      nn.CrossEntropyLoss(reduction=r, label_smoothing=0.1, ignore_index=2)),
         x3, idx3),
        ("xent_weighted_smooth", lambda r, nn, w=w5: (lm.SoftmaxCrossEntropy(r, 0.2, weight=w),
                                                      nn.CrossEntropyLoss(reduction=r, label_smoothing=0.2,
                                                                          weight=_t(nn, w))), x2, idx2),
        ("xent_probabilities", lambda r, nn, w=w4: (lm.SoftmaxCrossEntropy(r, 0.1, weight=w),
                                                    nn.CrossEntropyLoss(reduction=r, label_smoothing=0.1, weight=_t(nn, w))),
         x3, probs),
        ("nll_weighted_ignore", lambda r, nn, w=w4: (lm.NLLLoss(r, weight=w, ignore_index=1),
                                                     nn.NLLLoss(reduction=r, weight=_t(nn, w), ignore_index=1)), x3, idx3),
        ("mse", lambda r, nn: (lm.MSELoss(r), nn.MSELoss(reduction=r)), y, t),
        ("l1", lambda r, nn: (lm.L1Loss(r), nn.L1Loss(reduction=r)), y, t),
        ("smooth_l1", lambda r, nn: (lm.SmoothL1Loss(r, beta=0.5), nn.SmoothL1Loss(reduction=r, beta=0.5)), y, t),
        ("huber", lambda r, nn: (lm.HuberLoss(r, delta=0.7), nn.HuberLoss(reduction=r, delta=0.7)), y, t),
        ("bce_logits_weights", lambda r, nn: (lm.BCEWithLogits(r, weight=np.array([0.5, 1, 2]), pos_weight=np.array([3, 1, .5])),
                                              nn.BCEWithLogitsLoss(reduction=r, weight=_t(nn, [0.5, 1, 2]),
                                                                   pos_weight=_t(nn, [3, 1, .5]))), y * 3, p),
        ("bce_weight", lambda r, nn: (lm.BCELoss(r, weight=np.array([[2.0], [1], [0.5], [0]])),
                                      nn.BCELoss(reduction=r, weight=_t(nn, [[2.0], [1], [0.5], [0]]))), p[::-1].copy(), p),
        ("kl", lambda r, nn: (lm.KLDivLoss(r), nn.KLDivLoss(reduction=r)), logp, np.exp(logp[::-1])),
    ]


def _t(nn, a):
    import torch
    return torch.tensor(np.asarray(a, dtype=np.float32))


CASE_IDS = [c[0] for c in _unreduced_cases(np.random.default_rng(0))]


@pytest.mark.parametrize("case", CASE_IDS)
def test_every_loss_keeps_per_element_losses_with_reduction_none(torch, xp, case):
    """reduction="none" returns PyTorch's per-element (per-prediction) losses
    as an array on the input's device; backward(dloss) takes their gradient
    and returns PyTorch's input gradient; both reductions are the sum and
    mean of those losses (checked against PyTorch too)."""
    rng = np.random.default_rng(5)
    _, make, x, target = next(c for c in _unreduced_cases(rng) if c[0] == case)
    x32, t32 = x.astype(np.float32), target.astype(np.float32) if target.dtype.kind == "f" else target
    for reduction in ("none", "batchmean" if case == "kl" else "mean", "sum"):  # PyTorch warns on KLDivLoss's "mean"
        fn, tfn = make(reduction, torch.nn)
        tx = torch.from_numpy(x32.copy()).requires_grad_(True)
        tl = tfn(tx, torch.from_numpy(t32))
        dloss = rng.standard_normal(tuple(tl.shape)).astype(np.float32)
        (tl * torch.from_numpy(dloss)).sum().backward()
        loss = fn(xp.asarray(x32), xp.asarray(t32))
        if reduction == "none":
            assert backend_of(loss) is xp and loss.shape == tuple(tl.shape) and loss.dtype == np.float32
            dx = fn.backward(xp.asarray(dloss))
        else:
            assert isinstance(loss, float)
            dx = fn.backward(float(dloss))  # a number scales the gradient, as loss.backward(gradient)
        np.testing.assert_allclose(to_numpy(loss), tl.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=reduction)
        np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=reduction)
        assert dx.dtype == np.float32
    assert gradcheck(make("none", torch.nn)[0], x, target)


def backend_of(a):
    return lm.get_array_module(a)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_ctc_per_sample_losses(torch, xp, reduction):
    logits, targets, il, tl = _ctc_case(4)
    tx = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.ctc_loss(torch.log_softmax(tx, -1), torch.tensor(targets), torch.tensor(il),
                                         torch.tensor(tl), reduction=reduction)
    dloss = np.random.default_rng(1).standard_normal(tuple(tloss.shape))
    (tloss * torch.tensor(dloss)).sum().backward()
    for batch_first in (False, True):
        log_softmax, ctc = lm.LogSoftmax(), lm.CTCLoss(reduction=reduction, batch_first=batch_first)
        x = logits.transpose(1, 0, 2).copy() if batch_first else logits
        loss = ctc(log_softmax(xp.asarray(x)), xp.asarray(targets), il, tl)
        grad = to_numpy(log_softmax.backward(ctc.backward(xp.asarray(dloss) if reduction == "none" else float(dloss))))
        np.testing.assert_allclose(to_numpy(loss), tloss.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(grad.transpose(1, 0, 2) if batch_first else grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    assert gradcheck(lm.CTCLoss(reduction="none"), np.log(np.random.default_rng(2).dirichlet(np.ones(4), (5, 2))),
                     np.array([[1, 2], [3, 3]]), [5, 4], [2, 2])


def test_per_element_backward_validates_dloss_and_keeps_the_cache():
    fn = lm.SoftmaxCrossEntropy("none")
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    losses = fn(x, np.array([0, 1, 2, 0]))
    label = r"SoftmaxCrossEntropy\(reduction='none', label_smoothing=0.0\)"
    for dloss, error, match in [
        (None, ValueError, r"reduction='none' gives one loss per element; backward\(dloss\) needs their gradient, "
                           r"an array of shape \(4,\)"),
        (np.ones(3, np.float32), lm.ShapeError, r"expected dloss of shape \(4,\) \(the losses'\), received \(3,\)"),
        ([1.0] * 4, lm.DTypeError, "expected dloss as a numpy.ndarray or cupy.ndarray, received list"),
        (np.ones(4, np.int64), lm.DTypeError, "expected a floating-point dloss, received dtype int64"),
    ]:
        with pytest.raises(error, match=label + ": " + match):
            fn.backward(dloss)
    dx = fn.backward(np.ones_like(losses))  # the failed calls kept the cache
    ref = lm.SoftmaxCrossEntropy("sum")
    ref(x, np.array([0, 1, 2, 0]))
    np.testing.assert_allclose(dx, ref.backward(), rtol=1e-6)
    mean = lm.MSELoss()
    mean(x, np.zeros_like(x))
    with pytest.raises(lm.ShapeError, match=r"MSELoss\(reduction='mean'\): expected dloss as a number \(the loss is a "
                                            r"scalar\) or None, received an array of shape \(4, 3\)"):
        mean.backward(np.ones((4, 3), np.float32))
    with pytest.raises(lm.DTypeError, match=r"MSELoss\(reduction='mean'\): expected dloss as a number .* received str"):
        mean.backward("2")
    np.testing.assert_allclose(mean.backward(np.float64(3.0)), 3 * 2 * x / x.size, rtol=1e-6)


def test_element_weights_are_validated_by_name():
    with pytest.raises(ValueError, match=r"BCEWithLogits: expected pos_weight as a non-empty array of numbers"):
        lm.BCEWithLogits(pos_weight=[])
    with pytest.raises(ValueError, match=r"BCELoss: expected a finite weight"):
        lm.BCELoss(weight=[1.0, np.inf])
    fn = lm.BCEWithLogits(pos_weight=np.ones(3))
    with pytest.raises(lm.ShapeError, match=r"BCEWithLogits\(reduction='mean', pos_weight=\(shape \(3,\)\)\): expected "
                                            r"an input whose shape pos_weight \(3,\) broadcasts to, received shape \(2, 4\)"):
        fn(np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(lm.CacheError):
        fn.backward()


def test_fit_refuses_a_loss_without_reduction():
    model = lm.Sequential(lm.Dense(3, 2))
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"fit: expected a loss that reduces to a scalar \(reduction 'mean' or 'sum'\), "
                                         r"received SoftmaxCrossEntropy\(reduction='none'"):
        lm.train.fit(model, lm.SoftmaxCrossEntropy("none"), lm.optim.SGD(model.parameters(), lr=0.1), (x, y), epochs=1)
