"""Containers and shape-only layers: Sequential, Residual, LayerList, LayerDict,
Identity, Flatten."""

from collections.abc import Mapping

import numpy as np

from .. import random as lrandom
from ..errors import ShapeError
from ..module import Layer, is_grad_enabled


def _renumber(container, layers):
    """Make ``layers`` the children of ``container``, named "0", "1", ...
    (through setattr and delattr, so the attributes follow the children)."""
    for name in list(container._children):
        delattr(container, name)
    for i, layer in enumerate(layers):
        setattr(container, str(i), layer)


class _Children:
    """What every container shares: its length, and the check of what it is given to hold."""

    def _layer(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"{type(self).__name__}: expected a Layer, received {type(layer).__name__}")
        return layer

    def __len__(self):
        return len(self._children)


class _ListEdits(_Children):
    """List editing for Sequential and LayerList, as PyTorch's Sequential and
    ModuleList: indexing (negative too), ``append``, ``extend``, ``insert``,
    ``pop``, assignment by index (the child keeps its name and place) and
    ``del`` (then the children are renumbered "0", "1", ...)."""

    def _key(self, index):
        """The child name at position ``index`` (negative counts from the end)."""
        n = len(self._children)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"{type(self).__name__}: expected an integer index or a slice, received {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} layers")
        return list(self._children)[index]

    def append(self, layer):
        setattr(self, str(len(self._children)), self._layer(layer))
        return self

    def extend(self, layers):
        for layer in layers:
            self.append(layer)
        return self

    def insert(self, index, layer):
        """Put ``layer`` before position ``index`` (as ``list.insert``, but an
        index outside [-len, len] is an IndexError)."""
        n = len(self._children)
        if not -n <= index <= n:
            raise IndexError(f"{type(self).__name__}: insert index {index} out of range for {n} layers")
        layers = list(self._children.values())
        layers.insert(index, self._layer(layer))
        _renumber(self, layers)
        return self

    def pop(self, index=-1):
        layer = self[index]
        del self[index]
        return layer

    def __iter__(self):
        return iter(self._children.values())

    def __reversed__(self):
        return reversed(list(self._children.values()))

    def __getitem__(self, index):
        return self._children[self._key(index)]

    def __setitem__(self, index, layer):
        setattr(self, self._key(index), self._layer(layer))

    def __delitem__(self, index):
        gone = set(list(self._children)[index]) if isinstance(index, slice) else {self._key(index)}
        _renumber(self, [layer for name, layer in self._children.items() if name not in gone])


class Sequential(_ListEdits, Layer):
    """Layers applied in order; children are named "0", "1", ... as in
    PyTorch, or by the keys of a mapping: ``Sequential(OrderedDict(fc=...,
    act=...))`` gives ``fc.weight``, as ``nn.Sequential`` does.

    forward: y = f_n(... f_1(f_0(x)))
    backward: dx = f_0'(f_1'(... f_n'(dy))) — each child's backward in reverse order.

    Editing works as on ``nn.Sequential``: indexing (negative too), slicing
    (a new Sequential of the same layers under their own names),
    ``append``, ``extend``, ``insert``, ``pop``, assignment by index and
    ``del``; after ``insert``, ``pop`` or ``del`` the children are
    renumbered "0", "1", ..., as PyTorch's are.

    ``checkpoint_segments=k`` cuts the children into k contiguous segments
    and checkpoints all but the last (see :mod:`lamina.checkpoint`): forward
    keeps each segment's input only, and backward recomputes each segment
    before running its backward.  The state_dict is unchanged.
    """

    def __init__(self, *layers, checkpoint_segments=0):
        super().__init__()
        if int(checkpoint_segments) < 0:
            raise ValueError(f"Sequential: expected checkpoint_segments >= 0, received {checkpoint_segments!r}")
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            for name, layer in layers[0].items():
                self.add_module(name, self._layer(layer))
        else:
            for layer in layers:
                self.append(layer)
        object.__setattr__(self, "checkpoint_segments", int(checkpoint_segments))

    def segments(self):
        """The children cut into ``checkpoint_segments`` contiguous lists (at most one per child)."""
        layers = list(self._children.values())
        k = min(max(self.checkpoint_segments, 1), len(layers))
        return [[layers[i] for i in idx] for idx in np.array_split(np.arange(len(layers)), k)]

    def __getitem__(self, index):
        if isinstance(index, slice):  # the layers under their own names, as nn.Sequential
            return Sequential(dict(list(self._children.items())[index]))
        return super().__getitem__(index)

    def __setattr__(self, name, value):
        if name == "checkpoint_segments":
            if int(value) < 0:
                raise ValueError(f"Sequential: expected checkpoint_segments >= 0, received {value!r}")
            object.__setattr__(self, name, int(value))
            return
        super().__setattr__(name, value)

    def forward(self, x):
        if self.checkpoint_segments > 1 and is_grad_enabled() and len(self._children) > 1:
            return self._checkpointed_forward(x)
        if self._cache is not None:
            self._set_cache(None)  # a plain forward: backward goes through the children directly
        for layer in self._children.values():
            x = layer(x)
        return x

    def _checkpointed_forward(self, x):
        from ..checkpoint import run_without_cache  # noqa: PLC0415 - checkpoint imports the module layer

        segments = self.segments()
        inputs = []
        for seg in segments[:-1]:
            inputs.append((x, lrandom.get_rng_state()))
            x = run_without_cache(seg, x)
        for layer in segments[-1]:  # the last segment keeps its caches: its backward comes first
            x = layer(x)
        self._save(inputs, out=x)  # [(segment input, random state before it)] for all but the last segment
        return x

    def backward(self, dy):
        return self._backward(dy, input_grad=True)

    def backward_parameters(self, dy):
        """:meth:`Layer.backward_parameters`: every layer's backward, the first
        layer's without its input gradient."""
        self._backward(dy, input_grad=False)

    def _backward(self, dy, input_grad):
        first = next(iter(self._children.values()), None)

        def run(layer, dy):
            return layer.backward(dy) if input_grad or layer is not first else layer.backward_parameters(dy)

        if self._cache is None:
            for layer in reversed(self._children.values()):
                dy = run(layer, dy)
            return dy
        from ..checkpoint import recompute  # noqa: PLC0415

        inputs = self._take_cache(dy)
        segments = self.segments()
        for layer in reversed(segments[-1]):
            dy = run(layer, dy)
        for seg, (x, rng) in zip(reversed(segments[:-1]), reversed(inputs)):
            recompute(seg, x, rng)
            for layer in reversed(seg):
                dy = run(layer, dy)
        return dy

    def extra_repr(self):
        return f"checkpoint_segments={self.checkpoint_segments}" if self.checkpoint_segments else ""

class Identity(Layer):
    """y = x.  Backward: dx = dy."""

    def forward(self, x):
        self._check_input(x)
        self._save(None, out=x)
        return x

    def backward(self, dy):
        self._take_cache(dy)
        return dy.copy()


class _Reshape(Layer):
    """A layer whose forward is a reshape: backward reshapes dy back to the
    cached input shape (a fresh array, as every dx)."""

    def backward(self, dy):
        shape = self._take_cache(dy)
        return dy.reshape(shape).copy()


class Flatten(_Reshape):
    """Flattens dimensions ``start_dim`` .. ``end_dim`` into one (PyTorch's ``nn.Flatten``).

    Backward: dx = dy reshaped to the input's shape (caches that shape).
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x):
        self._check_input(x)
        nd = x.ndim
        start = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        end = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= start <= end < max(nd, 1)):
            raise ShapeError(
                f"{self._label()}: expected an input with dimensions {self.start_dim}..{self.end_dim}, "
                f"received shape {tuple(x.shape)}"
            )
        shape = x.shape[:start] + (-1,) + x.shape[end + 1 :]
        y = x.reshape(shape)
        self._save(x.shape, out=y)
        return y

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(_Reshape):
    """Splits dimension ``dim`` into ``unflattened_size`` (PyTorch's ``nn.Unflatten``);
    one entry of the size may be -1.

    Backward: dx = dy reshaped to the input's shape (caches that shape).
    """

    def __init__(self, dim, unflattened_size):
        super().__init__()
        sizes = tuple(int(s) for s in unflattened_size)
        if not sizes or sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(
                f"Unflatten: expected unflattened_size as positive ints with at most one -1, received {unflattened_size!r}"
            )
        self.dim, self.unflattened_size = int(dim), sizes

    def forward(self, x):
        self._check_input(x)
        dim = self.dim + x.ndim if self.dim < 0 else self.dim
        known = 1
        for s in self.unflattened_size:
            known *= s if s > 0 else 1
        if not 0 <= dim < x.ndim or (x.shape[dim] % known if -1 in self.unflattened_size else x.shape[dim] != known):
            raise ShapeError(
                f"{self._label()}: expected dimension {self.dim} of a size that splits into {self.unflattened_size}, "
                f"received shape {tuple(x.shape)}"
            )
        y = x.reshape(x.shape[:dim] + self.unflattened_size + x.shape[dim + 1:])
        self._save(x.shape, out=y)
        return y

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Residual(Layer):
    """y = body(x) + shortcut(x), the shortcut being the identity by default.

    Backward sums the two branches: dx = body'(dy) + shortcut'(dy)
    (+ dy itself for the identity).  Children are named ``body`` and
    ``shortcut``.  A ResNet basic block::

        Residual(
            Sequential(Conv2D(c, c, 3, padding=1, bias=False), BatchNorm2d(c), ReLU(),
                       Conv2D(c, c, 3, padding=1, bias=False), BatchNorm2d(c)),
        )

    followed by a ReLU; a downsampling block passes
    ``shortcut=Sequential(Conv2D(c, 2*c, 1, stride=2, bias=False), BatchNorm2d(2*c))``.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        for name, layer in (("body", body), ("shortcut", shortcut)):
            if layer is not None and not isinstance(layer, Layer):
                raise TypeError(f"Residual: expected {name} to be a Layer, received {type(layer).__name__}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        self._check_input(x)
        a = self.body(x)
        b = x if self.shortcut is None else self.shortcut(x)
        if a.shape != b.shape:
            branch = "the input" if self.shortcut is None else "the shortcut's output"
            raise ShapeError(
                f"{self._label()}: expected the body's output to match {branch} in shape, "
                f"received {tuple(a.shape)} and {tuple(b.shape)}"
            )
        y = a + b
        self._save(None, out=y)
        return y

    def backward(self, dy):
        self._take_cache(dy)
        dx = self.body.backward(dy)
        dx += dy if self.shortcut is None else self.shortcut.backward(dy)
        return dx

    def extra_repr(self):
        return "" if self.shortcut is not None else "shortcut=identity"


class _Holder(_Children, Layer):
    """A container with no forward of its own: the model that holds it
    calls its layers (and their backward, in reverse) in its own forward."""

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} holds layers and has no forward: call its layers in the "
                                  "forward of the model that holds it (and their backward, in reverse, in its backward)")

    backward = forward


class LayerList(_ListEdits, _Holder):
    """A list of layers whose parameters belong to the model that holds it
    (PyTorch's ``nn.ModuleList``): children named "0", "1", ..., so
    ``blocks.3.weight`` is the same key in both.  A plain Python list of
    layers would hide their parameters from ``parameters()``,
    ``state_dict()`` and ``to()``.

    It has no forward: the holder runs its layers, e.g.
    ``for block in self.blocks: x = block(x)`` and in backward
    ``for block in reversed(self.blocks): dy = block.backward(dy)``.
    Indexing, slicing (a new LayerList of the same layers), ``append``,
    ``extend``, ``insert``, assignment and ``del`` work as on a list; the
    children are renumbered after an insertion or deletion, as PyTorch's.
    """

    def __init__(self, layers=()):
        super().__init__()
        self.extend(layers)

    def __getitem__(self, index):
        if isinstance(index, slice):  # a new LayerList of the same layers, renumbered, as nn.ModuleList
            return LayerList(list(self._children.values())[index])
        return super().__getitem__(index)


class LayerDict(_Holder):
    """Layers by name, whose parameters belong to the model that holds it
    (PyTorch's ``nn.ModuleDict``): ``heads["age"].weight`` is saved as
    ``heads.age.weight``.  Insertion-ordered, with the mapping methods
    (``[]``, ``in``, ``keys``, ``values``, ``items``, ``update``, ``pop``);
    no forward of its own, as :class:`LayerList`.  A name is a non-empty
    string without "."."""

    def __init__(self, layers=None):
        super().__init__()
        if layers is not None:
            self.update(layers)

    def _key(self, key):
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"LayerDict: expected a name as a non-empty string without '.', received {key!r}")
        return key

    def __getitem__(self, key):
        return self._children[key]

    def __setitem__(self, key, layer):
        self._children[self._key(key)] = self._layer(layer)

    def __delitem__(self, key):
        del self._children[key]

    def __contains__(self, key):
        return key in self._children

    def __iter__(self):
        return iter(self._children)

    def keys(self):
        return self._children.keys()

    def values(self):
        return self._children.values()

    def items(self):
        return self._children.items()

    def pop(self, key):
        return self._children.pop(key)

    def update(self, layers):
        for key, layer in (layers.items() if hasattr(layers, "items") else layers):
            self[key] = layer
