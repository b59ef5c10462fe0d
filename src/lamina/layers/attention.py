"""Multi-head self-attention and the Transformer encoder layer, with PyTorch's
parameter layouts (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``
with ``batch_first=True``), so their state_dicts load one to one.

Self-attention over x (N, L, E) with H heads of size D = E / H:

    [q k v] = x W_inᵀ + b_in                      (N, L, 3E) → 3 x (N, H, L, D)
    s = q kᵀ / √D  (+ the masks: -∞ where a key is hidden, e.g. above the
                    diagonal when causal; float masks are added)
    p = softmax(s)                                 (N, H, L, L), over keys
                   (a query that sees no key at all gets p = 0)
    o = p v                                        (N, H, L, D) → (N, L, E)
    y = o W_outᵀ + b_out

Backward, from do (the gradient of o, through out_proj's backward):

    dv = pᵀ do,   dp = do vᵀ
    ds = p ⊙ (dp - Σ_keys dp ⊙ p) / √D             (softmax's Jacobian; 0 where masked,
                                                    since p is: backward needs no mask)
    dq = ds k,    dk = dsᵀ q
    dW_in += [dq dk dv]ᵀ x,  db_in += Σ [dq dk dv],  dx = [dq dk dv] W_in

The derivation is in docs/attention.md.
"""

import math

import numpy as np

from .. import backend, init, ops
from ..errors import DeviceError, DTypeError, ShapeError
from ..module import Layer, Parameter, _describe
from ._utils import positive_int
from .dense import Dense
from .dropout import Dropout
from .norm import LayerNorm


class MultiheadAttention(Layer):
    """Multi-head self-attention (PyTorch's ``nn.MultiheadAttention`` with
    ``batch_first=True``, called as ``mha(x, x, x)``).

    Args:
        embed_dim: E, the model width; divisible by num_heads.
        num_heads: H.
        bias: learn ``in_proj_bias`` and ``out_proj.bias``.
        causal: each position attends only to itself and earlier positions.
        dropout: dropout probability on the attention weights (training only).

    Call: ``forward(x, key_padding_mask=None, attn_mask=None)``, PyTorch's
    masks and conventions:
        key_padding_mask: (N, L); True (bool) hides that key (a padding
            position) from every query of its sequence; a float mask is added
            to the scores.
        attn_mask: (L, L) or (N·H, L, L); True (bool) stops query i from
            attending to key j; a float mask is added to the scores (-inf hides).
    Both combine with each other and with ``causal``.  A query left with no
    visible key gets attention weights of zero (its output is out_proj's
    bias) where PyTorch returns NaN.  Neither mask needs to be kept for
    backward: the weights p are exactly zero where keys were hidden.

    Shape:
        x: (N, L, E) → y: (N, L, E).

    Parameters (PyTorch's names and initialisation):
        in_proj_weight (3E, E): the stacked query, key and value projections,
            Xavier-uniform; in_proj_bias (3E,): zeros; out_proj: a Dense(E, E)
            whose bias starts at zero.
    """

    def __init__(self, embed_dim, num_heads, bias=True, causal=False, dropout=0.0, dtype=np.float32):
        super().__init__()
        self.embed_dim = positive_int(embed_dim, "MultiheadAttention", "embed_dim")
        self.num_heads = positive_int(num_heads, "MultiheadAttention", "num_heads")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"MultiheadAttention: expected embed_dim divisible by num_heads, received {embed_dim} and {num_heads}"
            )
        self.head_dim = self.embed_dim // self.num_heads
        self.causal = bool(causal)
        e = self.embed_dim
        self.in_proj_weight = Parameter(np.empty((3 * e, e), dtype=dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * e, dtype=dtype)) if bias else None
        self.out_proj = Dense(e, e, bias=bias, dtype=dtype)
        self.attn_dropout = Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self):
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _heads(self, a, n, l):
        """(N*L, E) → (N, H, L, D)."""
        return a.reshape(n, l, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def _check_mask(self, mask, name, shapes, x):
        """A mask's array, validated against x: its device, a bool or
        floating dtype, and one of ``shapes``."""
        if not backend.is_array(mask):
            raise DTypeError(f"{self._label()}: expected {name} as a numpy.ndarray or cupy.ndarray, "
                             f"received {_describe(mask)}")
        if backend.device_of(mask) != backend.device_of(x):
            raise DeviceError(f"{self._label()}: expected {name} on {backend.device_of(x)} (where the input is), "
                              f"received it on {backend.device_of(mask)}")
        if mask.dtype != np.bool_ and mask.dtype.kind != "f" and not backend.is_low_precision(mask.dtype):
            raise DTypeError(f"{self._label()}: expected {name} of dtype bool (True hides) or floating point "
                             f"(added to the scores), received {mask.dtype}")
        if tuple(mask.shape) not in shapes:
            raise ShapeError(f"{self._label()}: expected {name} of shape " + " or ".join(map(str, shapes)) +
                             f", received {tuple(mask.shape)}")
        return mask

    def check_masks(self, x, key_padding_mask=None, attn_mask=None):
        """Validate the masks for an input x (N, L, E); raises naming this layer."""
        n, l = x.shape[0], x.shape[1]
        if key_padding_mask is not None:
            self._check_mask(key_padding_mask, "key_padding_mask", [(n, l)], x)
        if attn_mask is not None:
            self._check_mask(attn_mask, "attn_mask", [(l, l), (n * self.num_heads, l, l)], x)

    def _masks(self, x, key_padding_mask, attn_mask):
        """The masks as (hidden, added): a bool array, True where a key is
        hidden, and a float array to add to the scaled scores, each
        broadcastable to the scores (N, H, L, L), or None."""
        self.check_masks(x, key_padding_mask, attn_mask)
        xp = backend.get_array_module(x)
        n, l, _ = x.shape
        hidden = added = None
        if self.causal:
            hidden = xp.triu(xp.ones((l, l), dtype=bool), k=1)
        parts = []
        if key_padding_mask is not None:
            parts.append(key_padding_mask.reshape(n, 1, 1, l))
        if attn_mask is not None:
            parts.append(attn_mask if attn_mask.ndim == 2 else attn_mask.reshape(n, self.num_heads, l, l))
        for m in parts:
            if m.dtype == np.bool_:
                hidden = m if hidden is None else hidden | m
            else:
                m = m.astype(np.float32 if backend.is_low_precision(x.dtype) else x.dtype, copy=False)
                added = m if added is None else added + m
        return hidden, added

    def forward(self, x, key_padding_mask=None, attn_mask=None):
        x = self._check_input(x, ndim=3, dim=[(2, self.embed_dim, "embed_dim")])
        hidden, added = self._masks(x, key_padding_mask, attn_mask)  # before anything changes
        xp = backend.get_array_module(x)
        n, l, e = x.shape
        x2 = x.reshape(n * l, e)
        bias = None if self.in_proj_bias is None else self._compute(self.in_proj_bias)
        qkv = ops.linear_forward(x2, self._compute(self.in_proj_weight), bias)  # (N*L, 3E)
        q, k, v = (self._heads(qkv[:, i * e:(i + 1) * e], n, l) for i in range(3))
        work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype  # scores and softmax in float32 at least
        s = ops.matmul(q, k.transpose(0, 1, 3, 2)).astype(work, copy=False)
        scale = 1.0 / math.sqrt(self.head_dim)
        if added is not None:  # PyTorch adds a float mask to the scaled scores
            s, scale = s * scale + added, 1.0
        if hidden is not None:
            s = xp.where(hidden, -xp.inf, s)
        blind = None
        if key_padding_mask is not None or attn_mask is not None:  # causal alone always leaves the diagonal
            blind = (s == -xp.inf).all(axis=-1, keepdims=True)  # queries that see no key
            s = xp.where(blind, 0, s)
        p = ops.softmax_forward(s, scale)
        if blind is not None:
            p = xp.where(blind, 0, p)
        p = p.astype(x.dtype, copy=False)  # (N, H, L, L)
        pd = self.attn_dropout(p)
        o = ops.matmul(pd, v).transpose(0, 2, 1, 3).reshape(n, l, e)
        y = self.out_proj(o)
        self._save(x2, q, k, v, p, pd, out=y)
        return y

    def backward(self, dy):
        x2, q, k, v, p, pd = self._take_cache(dy)
        n, h, l, d = q.shape
        do = self.out_proj.backward(dy)  # (N, L, E)
        do = self._compute_grad(do).reshape(n, l, h, d).transpose(0, 2, 1, 3)
        dv = ops.matmul(pd.transpose(0, 1, 3, 2), do)
        dp = self.attn_dropout.backward(ops.matmul(do, v.transpose(0, 1, 3, 2)))
        work = np.float32 if backend.is_low_precision(p.dtype) else p.dtype
        pw, dpw = p.astype(work, copy=False), dp.astype(work, copy=False)
        ds = ops.softmax_backward(dpw, pw, 1.0 / math.sqrt(d)).astype(q.dtype, copy=False)
        dq = ops.matmul(ds, k)
        dk = ops.matmul(ds.transpose(0, 1, 3, 2), q)
        xp = backend.get_array_module(dy)
        dqkv = xp.concatenate([a.transpose(0, 2, 1, 3).reshape(n * l, h * d) for a in (dq, dk, dv)], axis=1)
        dx2, dweight, dbias = ops.linear_backward(dqkv, x2, self._compute(self.in_proj_weight),
                                                  need_bias=self.in_proj_bias is not None)
        self.in_proj_weight.accumulate(dweight, owned=True)
        if self.in_proj_bias is not None:
            self.in_proj_bias.accumulate(dbias, owned=True)
        return dx2.reshape(n, l, h * d)

    def extra_repr(self):
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, bias={self.in_proj_bias is not None}"
        if self.causal:
            s += ", causal=True"
        if self.attn_dropout.p:
            s += f", dropout={self.attn_dropout.p}"
        return s


class TransformerEncoderLayer(Layer):
    """A Transformer encoder layer: self-attention and a feed-forward block,
    each with a residual connection and layer normalisation (PyTorch's
    ``nn.TransformerEncoderLayer`` with ``batch_first=True``).

        norm_first=True (pre-LN):   h = x + attn(norm1(x));  y = h + ff(norm2(h))
        norm_first=False (post-LN): h = norm1(x + attn(x));  y = norm2(h + ff(h))
        ff(z) = linear2(dropout(act(linear1(z))))

    Args:
        d_model: E.
        nhead: attention heads.
        dim_feedforward: width of the feed-forward block, 2048.
        dropout: after the attention, inside and after the feed-forward block, 0.1.
        activation: ``"relu"`` (PyTorch's default) or ``"gelu"``; fused into linear1.
        layer_norm_eps: 1e-5.
        norm_first: pre-LN (True) or post-LN (False, PyTorch's default).
        causal: causal self-attention.

    Call: ``forward(x, src_mask=None, src_key_padding_mask=None)``, as
    PyTorch's; the masks go to self_attn as ``attn_mask`` and
    ``key_padding_mask`` (see :class:`MultiheadAttention`).

    Shape: x (N, L, E) → y (N, L, E).  Children and parameters carry
    PyTorch's names (self_attn, linear1, linear2, norm1, norm2).
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-5,
                 norm_first=False, bias=True, causal=False, dtype=np.float32):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"TransformerEncoderLayer: expected activation 'relu' or 'gelu', received {activation!r}")
        self.norm_first = bool(norm_first)
        self.self_attn = MultiheadAttention(d_model, nhead, bias=bias, causal=causal, dropout=dropout, dtype=dtype)
        self.linear1 = Dense(d_model, dim_feedforward, bias=bias, activation=activation, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Dense(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.d_model = self.self_attn.embed_dim

    def _attn(self, z, masks):
        return self.dropout1(self.self_attn(z, **masks))

    def _ff(self, z):
        return self.dropout2(self.linear2(self.dropout(self.linear1(z))))

    def _ff_backward(self, dy):
        return self.linear1.backward(self.dropout.backward(self.linear2.backward(self.dropout2.backward(dy))))

    def forward(self, x, src_mask=None, src_key_padding_mask=None):
        x = self._check_input(x, ndim=3, dim=[(2, self.d_model, "d_model")])
        masks = {"attn_mask": src_mask, "key_padding_mask": src_key_padding_mask}
        self.self_attn.check_masks(x, **masks)  # before any child runs: an error leaves every cache as it was
        ref = self.self_attn  # the parameters live in the children: check dtype and device against theirs
        if backend.device_of(x) != ref.in_proj_weight.device:
            raise DeviceError(
                f"{self._label()}: expected input on {ref.in_proj_weight.device} (where the parameters are), "
                f"received it on {backend.device_of(x)}"
            )
        if x.dtype != ref.compute_dtype:
            if ref.__dict__.get("_amp_dtype") is None:
                raise DTypeError(
                    f"{self._label()}: expected input of dtype {ref.compute_dtype} (the compute dtype), received {x.dtype}"
                )
            x = backend.narrow(x, ref.compute_dtype)  # mixed precision: the residual stream in the compute dtype
        if self.norm_first:
            h = x + self._attn(self.norm1(x), masks)
            y = h + self._ff(self.norm2(h))
        else:
            h = self.norm1(x + self._attn(x, masks))
            y = self.norm2(h + self._ff(h))
        self._save(None, out=y)  # the children hold what backward needs
        return y

    def backward(self, dy):
        self._take_cache(dy)
        if self.norm_first:
            dh = dy + self.norm2.backward(self._ff_backward(dy))
            return dh + self.norm1.backward(self.self_attn.backward(self.dropout1.backward(dh)))
        dz2 = self.norm2.backward(dy)  # z2 = h + ff(h)
        dh = dz2 + self._ff_backward(dz2)
        dz1 = self.norm1.backward(dh)  # z1 = x + attn(x)
        return dz1 + self.self_attn.backward(self.dropout1.backward(dz1))

    def extra_repr(self):
        return f"norm_first={self.norm_first}"
