"""Margin losses: ranking and metric learning (pairs and triplets of
embeddings), and the hinge and soft-margin losses of classification.

The pair and triplet losses compare several inputs, so they take two or
three arrays and their ``backward`` returns a tuple of gradients, one per
input they compare, in the order of the call::

    loss = loss_fn(anchor, positive, negative)
    d_anchor, d_positive, d_negative = loss_fn.backward()

Where a hinge max(0, z) sits exactly at its kink (z = 0), the gradient is
PyTorch's: it passes for the ranking, cosine, triplet and hinge-embedding
losses (their clamp_min lets z = 0 through) and not for MultiMarginLoss
(its kernel counts z > 0 only).
"""

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..layers.distance import vector_norm
from ..module import is_grad_enabled
from .base import Loss, _per_sample, _WeightedElements
from .classification import _ClassLoss


def _finite(name, what, value):
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite {what}, received {value!r}")
    return value


def _softplus(xp, z):
    """log(1 + e^z), without overflow for any z."""
    return xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))


def _sigmoid(xp, z):
    e = xp.exp(-xp.abs(z))  # in (0, 1]
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _check_signs(loss, y, strict):
    """For a target of signs 1 and -1 (similar or not): ``forward`` checks
    them (a host read on the GPU); ``compute`` leaves the values as they
    are, as PyTorch does."""
    if strict and y.size and not bool(((y == 1) | (y == -1)).all()):
        bad = float(backend.to_device(y[(y != 1) & (y != -1)][:1], "cpu")[0])
        raise ValueError(f"{loss._label()}: expected target values 1 or -1, received {bad!r}"
                         f"{' (0/1 labels? use 2 * y - 1)' if bad == 0 else ''}")


class _MarginLoss(Loss):
    """A loss with a finite ``margin``."""

    def __init__(self, margin, reduction):
        super().__init__(reduction)
        self.margin = _finite(type(self).__name__, "margin", margin)

    def extra_repr(self):
        return f"margin={self.margin}, reduction='{self.reduction}'"


class MarginRankingLoss(_MarginLoss):
    """Ranking by a margin (PyTorch's ``nn.MarginRankingLoss``): y = 1 says
    that x1 should rank above x2 by at least the margin, y = -1 the other
    way round.

        loss = max(0, m - y (x1 - x2))
        dx1 = -y, dx2 = y       where m - y (x1 - x2) >= 0, else 0

    summed, or averaged over the elements.  Called as
    ``loss_fn(x1, x2, y)`` with three arrays of one shape (y of any real
    values; 1 and -1 are the usual); ``backward()`` returns (dx1, dx2).
    """

    _grad_inputs = (0, 1)

    def __init__(self, margin=0.0, reduction="mean"):
        super().__init__(margin, reduction)

    def _loss(self, input1, input2, target, strict):
        x1, x2, y = self._arrays(("input1", input1, "float"), ("input2", input2, "float"), ("target", target, "label"))
        self._same_shape(("input1", x1), ("input2", x2), ("target", y))
        xp = backend.get_array_module(x1)
        z = x1.dtype.type(self.margin) - y * (x1 - x2)
        g1 = xp.where(z >= 0, -y, 0).astype(x1.dtype, copy=False)
        return self._elementwise(xp.maximum(z, 0), (g1, -g1), x1.size)


class CosineEmbeddingLoss(_MarginLoss):
    """Similarity of embedding pairs by their cosine (PyTorch's
    ``nn.CosineEmbeddingLoss``): y = 1 pulls a pair together, y = -1 pushes
    its cosine below the margin.  With s = x1·x2, mᵢ = |xᵢ|² + 1e-12 and
    cos = s / √(m1 m2), per pair

        loss = 1 - cos                  (y = 1)
               max(0, cos - margin)     (y = -1)
        dcos/dx1 = x2 / √(m1 m2) - cos x1 / m1     (and symmetrically for x2)
        dx1 = -dcos/dx1 (y = 1), dcos/dx1 where cos >= margin (y = -1)

    summed, or averaged over the pairs.  Called as ``loss_fn(x1, x2, y)``
    with x1 and x2 of shape (N, D) (or (D,), or (..., D): one pair per
    row) and y of shape (N,) holding 1 and -1; ``backward()`` returns
    (dx1, dx2).  ``forward`` refuses other target values (PyTorch gives
    them a zero loss; 0/1 labels are a common slip).
    """

    _grad_inputs = (0, 1)

    def __init__(self, margin=0.0, reduction="mean"):
        super().__init__(margin, reduction)

    def _loss(self, input1, input2, target, strict):
        x1, x2, y = self._arrays(("input1", input1, "float"), ("input2", input2, "float"), ("target", target, "label"))
        self._same_shape(("input1", x1), ("input2", x2))
        if x1.ndim == 0 or x1.shape[-1] == 0 or tuple(y.shape) != tuple(x1.shape[:-1]):
            raise ShapeError(f"{self._label()}: expected inputs of shape (N, D) or (D,) and target of shape (N,) "
                             f"or (), received inputs {tuple(x1.shape)} and target {tuple(y.shape)}")
        _check_signs(self, y, strict)
        xp = backend.get_array_module(x1)
        eps = x1.dtype.type(1e-12)  # PyTorch's
        m1, m2 = (x1 * x1).sum(-1) + eps, (x2 * x2).sum(-1) + eps
        den = xp.sqrt(m1 * m2)
        cos = (x1 * x2).sum(-1) / den
        pos, neg = y == 1, y == -1
        loss = xp.where(pos, 1 - cos, 0) + xp.where(neg, xp.maximum(cos - self.margin, 0), 0)
        dcos = (xp.where(neg & (cos >= self.margin), 1, 0) - xp.where(pos, 1, 0)).astype(x1.dtype)
        c, den = cos[..., None], den[..., None]
        g1 = dcos[..., None] * (x2 / den - c * x1 / m1[..., None])
        g2 = dcos[..., None] * (x1 / den - c * x2 / m2[..., None])
        return self._elementwise(loss.astype(x1.dtype, copy=False), (g1, g2), loss.size, _per_sample)


class TripletMarginLoss(Loss):
    """Metric learning by triplets (PyTorch's ``nn.TripletMarginLoss``): an
    anchor a should lie closer to its positive p than to its negative n,
    by the margin.  With the pairwise distance d(u, v) = ‖u - v + ε‖ₚ over
    the last axis,

        loss = max(0, margin + d(a, p) - d(a, n))

    and with ``swap`` (Balntas et al., 2016) d(a, n) becomes
    min(d(a, n), d(p, n)), the harder of the two negatives.  With
    g(u, v) = ∂‖u - v + ε‖ₚ/∂u = sign(w) |w|^(p-1) / ‖w‖ₚ^(p-1) for
    w = u - v + ε (0 where w = 0), on the triplets where the hinge is
    active (>= 0):

        da = g(a, p) - g(a, n),   dp = -g(a, p),   dn = g(a, n)

    (with ``swap`` the term of whichever distance was the minimum moves to
    (p, n); a tie shares it, as PyTorch's), summed or averaged over the
    triplets.  Called as ``loss_fn(anchor, positive, negative)`` with three
    arrays of shape (N, D) (or (D,)); ``backward()`` returns (da, dp, dn).
    ``p`` may be any norm degree > 0, or ``inf`` (ties share the gradient).
    """

    _grad_inputs = (0, 1, 2)

    def __init__(self, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
        super().__init__(reduction)
        self.margin = _finite("TripletMarginLoss", "margin", margin)
        if self.margin <= 0:
            raise ValueError(f"TripletMarginLoss: expected a margin > 0, received {margin!r}")
        if not float(p) > 0:
            raise ValueError(f"TripletMarginLoss: expected a norm degree p > 0, received {p!r}")
        self.p, self.eps, self.swap = float(p), _finite("TripletMarginLoss", "eps", eps), bool(swap)

    def extra_repr(self):
        s = f"margin={self.margin}, p={self.p}, eps={self.eps}"
        return s + (", swap=True" if self.swap else "") + f", reduction='{self.reduction}'"

    def _distance(self, xp, u, v):
        """(‖w‖ₚ over the last axis, its gradient with respect to w) for w = u - v + ε."""
        return vector_norm(xp, u - v + u.dtype.type(self.eps), self.p)

    def _loss(self, anchor, positive, negative, strict):
        a, p, n = self._arrays(("anchor", anchor, "float"), ("positive", positive, "float"),
                               ("negative", negative, "float"))
        self._same_shape(("anchor", a), ("positive", p), ("negative", n))
        if a.ndim not in (1, 2):
            raise ShapeError(f"{self._label()}: expected anchor, positive and negative of shape (N, D) or (D,), "
                             f"received {tuple(a.shape)}")
        xp = backend.get_array_module(a)
        d_ap, g_ap = self._distance(xp, a, p)
        d_an, g_an = self._distance(xp, a, n)
        w_an = w_pn = None
        if self.swap:
            d_pn, g_pn = self._distance(xp, p, n)
            w_an = xp.where(d_an < d_pn, 1, xp.where(d_an == d_pn, 0.5, 0)).astype(a.dtype)
            w_pn = 1 - w_an
            d_neg = xp.minimum(d_an, d_pn)
        else:
            d_neg = d_an
        z = a.dtype.type(self.margin) + d_ap - d_neg
        act = (z >= 0).astype(a.dtype)[..., None]
        if self.swap:
            g_an, g_pn = g_an * w_an[..., None], g_pn * w_pn[..., None]
            grads = (act * (g_ap - g_an), act * (-g_ap - g_pn), act * (g_an + g_pn))
        else:
            grads = (act * (g_ap - g_an), act * -g_ap, act * g_an)
        loss = xp.maximum(z, 0)
        return self._elementwise(loss, grads, loss.size, _per_sample)


class HingeEmbeddingLoss(_MarginLoss):
    """Hinge loss on a distance (PyTorch's ``nn.HingeEmbeddingLoss``): x is
    a distance (say an L1 distance between two embeddings), y = 1 for a
    similar pair and -1 for a dissimilar one.

        loss = x                    (y = 1)
               max(0, margin - x)   (y = -1)
        dx = 1 (y = 1), -1 where x <= margin (y = -1), else 0

    summed or averaged over the elements.  ``forward`` refuses target
    values other than 1 and -1; ``compute`` applies PyTorch's formula to
    any value (both terms where y is neither).
    """

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(margin, reduction)

    def _loss(self, input, target, strict):
        x, y = self._arrays(("input", input, "float"), ("target", target, "label"))
        self._same_shape(("input", x), ("target", y))
        _check_signs(self, y, strict)
        xp = backend.get_array_module(x)
        gap = x.dtype.type(self.margin) - x
        like, unlike = y != -1, y != 1
        loss = xp.where(like, x, 0) + xp.where(unlike, xp.maximum(gap, 0), 0)
        grad = (xp.where(like, 1, 0) - xp.where(unlike & (gap >= 0), 1, 0)).astype(x.dtype)
        return self._elementwise(loss.astype(x.dtype, copy=False), grad, x.size)


class SoftMarginLoss(Loss):
    """Two-class logistic loss on signs (PyTorch's ``nn.SoftMarginLoss``):
    with y = 1 or -1,

        loss = log(1 + e^(-y x)) = softplus(-y x),   dx = -y σ(-y x)

    summed or averaged over the elements.  It is BCEWithLogits with the
    target (y + 1) / 2.  The softplus is computed without overflow, so a
    logit far on the wrong side gives its (large, finite) loss where
    PyTorch's log1p(exp(.)) gives inf.  ``forward`` checks y's signs.
    """

    def _loss(self, input, target, strict):
        x, y = self._arrays(("input", input, "float"), ("target", target, "label"))
        self._same_shape(("input", x), ("target", y))
        _check_signs(self, y, strict)
        xp = backend.get_array_module(x)
        z = -y * x
        return self._elementwise(_softplus(xp, z), -y * _sigmoid(xp, z), x.size)


class MultiLabelSoftMarginLoss(_WeightedElements):
    """Multi-label one-versus-all logistic loss (PyTorch's
    ``nn.MultiLabelSoftMarginLoss``): C independent sigmoid outputs per
    sample, with targets t in {0, 1} (or soft), averaged over the classes:

        loss_n = Σ_c w_c [softplus(x_nc) - t_nc x_nc] / C
        dx_nc = w_c (σ(x_nc) - t_nc) / C

    then summed, or averaged over the N samples; ``reduction="none"`` keeps
    one loss per sample.  That is BCEWithLogits averaged per row.  Input
    and target (N, C), or (C,); ``weight`` (C,) broadcast over the classes.
    """

    def _loss(self, input, target, strict):
        x, t = self._arrays(("input", input, "float"), ("target", target, "label"))
        self._same_shape(("input", x), ("target", t))
        if x.ndim == 0 or x.shape[-1] == 0:
            raise ShapeError(f"{self._label()}: expected input of shape (N, C) or (C,), received {tuple(x.shape)}")
        xp = backend.get_array_module(x)
        c = x.dtype.type(1.0 / x.shape[-1])
        loss, grad = self._weighted(_softplus(xp, x) - t * x, _sigmoid(xp, x) - t, x)
        return self._elementwise(loss.sum(-1) * c, grad * c, loss[..., 0].size, _per_sample)


class MultiMarginLoss(_ClassLoss):
    """Multi-class hinge loss (PyTorch's ``nn.MultiMarginLoss``, the
    Crammer-Singer-style SVM loss of Weston and Watkins): every wrong class
    i should score at least the margin below the target class y.  With
    z_i = margin - x_y + x_i and w_y the target class's weight (1 without),

        loss = w_y Σ_(i≠y, z_i>0) z_iᵖ / C       (p = 1 or 2)
        dx_i = w_y p z_i^(p-1) / C   (i ≠ y, z_i > 0),   dx_y = -Σ_(i≠y) dx_i

    summed, or averaged over the predictions (not weighted: PyTorch's
    mean divides by N alone).  Input (N, C) or (C,) (and (N, C, d1, ...),
    one prediction per position, as the cross-entropy); integer target (N,)
    (or (N, d1, ...), or ()).
    """

    def __init__(self, p=1, margin=1.0, weight=None, reduction="mean"):
        super().__init__(reduction, None, weight)
        if p not in (1, 2) or isinstance(p, bool):
            raise ValueError(f"MultiMarginLoss: expected p 1 or 2, received {p!r}")
        self.p, self.margin = int(p), _finite("MultiMarginLoss", "margin", margin)

    def _options(self):
        return [f"p={self.p}", f"margin={self.margin}", *super()._options()]

    def _loss(self, input, target, strict):
        unbatched = backend.is_array(input) and input.ndim == 1
        if unbatched:  # (C,) and a 0-d target: one prediction
            input, target = input[None], target[None] if backend.is_array(target) and target.ndim == 0 else target
        rows, t, _, shape = self._rows(input, target, strict)
        xp = backend.get_array_module(rows)
        m, c = rows.shape
        bad = (t < 0) | (t >= c)  # left unchecked on the device by compute(): NaN, as the other class losses
        t = xp.where(bad, 0, t)
        idx = xp.arange(m)
        w = self._class_weight(rows)[t] if self.weight is not None else xp.ones(m, dtype=rows.dtype)
        w = xp.where(bad, xp.nan, w).astype(rows.dtype, copy=False) * rows.dtype.type(1.0 / c)
        z = rows.dtype.type(self.margin) - rows[idx, t][:, None] + rows
        active = z > 0
        active[idx, t] = False
        h = xp.where(active, z if self.p == 1 else z * z, 0)
        losses = h.sum(1) * w
        grad = None
        if is_grad_enabled():
            grad = xp.where(active, 1 if self.p == 1 else 2 * z, 0).astype(rows.dtype) * w[:, None]
            grad[idx, t] = -grad.sum(1)
        def to_input(g):  # rows (M, C) back in the input's layout
            return g[0] if unbatched else self._unflatten(xp, g, shape)

        if self.reduction == "none":
            losses = losses.reshape(() if unbatched else shape[:1] + shape[2:])
            self._save_per_element(grad, losses, lambda g, d: to_input(g * d.reshape(-1, 1)))
            return losses
        n = m if self.reduction == "mean" else 1
        self._save(None if grad is None else to_input(grad * rows.dtype.type(1.0 / n)))
        return losses.sum(dtype=np.float64) / n
