"""Padding layers, PyTorch's ``nn.ZeroPad2d``, ``ConstantPad2d``,
``ReflectionPad2d``, ``ReplicationPad2d``, ``CircularPad2d`` and their 1-d
forms.

Forward pads the last one (1-d) or two (2-d) axes; backward sums each
border's gradient back onto the positions it copied (the derivation is in
:mod:`lamina.ops.pad`).  Nothing but the input's shape is cached.
"""

from .. import ops
from ..errors import ShapeError
from ..module import Layer
from ._utils import as_tuple


class _PadNd(Layer):
    _nd = 2
    _mode = "constant"

    def __init__(self, padding, value=0.0):
        super().__init__()
        name = type(self).__name__
        sides = as_tuple(padding, 2 * self._nd, name, "padding", minimum=0)
        # PyTorch's order: (left, right) for 1-d, (left, right, top, bottom) for 2-d: the last axis first
        self.padding = sides
        self.value = float(value)
        self._pads = tuple((sides[2 * i], sides[2 * i + 1]) for i in reversed(range(self._nd)))  # per axis, first axis first

    def forward(self, x):
        x = self._check_input(x)
        if x.ndim not in (self._nd + 1, self._nd + 2):
            raise ShapeError(
                f"{self._label()}: expected a {self._nd + 1}-d or {self._nd + 2}-d input, received shape {tuple(x.shape)}"
            )
        for axis, (before, after) in zip(range(x.ndim - self._nd, x.ndim), self._pads):
            least = max(before, after) + (self._mode == "reflect")  # reflect needs pad < size, circular pad <= size
            if self._mode in ("reflect", "circular") and x.shape[axis] < least:
                raise ShapeError(
                    f"{self._label()}: expected size at least {least} in dimension {axis} for {self._mode} padding, "
                    f"received shape {tuple(x.shape)}"
                )
        y = ops.pad(x, self._pads, self._mode, self.value)
        self._save(None, out=y)
        return y

    def backward(self, dy):
        self._take_cache(dy)
        return ops.pad_backward(dy, self._pads, self._mode)

    def extra_repr(self):
        s = f"{self.padding}"
        return s + f", value={self.value}" if type(self).__name__.startswith("ConstantPad") else s


class ConstantPad1d(_PadNd):
    """Pads the last axis of (N, C, L) or (C, L) with ``value``.

    Args:
        padding: an int, or (left, right).
        value: the fill.

    Backward: dx = dy[..., left:left + L].
    """

    _nd = 1


class ConstantPad2d(_PadNd):
    """Pads the last two axes of (N, C, H, W) or (C, H, W) with ``value``.

    Args:
        padding: an int, or (left, right, top, bottom) as PyTorch.
        value: the fill.

    Backward: dx = dy[..., top:top + H, left:left + W].
    """


class ZeroPad1d(ConstantPad1d):
    """:class:`ConstantPad1d` with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ZeroPad2d(ConstantPad2d):
    """:class:`ConstantPad2d` with zeros."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ReflectionPad1d(_PadNd):
    """Mirror padding of the last axis, the edge not repeated:
    [a b c d] padded by 2 is [c b a b c d c b].  Each pad < L.

    Backward: the mirrored borders' gradients fold back onto the positions
    they copied (dx[1:left+1] += flip(dy[:left]), and so on).
    """

    _nd = 1
    _mode = "reflect"


class ReflectionPad2d(_PadNd):
    """Mirror padding of the last two axes (:class:`ReflectionPad1d` along
    each); padding (left, right, top, bottom), each < its axis."""

    _mode = "reflect"


class ReplicationPad1d(_PadNd):
    """Edge padding of the last axis: [a b c] padded by 2 is [a a a b c c c].

    Backward: dx[0] += Σ dy[:left], dx[L-1] += Σ dy[left + L:].
    """

    _nd = 1
    _mode = "replicate"


class ReplicationPad2d(_PadNd):
    """Edge padding of the last two axes; padding (left, right, top, bottom)."""

    _mode = "replicate"


class CircularPad1d(_PadNd):
    """Periodic padding of the last axis: [a b c] padded by 2 is [b c a b c a b].
    Each pad <= L.

    Backward: the wrapped borders' gradients add onto the other end.
    """

    _nd = 1
    _mode = "circular"


class CircularPad2d(_PadNd):
    """Periodic padding of the last two axes; padding (left, right, top, bottom)."""

    _mode = "circular"
