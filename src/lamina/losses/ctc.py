"""Connectionist temporal classification."""

import numpy as np

from .. import backend, ops
from ..errors import DTypeError, ShapeError
from ..module import is_grad_enabled
from .base import Loss


class CTCLoss(Loss):
    """Connectionist temporal classification (Graves et al., 2006), PyTorch's
    ``nn.CTCLoss``: the negative log-probability of a label sequence summed
    over every alignment of it to the T input steps, for speech and
    handwriting models whose outputs are not aligned with their labels.

    Called as ``loss_fn(log_probs, targets, input_lengths, target_lengths)``.

    The forward-backward derivation, with y_t(c) = exp(log_probs[t, c]), the
    label extended with blanks l' = (b, l_1, b, l_2, ..., b) of length
    S' = 2S + 1, and a path allowed to move from s to s, s + 1, or s + 2 when
    l'_(s+2) is neither a blank nor equal to l'_s:

        α_t(s) = y_t(l'_s) (α_(t-1)(s) + α_(t-1)(s-1) + [skip] α_(t-1)(s-2)),
                 α_0(0) = y_0(b), α_0(1) = y_0(l_1)
        β_t(s) = y_t(l'_s) (β_(t+1)(s) + β_(t+1)(s+1) + [skip] β_(t+1)(s+2)),
                 β_(T-1)(S'-1) = y_(T-1)(b), β_(T-1)(S'-2) = y_(T-1)(l_S)
        p = α_(T-1)(S'-1) + α_(T-1)(S'-2),   loss = -log p

    α_t(s) β_t(s) / y_t(l'_s) is the probability mass of the paths through
    (t, s), so for every t, Σ_s α_t(s) β_t(s) / y_t(l'_s) = p, and

        ∂loss/∂log_probs[t, c] = -(1/p) Σ_(s: l'_s = c) α_t(s) β_t(s) / y_t(c)

    the (negated) posterior occupancy of symbol c at step t.  Everything runs
    in log space (a log-sum-exp per term); steps t >= T_n get no gradient.
    This is the derivative with respect to the log-probabilities themselves;
    PyTorch's backward returns it plus exp(log_probs), which is the
    gradient with respect to the logits of a log_softmax.  Through
    :class:`lamina.LogSoftmax` (as PyTorch's model would use it) both reach
    the same logits gradient.

    Args:
        blank: the blank symbol's index, 0.
        reduction: ``"mean"`` (each sample's loss divided by its target
            length, then averaged over the batch, as PyTorch), ``"sum"``, or
            ``"none"`` (the N samples' losses).
        zero_infinity: give samples that no alignment can produce (a target
            too long for its input) a zero loss and gradient instead of inf
            (and a NaN gradient).
        batch_first: log_probs is (N, T, C) instead of PyTorch's (T, N, C).

    Shape:
        log_probs: (T, N, C) (or (N, T, C)), a LogSoftmax's output.
        targets: (N, S) padded, or 1-d with the targets concatenated
            (sum(target_lengths)); class indices, never the blank.
        input_lengths, target_lengths: (N,) ints (arrays, lists or tuples),
            1 <= T_n <= T and S_n >= 0 (<= S for padded targets).

    The lengths and targets are read on the host (a wait on the GPU), and
    the recursions run one step of t at a time, vectorised over the batch
    and the label positions.
    """

    def __init__(self, blank=0, reduction="mean", zero_infinity=False, batch_first=False):
        super().__init__(reduction)
        if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or blank < 0:
            raise ValueError(f"CTCLoss: expected blank as a non-negative int, received {blank!r}")
        self.blank, self.zero_infinity, self.batch_first = int(blank), bool(zero_infinity), bool(batch_first)

    def extra_repr(self):
        s = f"blank={self.blank}, reduction='{self.reduction}'"
        s += ", zero_infinity=True" if self.zero_infinity else ""
        return s + (", batch_first=True" if self.batch_first else "")

    def __call__(self, log_probs, targets, input_lengths, target_lengths):
        return self.forward(log_probs, targets, input_lengths, target_lengths)

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        """The loss as a Python float; with reduction="none", the N samples' losses."""
        loss = self._ctc(log_probs, targets, input_lengths, target_lengths)
        return loss if self.reduction == "none" else float(loss)

    def compute(self, log_probs, targets, input_lengths, target_lengths):
        """The loss as a 0-d float64 array on the input's device (the lengths
        and targets are still read on the host)."""
        return self._ctc(log_probs, targets, input_lengths, target_lengths)

    def _lengths(self, values, what, n):
        if backend.is_array(values):
            values = backend.to_device(values, backend.CPU)
        arr = np.asarray(values)
        if arr.size and arr.dtype.kind not in "iu":
            raise DTypeError(f"{self._label()}: expected {what} as integers, received dtype {arr.dtype}")
        if arr.shape != (n,):
            raise ShapeError(f"{self._label()}: expected {what} as {n} ints (one per sample), received shape {arr.shape}")
        return arr.astype(np.int64)

    def _check(self, log_probs, targets, input_lengths, target_lengths):
        """Host copies of (targets as (N, S) padded, input lengths, target lengths), validated."""
        label = self._label()
        self._check_pair(log_probs, targets, "int")
        if log_probs.ndim != 3:
            layout = "(N, T, C)" if self.batch_first else "(T, N, C)"
            raise ShapeError(f"{label}: expected log_probs of shape {layout}, received shape {tuple(log_probs.shape)}")
        t_max, n, c = (log_probs.shape[1], log_probs.shape[0], log_probs.shape[2]) if self.batch_first else log_probs.shape
        if self.blank >= c:
            raise ValueError(f"{label}: expected blank < the number of classes {c}, received {self.blank}")
        t_len = self._lengths(input_lengths, "input_lengths", n)
        s_len = self._lengths(target_lengths, "target_lengths", n)
        if n and (t_len.min() < 1 or t_len.max() > t_max):
            raise ShapeError(f"{label}: expected input_lengths in [1, {t_max}] (T), received {t_len.tolist()}")
        if n and s_len.min() < 0:
            raise ShapeError(f"{label}: expected target_lengths >= 0, received {s_len.tolist()}")
        host = backend.to_device(targets, backend.CPU).astype(np.int64)
        if host.ndim == 2:
            if host.shape[0] != n or (n and s_len.max() > host.shape[1]):
                raise ShapeError(f"{label}: expected padded targets of shape ({n}, S) with S >= max(target_lengths) "
                                 f"= {int(s_len.max()) if n else 0}, received shape {host.shape}")
            padded = host
        elif host.ndim == 1:
            if host.size != s_len.sum():
                raise ShapeError(f"{label}: expected concatenated targets of sum(target_lengths) = {int(s_len.sum())} "
                                 f"values, received shape {host.shape}")
            padded = np.zeros((n, int(s_len.max()) if n else 0), dtype=np.int64)
            ends = np.cumsum(s_len)
            for i, (end, s) in enumerate(zip(ends, s_len)):
                padded[i, :s] = host[end - s:end]
        else:
            raise ShapeError(f"{label}: expected targets of shape (N, S) or (sum(target_lengths),), received shape {host.shape}")
        used = padded[np.arange(padded.shape[1])[None, :] < s_len[:, None]]
        if used.size and (used.min() < 0 or used.max() >= c or (used == self.blank).any()):
            raise ValueError(f"{label}: expected target classes in [0, {c}) other than the blank {self.blank}, "
                             f"received values from {int(used.min())} to {int(used.max())}"
                             f"{' including the blank' if (used == self.blank).any() else ''}")
        return padded, t_len, s_len

    def _ctc(self, log_probs, targets, input_lengths, target_lengths):
        padded, t_len, s_len = self._check(log_probs, targets, input_lengths, target_lengths)
        lp = self._widen(log_probs)
        n = lp.shape[0] if self.batch_first else lp.shape[1]
        weight = np.full(n, 1.0) if self.reduction != "mean" else 1.0 / (np.maximum(s_len, 1) * max(n, 1))
        need_grad = is_grad_enabled()
        fused = ops.ctc_loss(lp, padded, t_len, s_len, weight, self.blank, self.zero_infinity, need_grad, self.batch_first)
        if fused is not None:  # lamina's kernel: one CUDA block, or one CPU thread, per sample
            nll, grad = fused
            xp = backend.get_array_module(nll)
            losses = nll.astype(np.float64)
            if self.zero_infinity:
                losses = xp.where(xp.isfinite(losses), losses, 0.0)
            return self._reduce_samples(xp, losses, grad, weight, lp.dtype)
        if self.batch_first:
            lp = lp.transpose(1, 0, 2)
        xp = backend.get_array_module(lp)
        t_max, n, c = lp.shape
        dtype = lp.dtype
        neg = dtype.type(-np.inf)

        # the extended labels l' (blanks between and around the targets), on the host, then moved
        width = 2 * padded.shape[1] + 1
        ext = np.full((n, width), self.blank, dtype=np.int64)
        ext[:, 1::2] = padded
        ends = 2 * s_len + 1  # S'_n
        valid = np.arange(width)[None, :] < ends[:, None]
        skip = np.zeros((n, width), dtype=bool)  # s - 2 -> s allowed
        skip[:, 2:] = (ext[:, 2:] != self.blank) & (ext[:, 2:] != ext[:, :-2])
        device = backend.device_of(lp)
        ext_d, skip_d, skip_next_d = (backend.to_device(a, device) for a in (ext, skip, np.pad(skip[:, 2:], ((0, 0), (0, 2)))))
        lpe = xp.take_along_axis(lp, xp.broadcast_to(ext_d[None], (t_max, n, width)), axis=2)  # (T, N, S'): log y_t(l'_s)

        def shift(a, k):  # a[:, s - k] at s (−inf where s < k); k < 0 looks ahead
            out = xp.full_like(a, neg)
            if k > 0:
                out[:, k:] = a[:, :-k]
            else:
                out[:, :k] = a[:, -k:]
            return out

        alpha = xp.full((t_max, n, width), neg, dtype=dtype)
        alpha[0, :, 0] = lpe[0, :, 0]
        if width > 1:
            alpha[0, :, 1] = xp.where(backend.to_device(s_len > 0, device), lpe[0, :, 1], neg)
        for t in range(1, t_max):
            a = alpha[t - 1]
            alpha[t] = xp.logaddexp(xp.logaddexp(a, shift(a, 1)), xp.where(skip_d, shift(a, 2), neg)) + lpe[t]

        rows = np.arange(n)
        last = backend.to_device(t_len - 1, device)
        rows_d = backend.to_device(rows, device)
        end_a = alpha[last, rows_d, backend.to_device(ends - 1, device)]
        end_b = xp.where(backend.to_device(s_len > 0, device), alpha[last, rows_d, backend.to_device(np.maximum(ends - 2, 0), device)], neg)
        nll = -xp.logaddexp(end_a, end_b)  # (N,)

        if need_grad:
            beta = xp.full((t_max, n, width), neg, dtype=dtype)
            at_end = valid & (np.arange(width)[None, :] >= ends[:, None] - 2) & ((s_len[:, None] > 0) | (np.arange(width)[None, :] == 0))
            at_end_d = backend.to_device(at_end, device)
            for t in range(t_max - 1, -1, -1):
                starts = backend.to_device(t_len - 1 == t, device)[:, None]
                if t + 1 < t_max:
                    b = beta[t + 1]
                    rec = xp.logaddexp(xp.logaddexp(b, shift(b, -1)), xp.where(skip_next_d, shift(b, -2), neg)) + lpe[t]
                else:
                    rec = xp.full((n, width), neg, dtype=dtype)
                beta[t] = xp.where(starts & at_end_d, lpe[t], xp.where(starts, neg, rec))

        infinite = ~xp.isfinite(nll)
        weight_d = backend.to_device(weight, device)
        losses = nll.astype(np.float64)
        if self.zero_infinity:
            losses = xp.where(infinite, 0.0, losses)

        grad = None
        if need_grad:
            finite = xp.isfinite(lpe)
            onehot = (ext[:, :, None] == np.arange(c)[None, None, :]) & valid[:, :, None]
            with np.errstate(invalid="ignore"):  # an infeasible sample's -inf + inf is its NaN gradient
                log_occ = xp.where(finite, alpha + beta - xp.where(finite, lpe, 0), neg) + nll[None, :, None]
            occupancy = xp.exp(log_occ)  # (T, N, S'): the posterior of being at l'_s at step t
            grad = -xp.matmul(occupancy.transpose(1, 0, 2), backend.to_device(onehot.astype(dtype), device))  # (N, T, C)
            scale = weight_d.astype(dtype)
            if self.zero_infinity:
                scale = xp.where(infinite, 0, scale)
                grad = xp.where(infinite[:, None, None], 0, grad)
            grad = grad * scale[:, None, None]
            past_end = backend.to_device(np.arange(t_max)[None, :] >= t_len[:, None], device)  # (N, T): 0, as PyTorch
            grad = xp.where(past_end[:, :, None], 0, grad)
            if not self.batch_first:
                grad = grad.transpose(1, 0, 2)
            grad = xp.ascontiguousarray(grad)
        return self._reduce_samples(xp, losses, grad, weight, dtype)

    def _reduce_samples(self, xp, losses, grad, weight, dtype):
        """The loss from the N samples' losses (float64) and their weights
        (already in ``grad``), or for reduction="none" the losses
        themselves (the weights are 1), with the gradient cached."""
        if self.reduction == "none":
            batch = (slice(None), None, None) if self.batch_first else (None, slice(None), None)
            self._save_per_element(grad, losses, lambda g, d: g * d[batch])
            return losses.astype(dtype)
        self._save(grad)
        return (losses * backend.to_device(weight, backend.device_of(losses))).sum()
