"""Forward and backward hooks: functions a layer calls around its forward
and its backward, with PyTorch's signatures.

* ``layer.register_forward_pre_hook(hook)``: ``hook(layer, args)`` before
  ``forward``; it may return new arguments.
* ``layer.register_forward_hook(hook)``: ``hook(layer, args, output)`` after
  ``forward``; it may return a new output.
* ``layer.register_full_backward_pre_hook(hook)``: ``hook(layer,
  grad_output)`` before ``backward``; it may return a new ``grad_output``.
* ``layer.register_full_backward_hook(hook)``: ``hook(layer, grad_input,
  grad_output)`` after ``backward``; it may return a new ``grad_input``.

``grad_output`` is the tuple of arrays ``backward`` receives (``(dy,)`` for
most layers); ``grad_input`` is the tuple it returns (``(dx,)``), with None
where no input gradient was computed (``backward_parameters``).  Each
``register_*`` returns a :class:`RemovableHandle`.

Forward hooks run when a layer is *called* (``layer(x)``), as in PyTorch;
containers call their children, so hooks on any layer of a model fire.
Backward hooks run in the layer's outermost ``backward`` (or
``backward_parameters``) call: a subclass calling ``super().backward`` does
not fire them twice.  No hook means no cost beyond one dictionary lookup.

There is no autograd tape, so an output replaced by a forward hook is not
differentiated: backward passes the gradient through the hook as if it were
the identity.  Pair it with a backward pre-hook that applies the hook's
derivative (see docs/training.md, "Hooks").
"""

import functools
import inspect
import itertools
import weakref
from collections import OrderedDict

KINDS = ("forward_pre", "forward", "backward_pre", "backward")
_ids = itertools.count()


class RemovableHandle:
    """Unregisters its hook with :meth:`remove` (idempotent), or on leaving
    a ``with`` block: ``with layer.register_forward_hook(f): model(x)``."""

    def __init__(self, layer, kind):
        self._layer = weakref.ref(layer)
        self._kind = kind
        self.id = next(_ids)

    def remove(self):
        layer = self._layer()
        if layer is None:
            return
        hooks = layer.__dict__.get("_hooks")
        if hooks is None:
            return
        hooks[self._kind].pop(self.id, None)
        if not any(hooks.values()):
            del layer.__dict__["_hooks"]  # back to the hook-free fast path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def __repr__(self):
        return f"RemovableHandle(id={self.id}, kind={self._kind!r})"


def register(layer, kind, hook, prepend=False, **options):
    """Store ``hook`` (with its ``options``) in ``layer``'s table of ``kind``."""
    if not callable(hook):
        raise TypeError(f"{type(layer).__name__}.register_{kind}_hook: expected a callable hook, "
                        f"received {type(hook).__name__}")
    hooks = layer.__dict__.get("_hooks")
    if hooks is None:
        hooks = {k: OrderedDict() for k in KINDS}
        layer.__dict__["_hooks"] = hooks
    handle = RemovableHandle(layer, kind)
    hooks[kind][handle.id] = (hook, options)
    if prepend:
        hooks[kind].move_to_end(handle.id, last=False)
    return handle


def _check_replacement(layer, what, new, old):
    """A hook's replacement for the tuple ``old`` (``grad_output`` or
    ``grad_input``): a tuple of the same length whose arrays keep the shapes."""
    if not isinstance(new, tuple):
        new = (new,)
    if len(new) != len(old):
        raise ValueError(f"{layer._label()}: a backward hook returned {len(new)} value(s) for {what}, "
                         f"expected {len(old)} (one per entry of {what})")
    for i, (a, b) in enumerate(zip(new, old)):
        if b is not None and a is not None and tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{layer._label()}: a backward hook returned {what}[{i}] of shape {tuple(a.shape)}, "
                             f"expected {tuple(b.shape)}")
    return new


def call(layer, hooks, args, kwargs):
    """``layer(*args, **kwargs)`` with its forward hooks."""
    for hook, opt in list(hooks["forward_pre"].values()):
        if opt["with_kwargs"]:
            result = hook(layer, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise ValueError(f"{layer._label()}: a forward pre-hook registered with_kwargs=True must "
                                     f"return None or (args, kwargs), received {type(result).__name__}")
                args, kwargs = result
        else:
            result = hook(layer, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    post = list(hooks["forward"].items())
    try:
        output = layer.forward(*args, **kwargs)
    except Exception:
        for _, (hook, opt) in post:  # always_call hooks see output None, then the error goes on
            if opt["always_call"]:
                hook(layer, args, kwargs, None) if opt["with_kwargs"] else hook(layer, args, None)
        raise
    for _, (hook, opt) in post:
        result = hook(layer, args, kwargs, output) if opt["with_kwargs"] else hook(layer, args, output)
        if result is not None:
            output = result
    return output


def dispatching(fn):
    """Wrap a ``backward`` or ``backward_parameters`` so that the layer's
    backward hooks run around its outermost call."""
    if getattr(fn, "_lamina_hooks", False):
        return fn
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def method(self, *grads, **kwargs):
        hooks = self.__dict__.get("_hooks")
        if hooks is None or not (hooks["backward_pre"] or hooks["backward"]) or self.__dict__.get("_in_backward_hooks"):
            return fn(self, *grads, **kwargs)
        bound = signature.bind(self, *grads, **kwargs)
        bound.apply_defaults()
        grad_output = tuple(bound.arguments.values())[1:]
        self.__dict__["_in_backward_hooks"] = True
        try:
            for hook, _ in list(hooks["backward_pre"].values()):
                result = hook(self, grad_output)
                if result is not None:
                    grad_output = _check_replacement(self, "grad_output", result, grad_output)
            dx = fn(self, *grad_output)
            grad_input = dx if isinstance(dx, tuple) else (dx,)
            for hook, _ in list(hooks["backward"].values()):
                result = hook(self, grad_input, grad_output)
                if result is not None:
                    grad_input = _check_replacement(self, "grad_input", result, grad_input)
        finally:
            del self.__dict__["_in_backward_hooks"]
        return grad_input if isinstance(dx, tuple) else grad_input[0]

    method._lamina_hooks = True
    return method
