"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s semantics.

A scheduler sets each parameter group's ``lr``.  Construct it after the
optimizer (that sets the lr of step 0), then call ``step()`` once per epoch
(or per iteration, for warmup), after ``optimizer.step()``.
``ReduceLROnPlateau.step(metric)`` takes the monitored value.  Every scheduler
has ``state_dict()`` / ``load_state_dict()`` for checkpoints.

The closed-form schedulers compute lr(t) = base_lr · factor(t) from the group's
``initial_lr`` (set on first construction, as PyTorch does), so they can be
chained with :class:`SequentialLR` and resumed from any step.
"""

import bisect
import math


class LRScheduler:
    """Base class: subclasses implement ``factor(t)`` (or ``lr_at``)."""

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"{type(self).__name__}: resuming (last_epoch={last_epoch}) needs 'initial_lr' in every param group")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr = None
        self.step()

    def factor(self, t):
        raise NotImplementedError

    def lr_at(self, t):
        """The learning rate of each group at step ``t``."""
        f = self.factor(t)
        return [base * f for base in self.base_lrs]

    def step(self):
        if getattr(self.optimizer, "_last_step_skipped", False):
            return  # the loss scaler skipped the optimizer's step (inf/NaN gradients): the schedule waits too
        self.last_epoch += 1
        lrs = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        return list(self._last_lr)

    _code = ()  # attributes holding functions: not state, kept out of state_dict (which is JSON-able data)

    def state_dict(self):
        skip = ("optimizer", "schedulers", *self._code)
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def load_state_dict(self, state_dict):
        skip = ("optimizer", "schedulers", *self._code)
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in skip})


class StepLR(LRScheduler):
    """lr = base_lr · gamma^⌊t / step_size⌋."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if int(step_size) <= 0:
            raise ValueError(f"StepLR: expected step_size >= 1, received {step_size!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def factor(self, t):
        return self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = base_lr · gamma^(number of milestones <= t)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = sorted(int(m) for m in milestones)
        if not self.milestones or self.milestones[0] < 1:
            raise ValueError(f"MultiStepLR: expected milestones >= 1, received {milestones!r}")
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def factor(self, t):
        return self.gamma ** bisect.bisect_right(self.milestones, t)


class ExponentialLR(LRScheduler):
    """lr = base_lr · gamma^t."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        if not float(gamma) > 0:
            raise ValueError(f"ExponentialLR: expected gamma > 0, received {gamma!r}")
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def factor(self, t):
        return self.gamma ** t


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every T_i steps, T_0 first, each period
    T_mult times the last (SGDR; PyTorch's ``CosineAnnealingWarmRestarts``
    stepped once per step):

        lr = eta_min + (base_lr − eta_min) · (1 + cos(π T_cur / T_i)) / 2
    """

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):  # noqa: N803 - PyTorch's names
        if int(T_0) <= 0 or int(T_mult) < 1:
            raise ValueError(f"CosineAnnealingWarmRestarts: expected T_0 >= 1 and T_mult >= 1, received {T_0!r}, {T_mult!r}")
        self.T_0, self.T_mult, self.eta_min = int(T_0), int(T_mult), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        period = self.T_0
        while t >= period:  # whole periods done (integers: exact at every restart)
            t -= period
            period *= self.T_mult
        c = (1 + math.cos(math.pi * t / period)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (PyTorch's ``OneCycleLR``), stepped once per batch:
    the lr rises from max_lr / div_factor to max_lr over the first
    ``pct_start`` of ``total_steps``, then anneals to max_lr /
    (div_factor · final_div_factor); with ``three_phase`` it first comes back
    down to the start, symmetrically, then anneals.  The momentum (SGD's
    ``momentum``, Adam's β1) moves the other way, between max_momentum and
    base_momentum, unless ``cycle_momentum=False``.  It sets the groups' lr
    itself: the optimizer's lr is ignored, as in PyTorch.

    Args: max_lr (a float or one per group), total_steps (or epochs and
    steps_per_epoch), pct_start 0.3, anneal_strategy ``"cos"`` or
    ``"linear"``, cycle_momentum True, base_momentum 0.85, max_momentum
    0.95, div_factor 25, final_div_factor 1e4, three_phase False.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: expected total_steps, or epochs and steps_per_epoch")
            total_steps = int(epochs) * int(steps_per_epoch)
        if int(total_steps) <= 0:
            raise ValueError(f"OneCycleLR: expected total_steps >= 1, received {total_steps!r}")
        if not 0 <= float(pct_start) <= 1:
            raise ValueError(f"OneCycleLR: expected pct_start in [0, 1], received {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: expected anneal_strategy 'cos' or 'linear', received {anneal_strategy!r}")
        groups = optimizer.param_groups
        max_lrs = _per_group("OneCycleLR", "max_lr", max_lr, groups)
        self.total_steps, self.anneal_strategy = int(total_steps), anneal_strategy
        t = self.total_steps
        ends = [float(pct_start) * t - 1, float(2 * pct_start) * t - 2, t - 1] if three_phase else \
            [float(pct_start) * t - 1, t - 1]
        # each phase: (last step, lr from, lr to, momentum from, momentum to), lr as "initial", "max" or "min"
        kinds = [("initial", "max"), ("max", "initial"), ("initial", "min")] if three_phase else \
            [("initial", "max"), ("max", "min")]
        momenta = [("max", "base"), ("base", "max"), ("max", "max")] if three_phase else [("max", "base"), ("base", "max")]
        self._phases = [(end, a, b, ma, mb) for end, (a, b), (ma, mb) in zip(ends, kinds, momenta)]
        self.cycle_momentum = bool(cycle_momentum)
        self._momentum_key = _momentum_key("OneCycleLR", groups) if self.cycle_momentum else None
        if last_epoch == -1:
            for group, m in zip(groups, max_lrs):
                group["initial_lr"] = float(m) / float(div_factor)
                group["max_lr"] = float(m)
                group["min_lr"] = group["initial_lr"] / float(final_div_factor)
                if self.cycle_momentum:
                    group["max_momentum"], group["base_momentum"] = float(max_momentum), float(base_momentum)
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def _phase(self, t):
        if t > self.total_steps:  # PyTorch allows one step past the last
            raise ValueError(f"OneCycleLR: stepped {t} times, beyond total_steps = {self.total_steps}")
        start = 0
        for i, (end, *kinds) in enumerate(self._phases):
            if t <= end or i == len(self._phases) - 1:
                return (t - start) / (end - start), kinds
            start = end

    def lr_at(self, t):
        pct, (a, b, _, _) = self._phase(t)
        return [self._anneal(g[f"{a}_lr"], g[f"{b}_lr"], pct) for g in self.optimizer.param_groups]

    def step(self):
        super().step()
        if not self.cycle_momentum or getattr(self.optimizer, "_last_step_skipped", False):
            return
        pct, (_, _, ma, mb) = self._phase(self.last_epoch)
        for g in self.optimizer.param_groups:
            _set_momentum(g, self._momentum_key, self._anneal(g[f"{ma}_momentum"], g[f"{mb}_momentum"], pct))


def _momentum_key(name, groups):
    """Where a cycled momentum goes: Adam's β1 ("betas") or SGD's "momentum"."""
    if "betas" in groups[0]:
        return "betas"
    if "momentum" in groups[0]:
        return "momentum"
    raise ValueError(f"{name}: cycle_momentum needs an optimizer with 'momentum' or 'betas'")


def _set_momentum(group, key, m):
    group[key] = (m, *group["betas"][1:]) if key == "betas" else m


def _per_group(name, what, value, groups):
    """A value given once, or one per param group, as a list of one per group."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(groups)
    if len(values) != len(groups):
        raise ValueError(f"{name}: expected {len(groups)} {what} values (one per group), received {len(values)}")
    return values


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr − eta_min) · (1 + cos(π t / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):  # noqa: N803 - PyTorch's name
        if int(T_max) <= 0:
            raise ValueError(f"CosineAnnealingLR: expected T_max >= 1, received {T_max!r}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        c = (1 + math.cos(math.pi * t / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class LinearLR(LRScheduler):
    """lr = base_lr · (start_factor + (end_factor − start_factor) · min(t, total_iters) / total_iters)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(
                f"LinearLR: expected start_factor in (0, 1] and end_factor in [0, 1], received {start_factor!r}, {end_factor!r}"
            )
        self.start_factor, self.end_factor, self.total_iters = float(start_factor), float(end_factor), int(total_iters)
        super().__init__(optimizer, last_epoch)

    def factor(self, t):
        return self.start_factor + (self.end_factor - self.start_factor) * min(t, self.total_iters) / self.total_iters


class LinearWarmup(LinearLR):
    """Linear warmup from ``start_factor`` · base_lr to base_lr over
    ``warmup_steps`` steps, then constant; chain it with another scheduler
    through :class:`SequentialLR` (warmup, then cosine)."""

    def __init__(self, optimizer, warmup_steps, start_factor=1e-3, last_epoch=-1):
        super().__init__(optimizer, start_factor, 1.0, warmup_steps, last_epoch)


class LambdaLR(LRScheduler):
    """lr = base_lr · lr_lambda(t), one function for every group or one per
    group (PyTorch's ``LambdaLR``).  The functions are not part of
    ``state_dict()`` (a checkpoint holds data, not code): the scheduler that
    loads one must be built with the same functions."""

    _code = ("lr_lambdas",)

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group(type(self).__name__, "lr_lambda", lr_lambda, optimizer.param_groups)
        if not all(callable(f) for f in self.lr_lambdas):
            raise TypeError(f"{type(self).__name__}: expected lr_lambda as a function of the step, or one per group")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return [base * f(t) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class MultiplicativeLR(LambdaLR):
    """lr_t = lr_(t-1) · lr_lambda(t) for t >= 1, lr_0 = base_lr (PyTorch's
    ``MultiplicativeLR``): the product of the factors so far, kept as it
    grows, so each step costs one call whatever t is (a jump recomputes it)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self._product_t, self._products = 0, None
        super().__init__(optimizer, lr_lambda, last_epoch)

    def lr_at(self, t):
        if self._products is None or t < self._product_t:
            self._product_t, self._products = 0, [1.0] * len(self.lr_lambdas)
        while self._product_t < t:
            self._product_t += 1
            self._products = [p * f(self._product_t) for p, f in zip(self._products, self.lr_lambdas)]
        return [base * p for base, p in zip(self.base_lrs, self._products)]


class ConstantLR(LRScheduler):
    """lr = base_lr · factor for the first ``total_iters`` steps, then base_lr
    (PyTorch's ``ConstantLR``: a flat warmup)."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if not 0 <= float(factor) <= 1:
            raise ValueError(f"ConstantLR: expected factor in [0, 1], received {factor!r}")
        if int(total_iters) < 0:
            raise ValueError(f"ConstantLR: expected total_iters >= 0, received {total_iters!r}")
        self.constant_factor, self.total_iters = float(factor), int(total_iters)
        super().__init__(optimizer, last_epoch)

    def factor(self, t):
        return self.constant_factor if t < self.total_iters else 1.0


class PolynomialLR(LRScheduler):
    """lr = base_lr · (1 − min(t, total_iters) / total_iters)^power (PyTorch's
    ``PolynomialLR``): power 1 decays linearly to 0 at ``total_iters``."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        if int(total_iters) <= 0:
            raise ValueError(f"PolynomialLR: expected total_iters >= 1, received {total_iters!r}")
        self.total_iters, self.power = int(total_iters), float(power)
        super().__init__(optimizer, last_epoch)

    def factor(self, t):
        return (1.0 - min(t, self.total_iters) / self.total_iters) ** self.power


class CyclicLR(LRScheduler):
    """The cyclical learning rate (Smith, 2017; PyTorch's ``CyclicLR``),
    stepped once per batch: the lr climbs from base_lr to max_lr over
    ``step_size_up`` steps and back over ``step_size_down`` (default: the
    same), the height of cycle k scaled by ``mode``:

        "triangular"   1
        "triangular2"  1 / 2^(k-1)            (halved every cycle)
        "exp_range"    gamma^t                 (t: steps so far)

    or by ``scale_fn(x)`` with ``scale_mode`` "cycle" (x = k) or
    "iterations" (x = t).  The momentum (SGD's, or Adam's β1) moves the
    other way, from max_momentum down to base_momentum, unless
    ``cycle_momentum=False``.  It sets the groups' lr itself: the
    optimizer's lr is replaced by base_lr, as in PyTorch.
    """

    _code = ("scale_fn",)

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular",
                 gamma=1.0, scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8,
                 max_momentum=0.9, last_epoch=-1):
        groups = optimizer.param_groups
        name = type(self).__name__
        up = int(step_size_up)
        down = up if step_size_down is None else int(step_size_down)
        if up < 1 or down < 0:
            raise ValueError(f"{name}: expected step_size_up >= 1 and step_size_down >= 0, received {step_size_up!r}, "
                             f"{step_size_down!r}")
        if scale_fn is None and mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"{name}: expected mode 'triangular', 'triangular2' or 'exp_range', received {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"{name}: expected scale_mode 'cycle' or 'iterations', received {scale_mode!r}")
        self.total_size = float(up + down)
        self.step_ratio = up / self.total_size
        self.mode, self.gamma = mode, float(gamma)
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode if scale_fn is not None else ("iterations" if mode == "exp_range" else "cycle")
        self.max_lrs = [float(v) for v in _per_group(name, "max_lr", max_lr, groups)]
        base_lrs = [float(v) for v in _per_group(name, "base_lr", base_lr, groups)]
        self.cycle_momentum = bool(cycle_momentum)
        self._momentum_key = _momentum_key(name, groups) if self.cycle_momentum else None
        if self.cycle_momentum:
            self.base_momentums = [float(v) for v in _per_group(name, "base_momentum", base_momentum, groups)]
            self.max_momentums = [float(v) for v in _per_group(name, "max_momentum", max_momentum, groups)]
        if last_epoch == -1:
            for g, lr in zip(groups, base_lrs):
                g["lr"] = g["initial_lr"] = lr
            if self.cycle_momentum:
                for g, m in zip(groups, self.max_momentums):
                    _set_momentum(g, self._momentum_key, m)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _scale(self, x):
        if self.scale_fn is not None:
            return self.scale_fn(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def _height(self, t):
        """(the fraction of the way up, times the cycle's scale) at step t."""
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        up = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        return up * self._scale(cycle if self.scale_mode == "cycle" else t)

    def lr_at(self, t):
        h = self._height(t)
        return [base + (top - base) * h for base, top in zip(self.base_lrs, self.max_lrs)]

    def step(self):
        super().step()
        if not self.cycle_momentum or getattr(self.optimizer, "_last_step_skipped", False):
            return
        h = self._height(self.last_epoch)
        for g, lo, hi in zip(self.optimizer.param_groups, self.base_momentums, self.max_momentums):
            _set_momentum(g, self._momentum_key, hi - (hi - lo) * h)


class _Composite(LRScheduler):
    """A scheduler made of others (``self.schedulers``), all driving one
    optimizer; its state holds theirs."""

    def _adopt(self, optimizer, schedulers):
        for s in schedulers:
            if s.optimizer is not optimizer:
                raise ValueError(f"{type(self).__name__}: every scheduler must drive the same optimizer")
        self.schedulers = list(schedulers)

    def state_dict(self):
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        for s, sd in zip(self.schedulers, state_dict.pop("_schedulers", [])):
            s.load_state_dict(sd)
        super().load_state_dict(state_dict)


class ChainedScheduler(_Composite):
    """Several schedulers at once: lr = base_lr · Π_i factor_i(t) (PyTorch's
    ``ChainedScheduler``, where each scheduler multiplies the lr the others
    left): ConstantLR's warmup under an ExponentialLR decay, say.  Each must
    be a factor schedule (StepLR, MultiStepLR, ExponentialLR, LinearLR,
    ConstantLR, PolynomialLR, LambdaLR); curves toward a floor, such as
    cosine annealing's eta_min, do not compose by products."""

    def __init__(self, schedulers, optimizer=None):
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("ChainedScheduler: expected at least one scheduler")
        optimizer = schedulers[0].optimizer if optimizer is None else optimizer
        self._adopt(optimizer, schedulers)
        for s in schedulers:
            if type(s).factor is LRScheduler.factor and not isinstance(s, LambdaLR):
                raise ValueError(f"ChainedScheduler: {type(s).__name__} is not a factor schedule (lr = base_lr · f(t)); "
                                 "chain it with SequentialLR instead")
        super().__init__(optimizer, schedulers[0].last_epoch - 1)

    def lr_at(self, t):
        lrs = list(self.base_lrs)
        for s in self.schedulers:
            lrs = [lr * (new / base if base else 0.0) for lr, new, base in zip(lrs, s.lr_at(t), s.base_lrs)]
        return lrs


class SequentialLR(_Composite):
    """``schedulers[i]`` from ``milestones[i-1]`` on, each counting its own
    steps from 0 at its milestone (PyTorch's ``SequentialLR``)."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: expected {len(schedulers) - 1} milestones for {len(schedulers)} schedulers, received {len(milestones)}"
            )
        self._adopt(optimizer, schedulers)
        self.milestones = [int(m) for m in milestones]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        i = bisect.bisect_right(self.milestones, t)
        start = self.milestones[i - 1] if i > 0 else 0
        return self.schedulers[i].lr_at(t - start)


class ReduceLROnPlateau:
    """Multiply the lr by ``factor`` when a metric has not improved for more
    than ``patience`` steps, as PyTorch's ``ReduceLROnPlateau``.

    Improvement (mode "min", threshold_mode "rel"): metric < best · (1 − threshold);
    "abs": metric < best − threshold; "max" mirrors both.  After a reduction,
    ``cooldown`` steps pass before counting resumes.  The lr never goes below
    ``min_lr``, and changes smaller than ``eps`` are skipped.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: expected factor < 1, received {factor!r}")
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: unknown mode {mode!r} or threshold_mode {threshold_mode!r}")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [float(min_lr)] * n
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def is_better(self, a, best):
        if self.mode == "min":
            return a < (best * (1 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics):
        if getattr(self.optimizer, "_last_step_skipped", False):
            return
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old = group["lr"]
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
