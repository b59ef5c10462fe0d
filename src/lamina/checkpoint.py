"""Gradient checkpointing: keep a segment's input, not its activations, and
recompute its forward during backward.

Memory for time: a network of n layers cut into k segments holds k segment
inputs plus one segment's activations at a time, instead of every
activation; the price is one more forward per segment.  With k ≈ √n both
terms are O(√n).

The recomputation is exact: the random state is saved with each segment's
input and replayed, so Dropout draws the same masks (and the stream
continues afterwards as if nothing had been recomputed), and BatchNorm does
not update its running statistics a second time.  Gradients are bit for bit
those of the run without checkpointing on the CPU.
"""

from . import random as lrandom
from .module import Layer, is_grad_enabled, no_grad, recomputing, set_grad_enabled


def run_without_cache(layers, x):
    """Forward through ``layers`` caching nothing."""
    with no_grad():
        for layer in layers:
            x = layer(x)
    return x


def recompute(layers, x, rng_state):
    """Forward through ``layers`` again, with caching, replaying the random
    state the first forward started from; the random state afterwards is
    what it was before the call."""
    def run():
        y = x
        for layer in layers:
            y = layer(y)
        return y

    return _replaying(rng_state, run)


def _replaying(rng_state, run):
    """``run()`` with caching and the random state ``rng_state``, flagged as
    a recomputation (BatchNorm leaves its running statistics alone); the
    random state afterwards is what it was before the call."""
    after = lrandom.get_rng_state()
    lrandom.set_rng_state(rng_state)
    prev = is_grad_enabled()
    set_grad_enabled(True)
    try:
        with recomputing():
            return run()
    finally:
        set_grad_enabled(prev)
        lrandom.set_rng_state(after)


def call_keeping_inputs(layer, *args, **kwargs):
    """``layer(*args, **kwargs)`` caching nothing; returns (output, saved),
    saved being what :func:`backward_recomputing` needs: the inputs, the
    keyword arguments (masks, say) and the random state."""
    rng = lrandom.get_rng_state()
    with no_grad():
        y = layer(*args, **kwargs)
    return y, (args, kwargs, rng)


def backward_recomputing(layer, saved, dy):
    """Recompute ``layer``'s forward from ``saved`` (see
    :func:`call_keeping_inputs`), with caching, then return its backward(dy)."""
    args, kwargs, rng = saved
    _replaying(rng, lambda: layer(*args, **kwargs))
    return layer.backward(dy)


class Checkpoint(Layer):
    """y = segment(*inputs, **options), caching only the inputs, the
    options (masks, say) and the random state.

    Backward recomputes ``segment``'s forward with caching, then runs its
    backward, and returns what the segment's returns (a tuple for a layer
    of several inputs).  The segment is the child ``segment``; its
    parameters are the Checkpoint's.  See :class:`lamina.Sequential`
    (``checkpoint_segments``) to checkpoint a sequence without changing its
    state_dict keys, and the Transformer stacks' ``checkpoint=True``.
    """

    def __init__(self, segment):
        super().__init__()
        if not isinstance(segment, Layer):
            raise TypeError(f"Checkpoint: expected a Layer, received {type(segment).__name__}")
        self.segment = segment

    def forward(self, x, *args, **kwargs):
        self._check_input(x)
        if not is_grad_enabled():
            return self.segment(x, *args, **kwargs)
        y, saved = call_keeping_inputs(self.segment, x, *args, **kwargs)
        self._save(saved, out=y)
        return y

    def backward(self, dy):
        saved = self._take_cache(dy)
        return backward_recomputing(self.segment, saved, dy)

    def backward_parameters(self, dy):
        (args, kwargs, rng) = self._take_cache(dy)
        _replaying(rng, lambda: self.segment(*args, **kwargs))
        self.segment.backward_parameters(dy)
