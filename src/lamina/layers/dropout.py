"""Dropout."""

from .. import ops
from ..errors import ShapeError
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
            raise ValueError(f"{type(self).__name__}: expected p in [0, 1), received {p!r}")
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


class _ChannelDropout(Dropout):
    """Dropout of whole channels: one Bernoulli(1 - p) draw per (sample,
    channel), shared by every position of that channel.

    y = x · m / (1 - p),  m of shape (N, C, 1, ...) broadcast over positions.
    Backward: dx = dy · m / (1 - p)  (caches the (N, C, 1, ...) scaled mask).

    Neighbouring activations of a feature map are strongly correlated, so
    dropping single elements barely regularises a convolution; dropping
    channels does (Tompson et al., 2015).
    """

    _ndims = ()  # accepted input ranks; the batch is optional (the rank one less)

    def forward(self, x):
        self._check_input(x)
        if x.ndim not in self._ndims:
            ranks = " or ".join(f"{n}-d" for n in self._ndims)
            raise ShapeError(f"{self._label()}: expected a {ranks} input ({self._layout}), received shape {tuple(x.shape)}")
        if not self.training or self.p == 0.0:
            self._save(None, out=x)
            return x
        channel_dims = 2 if x.ndim == self._ndims[-1] else 1  # (N, C, ...) or unbatched (C, ...)
        scaled_mask = ops.channel_dropout_mask(x, self.p, channel_dims)
        y = x * scaled_mask
        self._save(scaled_mask, out=y)
        return y


class Dropout1d(_ChannelDropout):
    """Channel dropout on (N, C, L) or unbatched (C, L) inputs (``nn.Dropout1d``)."""

    _ndims = (2, 3)
    _layout = "(N, C, L) or (C, L)"


class Dropout2d(_ChannelDropout):
    """Channel dropout on (N, C, H, W) or unbatched (C, H, W) inputs
    (``nn.Dropout2d``).  Unlike PyTorch, a 3-d input is always (C, H, W):
    PyTorch reads it as (N, C, L) with a warning; use :class:`Dropout1d`
    for that."""

    _ndims = (3, 4)
    _layout = "(N, C, H, W) or (C, H, W)"
