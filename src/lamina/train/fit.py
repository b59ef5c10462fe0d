"""``fit()``: the explicit loop with validation, metrics, callbacks, a
progress bar and a :class:`History`, for when writing the loop out is not
the point.  The loop inside is the same five lines as everywhere in lamina:
forward, loss, zero_grad, backward, step."""

import math
import os
import sys

import numpy as np

from .. import backend
from ..data.loader import DataLoader
from ..module import no_grad
from ..serialization import save, save_checkpoint
from .history import History
from .loop import check_scalar_loss


class Callback:
    """Hooks into :func:`fit`.  ``trainer`` is the running :class:`Trainer`;
    set ``trainer.stop = True`` to end training after this epoch."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs; with ``restore_best``, put the best epoch's weights
    back at the end."""

    def __init__(self, monitor="val_loss", mode="min", patience=5, min_delta=0.0, restore_best=True):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: expected mode 'min' or 'max', received {mode!r}")
        self.monitor, self.mode, self.patience = monitor, mode, int(patience)
        self.min_delta, self.restore_best = float(min_delta), bool(restore_best)
        self.best, self.best_epoch, self.wait, self.best_state, self.stopped_epoch = None, None, 0, None, None

    def _improved(self, value):
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: the metric {self.monitor!r} is not logged (have {sorted(logs)})")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = {k: backend.to_device(v, "cpu").copy() for k, v in trainer.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop = True

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Every ``every`` epochs, save a full training checkpoint (model,
    optimizer, scheduler, loader position, random states) to
    ``directory/checkpoint.safetensors``; with ``monitor``, also the best
    weights so far to ``directory/best.safetensors``."""

    def __init__(self, directory, every=1, monitor=None, mode="min"):
        self.directory, self.every, self.monitor, self.mode = os.fspath(directory), int(every), monitor, mode
        self.best = None

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch % self.every == 0:
            trainer.save_checkpoint(os.path.join(self.directory, "checkpoint.safetensors"))
        if self.monitor is not None:
            value = logs[self.monitor]
            if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
                self.best = value
                save(trainer.model, os.path.join(self.directory, "best.safetensors"), {"epoch": epoch, self.monitor: value})


class LRSchedulerCallback(Callback):
    """Step a scheduler once per epoch; ``ReduceLROnPlateau`` gets ``monitor``."""

    def __init__(self, scheduler, monitor="val_loss"):
        self.scheduler, self.monitor = scheduler, monitor

    def on_epoch_end(self, trainer, epoch, logs):
        if hasattr(self.scheduler, "is_better"):  # ReduceLROnPlateau
            self.scheduler.step(logs[self.monitor])
        else:
            self.scheduler.step()


def _grad_norms(named_layers):
    out = {}
    for name, layer in named_layers:
        total = 0.0
        for p in layer.parameters(recurse=False):
            if p.grad is not None:
                total += float((p.grad.astype(np.float64) ** 2).sum()) if isinstance(p.grad, np.ndarray) else float((p.grad**2).sum())
        out[name] = math.sqrt(total)
    return out


class Trainer:
    """The state of one :func:`fit` run (what callbacks see)."""

    def __init__(self, model, loss_fn, optimizer, loader, scheduler=None, history=None, scaler=None):
        self.model, self.loss_fn, self.optimizer, self.loader, self.scheduler = model, loss_fn, optimizer, loader, scheduler
        self.scaler = scaler
        self.history = history or History()
        self.epoch = 0
        self.step = 0
        self.stop = False
        self.layers = [(n or type(m).__name__, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]

    def save_checkpoint(self, path):
        save_checkpoint(
            path, self.model, self.optimizer, self.scheduler, self.scaler, loader=self.loader, epoch=self.epoch, step=self.step,
            extra={"history": self.history.state_dict()},
        )


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)


def fit(model, loss_fn, optimizer, train, val=None, epochs=10, batch_size=32, shuffle=True, scheduler=None,
        callbacks=(), progress=None, clip_grad_norm=None, track_grad_norms=True, trainer=None, scaler=None):
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    Args:
        model, loss_fn, optimizer: a lamina model, loss and optimizer.
        train: a :class:`DataLoader`, or a tuple ``(x, y)`` of NumPy arrays
            (then batched with ``batch_size`` and ``shuffle``).
        val: ``(x, y)`` evaluated after every epoch in eval mode, under
            ``no_grad``; adds ``val_loss`` and ``val_accuracy``.
        scheduler: stepped once per epoch (``ReduceLROnPlateau`` on val_loss,
            or loss without validation data).
        callbacks: :class:`Callback` objects (:class:`EarlyStopping`,
            :class:`ModelCheckpoint`, ...).
        progress: show a tqdm bar; by default only when stderr is a terminal.
        clip_grad_norm: clip the global gradient norm to this before each step.
        track_grad_norms: record each layer's mean gradient norm per epoch.
        trainer: a :class:`Trainer` to continue (see :func:`resume`).
        scaler: a :class:`lamina.amp.LossScaler` for float16 training: the
            loss gradient is scaled, gradients are unscaled before clipping,
            and steps with inf/NaN gradients are skipped.

    The loss is averaged over samples, and accuracy is computed when the
    model's outputs are (N, classes) logits with integer labels.
    """
    from ..optim.clip import clip_grad_norm_  # noqa: PLC0415

    check_scalar_loss(loss_fn, "fit")
    loader = train if isinstance(train, DataLoader) else DataLoader(*train, batch_size=batch_size, shuffle=shuffle)
    if trainer is None:
        trainer = Trainer(model, loss_fn, optimizer, loader, scheduler, scaler=scaler)
    scaler = trainer.scaler if scaler is None else scaler
    callbacks = list(callbacks)
    if scheduler is not None:  # first, so that checkpoints see the stepped scheduler
        callbacks.insert(0, LRSchedulerCallback(scheduler, "val_loss" if val is not None else "loss"))
    show = sys.stderr.isatty() if progress is None else bool(progress)
    # The loss and the accuracy count stay on the model's device during an epoch and are read once at its end.
    compute = getattr(loss_fn, "compute", loss_fn)
    device = model.device
    check_labels = getattr(loss_fn, "check_labels", None) if device != backend.CPU else None  # compute() checks on the CPU
    for cb in callbacks:
        cb.on_train_begin(trainer)
    while trainer.epoch < epochs and not trainer.stop:
        epoch = trainer.epoch + 1
        model.train()
        total, correct, count = 0.0, 0, 0
        norms = {}
        bar = _progress(len(loader) - loader.position, f"epoch {epoch}/{epochs}", show)
        for xb, y_host in loader:
            xb, yb = backend.to_device(xb, device), backend.to_device(y_host, device)
            logits = model(xb)                      # forward
            if check_labels is not None and logits.ndim == 2 and isinstance(y_host, np.ndarray):
                check_labels(y_host, logits.shape[1])  # on the host copy: no wait for the GPU
            loss = compute(logits, yb)              # stays on the device until the epoch ends
            optimizer.zero_grad()
            dlogits = loss_fn.backward()
            model.backward_parameters(scaler.scale(dlogits) if scaler is not None else dlogits)  # backward; no dx
            if scaler is not None:
                scaler.unscale_(optimizer)
            if track_grad_norms:
                for k, v in _grad_norms(trainer.layers).items():
                    norms[k] = norms.get(k, 0.0) + v
            if clip_grad_norm is not None:
                clip_grad_norm_(model.parameters(), clip_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)              # update, unless a gradient overflowed
                scaler.update()
            else:
                optimizer.step()                    # update
            trainer.step += 1
            n = len(yb)
            total += loss * n
            count += n
            if logits.ndim == 2 and yb.ndim == 1:
                xp = backend.get_array_module(logits)
                correct += (xp.argmax(logits, axis=1) == yb).sum()
            bar.update(1)
            if show and (bar.n == 1 or bar.n % 10 == 0):  # reading the loss waits for the GPU: not every step
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
        bar.close()
        trainer.epoch = epoch
        logs = {"loss": float(total) / max(count, 1)}
        if logits.ndim == 2 and yb.ndim == 1:
            logs["accuracy"] = int(correct) / max(count, 1)
        if val is not None:
            logs["val_loss"], logs["val_accuracy"] = evaluate_arrays(model, loss_fn, *val)
        logs["lr"] = optimizer.param_groups[0]["lr"]
        batches = max(len(loader), 1)
        trainer.history.record(epoch, logs, {k: v / batches for k, v in norms.items()})
        for cb in callbacks:
            cb.on_epoch_end(trainer, epoch, logs)
        if show:
            print(f"epoch {epoch}/{epochs} " + " ".join(f"{k} {v:.4g}" for k, v in logs.items()), file=sys.stderr)
    for cb in callbacks:
        cb.on_train_end(trainer)
    return trainer.history


@no_grad()
def evaluate_arrays(model, loss_fn, x, y, batch_size=1024):
    """Mean loss and accuracy of ``model`` on (x, y), in eval mode."""
    from .loop import evaluate  # noqa: PLC0415

    return evaluate(model, loss_fn, x, y, batch_size)


def resume(path, model, loss_fn, optimizer, train, scheduler=None, batch_size=32, shuffle=True, scaler=None):
    """A :class:`Trainer` restored from a checkpoint written by :class:`ModelCheckpoint`
    (or ``Trainer.save_checkpoint``); pass it to :func:`fit` as ``trainer=`` to
    continue exactly where the run stopped."""
    from ..serialization import load_checkpoint  # noqa: PLC0415

    loader = train if isinstance(train, DataLoader) else DataLoader(*train, batch_size=batch_size, shuffle=shuffle)
    trainer = Trainer(model, loss_fn, optimizer, loader, scheduler, scaler=scaler)
    info = load_checkpoint(path, model, optimizer, scheduler, scaler, loader=loader)
    trainer.epoch, trainer.step = info["epoch"], info["step"]
    if "history" in info["extra"]:
        trainer.history.load_state_dict(info["extra"]["history"])
    return trainer


__all__ = ["Callback", "EarlyStopping", "LRSchedulerCallback", "ModelCheckpoint", "Trainer", "fit", "resume"]
