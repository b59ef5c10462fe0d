"""Weight averaging: stochastic weight averaging (SWA) and exponential
moving averages (EMA) of a model's weights, as ``torch.optim.swa_utils``.

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    for x, y in loader:
        ...                                   # forward, backward, opt.step()
        ema.update_parameters(model)          # after every step
    update_bn(loader, ema)                    # BatchNorm statistics for the averaged weights
    ema.eval(); logits = ema(x_test)

The average lives in a copy of the model (``ema.module``) on the model's
device; each update works in place, on CuPy in one fused launch per 48
parameters, with no wait for the GPU (the count of updates is kept on the
host too).
"""

import copy
import math

import numpy as np

from .. import backend, ops
from ..errors import ShapeError
from ..layers.norm import _BatchNorm, _InstanceNorm
from ..module import Layer, no_grad
from .lr_scheduler import LRScheduler, _per_group


def get_ema_multi_avg_fn(decay=0.999):
    """An exponential moving average for :class:`AveragedModel`:
    a ← a + (1 − decay)(p − a), for every floating array at once (on CuPy,
    one fused launch per 48 arrays)."""
    decay = _check_decay(decay, "get_ema_multi_avg_fn")

    def ema_update(averaged, current, num_averaged):
        ops.lerp_(averaged, current, 1.0 - decay)

    return ema_update


def get_ema_avg_fn(decay=0.999):
    """The same average, one array at a time: returns the new average."""
    decay = _check_decay(decay, "get_ema_avg_fn")

    def ema_update(averaged, current, num_averaged):
        return decay * averaged + (1 - decay) * current

    return ema_update


def get_swa_multi_avg_fn():
    """The running mean of every update so far (SWA's):
    a ← a + (p − a) / (n + 1) after n updates."""

    def swa_update(averaged, current, num_averaged):
        ops.lerp_(averaged, current, 1.0 / (int(num_averaged) + 1))

    return swa_update


def get_swa_avg_fn():
    """SWA's running mean, one array at a time: returns the new average."""

    def swa_update(averaged, current, num_averaged):
        return averaged + (current - averaged) / (int(num_averaged) + 1)

    return swa_update


def _check_decay(decay, name):
    if not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"{name}: expected an EMA decay in [0, 1], received {decay!r}")
    return float(decay)


class AveragedModel(Layer):
    """A running average of ``model``'s weights (PyTorch's
    ``swa_utils.AveragedModel``): a copy of the model whose parameters are
    averaged by every :meth:`update_parameters` call.  It is a layer: call
    it as the model (``forward`` runs ``self.module``), and its
    ``state_dict()`` has PyTorch's keys (``module.<name>`` and
    ``n_averaged``).

    Args:
        model: the model to average; copied (deep) at construction.
        device: where the average lives ("cpu", "cuda:0"); the model's device by default.
        avg_fn: ``f(averaged, current, num_averaged) -> new average``, per array.
        multi_avg_fn: ``f(averaged_list, current_list, num_averaged)``, updating
            the arrays of the first list in place (:func:`get_ema_multi_avg_fn`).
            With neither, the equal-weight mean of every update (SWA).
        use_buffers: average the buffers too (BatchNorm's running statistics);
            otherwise they are copied from the model at each update, and
            :func:`update_bn` recomputes them for the averaged weights.

    The first update copies the model; later ones average.  Arrays that are
    not floating point (BatchNorm's ``num_batches_tracked``) are copied.
    """

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("AveragedModel: expected avg_fn or multi_avg_fn, not both")
        if not isinstance(model, Layer):
            raise TypeError(f"AveragedModel: expected a lamina Layer to average, received {type(model).__name__}")
        module = copy.deepcopy(model)
        module.clear_cache()
        module.zero_grad(set_to_none=True)
        self.module = module.to(device) if device is not None else module
        self.register_buffer("n_averaged", np.zeros((), dtype=np.int64))
        if device is not None:
            self._set_buffer("n_averaged", backend.to_device(self.n_averaged, backend.Device(device)))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, bool(use_buffers)
        self._count = 0  # n_averaged on the host: reading the buffer would wait for the GPU

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, dy):
        return self.module.backward(dy)

    def _pairs(self, model):
        """(averaged, current) arrays to average, and (averaged, current) arrays to copy."""
        mine = [(n, p.data) for n, p in self.module.named_parameters()] + list(self.module.named_buffers())
        theirs = [p.data for p in model.parameters()] + list(model.buffers())
        if len(mine) != len(theirs):
            raise ShapeError(f"{self._label()}: expected a model with the averaged one's {len(mine)} parameters and "
                             f"buffers, received {type(model).__name__} with {len(theirs)}")
        for (name, a), p in zip(mine, theirs):
            if not backend.is_array(p) or a.shape != p.shape:
                raise ShapeError(f"{self._label()}: expected {name} of shape {tuple(a.shape)} in the model, "
                                 f"received {getattr(p, 'shape', type(p).__name__)}")
        n_params = len(list(self.module.parameters()))
        average, copied = [], []
        for i, ((_, a), p) in enumerate(zip(mine, theirs)):
            floating = a.dtype.kind == "f" or backend.is_low_precision(a.dtype)
            (average if floating and (i < n_params or self.use_buffers) else copied).append((a, p))
        return average, copied

    def update_parameters(self, model):
        """Fold ``model``'s current weights into the average (the first call copies them)."""
        average, copied = self._pairs(model)  # validated before anything changes

        def here(a, p):  # the model's array on the average's device and in its dtype
            p = backend.to_device(p, backend.device_of(a))
            return p if p.dtype == a.dtype else p.astype(a.dtype)

        current = [here(a, p) for a, p in average]
        averaged = [a for a, _ in average]
        if self._count == 0:
            for a, p in zip(averaged, current):
                a[...] = p
        elif self.avg_fn is not None:
            for a, p in zip(averaged, current):
                a[...] = self.avg_fn(a, p, self._count)
        else:
            (self.multi_avg_fn or get_swa_multi_avg_fn())(averaged, current, self._count)
        for a, p in copied:
            a[...] = here(a, p)
        self._count += 1
        self.n_averaged[...] += 1

    def load_state_dict(self, state_dict, strict=True):
        result = super().load_state_dict(state_dict, strict)
        self._count = int(self.n_averaged)
        return result

    def extra_repr(self):
        how = "custom" if self.avg_fn or self.multi_avg_fn else "swa"
        return f"average={how}" + (", use_buffers=True" if self.use_buffers else "")


class SWALR(LRScheduler):
    """Anneal each group's lr to ``swa_lr`` over ``anneal_epochs`` steps,
    then hold it (PyTorch's ``swa_utils.SWALR``):

        lr_t = swa_lr · α(t / anneal_epochs) + lr_0 · (1 − α(t / anneal_epochs))

    α(s) = (1 − cos(π s)) / 2 ("cos") or s ("linear"), s clipped to [0, 1];
    lr_0 is the group's lr when the scheduler is built; with anneal_epochs 0
    the lr is swa_lr at once.  ``swa_lr``: a float or one per group.
    """

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos", last_epoch=-1):
        groups = optimizer.param_groups
        swa_lrs = _per_group("SWALR", "swa_lr", swa_lr, groups)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"SWALR: expected anneal_strategy 'cos' or 'linear', received {anneal_strategy!r}")
        if not isinstance(anneal_epochs, (int, np.integer)) or anneal_epochs < 0:
            raise ValueError(f"SWALR: expected anneal_epochs as an int >= 0, received {anneal_epochs!r}")
        for group, lr in zip(groups, swa_lrs):
            group["swa_lr"] = float(lr)
        self.anneal_epochs, self.anneal_strategy = int(anneal_epochs), anneal_strategy
        super().__init__(optimizer, last_epoch)

    def _alpha(self, s):
        return (1 - math.cos(math.pi * s)) / 2 if self.anneal_strategy == "cos" else s

    def lr_at(self, t):
        step = max(1, t) if self.anneal_epochs == 0 else t
        a = self._alpha(max(0.0, min(1.0, step / max(1, self.anneal_epochs))))
        return [g["swa_lr"] * a + base * (1 - a) for g, base in zip(self.optimizer.param_groups, self.base_lrs)]


def update_bn(loader, model, device=None):
    """Recompute the BatchNorm running statistics of ``model`` with one pass
    over ``loader`` (PyTorch's ``swa_utils.update_bn``): the statistics are
    reset, then every batch's enter with equal weight (a cumulative average).
    Each batch is an array, or a tuple/list whose first item is the input;
    ``device`` moves it first.  The mode and momenta are restored after."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and not isinstance(m, _InstanceNorm)
             and m.track_running_stats]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    model.train()
    try:
        for m in norms:
            m.momentum = None
        with no_grad():
            for batch in loader:
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                if device is not None:
                    x = backend.to_device(x, backend.Device(device))
                model(x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.train(was_training)
