"""Adagrad, NAdam, RAdam, Adamax, Adadelta and Rprop with ``torch.optim``'s
update rules.

On CuPy float32/float64 parameters each update of Adagrad, NAdam and RAdam
is one multi-tensor launch per 48 parameters (csrc/cuda/optim.cu), as
SGD's, Adam's and RMSprop's; on NumPy (and other dtypes) it is the array
expressions below.  Adamax, Adadelta and Rprop are array expressions on
both backends: a few elementwise launches per parameter on the GPU.  The step
counts live on the host, so a step that depends on the count refuses to run
inside a CUDA graph capture (every replay would repeat the captured step's
factors).
"""

import math

from .. import backend, ops
from .optimizer import Optimizer, check_hyperparameters, refuse_capture


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), as ``torch.optim.Adagrad``.  At step t
    (from 1):

        g ← g + λ p                                   (weight_decay λ)
        s ← s + g²                                     (starts at initial_accumulator_value)
        p ← p - η / (1 + (t - 1) δ) · g / (√s + ε)     (lr_decay δ)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, l1=0.0):
        check_hyperparameters("Adagrad", lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                              initial_accumulator_value=initial_accumulator_value, eps=eps, l1=l1)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps, l1=l1))

    def step(self):
        for group in self.param_groups:
            eps, wd = group["eps"], group["weight_decay"]
            fused = {}  # (device, dtype) -> (module, [(p, g, sum, clr)]): one launch per 48
            for p in self._params_with_grad(group):
                xp = backend.get_array_module(p.data)
                g = self._regularised_grad(p, group)
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    state["sum"] = xp.full_like(p.data, group["initial_accumulator_value"])
                if group["lr_decay"]:
                    refuse_capture(self, xp)
                state["step"] += 1
                clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
                if (mod := ops.fused_update_kernel(p.data, g)) is not None:  # the update in the launch below
                    fused.setdefault((p.device, p.dtype), (mod, []))[1].append((p.data, g, state["sum"], clr))
                    continue
                if wd != 0:
                    g = g + wd * p.data
                s = state["sum"]
                s += g * g
                p.data -= clr * (g / (xp.sqrt(s) + eps))
            for mod, items in fused.values():
                data, grads, sums, clrs = zip(*items)
                ops.adagrad_update(mod, data, grads, sums, clrs, eps, wd)


class _AdamFamily(Optimizer):
    """The moments Adam's variants share, with PyTorch's weight decay:
    coupled (g ← g + λ p) or, with ``decoupled_weight_decay``, AdamW's
    (p ← p (1 - η λ) before the update).  A subclass gives its step factors
    (``_factors``, host scalars of each parameter's own step) and the update
    that uses them (``_apply``); on CuPy float32/float64 parameters the
    decay, the moments and that update are one multi-tensor launch per 48
    (csrc/cuda/optim.cu's ``adam_variant_multi_kernel``)."""

    _kind = None  # the fused kernel's name for the variant

    def __init__(self, params, lr, betas, eps, weight_decay, decoupled_weight_decay, l1, **extra):
        check_hyperparameters(type(self).__name__, lr=lr, eps=eps, weight_decay=weight_decay, betas=betas, l1=l1, **extra)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=bool(decoupled_weight_decay), l1=l1, **extra))

    def _state(self, p, xp):
        """The parameter's state, created on its first step, with ``step`` counted."""
        state = self.state.setdefault(p, {})
        if not state:
            state["step"] = 0
            state.update(self._initial_state())
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        return state

    def _initial_state(self):
        return {}

    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            decoupled = group["decoupled_weight_decay"]
            fused = {}  # (device, dtype) -> (module, [(p, g, m, v, factors)]): one launch per 48
            for p in self._params_with_grad(group):
                xp = backend.get_array_module(p.data)
                refuse_capture(self, xp)
                g = self._regularised_grad(p, group)
                state = self._state(p, xp)
                factors = self._factors(state, group)
                if (mod := ops.fused_update_kernel(p.data, g)) is not None:  # the whole update in the launch below
                    item = (p.data, g, state["exp_avg"], state["exp_avg_sq"], factors)
                    fused.setdefault((p.device, p.dtype), (mod, []))[1].append(item)
                    continue
                if wd != 0:
                    if decoupled:
                        p.data *= 1 - lr * wd
                    else:
                        g = g + wd * p.data
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m += (1 - b1) * (g - m)
                v *= b2
                v += (1 - b2) * (g * g)
                self._apply(p, g, m, v, factors, group, xp)
            for mod, items in fused.values():
                data, grads, ms, vs, factors = zip(*items)
                ops.adam_variant_update(mod, self._kind, data, grads, ms, vs, factors, lr, b1, b2, group["eps"], wd,
                                        decoupled)


class NAdam(_AdamFamily):
    """Adam with Nesterov momentum (Dozat, 2016), as ``torch.optim.NAdam``.
    At step t, with momentum decay ψ:

        μ_t = β1 (1 - ½ · 0.96^(t ψ)),   Π_t = μ_1 ··· μ_t
        m, v as Adam's;   d = √(v / (1 - β2^t)) + ε
        p ← p - η (1 - μ_t) / (1 - Π_t) · g / d - η μ_(t+1) / (1 - Π_t μ_(t+1)) · m / d
    """

    _kind = "nadam"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, l1=0.0):
        super().__init__(params, lr, betas, eps, weight_decay, decoupled_weight_decay, l1, momentum_decay=momentum_decay)

    def _initial_state(self):
        return {"mu_product": 1.0}

    def _factors(self, state, group):
        """(η (1 - μ_t) / (1 - Π_t), η μ_(t+1) / (1 - Π_t μ_(t+1)), 1 - β2^t); updates Π."""
        lr, (b1, b2), psi, t = group["lr"], group["betas"], group["momentum_decay"], state["step"]
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        state["mu_product"] *= mu
        return (lr * (1 - mu) / (1 - state["mu_product"]), lr * mu_next / (1 - state["mu_product"] * mu_next),
                1 - b2**t)

    def _apply(self, p, g, m, v, factors, group, xp):
        c_grad, c_momentum, bc2 = factors
        d = xp.sqrt(v / bc2) + group["eps"]
        p.data -= c_grad * (g / d)
        p.data -= c_momentum * (m / d)


class RAdam(_AdamFamily):
    """Rectified Adam (Liu et al., 2020), as ``torch.optim.RAdam``: plain
    momentum SGD while the variance of the adaptive step is not yet
    tractable, Adam with a rectification factor after.  At step t:

        m, v as Adam's;  m̂ = m / (1 - β1^t)
        ρ∞ = 2/(1 - β2) - 1,   ρ_t = ρ∞ - 2 t β2^t / (1 - β2^t)
        ρ_t > 5:  r = √((ρ_t - 4)(ρ_t - 2) ρ∞ / ((ρ∞ - 4)(ρ∞ - 2) ρ_t))
                  p ← p - η m̂ r √(1 - β2^t) / (√v + ε)
        else:     p ← p - η m̂
    """

    _kind = "radam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                 l1=0.0):
        super().__init__(params, lr, betas, eps, weight_decay, decoupled_weight_decay, l1)

    def _factors(self, state, group):
        """(1 - β1^t, η r √(1 - β2^t) or η, 1 when rectified else 0)."""
        lr, (b1, b2), t = group["lr"], group["betas"], state["step"]
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return 1 - b1**t, lr * r * math.sqrt(1 - b2**t), 1.0
        return 1 - b1**t, lr, 0.0

    def _apply(self, p, g, m, v, factors, group, xp):
        bc1, coefficient, rectified = factors
        m_hat = m / bc1
        if rectified:
            p.data -= coefficient * (m_hat / (xp.sqrt(v) + group["eps"]))
        else:
            p.data -= coefficient * m_hat


class Adamax(Optimizer):
    """Adamax (Kingma and Ba, 2015, section 7.1), as ``torch.optim.Adamax``:
    Adam with the second moment replaced by an infinity norm.  At step t:

        g ← g + λ p                                 (weight_decay λ)
        m ← β1 m + (1 - β1) g
        u ← max(β2 u, |g| + ε)
        p ← p - η / (1 - β1^t) · m / u

    Array expressions on both backends (no fused kernel).
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, l1=0.0):
        check_hyperparameters("Adamax", lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, l1=l1)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, l1=l1))

    @staticmethod
    def _new_state(p, xp, group):
        return dict(exp_avg=xp.zeros_like(p.data), exp_inf=xp.zeros_like(p.data))

    def step(self):
        for group in self.param_groups:
            (b1, b2), eps = group["betas"], group["eps"]
            for p, g, state, xp in self._array_updates(group, self._new_state, host_factors=True):
                m, u = state["exp_avg"], state["exp_inf"]
                m += (1 - b1) * (g - m)
                u *= b2
                xp.maximum(u, xp.abs(g) + eps, out=u)
                p.data -= group["lr"] / (1 - b1 ** state["step"]) * (m / u)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``: the step's
    size comes from the running size of past steps, so lr (default 1) is
    only a scale.

        g ← g + λ p                                  (weight_decay λ)
        s ← ρ s + (1 - ρ) g²
        Δ = √(a + ε) / √(s + ε) · g
        a ← ρ a + (1 - ρ) Δ²
        p ← p - η Δ

    Array expressions on both backends (no fused kernel).
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, l1=0.0):
        check_hyperparameters("Adadelta", lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, l1=l1)
        if rho > 1:
            raise ValueError(f"Adadelta: expected rho in [0, 1], received {rho!r}")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, l1=l1))

    @staticmethod
    def _new_state(p, xp, group):
        return dict(square_avg=xp.zeros_like(p.data), acc_delta=xp.zeros_like(p.data))

    def step(self):
        for group in self.param_groups:
            rho, eps = group["rho"], group["eps"]
            for p, g, state, xp in self._array_updates(group, self._new_state):
                s, a = state["square_avg"], state["acc_delta"]
                s *= rho
                s += (1 - rho) * (g * g)
                delta = xp.sqrt(a + eps) / xp.sqrt(s + eps) * g
                a *= rho
                a += (1 - rho) * (delta * delta)
                p.data -= group["lr"] * delta


class Rprop(Optimizer):
    """Resilient backpropagation (Riedmiller and Braun, 1993), as
    ``torch.optim.Rprop``: each weight keeps its own step size and moves by
    it against the gradient's sign, ignoring the gradient's size.  Per
    element, with s = sign(g · g_prev):

        s > 0: step ← min(step η₊, step_max)         (same sign: speed up)
        s < 0: step ← max(step η₋, step_min), g ← 0  (overshot: slow down, skip this move)
        p ← p - sign(g) step;   g_prev ← g

    Steps start at lr.  A full-batch method: the minibatch's noise flips
    signs.  Array expressions on both backends (no fused kernel).
    """

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), l1=0.0):
        check_hyperparameters("Rprop", lr=lr, l1=l1)
        etas, step_sizes = tuple(float(e) for e in etas), tuple(float(s) for s in step_sizes)
        if len(etas) != 2 or not 0 < etas[0] < 1 < etas[1]:
            raise ValueError(f"Rprop: expected etas (η₋, η₊) with 0 < η₋ < 1 < η₊, received {etas!r}")
        if len(step_sizes) != 2 or not 0 <= step_sizes[0] <= step_sizes[1]:
            raise ValueError(f"Rprop: expected step_sizes (min, max) with 0 <= min <= max, received {step_sizes!r}")
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, l1=l1))

    @staticmethod
    def _new_state(p, xp, group):
        return dict(prev=xp.zeros_like(p.data), step_size=xp.full_like(p.data, group["lr"]))

    def step(self):
        for group in self.param_groups:
            (minus, plus), (lo, hi) = group["etas"], group["step_sizes"]
            for p, g, state, xp in self._array_updates(group, self._new_state):
                s = xp.sign(g * state["prev"])
                factor = xp.where(s > 0, plus, xp.where(s < 0, minus, 1)).astype(p.data.dtype, copy=False)
                step_size = state["step_size"]
                step_size *= factor
                xp.clip(step_size, lo, hi, out=step_size)
                g = xp.where(s < 0, 0, g).astype(p.data.dtype, copy=False)
                p.data -= xp.sign(g) * step_size
                state["prev"][...] = g
