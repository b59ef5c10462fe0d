"""Training: the explicit loop's helpers, and fit() with callbacks on top."""

from .fit import (
    Callback,
    EarlyStopping,
    LRSchedulerCallback,
    ModelCheckpoint,
    Trainer,
    fit,
    resume,
)
from .history import History
from .loop import accuracy, evaluate, iterate_minibatches, train_epoch

__all__ = [
    "accuracy", "evaluate", "iterate_minibatches", "train_epoch",
    "fit", "resume", "Trainer", "History", "Callback", "EarlyStopping", "ModelCheckpoint", "LRSchedulerCallback",
]
