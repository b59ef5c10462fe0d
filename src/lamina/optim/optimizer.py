"""Optimizer base class: parameter groups and state, as ``torch.optim``."""

import copy

import numpy as np

from .. import backend
from ..module import Parameter, zero_grads


def check_hyperparameters(name, **values):
    """Raise a ValueError naming the optimizer unless every value is >= 0
    (``lr`` must also be given; ``betas`` must lie in [0, 1))."""
    if values.get("lr", 0) is None:
        raise ValueError(f"{name}: expected lr >= 0, received None")
    for key, v in values.items():
        if key == "betas":
            if not all(0 <= b < 1 for b in v):
                raise ValueError(f"{name}: expected betas in [0, 1), received {v!r}")
        elif v < 0:
            raise ValueError(f"{name}: expected {key} >= 0, received {v!r}")


def refuse_capture(opt, xp):
    """Raise unless ``xp`` is NumPy or no CUDA graph is being captured on the
    current stream: for an update whose factors depend on a host-side step count."""
    if xp is not np and backend.require_cuda().cuda.get_current_stream().is_capturing():
        raise RuntimeError(f"{type(opt).__name__}.step: called while a CUDA graph is being captured; its update depends "
                           "on the step count, which lives on the host, so every replay would repeat this step's")


class Optimizer:
    """Holds parameter groups (dicts with ``params`` and hyperparameters) and
    per-parameter state (moment buffers, ...).

    Args:
        params: an iterable of :class:`Parameter`, or of dicts
            ``{"params": [...], "lr": ...}`` for parameter groups.
        defaults: hyperparameters a group takes when it does not set them.

    Every optimizer also takes ``l1`` (per group, default 0): L1
    regularisation, adding ``l1 * sign(p)`` to each gradient before the update.
    L2 regularisation is ``weight_decay``.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.defaults.setdefault("l1", 0.0)
        self.param_groups = []
        self.state = {}  # Parameter -> dict of arrays/numbers
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: received an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group):
        group = dict(group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, Parameter) else list(ps)
        for p in ps:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: expected Parameters, received {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in ps):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """As :meth:`lamina.Layer.zero_grad`: gradients become None, or zeros
        with ``set_to_none=False``."""
        self._last_step_skipped = False  # set by lamina.amp.LossScaler.step for this iteration
        zero_grads((p for g in self.param_groups for p in g["params"]), set_to_none)

    def step(self):
        raise NotImplementedError

    def _params_with_grad(self, group):
        return [p for p in group["params"] if p.requires_grad and p.grad is not None]

    def _array_updates(self, group, initial, host_factors=False):
        """(p, g, state, xp) for each parameter of ``group`` with a gradient,
        for an update written as array expressions: g with the L1 term and
        the group's (coupled) ``weight_decay`` added, the state made by
        ``initial(p, xp, group)`` on the first step, and ``state["step"]`` counted.
        ``host_factors``: the update's factors depend on the step count, so
        it refuses to run inside a CUDA graph capture."""
        wd = group.get("weight_decay", 0.0)
        for p in self._params_with_grad(group):
            xp = backend.get_array_module(p.data)
            if host_factors:
                refuse_capture(self, xp)
            g = self._regularised_grad(p, group)
            state = self.state.setdefault(p, {})
            if not state:
                state.update(step=0, **initial(p, xp, group))
            state["step"] += 1
            yield p, (g + wd * p.data if wd != 0 else g), state, xp

    @staticmethod
    def _regularised_grad(p, group):
        """The gradient with the group's L1 term added: g + l1 * sign(p).
        (L2 is each optimizer's ``weight_decay``, applied as PyTorch does.)"""
        l1 = group.get("l1", 0.0)
        if not l1:
            return p.grad
        xp = backend.get_array_module(p.data)
        return p.grad + l1 * xp.sign(p.data)

    @classmethod
    def _l2_grad(cls, p, group):
        """The gradient with L1 and coupled weight decay λ (L2) added:
        g + l1 sign(p) + λ p."""
        g = cls._regularised_grad(p, group)
        wd = group.get("weight_decay", 0.0)
        return g + wd * p.data if wd != 0 else g

    # -- state ----------------------------------------------------------------

    def state_dict(self):
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` with
        parameters replaced by their index, as in PyTorch.  Arrays are copied
        to NumPy so the result can be saved anywhere."""
        index = {}
        groups = []
        for group in self.param_groups:
            g = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            g["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                g["params"].append(index[id(p)])
            groups.append(g)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: backend.to_device(v, "cpu").copy() if backend.is_array(v) else v
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load what :meth:`state_dict` returned: every group's size and
        every state array's shape is checked first, so on an error the
        optimizer is unchanged."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            received = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups', received {received}")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected {len(self.param_groups)} parameter groups, received {len(groups)}"
            )
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: expected a group of {len(mine['params'])} parameters, "
                    f"received {len(theirs['params'])}"
                )
        by_index = {}
        for mine, theirs in zip(self.param_groups, groups):
            for p, i in zip(mine["params"], theirs["params"]):
                by_index[i] = p
        new_state = {}
        for i, s in state_dict["state"].items():
            if int(i) not in by_index:
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, which no group lists "
                                 f"(groups list {sorted(by_index)})")
            p = by_index[int(i)]
            entry = {}
            for k, v in s.items():
                if backend.is_array(v) or isinstance(v, np.ndarray):
                    if tuple(v.shape) != tuple(p.shape) and np.ndim(v) != 0:
                        raise ValueError(
                            f"{type(self).__name__}.load_state_dict: expected state {k!r} of shape {tuple(p.shape)}, "
                            f"received {tuple(v.shape)}"
                        )
                    v = backend.to_device(np.asarray(v) if not backend.is_array(v) else v, p.device).astype(p.dtype, copy=True)
                entry[k] = v
            new_state[p] = entry
        for mine, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} parameters, {hp}")
        return "\n".join(lines) + "\n)"
