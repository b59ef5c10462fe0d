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


def trunc_normal_(target, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """N(mean, std²) restricted to [a, b] (``torch.nn.init.trunc_normal_``;
    a and b are absolute bounds, not multiples of std).

    Exact, by rejection: when [a, b] holds more than 30% of the normal's
    mass, out-of-range draws are redrawn from the normal; otherwise draws
    are uniform on [a, b], each kept with probability pdf(x) / max pdf.
    """
    if not std > 0:
        raise ValueError(f"trunc_normal_: expected std > 0, received {std!r}")
    if not a < b:
        raise ValueError(f"trunc_normal_: expected a < b, received a={a!r}, b={b!r}")
    gen, shape = lrandom.cpu_generator(), _shape(target)

    def cdf(z):
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    mass = cdf((b - mean) / std) - cdf((a - mean) / std)
    if mass > 0.3:
        values = gen.normal(mean, std, size=shape)
        while (bad := (values < a) | (values > b)).any():
            values[bad] = gen.normal(mean, std, size=int(bad.sum()))
    else:
        peak = min(max(mean, a), b)  # where the density is largest on [a, b]

        def draw(n):
            x = gen.uniform(a, b, size=n)
            keep = np.log(gen.uniform(size=n)) <= -0.5 * (((x - mean) / std) ** 2 - ((peak - mean) / std) ** 2)
            return x, keep

        values = np.empty(shape).reshape(-1)
        filled = 0
        while filled < values.size:
            x, keep = draw(max(2 * (values.size - filled), 16))
            x = x[keep][: values.size - filled]
            values[filled: filled + x.size] = x
            filled += x.size
        values = values.reshape(shape)
    return _assign(target, values)


def orthogonal_(target, gain=1.0):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al., 2013;
    ``torch.nn.init.orthogonal_``): trailing dimensions are flattened, so
    the (rows, cols) view has orthonormal rows or columns, whichever are
    fewer.  Q of the QR factorisation of a Gaussian matrix, its columns'
    signs fixed by diag(R) so that Q is uniform (Haar) over such matrices.
    """
    shape = _shape(target)
    if len(shape) < 2:
        raise ValueError(f"orthogonal_: expected at least 2 dimensions, received shape {shape}")
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    if rows * cols == 0:
        return target
    flat = lrandom.cpu_generator().normal(size=(rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return _assign(target, (gain * q).reshape(shape))


def eye_(target):
    """The identity matrix on a 2-d target (ones on the diagonal of a
    non-square one), as ``torch.nn.init.eye_``: a Dense layer that passes
    its first min(in, out) features through."""
    shape = _shape(target)
    if len(shape) != 2:
        raise ValueError(f"eye_: expected a 2-d target, received shape {shape}")
    return _assign(target, np.eye(*shape))


def dirac_(target, groups=1):
    """A convolution weight (out, in/groups, *kernel) that passes its input
    through (``torch.nn.init.dirac_``): in each group, output channel d reads
    input channel d at the kernel's centre, for d < min(out/groups, in/groups)."""
    shape = _shape(target)
    if len(shape) not in (3, 4, 5):
        raise ValueError(f"dirac_: expected a 3-, 4- or 5-d convolution weight, received shape {shape}")
    if shape[0] % groups:
        raise ValueError(f"dirac_: expected dimension 0 ({shape[0]}) divisible by groups ({groups})")
    per_group = shape[0] // groups
    values = np.zeros(shape)
    centre = tuple(k // 2 for k in shape[2:])
    for g in range(groups):
        for d in range(min(per_group, shape[1])):
            values[(g * per_group + d, d, *centre)] = 1.0
    return _assign(target, values)
