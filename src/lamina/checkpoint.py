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
    after = lrandom.get_rng_state()
    lrandom.set_rng_state(rng_state)
    prev = is_grad_enabled()
    set_grad_enabled(True)
    try:
        with recomputing():
            for layer in layers:
                x = layer(x)
    finally:
        set_grad_enabled(prev)
        lrandom.set_rng_state(after)
    return x


class Checkpoint(Layer):
    """y = segment(x), caching only x (and the random state).

    Backward recomputes ``segment``'s forward with caching, then runs its
    backward.  The segment is the child ``segment``; its parameters are the
    Checkpoint's.  See :class:`lamina.Sequential` (``checkpoint_segments``) to
    checkpoint a sequence without changing its state_dict keys.
    """

    def __init__(self, segment):
        super().__init__()
        if not isinstance(segment, Layer):
            raise TypeError(f"Checkpoint: expected a Layer, received {type(segment).__name__}")
        self.segment = segment

    def forward(self, x):
        self._check_input(x)
        if not is_grad_enabled():
            return self.segment(x)
        rng = lrandom.get_rng_state()
        y = run_without_cache([self.segment], x)
        self._save(x, rng, out=y)  # x: the segment's input; rng: the random state it started from
        return y

    def backward(self, dy):
        x, rng = self._take_cache(dy)
        recompute([self.segment], x, rng)
        return self.segment.backward(dy)

    def backward_parameters(self, dy):
        x, rng = self._take_cache(dy)
        recompute([self.segment], x, rng)
        self.segment.backward_parameters(dy)
