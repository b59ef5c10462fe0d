"""Stochastic gradient descent with momentum, and averaged SGD (``torch.optim.SGD`` and ``ASGD`` semantics)."""

from .. import backend, ops
from .optimizer import Optimizer, check_hyperparameters


class SGD(Optimizer):
    """For each parameter p with gradient g:

        g ← g + λ p                          (weight_decay λ)
        b ← g  on the first step, else  b ← μ b + (1 - τ) g   (momentum μ, dampening τ)
        g ← g + μ b  if nesterov, else  g ← b
        p ← p - η g                           (lr η)
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, l1=0.0):
        check_hyperparameters("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay, l1=l1)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        super().__init__(
            params,
            dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay, l1=l1),
        )

    def step(self):
        for group in self.param_groups:
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            fused = {}  # (device, dtype) -> (module, [(p, g, buf, first step)]): one multi-tensor launch each
            for p in self._params_with_grad(group):
                g = self._regularised_grad(p, group)
                if (mod := ops.fused_update_kernel(p.data, g)) is not None:  # one CUDA launch for all of the below
                    buf, first = None, False
                    if mu != 0:
                        state = self.state.setdefault(p, {})
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            buf = state["momentum_buffer"] = backend.get_array_module(p.data).empty_like(p.data)
                            first = True
                    fused.setdefault((p.device, p.dtype), (mod, []))[1].append((p.data, g, buf, first))
                    continue
                if wd != 0:
                    g = g + wd * p.data
                if mu != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.copy()
                    else:
                        buf *= mu
                        buf += (1 - tau) * g
                    g = g + mu * buf if nesterov else buf
                p.data -= lr * g
            for mod, items in fused.values():
                data, grads, bufs, firsts = zip(*items)
                ops.sgd_update(mod, data, grads, bufs, firsts, lr, mu, tau, wd, nesterov)


class ASGD(Optimizer):
    """Averaged SGD (Polyak and Juditsky, 1992), as ``torch.optim.ASGD``:
    SGD with a decaying rate, and from step t0 on a running average of the
    iterates, kept in ``state[p]["ax"]`` (load it into the model to
    evaluate the average).  At step t (from 1), with η_1 = lr and μ_1 = 1:

        g ← g + λ_wd p
        p ← p (1 - λ η_t) - η_t g                      (lambd λ)
        ax ← p if μ_t = 1, else ax + μ_t (p - ax)
        η_(t+1) = lr / (1 + λ lr t)^α,   μ_(t+1) = 1 / max(1, t - t0)

    The factors are host scalars, so a step refuses to run inside a CUDA
    graph capture.  Array expressions on both backends (no fused kernel).
    """

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, l1=0.0):
        check_hyperparameters("ASGD", lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, l1=l1)
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, l1=l1))

    @staticmethod
    def _new_state(p, xp, group):
        return dict(eta=float(group["lr"]), mu=1.0, ax=xp.zeros_like(p.data))

    def step(self):
        for group in self.param_groups:
            lr, lambd = group["lr"], group["lambd"]
            for p, g, state, xp in self._array_updates(group, self._new_state, host_factors=True):
                eta = state["eta"]
                p.data *= 1 - lambd * eta
                p.data -= eta * g
                if state["mu"] != 1:
                    state["ax"] += state["mu"] * (p.data - state["ax"])
                else:
                    state["ax"][...] = p.data
                t = state["step"]
                state["eta"] = lr / (1 + lambd * lr * t) ** group["alpha"]
                state["mu"] = 1 / max(1, t - group["t0"])
