"""Dropout."""

from .. import ops
from ..module import Layer


class Dropout(Layer):
    """Inverted dropout: in training, y = x · m / (1 - p) with m ~ Bernoulli(1 - p);
    in eval mode (or with p = 0), y = x.

    Backward: dx = dy · m / (1 - p)  (caches the scaled mask).

    The mask is drawn from lamina's generator on the input's device, so
    :func:`lamina.manual_seed` makes it reproducible.  The generator state
    before the draw is kept with the cache (``rng_state``), so a recompute can
    replay exactly the same mask.
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: expected p in [0, 1), received {p!r}")
        self.p = float(p)

    def forward(self, x):
        self._check_input(x)
        if not self.training or self.p == 0.0:
            self._save(None, out=x)
            return x
        y, scaled_mask = ops.dropout_forward(x, self.p)  # the mask drawn from lamina's generator on x's device
        self._save(scaled_mask, out=y)
        return y

    def backward(self, dy):
        scaled_mask = self._take_cache(dy)
        return dy.copy() if scaled_mask is None else dy * scaled_mask

    def extra_repr(self):
        return f"p={self.p}"
