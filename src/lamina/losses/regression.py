"""Regression losses: squared, absolute, smooth L1 and Huber."""

import numpy as np

from .. import backend
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
