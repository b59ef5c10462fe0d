"""Data: in-memory loaders, datasets that need no download, and readers for
downloaded MNIST and CIFAR-10 files."""

from .digits import load_digits
from .files import load_cifar10, load_mnist, read_idx
from .loader import DataLoader, default_collate, train_val_split
from .mnist1d import load_mnist1d
from .sequences import pad_sequence

__all__ = ["DataLoader", "default_collate", "train_val_split", "load_digits", "load_mnist1d", "load_mnist", "load_cifar10", "read_idx", "pad_sequence"]
