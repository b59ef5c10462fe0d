"""LayerNorm, MultiheadAttention and TransformerEncoderLayer beyond the
contract harness of test_layers.py (which runs gradcheck and PyTorch parity
on each): errors, dropout and checkpointing, mixed precision, a PyTorch
state_dict loaded one to one, and training."""

import warnings
import zlib

import numpy as np
import pytest
from harness import assert_same_step, to_numpy

import lamina as lm
from lamina.testing import gradcheck


def _stack(dropout=0.1, n=3):
    lm.manual_seed(1)
    return lm.Sequential(
        *[lm.TransformerEncoderLayer(16, 4, 32, dropout=dropout, activation="gelu", norm_first=True) for _ in range(n)]
    )


def test_layernorm_rejects_a_wrong_trailing_shape_and_stays_untouched():
    layer = lm.LayerNorm((3, 4))
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    with pytest.raises(lm.ShapeError) as e:
        layer(np.zeros((2, 4, 3), dtype=np.float32))
    assert "LayerNorm" in str(e.value) and "(3, 4)" in str(e.value) and "(2, 4, 3)" in str(e.value)
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())
    with pytest.raises(ValueError, match="eps > 0"):
        lm.LayerNorm(3, eps=0)


def test_attention_arguments_and_input_errors_name_the_layer():
    with pytest.raises(ValueError, match="embed_dim divisible by num_heads"):
        lm.MultiheadAttention(6, 4)
    with pytest.raises(ValueError, match="activation 'relu' or 'gelu'"):
        lm.TransformerEncoderLayer(8, 2, activation="tanh")
    mha = lm.MultiheadAttention(8, 2)
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention\(embed_dim=8.*size 8 \(embed_dim\).*\(2, 3, 7\)"):
        mha(np.zeros((2, 3, 7), dtype=np.float32))
    enc = lm.TransformerEncoderLayer(8, 2, 16)
    with pytest.raises(lm.ShapeError, match=r"TransformerEncoderLayer.*3-d input.*\(3, 8\)"):
        enc(np.zeros((3, 8), dtype=np.float32))
    with pytest.raises(lm.DTypeError, match=r"TransformerEncoderLayer.*float32.*float64"):
        enc(np.zeros((1, 3, 8)))


def test_loads_a_pytorch_encoder_state_dict_one_to_one(torch):
    t = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True)
    layer = lm.TransformerEncoderLayer(16, 4, 32, dropout=0.0, norm_first=True)
    assert list(layer.state_dict()) == list(t.state_dict())
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 9, 16)).astype(np.float32)
    t.eval(), layer.eval()
    with torch.no_grad(), lm.no_grad():
        np.testing.assert_allclose(layer(x), t(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_checkpointed_encoder_stack_with_dropout_is_bit_exact():
    x = np.random.default_rng(0).standard_normal((4, 6, 16)).astype(np.float32)
    plain, ckpt = _stack(), _stack()
    ckpt = lm.Sequential(*list(ckpt.children()), checkpoint_segments=2)
    assert_same_step(plain, ckpt, x, seed=5)


def test_dropout_is_off_in_eval_and_on_in_training():
    model = _stack(dropout=0.5, n=1)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    model.eval()
    with lm.no_grad():
        assert np.array_equal(model(x), model(x))
    model.train()
    with lm.no_grad():
        assert not np.array_equal(model(x), model(x))


@pytest.mark.parametrize("dtype,tol", [("bfloat16", 0.03), ("float16", 0.004)])
def test_mixed_precision_tracks_float32(dtype, tol):
    x = np.random.default_rng(0).standard_normal((4, 6, 16)).astype(np.float32)
    model = _stack(dropout=0.0, n=2)
    y32 = model(x)
    model.backward(np.ones_like(y32))
    g32 = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    lm.amp.autocast(model, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lm.PerformanceWarning)  # 16-bit on the CPU takes the reference kernels
        y = model(x)
        model.backward(np.ones(y.shape, dtype=np.float32))
    assert y.dtype.name == dtype
    assert np.abs(y.astype(np.float32) - y32).max() < tol * np.abs(y32).max()
    for p, g in zip(model.parameters(), g32):
        assert p.grad.dtype == np.float32
        assert np.abs(p.grad - g).max() <= tol * np.abs(g).max() + 1e-6


def test_a_small_transformer_learns_to_find_the_largest_token():
    """Sequences of 8 tokens from 6; the label is the largest token present:
    each position must attend to the others.  Chance is well under 50%."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(1536, 8))
    labels = tokens.max(axis=1)
    onehot = np.eye(6, dtype=np.float32)[tokens]  # (N, 8, 6)
    lm.manual_seed(0)
    embed = lm.Dense(6, 16)
    encoder = lm.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu", norm_first=True)
    head = lm.Dense(16, 6)
    layers = [embed, encoder, head]
    params = [p for m in layers for p in m.parameters()]
    opt = lm.optim.Adam(params, lr=3e-3)
    loss_fn = lm.SoftmaxCrossEntropy()
    for _ in range(4):
        for i in range(0, 1024, 64):
            h = encoder(embed(onehot[i:i + 64]))
            logits = head(h.mean(axis=1))
            loss_fn(logits, labels[i:i + 64])
            opt.zero_grad()
            dh = head.backward(loss_fn.backward())
            embed.backward(encoder.backward(np.repeat(dh[:, None, :] / 8, 8, axis=1)))
            opt.step()
    with lm.no_grad():
        pred = head(encoder(embed(onehot[1024:])).mean(axis=1)).argmax(axis=1)
    assert (pred == labels[1024:]).mean() > 0.9


# ---------------------------------------------------------------------------
# Masks: key_padding_mask and attn_mask
# ---------------------------------------------------------------------------


def _mha_pair(torch, e=8, h=2, **kwargs):
    t = torch.nn.MultiheadAttention(e, h, batch_first=True, **kwargs)
    layer = lm.MultiheadAttention(e, h, **kwargs)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return layer, t


def _masks(rng, n, length, h, kind):
    """The masks of one case, as PyTorch takes them (True hides)."""
    kpm = np.zeros((n, length), dtype=bool)
    kpm[0, 4:] = True  # sequence 0 has 4 real positions, sequence 2 one
    kpm[2, 1:] = True
    per_head = rng.random((n * h, length, length)) < 0.4
    per_head[:, np.arange(length), np.arange(length)] = False  # every query keeps a key
    causal = np.triu(np.ones((length, length), dtype=bool), k=1)
    return {
        "padding": {"key_padding_mask": kpm},
        "float padding": {"key_padding_mask": np.where(kpm, -np.inf, rng.standard_normal((n, length))).astype(np.float32)},
        "float 2-d": {"attn_mask": rng.standard_normal((length, length)).astype(np.float32)},
        "bool 3-d and padding": {"attn_mask": per_head, "key_padding_mask": kpm},
        "causal and padding": {"attn_mask": causal, "key_padding_mask": kpm},
    }[kind]


@pytest.mark.parametrize("kind", ["padding", "float padding", "float 2-d", "bool 3-d and padding", "causal and padding"])
def test_masks_match_pytorch(kind, torch, xp):
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    n, length, e, h = 3, 6, 8, 2
    layer, t = _mha_pair(torch, e, h)
    layer.to("cpu" if xp is np else "cuda")
    masks = _masks(rng, n, length, h, kind)
    x = rng.standard_normal((n, length, e)).astype(np.float32)
    dy = rng.standard_normal((n, length, e)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ty = t(tx, tx, tx, need_weights=False, **{k: torch.from_numpy(v) for k, v in masks.items()})[0]
    (ty * torch.from_numpy(dy)).sum().backward()
    y = layer(xp.asarray(x), **{k: xp.asarray(v) for k, v in masks.items()})
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.backward(xp.asarray(dy))), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    tparams = dict(t.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(to_numpy(p.grad), tparams[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_causal_layer_combines_with_a_padding_mask(torch):
    """causal=True and a key_padding_mask equal PyTorch given both masks."""
    rng = np.random.default_rng(4)
    layer, t = _mha_pair(torch)
    causal = lm.MultiheadAttention(8, 2, causal=True)
    causal.load_state_dict(layer.state_dict())
    masks = _masks(rng, 3, 6, 2, "causal and padding")
    x = rng.standard_normal((3, 6, 8)).astype(np.float32)
    with lm.no_grad():
        np.testing.assert_array_equal(causal(x, key_padding_mask=masks["key_padding_mask"]), layer(x, **masks))


class _Masked(lm.Layer):
    """gradcheck over a masked attention layer (the masks are constants)."""

    def __init__(self, inner, **masks):
        super().__init__()
        self.inner, self.masks = inner, masks

    def forward(self, x):
        return self.inner(x, **self.masks)

    def backward(self, dy):
        return self.inner.backward(dy)


def test_a_query_that_sees_no_key_gets_zero_weights_and_gradcheck_passes():
    """Sequence 1 hides every key: PyTorch returns NaN there; lamina's
    weights are zero, so the output is out_proj's bias and no gradient
    flows through the scores."""
    rng = np.random.default_rng(0)
    kpm = np.array([[False, False, True, True], [True, True, True, True]])
    attn = rng.standard_normal((4, 4))
    attn[0, :2] = -np.inf  # query 0 of sequence 0 sees no key either
    layer = lm.MultiheadAttention(6, 3, dtype=np.float64)
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    x = rng.standard_normal((2, 4, 6))
    y = layer(x, key_padding_mask=kpm, attn_mask=attn)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[1], np.broadcast_to(layer.out_proj.bias.data, (4, 6)))
    np.testing.assert_allclose(y[0, 0], layer.out_proj.bias.data)
    layer.backward(np.ones_like(y))
    assert all(np.isfinite(p.grad).all() for p in layer.parameters())
    assert gradcheck(_Masked(layer, key_padding_mask=kpm, attn_mask=attn), x)
    assert gradcheck(_Masked(layer, key_padding_mask=kpm), rng.standard_normal((2, 4, 6))[:, ::-1])


def test_mask_errors_name_the_layer_and_leave_everything_untouched():
    mha = lm.MultiheadAttention(8, 2)
    x = np.zeros((2, 3, 8), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention\(embed_dim=8.*key_padding_mask of shape \(2, 3\), "
                                            r"received \(3, 2\)"):
        mha(x, key_padding_mask=np.zeros((3, 2), dtype=bool))
    with pytest.raises(lm.ShapeError, match=r"attn_mask of shape \(3, 3\) or \(4, 3, 3\), received \(2, 3, 3\)"):
        mha(x, attn_mask=np.zeros((2, 3, 3), dtype=bool))
    with pytest.raises(lm.DTypeError, match=r"key_padding_mask of dtype bool .* or floating point .*received int64"):
        mha(x, key_padding_mask=np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(lm.DTypeError, match=r"attn_mask as a numpy.ndarray or cupy.ndarray, received list"):
        mha(x, attn_mask=[[True] * 3] * 3)
    assert not mha.has_cache()
    enc = lm.TransformerEncoderLayer(8, 2, 16, norm_first=True)
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*key_padding_mask of shape \(2, 3\)"):
        enc(x, src_key_padding_mask=np.zeros((2, 4), dtype=bool))
    assert not any(m.has_cache() for m in enc.modules())  # norm1 has not run


def test_encoder_layer_with_a_padding_mask_matches_pytorch(torch):
    rng = np.random.default_rng(8)
    t = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    layer = lm.TransformerEncoderLayer(16, 4, 32, dropout=0.0)
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    kpm = np.array([[False] * 5, [False, False, True, True, True], [False] * 4 + [True]])
    src_mask = rng.random((5, 5)) < 0.3  # bool, as the padding mask (PyTorch warns on mixed kinds)
    src_mask[np.arange(5), np.arange(5)] = False
    tx = torch.from_numpy(x).requires_grad_()
    ty = t(tx, src_mask=torch.from_numpy(src_mask), src_key_padding_mask=torch.from_numpy(kpm))
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    (ty * torch.from_numpy(dy)).sum().backward()
    y = layer(x, src_mask=src_mask, src_key_padding_mask=kpm)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    tparams = dict(t.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------------------
# Cross-attention, the decoder layer and the stacks
# ---------------------------------------------------------------------------


def _grads_match(layer, t, err=""):
    tparams = dict(t.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(to_numpy(p.grad), tparams[name].grad.numpy(), rtol=1e-4, atol=2e-5, err_msg=err + name)


@pytest.mark.parametrize("form,kdim,vdim", [("memory", None, None), ("key and value", None, None),
                                           ("memory", 6, 6), ("key and value", 6, 5), ("key and value", 8, 3)])
def test_cross_attention_matches_pytorch(form, kdim, vdim, torch, xp):
    """Queries (N, 5, E) over a memory of another length (7), with a padding
    mask on the memory and a float (Lq, Lk) mask: output, both or all three
    input gradients, and every parameter gradient; with kdim/vdim, keys and
    values of other widths through PyTorch's separate q/k/v_proj_weight."""
    rng = np.random.default_rng(3)
    n, lq, lk, e, h = 3, 5, 7, 8, 2
    layer, t = _mha_pair(torch, e, h, kdim=kdim, vdim=vdim)
    assert list(layer.state_dict()) == list(t.state_dict())
    layer.to("cpu" if xp is np else "cuda")
    q = rng.standard_normal((n, lq, e)).astype(np.float32)
    inputs = [q, rng.standard_normal((n, lk, kdim or e)).astype(np.float32)]
    if form == "key and value":
        inputs.append(rng.standard_normal((n, lk, vdim or e)).astype(np.float32))
    kpm = np.zeros((n, lk), dtype=bool)
    kpm[0, 2:] = True
    kpm[2, 6:] = True
    kpm = np.where(kpm, -np.inf, 0).astype(np.float32)  # float, as attn_mask (PyTorch warns on mixed kinds)
    attn = rng.standard_normal((lq, lk)).astype(np.float32)
    dy = rng.standard_normal((n, lq, e)).astype(np.float32)
    tin = [torch.from_numpy(a).requires_grad_() for a in inputs]
    ty = t(tin[0], tin[1], tin[-1], need_weights=False, key_padding_mask=torch.from_numpy(kpm),
           attn_mask=torch.from_numpy(attn))[0]
    (ty * torch.from_numpy(dy)).sum().backward()
    y = layer(*map(xp.asarray, inputs), key_padding_mask=xp.asarray(kpm), attn_mask=xp.asarray(attn))
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    grads = layer.backward(xp.asarray(dy))
    assert isinstance(grads, tuple) and len(grads) == len(inputs)
    expected = [a.grad.numpy() for a in tin]
    if form == "memory":  # PyTorch read the one memory tensor twice: its gradient is the sum
        expected = expected[:1] + [expected[1]]
    for g, want in zip(grads, expected):
        np.testing.assert_allclose(to_numpy(g), want, rtol=1e-4, atol=1e-5)
    _grads_match(layer, t)


@pytest.mark.parametrize("lq,lk,causal", [(1, 1, False), (1, 4, False), (3, 2, True), (4, 6, True), (5, 3, False)])
def test_cross_attention_gradcheck_on_odd_lengths(lq, lk, causal):
    rng = np.random.default_rng(lq * 10 + lk)
    layer = lm.MultiheadAttention(6, 3, causal=causal)
    q = rng.standard_normal((2, lq, 6))
    m = rng.standard_normal((2, 2 * lk, 6))[:, ::2]  # a non-contiguous view
    assert gradcheck(layer, q, m)
    assert gradcheck(lm.MultiheadAttention(6, 2, bias=False), q[:1], m[:1], rng.standard_normal((1, lk, 6)))
    assert gradcheck(lm.MultiheadAttention(6, 3, causal=causal, kdim=4, vdim=4), q, rng.standard_normal((2, lk, 4)))
    assert gradcheck(lm.MultiheadAttention(6, 2, kdim=5, vdim=1), q[:1], rng.standard_normal((1, lk, 5)),
                     rng.standard_normal((1, 2 * lk, 1))[:, 1::2])


def test_kdim_vdim_errors_name_the_layer():
    mha = lm.MultiheadAttention(8, 2, kdim=6, vdim=5)
    assert "kdim=6, vdim=5" in repr(mha) and mha.in_proj_weight is None
    q = np.zeros((2, 3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"MultiheadAttention\(embed_dim=8.*self-attention needs kdim = vdim = embed_dim"):
        mha(q)
    with pytest.raises(ValueError, match=r"memory read as both key and value needs kdim = vdim, received kdim=6 and vdim=5"):
        mha(q, np.zeros((2, 4, 6), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"key with size 6 \(kdim\) in dimension 2, received shape \(2, 4, 8\)"):
        mha(q, np.zeros((2, 4, 8), dtype=np.float32), np.zeros((2, 4, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"value with size 5 \(vdim\) in dimension 2, received shape \(2, 4, 6\)"):
        mha(q, np.zeros((2, 4, 6), dtype=np.float32), np.zeros((2, 4, 6), dtype=np.float32))
    assert not mha.has_cache()
    same = lm.MultiheadAttention(8, 2, kdim=8, vdim=8)  # PyTorch too keeps in_proj_weight when both equal E
    assert same.in_proj_weight is not None and not same.separate_proj


def test_three_reads_of_one_input_sum_to_self_attention():
    """mha(x, x, x) is cross-attention reading x three times: the same output
    as mha(x), and its three input gradients sum to mha(x)'s dx."""
    rng = np.random.default_rng(0)
    layer = lm.MultiheadAttention(8, 2, causal=True, dtype=np.float64)
    x = rng.standard_normal((3, 5, 8))
    dy = rng.standard_normal((3, 5, 8))
    y = layer(x)
    dx = layer.backward(dy)
    g_self = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    np.testing.assert_allclose(layer(x, x, x), y, rtol=1e-12, atol=1e-12)
    dq, dk, dv = layer.backward(dy)
    np.testing.assert_allclose(dq + dk + dv, dx, rtol=1e-10, atol=1e-12)
    for p, g in zip(layer.parameters(), g_self):
        np.testing.assert_allclose(p.grad, g, rtol=1e-10, atol=1e-12)


def test_cross_attention_errors_name_the_layer_and_leave_it_untouched():
    mha = lm.MultiheadAttention(8, 2)
    q = np.zeros((2, 3, 8), dtype=np.float32)
    m = np.zeros((2, 5, 8), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention\(embed_dim=8.*key with size 2 \(the query's batch\) "
                                            r"in dimension 0, received shape \(3, 5, 8\)"):
        mha(q, np.zeros((3, 5, 8), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"key with size 8 \(embed_dim\) in dimension 2, received shape \(2, 5, 6\)"):
        mha(q, np.zeros((2, 5, 6), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"value with size 5 \(the key's length\) in dimension 1, received shape \(2, 4, 8\)"):
        mha(q, m, np.zeros((2, 4, 8), dtype=np.float32))
    with pytest.raises(lm.DTypeError, match=r"key of dtype float32 \(the compute dtype\), received float64"):
        mha(q, m.astype(np.float64))
    with pytest.raises(ValueError, match=r"MultiheadAttention.*value without key"):
        mha(q, value=m)
    with pytest.raises(lm.ShapeError, match=r"key_padding_mask of shape \(2, 5\), received \(2, 3\)"):
        mha(q, m, key_padding_mask=np.zeros((2, 3), dtype=bool))
    with pytest.raises(lm.ShapeError, match=r"attn_mask of shape \(3, 5\) or \(4, 3, 5\), received \(3, 3\)"):
        mha(q, m, attn_mask=np.zeros((3, 3), dtype=bool))
    assert not any(layer.has_cache() for layer in mha.modules())


def _decoder_pair(torch, norm_first, activation="relu", e=8, h=2, ff=12):
    t = torch.nn.TransformerDecoderLayer(e, h, ff, dropout=0.0, activation=activation, batch_first=True,
                                         norm_first=norm_first)
    layer = lm.TransformerDecoderLayer(e, h, ff, dropout=0.0, activation=activation, norm_first=norm_first)
    assert list(layer.state_dict()) == list(t.state_dict())
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    return layer, t


@pytest.mark.parametrize("norm_first,activation", [(True, "gelu"), (False, "relu")])
def test_decoder_layer_with_masks_matches_pytorch(norm_first, activation, torch, xp):
    rng = np.random.default_rng(11)
    n, lt, lm_, e = 3, 5, 6, 8
    layer, t = _decoder_pair(torch, norm_first, activation)
    layer.to("cpu" if xp is np else "cuda")
    tgt = rng.standard_normal((n, lt, e)).astype(np.float32)
    memory = rng.standard_normal((n, lm_, e)).astype(np.float32)
    tgt_mask = np.triu(np.ones((lt, lt), dtype=bool), 1)
    tgt_kpm = np.zeros((n, lt), dtype=bool)
    tgt_kpm[1, 3:] = True
    mem_kpm = np.zeros((n, lm_), dtype=bool)
    mem_kpm[0, 4:] = True
    mem_kpm[2, 1:] = True
    mem_kpm = np.where(mem_kpm, -np.inf, 0).astype(np.float32)  # float, as memory_mask
    memory_mask = rng.standard_normal((lt, lm_)).astype(np.float32)
    masks = {"tgt_mask": tgt_mask, "tgt_key_padding_mask": tgt_kpm, "memory_key_padding_mask": mem_kpm,
             "memory_mask": memory_mask}
    tt, tm = (torch.from_numpy(a).requires_grad_() for a in (tgt, memory))
    ty = t(tt, tm, **{k: torch.from_numpy(v) for k, v in masks.items()})
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    (ty * torch.from_numpy(dy)).sum().backward()
    y = layer(xp.asarray(tgt), xp.asarray(memory), **{k: xp.asarray(v) for k, v in masks.items()})
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=2e-5)
    dt, dm = layer.backward(xp.asarray(dy))
    np.testing.assert_allclose(to_numpy(dt), tt.grad.numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(to_numpy(dm), tm.grad.numpy(), rtol=1e-4, atol=2e-5)
    _grads_match(layer, t)


@pytest.mark.parametrize("shapes", [((1, 1, 4), (1, 1, 4)), ((2, 3, 4), (2, 5, 4)), ((1, 4, 4), (1, 2, 4)),
                                    ((3, 2, 4), (3, 3, 4)), ((2, 5, 4), (2, 1, 4)), ((1, 3, 4), (1, 7, 4))])
def test_decoder_layer_gradcheck(shapes):
    rng = np.random.default_rng(sum(map(sum, shapes)))
    tgt, memory = (rng.standard_normal(s) for s in shapes)
    norm_first = shapes[0][1] % 2 == 1
    layer = lm.TransformerDecoderLayer(4, 2, 6, dropout=0.0, activation="gelu", norm_first=norm_first, causal=True)
    assert gradcheck(layer, tgt, memory)


def test_decoder_errors_name_the_layer_and_leave_every_cache_empty():
    dec = lm.TransformerDecoderLayer(8, 2, 16)
    tgt = np.zeros((2, 3, 8), dtype=np.float32)
    memory = np.zeros((2, 5, 8), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"TransformerDecoderLayer.*memory with size 2 \(the batch of tgt\)"):
        dec(tgt, np.zeros((3, 5, 8), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"TransformerDecoderLayer.*memory with size 8 \(d_model\)"):
        dec(tgt, np.zeros((2, 5, 4), dtype=np.float32))
    with pytest.raises(lm.DTypeError, match=r"TransformerDecoderLayer.*tgt of dtype float32.*received float64"):
        dec(tgt.astype(np.float64), memory)
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*key_padding_mask of shape \(2, 5\), received \(2, 3\)"):
        dec(tgt, memory, memory_key_padding_mask=np.zeros((2, 3), dtype=bool))
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*attn_mask of shape \(3, 3\)"):
        dec(tgt, memory, tgt_mask=np.zeros((3, 5), dtype=bool))
    assert not any(m.has_cache() for m in dec.modules())
    stack = lm.TransformerDecoder(dec, 2)
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*attn_mask of shape \(3, 5\) or \(4, 3, 5\), received \(3, 3\)"):
        stack(tgt, memory, memory_mask=np.zeros((3, 3), dtype=bool))
    assert not any(m.has_cache() for m in stack.modules())
    with pytest.raises(TypeError, match=r"TransformerDecoder: expected a TransformerDecoderLayer, received TransformerEncoderLayer"):
        lm.TransformerDecoder(lm.TransformerEncoderLayer(8, 2), 2)


def test_stacks_load_pytorch_state_dicts_and_match_forward_and_backward(torch):
    rng = np.random.default_rng(5)
    e, h, ff = 8, 2, 12
    tenc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(e, h, ff, dropout=0.0, batch_first=True, norm_first=True), 2,
        norm=torch.nn.LayerNorm(e), enable_nested_tensor=False)
    tdec = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(e, h, ff, dropout=0.0, batch_first=True, norm_first=True), 3,
        norm=torch.nn.LayerNorm(e))
    enc = lm.TransformerEncoder(lm.TransformerEncoderLayer(e, h, ff, dropout=0.0, norm_first=True), 2, norm=lm.LayerNorm(e))
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(e, h, ff, dropout=0.0, norm_first=True, causal=True), 3,
                                norm=lm.LayerNorm(e))
    for layer, t in ((enc, tenc), (dec, tdec)):
        assert list(layer.state_dict()) == list(t.state_dict())
        layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    src = rng.standard_normal((2, 6, e)).astype(np.float32)
    tgt = rng.standard_normal((2, 4, e)).astype(np.float32)
    src_kpm = np.array([[False] * 6, [False] * 3 + [True] * 3])
    tsrc, ttgt = (torch.from_numpy(a).requires_grad_() for a in (src, tgt))
    tkpm = torch.from_numpy(src_kpm)
    tmem = tenc(tsrc, src_key_padding_mask=tkpm)
    ty = tdec(ttgt, tmem, tgt_mask=torch.triu(torch.ones(4, 4, dtype=torch.bool), 1), memory_key_padding_mask=tkpm)
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    (ty * torch.from_numpy(dy)).sum().backward()
    memory = enc(src, src_key_padding_mask=src_kpm)
    y = dec(tgt, memory, memory_key_padding_mask=src_kpm)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=2e-5)
    dtgt, dmemory = dec.backward(dy)
    dsrc = enc.backward(dmemory)
    np.testing.assert_allclose(dtgt, ttgt.grad.numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(dsrc, tsrc.grad.numpy(), rtol=1e-4, atol=2e-5)
    _grads_match(enc, tenc, "encoder ")
    _grads_match(dec, tdec, "decoder ")


def test_decoder_mixed_precision_tracks_float32():
    rng = np.random.default_rng(2)
    tgt = rng.standard_normal((3, 5, 16)).astype(np.float32)
    memory = rng.standard_normal((3, 7, 16)).astype(np.float32)
    lm.manual_seed(3)
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(16, 4, 32, dropout=0.0, norm_first=True, causal=True), 2)
    y32 = dec(tgt, memory)
    _, dm32 = dec.backward(np.ones_like(y32))
    g32 = [p.grad.copy() for p in dec.parameters()]
    dec.zero_grad()
    lm.amp.autocast(dec, "bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lm.PerformanceWarning)
        y = dec(tgt, memory)  # float32 inputs are cast, as autocast does
        _, dm = dec.backward(np.ones(y.shape, dtype=np.float32))
    assert y.dtype.name == "bfloat16" and dm.dtype.name == "bfloat16"
    assert np.abs(y.astype(np.float32) - y32).max() < 0.03 * np.abs(y32).max()
    assert np.abs(dm.astype(np.float32) - dm32).max() < 0.03 * np.abs(dm32).max()
    for p, g in zip(dec.parameters(), g32):
        assert p.grad.dtype == np.float32
        assert np.abs(p.grad - g).max() <= 0.03 * np.abs(g).max() + 1e-6


def test_summary_traces_a_decoder_given_one_shape_per_input():
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(16, 4, 32), 2, norm=lm.LayerNorm(16))
    text = dec.summary([(2, 5, 16), (2, 7, 16)], print_fn=None)
    rows = {line.split()[0]: line for line in text.splitlines()[2:-2]}
    assert "(2, 4, 5, 7)" in rows["layers.1.multihead_attn.attn_dropout"]  # the cross-attention weights, Lt x Lm
    assert "(2, 4, 5, 5)" in rows["layers.0.self_attn.attn_dropout"]
    assert "(2, 5, 16)" in rows["norm"] and "(2, 5, 32)" in rows["layers.1.linear1"]
    assert not any(m.has_cache() for m in dec.modules())  # traced under no_grad


def test_transformer_matches_pytorch_and_gradcheck_passes(torch):
    """lm.Transformer against nn.Transformer (post-LN, PyTorch's default),
    with every kind of mask; its initialisation is PyTorch's (Xavier-uniform
    on every matrix); gradcheck on a small one, src and tgt of other lengths."""
    rng = np.random.default_rng(21)
    e, h, ff = 8, 2, 12
    t = torch.nn.Transformer(e, h, 2, 2, ff, dropout=0.0, batch_first=True)
    layer = lm.Transformer(e, h, 2, 2, ff, dropout=0.0)
    assert list(layer.state_dict()) == list(t.state_dict())
    w = layer.decoder.layers[1].linear1.weight.data
    assert np.abs(w).max() <= np.sqrt(6 / (e + ff)) and np.abs(w).max() > 0.8 * np.sqrt(6 / (e + ff))
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    src = rng.standard_normal((3, 6, e)).astype(np.float32)
    tgt = rng.standard_normal((3, 4, e)).astype(np.float32)
    src_kpm = np.zeros((3, 6), dtype=bool)
    src_kpm[1, 4:] = True
    tgt_mask = lm.Transformer.generate_square_subsequent_mask(4)
    np.testing.assert_array_equal(tgt_mask, t.generate_square_subsequent_mask(4).numpy())
    src_mask = rng.random((6, 6)) < 0.3
    src_mask[np.arange(6), np.arange(6)] = False
    masks = {"src_mask": src_mask, "src_key_padding_mask": src_kpm, "memory_key_padding_mask": src_kpm,
             "tgt_mask": tgt_mask < 0}
    tsrc, ttgt = (torch.from_numpy(a).requires_grad_() for a in (src, tgt))
    ty = t(tsrc, ttgt, **{k: torch.from_numpy(v) for k, v in masks.items()})
    dy = rng.standard_normal(ty.shape).astype(np.float32)
    (ty * torch.from_numpy(dy)).sum().backward()
    y = layer(src, tgt, **masks)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=2e-5)
    dsrc, dtgt = layer.backward(dy)
    np.testing.assert_allclose(dsrc, tsrc.grad.numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(dtgt, ttgt.grad.numpy(), rtol=1e-4, atol=2e-5)
    _grads_match(layer, t)
    small = lm.Transformer(4, 2, 1, 1, 6, dropout=0.0, norm_first=True, causal=True)
    assert gradcheck(small, rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 4)))
    with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*key_padding_mask of shape \(3, 6\), received \(3, 4\)"):
        layer(src, tgt, memory_key_padding_mask=np.zeros((3, 4), dtype=bool))
    assert not any(m.has_cache() for m in layer.modules())  # checked before the encoder ran


@pytest.mark.parametrize("average", [True, False])
def test_attention_weights_match_pytorch(average, torch, xp):
    rng = np.random.default_rng(31)
    layer, t = _mha_pair(torch, 8, 2)
    layer.to("cpu" if xp is np else "cuda")
    q = rng.standard_normal((2, 3, 8)).astype(np.float32)
    m = rng.standard_normal((2, 5, 8)).astype(np.float32)
    kpm = np.array([[False] * 5, [False, False, True, True, True]])
    tq, tm = torch.from_numpy(q), torch.from_numpy(m)
    ty, tw = t(tq, tm, tm, key_padding_mask=torch.from_numpy(kpm), average_attn_weights=average)
    y, w = layer(xp.asarray(q), xp.asarray(m), key_padding_mask=xp.asarray(kpm), need_weights=True,
                 average_attn_weights=average)
    assert w.shape == ((2, 3, 5) if average else (2, 2, 3, 5))
    np.testing.assert_allclose(to_numpy(w), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert not to_numpy(w)[1, ..., 2:].any()  # hidden keys get no weight
    dq, dm = layer.backward(xp.ones_like(y))  # backward as without the weights
    assert dq.shape == q.shape and dm.shape == m.shape


def test_checkpointed_stacks_give_the_same_gradients_bit_for_bit_for_less_memory():
    """Transformer(checkpoint=True) with dropout: the output, both input
    gradients and every parameter gradient equal the plain model's bit for
    bit (the dropout masks are replayed), and the peak activation memory
    during the step is far lower."""
    rng = np.random.default_rng(7)
    src = rng.standard_normal((4, 24, 16)).astype(np.float32)
    tgt = rng.standard_normal((4, 20, 16)).astype(np.float32)
    kpm = np.zeros((4, 24), dtype=bool)
    kpm[2, 17:] = True
    runs = []
    for checkpoint in (False, True):
        lm.manual_seed(3)
        model = lm.Transformer(16, 4, 3, 3, 32, dropout=0.2, causal=True, checkpoint=checkpoint)
        lm.manual_seed(9)
        with lm.memory.track() as mem:
            y = model(src, tgt, src_key_padding_mask=kpm, memory_key_padding_mask=kpm)
            grads = model.backward(np.ones_like(y))
        runs.append((y, grads, [p.grad for p in model.parameters()], mem.peak_bytes, lm.get_rng_state()))
        assert not any(m.has_cache() for m in model.modules())
    (y0, g0, p0, peak0, rng0), (y1, g1, p1, peak1, rng1) = runs
    assert np.array_equal(y0, y1)
    assert all(np.array_equal(a, b) for a, b in zip(g0, g1))
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1))
    assert peak1 < 0.5 * peak0, (peak1, peak0)
    assert repr(rng0) == repr(rng1)  # the random stream continues as if nothing was recomputed
    wrapped = lm.Checkpoint(lm.TransformerDecoderLayer(16, 4, 32, dropout=0.0))  # Checkpoint takes several inputs too
    y = wrapped(tgt, src, memory_key_padding_mask=kpm)
    dt, dm = wrapped.backward(np.ones_like(y))
    assert dt.shape == tgt.shape and dm.shape == src.shape


# --- incremental decoding with a KVCache ---------------------------------------------------------------------------

def _in_chunks(model, chunks, x, cache, **kwargs):
    """Run x (N, L, E) through model a chunk of positions at a time with one
    cache; kwargs maps a mask name to a function of the end position."""
    outs = []
    for a, b in chunks:
        masks = {k: f(b) for k, f in kwargs.items()}
        outs.append(to_numpy(model(x[:, a:b], **masks, cache=cache)))
    return np.concatenate(outs, axis=1)


CHUNKS = {"one by one": [(i, i + 1) for i in range(9)], "prefill then steps": [(0, 4), (4, 5), (5, 6), (6, 9)]}


@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("norm_first", [True, False])
def test_cached_decoder_stack_equals_running_the_whole_target(chunks, norm_first, xp):
    """A causal decoder run on the target a few positions at a time with a
    KVCache gives what one call on the whole target gives: self-attention
    reads the kept keys and values, cross-attention the memory projected
    once; padding masks cover every key seen so far."""
    rng = np.random.default_rng(7)
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(8, 2, 12, dropout=0.0, norm_first=norm_first, causal=True), 3,
                                norm=lm.LayerNorm(8)).to("cpu" if xp is np else "cuda", dtype=np.float64)
    tgt, memory = xp.asarray(rng.standard_normal((3, 9, 8))), xp.asarray(rng.standard_normal((3, 5, 8)))
    tkpm = np.zeros((3, 9), dtype=bool)
    tkpm[1, 2] = True  # a hidden target position, seen by every later query
    mkpm = np.zeros((3, 5), dtype=bool)
    mkpm[2, 3:] = True
    tkpm, mkpm = xp.asarray(tkpm), xp.asarray(mkpm)
    with lm.no_grad():
        full = to_numpy(dec(tgt, memory, tgt_key_padding_mask=tkpm, memory_key_padding_mask=mkpm))
        cache = lm.KVCache()
        step = _in_chunks(lambda x, **kw: dec(x, memory, memory_key_padding_mask=mkpm, **kw), CHUNKS[chunks], tgt, cache,
                          tgt_key_padding_mask=lambda end: tkpm[:, :end])
    np.testing.assert_allclose(step, full, rtol=1e-12, atol=1e-12)
    assert cache.length == len(cache) == 9 and "layers=6" in repr(cache)  # 3 self- and 3 cross-attention entries
    assert not any(m.has_cache() for m in dec.modules())


def test_cached_causal_encoder_and_attention_equal_the_full_run_past_the_buffers_growth():
    """Decoder-only use: a causal encoder stack, and a bare causal
    MultiheadAttention given an attn_mask over all the keys, run one
    position at a time for 40 positions (the kept buffers grow 16 → 32 → 64)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 40, 8))
    enc = lm.TransformerEncoder(lm.TransformerEncoderLayer(8, 2, 12, dropout=0.0, norm_first=True, causal=True), 2)
    enc.to(dtype=np.float64)
    mha = lm.MultiheadAttention(8, 2, causal=True).to(dtype=np.float64)
    bias = rng.standard_normal((40, 40))  # a float mask, e.g. relative positions
    ones = [(i, i + 1) for i in range(40)]
    with lm.no_grad():
        np.testing.assert_allclose(_in_chunks(enc, ones, x, lm.KVCache()), enc(x), rtol=1e-12, atol=1e-12)
        cache = lm.KVCache()
        step = _in_chunks(mha, ones, x, cache, attn_mask=lambda end: bias[end - 1:end, :end])
        np.testing.assert_allclose(step, mha(x, attn_mask=bias), rtol=1e-12, atol=1e-12)
    assert cache.past(mha) == 40 and cache._entries[mha].k.shape[2] == 64


@pytest.mark.parametrize("kdim,vdim", [(None, None), (6, 3)])
def test_cached_cross_attention_projects_the_memory_once(kdim, vdim):
    rng = np.random.default_rng(9)
    mha = lm.MultiheadAttention(8, 2, kdim=kdim, vdim=vdim).to(dtype=np.float64)
    q, k, v = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, kdim or 8)), rng.standard_normal((2, 5, vdim or 8))
    with lm.no_grad():
        full = mha(q, k, v)
        cache = lm.KVCache()
        first = mha(q[:, :1], k, v, cache=cache)
        # later calls read the kept keys and values: a memory of the same shape is not projected again
        rest = mha(q[:, 1:], np.zeros_like(k), np.zeros_like(v), cache=cache)
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), full, rtol=1e-12, atol=1e-12)


def test_reorder_keeps_the_chosen_rows_as_beam_search_does():
    rng = np.random.default_rng(10)
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(8, 2, 12, dropout=0.0, causal=True), 2).to(dtype=np.float64)
    tgt, memory = rng.standard_normal((3, 6, 8)), rng.standard_normal((3, 4, 8))
    index = np.array([2, 0, 2, 1])  # beams may repeat and the batch may change size
    with lm.no_grad():
        cache = lm.KVCache()
        dec(tgt[:, :4], memory, cache=cache)
        cache.reorder(index)
        tail = dec(tgt[index, 4:], memory[index], cache=cache)
        full = dec(tgt[index], memory[index])
    np.testing.assert_allclose(tail, full[:, 4:], rtol=1e-12, atol=1e-12)


def test_kv_cache_errors_name_the_layer_and_leave_the_cache_as_it_was():
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(8, 2, 12, dropout=0.0, causal=True), 2)
    tgt = np.zeros((2, 3, 8), dtype=np.float32)
    memory = np.zeros((2, 5, 8), dtype=np.float32)
    cache = lm.KVCache()
    with pytest.raises(RuntimeError, match=r"TransformerDecoderLayer.*KVCache is for inference.*no_grad"):
        dec(tgt, memory, cache=cache)
    assert len(cache) == 0 and not any(m.has_cache() for m in dec.modules())
    with pytest.raises(TypeError, match=r"TransformerDecoderLayer.*expected cache as a lamina.KVCache, received dict"):
        with lm.no_grad():
            dec(tgt, memory, cache={})
    with lm.no_grad():
        dec(tgt, memory, cache=cache)
        entries = {id(a): (e.length, e.k.shape) for a, e in cache._entries.items()}
        with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*batch of 2 \(the KVCache's\), received 3.*reorder"):
            dec(np.zeros((3, 1, 8), dtype=np.float32), np.zeros((3, 5, 8), dtype=np.float32), cache=cache)
        with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*memory of length 5 .*received 4.*new KVCache"):
            dec(tgt[:, :1], memory[:, :4], cache=cache)
        with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*key_padding_mask of shape \(2, 4\), received \(2, 1\)"):
            dec(tgt[:, :1], memory, tgt_key_padding_mask=np.zeros((2, 1), dtype=bool), cache=cache)
        with pytest.raises(lm.ShapeError, match=r"MultiheadAttention.*attn_mask of shape \(1, 4\)"):
            dec(tgt[:, :1], memory, tgt_mask=np.zeros((1, 1), dtype=bool), cache=cache)
        assert {id(a): (e.length, e.k.shape) for a, e in cache._entries.items()} == entries
        dec(tgt[:, :1], memory, tgt_key_padding_mask=np.zeros((2, 4), dtype=bool), cache=cache)
    assert cache.length == 4


def test_cached_decoding_under_mixed_precision_tracks_the_full_run():
    rng = np.random.default_rng(11)
    tgt, memory = rng.standard_normal((2, 6, 16)).astype(np.float32), rng.standard_normal((2, 7, 16)).astype(np.float32)
    lm.manual_seed(3)
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(16, 4, 32, dropout=0.0, norm_first=True, causal=True), 2)
    lm.amp.autocast(dec, "bfloat16")
    with warnings.catch_warnings(), lm.no_grad():
        warnings.simplefilter("ignore", lm.PerformanceWarning)
        full = dec(tgt, memory).astype(np.float32)
        cache = lm.KVCache()
        step = np.concatenate([dec(tgt[:, i:i + 1], memory, cache=cache) for i in range(6)], axis=1)
    assert step.dtype.name == "bfloat16" and cache._entries[dec.layers[0].self_attn].k.dtype.name == "bfloat16"
    assert np.abs(step.astype(np.float32) - full).max() < 0.03 * np.abs(full).max()
