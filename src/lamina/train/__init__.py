"""Training helpers built on the explicit loop."""

from .loop import accuracy, evaluate, iterate_minibatches, train_epoch

__all__ = ["accuracy", "evaluate", "iterate_minibatches", "train_epoch"]
