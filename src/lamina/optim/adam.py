"""Adam, AdamW and RMSprop with ``torch.optim``'s update rules."""

import math

import numpy as np

from .. import backend, ops
from .optimizer import Optimizer, check_hyperparameters


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), as ``torch.optim.Adam``.  For each parameter,
    at step t (from 1):

        g ← g + λ p                                  (weight_decay λ: L2, coupled)
        m ← m + (1 - β1)(g - m)                       (first moment)
        v ← β2 v + (1 - β2) g²                        (second moment)
        v̂ ← max(v̂, v) with amsgrad, else v̂ = v
        p ← p - η/(1 - β1^t) · m / (√v̂ / √(1 - β2^t) + ε)

    On CuPy float32/float64 parameters the whole update, AMSGrad's maximum
    included, is one multi-tensor launch per 48 parameters
    (csrc/cuda/optim.cu).

    ``capturable=True`` (as in PyTorch) keeps each CuPy parameter's step
    count t on the device, where the fused update increments it and forms
    the bias corrections, so a training step captured into a CUDA graph
    replays correctly.  Without it, t lives on the host and stepping inside
    a capture raises.  The learning rate is baked into a captured graph
    either way.  No effect on NumPy parameters.
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, l1=0.0,
                 capturable=False):
        check_hyperparameters(type(self).__name__, lr=lr, eps=eps, weight_decay=weight_decay, betas=betas, l1=l1)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, l1=l1,
                                      capturable=bool(capturable)))

    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            amsgrad = group["amsgrad"]
            fused = {}  # (device, dtype) -> (module, [(p, g, m, v, v max, step size, sqrt(1 - b2^t), t)]): one launch each
            for p in self._params_with_grad(group):
                xp = backend.get_array_module(p.data)
                g = self._regularised_grad(p, group)
                if (mod := ops.fused_update_kernel(p.data, g)) is not None:  # the whole update in the launch below
                    state = self.state.setdefault(p, {})
                    if not state:
                        state.update(_initial_state(xp, p.data, amsgrad))
                    v_max = state["max_exp_avg_sq"] if amsgrad else None
                    if group["capturable"]:  # t on the device: the launch increments it and forms the corrections
                        if not backend.is_cupy_array(state["step"]):
                            state["step"] = xp.full((), float(state["step"]), dtype=p.dtype)
                        item = (p.data, g, state["exp_avg"], state["exp_avg_sq"], v_max, math.nan, math.nan,
                                state["step"])
                    else:
                        state["step"] = _host_step(state["step"]) + 1
                        t = state["step"]
                        item = (p.data, g, state["exp_avg"], state["exp_avg_sq"], v_max, lr / (1 - b1**t),
                                math.sqrt(1 - b2**t), None)
                    fused.setdefault((p.device, p.dtype), (mod, []))[1].append(item)
                    continue
                if xp is not np and backend.require_cuda().cuda.get_current_stream().is_capturing():
                    raise RuntimeError(f"{type(self).__name__}.step: called while a CUDA graph is being captured, on a "
                                       "parameter that takes the unfused path (a dtype or layout the fused update lacks), "
                                       "whose step count lives on the host")
                if wd != 0:
                    if self._decoupled:
                        p.data *= 1 - lr * wd
                    else:
                        g = g + wd * p.data
                state = self.state.setdefault(p, {})
                if not state:
                    state.update(_initial_state(xp, p.data, amsgrad))
                state["step"] = _host_step(state["step"]) + 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m += (1 - b1) * (g - m)
                v *= b2
                v += (1 - b2) * (g * g)
                if amsgrad:
                    xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                step_size = lr / (1 - b1**t)
                denom = xp.sqrt(v) / math.sqrt(1 - b2**t) + eps
                p.data -= step_size * (m / denom)
            for mod, items in fused.values():
                if not group["capturable"] and backend.require_cuda().cuda.get_current_stream().is_capturing():
                    raise RuntimeError(
                        f"{type(self).__name__}.step: called while a CUDA graph is being captured. Its bias corrections "
                        "depend on the step count, which lives on the host, so every replay would repeat this step's; "
                        f"create it with {type(self).__name__}(..., capturable=True)"
                    )
                data, grads, ms, vs, v_maxes, step_sizes, bc2_sqrts, steps = zip(*items)
                ops.adam_update(mod, data, grads, ms, vs, step_sizes, bc2_sqrts, lr, b1, b2, eps, wd, self._decoupled,
                                steps, group["capturable"], v_maxes if amsgrad else None)


def _initial_state(xp, data, amsgrad):
    """A parameter's Adam state before its first step."""
    state = {"step": 0, "exp_avg": xp.zeros_like(data), "exp_avg_sq": xp.zeros_like(data)}
    if amsgrad:
        state["max_exp_avg_sq"] = xp.zeros_like(data)
    return state


def _host_step(t):
    """The step count as a Python int (a capturable run keeps it as a 0-d array)."""
    return int(t) if not isinstance(t, int) else t


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as
    ``torch.optim.AdamW``: p ← p (1 - η λ) before the Adam step, and the
    gradient is left alone.  weight_decay defaults to 0.01."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, l1=0.0,
                 capturable=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, l1, capturable)


class RMSprop(Optimizer):
    """RMSprop (Hinton), as ``torch.optim.RMSprop``.  On CuPy float32/float64
    parameters the whole update is one multi-tensor launch per 48 parameters
    (csrc/cuda/optim.cu); no factor depends on the step, so it may be captured
    in a CUDA graph.

        g ← g + λ p
        s ← α s + (1 - α) g²
        centered:  a ← a + (1 - α)(g - a);  d = √(s - a²) + ε      else d = √s + ε
        momentum μ > 0:  b ← μ b + g / d;  p ← p - η b              else p ← p - η g / d
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, l1=0.0):
        check_hyperparameters("RMSprop", lr=lr, eps=eps, weight_decay=weight_decay, alpha=alpha, momentum=momentum, l1=l1)
        super().__init__(
            params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered, l1=l1)
        )

    def step(self):
        for group in self.param_groups:
            lr, alpha, eps, mu, wd = group["lr"], group["alpha"], group["eps"], group["momentum"], group["weight_decay"]
            fused = {}  # (device, dtype) -> (module, [(p, g, square_avg, grad_avg, buffer)]): one launch per 48
            for p in self._params_with_grad(group):
                xp = backend.get_array_module(p.data)
                g = self._regularised_grad(p, group)
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    state["square_avg"] = xp.zeros_like(p.data)
                    if mu > 0:
                        state["momentum_buffer"] = xp.zeros_like(p.data)
                    if group["centered"]:
                        state["grad_avg"] = xp.zeros_like(p.data)
                state["step"] += 1
                if (mod := ops.fused_update_kernel(p.data, g)) is not None:  # the update in the launch below
                    item = (p.data, g, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer"))
                    fused.setdefault((p.device, p.dtype), (mod, []))[1].append(item)
                    continue
                if wd != 0:
                    g = g + wd * p.data
                s = state["square_avg"]
                s *= alpha
                s += (1 - alpha) * (g * g)
                if group["centered"]:
                    a = state["grad_avg"]
                    a += (1 - alpha) * (g - a)
                    d = xp.sqrt(s - a * a) + eps
                else:
                    d = xp.sqrt(s) + eps
                if mu > 0:
                    b = state["momentum_buffer"]
                    b *= mu
                    b += g / d
                    p.data -= lr * b
                else:
                    p.data -= lr * (g / d)
            for mod, items in fused.values():
                data, grads, square_avgs, grad_avgs, bufs = zip(*items)
                ops.rmsprop_update(mod, data, grads, square_avgs, grad_avgs, bufs, lr, alpha, eps, wd, mu,
                                   group["centered"])
