"""The Layer base class, Parameter, and the no_grad switch.

A layer is an object with a hand-written ``forward`` and ``backward``:

* ``forward(x)`` computes the output and caches what ``backward`` will need
  (through :meth:`Layer._save`), unless gradients are disabled;
* ``backward(dy)`` takes the gradient of the loss with respect to the output,
  returns the gradient with respect to the input (a fresh array) and
  *accumulates* (``+=``) into each ``Parameter.grad``.

There is no autograd tape: a container's ``backward`` calls its children's
``backward`` in reverse order, and that is the whole of backpropagation.
"""

import contextlib
import threading
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from . import backend, hooks, memory
from .errors import CacheError, DeviceError, DTypeError, ShapeError, StateDictError

# --------------------------------------------------------------------------
# no_grad
# --------------------------------------------------------------------------

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "grad_enabled", True)


def set_grad_enabled(mode):
    _state.grad_enabled = bool(mode)


def is_recomputing():
    """True while gradient checkpointing re-runs a segment's forward: layers
    with side effects in forward (BatchNorm's running statistics) skip them."""
    return getattr(_state, "recomputing", False)


@contextlib.contextmanager
def recomputing():
    prev = is_recomputing()
    _state.recomputing = True
    try:
        yield
    finally:
        _state.recomputing = prev


class no_grad(contextlib.ContextDecorator):
    """Within this context (or decorated function) layers cache nothing, so
    inference uses no memory for backward and ``backward`` cannot be called."""

    def __enter__(self):
        self._prev = is_grad_enabled()
        set_grad_enabled(False)
        return self

    def __exit__(self, *exc):
        set_grad_enabled(self._prev)
        return False


# --------------------------------------------------------------------------
# Parameter
# --------------------------------------------------------------------------


class Parameter:
    """A trainable array with its gradient beside it.

    Attributes:
        data: the value (``numpy.ndarray`` or ``cupy.ndarray``).
        grad: the accumulated gradient, same shape/dtype/device as ``data``,
            or None before the first backward and after ``zero_grad()``.
        requires_grad: when False, backward leaves ``grad`` alone and
            optimizers skip the parameter.
    """

    __slots__ = ("data", "grad", "requires_grad", "__weakref__")

    def __init__(self, data, requires_grad=True):
        if not backend.is_array(data):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))

    def accumulate(self, g, owned=False):
        """``grad += g`` (``grad = g`` the first time).

        ``owned=True`` says the caller hands ``g`` over: a freshly computed
        array that nothing else holds or will write.  A first gradient of the
        parameter's dtype is then kept as it is, not copied (on the GPU that
        is one launch fewer per parameter and step).  Otherwise ``grad`` is a
        copy of ``g``, or ``g`` converted to the parameter's dtype.
        """
        if not self.requires_grad:
            return
        if self.grad is None:
            if owned and g.dtype == self.data.dtype and g.shape == self.data.shape and g.flags.c_contiguous:
                self.grad = g
            else:
                self.grad = g.astype(self.data.dtype, copy=True)
        else:
            self.grad += g

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device})"


def zero_grads(params, set_to_none=True):
    """Reset the gradients of ``params`` to None (or, with
    ``set_to_none=False``, fill them with zeros), as PyTorch 2 does."""
    for p in params:
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
        else:
            p.grad[...] = 0


# --------------------------------------------------------------------------
# Layer
# --------------------------------------------------------------------------


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` did not match: the model's keys the state_dict
    lacked, and the state_dict's keys the model has no place for."""

    missing_keys: list
    unexpected_keys: list


def _describe(x):
    """A short description of an array for error messages."""
    if backend.is_array(x):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}, device {backend.device_of(x)}"
    module = type(x).__module__
    return type(x).__qualname__ if module == "builtins" else f"{module}.{type(x).__qualname__}"


class Layer:
    """Base class of every lamina layer and model.

    Subclasses assign :class:`Parameter` and :class:`Layer` attributes in
    ``__init__`` (they are registered by name, in order), implement
    ``forward`` and ``backward``, and may override ``extra_repr``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("backward", "backward_parameters"):  # so that backward hooks fire (lamina.hooks)
            if name in cls.__dict__:
                setattr(cls, name, hooks.dispatching(cls.__dict__[name]))

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_cache", None)
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name!r}")
        if name in self._buffers and not isinstance(value, (Parameter, Layer)):
            object.__setattr__(self, name, value)  # a buffer stays a buffer
            return
        # Leave the other stores; a name that stays in its store keeps its place (its key order in state_dict)
        target = self._parameters if isinstance(value, Parameter) else self._children if isinstance(value, Layer) else None
        for store in (self._parameters, self._children, self._buffers):
            if store is not target:
                store.pop(name, None)
        if target is not None:
            target[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._children, self._buffers):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Register ``array`` as non-trainable state saved in the state_dict
        (BatchNorm's running statistics, for example)."""
        object.__setattr__(self, name, array)
        self._buffers[name] = True

    def _set_buffer(self, name, array):
        object.__setattr__(self, name, array)

    def _check_name(self, name, what):
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{type(self).__name__}: expected a {what} name as a non-empty string without '.', "
                           f"received {name!r}")
        if hasattr(type(self), name):
            raise KeyError(f"{type(self).__name__}: {what} name {name!r} would hide the attribute of that name")

    def add_module(self, name, layer):
        """Register ``layer`` (a Layer, or None) as the child ``name``, as
        ``self.name = layer`` does: for names made at run time."""
        self._check_name(name, "child")
        if layer is not None and not isinstance(layer, Layer):
            raise TypeError(f"{type(self).__name__}: expected a Layer or None for child {name!r}, "
                            f"received {type(layer).__name__}")
        setattr(self, name, layer)

    register_module = add_module

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter, or None) under ``name``, as
        ``self.name = param`` does."""
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}: expected a Parameter or None for {name!r}, "
                            f"received {type(param).__name__}")
        setattr(self, name, param)

    # -- forward / backward -------------------------------------------------

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_parameters(self, dy):
        """Backward for the parameters alone: accumulates every parameter's
        gradient exactly as :meth:`backward` does and returns None, for the
        outermost model of a training step, whose input needs no gradient.
        Layers that can skip computing dx do (Dense, Conv1D/Conv2D, and
        Sequential and Checkpoint pass it on to their first layer): in an
        MLP that is the largest GEMM of the backward pass.  This default runs
        :meth:`backward` and drops dx."""
        self.backward(dy)

    def __call__(self, *args, **kwargs):
        table = self.__dict__.get("_hooks")
        if table is None:
            return self.forward(*args, **kwargs)
        return hooks.call(self, table, args, kwargs)

    # -- hooks (lamina.hooks) --------------------------------------------------

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(layer, args)`` before each forward through ``layer(...)``;
        a return value other than None replaces the positional arguments (a
        non-tuple is wrapped in one).  With ``with_kwargs=True`` the hook is
        ``hook(layer, args, kwargs)`` and returns None or ``(args, kwargs)``.
        ``prepend=True`` runs it before the hooks already registered.
        Returns a :class:`~lamina.hooks.RemovableHandle`."""
        return hooks.register(self, "forward_pre", hook, prepend, with_kwargs=with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """Call ``hook(layer, args, output)`` after each forward through
        ``layer(...)`` (``hook(layer, args, kwargs, output)`` with
        ``with_kwargs=True``); a return value other than None replaces the
        output.  Backward treats that replacement as the identity: there is no
        tape to differentiate the hook.  ``always_call=True`` also calls it
        (with output None) when forward raises."""
        return hooks.register(self, "forward", hook, prepend, with_kwargs=with_kwargs, always_call=always_call)

    def register_full_backward_pre_hook(self, hook, *, prepend=False):
        """Call ``hook(layer, grad_output)`` before each outermost
        ``backward`` (or ``backward_parameters``); ``grad_output`` is the
        tuple of gradients it receives.  A return value other than None (a
        tuple of the same length and shapes) replaces ``grad_output``."""
        return hooks.register(self, "backward_pre", hook, prepend)

    def register_full_backward_hook(self, hook, *, prepend=False):
        """Call ``hook(layer, grad_input, grad_output)`` after each outermost
        ``backward`` (or ``backward_parameters``, where ``grad_input`` is
        ``(None,)``): the gradients with respect to the inputs, and those the
        layer received.  A return value other than None (a tuple of the same
        length and shapes) replaces ``grad_input``, which is what the layer
        before receives.  Parameter gradients are already accumulated when
        it runs."""
        return hooks.register(self, "backward", hook, prepend)

    def _save(self, *items, out):
        """Cache what backward needs (nothing under ``no_grad``).

        ``out`` is the forward's output: its shape and device are recorded so
        that :meth:`_take_cache` can validate the incoming gradient.
        """
        if is_grad_enabled():
            saved = items if len(items) != 1 else items[0]
            self._set_cache((saved, tuple(out.shape), backend.device_of(out)))

    def _set_cache(self, value):
        """The one place a cache changes, so lamina.memory can count it."""
        old = self._cache
        object.__setattr__(self, "_cache", value)
        memory._on_cache_change(old, value)

    def _take_cache(self, dy):
        """Validate ``dy`` against the cached output, then return the cache and
        clear it.  On any error the cache is kept, so the layer is unchanged."""
        if self._cache is None:
            raise CacheError(
                f"{self._label()}: backward() called without a cached forward; run forward() "
                "with gradients enabled (not under no_grad) before each backward()"
            )
        saved, shape, device = self._cache
        if not backend.is_array(dy):
            raise DTypeError(f"{self._label()}: expected the output gradient as an array, received {_describe(dy)}")
        if backend.device_of(dy) != device:
            raise DeviceError(f"{self._label()}: expected the output gradient on {device}, received it on {backend.device_of(dy)}")
        if tuple(dy.shape) != shape:
            raise ShapeError(f"{self._label()}: expected the output gradient of shape {shape}, received {tuple(dy.shape)}")
        if dy.dtype.kind != "f" and not _is_extended_float(dy.dtype):
            raise DTypeError(f"{self._label()}: expected a floating-point output gradient, received dtype {dy.dtype}")
        self._set_cache(None)
        return saved

    def clear_cache(self):
        """Drop the forward caches (and any reusable work buffers) of this
        layer and every descendant."""
        for m in self.modules():
            m._release()

    def _release(self):
        """Drop this layer's cache; layers that keep work buffers extend it."""
        self._set_cache(None)

    def has_cache(self):
        return self._cache is not None

    # -- input validation ---------------------------------------------------

    def _label(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def _check_input(self, x, what="input", ndim=None, min_ndim=None, dim=None):
        """Validate an input array at the layer boundary, and return it.

        Checks, in order: that ``x`` is a NumPy or CuPy array, that it is
        floating point, that it matches the dtype and device of the layer's
        parameters (if any), that it has ``ndim`` (or at least ``min_ndim``)
        dimensions, and that ``x.shape[axis] == size`` for each
        ``(axis, size, name)`` in ``dim``.

        Under mixed precision (:func:`lamina.amp.autocast`) a layer with
        parameters casts a floating input to its compute dtype instead of
        rejecting it, as autocast does; the returned array is the cast one.
        """
        if not backend.is_array(x):
            raise DTypeError(f"{self._label()}: expected {what} as a numpy.ndarray or cupy.ndarray, received {_describe(x)}")
        if x.dtype.kind != "f" and not _is_extended_float(x.dtype):
            raise DTypeError(f"{self._label()}: expected a floating-point {what}, received dtype {x.dtype}")
        p = next(iter(self._parameters.values()), None)
        if p is not None:
            if backend.device_of(x) != p.device:
                raise DeviceError(
                    f"{self._label()}: expected {what} on {p.device} (where the parameters are), received it on {backend.device_of(x)}"
                )
            if x.dtype != self.compute_dtype:
                if self.__dict__.get("_amp_dtype") is None:
                    raise DTypeError(
                        f"{self._label()}: expected {what} of dtype {self.compute_dtype} (the compute dtype), received {x.dtype}"
                    )
                x = backend.narrow(x, self.compute_dtype)
        if ndim is not None and x.ndim != ndim:
            raise ShapeError(f"{self._label()}: expected a {ndim}-d {what}, received shape {tuple(x.shape)}")
        if min_ndim is not None and x.ndim < min_ndim:
            raise ShapeError(f"{self._label()}: expected {what} with at least {min_ndim} dimensions, received shape {tuple(x.shape)}")
        for axis, size, name in dim or ():
            if x.shape[axis] != size:
                raise ShapeError(
                    f"{self._label()}: expected {what} with size {size} ({name}) in dimension {axis}, received shape {tuple(x.shape)}"
                )
        return x

    def _compute(self, p):
        """Parameter ``p``'s value in the compute dtype (a cast copy under mixed precision)."""
        dtype = self.compute_dtype
        return p.data if p.data.dtype == dtype else p.data.astype(dtype)

    def _compute_grad(self, dy):
        """The output gradient in the compute dtype (losses hand back float32)."""
        amp = self.__dict__.get("_amp_dtype")
        return dy if amp is None or dy.dtype == amp else backend.narrow(dy, amp)

    # -- traversal ----------------------------------------------------------

    def children(self):
        return iter(self._children.values())

    def named_children(self):
        return iter(self._children.items())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in modules:
            for name, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in modules:
            for name in m._buffers:
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), getattr(m, name)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target):
        """The layer at the dotted path ``target`` ("" is this layer), e.g.
        ``model.get_submodule("encoder.layers.0.self_attn")``."""
        m = self
        for i, name in enumerate(target.split(".") if target else []):
            if name not in m._children or m._children[name] is None:
                where = ".".join(target.split(".")[:i]) or "the model"
                raise AttributeError(f"{type(self).__name__}: {where} has no child {name!r} "
                                     f"(looking for {target!r}); its children: {list(m._children)}")
            m = m._children[name]
        return m

    def get_parameter(self, target):
        """The Parameter at the dotted path ``target``, e.g. ``"0.weight"``."""
        path, _, name = target.rpartition(".")
        m = self.get_submodule(path)
        if m._parameters.get(name) is None:
            raise AttributeError(f"{type(self).__name__}: {path or 'the model'} has no parameter {name!r} "
                                 f"(looking for {target!r}); its parameters: {list(m._parameters)}")
        return m._parameters[name]

    def apply(self, fn):
        """Call ``fn(layer)`` on every child layer, depth first, then on this
        one (PyTorch's order); returns self.  The usual use is custom
        initialisation: ``model.apply(lambda m: init.zeros_(m.bias) if
        isinstance(m, Dense) else None)``."""
        for child in self._children.values():
            if child is not None:
                child.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` of every parameter (False freezes the layer:
        backward leaves the gradients at None and optimizers skip them);
        returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def num_parameters(self, trainable_only=False):
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    # -- modes and gradients --------------------------------------------------

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (PyTorch's default since 2.0: the
        next backward writes fresh gradients instead of adding to zeros, one
        fill and one add fewer per parameter).  ``set_to_none=False`` keeps
        the arrays and fills them with zeros."""
        zero_grads(self.parameters(), set_to_none)

    # -- devices and dtypes ---------------------------------------------------

    @property
    def device(self):
        """The device of the first parameter or buffer (cpu if there are none)."""
        for p in self.parameters():
            return p.device
        for _, b in self.named_buffers():
            if backend.is_array(b):
                return backend.device_of(b)
        return backend.CPU

    @property
    def dtype(self):
        """The dtype of the first parameter (None if there are none)."""
        for p in self.parameters():
            return p.dtype
        return None

    @property
    def compute_dtype(self):
        """The dtype this layer computes in, and so the dtype its inputs must
        have: the dtype of its own parameters (None for a layer without any).

        This is the one place a dtype policy enters the Layer API: mixed
        precision sets the compute dtype apart from the parameters' (master)
        dtype by overriding it, without touching any layer's forward.
        """
        amp = self.__dict__.get("_amp_dtype")
        if amp is not None:
            return amp
        p = next(iter(self._parameters.values()), None)
        return None if p is None else p.dtype

    def to(self, device=None, dtype=None):
        """Move every parameter, gradient and buffer to ``device`` and/or cast
        the floating-point ones to ``dtype``.  Returns ``self``.

        ``model.to("cuda")``, ``model.to("cuda:1")``, ``model.to(dtype=np.float64)``.
        """
        if device is not None and not isinstance(device, backend.Device):
            try:
                device = backend.Device(device)
            except (TypeError, ValueError) as device_error:
                try:  # model.to(np.float64) reads naturally too
                    dtype, device = (backend.as_dtype(device), None) if dtype is None else (dtype, device)
                except TypeError:
                    raise device_error from None
                if device is not None:
                    raise
        if device is not None and device.type == "cuda":
            backend.require_cuda(device)  # fail before anything moves
        if dtype is not None:
            dtype = backend.as_dtype(dtype)
            if dtype.kind != "f" and not _is_extended_float(dtype):
                raise DTypeError(f"{self._label()}: expected a floating-point dtype, received {dtype}")

        def convert(a):
            if not backend.is_array(a):
                return a
            if device is not None:
                a = backend.to_device(a, device)
            if dtype is not None and (a.dtype.kind == "f" or _is_extended_float(a.dtype)) and a.dtype != dtype:
                a = a.astype(dtype)
            return a

        for m in self.modules():
            for p in m._parameters.values():
                p.data = convert(p.data)
                if p.grad is not None:
                    p.grad = convert(p.grad)
            for name in m._buffers:
                m._set_buffer(name, convert(getattr(m, name)))
            m._release()
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # -- state ----------------------------------------------------------------

    def state_dict(self):
        """An ordered mapping of name -> array: parameters, then buffers, by
        module, with PyTorch's key names.  The arrays are the live ones; copy
        them if you mean to keep a snapshot while training continues."""
        out = OrderedDict()
        for key, (m, name, _) in self._state_targets().items():
            out[key] = getattr(m, name).data if name in m._parameters else getattr(m, name)
        return out

    def _state_targets(self):
        targets = OrderedDict()
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                targets[f"{prefix}.{name}" if prefix else name] = (m, name, p)
            for name in m._buffers:
                targets[f"{prefix}.{name}" if prefix else name] = (m, name, None)
        return targets

    def load_state_dict(self, state_dict, strict=True):
        """Load arrays by name.  NumPy arrays (or PyTorch tensors) are moved
        to the model's device and cast to each parameter's dtype.

        Every key and shape is validated before anything changes: on error the
        model is untouched.  Returns ``IncompatibleKeys(missing_keys,
        unexpected_keys)``, a named pair as PyTorch's; with ``strict=True``
        (the default) both are empty, since either raises.
        """
        targets = self._state_targets()
        incoming = {k: _to_numpy_if_tensor(v) for k, v in state_dict.items()}
        missing = [k for k in targets if k not in incoming]
        unexpected = [k for k in incoming if k not in targets]
        if strict and (missing or unexpected):
            raise StateDictError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        own = self.state_dict()
        staged = []
        for key, value in incoming.items():
            if key not in targets:
                continue
            current = own[key]
            if backend.is_array(current):
                if not backend.is_array(value):
                    try:
                        value = np.asarray(value)
                    except Exception:
                        raise StateDictError(
                            f"{type(self).__name__}.load_state_dict: expected an array for {key!r}, received {_describe(value)}"
                        ) from None
                if tuple(value.shape) != tuple(current.shape):
                    raise ShapeError(
                        f"{type(self).__name__}.load_state_dict: expected {key!r} of shape {tuple(current.shape)}, "
                        f"received {tuple(value.shape)}"
                    )
                if value.dtype.kind not in "fiub" and not _is_extended_float(value.dtype):
                    raise DTypeError(
                        f"{type(self).__name__}.load_state_dict: expected a numeric array for {key!r}, received dtype {value.dtype}"
                    )
            staged.append((key, value))
        # Nothing below can fail on the user's data: every check is above.
        for key, value in staged:
            m, name, p = targets[key]
            current = own[key]
            if backend.is_array(current):
                new = backend.to_device(value, backend.device_of(current)).astype(current.dtype, copy=True)
            else:
                new = value
            if p is not None:
                p.data = new
            else:
                m._set_buffer(name, new)
        self.clear_cache()
        return IncompatibleKeys(missing, unexpected)

    # -- printing -------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._children:
            return self._label()
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._children.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + "\n)"

    def summary(self, input_shape=None, print_fn=print):
        """A table of the layers, their output shapes (when ``input_shape`` is
        given, by running one forward under no_grad in eval mode) and their
        parameter counts.  Prints it through ``print_fn`` (None to only
        return it) and returns it as a string.  A layer of several inputs
        (a decoder's target and memory) takes a list of shapes, one per input.
        """
        if input_shape is None:
            shapes = {}
        else:
            several = isinstance(input_shape, list) and all(isinstance(s, (tuple, list)) for s in input_shape)
            shapes = self._trace_shapes([tuple(s) for s in input_shape] if several else [tuple(input_shape)])
        rows = [("layer", "type", "output shape", "params")]
        for name, m in self.named_modules():
            if m is self and self._children:
                continue
            n = sum(p.size for p in m.parameters(recurse=False))
            rows.append((name or type(m).__name__, type(m).__name__, str(shapes.get(id(m), "")), f"{n:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]

        def fmt(r):
            return "  ".join(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

        rule = "-" * (sum(widths) + 6)
        total, trainable = self.num_parameters(), self.num_parameters(trainable_only=True)
        lines = [fmt(rows[0]), rule, *[fmt(r) for r in rows[1:]], rule, f"parameters: {total:,} (trainable {trainable:,})"]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def _trace_shapes(self, input_shapes):
        shapes = {}
        wrapped = []
        suspended = {}
        for m in self.modules():
            suspended[id(m)] = m.__dict__.pop("_hooks", None)  # tracing with zeros fires no user hook

            def traced(*args, _fwd=m.forward, _m=m, **kwargs):
                y = _fwd(*args, **kwargs)
                shapes[id(_m)] = tuple(y.shape)
                return y

            object.__setattr__(m, "forward", traced)
            wrapped.append(m)
        was_training = self.training
        try:
            self.eval()
            xp = np if self.device.type == "cpu" else backend.require_cuda()
            with no_grad():
                self.forward(*[xp.zeros(shape, dtype=self.dtype or np.float32) for shape in input_shapes])
        finally:
            for m in wrapped:
                object.__delattr__(m, "forward")
                if suspended.get(id(m)) is not None:
                    m.__dict__["_hooks"] = suspended[id(m)]
            self.train(was_training)
        return shapes


Layer.backward_parameters = hooks.dispatching(Layer.backward_parameters)


def _is_extended_float(dtype):
    """bfloat16 and friends from ml_dtypes register as kind 'V'."""
    return np.dtype(dtype).name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def _to_numpy_if_tensor(value):
    """Accept PyTorch tensors in a state_dict without importing torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value
