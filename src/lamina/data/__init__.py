"""Datasets that need no download."""

from .mnist1d import load_mnist1d

__all__ = ["load_mnist1d"]
