"""Gradient clipping, as ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_``."""

import math

from .. import backend
from ..module import Parameter


def _grads(params):
    if isinstance(params, Parameter):
        params = [params]
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(params, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``params`` in place so that their global norm
    (all gradients seen as one vector) is at most ``max_norm``.

    The scale is max_norm / (total_norm + 1e-6), applied only when below 1.
    Returns the total norm before clipping, as a float.  ``norm_type`` may be
    ``inf``.  With ``error_if_nonfinite`` a NaN or infinite norm raises.
    """
    grads = _grads(params)
    if not grads:
        return 0.0
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = max(float(abs(g).max()) for g in grads)
    else:
        total = sum(float((abs(g.astype("float64", copy=False)) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}")
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(params, clip_value):
    """Clamp every gradient element of ``params`` to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    for g in _grads(params):
        xp = backend.get_array_module(g)
        xp.clip(g, -clip_value, clip_value, out=g)
