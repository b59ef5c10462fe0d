"""The margin, ranking and likelihood losses: PyTorch parity for every
reduction (and backward(dloss)), gradcheck, the kinks, unbatched inputs,
and errors that name the loss and keep no gradient."""

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina.testing import gradcheck


def _signs(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape)


def _cases(rng):
    """(id, make(reduction, nn) -> (lamina loss, PyTorch loss), inputs, how
    many of the inputs lead and get gradients (the rest pass through)).
    Inputs are float64; the float32 parity run casts them."""
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    emb = [rng.standard_normal((6, 7)) for _ in range(3)]
    logits = rng.standard_normal((7, 5)) * 2
    labels = rng.integers(0, 5, 7)
    w5 = rng.uniform(0.2, 2, 5)
    counts = rng.poisson(3.0, (4, 3)).astype(np.float64)
    var = rng.uniform(0.1, 2.0, (4, 3))
    return [
        ("margin_ranking", lambda r, nn: (lm.MarginRankingLoss(0.3, r), nn.MarginRankingLoss(0.3, reduction=r)),
         [x, y, _signs(rng, (5, 4))], (0, 1)),
        ("margin_ranking_1d", lambda r, nn: (lm.MarginRankingLoss(reduction=r), nn.MarginRankingLoss(reduction=r)),
         [x[0], y[0], rng.uniform(-2, 2, 4)], (0, 1)),
        ("cosine", lambda r, nn: (lm.CosineEmbeddingLoss(0.2, r), nn.CosineEmbeddingLoss(0.2, reduction=r)),
         [emb[0], emb[1], _signs(rng, 6)], (0, 1)),
        ("cosine_unbatched", lambda r, nn: (lm.CosineEmbeddingLoss(-0.5, r), nn.CosineEmbeddingLoss(-0.5, reduction=r)),
         [emb[0][0], emb[2][0], np.array(-1.0)], (0, 1)),
        ("triplet", lambda r, nn: (lm.TripletMarginLoss(reduction=r), nn.TripletMarginLoss(reduction=r)),
         emb, (0, 1, 2)),
        ("triplet_p1_swap", lambda r, nn: (lm.TripletMarginLoss(2.0, p=1, swap=True, reduction=r),
                                           nn.TripletMarginLoss(2.0, p=1, swap=True, reduction=r)), emb, (0, 1, 2)),
        ("triplet_p3_swap", lambda r, nn: (lm.TripletMarginLoss(3.0, p=3, eps=1e-3, swap=True, reduction=r),
                                           nn.TripletMarginLoss(3.0, p=3, eps=1e-3, swap=True, reduction=r)),
         [e * 0.5 for e in emb], (0, 1, 2)),
        ("triplet_unbatched", lambda r, nn: (lm.TripletMarginLoss(4.0, reduction=r), nn.TripletMarginLoss(4.0, reduction=r)),
         [e[1] for e in emb], (0, 1, 2)),
        ("hinge_embedding", lambda r, nn: (lm.HingeEmbeddingLoss(0.8, r), nn.HingeEmbeddingLoss(0.8, reduction=r)),
         [np.abs(x), _signs(rng, (5, 4))], (0,)),
        ("soft_margin", lambda r, nn: (lm.SoftMarginLoss(r), nn.SoftMarginLoss(reduction=r)),
         [x * 3, _signs(rng, (5, 4))], (0,)),
        ("multilabel_soft_margin", lambda r, nn, w=w5: (lm.MultiLabelSoftMarginLoss(r, weight=w),
                                                        nn.MultiLabelSoftMarginLoss(weight=_t(w), reduction=r)),
         [logits, (rng.uniform(size=(7, 5)) > 0.5).astype(np.float64)], (0,)),
        ("multi_margin", lambda r, nn: (lm.MultiMarginLoss(reduction=r), nn.MultiMarginLoss(reduction=r)),
         [logits * 0.3, labels], (0,)),
        ("multi_margin_p2_weighted", lambda r, nn, w=w5: (lm.MultiMarginLoss(2, 0.7, weight=w, reduction=r),
                                                          nn.MultiMarginLoss(2, 0.7, weight=_t(w), reduction=r)),
         [logits * 0.3, labels], (0,)),
        ("multi_margin_unbatched", lambda r, nn: (lm.MultiMarginLoss(reduction=r), nn.MultiMarginLoss(reduction=r)),
         [logits[0] * 0.3, np.array(2)], (0,)),
        ("poisson_log", lambda r, nn: (lm.PoissonNLLLoss(reduction=r), nn.PoissonNLLLoss(reduction=r)),
         [x[:4, :3], counts], (0,)),
        ("poisson_rate_full", lambda r, nn: (lm.PoissonNLLLoss(False, True, reduction=r),
                                             nn.PoissonNLLLoss(False, True, reduction=r)),
         [np.abs(x[:4, :3]) + 0.5, counts], (0,)),
        ("gaussian", lambda r, nn: (lm.GaussianNLLLoss(reduction=r), nn.GaussianNLLLoss(reduction=r)),
         [x[:4, :3], y[:4, :3], var], (0, 2)),
        ("gaussian_full_per_sample", lambda r, nn: (lm.GaussianNLLLoss(full=True, eps=0.3, reduction=r),
                                                    nn.GaussianNLLLoss(full=True, eps=0.3, reduction=r)),
         [x[:4, :3], y[:4, :3], var[:, 0]], (0, 2)),
        ("gaussian_shared_axis", lambda r, nn: (lm.GaussianNLLLoss(reduction=r), nn.GaussianNLLLoss(reduction=r)),
         [x[:4, :3], y[:4, :3], var[:1, :]], (0, 2)),
    ]


def _t(a):
    import torch
    return torch.tensor(np.asarray(a, dtype=np.float32))


CASE_IDS = [c[0] for c in _cases(np.random.default_rng(0))]


def _case(name, seed=3):
    return next(c for c in _cases(np.random.default_rng(seed)) if c[0] == name)


@pytest.mark.parametrize("case", CASE_IDS)
def test_matches_pytorch_for_every_reduction(torch, xp, case):
    """Forward and every input's gradient in float32 against PyTorch, for
    reduction "none" (with a random dloss), "mean" and "sum" (with a number
    that scales the gradient)."""
    _, make, inputs, diff = _case(case)
    rng = np.random.default_rng(1)
    arrays = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in inputs]
    for reduction in ("none", "mean", "sum"):
        fn, tfn = make(reduction, torch.nn)
        tin = [torch.from_numpy(a.copy()).requires_grad_(i in diff) for i, a in enumerate(arrays)]
        tloss = tfn(*tin)
        dloss = rng.standard_normal(tuple(tloss.shape)).astype(np.float32)
        (tloss * torch.from_numpy(dloss)).sum().backward()
        loss = fn(*[xp.asarray(a) for a in arrays])
        if reduction == "none":
            assert lm.get_array_module(loss) is xp and loss.shape == tuple(tloss.shape) and loss.dtype == np.float32
            grads = fn.backward(xp.asarray(dloss))
        else:
            assert isinstance(loss, float)
            grads = fn.backward(float(dloss))
        grads = grads if isinstance(grads, tuple) else (grads,)
        assert len(grads) == len(diff)
        np.testing.assert_allclose(to_numpy(loss), tloss.detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=reduction)
        for i, g in zip(diff, grads):
            assert g.shape == arrays[i].shape and g.dtype == np.float32
            np.testing.assert_allclose(to_numpy(g), tin[i].grad.numpy(), rtol=2e-5, atol=1e-6,
                                       err_msg=f"{reduction}: input {i}")


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck(case, reduction, torch):
    _, make, inputs, _ = _case(case)
    assert gradcheck(make(reduction, torch.nn)[0], *inputs)


def test_gaussian_nll_with_a_fixed_variance_and_its_gradient_tuple(torch):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    fn = lm.GaussianNLLLoss(reduction="sum")
    tx = torch.tensor(x, requires_grad=True)
    ref = torch.nn.GaussianNLLLoss(reduction="sum")(tx, torch.tensor(t), 0.5)
    ref.backward()
    assert fn(x, t, 0.5) == pytest.approx(ref.item(), rel=1e-12)
    dx, dvar = fn.backward()
    assert dvar is None
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12)
    fn = lm.GaussianNLLLoss(reduction="none")
    fn(x, t, 2)
    dx, dvar = fn.backward(np.ones((3, 2)))
    np.testing.assert_allclose(dx, (x - t) / 2, rtol=1e-12)
    assert dvar is None


def test_gaussian_nll_passes_the_gradient_through_the_variance_clamp(torch):
    """Below eps the variance is clamped for the value, but its gradient is
    taken at eps and passed through as PyTorch's (documented there: "the
    clamping of var is ignored with respect to autograd"), not the clamp's
    true derivative, 0."""
    x, t = np.array([[0.5, -1.0, 2.0]]), np.array([[0.0, 0.0, 1.0]])
    var = np.array([[0.01, 0.5, 3.0]])  # the first below eps
    fn = lm.GaussianNLLLoss(eps=0.1, reduction="sum")
    tin = [torch.tensor(a, requires_grad=True) for a in (x, var)]
    tloss = torch.nn.GaussianNLLLoss(eps=0.1, reduction="sum")(tin[0], torch.tensor(t), tin[1])
    tloss.backward()
    assert fn(x, t, var) == pytest.approx(tloss.item(), rel=1e-12)
    dx, dvar = fn.backward()
    np.testing.assert_allclose(dx, tin[0].grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(dvar, tin[1].grad.numpy(), rtol=1e-12)
    assert dvar[0, 0] == pytest.approx(0.5 * (1 / 0.1 - 0.25 / 0.01))


def test_the_kinks_follow_pytorch(torch):
    """At z = 0 the hinge's gradient passes for the ranking, cosine, triplet
    and hinge-embedding losses, and not for MultiMarginLoss."""
    F = torch.nn.functional

    def both(fn, tf, *arrays, n_grad):
        tin = [torch.tensor(a, requires_grad=i < n_grad) for i, a in enumerate(arrays)]
        tf(*tin, reduction="sum").backward()
        got = fn(*arrays)
        grads = fn.backward()
        grads = grads if isinstance(grads, tuple) else (grads,)
        assert got == pytest.approx(0.0, abs=1e-12)
        for g, t in zip(grads, tin):
            np.testing.assert_array_equal(g, t.grad.numpy())
        return grads

    same = np.array([1.0, 2.0])
    g1, _ = both(lm.MarginRankingLoss(reduction="sum"), F.margin_ranking_loss, same, same.copy(), np.array([1.0, -1.0]),
                 n_grad=2)
    np.testing.assert_array_equal(g1, [-1.0, 1.0])
    g = both(lm.HingeEmbeddingLoss(reduction="sum"), lambda x, y, reduction: F.hinge_embedding_loss(x, y, 1.0, reduction=reduction),
             np.array([1.0]), np.array([-1.0]), n_grad=1)
    np.testing.assert_array_equal(g[0], [-1.0])
    both(lm.CosineEmbeddingLoss(reduction="sum"), F.cosine_embedding_loss, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]),
         np.array([-1.0]), n_grad=2)
    trip = lm.TripletMarginLoss(eps=0.0, reduction="sum")
    both(trip, lambda a, p, n, reduction: F.triplet_margin_loss(a, p, n, eps=0.0, reduction=reduction),
         np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), n_grad=3)
    x = np.array([[1.0, 2.0, 3.0]])  # z = 0 for class 0 (not counted), 2 for class 2
    fn = lm.MultiMarginLoss(reduction="sum")
    assert fn(x, np.array([1])) == pytest.approx(2 / 3)
    np.testing.assert_allclose(fn.backward(), [[0.0, -1 / 3, 1 / 3]])


def test_a_triplet_swap_tie_shares_the_gradient(torch):
    """With ``swap``, a tie between d(a, n) and d(p, n) shares the gradient
    half and half, as PyTorch's minimum."""
    a, p, n = np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])  # d(a,n) = d(p,n)
    fn = lm.TripletMarginLoss(margin=10.0, eps=0.0, swap=True, reduction="sum")
    tin = [torch.tensor(v, requires_grad=True) for v in (a, p, n)]
    torch.nn.functional.triplet_margin_loss(*tin, margin=10.0, eps=0.0, swap=True, reduction="sum").backward()
    assert fn(a, p, n) == pytest.approx(5.0)
    for g, t in zip(fn.backward(), tin):
        np.testing.assert_allclose(g, t.grad.numpy(), atol=1e-15)


def test_triplet_inf_norm(torch):
    rng = np.random.default_rng(2)
    emb = [rng.standard_normal((5, 3)) for _ in range(3)]
    fn = lm.TripletMarginLoss(3.0, p=np.inf, reduction="sum")
    tin = [torch.tensor(e, requires_grad=True) for e in emb]
    tloss = torch.nn.TripletMarginLoss(3.0, p=float("inf"), reduction="sum")(*tin)
    tloss.backward()
    assert fn(*emb) == pytest.approx(tloss.item(), rel=1e-12)
    for g, t in zip(fn.backward(), tin):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
    assert gradcheck(fn, *emb)


def test_soft_margin_is_finite_far_on_the_wrong_side():
    """PyTorch's log1p(exp(-y x)) overflows to inf here; lamina's softplus does not."""
    fn = lm.SoftMarginLoss(reduction="sum")
    x = np.array([-1e4, 1e4, 0.0], np.float32)
    y = np.array([1.0, -1.0, 1.0], np.float32)
    assert fn(x, y) == pytest.approx(2e4 + np.log(2), rel=1e-6)
    np.testing.assert_allclose(fn.backward(), [-1.0, 1.0, -0.5])


def test_signed_targets_are_checked_by_forward_and_left_to_compute():
    x = np.array([0.5, 2.0])
    for fn, args in [(lm.HingeEmbeddingLoss(), (x, np.array([1.0, 0.0]))),
                     (lm.SoftMarginLoss(), (x, np.array([1, 0]))),
                     (lm.CosineEmbeddingLoss(), (np.ones((2, 3)), np.ones((2, 3)), np.array([1, 0])))]:
        with pytest.raises(ValueError, match=rf"{type(fn).__name__}\(.*\): expected target values 1 or -1, received 0.0 "
                                             r"\(0/1 labels\? use 2 \* y - 1\)"):
            fn(*args)
        with pytest.raises(lm.CacheError):
            fn.backward()
        assert np.isfinite(float(fn.compute(*args)))  # PyTorch's formula, unchecked
    # HingeEmbeddingLoss's formula for a value that is neither sign: both terms, as PyTorch's
    fn = lm.HingeEmbeddingLoss(margin=1.0, reduction="sum")
    assert float(fn.compute(np.array([0.25]), np.array([0.0]))) == pytest.approx(0.25 + 0.75)


def test_errors_name_the_loss_and_keep_no_gradient():
    a = np.zeros((4, 3), np.float32)
    cases = [
        (lm.MarginRankingLoss(), (a, a[:, :2], np.ones((4, 3))), lm.ShapeError,
         r"expected input2 of shape \(4, 3\) \(input1's\), received \(4, 2\)"),
        (lm.MarginRankingLoss(), (a, a.tolist(), a), lm.DTypeError,
         r"expected input2 as a numpy.ndarray or cupy.ndarray, received list"),
        (lm.MarginRankingLoss(), (a, a.astype(np.int32), a), lm.DTypeError,
         r"expected a floating-point input2, received dtype int32"),
        (lm.CosineEmbeddingLoss(), (a, a, np.ones(3)), lm.ShapeError,
         r"expected inputs of shape \(N, D\) or \(D,\) and target of shape \(N,\) or \(\), received inputs \(4, 3\) "
         r"and target \(3,\)"),
        (lm.TripletMarginLoss(), (a, a, a[:3]), lm.ShapeError,
         r"expected negative of shape \(4, 3\) \(anchor's\), received \(3, 3\)"),
        (lm.TripletMarginLoss(), (a[None], a[None], a[None]), lm.ShapeError,
         r"expected anchor, positive and negative of shape \(N, D\) or \(D,\), received \(1, 4, 3\)"),
        (lm.MultiMarginLoss(), (a, np.array([0, 1, 3, 0])), ValueError, r"expected class indices in \[0, 2\], received 3"),
        (lm.MultiMarginLoss(weight=np.ones(4)), (a, np.array([0, 1, 2, 0])), lm.ShapeError,
         r"expected input with 4 classes \(the size of weight\)"),
        (lm.MultiLabelSoftMarginLoss(), (a, np.ones((4, 2))), lm.ShapeError,
         r"expected target of shape \(4, 3\) \(input's\), received \(4, 2\)"),
        (lm.MultiLabelSoftMarginLoss(), (a, np.array(["1"] * 12).reshape(4, 3)), lm.DTypeError,
         r"expected target as numbers, received dtype <U1"),
        (lm.GaussianNLLLoss(), (a, a, np.ones((4, 2))), lm.ShapeError,
         r"expected var of the input's shape \(4, 3\), of \(4,\), or of \(4, 3\) with one axis of size 1, received \(4, 2\)"),
        (lm.GaussianNLLLoss(), (a, a, -np.ones((4, 3), np.float32)), ValueError, r"expected variances >= 0, received -1.0"),
        (lm.GaussianNLLLoss(), (a, a, -1.0), ValueError, r"expected a variance >= 0, received -1.0"),
        (lm.GaussianNLLLoss(), (a, a, "1"), lm.DTypeError, r"expected var as a numpy.ndarray or cupy.ndarray, received str"),
        (lm.PoissonNLLLoss(), (a, a[:2]), lm.ShapeError, r"expected target of shape \(4, 3\), received \(2, 3\)"),
    ]
    for fn, args, error, match in cases:
        with pytest.raises(error, match=rf"{type(fn).__name__}\(.*{match}"):
            fn(*args)
        with pytest.raises(lm.CacheError):
            fn.backward()


def test_constructor_errors():
    for make, match in [
        (lambda: lm.TripletMarginLoss(margin=0), r"TripletMarginLoss: expected a margin > 0, received 0"),
        (lambda: lm.TripletMarginLoss(p=0), r"TripletMarginLoss: expected a norm degree p > 0, received 0"),
        (lambda: lm.MarginRankingLoss(margin=np.nan), r"MarginRankingLoss: expected a finite margin, received nan"),
        (lambda: lm.MultiMarginLoss(p=3), r"MultiMarginLoss: expected p 1 or 2, received 3"),
        (lambda: lm.MultiMarginLoss(weight=np.ones((2, 2))), r"MultiMarginLoss: expected weight as a 1-d array"),
        (lambda: lm.MultiLabelSoftMarginLoss(weight=[np.inf]), r"MultiLabelSoftMarginLoss: expected a finite weight"),
        (lambda: lm.PoissonNLLLoss(eps=-1), r"PoissonNLLLoss: expected a finite eps >= 0, received -1"),
        (lambda: lm.GaussianNLLLoss(eps=0), r"GaussianNLLLoss: expected a finite eps > 0, received 0"),
        (lambda: lm.CosineEmbeddingLoss(reduction="batchmean"), r"CosineEmbeddingLoss: expected reduction 'mean', 'sum' "
                                                                r"or 'none', received 'batchmean'"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()


def test_a_siamese_network_learns_with_the_pair_gradients():
    """Both gradients of CosineEmbeddingLoss flow back through one shared
    encoder (its parameters accumulate the two), and training separates
    two classes by cosine."""
    lm.manual_seed(0)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((2, 8)) * 2
    cls = rng.integers(0, 2, (2, 64))
    x1 = (centers[cls[0]] + rng.standard_normal((64, 8))).astype(np.float32)
    x2 = (centers[cls[1]] + rng.standard_normal((64, 8))).astype(np.float32)
    y = np.where(cls[0] == cls[1], 1.0, -1.0).astype(np.float32)
    encoder = lm.Sequential(lm.Dense(8, 16), lm.Tanh(), lm.Dense(16, 4))
    fn = lm.CosineEmbeddingLoss(margin=0.0)
    opt = lm.optim.SGD(encoder.parameters(), lr=0.5)
    first = None
    for _ in range(60):
        opt.zero_grad()
        e = encoder(np.concatenate([x1, x2]))  # one batch: a second call would replace the first's cache
        e1, e2 = e[:64], e[64:]
        loss = fn(e1, e2, y)
        first = loss if first is None else first
        d1, d2 = fn.backward()
        encoder.backward(np.concatenate([d1, d2]))
        opt.step()
    assert loss < 0.35 * first
