"""Embedding: a lookup table of learned vectors."""

import numpy as np

from .. import backend, init, ops
from ..errors import DeviceError, DTypeError
from ..module import Layer, Parameter, _describe
from ._utils import positive_int


class Embedding(Layer):
    """y[...] = W[idx[...]]: row idx of the table for every index (PyTorch's ``nn.Embedding``).

    Backward: dW[j] += Σ_{positions p with idx[p] = j} dy[p]  (a scatter-add;
    the padding row gets none), divided by the count of j in the batch with
    ``scale_grad_by_freq``.  The indices get no gradient: backward returns
    None.  Caches idx.

    Args:
        num_embeddings: rows of the table; indices lie in [0, num_embeddings).
        embedding_dim: E, the length of each vector.
        padding_idx: a row that is initialised to zeros and never trained
            (its gradient stays 0), for padding tokens; negative counts from the end.
        max_norm: renormalise, in place and before the lookup, each row the
            call reads whose ``norm_type``-norm exceeds max_norm to norm
            max_norm (PyTorch's rule: scaled by max_norm / (norm + 1e-7)).
            The rescaling is not differentiated, as in PyTorch.
        norm_type: the p of the p-norm for max_norm, 2.
        scale_grad_by_freq: divide each row's gradient by the number of
            times the batch reads it (frequent tokens do not dominate).
        dtype: parameter dtype.

    Shape:
        idx: any shape, integer dtype  →  y: idx.shape + (E,).  An index
        outside [0, num_embeddings) raises IndexError, as in PyTorch.

    Parameters:
        weight: (num_embeddings, E), initialised N(0, 1) as PyTorch's.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, dtype=np.float32):
        super().__init__()
        self.num_embeddings = positive_int(num_embeddings, "Embedding", "num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "Embedding", "embedding_dim")
        if padding_idx is not None:
            if not isinstance(padding_idx, (int, np.integer)) or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: expected padding_idx in [-{self.num_embeddings}, {self.num_embeddings}), "
                                 f"received {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        if max_norm is not None and not (np.isscalar(max_norm) and max_norm > 0 and np.isfinite(max_norm)):
            raise ValueError(f"Embedding: expected max_norm as a finite number > 0 or None, received {max_norm!r}")
        if not (np.isscalar(norm_type) and norm_type > 0):
            raise ValueError(f"Embedding: expected norm_type > 0, received {norm_type!r}")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype=dtype))
        self.reset_parameters()

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False):
        """An Embedding whose table is a copy of ``embeddings`` (a 2-d
        floating NumPy or CuPy array: word vectors, say), on its device and
        in its dtype; ``freeze`` (the default) leaves it out of training
        (``weight.requires_grad = False``), as PyTorch's."""
        if not backend.is_array(embeddings) or embeddings.ndim != 2 or not (
                embeddings.dtype.kind == "f" or backend.is_low_precision(embeddings.dtype)):
            raise ValueError(f"Embedding.from_pretrained: expected embeddings as a 2-d floating-point array, received "
                             f"{_describe(embeddings)}")
        rows, dim = embeddings.shape
        layer = cls(rows, dim, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                    scale_grad_by_freq=scale_grad_by_freq, dtype=np.float32)
        layer.weight = Parameter(embeddings.copy())
        layer.weight.requires_grad = not freeze
        return layer

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, idx):
        if not backend.is_array(idx) or idx.dtype.kind not in "iu":
            raise DTypeError(f"{self._label()}: expected integer indices as an array, received {_describe(idx)}")
        if backend.device_of(idx) != self.weight.device:
            raise DeviceError(f"{self._label()}: expected the indices on {self.weight.device} (where the weight is), "
                              f"received them on {backend.device_of(idx)}")
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())  # one host synchronisation on the GPU, for a clear error
            if lo < 0 or hi >= self.num_embeddings:
                raise IndexError(f"{self._label()}: expected indices in [0, {self.num_embeddings}), received "
                                 f"values from {lo} to {hi}")
        if self.max_norm is not None:
            self._renormalise(idx)
        y = self._compute(self.weight)[idx]  # (*idx.shape, E)
        self._save(idx, out=y)  # idx: the indices
        return y

    def _renormalise(self, idx):
        """Rows read by ``idx`` with a norm above max_norm scaled down to it, in place."""
        xp = backend.get_array_module(idx)
        w = self.weight.data
        rows = xp.unique(idx.reshape(-1))
        sub = w[rows].astype(np.float32) if backend.is_low_precision(w.dtype) else w[rows]
        norms = (xp.abs(sub) ** self.norm_type).sum(axis=1) ** (1 / self.norm_type)
        scale = xp.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), 1.0)
        w[rows] = (sub * scale[:, None]).astype(w.dtype, copy=False)

    def backward(self, dy):
        idx = self._take_cache(dy)
        if not self.weight.requires_grad:  # a frozen table: nothing to compute
            return None
        flat = idx.reshape(-1)
        dweight = ops.embedding_backward(self._compute_grad(dy).reshape(-1, self.embedding_dim), flat, self.num_embeddings)
        if self.scale_grad_by_freq:
            xp = backend.get_array_module(dweight)
            counts = xp.bincount(flat, minlength=self.num_embeddings)
            dweight /= xp.maximum(counts, 1).astype(dweight.dtype)[:, None]
        if self.padding_idx is not None:
            dweight[self.padding_idx] = 0
        self.weight.accumulate(dweight, owned=True)
        return None

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        s += f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}" + (f", norm_type={self.norm_type}" if self.norm_type != 2 else "")
        return s + (", scale_grad_by_freq=True" if self.scale_grad_by_freq else "")
