"""Normalisation layers with PyTorch's semantics: BatchNorm1d, BatchNorm2d,
LayerNorm and GroupNorm.  Batch normalisation:

The derivation is in docs/normalization.md.  With the statistics taken over
every axis but the channel axis (m values per channel):

    mu = mean(x),  var = mean((x - mu)^2)            (biased, to normalise)
    xhat = (x - mu) * inv_std,  inv_std = 1 / sqrt(var + eps)
    y = gamma * xhat + beta

    dgamma = sum(dy * xhat),  dbeta = sum(dy)
    dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))     (batch statistics)
    dx = gamma * inv_std * dy                                           (running statistics)
"""

import math

import numpy as np

from .. import backend, ops
from ..errors import ShapeError
from ..module import Layer, Parameter, is_grad_enabled, is_recomputing
from ._utils import positive_int


class _BatchNorm(Layer):
    _ndims = (4,)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, name, "num_features")
        if not eps > 0:
            raise ValueError(f"{name}: expected eps > 0, received {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{name}: expected momentum in [0, 1] or None (cumulative average), received {momentum!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=dtype))
            self.bias = Parameter(np.zeros(c, dtype=dtype))
        self._stats_dtype = np.dtype(dtype)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        if x is not None and backend.is_array(x) and x.ndim not in self._ndims:
            self._check_input(x)  # type and dtype errors first
            expected = " or ".join(f"{n}-d" for n in self._ndims)
            raise ShapeError(f"{self._label()}: expected a {expected} input, received shape {tuple(x.shape)}")
        x = self._check_input(x, dim=[(1, self.num_features, "num_features")])
        # Normalisation reduces in float32 at least: 16-bit inputs (mixed
        # precision) are widened, and gamma, beta and the statistics stay float32.
        work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype
        x3 = x.reshape(x.shape[0], self.num_features, -1).astype(work, copy=False)  # (N, C, L)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            self._check_statistics_size(x, x3)
        gamma, beta = (self.weight.data.astype(work, copy=False), self.bias.data.astype(work, copy=False)) if self.affine else (None, None)
        y3, xhat, inv_std = self._normalise(x3, gamma, beta, use_batch)
        y = backend.narrow(y3, x.dtype).reshape(x.shape) if y3.dtype != x.dtype else y3.reshape(x.shape)
        if xhat is not None:
            xhat = xhat.astype(x.dtype, copy=False)  # cached in the input's dtype
        self._save(xhat, inv_std, use_batch, out=y)  # xhat: (N, C, L); inv_std: (C,)
        return y

    def _check_statistics_size(self, x, x3):
        if self.training and x3.shape[0] * x3.shape[2] < 2:
            raise ShapeError(
                f"{self._label()}: expected more than 1 value per channel when training, received shape {tuple(x.shape)}"
            )

    def _normalise(self, x3, gamma, beta, use_batch):
        """(y, xhat, inv_std) of x3 (N, C, L): the batch's statistics (and the
        running ones updated) or the running statistics."""
        running = None
        if use_batch:
            if self.training and self.track_running_stats and not is_recomputing():
                # updated with this batch's statistics, once per batch (not again when checkpointing recomputes)
                running = (self.running_mean, self.running_var, self._running_factor())
        else:
            running = (self.running_mean, self.running_var)
        return ops.batchnorm_forward(x3, gamma, beta, self.eps, batch_stats=use_batch, running=running,
                                     need_xhat=is_grad_enabled())

    def _normalise_backward(self, dy3, xhat, inv_std, gamma, use_batch):
        return ops.batchnorm_backward(dy3, xhat, inv_std, gamma, batch_stats=use_batch)

    def _running_factor(self):
        """Count the batch; the weight f of its statistics in the running ones:
        running ← (1 - f) running + f (mean, unbiased var)."""
        count = self.num_batches_tracked
        count += 1  # in place: one launch on the GPU (count[...] += 1 is two)
        if self.momentum is None:  # cumulative moving average, as PyTorch (reads the count: waits for a GPU)
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def backward(self, dy):
        xhat, inv_std, use_batch = self._take_cache(dy)
        work = inv_std.dtype
        gamma = self.weight.data.astype(work, copy=False) if self.affine else None
        dx3, dgamma, dbeta = self._normalise_backward(
            dy.reshape(xhat.shape).astype(work, copy=False), xhat.astype(work, copy=False), inv_std, gamma, use_batch
        )
        if self.affine:
            self.weight.accumulate(dgamma, owned=True)
            self.bias.accumulate(dbeta, owned=True)
        dx3 = backend.narrow(dx3, xhat.dtype) if dx3.dtype != xhat.dtype else dx3
        return dx3.reshape(dy.shape)

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L), PyTorch's ``nn.BatchNorm1d``.

    Args:
        num_features: C.
        eps: added to the variance, 1e-5.
        momentum: running-statistics update factor, 0.1 (None: cumulative average).
        affine: learn gamma (``weight``, ones) and beta (``bias``, zeros).
        track_running_stats: keep ``running_mean``, ``running_var`` (unbiased)
            and ``num_batches_tracked`` buffers and use them in eval mode.

    Training normalises with the batch's biased variance and updates the
    running statistics; eval mode normalises with the running statistics.
    """

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W), PyTorch's ``nn.BatchNorm2d``;
    arguments and semantics as :class:`BatchNorm1d`."""

    _ndims = (4,)


class _InstanceNorm(_BatchNorm):
    """Instance normalisation: each (sample, channel) normalised over its own
    positions.  That is batch normalisation of x seen as one sample of N·C
    channels, (1, N·C, L), with gamma and beta repeated N times, so forward
    and backward are BatchNorm's (the same kernels):

        xhat = (x - mu_nc) rstd_nc,   y = weight_c xhat + bias_c
        dx = weight_c rstd_nc (dy - mean(dy) - xhat mean(dy ⊙ xhat))   (means over the positions)
        dweight_c = Σ_(n, positions) dy ⊙ xhat,   dbias_c = Σ_(n, positions) dy

    With track_running_stats, training also moves running_mean and
    running_var towards the batch average of the instances' mean and
    unbiased variance, and eval mode normalises with them (BatchNorm's eval).
    """

    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)

    def forward(self, x):
        if backend.is_array(x) and x.ndim == self._ndims[0]:  # unbatched (C, ...): one sample
            self._check_input(x, dim=[(0, self.num_features, "num_features")])
            y = super().forward(x[None])
            if self._cache is not None:  # backward takes and returns the unbatched shape
                saved, _, device = self._cache
                self._set_cache((saved, tuple(x.shape), device))
            return y[0]
        return super().forward(x)

    def _check_statistics_size(self, x, x3):
        if x3.shape[2] < 2:
            raise ShapeError(
                f"{self._label()}: expected more than 1 spatial element per channel, received shape {tuple(x.shape)}"
            )

    def _normalise(self, x3, gamma, beta, use_batch):
        if not use_batch:  # running statistics: BatchNorm's eval, per channel
            return super()._normalise(x3, gamma, beta, use_batch)
        n, c, l = x3.shape
        xp = backend.get_array_module(x3)
        tile = (lambda v: None if v is None else xp.tile(v, n))
        running = None
        if self.training and self.track_running_stats and not is_recomputing():
            # the instances' statistics update N copies of the running ones, then are averaged over N.  As in
            # PyTorch, num_batches_tracked stays 0 and momentum=None means 0 (the running statistics stay put).
            factor = 0.0 if self.momentum is None else self.momentum
            running = (xp.tile(self.running_mean, n), xp.tile(self.running_var, n), factor)
        y3, xhat, inv_std = ops.batchnorm_forward(x3.reshape(1, n * c, l), tile(gamma), tile(beta), self.eps,
                                                  batch_stats=True, running=running, need_xhat=is_grad_enabled())
        if running is not None:
            self.running_mean[...] = running[0].reshape(n, c).mean(axis=0)
            self.running_var[...] = running[1].reshape(n, c).mean(axis=0)
        return y3.reshape(n, c, l), None if xhat is None else xhat.reshape(n, c, l), inv_std

    def _normalise_backward(self, dy3, xhat, inv_std, gamma, use_batch):
        if not use_batch:
            return super()._normalise_backward(dy3, xhat, inv_std, gamma, use_batch)
        n, c, l = xhat.shape
        xp = backend.get_array_module(xhat)
        dx3, dgamma, dbeta = ops.batchnorm_backward(dy3.reshape(1, n * c, l), xhat.reshape(1, n * c, l), inv_std,
                                                    None if gamma is None else xp.tile(gamma, n), batch_stats=True)
        if gamma is not None:
            dgamma, dbeta = dgamma.reshape(n, c).sum(axis=0), dbeta.reshape(n, c).sum(axis=0)
        return dx3.reshape(n, c, l), dgamma, dbeta


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation over (N, C, L) or unbatched (C, L), PyTorch's
    ``nn.InstanceNorm1d``: each sample's channel normalised over its L
    positions (more than one).

    Args:
        num_features: C.
        eps: added to the variance, 1e-5.
        momentum: running-statistics update factor, 0.1.  As in PyTorch's
            InstanceNorm (unlike BatchNorm), None means 0 (no update), and
            num_batches_tracked is kept for the state_dict but not counted.
        affine: learn per-channel ``weight`` (ones) and ``bias`` (zeros); off by default, as PyTorch.
        track_running_stats: keep running_mean, running_var and
            num_batches_tracked and normalise with them in eval mode; off by default.
    """

    _ndims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation over (N, C, H, W) or unbatched (C, H, W),
    PyTorch's ``nn.InstanceNorm2d`` (style transfer's normalisation);
    arguments as :class:`InstanceNorm1d`."""

    _ndims = (3, 4)


class _RowNorm(Layer):
    """What LayerNorm and RMSNorm share: the trailing ``normalized_shape``
    they normalise over, and the input seen as rows of its D values."""

    def _set_shape(self, normalized_shape):
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape:
            raise ValueError(f"{type(self).__name__}: expected a non-empty normalized_shape")
        self.normalized_shape = tuple(positive_int(s, type(self).__name__, "normalized_shape") for s in shape)

    def _rows(self, x):
        """x checked, as (rows, D) in the work dtype (float32 for 16-bit inputs)."""
        k = len(self.normalized_shape)
        x = self._check_input(x, min_ndim=k)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ShapeError(
                f"{self._label()}: expected an input ending in {self.normalized_shape} (normalized_shape), "
                f"received shape {tuple(x.shape)}"
            )
        work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype
        return x, x.astype(work, copy=False).reshape(-1, math.prod(self.normalized_shape))

    @staticmethod
    def _param(p, dtype):
        return None if p is None else p.data.astype(dtype, copy=False).reshape(-1)


class LayerNorm(_RowNorm):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions
    (PyTorch's ``nn.LayerNorm``).  With the statistics taken per sample over
    those D values:

        mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
        xhat = (x - mu) rstd,   y = weight ⊙ xhat + bias

    Backward (g = dy ⊙ weight, means over the D normalised values):

        dx = rstd (g - mean(g) - xhat mean(g ⊙ xhat))
        dweight = Σ_samples dy ⊙ xhat,   dbias = Σ_samples dy

    Args:
        normalized_shape: int or tuple, the trailing shape to normalise over.
        eps: added to the variance, 1e-5.
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros).
        bias: learn ``bias`` as well (with elementwise_affine).

    16-bit inputs (mixed precision) are normalised in float32.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        super().__init__()
        self._set_shape(normalized_shape)
        if not eps > 0:
            raise ValueError(f"LayerNorm: expected eps > 0, received {eps!r}")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if self.elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if self.elementwise_affine and bias else None

    def forward(self, x):
        x, xw = self._rows(x)
        work = xw.dtype
        y, xhat, rstd = ops.layernorm_forward(xw, self._param(self.weight, work), self._param(self.bias, work), self.eps)
        y = y.reshape(x.shape)
        y = backend.narrow(y, x.dtype) if y.dtype != x.dtype else y
        self._save(xhat, rstd, out=y)  # xhat: (rows, D), work dtype; rstd: (rows,)
        return y

    def backward(self, dy):
        xhat, rstd = self._take_cache(dy)
        dy = self._compute_grad(dy)
        dyw = dy.astype(xhat.dtype, copy=False).reshape(xhat.shape)
        dx, dweight, dbias = ops.layernorm_backward(dyw, xhat, rstd, self._param(self.weight, xhat.dtype),
                                                    need_params=self.weight is not None)
        if self.weight is not None:
            self.weight.accumulate(dweight.reshape(self.normalized_shape), owned=True)
        if self.bias is not None:
            self.bias.accumulate(dbias.reshape(self.normalized_shape), owned=True)
        dx = dx.reshape(dy.shape)
        return backend.narrow(dx, dy.dtype) if dx.dtype != dy.dtype else dx

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(_RowNorm):
    """Root-mean-square normalisation over the trailing ``normalized_shape``
    dimensions (PyTorch's ``nn.RMSNorm``): LayerNorm without the mean and
    the bias, as in T5 and LLaMA.  Per sample, over those D values:

        r = 1 / sqrt(mean(x²) + eps),   xhat = x r,   y = weight ⊙ xhat

    Backward (g = dy ⊙ weight, means over the D values): since
    ∂r/∂x_j = -r³ x_j / D,

        dx = r (g - xhat mean(g ⊙ xhat))
        dweight = Σ_samples dy ⊙ xhat

    Args:
        normalized_shape: int or tuple, the trailing shape to normalise over.
        eps: added to the mean square; None (PyTorch's default) takes the
            machine epsilon of the input's dtype.
        elementwise_affine: learn ``weight`` (ones).

    16-bit inputs (mixed precision) are normalised in float32.
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        super().__init__()
        self._set_shape(normalized_shape)
        if eps is not None and not eps > 0:
            raise ValueError(f"RMSNorm: expected eps > 0 or None, received {eps!r}")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if self.elementwise_affine else None

    def forward(self, x):
        x, xw = self._rows(x)
        xp = backend.get_array_module(x)
        eps = self.eps if self.eps is not None else float(backend.finfo(x.dtype).eps)
        r = 1 / xp.sqrt((xw * xw).mean(axis=1, keepdims=True) + xw.dtype.type(eps))  # (rows, 1)
        xhat = xw * r  # (rows, D)
        y = xhat if self.weight is None else xhat * self._param(self.weight, xw.dtype)
        y = y.reshape(x.shape)
        y = backend.narrow(y, x.dtype) if y.dtype != x.dtype else y
        self._save(xhat, r, out=y)
        return y

    def backward(self, dy):
        xhat, r = self._take_cache(dy)
        dy = self._compute_grad(dy)
        dyw = dy.astype(xhat.dtype, copy=False).reshape(xhat.shape)
        g = dyw if self.weight is None else dyw * self._param(self.weight, xhat.dtype)
        dx = r * (g - xhat * (g * xhat).mean(axis=1, keepdims=True))
        if self.weight is not None:
            self.weight.accumulate((dyw * xhat).sum(axis=0).reshape(self.normalized_shape).astype(self.weight.data.dtype, copy=False), owned=True)
        dx = dx.reshape(dy.shape)
        return backend.narrow(dx, dy.dtype) if dx.dtype != dy.dtype else dx

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Layer):
    """Group normalisation (PyTorch's ``nn.GroupNorm``): the C channels of
    each sample split into G groups of C/G; each group is normalised over
    its channels and every spatial position, then each channel gets its own
    scale and shift.  Independent of the batch size (batch 1 included) and
    the same in training and evaluation.

    A group is a row of D = (C/G)·spatial values, so the statistics and
    backward are LayerNorm's without an affine, then per channel c:

        xhat = (x - mu_group) rstd_group,   y = weight_c xhat + bias_c
        g = dy ⊙ weight_c,   dx = rstd (g - mean(g) - xhat mean(g ⊙ xhat))   (means over the group)
        dweight_c = Σ_(n, positions) dy ⊙ xhat,   dbias_c = Σ_(n, positions) dy

    Args:
        num_groups: G, dividing num_channels.
        num_channels: C.
        eps: added to the variance, 1e-5.
        affine: learn ``weight`` (ones) and ``bias`` (zeros), each (C,).

    Shape: (N, C, ...) → the same.  16-bit inputs are normalised in float32.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32):
        super().__init__()
        self.num_groups = positive_int(num_groups, "GroupNorm", "num_groups")
        self.num_channels = positive_int(num_channels, "GroupNorm", "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: expected num_channels divisible by num_groups, "
                             f"received {num_channels} and {num_groups}")
        if not eps > 0:
            raise ValueError(f"GroupNorm: expected eps > 0, received {eps!r}")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.weight = Parameter(np.ones(self.num_channels, dtype=dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(self.num_channels, dtype=dtype)) if self.affine else None

    def forward(self, x):
        x = self._check_input(x, min_ndim=2, dim=[(1, self.num_channels, "num_channels")])
        n, c = x.shape[:2]
        work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype
        xw = x.astype(work, copy=False).reshape(n * self.num_groups, -1)  # a row per (sample, group)
        _, xhat, rstd = ops.layernorm_forward(xw, None, None, self.eps)
        xhat = xhat.reshape(n, c, -1)  # (N, C, positions)
        y = xhat
        if self.affine:
            y = xhat * self.weight.data.astype(work, copy=False)[:, None] + self.bias.data.astype(work, copy=False)[:, None]
        y = y.reshape(x.shape)
        y = backend.narrow(y, x.dtype) if y.dtype != x.dtype else y
        self._save(xhat, rstd, out=y)  # xhat: (N, C, positions), work dtype; rstd: (N·G,)
        return y

    def backward(self, dy):
        xhat, rstd = self._take_cache(dy)
        dy = self._compute_grad(dy)
        n, c = xhat.shape[:2]
        dyw = dy.astype(xhat.dtype, copy=False).reshape(xhat.shape)
        g = dyw
        if self.affine:
            self.weight.accumulate((dyw * xhat).sum(axis=(0, 2)), owned=True)
            self.bias.accumulate(dyw.sum(axis=(0, 2)), owned=True)
            g = dyw * self.weight.data.astype(xhat.dtype, copy=False)[:, None]
        rows = (n * self.num_groups, -1)
        dx, _, _ = ops.layernorm_backward(g.reshape(rows), xhat.reshape(rows), rstd, None, need_params=False)
        dx = dx.reshape(dy.shape)
        return backend.narrow(dx, dy.dtype) if dx.dtype != dy.dtype else dx

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


def _channel_window_sum(a, before, after):
    """Σ over channels c - before .. c + after of ``a`` (N, C, ...), channels
    outside [0, C) counted as 0: ``before + after + 1`` shifted slice-adds."""
    xp = backend.get_array_module(a)
    c = a.shape[1]
    out = xp.zeros_like(a)
    for o in range(-before, after + 1):  # out[:, j] += a[:, j + o]
        lo, hi = max(0, -o), min(c, c - o)
        if lo < hi:
            out[:, lo:hi] += a[:, lo + o:hi + o]
    return out


class LocalResponseNorm(Layer):
    """Local response normalisation across channels (Krizhevsky et al.,
    2012; PyTorch's ``nn.LocalResponseNorm``), for AlexNet- and
    GoogLeNet-style models.  With n = ``size`` and the window of channel c
    W(c) = [c - ⌊n/2⌋, c + ⌊(n-1)/2⌋] (channels outside the input count as 0):

        D_c = k + (α/n) Σ_(c' ∈ W(c)) x_c'²,    y_c = x_c D_c^(-β)

    Backward (caches x and D): channel j lies in the windows of
    c ∈ [j - ⌊(n-1)/2⌋, j + ⌊n/2⌋], so

        dx_j = dy_j D_j^(-β) - (2αβ/n) x_j Σ_(c: j ∈ W(c)) dy_c x_c D_c^(-β-1)

    Input (N, C, *) with at least 3 axes.  16-bit inputs are computed in float32.
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = positive_int(size, "LocalResponseNorm", "size")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def forward(self, x):
        self._check_input(x, min_ndim=3)
        xw = x.astype(np.float32) if backend.is_low_precision(x.dtype) else x
        n = self.size
        d = xw.dtype.type(self.k) + xw.dtype.type(self.alpha / n) * _channel_window_sum(xw * xw, n // 2, (n - 1) // 2)
        y = xw * d ** xw.dtype.type(-self.beta)
        y = backend.narrow(y, x.dtype) if y.dtype != x.dtype else y
        self._save(xw, d, out=y)
        return y

    def backward(self, dy):
        x, d = self._take_cache(dy)
        n, b = self.size, x.dtype.type(self.beta)
        g = dy.astype(x.dtype, copy=False)
        t = _channel_window_sum(g * x * d ** (-b - 1), (n - 1) // 2, n // 2)
        dx = g * d ** -b - x.dtype.type(2 * self.alpha * self.beta / n) * x * t
        return dx.astype(dy.dtype, copy=False)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
