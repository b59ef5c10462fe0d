"""Losses over class indices: softmax cross-entropy and the negative log-likelihood."""

import numpy as np

from .. import backend, ops
from ..errors import ShapeError
from ..module import is_grad_enabled
from .base import Loss


class _ClassLoss(Loss):
    """What the losses over class indices share: ``weight`` and
    ``ignore_index`` (validated as PyTorch's), the label check, and the
    logits flattened to one row per prediction."""

    _input_kind = "logits"

    def __init__(self, reduction, ignore_index, weight):
        super().__init__(reduction)
        name = type(self).__name__
        self.weight = None
        if weight is not None:
            w = backend.to_device(weight, "cpu") if backend.is_array(weight) else np.asarray(weight)
            if w.ndim != 1 or w.size == 0 or w.dtype.kind not in "fiu":
                raise ValueError(f"{name}: expected weight as a 1-d array of C class weights, "
                                 f"received shape {tuple(w.shape)} of dtype {w.dtype}")
            w = w.astype(np.float64)
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"{name}: expected finite, non-negative class weights")
            self.weight = w
        if ignore_index is not None and not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
            raise ValueError(f"{name}: expected ignore_index as an int or None, received {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)

    def _rows(self, input, target, strict):
        """Validate; returns (rows (M, C) in float32 at least, targets (M,)
        int64 with ignored ones set to 0, keep (M,) bool or None, the
        input's shape)."""
        self._check_pair(input, target, "int")
        input = self._widen(input)
        label = self._label()
        if input.ndim < 2:
            raise ShapeError(f"{label}: expected input {self._input_kind} of shape (N, C) or (N, C, d1, ...), "
                             f"received {tuple(input.shape)}")
        shape, c = tuple(input.shape), input.shape[1]
        want = shape[:1] + shape[2:]
        if tuple(target.shape) != want:
            raise ShapeError(f"{label}: expected target of shape {want} to match input {shape}, received {tuple(target.shape)}")
        if input.size == 0:
            raise ShapeError(f"{label}: expected at least one row, received input of shape {tuple(input.shape)}")
        if self.weight is not None and self.weight.size != c:
            raise ShapeError(f"{label}: expected input with {self.weight.size} classes (the size of weight), "
                             f"received input of shape {shape}")
        xp = backend.get_array_module(input)
        if input.ndim > 2:  # (N, C, d...) -> one row per prediction
            input = xp.moveaxis(input, 1, -1).reshape(-1, c)
            target = target.reshape(-1)
        target = target.astype(xp.int64, copy=False)
        keep = None
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target = xp.where(keep, target, 0)  # any class: the row is zeroed
        if strict or xp is np:
            self.check_labels(target, c)
        return input, target, keep, shape

    @staticmethod
    def _unflatten(xp, grad, shape):
        """A gradient of rows (M, C) back in the input's (N, C, d1, ...) layout."""
        if len(shape) <= 2:
            return grad
        return xp.moveaxis(grad.reshape(shape[:1] + shape[2:] + (shape[1],)), -1, 1)

    def _per_prediction(self, xp, losses, grad, shape):
        """reduction="none": cache the rows' gradient (M, C) and return the
        M losses in the target's shape (N, d1, ...)."""
        losses = losses.reshape(shape[:1] + shape[2:])
        self._save_per_element(grad, losses, lambda g, d: self._unflatten(xp, g * d.reshape(-1, 1), shape))
        return losses

    def _class_weight(self, x):
        """The class weights on x's device and in its dtype."""
        return self._on_device("weight", x)

    def _weighted_mean(self, xp, loss, row_weight):
        """(loss, gradient scale): for the mean, the loss divided by the rows'
        total weight and 1 / that total (NaN loss and zero gradient when it
        is 0, every row ignored or weightless, as PyTorch's loss); for the
        sum, the loss and 1."""
        if self.reduction != "mean":
            return loss, row_weight.dtype.type(1)
        total = row_weight.astype(np.float64).sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = loss / total
        return loss, xp.where(total > 0, 1 / xp.maximum(total, np.finfo(np.float64).tiny), 0).astype(row_weight.dtype)

    def check_labels(self, target, num_classes):
        """Raise a ValueError naming the loss unless every class index in
        ``target`` lies in [0, num_classes) (a host synchronisation for a
        CuPy target)."""
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{self._label()}: expected class indices in [0, {num_classes - 1}], received {bad}")

    def extra_repr(self):
        return ", ".join([f"reduction='{self.reduction}'", *self._options()])

    def _options(self):
        parts = [] if self.ignore_index is None else [f"ignore_index={self.ignore_index}"]
        return parts if self.weight is None else parts + [f"weight=({self.weight.size} classes)"]


class SoftmaxCrossEntropy(_ClassLoss):
    """Softmax followed by cross-entropy, fused (PyTorch's ``nn.CrossEntropyLoss``).

    With p = softmax(x) per row, q = (1 - ε)·onehot(y) + ε/C (label smoothing ε),
    and m = max_c x_c:

        loss_i = log Σ_c e^(x_c - m) + Σ_c q_c (m - x_c)     (= -Σ_c q_c log p_c)
        dloss_i/dx_c = p_c - q_c

    Written this way nothing overflows: logits of ±1e4 or all equal to 1e8
    give a finite loss and gradient.  The mean divides by N.  The forward
    computes the gradient in the same pass (lamina's C++ kernel on the CPU)
    and caches it; backward returns it.

    ``ignore_index``: targets equal to it (padding tokens, say) contribute
    neither loss nor gradient, and the mean divides by the number of the
    others (NaN when there are none, as PyTorch).  PyTorch's default is -100;
    lamina's is None (every target is a class, and the fused kernel's
    result is used as it is), so pass ``ignore_index=-100`` for PyTorch's
    behaviour.

    ``weight``: a rescaling weight w_c for each class (imbalanced classes), as
    PyTorch's: the row of a target y counts w_y times, and the mean divides
    by Σ_i w_(y_i) over the rows (not ignored) instead of their number.  With
    label smoothing the smoothed term weighs each class by its own w_c:

        loss_i = (1 - ε) w_y (-log p_y) + (ε/C) Σ_c w_c (-log p_c)
        dloss_i/dx_c = (1 - ε) w_y (p_c - [c = y]) + (ε/C) (p_c Σ_k w_k - w_c)

    When no row has weight (all ignored, or all of weightless classes), the
    mean is NaN, as in PyTorch, and the gradient zero (PyTorch's is NaN
    when the weights are what sums to zero).  The weighted loss runs the
    fused kernel (without smoothing) and then a few elementwise passes over
    the (N, C) gradient on the same device.

    Shape:
        input: (N, C) logits, or (N, C, d1, ...) (a class axis second, as
            PyTorch: one prediction per position of a sequence or an image);
        target: (N,) or (N, d1, ...) integer class indices in [0, C); or
            class probabilities, floating, of the input's shape (soft
            labels: mixup, distillation), as PyTorch's; see ``_soft_loss``
            for the formulas.  ``ignore_index`` applies to indices only.
        The mean is over every prediction (N·d1·...).
    """

    def __init__(self, reduction="mean", label_smoothing=0.0, ignore_index=None, weight=None):
        super().__init__(reduction, ignore_index, weight)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"SoftmaxCrossEntropy: expected label_smoothing in [0, 1], received {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def _loss(self, input, target, strict):
        if backend.is_array(target) and (target.dtype.kind == "f" or backend.is_low_precision(target.dtype)):
            return self._soft_loss(input, target)
        input, target, keep, shape = self._rows(input, target, strict)
        xp = backend.get_array_module(input)
        n = input.shape[0]
        need_grad = is_grad_enabled()
        if self.weight is not None:
            rows, wy, grad = self._weighted(xp, input, target, keep, need_grad)
            if self.reduction == "none":
                return self._per_prediction(xp, rows, grad, shape)
            loss, scale = self._weighted_mean(xp, rows.astype(np.float64).sum(), wy)
            if grad is not None:
                grad *= scale
        elif keep is None and self.reduction != "none":
            scale = 1.0 / n if self.reduction == "mean" else 1.0
            rows, grad = ops.softmax_xent(input, target, self.label_smoothing, scale, need_grad)
            loss = rows.sum(dtype=np.float64) * scale
        else:  # on the device throughout: no wait for the count
            rows, grad = ops.softmax_xent(input, target, self.label_smoothing, 1.0, need_grad)
            if keep is None:  # reduction "none"
                return self._per_prediction(xp, rows, grad, shape)
            weight = keep.astype(np.float64)
            if self.reduction == "none":
                kept = keep.astype(rows.dtype)
                return self._per_prediction(xp, rows * kept, None if grad is None else grad * kept[:, None], shape)
            loss = (rows.astype(np.float64) * weight).sum()
            if self.reduction == "mean":
                count = keep.sum()
                with np.errstate(invalid="ignore"):
                    loss = loss / count  # all ignored: NaN, and a zero gradient, as PyTorch
                weight = weight / xp.maximum(count, 1)
            if grad is not None:
                grad *= weight.astype(grad.dtype)[:, None]
        self._save(None if grad is None else self._unflatten(xp, grad, shape))
        return loss

    def _weighted(self, xp, x, target, keep, need_grad):
        """The class-weighted loss of each row, each row's weight w_y (0 where
        ignored) and the gradient of each row's loss (or None); see the
        class docstring for the formulas."""
        n, c = x.shape
        w = self._class_weight(x)
        rows = xp.arange(n)
        nll, grad = ops.softmax_xent(x, target, 0.0, 1.0, need_grad=need_grad)  # -log p_y and p - onehot
        wy = w[target]  # each row's weight
        if keep is not None:
            wy = wy * keep.astype(x.dtype)
        eps = self.label_smoothing
        loss = nll * (wy * x.dtype.type(1 - eps))
        if eps:
            m = x.max(axis=1)
            lse_m = nll + (x[rows, target] - m)  # log Σ e^(x - m) >= 0, from nll = lse - x_y
            # -Σ_c w_c log p_c = Σ_c w_c (m - x_c) + (Σ_c w_c) (lse - m)
            smooth = (m[:, None] - x) @ w + w.sum() * lse_m
            if keep is not None:
                smooth = smooth * keep.astype(x.dtype)
            loss = loss + x.dtype.type(eps / c) * smooth
        if not need_grad:
            return loss, wy, None
        g = grad * (wy * x.dtype.type(1 - eps))[:, None]  # (1 - ε) w_y (p - onehot)
        if eps:  # + (ε/C) (p Σ_k w_k - w)
            p = grad
            p[rows, target] += 1
            term = (p * w.sum() - w) * x.dtype.type(eps / c)
            g += term if keep is None else term * keep.astype(x.dtype)[:, None]
        return loss, wy, g

    def _soft_loss(self, input, target):
        """Class probabilities as the target (t of the input's shape, each row
        a distribution: mixup, distillation), as PyTorch's: with
        q = (1 - ε) t + ε/C and w_c the class weights (1 without),

            loss_i = -Σ_c w_c q_c log p_c
            dloss_i/dx_c = p_c Σ_k w_k q_k - w_c q_c

        and the mean divides by the number of rows M (not by a weight sum, as
        for class indices).  Computed in float32 at least, with
        log p = x - m - log Σ e^(x - m), so nothing overflows."""
        label = self._label()
        self._check_pair(input, target, "float")
        if self.ignore_index is not None:
            raise ValueError(f"{label}: ignore_index applies to class indices; received a probability target "
                             f"(dtype {target.dtype}): mask those rows in the target instead")
        if tuple(target.shape) != tuple(input.shape):
            want = tuple(input.shape[:1] + input.shape[2:])
            raise ShapeError(f"{label}: expected integer class indices of shape {want} or class probabilities of the "
                             f"input's shape {tuple(input.shape)}, received a {target.dtype} target of shape "
                             f"{tuple(target.shape)}")
        if input.ndim < 2 or input.size == 0:
            raise ShapeError(f"{label}: expected input logits of shape (N, C) or (N, C, d1, ...) with at least one "
                             f"row, received {tuple(input.shape)}")
        shape, c = tuple(input.shape), input.shape[1]
        if self.weight is not None and self.weight.size != c:
            raise ShapeError(f"{label}: expected input with {self.weight.size} classes (the size of weight), "
                             f"received input of shape {shape}")
        x = self._widen(input)
        xp = backend.get_array_module(x)
        if x.ndim > 2:  # (N, C, d...) -> one row per prediction
            x, target = (xp.moveaxis(a, 1, -1).reshape(-1, c) for a in (x, target))
        q = target.astype(x.dtype)
        if self.label_smoothing:
            q = q * x.dtype.type(1 - self.label_smoothing) + x.dtype.type(self.label_smoothing / c)
        wq = q if self.weight is None else q * self._class_weight(x)
        z = x - x.max(axis=1, keepdims=True)
        lse = xp.log(xp.exp(z).sum(axis=1, keepdims=True))
        logp = z - lse
        rows = -(wq * logp).sum(axis=1, dtype=np.float64)
        scale = 1.0 / x.shape[0] if self.reduction == "mean" else 1.0
        grad = None
        if is_grad_enabled():
            grad = (xp.exp(logp) * wq.sum(axis=1, keepdims=True) - wq) * x.dtype.type(scale)
        if self.reduction == "none":
            return self._per_prediction(xp, rows.astype(x.dtype), grad, shape)
        self._save(None if grad is None else self._unflatten(xp, grad, shape))
        return rows.sum() * scale

    def _options(self):
        return [f"label_smoothing={self.label_smoothing}", *super()._options()]


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of log-probabilities (PyTorch's ``nn.NLLLoss``;
    after :class:`lamina.LogSoftmax` it is the cross-entropy, which
    :class:`SoftmaxCrossEntropy` computes fused).

        loss_i = -w_(y_i) x_(i, y_i),   dloss/dx_(i, c) = -w_(y_i) [c = y_i]

    summed, or divided by Σ_i w_(y_i) for the mean (the number of rows
    without weights).  ``weight`` (C,) and ``ignore_index`` (default None,
    as :class:`SoftmaxCrossEntropy`; PyTorch's is -100) as in PyTorch.

    Shape: input (N, C) or (N, C, d1, ...); target (N,) or (N, d1, ...).
    """

    _input_kind = "log-probabilities"

    def __init__(self, reduction="mean", weight=None, ignore_index=None):
        super().__init__(reduction, ignore_index, weight)

    def _loss(self, input, target, strict):
        rows, t, keep, shape = self._rows(input, target, strict)
        xp = backend.get_array_module(rows)
        c = rows.shape[1]
        # labels left unchecked on the device (compute() on CuPy): NaN where out of range, as the fused loss
        bad = (t < 0) | (t >= c)
        t = xp.where(bad, 0, t)
        w = self._class_weight(rows)[t] if self.weight is not None else xp.ones(t.shape, dtype=rows.dtype)
        if keep is not None:
            w = w * keep.astype(rows.dtype)
        w = xp.where(bad, xp.nan, w).astype(rows.dtype, copy=False)
        idx = xp.arange(t.size)
        if self.reduction == "none":
            loss, scale = -(rows[idx, t] * w), 1
        else:
            loss, scale = self._weighted_mean(xp, -(rows[idx, t].astype(np.float64) * w).sum(), w)
        grad = None
        if is_grad_enabled():
            grad = xp.zeros_like(rows)
            grad[idx, t] = -w * scale
        if self.reduction == "none":
            return self._per_prediction(xp, loss, grad, shape)
        self._save(None if grad is None else self._unflatten(xp, grad, shape))
        return loss
