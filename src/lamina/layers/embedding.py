"""Embedding: a lookup table of learned vectors."""

import numpy as np

from .. import backend, init, ops
from ..errors import DeviceError, DTypeError
from ..module import Layer, Parameter, _describe
from ._utils import positive_int


class Embedding(Layer):
    """y[...] = W[idx[...]]: row idx of the table for every index (PyTorch's ``nn.Embedding``).

    Backward: dW[j] += Σ_{positions p with idx[p] = j} dy[p]  (a scatter-add;
    the padding row gets none).  The indices get no gradient: backward
    returns None.  Caches idx.

    Args:
        num_embeddings: rows of the table; indices lie in [0, num_embeddings).
        embedding_dim: E, the length of each vector.
        padding_idx: a row that is initialised to zeros and never trained
            (its gradient stays 0), for padding tokens; negative counts from the end.
        dtype: parameter dtype.

    Shape:
        idx: any shape, integer dtype  →  y: idx.shape + (E,).  An index
        outside [0, num_embeddings) raises IndexError, as in PyTorch.

    Parameters:
        weight: (num_embeddings, E), initialised N(0, 1) as PyTorch's.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32):
        super().__init__()
        self.num_embeddings = positive_int(num_embeddings, "Embedding", "num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "Embedding", "embedding_dim")
        if padding_idx is not None:
            if not isinstance(padding_idx, (int, np.integer)) or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: expected padding_idx in [-{self.num_embeddings}, {self.num_embeddings}), "
                                 f"received {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype=dtype))
        self.reset_parameters()

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
        y = self._compute(self.weight)[idx]  # (*idx.shape, E)
        self._save(idx, out=y)  # idx: the indices
        return y

    def backward(self, dy):
        idx = self._take_cache(dy)
        dweight = ops.embedding_backward(self._compute_grad(dy).reshape(-1, self.embedding_dim), idx.reshape(-1),
                                         self.num_embeddings)
        if self.padding_idx is not None:
            dweight[self.padding_idx] = 0
        self.weight.accumulate(dweight, owned=True)
        return None

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
