"""Datasets that need no download."""

from .digits import load_digits
from .mnist1d import load_mnist1d

__all__ = ["load_digits", "load_mnist1d"]
