"""Finite-difference gradient checks for layers and losses.

For a layer f with output y = f(x; θ), pick a fixed random projection r of
the output and consider the scalar L = Σ y ⊙ r.  Then dL/dy = r, so
``backward(r)`` must return dL/dx and accumulate dL/dθ.  Each is compared,
element by element, with the central difference

    (L(x + ε e_i) - L(x - ε e_i)) / 2ε

computed in float64.  For a loss (``loss(x, t)`` returns a float) L is the
loss itself and ``backward()`` its gradient with respect to x (the target t
gets none; a ranking loss returns one gradient per input it compares); a
loss with ``reduction="none"`` returns an array of losses, projected as a
layer's output is.
"""

import copy

import numpy as np

from .. import backend
from .. import random as lrandom
from ..losses import Loss
from ..module import Layer, no_grad


class GradcheckError(AssertionError):
    """A hand-derived gradient disagrees with finite differences."""


def _is_float_array(a):
    return backend.is_array(a) and a.dtype.kind == "f"


def gradcheck(layer, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, check_params=True, max_elements=None):
    """Check ``layer``'s backward against central differences in float64.

    The layer is deep-copied and cast to float64, floating-point inputs are
    cast to float64 (other inputs, such as integer labels, are passed
    through); the caller's layer and arrays are never modified.  Random
    layers (dropout) see the same random stream in every evaluation.

    Args:
        layer: a :class:`lamina.Layer` or a :class:`lamina.losses.Loss`.
        *inputs: the arrays to call it with.
        eps: finite-difference step.
        atol, rtol: an element passes when |analytic - numeric| <= atol + rtol |numeric|.
        seed: seed of the output projection.
        check_params: also check every parameter's gradient.
        max_elements: check at most this many (randomly chosen) elements per
            array; None checks them all.

    Returns:
        True.  Raises :class:`GradcheckError` naming the layer, the array
        (input index or parameter name), the element, and both values.
    """
    is_loss = isinstance(layer, Loss)
    if not is_loss and not isinstance(layer, Layer):
        raise TypeError(f"gradcheck: expected a Layer or a Loss, received {type(layer).__name__}")
    layer = copy.deepcopy(layer)
    if not is_loss:
        layer.to(dtype=np.float64)
        layer.zero_grad(set_to_none=True)
    xs = [a.astype(np.float64, copy=True) if _is_float_array(a) else a for a in inputs]
    rng = np.random.default_rng(seed)
    rng_state = lrandom.get_rng_state()

    def evaluate(record):
        """The scalar L; with ``record`` also run backward and return gradients."""
        lrandom.set_rng_state(rng_state)  # same dropout masks every time
        if not record:
            with no_grad():
                return _scalar(layer, xs, is_loss, projection)
        return _scalar(layer, xs, is_loss, projection)

    projection = None
    if not is_loss or layer.reduction == "none":
        lrandom.set_rng_state(rng_state)
        with no_grad():
            y = layer(*xs)
        xp = backend.get_array_module(y)
        projection = xp.asarray(rng.standard_normal(y.shape))

    # Analytic gradients.
    evaluate(record=True)
    grads = layer.backward() if projection is None else layer.backward(projection)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    targets = []  # (name, array to perturb, analytic gradient)
    gi = 0
    for i, a in enumerate(xs):  # a loss's target gets no gradient: only its _grad_inputs do
        if (i in layer._grad_inputs if is_loss else True) and _is_float_array(a):
            targets.append((f"input {i}", a, grads[gi] if gi < len(grads) else None))
            gi += 1
    if check_params and not is_loss:
        for name, p in layer.named_parameters():
            if p.requires_grad:
                targets.append((f"parameter {name!r}", p.data, p.grad))

    label = layer._label()
    for name, arr, analytic in targets:
        if analytic is None:
            raise GradcheckError(f"gradcheck {label}: backward produced no gradient for {name}")
        if tuple(analytic.shape) != tuple(arr.shape):
            raise GradcheckError(
                f"gradcheck {label}: gradient of {name} has shape {tuple(analytic.shape)}, expected {tuple(arr.shape)}"
            )
        analytic = backend.to_device(analytic, "cpu")
        flat_indices = np.arange(arr.size)
        if max_elements is not None and arr.size > max_elements:
            flat_indices = np.sort(rng.choice(arr.size, size=max_elements, replace=False))
        for flat in flat_indices:
            idx = np.unravel_index(flat, arr.shape)
            orig = float(arr[idx])
            arr[idx] = orig + eps
            plus = evaluate(record=False)
            arr[idx] = orig - eps
            minus = evaluate(record=False)
            arr[idx] = orig
            numeric = (plus - minus) / (2 * eps)
            got = float(analytic[idx])
            if not abs(got - numeric) <= atol + rtol * abs(numeric):
                raise GradcheckError(
                    f"gradcheck {label}: d/d{name}{list(map(int, idx))}: backward gives {got:.10g}, "
                    f"finite differences give {numeric:.10g} (|diff| {abs(got - numeric):.3g} > atol {atol} + rtol {rtol} * |numeric|)"
                )
    return True


def _scalar(layer, xs, is_loss, projection):
    if is_loss and projection is None:
        return float(layer(*xs))
    y = layer(*xs)
    return float((y * projection).sum())
