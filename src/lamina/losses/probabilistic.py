"""Losses on probabilities: binary cross-entropy (on logits or probabilities) and the KL divergence."""

import numpy as np

from .. import backend
from .base import Loss, _WeightedElements


class BCEWithLogits(_WeightedElements):
    """Sigmoid and binary cross-entropy, fused (PyTorch's ``nn.BCEWithLogitsLoss``).

    With σ the sigmoid, softplus(x) = log(1 + eᵡ) = max(x, 0) + log(1 + e^(-|x|)),
    p the positive-class weight and w the element weight:

        loss = w [p t softplus(-x) + (1 - t) softplus(x)]     (= -w [p t log σ(x) + (1 - t) log(1 - σ(x))])
        dloss/dx = w [σ(x) (p t + 1 - t) - p t]               (= w (σ(x) - t) when p = 1)

    summed, or averaged over the n elements.  softplus never exponentiates a
    positive number, so the loss is stable for any logit.  Targets may be
    soft (any value in [0, 1]).

    Args:
        weight: a rescaling weight broadcast to the input's shape (per
            sample, per output, or per element), as PyTorch's.
        pos_weight: a weight on the positive term broadcast along the last
            axis, one per class of a multi-label output: above 1 favours
            recall (n_negative / n_positive for an imbalanced class).
    """

    def __init__(self, reduction="mean", weight=None, pos_weight=None):
        super().__init__(reduction, weight)
        self.pos_weight = self._host_array(pos_weight, "pos_weight")

    def _loss(self, input, target, strict):
        x, t = self._pair(input, target)
        xp = backend.get_array_module(x)
        e = xp.exp(-xp.abs(x))  # in (0, 1]
        softplus = xp.maximum(x, 0) + xp.log1p(e)  # softplus(x); softplus(-x) = softplus(x) - x
        sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        if self.pos_weight is None:
            loss, grad = softplus - x * t, sig - t
        else:
            pt = self._on("pos_weight", x) * t
            loss = pt * (softplus - x) + (1 - t) * softplus
            grad = sig * (pt + 1 - t) - pt
        loss, grad = self._weighted(loss, grad, x)
        return self._elementwise(loss, grad.astype(x.dtype, copy=False), x.size)

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.pos_weight is None else s + f", pos_weight=(shape {self.pos_weight.shape})"


class BCELoss(_WeightedElements):
    """Binary cross-entropy on probabilities (PyTorch's ``nn.BCELoss``), for
    a model that ends in a Sigmoid:

        loss = -w [t log p + (1 - t) log(1 - p)],   each log clamped at -100
        dp = w (p - t) / max(p (1 - p), 1e-12)

    summed, or averaged over the n elements, as PyTorch's, so p = 0 or 1
    gives a finite loss and gradient; ``weight`` w (1 without) broadcasts to
    the input's shape.  Prefer :class:`BCEWithLogits` on the logits: the
    same loss without the clamps, stable for any logit.  ``forward`` checks
    that p lies in [0, 1] (a host read on the GPU; ``compute`` leaves it to
    the values: NaN outside).
    """

    def _loss(self, input, target, strict):
        p, t = self._pair(input, target)
        xp = backend.get_array_module(p)
        if strict and p.size and not bool(((p >= 0) & (p <= 1)).all()):
            raise ValueError(f"{self._label()}: expected probabilities in [0, 1] as input, received values from "
                             f"{float(p.min())} to {float(p.max())}; BCEWithLogits takes logits")
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p, log_q = xp.maximum(xp.log(p), -100), xp.maximum(xp.log1p(-p), -100)
        loss = -(t * log_p + (1 - t) * log_q)
        grad = (p - t) / xp.maximum(p * (1 - p), p.dtype.type(1e-12))
        loss, grad = self._weighted(loss, grad, p)
        return self._elementwise(loss, grad.astype(p.dtype, copy=False), p.size)


class KLDivLoss(Loss):
    """Kullback-Leibler divergence of a target distribution from the
    model's (PyTorch's ``nn.KLDivLoss``), for distillation and label
    distributions.  The input holds log-probabilities x (a LogSoftmax's
    output); the target probabilities t, or log-probabilities with
    ``log_target=True``:

        loss = Σ t (log t - x) / n   (0 where t = 0)      dx = -t / n
        log_target:  loss = Σ e^t (t - x) / n              dx = -e^t / n

    Args:
        reduction: ``"batchmean"`` (n = the batch size, the mathematical KL
            divergence per sample, the one to use), ``"mean"`` (n = every
            element, PyTorch's default), ``"sum"`` (n = 1), or ``"none"``
            (every element's term).
        log_target: the target given as log-probabilities.
    """

    _reductions = ("mean", "batchmean", "sum", "none")

    def __init__(self, reduction="mean", log_target=False):
        super().__init__(reduction)
        self.log_target = bool(log_target)

    def extra_repr(self):
        return f"reduction='{self.reduction}'" + (", log_target=True" if self.log_target else "")

    def _loss(self, input, target, strict):
        x, t = self._pair(input, target)
        xp = backend.get_array_module(x)
        n = x.shape[0] if self.reduction == "batchmean" and x.ndim else x.size
        if self.log_target:
            pt = xp.exp(t)
            loss = pt * (t - x)
        else:
            pt = t
            with np.errstate(divide="ignore", invalid="ignore"):
                loss = xp.where(t > 0, t * (xp.log(xp.where(t > 0, t, 1)) - x), 0)
        return self._elementwise(loss, (-pt).astype(x.dtype, copy=False), n)
