"""Dropout."""

import math

from .. import backend, ops
from .. import random as lrandom
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


class AlphaDropout(Dropout):
    """Dropout for self-normalising networks (Klambauer et al., 2017;
    PyTorch's ``nn.AlphaDropout``), to use with :class:`lamina.SELU`.  A
    dropped unit is set to SELU's negative saturation α' = -λα instead of
    0, then an affine map restores zero mean and unit variance:

        a = ((1 - p)(1 + p α'²))^(-1/2),   b = -a α' p
        y = a (x m + α' (1 - m)) + b        m ~ Bernoulli(1 - p)
        dx = a m dy                          (caches a m)

    In eval mode (or with p = 0), y = x.  The mask comes from lamina's
    generator, replayable as :class:`Dropout`'s.
    """

    _ALPHA = 1.7580993408473766  # λα of SELU

    def _noise_shape(self, x):
        return tuple(x.shape)

    def forward(self, x):
        self._check_input(x)
        if not self.training or self.p == 0.0:
            self._save(None, out=x)
            return x
        xp = backend.get_array_module(x)
        keep = (lrandom.uniform_like(xp.empty(self._noise_shape(x), dtype=x.dtype)) >= self.p).astype(x.dtype)
        p, alpha = self.p, self._ALPHA
        a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
        scaled = keep * x.dtype.type(a)
        y = (x * scaled + (keep - 1) * x.dtype.type(alpha * a) + x.dtype.type(alpha * a * p)).astype(x.dtype, copy=False)
        self._save(scaled, out=y)
        return y


class FeatureAlphaDropout(AlphaDropout):
    """:class:`AlphaDropout` of whole channels (PyTorch's
    ``nn.FeatureAlphaDropout``): one draw per (sample, channel) of an
    (N, C, *) input, shared by every position."""

    def _noise_shape(self, x):
        if x.ndim < 2:
            raise ShapeError(f"{self._label()}: expected an input (N, C, *), received shape {tuple(x.shape)}")
        return tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
