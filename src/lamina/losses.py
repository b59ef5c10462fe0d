"""Losses.

A loss is called like a function, ``loss = loss_fn(logits, target)``, and
returns the loss as a Python float.  ``loss_fn.backward()`` then returns
d(loss)/d(logits), to be passed to the model's ``backward``.  Losses have no
parameters, so they are not layers, but they validate their inputs the same
way and name themselves in every error.

A Python float makes the host wait for the GPU at every step.
``loss_fn.compute(logits, target)`` does the same work but returns the loss
as a 0-d float64 array on the logits' device, so the host can go on queueing
the backward and the update (and a whole step can be captured in a CUDA
graph); read it with ``float(loss)`` when you log it.

``reduction="none"`` keeps one loss per element (per sample for CTCLoss,
per prediction for the class losses), as PyTorch's: the call returns them
as an array, and ``loss_fn.backward(dloss)`` takes their gradient (of the
returned shape: per-sample weights, say) and returns the input's.  With
"mean" or "sum", ``backward()`` takes no argument, or a number that scales
the gradient.
"""

from typing import Callable, NamedTuple

import numpy as np

from . import backend, ops
from .errors import CacheError, DeviceError, DTypeError, ShapeError
from .module import is_grad_enabled

_REDUCTIONS = ("mean", "sum", "none")


class _PerElement(NamedTuple):
    """The cache of a loss with reduction="none": the gradient of every
    element's loss with respect to the input (one row per prediction for the
    class losses), the losses' shape, and ``apply(grad, dloss)``, which
    weighs it by the incoming gradient of those losses and returns dx."""

    grad: object
    shape: tuple
    apply: Callable


def _times(grad, dloss):
    """dx of an elementwise loss: each element's derivative times its loss's gradient."""
    return grad * dloss


class Loss:
    """Base class: input validation, the reductions and the forward cache."""

    _reductions = _REDUCTIONS

    def __init__(self, reduction="mean"):
        if reduction not in self._reductions:
            names = ", ".join(repr(r) for r in self._reductions[:-1]) + f" or {self._reductions[-1]!r}"
            raise ValueError(f"{type(self).__name__}: expected reduction {names}, received {reduction!r}")
        self.reduction = reduction
        self._cache = None

    def _label(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self):
        return f"reduction='{self.reduction}'"

    def __repr__(self):
        return self._label()

    def __call__(self, input, target):
        return self.forward(input, target)

    def forward(self, input, target):
        """The loss as a Python float (on the GPU this waits for the result);
        with reduction="none", the array of losses on the input's device."""
        loss = self._loss(input, target, strict=True)
        return loss if self.reduction == "none" else float(loss)

    def compute(self, input, target):
        """The loss as a 0-d float64 array on the input's device, without
        waiting for the GPU; the gradient is cached as by ``forward``.  On
        CuPy, checks that need the values on the host are left to the
        device: SoftmaxCrossEntropy gives a NaN loss (and NaN gradient rows)
        for class indices out of range instead of raising."""
        if type(self)._loss is Loss._loss:  # a subclass that defines forward() only
            return self.forward(input, target)
        return self._loss(input, target, strict=False)

    def _elementwise(self, loss, grad, n):
        """Reduce an elementwise loss: ``loss`` and ``grad`` (its derivative)
        per element of the input, ``n`` the mean's divisor.  Caches the
        gradient and returns the reduced loss (a 0-d float64 array), or the
        losses themselves for reduction="none"."""
        if self.reduction == "none":
            self._save_per_element(grad, loss, _times)
            return loss
        n = n if self.reduction in ("mean", "batchmean") else 1
        self._save(grad if n == 1 else grad * grad.dtype.type(1.0 / n))
        return loss.sum(dtype=np.float64) / n

    def _save_per_element(self, grad, losses, apply):
        """Cache for reduction="none" (see :class:`_PerElement`)."""
        self._save(None if grad is None else _PerElement(grad, tuple(losses.shape), apply))

    def _loss(self, input, target, strict):
        """The loss as a 0-d float64 array; ``strict``: validate values that
        live on the device too (a host synchronisation on the GPU)."""
        raise NotImplementedError

    def _check_pair(self, input, target, target_kind):
        """Validate ``input`` (floating) and ``target`` (same device; ``target_kind``
        'int' for class indices, 'float' for values) before anything is cached."""
        label = self._label()
        for what, a in (("input", input), ("target", target)):
            if not backend.is_array(a):
                raise DTypeError(f"{label}: expected {what} as a numpy.ndarray or cupy.ndarray, received {type(a).__name__}")
        if input.dtype.kind != "f" and not backend.is_low_precision(input.dtype):
            raise DTypeError(f"{label}: expected a floating-point input, received dtype {input.dtype}")
        if backend.device_of(input) != backend.device_of(target):
            raise DeviceError(
                f"{label}: expected target on {backend.device_of(input)} (the input's device), received it on {backend.device_of(target)}"
            )
        if target_kind == "int" and target.dtype.kind not in "iu":
            raise DTypeError(f"{label}: expected integer class indices as target, received dtype {target.dtype}")
        if target_kind == "float" and target.dtype.kind != "f" and not backend.is_low_precision(target.dtype):
            raise DTypeError(f"{label}: expected a floating-point target, received dtype {target.dtype}")

    def _pair(self, input, target):
        """(x, t) validated for an elementwise loss (a floating target of the
        input's shape), x in float32 at least and t in x's dtype."""
        self._check_pair(input, target, "float")
        if tuple(input.shape) != tuple(target.shape):
            raise ShapeError(f"{self._label()}: expected target of shape {tuple(input.shape)}, received {tuple(target.shape)}")
        x = self._widen(input)
        return x, target.astype(x.dtype, copy=False)

    def _diff(self, input, target):
        """x - t for a regression loss, validated (same shape), in float32 at least."""
        x, t = self._pair(input, target)
        return x - t

    @staticmethod
    def _widen(x):
        """Losses reduce in float32 at least: 16-bit inputs (mixed precision)
        are widened, and their gradient comes back in float32."""
        return x.astype(np.float32) if backend.is_low_precision(x.dtype) else x

    def _save(self, grad):
        self._cache = grad if is_grad_enabled() else None

    def _on_device(self, name, x):
        """The host float64 array attribute ``name`` (a weight) on x's device
        and in its dtype, kept for the next call with the same device and dtype."""
        here = self.__dict__.setdefault("_here", {})
        a = here.get(name)
        if a is None or backend.device_of(a) != backend.device_of(x) or a.dtype != x.dtype:
            a = here[name] = backend.to_device(getattr(self, name).astype(x.dtype), backend.device_of(x))
        return a

    def backward(self, dloss=None):
        """d(loss)/d(input) for the last forward; clears the cache.

        ``dloss``: for reduction="none", the gradient of the returned losses
        (an array of their shape, on their device), required; otherwise
        None, or a number (a Python scalar or a 0-d array) that scales the
        gradient, as ``loss.backward(gradient)`` in PyTorch.  A bad ``dloss``
        raises and keeps the cache."""
        label = self._label()
        if self._cache is None:
            raise CacheError(f"{label}: backward() called without a forward() with gradients enabled")
        cache = self._cache
        if isinstance(cache, _PerElement):
            grad = self._check_dloss(cache, dloss)
            self._cache = None
            return grad
        if dloss is not None:
            if backend.is_array(dloss) and dloss.ndim == 0:
                if backend.device_of(dloss) != backend.device_of(cache):
                    raise DeviceError(f"{label}: expected dloss on {backend.device_of(cache)}, received it on "
                                      f"{backend.device_of(dloss)}")
                dloss = dloss.astype(cache.dtype)
            elif isinstance(dloss, (int, float, np.integer, np.floating)) and not isinstance(dloss, bool):
                dloss = cache.dtype.type(dloss)
            elif backend.is_array(dloss):
                raise ShapeError(f"{label}: expected dloss as a number (the loss is a scalar) or None, received an "
                                 f"array of shape {tuple(dloss.shape)}")
            else:
                raise DTypeError(f"{label}: expected dloss as a number (the loss is a scalar) or None, received "
                                 f"{type(dloss).__name__}")
            self._cache = None
            return cache * dloss
        self._cache = None
        return cache

    def _check_dloss(self, cache, dloss):
        """dx for reduction="none" from a validated ``dloss`` of the losses' shape."""
        label = self._label()
        if dloss is None:
            raise ValueError(f"{label}: reduction='none' gives one loss per element; backward(dloss) needs their "
                             f"gradient, an array of shape {cache.shape}")
        if not backend.is_array(dloss):
            raise DTypeError(f"{label}: expected dloss as a numpy.ndarray or cupy.ndarray, received {type(dloss).__name__}")
        if backend.device_of(dloss) != backend.device_of(cache.grad):
            raise DeviceError(f"{label}: expected dloss on {backend.device_of(cache.grad)}, received it on "
                              f"{backend.device_of(dloss)}")
        if dloss.dtype.kind != "f" and not backend.is_low_precision(dloss.dtype):
            raise DTypeError(f"{label}: expected a floating-point dloss, received dtype {dloss.dtype}")
        if tuple(dloss.shape) != cache.shape:
            raise ShapeError(f"{label}: expected dloss of shape {cache.shape} (the losses'), received {tuple(dloss.shape)}")
        return cache.apply(cache.grad, dloss.astype(cache.grad.dtype, copy=False))


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


class _WeightedElements(Loss):
    """An elementwise loss with an optional ``weight`` per element,
    broadcast to the input's shape (PyTorch's rescaling weight), kept on the
    host and moved to the input's device and dtype when used."""

    def __init__(self, reduction="mean", weight=None):
        super().__init__(reduction)
        self.weight = self._host_array(weight, "weight")

    def _host_array(self, a, what):
        if a is None:
            return None
        a = backend.to_device(a, "cpu") if backend.is_array(a) else np.asarray(a)
        if a.dtype.kind not in "fiu" or a.size == 0:
            raise ValueError(f"{type(self).__name__}: expected {what} as a non-empty array of numbers, received "
                             f"shape {tuple(a.shape)} of dtype {a.dtype}")
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{type(self).__name__}: expected a finite {what}")
        return a

    def _on(self, what, x):
        """The host array ``what`` on x's device and in its dtype, checked to
        broadcast to x's shape."""
        a = getattr(self, what)
        try:
            np.broadcast_shapes(a.shape, tuple(x.shape))
        except ValueError:
            raise ShapeError(f"{self._label()}: expected an input whose shape {what} {a.shape} broadcasts to, "
                             f"received shape {tuple(x.shape)}") from None
        return self._on_device(what, x)

    def _weighted(self, loss, grad, x):
        if self.weight is None:
            return loss, grad
        w = self._on("weight", x)
        return loss * w, grad * w

    def extra_repr(self):
        s = f"reduction='{self.reduction}'"
        return s if self.weight is None else s + f", weight=(shape {self.weight.shape})"


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


class CTCLoss(Loss):
    """Connectionist temporal classification (Graves et al., 2006), PyTorch's
    ``nn.CTCLoss``: the negative log-probability of a label sequence summed
    over every alignment of it to the T input steps, for speech and
    handwriting models whose outputs are not aligned with their labels.

    Called as ``loss_fn(log_probs, targets, input_lengths, target_lengths)``.

    The forward-backward derivation, with y_t(c) = exp(log_probs[t, c]), the
    label extended with blanks l' = (b, l_1, b, l_2, ..., b) of length
    S' = 2S + 1, and a path allowed to move from s to s, s + 1, or s + 2 when
    l'_(s+2) is neither a blank nor equal to l'_s:

        α_t(s) = y_t(l'_s) (α_(t-1)(s) + α_(t-1)(s-1) + [skip] α_(t-1)(s-2)),
                 α_0(0) = y_0(b), α_0(1) = y_0(l_1)
        β_t(s) = y_t(l'_s) (β_(t+1)(s) + β_(t+1)(s+1) + [skip] β_(t+1)(s+2)),
                 β_(T-1)(S'-1) = y_(T-1)(b), β_(T-1)(S'-2) = y_(T-1)(l_S)
        p = α_(T-1)(S'-1) + α_(T-1)(S'-2),   loss = -log p

    α_t(s) β_t(s) / y_t(l'_s) is the probability mass of the paths through
    (t, s), so for every t, Σ_s α_t(s) β_t(s) / y_t(l'_s) = p, and

        ∂loss/∂log_probs[t, c] = -(1/p) Σ_(s: l'_s = c) α_t(s) β_t(s) / y_t(c)

    the (negated) posterior occupancy of symbol c at step t.  Everything runs
    in log space (a log-sum-exp per term); steps t >= T_n get no gradient.
    This is the derivative with respect to the log-probabilities themselves;
    PyTorch's backward returns it plus exp(log_probs), which is the
    gradient with respect to the logits of a log_softmax.  Through
    :class:`lamina.LogSoftmax` (as PyTorch's model would use it) both reach
    the same logits gradient.

    Args:
        blank: the blank symbol's index, 0.
        reduction: ``"mean"`` (each sample's loss divided by its target
            length, then averaged over the batch, as PyTorch), ``"sum"``, or
            ``"none"`` (the N samples' losses).
        zero_infinity: give samples that no alignment can produce (a target
            too long for its input) a zero loss and gradient instead of inf
            (and a NaN gradient).
        batch_first: log_probs is (N, T, C) instead of PyTorch's (T, N, C).

    Shape:
        log_probs: (T, N, C) (or (N, T, C)), a LogSoftmax's output.
        targets: (N, S) padded, or 1-d with the targets concatenated
            (sum(target_lengths)); class indices, never the blank.
        input_lengths, target_lengths: (N,) ints (arrays, lists or tuples),
            1 <= T_n <= T and S_n >= 0 (<= S for padded targets).

    The lengths and targets are read on the host (a wait on the GPU), and
    the recursions run one step of t at a time, vectorised over the batch
    and the label positions.
    """

    def __init__(self, blank=0, reduction="mean", zero_infinity=False, batch_first=False):
        super().__init__(reduction)
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or blank < 0:
            raise ValueError(f"CTCLoss: expected blank as a non-negative int, received {blank!r}")
        self.blank, self.zero_infinity, self.batch_first = int(blank), bool(zero_infinity), bool(batch_first)

    def extra_repr(self):
        s = f"blank={self.blank}, reduction='{self.reduction}'"
        s += ", zero_infinity=True" if self.zero_infinity else ""
        return s + (", batch_first=True" if self.batch_first else "")

    def __call__(self, log_probs, targets, input_lengths, target_lengths):
        return self.forward(log_probs, targets, input_lengths, target_lengths)

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        """The loss as a Python float; with reduction="none", the N samples' losses."""
        loss = self._ctc(log_probs, targets, input_lengths, target_lengths)
        return loss if self.reduction == "none" else float(loss)

    def compute(self, log_probs, targets, input_lengths, target_lengths):
        """The loss as a 0-d float64 array on the input's device (the lengths
        and targets are still read on the host)."""
        return self._ctc(log_probs, targets, input_lengths, target_lengths)

    def _lengths(self, values, what, n):
        if backend.is_array(values):
            values = backend.to_device(values, backend.CPU)
        arr = np.asarray(values)
        if arr.size and arr.dtype.kind not in "iu":
            raise DTypeError(f"{self._label()}: expected {what} as integers, received dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ShapeError(f"{self._label()}: expected {what} as {n} ints (one per sample), received shape {arr.shape}")
        return arr.astype(np.int64)

    def _check(self, log_probs, targets, input_lengths, target_lengths):
        """Host copies of (targets as (N, S) padded, input lengths, target lengths), validated."""
        label = self._label()
        self._check_pair(log_probs, targets, "int")
        if log_probs.ndim != 3:
            layout = "(N, T, C)" if self.batch_first else "(T, N, C)"
            raise ShapeError(f"{label}: expected log_probs of shape {layout}, received shape {tuple(log_probs.shape)}")
        t_max, n, c = (log_probs.shape[1], log_probs.shape[0], log_probs.shape[2]) if self.batch_first else log_probs.shape
        if self.blank >= c:
            raise ValueError(f"{label}: expected blank < the number of classes {c}, received {self.blank}")
        t_len = self._lengths(input_lengths, "input_lengths", n)
        s_len = self._lengths(target_lengths, "target_lengths", n)
        if n and (t_len.min() < 1 or t_len.max() > t_max):
            raise ShapeError(f"{label}: expected input_lengths in [1, {t_max}] (T), received {t_len.tolist()}")
        if n and s_len.min() < 0:
            raise ShapeError(f"{label}: expected target_lengths >= 0, received {s_len.tolist()}")
        host = backend.to_device(targets, backend.CPU).astype(np.int64)
        if host.ndim == 2:
            if host.shape[0] != n or (n and s_len.max() > host.shape[1]):
                raise ShapeError(f"{label}: expected padded targets of shape ({n}, S) with S >= max(target_lengths) "
                                 f"= {int(s_len.max()) if n else 0}, received shape {host.shape}")
            padded = host
        elif host.ndim == 1:
            if host.size != s_len.sum():
                raise ShapeError(f"{label}: expected concatenated targets of sum(target_lengths) = {int(s_len.sum())} "
                                 f"values, received shape {host.shape}")
            padded = np.zeros((n, int(s_len.max()) if n else 0), dtype=np.int64)
            ends = np.cumsum(s_len)
            for i, (end, s) in enumerate(zip(ends, s_len)):
                padded[i, :s] = host[end - s:end]
        else:
            raise ShapeError(f"{label}: expected targets of shape (N, S) or (sum(target_lengths),), received shape {host.shape}")
        used = padded[np.arange(padded.shape[1])[None, :] < s_len[:, None]]
        if used.size and (used.min() < 0 or used.max() >= c or (used == self.blank).any()):
            raise ValueError(f"{label}: expected target classes in [0, {c}) other than the blank {self.blank}, "
                             f"received values from {int(used.min())} to {int(used.max())}"
                             f"{' including the blank' if (used == self.blank).any() else ''}")
        return padded, t_len, s_len

    def _ctc(self, log_probs, targets, input_lengths, target_lengths):
        padded, t_len, s_len = self._check(log_probs, targets, input_lengths, target_lengths)
        lp = self._widen(log_probs)
        n = lp.shape[0] if self.batch_first else lp.shape[1]
        weight = np.full(n, 1.0) if self.reduction != "mean" else 1.0 / (np.maximum(s_len, 1) * max(n, 1))
        need_grad = is_grad_enabled()
        fused = ops.ctc_loss(lp, padded, t_len, s_len, weight, self.blank, self.zero_infinity, need_grad, self.batch_first)
        if fused is not None:  # lamina's kernel: one CUDA block, or one CPU thread, per sample
            nll, grad = fused
            xp = backend.get_array_module(nll)
            losses = nll.astype(np.float64)
            if self.zero_infinity:
                losses = xp.where(xp.isfinite(losses), losses, 0.0)
            return self._reduce_samples(xp, losses, grad, weight, lp.dtype)
        if self.batch_first:
            lp = lp.transpose(1, 0, 2)
        xp = backend.get_array_module(lp)
        t_max, n, c = lp.shape
        dtype = lp.dtype
        neg = dtype.type(-np.inf)

        # the extended labels l' (blanks between and around the targets), on the host, then moved
        width = 2 * padded.shape[1] + 1
        ext = np.full((n, width), self.blank, dtype=np.int64)
        ext[:, 1::2] = padded
        ends = 2 * s_len + 1  # S'_n
        valid = np.arange(width)[None, :] < ends[:, None]
        skip = np.zeros((n, width), dtype=bool)  # s - 2 -> s allowed
        skip[:, 2:] = (ext[:, 2:] != self.blank) & (ext[:, 2:] != ext[:, :-2])
        device = backend.device_of(lp)
        ext_d, skip_d, skip_next_d = (backend.to_device(a, device) for a in (ext, skip, np.pad(skip[:, 2:], ((0, 0), (0, 2)))))
        lpe = xp.take_along_axis(lp, xp.broadcast_to(ext_d[None], (t_max, n, width)), axis=2)  # (T, N, S'): log y_t(l'_s)

        def shift(a, k):  # a[:, s - k] at s (−inf where s < k); k < 0 looks ahead
            out = xp.full_like(a, neg)
            if k > 0:
                out[:, k:] = a[:, :-k]
            else:
                out[:, :k] = a[:, -k:]
            return out

        alpha = xp.full((t_max, n, width), neg, dtype=dtype)
        alpha[0, :, 0] = lpe[0, :, 0]
        if width > 1:
            alpha[0, :, 1] = xp.where(backend.to_device(s_len > 0, device), lpe[0, :, 1], neg)
        for t in range(1, t_max):
            a = alpha[t - 1]
            alpha[t] = xp.logaddexp(xp.logaddexp(a, shift(a, 1)), xp.where(skip_d, shift(a, 2), neg)) + lpe[t]

        rows = np.arange(n)
        last = backend.to_device(t_len - 1, device)
        rows_d = backend.to_device(rows, device)
        end_a = alpha[last, rows_d, backend.to_device(ends - 1, device)]
        end_b = xp.where(backend.to_device(s_len > 0, device), alpha[last, rows_d, backend.to_device(np.maximum(ends - 2, 0), device)], neg)
        nll = -xp.logaddexp(end_a, end_b)  # (N,)

        if need_grad:
            beta = xp.full((t_max, n, width), neg, dtype=dtype)
            at_end = valid & (np.arange(width)[None, :] >= ends[:, None] - 2) & ((s_len[:, None] > 0) | (np.arange(width)[None, :] == 0))
            at_end_d = backend.to_device(at_end, device)
            for t in range(t_max - 1, -1, -1):
                starts = backend.to_device(t_len - 1 == t, device)[:, None]
                if t + 1 < t_max:
                    b = beta[t + 1]
                    rec = xp.logaddexp(xp.logaddexp(b, shift(b, -1)), xp.where(skip_next_d, shift(b, -2), neg)) + lpe[t]
                else:
                    rec = xp.full((n, width), neg, dtype=dtype)
                beta[t] = xp.where(starts & at_end_d, lpe[t], xp.where(starts, neg, rec))

        infinite = ~xp.isfinite(nll)
        weight_d = backend.to_device(weight, device)
        losses = nll.astype(np.float64)
        if self.zero_infinity:
            losses = xp.where(infinite, 0.0, losses)

        grad = None
        if need_grad:
            finite = xp.isfinite(lpe)
            onehot = (ext[:, :, None] == np.arange(c)[None, None, :]) & valid[:, :, None]
            with np.errstate(invalid="ignore"):  # an infeasible sample's -inf + inf is its NaN gradient
                log_occ = xp.where(finite, alpha + beta - xp.where(finite, lpe, 0), neg) + nll[None, :, None]
            occupancy = xp.exp(log_occ)  # (T, N, S'): the posterior of being at l'_s at step t
            grad = -xp.matmul(occupancy.transpose(1, 0, 2), backend.to_device(onehot.astype(dtype), device))  # (N, T, C)
            scale = weight_d.astype(dtype)
            if self.zero_infinity:
                scale = xp.where(infinite, 0, scale)
                grad = xp.where(infinite[:, None, None], 0, grad)
            grad = grad * scale[:, None, None]
            past_end = backend.to_device(np.arange(t_max)[None, :] >= t_len[:, None], device)  # (N, T): 0, as PyTorch
            grad = xp.where(past_end[:, :, None], 0, grad)
            if not self.batch_first:
                grad = grad.transpose(1, 0, 2)
            grad = xp.ascontiguousarray(grad)
        return self._reduce_samples(xp, losses, grad, weight, dtype)

    def _reduce_samples(self, xp, losses, grad, weight, dtype):
        """The loss from the N samples' losses (float64) and their weights
        (already in ``grad``), or for reduction="none" the losses
        themselves (the weights are 1), with the gradient cached."""
        if self.reduction == "none":
            batch = (slice(None), None, None) if self.batch_first else (None, slice(None), None)
            self._save_per_element(grad, losses, lambda g, d: g * d[batch])
            return losses.astype(dtype)
        self._save(grad)
        return (losses * backend.to_device(weight, backend.device_of(losses))).sum()
