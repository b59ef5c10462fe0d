"""Regression losses: squared, absolute, smooth L1 and Huber, and the
Poisson and Gaussian negative log-likelihoods."""

import numpy as np

from .. import backend
from ..errors import ShapeError
from .base import Loss


class MSELoss(Loss):
    """loss = Σ (x - t)² / n  (n = number of elements for the mean, 1 for the sum).

    Backward: dx = 2 (x - t) / n.
    """

    def _loss(self, input, target, strict):
        diff = self._diff(input, target)
        return self._elementwise(diff * diff, diff * diff.dtype.type(2), diff.size)


class L1Loss(Loss):
    """loss = Σ |x - t| / n.  Backward: dx = sign(x - t) / n (0 where x = t, as PyTorch)."""

    def _loss(self, input, target, strict):
        diff = self._diff(input, target)
        xp = backend.get_array_module(diff)
        return self._elementwise(xp.abs(diff), xp.sign(diff), diff.size)


class SmoothL1Loss(Loss):
    """PyTorch's ``nn.SmoothL1Loss``: with d = x - t,

        loss(d) = d² / (2β) where |d| < β, |d| - β/2 elsewhere   (β = 0: L1)
        dloss/dd = d / β where |d| < β, sign(d) elsewhere

    summed, or averaged over the n elements.
    """

    _scale = 1.0  # HuberLoss is this loss times δ

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        if not beta >= 0 or not np.isfinite(beta):
            raise ValueError(f"SmoothL1Loss: expected a finite beta >= 0, received {beta!r}")
        self.beta = float(beta)

    def _loss(self, input, target, strict):
        diff = self._diff(input, target)
        xp = backend.get_array_module(diff)
        a, b, k = xp.abs(diff), diff.dtype.type(self.beta), diff.dtype.type(self._scale)
        inner = a < b
        loss = xp.where(inner, diff * diff * diff.dtype.type(0.5 / (self.beta or 1)), a - b / 2) * k
        grad = xp.where(inner, diff / (b or 1), xp.sign(diff)) * k
        return self._elementwise(loss, grad, diff.size)

    def extra_repr(self):
        return f"reduction='{self.reduction}', beta={self.beta}"


class HuberLoss(SmoothL1Loss):
    """PyTorch's ``nn.HuberLoss``: with d = x - t,

        loss(d) = d² / 2 where |d| <= δ, δ (|d| - δ/2) elsewhere
        dloss/dd = d where |d| <= δ, δ sign(d) elsewhere

    which is δ times SmoothL1Loss with β = δ (the two pieces meet at
    |d| = δ, value and slope); summed or averaged over the n elements.
    """

    def __init__(self, reduction="mean", delta=1.0):
        if not delta > 0 or not np.isfinite(delta):
            raise ValueError(f"HuberLoss: expected a finite delta > 0, received {delta!r}")
        super().__init__(reduction, beta=delta)
        self.delta = self._scale = float(delta)

    def extra_repr(self):
        return f"reduction='{self.reduction}', delta={self.delta}"


class PoissonNLLLoss(Loss):
    """Negative log-likelihood of counts t under a Poisson distribution of
    rate λ (PyTorch's ``nn.PoissonNLLLoss``), up to the constant log t!:

        log_input=True  (x = log λ):  loss = eˣ - t x,            dx = eˣ - t
        log_input=False (x = λ):      loss = x - t log(x + eps),  dx = 1 - t / (x + eps)

    ``full=True`` adds Stirling's approximation of log t!,
    t log t - t + ½ log(2π t), where t > 1 (no gradient: it holds the
    target alone).  Summed, or averaged over the elements.
    """

    def __init__(self, log_input=True, full=False, eps=1e-8, reduction="mean"):
        super().__init__(reduction)
        if not eps >= 0 or not np.isfinite(eps):
            raise ValueError(f"PoissonNLLLoss: expected a finite eps >= 0, received {eps!r}")
        self.log_input, self.full, self.eps = bool(log_input), bool(full), float(eps)

    def extra_repr(self):
        return (f"log_input={self.log_input}, full={self.full}, eps={self.eps}, reduction='{self.reduction}'")

    def _loss(self, input, target, strict):
        x, t = self._pair(input, target)
        xp = backend.get_array_module(x)
        if self.log_input:
            rate = xp.exp(x)
            loss, grad = rate - t * x, rate - t
        else:
            shifted = x + x.dtype.type(self.eps)
            with np.errstate(divide="ignore", invalid="ignore"):
                loss, grad = x - t * xp.log(shifted), 1 - t / shifted
        if self.full:
            big = t > 1
            s = xp.where(big, t, 2)  # any value > 1 where the term is masked
            loss = loss + xp.where(big, s * xp.log(s) - s + x.dtype.type(0.5) * xp.log(x.dtype.type(2 * np.pi) * s), 0)
        return self._elementwise(loss, grad, x.size)


class GaussianNLLLoss(Loss):
    """Negative log-likelihood of a target under a Gaussian whose mean and
    variance the model predicts (PyTorch's ``nn.GaussianNLLLoss``), for
    regression with its uncertainty.  With v = max(var, eps) and
    d = input - target,

        loss = ½ (log v + d² / v)   (+ ½ log 2π with ``full``)
        dinput = d / v,    dvar = ½ (1 / v - d² / v²)

    summed, or averaged over the elements.  As PyTorch's, the clamp at eps
    stabilises the value but not the gradient: dvar is taken at v and
    passed through as if unclamped.

    Called as ``loss_fn(input, target, var)``: var has the input's shape
    (one variance per output), or the input's shape without its last axis,
    or the input's with one axis of size 1 (shared along it), or is a
    number (a fixed variance).  ``backward()`` returns (dinput, dvar), dvar
    of var's shape (None for a number).  ``forward`` refuses a negative
    variance (a host read on the GPU; ``compute`` leaves it to the values).
    """

    _grad_inputs = (0, 2)

    def __init__(self, full=False, eps=1e-6, reduction="mean"):
        super().__init__(reduction)
        if not eps > 0 or not np.isfinite(eps):
            raise ValueError(f"GaussianNLLLoss: expected a finite eps > 0, received {eps!r}")
        self.full, self.eps = bool(full), float(eps)

    def extra_repr(self):
        return ("full=True, " if self.full else "") + f"eps={self.eps}, reduction='{self.reduction}'"

    def _variance(self, var, x, strict):
        """var as an array that broadcasts to x, and how to bring a gradient
        of x's shape back to var's (None: var is a number)."""
        label = self._label()
        if isinstance(var, (int, float, np.integer, np.floating)) and not isinstance(var, bool):
            if not var >= 0:
                raise ValueError(f"{label}: expected a variance >= 0, received {var!r}")
            return x.dtype.type(var), None
        v = self._arrays(("input", x, "float"), ("var", var, "float"))[1]
        xs, vs = tuple(x.shape), tuple(v.shape)
        if vs == xs[:-1] and xs:
            v = v[..., None]
        elif vs != xs and not (len(vs) == len(xs) and sum(a != b for a, b in zip(xs, vs)) == 1
                               and sum(b for a, b in zip(xs, vs) if a != b) == 1):
            raise ShapeError(f"{label}: expected var of the input's shape {xs}, of {xs[:-1]}, or of {xs} with one "
                             f"axis of size 1, received {vs}")
        if strict and v.size and bool((v < 0).any()):
            raise ValueError(f"{label}: expected variances >= 0, received {float(v.min())}")
        axes = tuple(i for i, (a, b) in enumerate(zip(xs, v.shape)) if a != b)

        def to_var(g):
            return g.sum(axis=axes, keepdims=True).reshape(vs) if axes else g
        return v, to_var

    def _loss(self, input, target, var, strict):
        x, t = self._pair(input, target)
        v, to_var = self._variance(var, x, strict)
        xp = backend.get_array_module(x)
        v = xp.maximum(v, x.dtype.type(self.eps))
        d = x - t
        d2_v = d * d / v
        loss = x.dtype.type(0.5) * (xp.log(v) + d2_v)
        if self.full:
            loss = loss + x.dtype.type(0.5 * np.log(2 * np.pi))
        gx = d / v
        gv = None if to_var is None else x.dtype.type(0.5) * (1 - d2_v) / v

        def both(g, scale):  # (dinput, dvar) for the losses' gradient ``scale``
            return g[0] * scale, None if to_var is None else to_var(g[1] * scale)

        if self.reduction == "none":
            self._save_per_element((gx, gv), loss, both)
            return loss
        n = x.size if self.reduction == "mean" else 1
        self._save(both((gx, gv), x.dtype.type(1.0 / n)))
        return loss.sum(dtype=np.float64) / n
