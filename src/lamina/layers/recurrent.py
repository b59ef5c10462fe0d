"""Recurrent layers: RNN, LSTM and GRU, with PyTorch's parameter names,
layouts, gate order and initialisation (``nn.RNN``, ``nn.LSTM``,
``nn.GRU``), so their state_dicts load one to one.

Each layer l and direction runs one cell over time.  With G gate blocks of
H rows (RNN 1, LSTM 4, GRU 3), weight_ih is (G·H, in) and weight_hh
(G·H, H).  The input's share of every step is one GEMM over the whole
sequence, the hidden state's one GEMM a step:

    gx = x W_ihᵀ + b_ih           (L, N, G·H), all steps at once
    gh_t = h_{t-1} W_hhᵀ + b_hh    (N, G·H), step by step

Backward runs the steps in reverse.  A step's cell backward turns the
gradient of its output h_t (from the layer above, plus the next step's
dh_{t-1}) into the gradients of its pre-activations: dgx_t for the input's
share, dgh_t for the hidden state's (the same array except in GRU), and
the gradient it passes back, dh_{t-1} = (direct part) + dgh_t W_hh.  Then,
over the whole sequence at once:

    dW_ih += dgxᵀ x,   db_ih += Σ dgx,   dx = dgx W_ih
    dW_hh += dghᵀ h_prev,   db_hh += Σ dgh

Each cell's forward and backward are given below (``_RNNCell``,
``_LSTMCell``, ``_GRUCell``); the LSTM and GRU steps run in
``lamina.ops`` (one C++ pass per step on the CPU, the NumPy/CuPy
reference in ``lamina/ops/reference.py`` otherwise); docs/recurrent.md
derives them.
"""

import math

import numpy as np

from .. import backend, init, ops
from ..errors import DeviceError, DTypeError, ShapeError
from ..module import Layer, Parameter, _describe, is_grad_enabled
from ._utils import positive_int


def _received(value):
    """What was passed where a pair of arrays was expected, for an error message."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return _describe(value)


class _RNNCell:
    """h_t = act(a_t),  a_t = gx_t + gh_t  (act: tanh or ReLU).

    Backward: da = dh ⊙ act'(a) = dh ⊙ (1 - h_t²) for tanh, dh ⊙ [h_t > 0]
    for ReLU; dgx = dgh = da; no direct path to h_{t-1}.
    Saves nothing beyond the outputs h_t.
    """

    gates = 1

    def __init__(self, nonlinearity):
        self.nonlinearity = nonlinearity

    def forward(self, xp, gx, gh, h, c, saved, t):
        a = gx + gh
        h = xp.tanh(a) if self.nonlinearity == "tanh" else xp.maximum(a, 0)
        return h, None

    def backward(self, xp, dh, dc, h, h_prev, c_prev, saved, t):
        da = dh * (1 - h * h) if self.nonlinearity == "tanh" else dh * (h > 0)
        return da, da, None, None


class _LSTMCell:
    """Gates in PyTorch's order i, f, g, o (rows [0:H], [H:2H], [2H:3H], [3H:4H]):

        i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o)
        c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

    Backward, with dc the gradient of c_t from step t+1:

        dc ← dc + dh ⊙ o ⊙ (1 - tanh²(c_t))
        da_i = dc ⊙ g ⊙ i(1-i),  da_f = dc ⊙ c_{t-1} ⊙ f(1-f)
        da_g = dc ⊙ i ⊙ (1-g²),  da_o = dh ⊙ tanh(c_t) ⊙ o(1-o)
        dc_{t-1} = dc ⊙ f;  dgx = dgh = da

    Saves the four activated gates of each step (L, N, 4H) and c_t (L, N, H).
    """

    gates = 4

    def forward(self, xp, gx, gh, h, c, saved, t):
        h = ops.lstm_cell_forward(gx, gh, c, saved["gates"][t], saved["c"][t])
        return h, saved["c"][t]

    def backward(self, xp, dh, dc, h, h_prev, c_prev, saved, t):
        da, dc_prev = ops.lstm_cell_backward(dh, dc, saved["gates"][t], saved["c"][t], c_prev)
        return da, da, None, dc_prev


class _GRUCell:
    """Gates in PyTorch's order r, z, n:

        r = σ(gx_r + gh_r),  z = σ(gx_z + gh_z),  n = tanh(gx_n + r ⊙ gh_n)
        h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    gh_n = h_{t-1} W_hnᵀ + b_hn sits inside the reset gate, so the input's
    and the hidden state's pre-activation gradients differ in the n block.
    Backward:

        dn = dh ⊙ (1 - z),  da_n = dn ⊙ (1 - n²)
        da_r = da_n ⊙ gh_n ⊙ r(1-r),  da_z = dh ⊙ (h_{t-1} - n) ⊙ z(1-z)
        dgx = [da_r, da_z, da_n],  dgh = [da_r, da_z, da_n ⊙ r]
        dh_{t-1} = dh ⊙ z + dgh W_hh

    Saves r, z, n (L, N, 3H) and gh_n (L, N, H).
    """

    gates = 3

    def forward(self, xp, gx, gh, h, c, saved, t):
        return ops.gru_cell_forward(gx, gh, h, saved["gates"][t], saved["ghn"][t]), None

    def backward(self, xp, dh, dc, h, h_prev, c_prev, saved, t):
        return ops.gru_cell_backward(dh, saved["gates"][t], saved["ghn"][t], h_prev) + (None,)


class _RNNBase(Layer):
    """The machinery the three recurrent layers share: parameters, input and
    state validation, the layers and directions, the caches and backward.

    Args:
        input_size: features of each step of the input.
        hidden_size: H, features of the hidden state.
        num_layers: stacked recurrent layers; layer l > 0 reads layer l-1's output.
        bias: learn b_ih and b_hh.
        batch_first: the input and output are (N, L, features); else (L, N, features).
            True by default, as lamina's other sequence layers (PyTorch's default is False).
        dropout: dropout probability on each layer's output except the last (training only).
        bidirectional: also run each layer from the last step to the first; the two
            directions' outputs are concatenated (2H features).
        return_sequences: forward returns the last layer's output at every step
            (True), or only its final hidden state (N, D·H), the directions concatenated.
        return_state: forward also returns the final state, as PyTorch does:
            ``(y, h_n)``, or ``(y, (h_n, c_n))`` for LSTM.
        proj_size: LSTM only: P > 0 projects each step's h_t to P features
            (Sak et al., 2014, PyTorch's ``proj_size``): h_t = W_hr (o ⊙ tanh(c_t)),
            so the hidden state, the output and the next layer's input have
            P features while c_t keeps H; 0 (default) for none.
        dtype: parameter dtype.

    Call: ``forward(x, hx=None, lengths=None)``.  ``hx`` is the initial state,
    zeros if None: h0 of shape (num_layers·D, N, H) for RNN and GRU, the pair
    (h0, c0) for LSTM.  ``lengths`` (N integers in [1, L]: a list, NumPy or
    CuPy array) runs a padded batch of shorter sequences as PyTorch's packed
    sequences do: sequence i's steps from lengths[i] on are padding, never
    read; its outputs there are zeros, its final state is that of its last
    real step, and the reverse direction starts at that step.  ``backward(dy, dstate=None)``: ``dstate`` is the
    gradient of the returned final state (same structure; None for zeros);
    it returns dx, or ``(dx, dhx)`` when forward was given ``hx``.

    Shape (batch_first):
        x: (N, L, input_size) → y: (N, L, D·H), or (N, D·H) without return_sequences.
        h_n (and c_n): (num_layers·D, N, H), layer-major, forward direction first.
        With proj_size P: y has D·P features and h_n (num_layers·D, N, P).

    Parameters, for each layer l and suffix "" (and "_reverse" when
    bidirectional), PyTorch's names, layouts and U(-1/√H, 1/√H) initialisation:
        weight_ih_l{l}: (G·H, in), in = input_size for l = 0, else D·H;
        weight_hh_l{l}: (G·H, H); bias_ih_l{l}, bias_hh_l{l}: (G·H,).
        With proj_size P: weight_hh_l{l} (4H, P), in = D·P for l > 0, and
        weight_hr_l{l}: (P, H).
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0.0,
                 bidirectional=False, return_sequences=True, return_state=False, proj_size=0, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.input_size = positive_int(input_size, name, "input_size")
        self.hidden_size = positive_int(hidden_size, name, "hidden_size")
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) or not 0 <= proj_size < hidden_size:
            raise ValueError(f"{name}: expected proj_size an int in [0, hidden_size) = [0, {self.hidden_size}), "
                             f"received {proj_size!r}")
        if proj_size and not isinstance(cell, _LSTMCell):
            raise ValueError(f"{name}: proj_size applies to LSTM only, received {proj_size}")
        self.proj_size = int(proj_size)
        self.num_layers = positive_int(num_layers, name, "num_layers")
        if not (isinstance(dropout, (int, float, np.floating)) and 0.0 <= float(dropout) < 1.0):
            raise ValueError(f"{name}: expected dropout in [0, 1), received {dropout!r}")
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self._cell = cell
        g, h, hout = cell.gates, self.hidden_size, self.output_size
        for layer in range(self.num_layers):
            fan_in = self.input_size if layer == 0 else self.num_directions * hout
            for suffix in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{suffix}", Parameter(np.empty((g * h, fan_in), dtype=dtype)))
                setattr(self, f"weight_hh_l{layer}{suffix}", Parameter(np.empty((g * h, hout), dtype=dtype)))
                if self.bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", Parameter(np.empty((g * h,), dtype=dtype)))
                    setattr(self, f"bias_hh_l{layer}{suffix}", Parameter(np.empty((g * h,), dtype=dtype)))
                if self.proj_size:
                    setattr(self, f"weight_hr_l{layer}{suffix}", Parameter(np.empty((hout, h), dtype=dtype)))
        self.reset_parameters()

    @property
    def output_size(self):
        """The features of h_t: proj_size when projecting, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse")[: self.num_directions]

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _params(self, layer, suffix):
        """(W_ih, W_hh, b_ih, b_hh, W_hr) of one layer and direction; biases
        None without bias, W_hr None without projection."""
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        return tuple(getattr(self, f"{kind}_l{layer}{suffix}", None) for kind in kinds)

    # -- validation ---------------------------------------------------------

    def _state_shape(self, n, cell=False):
        """The shape of h0 and h_n, or with ``cell`` of c0 and c_n (which keep
        hidden_size features under a projection)."""
        return (self.num_layers * self.num_directions, n, self.hidden_size if cell else self.output_size)

    def _state_names(self):
        return ("h0", "c0") if isinstance(self._cell, _LSTMCell) else ("h0",)

    def _check_state(self, hx, n, what):
        """hx as a tuple of arrays (h0[, c0]), each validated; ``what`` is
        "initial state" or "state gradient"."""
        names = self._state_names()
        if isinstance(self._cell, _LSTMCell):
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"{self._label()}: expected the {what} as a pair (h, c), received {_received(hx)}")
            parts = tuple(hx)
        else:
            parts = (hx,)
        checked = []
        for name, a in zip(names, parts):
            shape = self._state_shape(n, cell=name == "c0")
            size = "proj_size" if self.proj_size and name == "h0" else "hidden_size"
            dims = [(0, shape[0], "num_layers * num_directions"), (1, n, "batch"), (2, shape[2], size)]
            checked.append(self._check_input(a, what=f"{name} ({what})", ndim=3, dim=dims))
        return tuple(checked)

    def _check_state_grad(self, dstate):
        """dstate as a tuple (dh_n[, dc_n]) of arrays or None, checked against
        the cached forward before the cache is taken (so an error leaves the
        layer unchanged)."""
        if isinstance(self._cell, _LSTMCell):
            if not (isinstance(dstate, (tuple, list)) and len(dstate) == 2):
                raise TypeError(f"{self._label()}: expected the state gradient as a pair (dh_n, dc_n), received "
                                f"{_received(dstate)}")
            parts = tuple(dstate)
        else:
            parts = (dstate,)
        if self._cache is None:
            return parts  # _take_cache raises its own error
        (_, _, n, _), _, device = self._cache
        for name, a in zip(("dh_n", "dc_n"), parts):
            if a is None:
                continue
            shape = self._state_shape(n, cell=name == "dc_n")
            if not backend.is_array(a) or not (a.dtype.kind == "f" or backend.is_low_precision(a.dtype)):
                raise DTypeError(f"{self._label()}: expected {name} as a floating-point array, received {_describe(a)}")
            if backend.device_of(a) != device:
                raise DeviceError(f"{self._label()}: expected {name} on {device}, received it on {backend.device_of(a)}")
            if tuple(a.shape) != shape:
                raise ShapeError(f"{self._label()}: expected {name} of shape {shape}, received {tuple(a.shape)}")
        return parts

    # -- forward ------------------------------------------------------------

    def _check_lengths(self, lengths, length, n, xp):
        """The (L, N, 1) bool mask of real steps, step t of sequence i being
        real when t < lengths[i]."""
        if backend.is_cupy_array(lengths):
            lengths = lengths.get()  # one small copy to the host, to check the values
        try:
            lens = np.asarray(lengths)
        except Exception:  # noqa: BLE001 - anything that is not an array of numbers
            lens = None
        if lens is None or lens.dtype.kind not in "iu":
            raise DTypeError(f"{self._label()}: expected lengths as N integers, received {_received(lengths)}")
        if lens.shape != (n,):
            raise ShapeError(f"{self._label()}: expected lengths of shape ({n},) (one per sequence), "
                             f"received {lens.shape}")
        if lens.min() < 1 or lens.max() > length:
            raise ValueError(f"{self._label()}: expected lengths in [1, {length}] (the input's steps), received "
                             f"values from {lens.min()} to {lens.max()}")
        return xp.asarray(np.arange(length)[:, None] < lens[None, :])[:, :, None]

    def forward(self, x, hx=None, lengths=None):
        x = self._check_input(x, ndim=3, dim=[(2, self.input_size, "input_size")])
        seq = x.transpose(1, 0, 2) if self.batch_first else x  # time-major (L, N, F)
        length, n = seq.shape[0], seq.shape[1]
        if length == 0 or n == 0:
            raise ShapeError(f"{self._label()}: expected at least one step and one sequence, received shape {tuple(x.shape)}")
        state = None if hx is None else self._check_state(hx, n, "initial state")
        xp = backend.get_array_module(x)
        real = None if lengths is None else self._check_lengths(lengths, length, n, xp)
        cdt = x.dtype  # the compute dtype; the cell's arithmetic runs in float32 at least
        work = np.float32 if backend.is_low_precision(cdt) else cdt
        lstm = isinstance(self._cell, _LSTMCell)
        hh, ho, nd = self.hidden_size, self.output_size, self.num_directions
        h_n = xp.empty(self._state_shape(n), dtype=cdt)
        c_n = xp.empty(self._state_shape(n, cell=True), dtype=work) if lstm else None
        # padding never reaches the arithmetic (whatever it holds, NaN included)
        inp = xp.ascontiguousarray(seq) if real is None else xp.where(real, seq, 0).astype(cdt, copy=False)
        caches = []
        for layer in range(self.num_layers):
            out = xp.empty((length, n, nd * ho), dtype=cdt)
            directions = []
            for d, suffix in enumerate(self._suffixes()):
                k = layer * nd + d
                h0 = xp.zeros((n, ho), dtype=cdt) if state is None else state[0][k]
                c0 = None if not lstm else (xp.zeros((n, hh), dtype=work) if state is None else state[1][k].astype(work))
                saved, h_last, c_last = self._run_direction(xp, inp, out[:, :, d * ho:(d + 1) * ho], h0, c0, layer,
                                                            suffix, reverse=d == 1, work=work, real=real)
                h_n[k] = h_last
                if lstm:
                    c_n[k] = c_last
                directions.append((h0, c0, saved))
            nxt, mask = out, None
            if self.training and self.dropout and layer < self.num_layers - 1:
                nxt, mask = ops.dropout_forward(out, self.dropout)
            caches.append((inp, out, mask, directions))  # inp: (L, N, F) this layer's input; out: (L, N, D·H)
            inp = nxt
        if self.return_sequences:
            y = xp.ascontiguousarray(out.transpose(1, 0, 2) if self.batch_first else out)
        else:
            y = xp.ascontiguousarray(h_n[-nd:].transpose(1, 0, 2).reshape(n, nd * ho))
        if is_grad_enabled():
            self._save(caches, hx is not None, n, real, out=y)
        if not self.return_state:
            return y
        return y, ((h_n, c_n.astype(cdt, copy=False)) if lstm else h_n)

    def _run_direction(self, xp, inp, out, h, c, layer, suffix, reverse, work, real=None):
        """Run one layer's cell over time in one direction, writing h_t into
        ``out`` (L, N, H); returns (what backward needs, h_n, c_n).

        With ``real`` (L, N, 1), a padding step keeps the state it was given
        (c_t = c_{t-1} in ``saved``, h in the loop) and writes zeros to out."""
        w_ih, w_hh, b_ih, b_hh, w_hr = self._params(layer, suffix)
        length, n, f = inp.shape
        gh_width = self._cell.gates * self.hidden_size
        bias_ih = None if b_ih is None else self._compute(b_ih)
        gx = ops.linear_forward(inp.reshape(length * n, f), self._compute(w_ih), bias_ih)
        gx = gx.reshape(length, n, gh_width).astype(work, copy=False)  # the input's share of every step, one GEMM
        whh, bhh = self._compute(w_hh), None if b_hh is None else self._compute(b_hh)
        whr = None if w_hr is None else self._compute(w_hr).astype(work, copy=False)
        keep = is_grad_enabled()  # without gradients, one step's slot is reused
        slots = length if keep else 1
        saved = {"gates": xp.empty((slots, n, gh_width), dtype=work)}
        if isinstance(self._cell, _LSTMCell):
            saved["c"] = xp.empty((slots, n, self.hidden_size), dtype=work)  # c_t of every step
        if isinstance(self._cell, _GRUCell):
            saved["ghn"] = xp.empty((slots, n, self.hidden_size), dtype=work)  # gh_n of every step
        if whr is not None:
            saved["hpre"] = xp.empty((slots, n, self.hidden_size), dtype=work)  # o ⊙ tanh(c_t), before W_hr
        for t in (range(length - 1, -1, -1) if reverse else range(length)):
            gh = ops.linear_forward(h, whh, bhh).astype(work, copy=False)  # (N, G·H)
            if real is not None and c is not None and not keep:
                c = c.copy()  # the one slot is about to be overwritten, and a padding step keeps c
            h_work, c_new = self._cell.forward(xp, gx[t], gh, h.astype(work, copy=False), c, saved, t if keep else 0)
            if whr is not None:  # the projection: h_t = (o ⊙ tanh(c_t)) W_hrᵀ
                saved["hpre"][t if keep else 0] = h_work
                h_work = ops.matmul(h_work, whr.T)
            h_new = h_work.astype(out.dtype, copy=False)
            if real is None:
                h, c = h_new, c_new
                out[t] = h
            else:
                h = xp.where(real[t], h_new, h)
                out[t] = xp.where(real[t], h_new, 0)
                if c_new is not None:
                    c_new[...] = xp.where(real[t], c_new, c)
                c = c_new
        return saved, h, c

    # -- backward -----------------------------------------------------------

    def backward(self, dy, dstate=None):
        return self._backward(dy, dstate, need_dx=True)

    def backward_parameters(self, dy, dstate=None):
        """:meth:`Layer.backward_parameters`: parameter gradients only; the
        first layer's input-gradient GEMM is skipped."""
        self._backward(dy, dstate, need_dx=False)

    def _backward(self, dy, dstate, need_dx):
        dh_parts, dc_parts = (None, None) if dstate is None else (self._check_state_grad(dstate) + (None,))[:2]
        caches, had_hx, n, real = self._take_cache(dy)
        dy = self._compute_grad(dy)
        xp = backend.get_array_module(dy)
        lstm = isinstance(self._cell, _LSTMCell)
        ho, nd, nl = self.output_size, self.num_directions, self.num_layers
        out_top = caches[-1][1]
        length, cdt = out_top.shape[0], out_top.dtype
        work = np.float32 if backend.is_low_precision(cdt) else cdt
        dh_n = xp.zeros(self._state_shape(n), dtype=work) if dh_parts is None else dh_parts.astype(work)
        dc_n = (xp.zeros(self._state_shape(n, cell=True), dtype=work) if dc_parts is None else dc_parts.astype(work)) if lstm else None
        if self.return_sequences:
            dout = (dy.transpose(1, 0, 2) if self.batch_first else dy).astype(work)  # (L, N, D·H)
            if real is not None:
                dout = xp.where(real, dout, 0)  # the outputs at padding are constant zeros
        else:
            dout = xp.zeros((length, n, nd * ho), dtype=work)
            dh_n[-nd:] += dy.reshape(n, nd, ho).transpose(1, 0, 2).astype(work)
        dh0 = xp.empty(self._state_shape(n), dtype=work)
        dc0 = xp.empty(self._state_shape(n, cell=True), dtype=work) if lstm else None
        dinp = None
        for layer in range(nl - 1, -1, -1):
            inp, out, mask, directions = caches[layer]
            want_dinp = layer > 0 or need_dx
            dinp = None
            for d, suffix in enumerate(self._suffixes()):
                k = layer * nd + d
                h0, c0, saved = directions[d]
                g = self._direction_backward(xp, dout[:, :, d * ho:(d + 1) * ho], dh_n[k], None if not lstm else dc_n[k],
                                             inp, out[:, :, d * ho:(d + 1) * ho], h0, c0, saved, layer, suffix,
                                             reverse=d == 1, want_dinp=want_dinp, work=work, real=real)
                dinp_d, dh0[k], dc_first = g
                if lstm:
                    dc0[k] = dc_first
                if want_dinp:
                    dinp = dinp_d if dinp is None else dinp + dinp_d
            if layer > 0:
                dout = (dinp if mask is None else dinp * mask).astype(work, copy=False)
        dx = None
        if need_dx:
            dx = dinp.astype(cdt, copy=False)
            dx = xp.ascontiguousarray(dx.transpose(1, 0, 2) if self.batch_first else dx)
        if not had_hx:
            return dx
        dh0 = dh0.astype(cdt, copy=False)
        return dx, ((dh0, dc0.astype(cdt, copy=False)) if lstm else dh0)

    def _direction_backward(self, xp, dout, dh, dc, inp, out, h0, c0, saved, layer, suffix, reverse, want_dinp, work,
                            real=None):
        """One layer and direction: returns (dinp or None, dh0, dc0) and
        accumulates the direction's parameter gradients.

        dout (L, N, H): the gradient of this direction's outputs from above;
        out (L, N, H): its outputs h_t, from which h_{t-1} is read.
        real (L, N, 1) or None: at a padding step the state passed through
        unchanged, so its gradient does too, and the cell sees zeros (its
        pre-activation gradients there are 0).  out is zero at padding: the
        reverse direction's first real step reads h0 instead.
        """
        w_ih, w_hh, b_ih, b_hh, w_hr = self._params(layer, suffix)
        length, n, f = inp.shape
        whh = self._compute(w_hh).astype(work, copy=False)
        whr = None if w_hr is None else self._compute(w_hr).astype(work, copy=False)
        dproj = None if whr is None else xp.empty((length, n, whr.shape[0]), dtype=work)  # dh_t before W_hr, for dW_hr
        gru = isinstance(self._cell, _GRUCell)
        dgx = xp.empty_like(saved["gates"])  # (L, N, G·H): gradients of the pre-activations, input's share
        dgh = xp.empty_like(dgx) if gru else dgx  # the hidden state's share (differs only in GRU)
        order = range(length) if reverse else range(length - 1, -1, -1)
        prev = (lambda t: t + 1) if reverse else (lambda t: t - 1)  # the step that ran before t
        for t in order:
            tp = prev(t)
            first = tp < 0 or tp >= length
            h_prev = h0 if first else out[tp] if real is None or not reverse else xp.where(real[tp], out[tp], h0)
            h_prev = h_prev.astype(work, copy=False)
            c_prev = None if c0 is None else (c0 if first else saved["c"][tp])
            dh = dh + dout[t]
            dh_pass = dc_pass = None
            if real is not None:  # padding: the state's gradient passes by the cell
                dh_pass, dh = xp.where(real[t], 0, dh), xp.where(real[t], dh, 0)
                if dc is not None:
                    dc_pass, dc = xp.where(real[t], 0, dc), xp.where(real[t], dc, 0)
            dh_cell = dh
            if whr is not None:  # through the projection: d(o ⊙ tanh c_t) = dh_t W_hr
                dproj[t] = dh
                dh_cell = ops.matmul(dh, whr)
            dgx_t, dgh_t, dh_direct, dc = self._cell.backward(xp, dh_cell, dc, out[t].astype(work, copy=False), h_prev,
                                                              c_prev, saved, t)
            dgx[t] = dgx_t
            if gru:
                dgh[t] = dgh_t
            dh = ops.matmul(dgh_t, whh)  # dh_{t-1} through W_hh
            if dh_direct is not None:
                dh = dh + dh_direct
            if dh_pass is not None:
                dh = dh + dh_pass
            if dc_pass is not None:
                dc = dc + dc_pass
        # h_{t-1} of every step, in time order: h0 then the outputs, shifted the way the direction ran
        h0c = h0.astype(out.dtype, copy=False)[None]
        h_prev_seq = xp.concatenate([out[1:], h0c]) if reverse else xp.concatenate([h0c, out[:-1]])
        if reverse and real is not None:  # a sequence's last real step follows h0, not the padding after it
            h_prev_seq = xp.where(xp.concatenate([real[1:], xp.zeros_like(real[:1])]), h_prev_seq, h0c)
        cdt = out.dtype
        rows = length * n
        dgx2 = dgx.reshape(rows, -1).astype(cdt, copy=False)
        dgh2 = dgx2 if not gru else dgh.reshape(rows, -1).astype(cdt, copy=False)
        dinp, dw_ih, db_ih = ops.linear_backward(dgx2, inp.reshape(rows, f), self._compute(w_ih), need_dx=want_dinp,
                                                 need_bias=False)
        w_ih.accumulate(dw_ih, owned=True)
        w_hh.accumulate(ops.matmul(dgh2.T, h_prev_seq.reshape(rows, self.output_size)), owned=True)
        if w_hr is not None:  # dW_hr = Σ_t dh_tᵀ (o ⊙ tanh c_t)
            w_hr.accumulate(ops.matmul(dproj.reshape(rows, -1).T, saved["hpre"].reshape(rows, -1)).astype(cdt, copy=False),
                            owned=True)
        if b_ih is not None:
            b_ih.accumulate(dgx.reshape(rows, -1).sum(axis=0), owned=True)
            b_hh.accumulate(dgh.reshape(rows, -1).sum(axis=0), owned=True)
        if dinp is not None:
            dinp = dinp.reshape(length, n, f).astype(work, copy=False)
        return dinp, dh, dc

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if not self.batch_first:
            s += ", batch_first=False"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if not self.return_sequences:
            s += ", return_sequences=False"
        if self.return_state:
            s += ", return_state=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class RNN(_RNNBase):
    """Elman recurrent layer (PyTorch's ``nn.RNN``):
    h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh), act = tanh or ReLU.

    Backward: da_t = dh_t ⊙ act'(·) (1 - h_t² for tanh, [h_t > 0] for ReLU),
    dh_{t-1} = da_t W_hh; dW_ih += Σ da_tᵀ x_t, dW_hh += Σ da_tᵀ h_{t-1}.

    Args:
        nonlinearity: ``"tanh"`` (default) or ``"relu"``; the other arguments
            are :class:`_RNNBase`'s (see :class:`LSTM` for the full list).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: expected nonlinearity 'tanh' or 'relu', received {nonlinearity!r}")
        super().__init__(_RNNCell(nonlinearity), input_size, hidden_size, num_layers, **kwargs)

    @property
    def nonlinearity(self):
        return self._cell.nonlinearity

    def extra_repr(self):
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(_RNNBase):
    """Long short-term memory (PyTorch's ``nn.LSTM``).

    Per step, with gates in PyTorch's order i, f, g, o:
        [a_i a_f a_g a_o] = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh
        c_t = σ(a_f) ⊙ c_{t-1} + σ(a_i) ⊙ tanh(a_g),  h_t = σ(a_o) ⊙ tanh(c_t)

    With ``proj_size`` P, h_t = (σ(a_o) ⊙ tanh(c_t)) W_hrᵀ has P features;
    backward first takes dh_t through the projection (d(o ⊙ tanh c_t) =
    dh_t W_hr, dW_hr += dh_tᵀ (o ⊙ tanh c_t)), then through the cell.

    Backward through time is in :class:`_LSTMCell` and docs/recurrent.md.

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
        dropout=0.0, bidirectional=False, return_sequences=True,
        return_state=False, proj_size=0, dtype=float32: see :class:`_RNNBase`.

    Call: ``y = lstm(x)``, or ``y, (h_n, c_n) = lstm(x, (h0, c0))`` with
    ``return_state=True``; then ``dx, (dh0, dc0) = lstm.backward(dy, (dh_n, dc_n))``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, **kwargs):
        super().__init__(_LSTMCell(), input_size, hidden_size, num_layers, **kwargs)


class GRU(_RNNBase):
    """Gated recurrent unit (PyTorch's ``nn.GRU``), gates in the order r, z, n:
        r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr),  z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
        n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn)),  h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

    Backward through time is in :class:`_GRUCell` and docs/recurrent.md.
    Arguments and call as :class:`LSTM`, with a single state h.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, **kwargs):
        super().__init__(_GRUCell(), input_size, hidden_size, num_layers, **kwargs)
