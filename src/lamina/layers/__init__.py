"""lamina's layers, one family per file."""

from .activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .containers import Flatten, Identity, Sequential
from .dense import Dense
from .dropout import Dropout

__all__ = ["Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "Identity", "Flatten", "Dropout", "Sequential"]
