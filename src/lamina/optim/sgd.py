"""Stochastic gradient descent with momentum (``torch.optim.SGD`` semantics)."""

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
