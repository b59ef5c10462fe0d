"""RNN, LSTM, GRU and Embedding beyond the contract harness of test_layers.py
(which runs gradcheck and PyTorch parity of the output on each): initial and
final states against PyTorch and finite differences, errors, dropout between
layers, checkpointing, mixed precision, training, and the embedding table."""

import warnings
import zlib

import numpy as np
import pytest
from conftest import requires_cuda
from harness import assert_same_step, check_gpu_kernels_match_cpu, to_numpy

import lamina as lm
from lamina.testing import gradcheck

KINDS = ["RNN", "LSTM", "GRU"]


def _pair(torch, kind, n_in, hidden, layers, **kwargs):
    """A lamina layer (returning its state) and its PyTorch twin with the same weights."""
    t = getattr(torch.nn, kind)(n_in, hidden, layers, **kwargs)
    layer = getattr(lm, kind)(n_in, hidden, layers, return_state=True, **kwargs)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return layer, t


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first,bidirectional", [(True, False), (False, True), (True, True)])
def test_states_in_and_out_match_pytorch(kind, batch_first, bidirectional, torch, xp):
    rng = np.random.default_rng(zlib.crc32(repr((kind, batch_first, bidirectional)).encode()))
    n, length, d = 3, 5, 2 if bidirectional else 1
    layer, t = _pair(torch, kind, 4, 6, 2, batch_first=batch_first, bidirectional=bidirectional)
    layer.to("cpu" if xp is np else "cuda")
    x = rng.standard_normal((n, length, 4) if batch_first else (length, n, 4)).astype(np.float32)
    h0, c0, dh, dc = (rng.standard_normal((2 * d, n, 6)).astype(np.float32) for _ in range(4))
    tx, th, tc = (torch.from_numpy(a).requires_grad_() for a in (x, h0, c0))
    lstm = kind == "LSTM"
    ty, tstate = t(tx, (th, tc) if lstm else th)
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    loss = (ty * torch.from_numpy(dy)).sum()
    if lstm:
        loss = loss + (tstate[0] * torch.from_numpy(dh)).sum() + (tstate[1] * torch.from_numpy(dc)).sum()
    else:
        loss = loss + (tstate * torch.from_numpy(dh)).sum()
    loss.backward()

    y, state = layer(xp.asarray(x), (xp.asarray(h0), xp.asarray(c0)) if lstm else xp.asarray(h0))
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    if lstm:
        np.testing.assert_allclose(to_numpy(state[0]), tstate[0].detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_numpy(state[1]), tstate[1].detach().numpy(), rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(to_numpy(state), tstate.detach().numpy(), rtol=1e-5, atol=1e-5)
    dx, dstate0 = layer.backward(xp.asarray(dy), (xp.asarray(dh), xp.asarray(dc)) if lstm else xp.asarray(dh))
    np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    if lstm:
        np.testing.assert_allclose(to_numpy(dstate0[0]), th.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(to_numpy(dstate0[1]), tc.grad.numpy(), rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(to_numpy(dstate0), th.grad.numpy(), rtol=1e-4, atol=1e-5)
    tparams = dict(t.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(to_numpy(p.grad), tparams[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("kernels", ["lamina", "cupy"])
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_matches_cpu_on_both_kernel_sets(kind, kernels):
    """A stacked bidirectional layer on the GPU (its GEMMs on lamina's
    kernels or cuBLAS) against the same layer on the CPU, at a size that is
    not a multiple of any tile."""
    x = np.random.default_rng(4).standard_normal((5, 9, 13)).astype(np.float32)
    check_gpu_kernels_match_cpu(lambda: getattr(lm, kind)(13, 37, 2, bidirectional=True), x, kernels=kernels)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,hh", [(1, 1), (3, 7), (5, 33), (64, 257)])
def test_gpu_cell_kernels_match_the_reference(dtype, n, hh):
    """lamina._C_cuda's LSTM and GRU steps against the float64 references,
    outputs poisoned before each launch."""
    import cupy as cp

    from lamina import ops
    from lamina.ops import reference

    rng = np.random.default_rng(n + hh)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for gates_per_unit in (4, 3):
        gx, gh = (rng.standard_normal((n, gates_per_unit * hh)) * 2 for _ in range(2))
        state, dh, dc = (rng.standard_normal((n, hh)) for _ in range(3))
        gates64, extra64 = np.empty((n, gates_per_unit * hh)), np.empty((n, hh))
        g = {k: cp.asarray(v.astype(dtype)) for k, v in dict(gx=gx, gh=gh, state=state, dh=dh, dc=dc).items()}
        gates, extra = cp.full((n, gates_per_unit * hh), np.nan, dtype=dtype), cp.full((n, hh), np.nan, dtype=dtype)
        if gates_per_unit == 4:
            h64 = reference.lstm_cell_forward(np, gx, gh, state, gates64, extra64)
            h = ops.lstm_cell_forward(g["gx"], g["gh"], g["state"], gates, extra)
            got = ops.lstm_cell_backward(g["dh"], g["dc"], gates, extra, g["state"])
            ref = reference.lstm_cell_backward(np, dh, dc, gates64, extra64, state)
        else:
            h64 = reference.gru_cell_forward(np, gx, gh, state, gates64, extra64)
            h = ops.gru_cell_forward(g["gx"], g["gh"], g["state"], gates, extra)
            got = ops.gru_cell_backward(g["dh"], gates, extra, g["state"])
            ref = reference.gru_cell_backward(np, dh, gates64, extra64, state)
        for a, b in [(h, h64), (gates, gates64), (extra, extra64)] + list(zip(got, ref)):
            assert a.dtype == dtype
            np.testing.assert_allclose(cp.asnumpy(a), b, rtol=tol, atol=tol)


class _WithState(lm.Layer):
    """Wraps a recurrent layer so that gradcheck sees one output (y and the
    final state, flattened and concatenated) and the initial state as inputs."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, h0, c0=None):
        y, state = self.inner(x, h0 if c0 is None else (h0, c0))
        parts = [y] + (list(state) if c0 is not None else [state])
        self._shapes = [p.shape for p in parts]
        return np.concatenate([p.reshape(-1) for p in parts])

    def backward(self, dflat):
        pieces, start = [], 0
        for shape in self._shapes:
            size = int(np.prod(shape))
            pieces.append(dflat[start:start + size].reshape(shape))
            start += size
        dstate = tuple(pieces[1:]) if len(pieces) == 3 else pieces[1]
        dx, dstate0 = self.inner.backward(pieces[0], dstate)
        return (dx,) + (tuple(dstate0) if len(pieces) == 3 else (dstate0,))


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_with_initial_and_final_state(kind):
    rng = np.random.default_rng(3)
    for kwargs, n, length in [({}, 1, 1), ({"bidirectional": True}, 2, 3), ({"batch_first": False}, 3, 2),
                              ({"return_sequences": False, "bidirectional": True}, 2, 4)]:
        layer = _WithState(getattr(lm, kind)(2, 3, 2, return_state=True, **kwargs))
        x = rng.standard_normal((n, length, 2) if kwargs.get("batch_first", True) else (length, n, 2))
        d = 2 if kwargs.get("bidirectional") else 1
        states = [rng.standard_normal((2 * d, n, 3)) for _ in range(2 if kind == "LSTM" else 1)]
        assert gradcheck(layer, x, *states)


def test_backward_parameters_equals_backward_without_dx():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    a = lm.LSTM(3, 4, 2, bidirectional=True)
    b = lm.LSTM(3, 4, 2, bidirectional=True)
    b.load_state_dict(a.state_dict())
    dy = rng.standard_normal(a(x).shape).astype(np.float32)
    a.backward(dy)
    b(x)
    assert b.backward_parameters(dy) is None
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_loads_a_pytorch_state_dict_one_to_one_with_names_and_order(torch):
    t = torch.nn.LSTM(5, 7, 2, bidirectional=True, batch_first=True)
    layer = lm.LSTM(5, 7, 2, bidirectional=True)
    assert list(layer.state_dict()) == list(t.state_dict())
    assert all(layer.state_dict()[k].shape == tuple(v.shape) for k, v in t.state_dict().items())
    bound = 1 / np.sqrt(7)
    assert all(np.abs(p.data).max() <= bound for p in layer.parameters())


def test_errors_name_the_layer_and_leave_it_untouched():
    layer = lm.LSTM(3, 4, 2, return_state=True)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    with pytest.raises(lm.ShapeError, match=r"LSTM\(3, 4, num_layers=2, return_state=True\).*size 3 \(input_size\).*\(2, 5, 4\)"):
        layer(np.zeros((2, 5, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"LSTM.*3-d input.*\(5, 3\)"):
        layer(np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match="at least one step"):
        layer(np.zeros((2, 0, 3), dtype=np.float32))
    x = np.zeros((2, 5, 3), dtype=np.float32)
    with pytest.raises(TypeError, match=r"LSTM.*pair \(h, c\), received a tuple of 3"):
        layer(x, (np.zeros((2, 2, 4), dtype=np.float32),) * 3)
    with pytest.raises(TypeError, match=r"LSTM.*pair \(h, c\), received shape \(2, 2, 4\)"):
        layer(x, np.zeros((2, 2, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"LSTM.*c0 \(initial state\) with size 2 \(batch\).*\(2, 3, 4\)"):
        layer(x, (np.zeros((2, 2, 4), dtype=np.float32), np.zeros((2, 3, 4), dtype=np.float32)))
    with pytest.raises(lm.DTypeError, match=r"LSTM.*h0 \(initial state\) of dtype float32.*float64"):
        layer(x, (np.zeros((2, 2, 4)), np.zeros((2, 2, 4), dtype=np.float32)))
    assert not layer.has_cache()
    y, (h, c) = layer(x)
    with pytest.raises(lm.ShapeError, match=r"LSTM.*dc_n of shape \(2, 2, 4\), received \(1, 2, 4\)"):
        layer.backward(np.ones_like(y), (np.ones_like(h), np.ones((1, 2, 4), dtype=np.float32)))
    assert layer.has_cache()  # the failed call kept the cache
    assert layer.backward(np.ones_like(y), (None, np.ones_like(c))).shape == x.shape
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())
    with pytest.raises(ValueError, match="RNN: expected nonlinearity 'tanh' or 'relu', received 'sigmoid'"):
        lm.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="GRU: expected dropout in"):
        lm.GRU(3, 4, dropout=1.0)
    with pytest.raises(ValueError, match="GRU: expected hidden_size to be a positive int"):
        lm.GRU(3, 0)


def test_dropout_between_layers_is_seeded_off_in_eval_and_replayed_by_checkpointing():
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(np.float32)

    def model(segments=0):
        lm.manual_seed(2)
        layers = [lm.GRU(3, 8, 2, dropout=0.5), lm.LSTM(8, 5, 2, dropout=0.5, bidirectional=True), lm.Dense(10, 2)]
        return lm.Sequential(*layers, checkpoint_segments=segments)

    plain, ckpt = model(), model(segments=3)
    plain.eval()
    with lm.no_grad():
        a, b = plain(x), plain(x)
    assert np.array_equal(a, b)
    plain.train()
    y = assert_same_step(plain, ckpt, x, seed=9)
    assert not np.allclose(y, a)  # dropout is on in training


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_precision_is_close_to_float32(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    lm.manual_seed(0)
    ref = getattr(lm, kind)(5, 16, 2, bidirectional=True)
    low = getattr(lm, kind)(5, 16, 2, bidirectional=True)
    low.load_state_dict(ref.state_dict())
    y = ref(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref.backward(dy)
    lm.amp.autocast(low, "bfloat16")
    y16 = low(x)
    low.backward(dy)
    assert y16.dtype.name == "bfloat16"
    err = np.abs(y16.astype(np.float32) - y).max()
    assert err < 3e-2, err
    for (name, p), q in zip(ref.named_parameters(), low.parameters()):
        assert q.grad.dtype == np.float32
        rel = np.linalg.norm(q.grad - p.grad) / np.linalg.norm(p.grad)
        assert rel < 5e-2, (name, rel)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", ["sign of the first step", "sign of the sum"])
def test_learns_a_task_that_needs_its_state(kind, task):
    """Either the label is the sign of the first of 8 steps (the other 7 are
    weaker noise): the state must carry it to the end.  Or it is the sign
    of the sum of 12 steps: the state must integrate.  Only the final
    hidden state reaches the classifier."""
    rng = np.random.default_rng(0)
    lm.manual_seed(0)
    length = 8 if task == "sign of the first step" else 12

    def batch(n):
        x = rng.standard_normal((n, length, 1)).astype(np.float32)
        if task == "sign of the first step":
            x[:, 1:] *= 0.3
            return x, (x[:, 0, 0] > 0).astype(np.int64)
        return x, (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)

    model = lm.Sequential(getattr(lm, kind)(1, 16, return_sequences=False), lm.Dense(16, 2))
    loss_fn = lm.SoftmaxCrossEntropy()
    opt = lm.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        x, t = batch(32)
        model.zero_grad()
        loss_fn(model(x), t)
        model.backward(loss_fn.backward())
        opt.step()
    x, t = batch(1000)
    model.eval()
    with lm.no_grad():
        accuracy = (model(x).argmax(axis=1) == t).mean()
    assert accuracy > 0.85, accuracy


# ---------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------


def test_embedding_matches_pytorch_with_repeated_indices_and_padding(torch, xp):
    t = torch.nn.Embedding(7, 4, padding_idx=2)
    layer = lm.Embedding(7, 4, padding_idx=2)
    assert np.array_equal(layer.weight.data[2], np.zeros(4))
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    layer.to("cpu" if xp is np else "cuda")
    idx = np.array([[0, 2, 6, 0], [6, 6, 1, 2], [3, 0, 0, 0]])
    dy = np.random.default_rng(0).standard_normal((3, 4, 4)).astype(np.float32)
    ty = t(torch.from_numpy(idx))
    ty.backward(torch.from_numpy(dy))
    y = layer(xp.asarray(idx))
    assert layer.backward(xp.asarray(dy)) is None
    np.testing.assert_array_equal(to_numpy(y), ty.detach().numpy())
    np.testing.assert_allclose(to_numpy(layer.weight.grad), t.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert not to_numpy(layer.weight.grad)[2].any()  # the padding row learns nothing


@pytest.mark.parametrize("kwargs", [{"max_norm": 1.5}, {"max_norm": 0.8, "norm_type": 1.0}, {"scale_grad_by_freq": True},
                                    {"max_norm": 1.0, "scale_grad_by_freq": True, "padding_idx": 0}],
                         ids=["max_norm", "max_norm_l1", "freq", "both_padding"])
def test_embedding_options_match_pytorch(kwargs, torch, xp):
    """max_norm renormalises the rows a call reads, in place, before the
    lookup (twice: the second call sees the first's table);
    scale_grad_by_freq divides each row's gradient by its count."""
    t = torch.nn.Embedding(7, 4, **kwargs)
    with torch.no_grad():
        t.weight.mul_(2)  # most rows above max_norm
    layer = lm.Embedding(7, 4, **kwargs)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    layer.to("cpu" if xp is np else "cuda")
    rng = np.random.default_rng(1)
    for idx in (np.array([[0, 2, 6, 0], [6, 6, 1, 2]]), np.array([3, 3, 3, 5, 2])):
        dy = rng.standard_normal(idx.shape + (4,)).astype(np.float32)
        t.weight.grad = None
        layer.zero_grad(set_to_none=True)
        ty = t(torch.from_numpy(idx))
        ty.backward(torch.from_numpy(dy))
        y = layer(xp.asarray(idx))
        layer.backward(xp.asarray(dy))
        np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(to_numpy(layer.weight.data), t.weight.detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(to_numpy(layer.weight.grad), t.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert "max_norm" in repr(layer) or "scale_grad_by_freq=True" in repr(layer)


def test_embedding_from_pretrained_freezes_by_default(torch):
    vectors = np.random.default_rng(2).standard_normal((6, 3))  # float64 vectors stay float64
    frozen = lm.Embedding.from_pretrained(vectors, padding_idx=1)
    assert frozen.weight.dtype == np.float64 and not frozen.weight.requires_grad
    assert [p for p in frozen.parameters() if p.requires_grad] == []
    idx = np.array([[1, 4], [5, 0]])
    np.testing.assert_array_equal(frozen(idx), vectors[idx])
    assert frozen.backward(np.ones((2, 2, 3))) is None and frozen.weight.grad is None
    vectors[0] = 0  # a copy was taken
    assert frozen.weight.data[0].any()
    trained = lm.Embedding.from_pretrained(vectors.astype(np.float32), freeze=False)
    t = torch.nn.Embedding.from_pretrained(torch.from_numpy(vectors.astype(np.float32)), freeze=False)
    trained(idx)
    trained.backward(np.ones((2, 2, 3), np.float32))
    t(torch.from_numpy(idx)).sum().backward()
    np.testing.assert_array_equal(trained.weight.grad, t.weight.grad.numpy())
    with pytest.raises(ValueError, match=r"Embedding.from_pretrained: expected embeddings as a 2-d floating-point array, "
                                         r"received shape \(6,\), dtype int64"):
        lm.Embedding.from_pretrained(np.arange(6))
    with pytest.raises(ValueError, match="Embedding: expected max_norm as a finite number > 0 or None, received 0"):
        lm.Embedding(5, 3, max_norm=0)


def test_embedding_gradcheck_and_an_embedding_lstm_model():
    rng = np.random.default_rng(0)
    for shape in [(1,), (5,), (2, 3), (1, 1, 4), (7, 2)]:
        assert gradcheck(lm.Embedding(6, 3), rng.integers(0, 6, size=shape))
        # the padding row is frozen by design, not by the derivative: indices that avoid it
        assert gradcheck(lm.Embedding(6, 3, padding_idx=-1), rng.integers(0, 5, size=shape))
    model = lm.Sequential(lm.Embedding(10, 4), lm.GRU(4, 5, return_sequences=False), lm.Dense(5, 3))
    assert gradcheck(model, rng.integers(0, 10, size=(2, 6)))


def test_embedding_errors_name_the_layer():
    layer = lm.Embedding(5, 3)
    with pytest.raises(lm.DTypeError, match=r"Embedding\(5, 3\).*integer indices.*float32"):
        layer(np.zeros((2,), dtype=np.float32))
    with pytest.raises(IndexError, match=r"Embedding\(5, 3\).*indices in \[0, 5\).*from -1 to 5"):
        layer(np.array([-1, 5, 0]))
    assert not layer.has_cache()
    with pytest.raises(ValueError, match="Embedding: expected padding_idx in"):
        lm.Embedding(5, 3, padding_idx=5)
    with pytest.raises(ValueError, match="Embedding: expected num_embeddings to be a positive int"):
        lm.Embedding(0, 3)


def test_cache_is_what_backward_needs_and_nothing_under_no_grad():
    n, length, f, h = 4, 6, 5, 8
    layer = lm.LSTM(f, h)
    x = np.zeros((n, length, f), dtype=np.float32)
    with lm.memory.track() as m:
        y = layer(x)
        # the input, the outputs, the four gates and c_t of every step, then h0 and c0
        assert m.live_bytes == 4 * (length * n * (f + h + 4 * h + h) + 2 * n * h)
        layer.backward(np.ones_like(y))
        assert m.live_bytes == 0
        with lm.no_grad():
            layer(x)
        assert m.live_bytes == 0 and not layer.has_cache()


# ---------------------------------------------------------------------------
# Padded batches: lengths
# ---------------------------------------------------------------------------


def _padded(rng, lens, length, f, batch_first, fill=np.nan):
    """A batch whose steps past each sequence's length hold ``fill``."""
    n = len(lens)
    x = rng.standard_normal((n, length, f) if batch_first else (length, n, f)).astype(np.float32)
    for i, k in enumerate(lens):
        if batch_first:
            x[i, k:] = fill
        else:
            x[k:, i] = fill
    return x


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kwargs", [{}, {"bidirectional": True, "batch_first": False},
                                    {"bidirectional": True, "return_sequences": False}],
                         ids=["uni", "bi-time-major", "bi-final"])
def test_lengths_match_pytorch_packed_sequences(kind, kwargs, torch, xp):
    """A padded batch with lengths against PyTorch's pack_padded_sequence
    (unsorted): outputs, final states, dx and every parameter gradient.  The
    padding holds NaN: it must never be read."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: PLC0415

    rng = np.random.default_rng(zlib.crc32(repr((kind, kwargs)).encode()))
    lens = np.array([3, 7, 1, 5])
    n, length, d = len(lens), 7, 2 if kwargs.get("bidirectional") else 1
    bf, seqs = kwargs.get("batch_first", True), kwargs.get("return_sequences", True)
    t = getattr(torch.nn, kind)(4, 6, 2, batch_first=bf, bidirectional=d == 2)
    layer = getattr(lm, kind)(4, 6, 2, return_state=True, **kwargs)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    layer.to("cpu" if xp is np else "cuda")
    x = _padded(rng, lens, length, 4, bf)
    tx = torch.from_numpy(np.nan_to_num(x)).requires_grad_()
    tout, tstate = t(pack_padded_sequence(tx, torch.from_numpy(lens), batch_first=bf, enforce_sorted=False))
    ty = pad_packed_sequence(tout, batch_first=bf, total_length=length)[0]
    th = tstate[0] if kind == "LSTM" else tstate
    if not seqs:  # the last layer's final hidden state, directions concatenated
        ty = th[-d:].permute(1, 0, 2).reshape(n, d * 6)
    dy, dh, dc = (rng.standard_normal(shape).astype(np.float32) for shape in (ty.shape, th.shape, th.shape))
    loss = (ty * torch.from_numpy(dy)).sum() + (th * torch.from_numpy(dh)).sum()
    if kind == "LSTM":
        loss = loss + (tstate[1] * torch.from_numpy(dc)).sum()
    loss.backward()

    y, state = layer(xp.asarray(x), lengths=xp.asarray(lens) if xp is not np else list(lens))
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    states = state if kind == "LSTM" else (state,)
    for mine, theirs in zip(states, tstate if kind == "LSTM" else (tstate,)):
        np.testing.assert_allclose(to_numpy(mine), theirs.detach().numpy(), rtol=1e-5, atol=1e-5)
    dstate = (xp.asarray(dh), xp.asarray(dc)) if kind == "LSTM" else xp.asarray(dh)
    dx = to_numpy(layer.backward(xp.asarray(dy), dstate))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert np.all(dx[np.isnan(x)] == 0)  # padding has no influence
    tparams = dict(t.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(to_numpy(p.grad), tparams[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


class _WithLengths(_WithState):
    def __init__(self, inner, lengths):
        super().__init__(inner)
        self.lengths = lengths

    def forward(self, x, h0, c0=None):
        y, state = self.inner(x, h0 if c0 is None else (h0, c0), lengths=self.lengths)
        parts = [y] + (list(state) if c0 is not None else [state])
        self._shapes = [p.shape for p in parts]
        return np.concatenate([p.reshape(-1) for p in parts])


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_gradcheck_through_states_and_padding(kind):
    rng = np.random.default_rng(5)
    for kwargs, lens in [({"bidirectional": True}, [3, 1, 2]), ({"batch_first": False}, [1, 3]),
                         ({"return_sequences": False, "bidirectional": True}, [2, 3, 3])]:
        layer = _WithLengths(getattr(lm, kind)(2, 3, 2, return_state=True, **kwargs), np.array(lens))
        layer.to(dtype=np.float64)
        bf = kwargs.get("batch_first", True)
        x = _padded(rng, lens, 3, 2, bf, fill=0.5).astype(np.float64)
        d = 2 if kwargs.get("bidirectional") else 1
        states = [rng.standard_normal((2 * d, len(lens), 3)) for _ in range(2 if kind == "LSTM" else 1)]
        assert gradcheck(layer, x, *states)


def test_full_lengths_change_nothing_and_no_grad_agrees():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    for kind in KINDS:
        lm.manual_seed(0)
        a = getattr(lm, kind)(4, 6, 2, bidirectional=True)
        b = getattr(lm, kind)(4, 6, 2, bidirectional=True)
        b.load_state_dict(a.state_dict())
        dy = rng.standard_normal((3, 5, 12)).astype(np.float32)
        ya, yb = a(x), b(x, lengths=[5, 5, 5])
        assert np.array_equal(ya, yb)
        assert np.array_equal(a.backward(dy), b.backward(dy))
        for p, q in zip(a.parameters(), b.parameters()):
            assert np.array_equal(p.grad, q.grad)
        lens = [2, 5, 4]
        with lm.no_grad():  # one slot reused: the LSTM's c must survive a padding step
            y0 = b(x, lengths=lens)
        np.testing.assert_array_equal(y0, b(x, lengths=lens))


def test_lengths_errors_name_the_layer_and_leave_it_untouched():
    layer = lm.GRU(3, 4)
    x = np.zeros((2, 5, 3), dtype=np.float32)
    with pytest.raises(lm.DTypeError, match=r"GRU\(3, 4\): expected lengths as N integers, received shape \(2,\), "
                                            r"dtype float64"):
        layer(x, lengths=np.array([2.0, 3.0]))
    with pytest.raises(lm.ShapeError, match=r"GRU.*lengths of shape \(2,\) \(one per sequence\), received \(3,\)"):
        layer(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"GRU.*lengths in \[1, 5\].*from 0 to 2"):
        layer(x, lengths=[0, 2])
    with pytest.raises(ValueError, match=r"GRU.*lengths in \[1, 5\].*from 3 to 6"):
        layer(x, lengths=[6, 3])
    assert not layer.has_cache()


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_bad_state_gradient_names_the_layer_and_keeps_the_cache(kind):
    """dstate of the wrong kind, dtype or shape: the error names the layer
    and the part; the forward cache stays, and the right dstate afterwards
    gives the gradients of a layer that never saw the bad one."""
    rng = np.random.default_rng(0)
    layer = getattr(lm, kind)(3, 4, num_layers=2, return_state=True)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)  # (N, L, F): batch_first
    h0 = rng.standard_normal((2, 2, 4)).astype(np.float32)
    state0 = (h0, h0 * 0.5) if kind == "LSTM" else h0
    y, _ = layer(x, state0)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dh = rng.standard_normal((2, 2, 4)).astype(np.float32)
    good = (dh, dh * 0.5) if kind == "LSTM" else dh
    bad = [
        (dh[:1], lm.ShapeError, r"expected dh_n of shape \(2, 2, 4\), received \(1, 2, 4\)"),
        (dh.astype(np.int32), lm.DTypeError, "expected dh_n as a floating-point array, received shape"),
        (dh.tolist(), lm.DTypeError, "expected dh_n as a floating-point array, received list"),
    ]
    if kind == "LSTM":
        bad = [((b, None), error, match) for b, error, match in bad]
        bad += [(dh, TypeError, r"expected the state gradient as a pair \(dh_n, dc_n\), received"),
                ((dh, dh[:, :1]), lm.ShapeError, r"expected dc_n of shape \(2, 2, 4\), received \(2, 1, 4\)")]
    for value, error, match in bad:
        with pytest.raises(error, match=rf"{kind}\(.*{match}"):
            layer.backward(dy, value)
        assert layer.has_cache() and all(p.grad is None for p in layer.parameters())
    dx, dstate0 = layer.backward(dy, good)
    twin = getattr(lm, kind)(3, 4, num_layers=2, return_state=True)
    twin.load_state_dict(layer.state_dict())
    twin(x, state0)
    dx2, _ = twin.backward(dy, good)
    np.testing.assert_array_equal(dx, dx2)
    for p, q in zip(layer.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


# ---------------------------------------------------------------------------
# LSTM with a projection (proj_size)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"bidirectional": True, "batch_first": False},
                                    {"bidirectional": True, "return_sequences": False}, {"lengths": True}],
                         ids=["uni", "bi-time-major", "bi-final", "lengths"])
def test_projected_lstm_matches_pytorch(kwargs, torch, xp):
    """proj_size P < H: outputs and h_n of P features, c_n of H, against
    nn.LSTM(proj_size=P): the states, dx, dh0, dc0 and every parameter
    gradient, weight_hr included; with lengths, against packed sequences."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: PLC0415

    kwargs = dict(kwargs)
    use_lengths = kwargs.pop("lengths", False)
    rng = np.random.default_rng(zlib.crc32(repr(sorted(kwargs.items())).encode()))
    n, length, hidden, proj = 4, 6, 7, 3
    d = 2 if kwargs.get("bidirectional") else 1
    bf, seqs = kwargs.get("batch_first", True), kwargs.get("return_sequences", True)
    t = torch.nn.LSTM(5, hidden, 2, batch_first=bf, bidirectional=d == 2, proj_size=proj)
    layer = lm.LSTM(5, hidden, 2, return_state=True, proj_size=proj, **kwargs)
    assert list(layer.state_dict()) == list(t.state_dict())
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    layer.to("cpu" if xp is np else "cuda")
    x = rng.standard_normal((n, length, 5) if bf else (length, n, 5)).astype(np.float32)
    h0, dh = (rng.standard_normal((2 * d, n, proj)).astype(np.float32) for _ in range(2))
    c0, dc = (rng.standard_normal((2 * d, n, hidden)).astype(np.float32) for _ in range(2))
    tx, th, tc = (torch.from_numpy(a).requires_grad_() for a in (x, h0, c0))
    lens = np.array([6, 2, 5, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch notes that its oneDNN path has no projection
        if use_lengths:
            packed, (th_n, tc_n) = t(pack_padded_sequence(tx, torch.from_numpy(lens), batch_first=bf, enforce_sorted=False),
                                     (th, tc))
            ty = pad_packed_sequence(packed, batch_first=bf, total_length=length)[0]
        else:
            ty, (th_n, tc_n) = t(tx, (th, tc))
    if not seqs:
        ty = th_n[-d:].permute(1, 0, 2).reshape(n, d * proj)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ((ty * torch.from_numpy(dy)).sum() + (th_n * torch.from_numpy(dh)).sum() + (tc_n * torch.from_numpy(dc)).sum()).backward()

    y, (h_n, c_n) = layer(xp.asarray(x), (xp.asarray(h0), xp.asarray(c0)), lengths=list(lens) if use_lengths else None)
    assert y.shape == tuple(ty.shape) and h_n.shape == (2 * d, n, proj) and c_n.shape == (2 * d, n, hidden)
    for mine, theirs in ((y, ty), (h_n, th_n), (c_n, tc_n)):
        np.testing.assert_allclose(to_numpy(mine), theirs.detach().numpy(), rtol=1e-5, atol=1e-5)
    dx, (dh0, dc0) = layer.backward(xp.asarray(dy), (xp.asarray(dh), xp.asarray(dc)))
    for mine, theirs in ((dx, tx), (dh0, th), (dc0, tc)):
        np.testing.assert_allclose(to_numpy(mine), theirs.grad.numpy(), rtol=1e-4, atol=1e-5)
    tparams = dict(t.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(to_numpy(p.grad), tparams[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_projected_lstm_gradcheck_and_errors():
    rng = np.random.default_rng(8)
    for kwargs, n, length in [({}, 1, 1), ({"bidirectional": True}, 2, 3), ({"return_sequences": False}, 3, 2)]:
        layer = _WithState(lm.LSTM(2, 4, 2, return_state=True, proj_size=2, **kwargs))
        d = 2 if kwargs.get("bidirectional") else 1
        x = rng.standard_normal((n, length, 2))
        assert gradcheck(layer, x, rng.standard_normal((2 * d, n, 2)), rng.standard_normal((2 * d, n, 4)))
    for make, match in [(lambda: lm.LSTM(3, 4, proj_size=4), r"LSTM: expected proj_size an int in \[0, hidden_size\) = "
                                                             r"\[0, 4\), received 4"),
                        (lambda: lm.LSTM(3, 4, proj_size=1.5), "received 1.5"),
                        (lambda: lm.GRU(3, 4, proj_size=2), "GRU: proj_size applies to LSTM only, received 2")]:
        with pytest.raises(ValueError, match=match):
            make()
    layer = lm.LSTM(3, 4, proj_size=2, return_state=True)
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(lm.ShapeError, match=r"h0 \(initial state\).*size 2 \(proj_size\) in dimension 2"):
        layer(x, (np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)))
    with pytest.raises(lm.ShapeError, match=r"c0 \(initial state\).*size 4 \(hidden_size\) in dimension 2"):
        layer(x, (np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 2), np.float32)))
    y, (h, c) = layer(x)
    with pytest.raises(lm.ShapeError, match=r"expected dc_n of shape \(1, 2, 4\), received \(1, 2, 2\)"):
        layer.backward(np.ones_like(y), (np.ones_like(h), np.ones_like(h)))
    assert layer.backward(np.ones_like(y), (np.ones_like(h), np.ones_like(c))).shape == x.shape  # the cache was kept
    assert "proj_size=2" in repr(layer)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("kernels", ["lamina", "cupy"])
def test_projected_lstm_on_the_gpu_matches_the_cpu(kernels):
    x = np.random.default_rng(5).standard_normal((5, 9, 13)).astype(np.float32)
    check_gpu_kernels_match_cpu(lambda: lm.LSTM(13, 37, 2, bidirectional=True, proj_size=11), x, kernels=kernels)
