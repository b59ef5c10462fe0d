"""Multi-head attention and the Transformer encoder and decoder layers, with
PyTorch's parameter layouts (``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer`` and their
stacks, with ``batch_first=True``), so their state_dicts load one to one.

Attention of queries from x (N, Lq, E) over keys and values from m (N, Lk, E)
(self-attention: m = x), with H heads of size D = E / H:

    q = x W_qᵀ + b_q,  [k v] = m [W_k W_v]ᵀ + [b_k b_v]     → (N, H, L, D) each
                      (W_in = [W_q W_k W_v], (3E, E): self-attention is one GEMM)
    s = q kᵀ / √D  (+ the masks: -∞ where a key is hidden, e.g. above the
                    diagonal when causal; float masks are added)
    p = softmax(s)                                 (N, H, Lq, Lk), over keys
                   (a query that sees no key at all gets p = 0)
    o = p v                                        (N, H, Lq, D) → (N, Lq, E)
    y = o W_outᵀ + b_out

Backward, from do (the gradient of o, through out_proj's backward):

    dv = pᵀ do,   dp = do vᵀ
    ds = p ⊙ (dp - Σ_keys dp ⊙ p) / √D             (softmax's Jacobian; 0 where masked,
                                                    since p is: backward needs no mask)
    dq = ds k,    dk = dsᵀ q
    dx = dq W_q,  dm = [dk dv] [W_k W_v],  dW_in += [dqᵀ x; dkᵀ m; dvᵀ m],  db_in += Σ [dq dk dv]

The derivation is in docs/attention.md.
"""

import copy
import math

import numpy as np

from .. import backend, init, ops
from ..checkpoint import backward_recomputing, call_keeping_inputs
from ..errors import DeviceError, DTypeError, ShapeError
from ..module import Layer, Parameter, _describe, is_grad_enabled
from ._utils import positive_int
from .containers import Sequential
from .dense import Dense
from .dropout import Dropout
from .norm import LayerNorm


class KVCache:
    """Keys and values kept from one call to the next, for incremental
    (token by token) decoding: each step runs only the new positions
    through the model, and every attention layer reads the keys and values
    it computed at earlier steps from here instead of recomputing them.

        cache = lm.KVCache()
        with lm.no_grad():
            memory = model.encoder(src)
            for t in range(steps):
                y = model.decoder(tgt[:, t:t + 1], memory, cache=cache)  # query length 1

    One cache serves one decoding run: pass the same cache to every call of
    the run (of a :class:`MultiheadAttention`, an encoder or decoder layer,
    or a stack), and a new one (or :meth:`clear`) for the next run.  Each
    attention layer keeps its own entry, keyed by the layer:

    - self-attention appends the new positions' keys and values (N, H, L, D)
      to what it kept; the new queries sit at positions past, ..., past+Lq-1,
      so a causal layer lets query i see keys 0..past+i, and masks are
      given for all the keys: key_padding_mask (N, past+Lq), attn_mask
      (Lq, past+Lq);
    - cross-attention projects the memory on its first call and reuses the
      keys and values after it: later calls must pass a memory of the same
      shape, which is not projected again (a new memory needs a new cache).

    Running the positions in one call or one by one gives the same outputs
    (to rounding).  The cache is for inference: it raises under gradient
    recording (call it under :func:`lamina.no_grad`), since backward
    through keys kept from earlier calls is not possible.  The buffers grow
    by doubling, so a run of L steps copies O(L) keys, not O(L²).
    """

    def __init__(self):
        self._entries = {}

    @property
    def length(self):
        """Positions the self-attention layers have seen (0 before the first
        call): the position of the next query, for positional encodings."""
        return max((e.length for e in self._entries.values() if not e.cross), default=0)

    def past(self, attn):
        """Positions ``attn`` (a self-attention layer) has seen."""
        e = self._entries.get(attn)
        return 0 if e is None or e.cross else e.length

    def reorder(self, index):
        """Keep the batch rows ``index`` (an integer array on the model's
        device) in every entry: beam search picks its surviving beams with it,
        a batch drops its finished sequences."""
        for e in self._entries.values():
            e.k, e.v = e.k[index], e.v[index]

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return self.length

    def __repr__(self):
        return f"KVCache(layers={len(self._entries)}, length={self.length})"

    @staticmethod
    def check(cache, owner):
        """Raise, naming the layer ``owner``, where ``cache`` cannot be used."""
        if not isinstance(cache, KVCache):
            raise TypeError(f"{owner._label()}: expected cache as a lamina.KVCache, received {type(cache).__name__}")
        if is_grad_enabled():
            raise RuntimeError(f"{owner._label()}: a KVCache is for inference; call under lamina.no_grad() "
                               "(backward cannot run through keys and values kept from earlier calls)")

    def _lookup(self, attn, n, lk=None):
        """(past, kept) for attention layer ``attn`` about to run a batch of
        n queries: self-attention (lk None) has seen ``past`` positions;
        cross-attention over a memory of length lk gets its kept (k, v), or
        None on its first call.  Raises, naming the layer, on a batch or
        memory that is not the cached one."""
        e = self._entries.get(attn)
        if e is None:
            return 0, None
        if e.k.shape[0] != n:
            raise ShapeError(f"{attn._label()}: expected a batch of {e.k.shape[0]} (the KVCache's), received {n}; "
                             "KVCache.reorder(index) changes the cached batch")
        if lk is None:
            return e.length, None
        if e.length != lk:
            raise ShapeError(f"{attn._label()}: expected a memory of length {e.length} (the one this KVCache "
                             f"projected), received {lk}; use a new KVCache for a new memory")
        return 0, (e.k, e.v)

    def _keep(self, attn, k, v, cross):
        """Store cross-attention's (k, v), or append self-attention's new
        ones; returns all the keys and values to attend over."""
        if cross:
            self._entries[attn] = _Kept(k, v, cross=True)
            return k, v
        e = self._entries.get(attn)
        if e is None:
            e = self._entries[attn] = _Kept(None, None, cross=False)
        return e.append(k, v)


class _Kept:
    """One attention layer's keys and values, (N, H, capacity, D) buffers
    whose first ``length`` positions are filled (cross: exactly the memory's)."""

    def __init__(self, k, v, cross):
        self.k, self.v, self.cross = k, v, cross
        self.length = 0 if k is None else k.shape[2]

    def append(self, k, v):
        n, h, l, d = k.shape
        end = self.length + l
        if self.k is None or end > self.k.shape[2]:
            xp = backend.get_array_module(k)
            cap = max(end, 16, 0 if self.k is None else 2 * self.k.shape[2])
            bk, bv = xp.empty((n, h, cap, d), dtype=k.dtype), xp.empty((n, h, cap, d), dtype=v.dtype)
            if self.length:
                bk[:, :, :self.length], bv[:, :, :self.length] = self.k[:, :, :self.length], self.v[:, :, :self.length]
            self.k, self.v = bk, bv
        self.k[:, :, self.length:end], self.v[:, :, self.length:end] = k, v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class MultiheadAttention(Layer):
    """Multi-head attention (PyTorch's ``nn.MultiheadAttention`` with
    ``batch_first=True``): self-attention, ``mha(x)``, or cross-attention,
    ``mha(query, memory)`` or ``mha(query, key, value)``.

    Args:
        embed_dim: E, the model width; divisible by num_heads.
        num_heads: H.
        bias: learn ``in_proj_bias`` and ``out_proj.bias``.
        causal: query i attends only to keys 0..i (PyTorch's top-left
            ``is_causal``; in self-attention, itself and earlier positions).
        dropout: dropout probability on the attention weights (training only).
        kdim, vdim: the widths of the key and value inputs (E when None), as
            PyTorch's: cross-attention over a memory of another width.

    Call: ``forward(query, key=None, value=None, key_padding_mask=None,
    attn_mask=None)``:
        key, value: None for self-attention over ``query``; ``key`` alone is
            a memory used as both keys and values (an encoder's output, for
            a decoder); all three as in PyTorch.  The key and value have the
            query's batch, widths kdim and vdim, their own length Lk.
        key_padding_mask: (N, Lk); True (bool) hides that key (a padding
            position) from every query of its sequence; a float mask is added
            to the scores.
        attn_mask: (Lq, Lk) or (N·H, Lq, Lk); True (bool) stops query i from
            attending to key j; a float mask is added to the scores (-inf hides).
        cache: a :class:`KVCache`, for incremental decoding under
            ``no_grad()``: self-attention attends over the keys and values
            of earlier calls too (Lk = positions seen + Lq; causal counts
            positions from the first call), cross-attention projects its
            memory once.
    The masks combine with each other and with ``causal``.  A query left
    with no visible key gets attention weights of zero (its output is
    out_proj's bias) where PyTorch returns NaN.  Neither mask needs to be
    kept for backward: the weights p are exactly zero where keys were hidden.

    ``need_weights=True`` returns ``(y, weights)``, PyTorch's attention
    weights p (after dropout), (N, Lq, Lk) averaged over the heads, or
    (N, H, Lq, Lk) with ``average_attn_weights=False``: to look at, not to
    differentiate (backward takes the gradient of y alone).

    ``backward(dy)`` returns one gradient per input given: dx for
    self-attention, (dquery, dmemory) or (dquery, dkey, dvalue).  ``mha(x,
    x, x)`` is cross-attention that happens to read x three times: its
    three gradients sum to self-attention's dx (which ``mha(x)`` gets in one GEMM).

    Shape:
        query (N, Lq, E), key (N, Lk, kdim), value (N, Lk, vdim) → y: (N, Lq, E).

    Parameters (PyTorch's names and initialisation):
        in_proj_weight (3E, E): the stacked query, key and value projections,
            Xavier-uniform; in_proj_bias (3E,): zeros; out_proj: a Dense(E, E)
            whose bias starts at zero.  With kdim or vdim other than E, as in
            PyTorch, three matrices instead of in_proj_weight:
            q_proj_weight (E, E), k_proj_weight (E, kdim), v_proj_weight
            (E, vdim), each Xavier-uniform.
    """

    def __init__(self, embed_dim, num_heads, bias=True, causal=False, dropout=0.0, kdim=None, vdim=None,
                 dtype=np.float32):
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
        self.kdim = e if kdim is None else positive_int(kdim, "MultiheadAttention", "kdim")
        self.vdim = e if vdim is None else positive_int(vdim, "MultiheadAttention", "vdim")
        self.separate_proj = not self.kdim == self.vdim == e  # PyTorch's `not _qkv_same_embed_dim`
        if self.separate_proj:
            self.q_proj_weight = Parameter(np.empty((e, e), dtype=dtype))
            self.k_proj_weight = Parameter(np.empty((e, self.kdim), dtype=dtype))
            self.v_proj_weight = Parameter(np.empty((e, self.vdim), dtype=dtype))
            self.in_proj_weight = None
        else:
            self.in_proj_weight = Parameter(np.empty((3 * e, e), dtype=dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * e, dtype=dtype)) if bias else None
        self.out_proj = Dense(e, e, bias=bias, dtype=dtype)
        self.attn_dropout = Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self):
        for w in self._proj_params():
            init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _heads(self, a, n, l):
        """(N*L, E) → (N, H, L, D)."""
        return a.reshape(n, l, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def _proj_params(self):
        """The projection matrices: [in_proj_weight], or [q, k, v]_proj_weight."""
        if self.separate_proj:
            return [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]
        return [self.in_proj_weight]

    def _proj_weights(self):
        """A function (first, last) → the matrix that makes projections
        first..last-1 (0 the queries, 1 the keys, 2 the values), in the
        compute dtype: rows [first·E, last·E) of in_proj_weight, or one of
        the separate matrices."""
        e = self.embed_dim
        if self.separate_proj:
            ws = [self._compute(w) for w in self._proj_params()]
            return lambda first, last: ws[first]
        w = self._compute(self.in_proj_weight)
        return lambda first, last: w[first * e:last * e]

    def _inputs(self, query, key, value):
        """The validated inputs as projection groups ``[(x, first, last,
        i)]``: input i, x (N, L, width), makes projections first..last-1 (0
        the queries, 1 the keys, 2 the values) in one GEMM, with rows
        [first·E, last·E) of in_proj_weight.  Self-attention is one group
        (x, 0, 3, 0); a memory used as key and value is (memory, 1, 3, 1),
        or two groups with separate projection matrices."""
        e = self.embed_dim
        if key is None:
            if value is not None:
                raise ValueError(f"{self._label()}: received value without key; pass key=value=memory, or key alone")
            if self.separate_proj:
                raise ValueError(f"{self._label()}: self-attention needs kdim = vdim = embed_dim; "
                                 "pass the key and value inputs")
            return [(self._check_input(query, ndim=3, dim=[(2, e, "embed_dim")]), 0, 3, 0)]
        q = self._check_input(query, "query", ndim=3, dim=[(2, e, "embed_dim")])
        k = self._check_input(key, "key", ndim=3, dim=[(2, self.kdim, "kdim" if self.separate_proj else "embed_dim"), (0, q.shape[0], "the query's batch")])
        if value is None:
            if self.kdim != self.vdim:
                raise ValueError(f"{self._label()}: a memory read as both key and value needs kdim = vdim, "
                                 f"received kdim={self.kdim} and vdim={self.vdim}; pass key and value")
            return [(q, 0, 1, 0), (k, 1, 2, 1), (k, 2, 3, 1)] if self.separate_proj else [(q, 0, 1, 0), (k, 1, 3, 1)]
        v = self._check_input(value, "value", ndim=3,
                              dim=[(2, self.vdim, "vdim" if self.separate_proj else "embed_dim"), (0, k.shape[0], "the key's batch"), (1, k.shape[1], "the key's length")])
        return [(q, 0, 1, 0), (k, 1, 2, 1), (v, 2, 3, 2)]

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

    def check_masks(self, query, key_padding_mask=None, attn_mask=None, key=None, past=0):
        """Validate the masks for a query (N, Lq, E) and, for cross-attention,
        a key (N, Lk, E) (self-attention: Lk = past + Lq, with ``past``
        positions kept in a :class:`KVCache`); raises naming this layer."""
        n, lq = query.shape[0], query.shape[1]
        lk = past + lq if key is None else key.shape[1]
        if key_padding_mask is not None:
            self._check_mask(key_padding_mask, "key_padding_mask", [(n, lk)], query)
        if attn_mask is not None:
            self._check_mask(attn_mask, "attn_mask", [(lq, lk), (n * self.num_heads, lq, lk)], query)

    def _masks(self, n, lq, lk, dtype, xp, key_padding_mask, attn_mask, past=0):
        """The (validated) masks as (hidden, added): a bool array, True where
        a key is hidden, and a float array to add to the scaled scores, each
        broadcastable to the scores (N, H, Lq, Lk), or None.  The queries
        sit at positions past, ..., past+Lq-1 (causal: query i sees keys
        0..past+i)."""
        hidden = added = None
        if self.causal:
            hidden = xp.triu(xp.ones((lq, lk), dtype=bool), k=1 + past)
        parts = []
        if key_padding_mask is not None:
            parts.append(key_padding_mask.reshape(n, 1, 1, lk))
        if attn_mask is not None:
            parts.append(attn_mask if attn_mask.ndim == 2 else attn_mask.reshape(n, self.num_heads, lq, lk))
        for m in parts:
            if m.dtype == np.bool_:
                hidden = m if hidden is None else hidden | m
            else:
                m = m.astype(np.float32 if backend.is_low_precision(dtype) else dtype, copy=False)
                added = m if added is None else added + m
        return hidden, added

    def forward(self, query, key=None, value=None, key_padding_mask=None, attn_mask=None, need_weights=False,
                average_attn_weights=True, cache=None):
        groups = self._inputs(query, key, value)
        x = groups[0][0]
        n, lq, e = x.shape
        cross = key is not None
        lnew = groups[-1][0].shape[1]  # positions of the keys and values given now
        past, kept = 0, None  # with a KVCache: positions already seen (self), or the memory's (k, v) (cross)
        if cache is not None:
            KVCache.check(cache, self)
            past, kept = cache._lookup(self, n, lnew if cross else None)
        lk = past + lnew
        self.check_masks(x, key_padding_mask, attn_mask, key=groups[1][0] if cross else None, past=past)  # before anything changes
        xp = backend.get_array_module(x)
        hidden, added = self._masks(n, lq, lk, x.dtype, xp, key_padding_mask, attn_mask, past)
        w = self._proj_weights()
        b = None if self.in_proj_bias is None else self._compute(self.in_proj_bias)
        slots = []  # the projections of the queries, keys and values, each (N*L, E)
        for a, first, last, _ in (groups[:1] if kept is not None else groups):
            out = ops.linear_forward(a.reshape(-1, a.shape[-1]), w(first, last),
                                     None if b is None else b[first * e:last * e])
            slots += [out[:, i * e:(i + 1) * e] for i in range(last - first)]
        q = self._heads(slots[0], n, lq)
        if kept is not None:
            k, v = kept
        else:
            k, v = self._heads(slots[1], n, lnew), self._heads(slots[2], n, lnew)
            if cache is not None:
                k, v = cache._keep(self, k, v, cross)
        work = np.float32 if backend.is_low_precision(x.dtype) else x.dtype  # scores and softmax in float32 at least
        s = ops.matmul(q, k.transpose(0, 1, 3, 2)).astype(work, copy=False)  # (N, H, Lq, Lk)
        scale = 1.0 / math.sqrt(self.head_dim)
        if added is not None:  # PyTorch adds a float mask to the scaled scores
            s, scale = s * scale + added, 1.0
        if hidden is not None:
            s = xp.where(hidden, -xp.inf, s)
        blind = None
        if key_padding_mask is not None or attn_mask is not None:  # causal alone always leaves key 0
            blind = (s == -xp.inf).all(axis=-1, keepdims=True)  # queries that see no key
            s = xp.where(blind, 0, s)
        p = ops.softmax_forward(s, scale)
        if blind is not None:
            p = xp.where(blind, 0, p)
        p = p.astype(x.dtype, copy=False)
        pd = self.attn_dropout(p)
        o = ops.matmul(pd, v).transpose(0, 2, 1, 3).reshape(n, lq, e)
        y = self.out_proj(o)
        self._save([(a.reshape(-1, a.shape[-1]), first, last, i) for a, first, last, i in groups], q, k, v, p, pd, out=y)
        if need_weights:  # as PyTorch: after dropout, averaged over the heads unless asked not to
            return y, (pd.mean(axis=1, dtype=work).astype(x.dtype, copy=False) if average_attn_weights else pd)
        return y

    def backward(self, dy):
        """dx for self-attention; for cross-attention a gradient for each
        input given: (dquery, dkey) or (dquery, dkey, dvalue)."""
        groups, q, k, v, p, pd = self._take_cache(dy)
        n, h, lq, d = q.shape
        e = h * d
        do = self.out_proj.backward(dy)  # (N, Lq, E)
        do = self._compute_grad(do).reshape(n, lq, h, d).transpose(0, 2, 1, 3)
        dv = ops.matmul(pd.transpose(0, 1, 3, 2), do)
        dp = self.attn_dropout.backward(ops.matmul(do, v.transpose(0, 1, 3, 2)))
        work = np.float32 if backend.is_low_precision(p.dtype) else p.dtype
        pw, dpw = p.astype(work, copy=False), dp.astype(work, copy=False)
        ds = ops.softmax_backward(dpw, pw, 1.0 / math.sqrt(d)).astype(q.dtype, copy=False)
        dq = ops.matmul(ds, k)
        dk = ops.matmul(ds.transpose(0, 1, 3, 2), q)
        xp = backend.get_array_module(dy)
        dslots = [a.transpose(0, 2, 1, 3).reshape(-1, e) for a in (dq, dk, dv)]
        w = self._proj_weights()
        need_bias = self.in_proj_bias is not None
        dxs, dws, dbs = {}, [], []  # dxs: input → its gradient, summed over the groups that read it
        for a2, first, last, i in groups:
            dproj = dslots[first] if last - first == 1 else xp.concatenate(dslots[first:last], axis=1)
            dx2, dw, db = ops.linear_backward(dproj, a2, w(first, last), need_bias=need_bias)
            dx2 = dx2.reshape(n, -1, a2.shape[-1])
            dxs[i] = dx2 if i not in dxs else dxs[i] + dx2
            dws.append(dw)
            dbs.append(db)
        if self.separate_proj:  # one group per matrix, in order q, k, v
            for param, dw in zip(self._proj_params(), dws):
                param.accumulate(dw, owned=True)
        else:
            self.in_proj_weight.accumulate(dws[0] if len(dws) == 1 else xp.concatenate(dws), owned=True)
        if need_bias:
            self.in_proj_bias.accumulate(dbs[0] if len(dbs) == 1 else xp.concatenate(dbs), owned=True)
        return dxs[0] if len(dxs) == 1 else tuple(dxs[i] for i in sorted(dxs))

    def extra_repr(self):
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, bias={self.in_proj_bias is not None}"
        if self.separate_proj:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.causal:
            s += ", causal=True"
        if self.attn_dropout.p:
            s += f", dropout={self.attn_dropout.p}"
        return s


class _TransformerLayer(Layer):
    """What the encoder and decoder layers share: the feed-forward block
    ff(z) = linear2(dropout(act(linear1(z)))) and the input checks.  The
    parameters live in the children, so inputs are checked against theirs."""

    def _build_ff(self, d_model, dim_feedforward, dropout, activation, bias, dtype):
        if activation not in ("relu", "gelu"):
            raise ValueError(f"{type(self).__name__}: expected activation 'relu' or 'gelu', received {activation!r}")
        self.linear1 = Dense(d_model, dim_feedforward, bias=bias, activation=activation, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Dense(dim_feedforward, d_model, bias=bias, dtype=dtype)

    def _ff(self, z, out_dropout):
        return out_dropout(self.linear2(self.dropout(self.linear1(z))))

    def _ff_backward(self, dy, out_dropout):
        return self.linear1.backward(self.dropout.backward(self.linear2.backward(out_dropout.backward(dy))))

    def _check_stream(self, x, what="input", batch=None):
        """x (N, L, d_model) on the parameters' device, in their compute
        dtype (cast under mixed precision); ``batch`` the N it must have."""
        dims = [(2, self.d_model, "d_model")]
        if batch is not None:
            dims.append((0, batch, "the batch of tgt"))
        x = self._check_input(x, what, ndim=3, dim=dims)
        ref = self.self_attn
        if backend.device_of(x) != ref.in_proj_weight.device:
            raise DeviceError(
                f"{self._label()}: expected {what} on {ref.in_proj_weight.device} (where the parameters are), "
                f"received it on {backend.device_of(x)}"
            )
        if x.dtype != ref.compute_dtype:
            if ref.__dict__.get("_amp_dtype") is None:
                raise DTypeError(
                    f"{self._label()}: expected {what} of dtype {ref.compute_dtype} (the compute dtype), received {x.dtype}"
                )
            x = backend.narrow(x, ref.compute_dtype)  # mixed precision: the residual stream in the compute dtype
        return x

    def _check_cache(self, cache, x):
        """Positions self_attn has kept in ``cache`` (0 without one), after
        checking that the cache can serve this call."""
        if cache is None:
            return 0
        KVCache.check(cache, self)
        return cache._lookup(self.self_attn, x.shape[0])[0]

    def extra_repr(self):
        return f"norm_first={self.norm_first}"


class TransformerEncoderLayer(_TransformerLayer):
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
        self.norm_first = bool(norm_first)
        self.self_attn = MultiheadAttention(d_model, nhead, bias=bias, causal=causal, dropout=dropout, dtype=dtype)
        self.d_model = self.self_attn.embed_dim
        self._build_ff(d_model, dim_feedforward, dropout, activation, bias, dtype)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def _attn(self, z, masks):
        return self.dropout1(self.self_attn(z, **masks))

    def forward(self, x, src_mask=None, src_key_padding_mask=None, cache=None):
        masks = {"attn_mask": src_mask, "key_padding_mask": src_key_padding_mask, "cache": cache}
        x = self.check(x, src_mask, src_key_padding_mask, cache)  # before any child runs: an error leaves every cache as it was
        if self.norm_first:
            h = x + self._attn(self.norm1(x), masks)
            y = h + self._ff(self.norm2(h), self.dropout2)
        else:
            h = self.norm1(x + self._attn(x, masks))
            y = self.norm2(h + self._ff(h, self.dropout2))
        self._save(None, out=y)  # the children hold what backward needs
        return y

    def check(self, x, src_mask=None, src_key_padding_mask=None, cache=None):
        """Validate the input, masks and cache (raising, naming this layer,
        before anything runs); returns x, cast under mixed precision."""
        x = self._check_stream(x)
        past = self._check_cache(cache, x)
        self.self_attn.check_masks(x, src_key_padding_mask, src_mask, past=past)
        return x

    def backward(self, dy):
        self._take_cache(dy)
        if self.norm_first:
            dh = dy + self.norm2.backward(self._ff_backward(dy, self.dropout2))
            return dh + self.norm1.backward(self.self_attn.backward(self.dropout1.backward(dh)))
        dz2 = self.norm2.backward(dy)  # z2 = h + ff(h)
        dh = dz2 + self._ff_backward(dz2, self.dropout2)
        dz1 = self.norm1.backward(dh)  # z1 = x + attn(x)
        return dz1 + self.self_attn.backward(self.dropout1.backward(dz1))


class TransformerDecoderLayer(_TransformerLayer):
    """A Transformer decoder layer: self-attention over the target,
    cross-attention from the target to a memory (the encoder's output) and a
    feed-forward block, each with a residual connection and layer
    normalisation (PyTorch's ``nn.TransformerDecoderLayer`` with
    ``batch_first=True``).

        norm_first=True (pre-LN):   h1 = x + sa(norm1(x))
                                    h2 = h1 + ca(norm2(h1), m)
                                    y = h2 + ff(norm3(h2))
        norm_first=False (post-LN): h1 = norm1(x + sa(x))
                                    h2 = norm2(h1 + ca(h1, m))
                                    y = norm3(h2 + ff(h2))

    Backward returns (dx, dm); the memory's gradient is cross-attention's
    alone, dm = [dk dv] [W_k W_v] (see :class:`MultiheadAttention`).

    Args: as :class:`TransformerEncoderLayer`; ``causal`` makes the
    self-attention causal (what a decoder trained with teacher forcing
    needs), without building a tgt_mask.

    Call: ``forward(tgt, memory, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None)``, as
    PyTorch's: the tgt masks go to self_attn, the memory masks to
    multihead_attn, as ``attn_mask`` and ``key_padding_mask``.

    Shape: tgt (N, Lt, E), memory (N, Lm, E) → y (N, Lt, E).  Children and
    parameters carry PyTorch's names (self_attn, multihead_attn, linear1,
    linear2, norm1, norm2, norm3).
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-5,
                 norm_first=False, bias=True, causal=False, dtype=np.float32):
        super().__init__()
        self.norm_first = bool(norm_first)
        self.self_attn = MultiheadAttention(d_model, nhead, bias=bias, causal=causal, dropout=dropout, dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, bias=bias, dropout=dropout, dtype=dtype)
        self.d_model = self.self_attn.embed_dim
        self._build_ff(d_model, dim_feedforward, dropout, activation, bias, dtype)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def check(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
              memory_key_padding_mask=None, cache=None):
        """Validate the inputs, masks and cache (raising, naming this layer,
        before anything runs); returns (tgt, memory), cast under mixed precision."""
        tgt = self._check_stream(tgt, "tgt")
        memory = self._check_stream(memory, "memory", batch=tgt.shape[0])
        past = self._check_cache(cache, tgt)
        if cache is not None:
            cache._lookup(self.multihead_attn, tgt.shape[0], memory.shape[1])
        self.self_attn.check_masks(tgt, tgt_key_padding_mask, tgt_mask, past=past)
        self.multihead_attn.check_masks(tgt, memory_key_padding_mask, memory_mask, key=memory)
        return tgt, memory

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, cache=None):
        x, m = self.check(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask, cache)
        sa = {"attn_mask": tgt_mask, "key_padding_mask": tgt_key_padding_mask, "cache": cache}
        ca = {"attn_mask": memory_mask, "key_padding_mask": memory_key_padding_mask, "cache": cache}
        if self.norm_first:
            h = x + self.dropout1(self.self_attn(self.norm1(x), **sa))
            h = h + self.dropout2(self.multihead_attn(self.norm2(h), m, **ca))
            y = h + self._ff(self.norm3(h), self.dropout3)
        else:
            h = self.norm1(x + self.dropout1(self.self_attn(x, **sa)))
            h = self.norm2(h + self.dropout2(self.multihead_attn(h, m, **ca)))
            y = self.norm3(h + self._ff(h, self.dropout3))
        self._save(None, out=y)  # the children hold what backward needs
        return y

    def backward(self, dy):
        """Returns (dtgt, dmemory)."""
        self._take_cache(dy)
        if self.norm_first:
            dh2 = dy + self.norm3.backward(self._ff_backward(dy, self.dropout3))
            dq, dm = self.multihead_attn.backward(self.dropout2.backward(dh2))
            dh1 = dh2 + self.norm2.backward(dq)
            return dh1 + self.norm1.backward(self.self_attn.backward(self.dropout1.backward(dh1))), dm
        dz3 = self.norm3.backward(dy)  # z3 = h2 + ff(h2)
        dh2 = dz3 + self._ff_backward(dz3, self.dropout3)
        dz2 = self.norm2.backward(dh2)  # z2 = h1 + ca(h1, m)
        dq, dm = self.multihead_attn.backward(self.dropout2.backward(dz2))
        dz1 = self.norm1.backward(dz2 + dq)  # z1 = x + sa(x)
        return dz1 + self.self_attn.backward(self.dropout1.backward(dz1)), dm


class _TransformerStack(Layer):
    """num_layers deep copies of a layer, as PyTorch's stacks make them
    (children ``layers.0``, ``layers.1``, ...), and an optional final norm.

    ``checkpoint=True`` keeps only each layer's inputs (and the random
    state) in forward and recomputes the layer's forward in backward (see
    :class:`lamina.Checkpoint`): the attention weights, N·H·L² values a
    layer, live for one layer at a time.  Gradients are unchanged, bit for
    bit; the state_dict keys too."""

    def __init__(self, layer, num_layers, norm, checkpoint, kind):
        super().__init__()
        if not isinstance(layer, kind):
            raise TypeError(f"{type(self).__name__}: expected a {kind.__name__}, received {type(layer).__name__}")
        n = positive_int(num_layers, type(self).__name__, "num_layers")
        if norm is not None and not isinstance(norm, Layer):
            raise TypeError(f"{type(self).__name__}: expected norm as a Layer or None, received {type(norm).__name__}")
        self.layers = Sequential(*[copy.deepcopy(layer) for _ in range(n)])
        self.norm = norm
        self.num_layers = n
        self.checkpoint = bool(checkpoint)

    def _run(self, x, *args, **kwargs):
        """Every layer, then the norm; returns the output and what backward needs."""
        keep = self.checkpoint and is_grad_enabled()
        saved = []
        for layer in self.layers:
            if keep:
                x, inputs = call_keeping_inputs(layer, x, *args, **kwargs)
                saved.append(inputs)
            else:
                x = layer(x, *args, **kwargs)
        if self.norm is not None:
            x = self.norm(x)
        self._save(saved or None, out=x)
        return x

    def _backward_layers(self, dy):
        """Yields each layer's backward, last layer first (recomputing its
        forward first when checkpointed)."""
        saved = self._take_cache(dy)
        if self.norm is not None:
            dy = self.norm.backward(dy)
        for i in reversed(range(self.num_layers)):
            layer = self.layers[i]
            grads = layer.backward(dy) if saved is None else backward_recomputing(layer, saved[i], dy)
            dy = grads if not isinstance(grads, tuple) else grads[0]
            yield grads

    def extra_repr(self):
        return f"num_layers={self.num_layers}" + (", checkpoint=True" if self.checkpoint else "")


class TransformerEncoder(_TransformerStack):
    """A stack of encoder layers with an optional final norm (PyTorch's
    ``nn.TransformerEncoder``): each layer starts as a copy of
    ``encoder_layer``.  ``forward(src, mask=None, src_key_padding_mask=None)``
    passes the masks to every layer, which ``Sequential`` cannot.
    ``checkpoint=True`` recomputes each layer's forward in backward, keeping
    only its input: the same gradients, bit for bit, for less memory."""

    def __init__(self, encoder_layer, num_layers, norm=None, checkpoint=False):
        super().__init__(encoder_layer, num_layers, norm, checkpoint, TransformerEncoderLayer)

    def forward(self, src, mask=None, src_key_padding_mask=None, cache=None):
        x = self.layers[0].check(src, mask, src_key_padding_mask, cache)  # before any layer runs
        return self._run(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, cache=cache)

    def backward(self, dy):
        for dy in self._backward_layers(dy):
            pass
        return dy


class TransformerDecoder(_TransformerStack):
    """A stack of decoder layers with an optional final norm (PyTorch's
    ``nn.TransformerDecoder``); every layer reads the same memory, so its
    gradient is the sum of theirs.  ``forward`` takes the decoder layer's
    arguments; ``backward(dy)`` returns (dtgt, dmemory).
    ``checkpoint=True`` recomputes each layer's forward in backward, keeping
    only its inputs: the same gradients, bit for bit, for less memory."""

    def __init__(self, decoder_layer, num_layers, norm=None, checkpoint=False):
        super().__init__(decoder_layer, num_layers, norm, checkpoint, TransformerDecoderLayer)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, cache=None):
        masks = {"tgt_mask": tgt_mask, "memory_mask": memory_mask, "tgt_key_padding_mask": tgt_key_padding_mask,
                 "memory_key_padding_mask": memory_key_padding_mask}
        x, m = self.layers[0].check(tgt, memory, **masks, cache=cache)  # before any layer runs
        return self._run(x, m, **masks, cache=cache)

    def backward(self, dy):
        dmemory = None
        for dy, dm in self._backward_layers(dy):
            dmemory = dm if dmemory is None else dmemory + dm
        return dy, dmemory


class Transformer(Layer):
    """An encoder-decoder Transformer (PyTorch's ``nn.Transformer`` with
    ``batch_first=True``): a :class:`TransformerEncoder` and a
    :class:`TransformerDecoder`, each with a final LayerNorm, with PyTorch's
    names (``encoder.layers.0...``, ``decoder.norm``) and initialisation
    (Xavier-uniform on every matrix), so its weights load one to one.

        memory = encoder(src);   y = decoder(tgt, memory)

    Backward runs the decoder's, whose memory gradient runs back through
    the encoder: ``backward(dy)`` returns (dsrc, dtgt).

    Args: PyTorch's (``d_model=512, nhead=8, num_encoder_layers=6,
    num_decoder_layers=6, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-5, norm_first=False, bias=True``),
    ``causal``: the decoder's self-attention is causal without a tgt_mask;
    ``checkpoint``: both stacks recompute each layer's forward in backward.

    Call: ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None)``, as PyTorch's; every input and mask is
    checked before anything runs.

    Shape: src (N, Ls, E), tgt (N, Lt, E) → y (N, Lt, E).
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation="relu", layer_norm_eps=1e-5, norm_first=False, bias=True, causal=False,
                 checkpoint=False, dtype=np.float32):
        super().__init__()
        common = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                      layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias, dtype=dtype)
        self.encoder = TransformerEncoder(TransformerEncoderLayer(d_model, nhead, **common), num_encoder_layers,
                                          norm=LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype),
                                          checkpoint=checkpoint)
        self.decoder = TransformerDecoder(TransformerDecoderLayer(d_model, nhead, causal=causal, **common),
                                          num_decoder_layers,
                                          norm=LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype),
                                          checkpoint=checkpoint)
        self.d_model, self.nhead = d_model, nhead
        self.reset_parameters()

    def reset_parameters(self):
        for p in self.parameters():
            if p.data.ndim > 1:
                init.xavier_uniform_(p)

    @staticmethod
    def generate_square_subsequent_mask(size, dtype=np.float32, xp=np):
        """PyTorch's causal mask: (size, size), -inf above the diagonal, 0 elsewhere."""
        return xp.triu(xp.full((size, size), -np.inf, dtype=dtype), k=1)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None):
        first = self.encoder.layers[0]
        src = first._check_stream(src, "src")
        first.self_attn.check_masks(src, src_key_padding_mask, src_mask)
        dec = {"tgt_mask": tgt_mask, "memory_mask": memory_mask, "tgt_key_padding_mask": tgt_key_padding_mask,
               "memory_key_padding_mask": memory_key_padding_mask}
        self.decoder.layers[0].check(tgt, src, **dec)  # the memory will have src's shape
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask)
        y = self.decoder(tgt, memory, **dec)
        self._save(None, out=y)
        return y

    def backward(self, dy):
        """Returns (dsrc, dtgt)."""
        self._take_cache(dy)
        dtgt, dmemory = self.decoder.backward(dy)
        return self.encoder.backward(dmemory), dtgt

    def extra_repr(self):
        return (f"d_model={self.d_model}, nhead={self.nhead}, num_encoder_layers={self.encoder.num_layers}, "
                f"num_decoder_layers={self.decoder.num_layers}")
