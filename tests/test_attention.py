"""LayerNorm, MultiheadAttention and TransformerEncoderLayer beyond the
contract harness of test_layers.py (which runs gradcheck and PyTorch parity
on each): errors, dropout and checkpointing, mixed precision, a PyTorch
state_dict loaded one to one, and training."""

import warnings

import numpy as np
import pytest
from harness import assert_same_step

import lamina as lm


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
