"""Weight initialisers with PyTorch's semantics (``torch.nn.init``).

Each draws in float64 on the CPU from lamina's generator (so one seed gives
the same weights on every backend and dtype), then writes into the target in
its own dtype and device.  Targets are :class:`Parameter` objects or arrays;
the functions modify them in place and return them.
"""

import math

import numpy as np

from . import backend
from . import random as lrandom
from .module import Parameter


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(shape):
    """(fan_in, fan_out) of a weight of ``shape``: (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, received shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _assign(target, values):
    arr = target.data if isinstance(target, Parameter) else target
    values = backend.to_device(values.astype(arr.dtype), backend.device_of(arr))
    arr[...] = values
    return target


def _shape(target):
    return tuple(target.shape)


def uniform_(target, a=0.0, b=1.0):
    return _assign(target, lrandom.cpu_generator().uniform(a, b, size=_shape(target)))


def normal_(target, mean=0.0, std=1.0):
    return _assign(target, lrandom.cpu_generator().normal(mean, std, size=_shape(target)))


def constant_(target, value):
    return _assign(target, np.full(_shape(target), value, dtype=np.float64))


def zeros_(target):
    return constant_(target, 0.0)


def ones_(target):
    return constant_(target, 1.0)


def _fan(shape, mode):
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"expected mode 'fan_in' or 'fan_out', received {mode!r}")


def xavier_uniform_(target, gain=1.0):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))  (Glorot & Bengio, 2010)."""
    fan_in, fan_out = fan_in_and_fan_out(_shape(target))
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(target, -a, a)


def xavier_normal_(target, gain=1.0):
    """N(0, std²) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(_shape(target))
    return normal_(target, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(target, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = gain * sqrt(3 / fan)  (He et al., 2015)."""
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(_shape(target), mode))
    return uniform_(target, -bound, bound)


def kaiming_normal_(target, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std²) with std = gain / sqrt(fan)."""
    gain = calculate_gain(nonlinearity, a)
    return normal_(target, 0.0, gain / math.sqrt(_fan(_shape(target), mode)))
