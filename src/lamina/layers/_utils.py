"""Argument parsing shared by the convolution and pooling layers."""

import numpy as np


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def as_tuple(value, nd, layer, name, minimum=1):
    """An int or a sequence of ``nd`` ints, each >= ``minimum``, as a tuple."""
    if _is_int(value):
        out = (int(value),) * nd
    elif isinstance(value, (tuple, list)) and len(value) == nd and all(_is_int(v) for v in value):
        out = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{layer}: expected {name} as an int or a tuple of {nd} ints, received {value!r}")
    if any(v < minimum for v in out):
        raise ValueError(f"{layer}: expected {name} >= {minimum}, received {value!r}")
    return out


def positive_int(value, layer, name):
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{layer}: expected {name} to be a positive int, received {value!r}")
    return int(value)


def adaptive_sizes(value, nd, layer):
    """Adaptive pooling's ``output_size``: an int or ``nd`` entries, each a
    positive int or None (keep that axis's input size), as a tuple."""
    sizes = tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd
    if len(sizes) != nd or not all(s is None or (_is_int(s) and s > 0) for s in sizes):
        raise ValueError(f"{layer}: expected output_size as {nd} positive int(s) (None keeps "
                         f"that axis), received {value!r}")
    return tuple(None if s is None else int(s) for s in sizes)
