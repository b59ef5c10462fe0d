"""The base of every loss: validation, the reductions, the forward cache and backward(dloss)."""

from typing import Callable, NamedTuple

import numpy as np

from .. import backend
from ..errors import CacheError, DeviceError, DTypeError, ShapeError
from ..module import is_grad_enabled

_REDUCTIONS = ("mean", "sum", "none")


class _PerElement(NamedTuple):
    """The cache of a loss with reduction="none": the gradient of every
    element's loss with respect to the input (one row per prediction for the
    class losses; a tuple, one per input, for a loss with several
    differentiable inputs), the losses' shape, and ``apply(grad, dloss)``,
    which weighs it by the incoming gradient of those losses and returns dx
    (or the tuple of the inputs' gradients)."""

    grad: object
    shape: tuple
    apply: Callable


def _each(grad, f):
    """f applied to a cached gradient, or to each of a tuple of them."""
    return tuple(None if g is None else f(g) for g in grad) if isinstance(grad, tuple) else f(grad)


def _times(grad, dloss):
    """dx of an elementwise loss: each element's derivative times its loss's gradient."""
    return _each(grad, lambda g: g * dloss)


def _per_sample(grad, dloss):
    """dx of a loss with one value per sample over the last axis (a vector
    per sample: the ranking and multi-label losses): each sample's row of
    derivatives times its loss's gradient."""
    return _each(grad, lambda g: g * dloss[..., None])


def _first(grad):
    """The first of a loss's cached gradients (the only one for most losses)."""
    return grad[0] if isinstance(grad, tuple) else grad


class Loss:
    """Base class: input validation, the reductions and the forward cache.

    ``backward`` returns the gradient of the first input, or for a loss with
    several differentiable inputs (``_grad_inputs``, their positions in the
    call) a tuple of their gradients, in that order."""

    _reductions = _REDUCTIONS
    _grad_inputs = (0,)

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

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def forward(self, *inputs):
        """The loss as a Python float (on the GPU this waits for the result);
        with reduction="none", the array of losses on the input's device.
        Most losses take ``(input, target)``; the ranking losses take two
        or three inputs (see each loss)."""
        loss = self._loss(*inputs, strict=True)
        return loss if self.reduction == "none" else float(loss)

    def compute(self, *inputs):
        """The loss as a 0-d float64 array on the input's device, without
        waiting for the GPU; the gradient is cached as by ``forward``.  On
        CuPy, checks that need the values on the host are left to the
        device: SoftmaxCrossEntropy gives a NaN loss (and NaN gradient rows)
        for class indices out of range instead of raising."""
        if type(self)._loss is Loss._loss:  # a subclass that defines forward() only
            return self.forward(*inputs)
        return self._loss(*inputs, strict=False)

    def _elementwise(self, loss, grad, n, apply=_times):
        """Reduce an elementwise loss: ``loss`` and ``grad`` (its derivative)
        per element of the input (or a tuple of derivatives, one per
        differentiable input), ``n`` the mean's divisor.  Caches the
        gradient and returns the reduced loss (a 0-d float64 array), or the
        losses themselves for reduction="none"; ``apply(grad, dloss)`` then
        weighs the gradient by the losses' (:func:`_per_sample` for a loss
        per sample)."""
        if self.reduction == "none":
            self._save_per_element(grad, loss, apply)
            return loss
        n = n if self.reduction in ("mean", "batchmean") else 1
        self._save(grad if n == 1 else _each(grad, lambda g: g * g.dtype.type(1.0 / n)))
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

    def _arrays(self, *named):
        """Validate the arrays of a loss over several inputs, given as
        (name, array, kind): kind "float" a floating array, "label" numbers
        of any kind (class signs such as 1 and -1); all on the first's
        device.  Returns them in float32 at least, in the first's dtype."""
        label = self._label()
        for what, a, _ in named:
            if not backend.is_array(a):
                raise DTypeError(f"{label}: expected {what} as a numpy.ndarray or cupy.ndarray, received {type(a).__name__}")
        first, device = named[0][0], backend.device_of(named[0][1])
        for what, a, kind in named:
            if kind == "float" and a.dtype.kind != "f" and not backend.is_low_precision(a.dtype):
                raise DTypeError(f"{label}: expected a floating-point {what}, received dtype {a.dtype}")
            if kind == "label" and a.dtype.kind not in "fiub" and not backend.is_low_precision(a.dtype):
                raise DTypeError(f"{label}: expected {what} as numbers, received dtype {a.dtype}")
            if backend.device_of(a) != device:
                raise DeviceError(f"{label}: expected {what} on {device} ({first}'s device), received it on "
                                  f"{backend.device_of(a)}")
        x = self._widen(named[0][1])
        return [x] + [a.astype(x.dtype, copy=False) for _, a, _ in named[1:]]

    def _same_shape(self, *named):
        """Raise a ShapeError unless every (name, array) has the first's shape."""
        shape = tuple(named[0][1].shape)
        for what, a in named[1:]:
            if tuple(a.shape) != shape:
                raise ShapeError(f"{self._label()}: expected {what} of shape {shape} ({named[0][0]}'s), "
                                 f"received {tuple(a.shape)}")

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
            first = _first(cache)
            if backend.is_array(dloss) and dloss.ndim == 0:
                if backend.device_of(dloss) != backend.device_of(first):
                    raise DeviceError(f"{label}: expected dloss on {backend.device_of(first)}, received it on "
                                      f"{backend.device_of(dloss)}")
                dloss = dloss.astype(first.dtype)
            elif isinstance(dloss, (int, float, np.integer, np.floating)) and not isinstance(dloss, bool):
                dloss = first.dtype.type(dloss)
            elif backend.is_array(dloss):
                raise ShapeError(f"{label}: expected dloss as a number (the loss is a scalar) or None, received an "
                                 f"array of shape {tuple(dloss.shape)}")
            else:
                raise DTypeError(f"{label}: expected dloss as a number (the loss is a scalar) or None, received "
                                 f"{type(dloss).__name__}")
            self._cache = None
            return _times(cache, dloss)
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
        first = _first(cache.grad)
        if backend.device_of(dloss) != backend.device_of(first):
            raise DeviceError(f"{label}: expected dloss on {backend.device_of(first)}, received it on "
                              f"{backend.device_of(dloss)}")
        if dloss.dtype.kind != "f" and not backend.is_low_precision(dloss.dtype):
            raise DTypeError(f"{label}: expected a floating-point dloss, received dtype {dloss.dtype}")
        if tuple(dloss.shape) != cache.shape:
            raise ShapeError(f"{label}: expected dloss of shape {cache.shape} (the losses'), received {tuple(dloss.shape)}")
        return cache.apply(cache.grad, dloss.astype(first.dtype, copy=False))


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
