"""The explicit training loop, written out once: forward, loss, backward, step."""

import numpy as np

from .. import backend
from .. import random as lrandom
from ..module import no_grad


def iterate_minibatches(n, batch_size, shuffle=True):
    """Yield index arrays covering range(n) in batches; shuffled with lamina's
    CPU generator (seeded by :func:`lamina.manual_seed`)."""
    order = lrandom.cpu_generator().permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def check_scalar_loss(loss_fn, caller):
    """Refuse a loss that returns one value per element (reduction="none"):
    these loops sum and average scalar losses."""
    if getattr(loss_fn, "reduction", "mean") == "none":
        raise ValueError(f"{caller}: expected a loss that reduces to a scalar (reduction 'mean' or 'sum'), "
                         f"received {loss_fn!r}")


def train_epoch(model, loss_fn, optimizer, x, y, batch_size, shuffle=True):
    """One pass over (x, y).  Returns the mean training loss.

    ``x`` and ``y`` are NumPy arrays; each batch moves to the model's device.
    """
    check_scalar_loss(loss_fn, "train_epoch")
    model.train()
    device = model.device
    total, count = 0.0, 0
    for idx in iterate_minibatches(len(x), batch_size, shuffle):
        xb = backend.to_device(x[idx], device)
        yb = backend.to_device(y[idx], device)
        loss = loss_fn(model(xb), yb)          # forward (a Python float: the host waits for the GPU here)
        optimizer.zero_grad()
        model.backward_parameters(loss_fn.backward())  # backward (the input needs no gradient)
        optimizer.step()                       # update
        total += loss * len(idx)
        count += len(idx)
    return total / max(count, 1)


def accuracy(logits, y):
    xp = backend.get_array_module(logits)
    return float((xp.argmax(logits, axis=1) == y).mean())


@no_grad()
def evaluate(model, loss_fn, x, y, batch_size=1024):
    """Mean loss and accuracy over (x, y) in eval mode, caching nothing."""
    check_scalar_loss(loss_fn, "evaluate")
    was_training = model.training
    model.eval()
    device = model.device
    total_loss, correct = 0.0, 0
    try:
        for idx in iterate_minibatches(len(x), batch_size, shuffle=False):
            xb = backend.to_device(x[idx], device)
            yb = backend.to_device(y[idx], device)
            logits = model(xb)
            if device != backend.CPU and hasattr(loss_fn, "check_labels") and logits.ndim == 2:
                loss_fn.check_labels(y[idx], logits.shape[1])  # on the host copy: no wait for the GPU
            # the sums stay on the model's device and are read once, at the end
            total_loss += getattr(loss_fn, "compute", loss_fn)(logits, yb) * len(idx)
            xp = backend.get_array_module(logits)
            correct += (xp.argmax(logits, axis=1) == yb).sum()
    finally:
        model.train(was_training)
    return float(total_loss) / len(x), int(correct) / len(x)
