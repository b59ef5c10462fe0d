"""Every layer through the contract harness: gradcheck (float64), PyTorch
parity (float32), state_dict round trip, an SGD step; then the errors."""

import zlib

import numpy as np
import pytest
from harness import check_layer, random_inputs, to_numpy

import lamina as lm


def _torch_linear_act(t, i, o, act, bias=True):
    """nn.Linear followed by an activation, with Linear's parameter names (the twin of Dense(activation=...))."""
    fn = {"relu": t.nn.functional.relu, "gelu": t.nn.functional.gelu,
          "gelu_tanh": lambda z: t.nn.functional.gelu(z, approximate="tanh")}[act]

    class LinearAct(t.nn.Linear):
        def forward(self, x):
            return fn(super().forward(x))

    return LinearAct(i, o, bias=bias)


def _torch_self_attention(t, e, h, causal=False, bias=True):
    """nn.MultiheadAttention called as self-attention (the twin of MultiheadAttention)."""

    class SelfAttention(t.nn.MultiheadAttention):
        def forward(self, x):
            mask = t.triu(t.ones(x.shape[1], x.shape[1], dtype=t.bool), 1) if causal else None
            return super().forward(x, x, x, need_weights=False, attn_mask=mask)[0]

    return SelfAttention(e, h, bias=bias, batch_first=True)


def _torch_encoder_layer(t, e, h, ff, activation, norm_first, causal=False):
    class Encoder(t.nn.TransformerEncoderLayer):
        def forward(self, x):
            mask = t.triu(t.full((x.shape[1], x.shape[1]), float("-inf")), 1) if causal else None
            return super().forward(x, src_mask=mask)

    return Encoder(e, h, ff, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first)


def _torch_random_weight(layer, low=0.5, high=1.5):
    """A PyTorch layer whose weight (ones, or one constant, at first) is
    random, so the parity check sees each element of it."""
    import torch

    with torch.no_grad():
        layer.weight.uniform_(low, high)
    return layer


def _torch_recurrent(t, kind, *args, last=False, **kwargs):
    """nn.RNN/LSTM/GRU returning only its output (the twin of a lamina recurrent
    layer), or with ``last`` the last layer's final hidden state, directions
    concatenated (the twin of ``return_sequences=False``)."""
    base = getattr(t.nn, kind)

    class Recurrent(base):
        def forward(self, x):
            y, state = super().forward(x)
            if not last:
                return y
            h = (state[0] if kind == "LSTM" else state)[-(2 if self.bidirectional else 1):]
            return h.transpose(0, 1).reshape(x.shape[0], -1)

    return Recurrent(*args, **kwargs)


# (N, L, features): batch 1, one step, odd lengths
SEQ_SHAPES = [(1, 1, 3), (2, 4, 3), (1, 6, 3), (3, 2, 3), (2, 5, 3)]

ATTN_SHAPES = [(1, 1, 4), (2, 3, 4), (1, 5, 4), (3, 2, 4), (2, 7, 4)]

# name -> (lamina factory, torch factory(torch) or None, input shapes, kink)
CASES = {
    "layernorm": (lambda: lm.LayerNorm(5), lambda t: t.nn.LayerNorm(5), [(1, 5), (3, 5), (2, 3, 5), (7, 5), (1, 1, 5)], None),
    "layernorm_2d_no_bias": (
        lambda: lm.LayerNorm((3, 4), bias=False), lambda t: t.nn.LayerNorm((3, 4), bias=False),
        [(1, 3, 4), (2, 3, 4), (5, 3, 4), (2, 2, 3, 4), (3, 4)], None,
    ),
    "layernorm_no_affine": (
        lambda: lm.LayerNorm(6, elementwise_affine=False), lambda t: t.nn.LayerNorm(6, elementwise_affine=False),
        [(1, 6), (4, 6), (2, 3, 6), (9, 6), (1, 1, 6)], None,
    ),
    "rmsnorm": (  # eps=None: the dtype's machine epsilon, as PyTorch
        lambda: lm.RMSNorm(5), lambda t: _torch_random_weight(t.nn.RMSNorm(5)), [(1, 5), (4, 5), (2, 3, 5), (9, 5), (1, 1, 5)], None,
    ),
    "rmsnorm_2d_no_affine": (
        lambda: lm.RMSNorm((3, 4), eps=1e-3, elementwise_affine=False),
        lambda t: t.nn.RMSNorm((3, 4), eps=1e-3, elementwise_affine=False), [(1, 3, 4), (2, 3, 4), (5, 3, 4), (2, 2, 3, 4), (3, 4)], None,
    ),
    "groupnorm": (
        lambda: lm.GroupNorm(2, 6), lambda t: t.nn.GroupNorm(2, 6), [(1, 6, 3, 3), (2, 6, 4, 5), (3, 6, 7), (2, 6), (1, 6, 1, 2)], None,
    ),
    "groupnorm_one_group_no_affine": (
        lambda: lm.GroupNorm(1, 3, affine=False), lambda t: t.nn.GroupNorm(1, 3, affine=False),
        [(1, 3, 2, 2), (2, 3, 5), (4, 3, 3, 1), (2, 3, 2, 2, 2), (3, 3, 4)], None,
    ),
    "groupnorm_instance": (  # one group per channel: instance normalisation
        lambda: lm.GroupNorm(4, 4, eps=1e-3), lambda t: t.nn.GroupNorm(4, 4, eps=1e-3),
        [(1, 4, 3, 3), (2, 4, 2, 5), (3, 4, 6), (2, 4, 1, 3), (1, 4, 4, 4)], None,
    ),
    "adaptive_avg_pool_2d": (  # bins that overlap (7 -> 3) and that split evenly (4 -> 2), and upsampling (1 -> 3)
        lambda: lm.AdaptiveAvgPool2D((3, 2)), lambda t: t.nn.AdaptiveAvgPool2d((3, 2)),
        [(1, 1, 7, 4), (2, 3, 5, 5), (1, 2, 3, 2), (3, 1, 1, 6), (2, 2, 9, 3)], None,
    ),
    "adaptive_avg_pool_2d_global_and_none": (
        lambda: lm.AdaptiveAvgPool2D((1, None)), lambda t: t.nn.AdaptiveAvgPool2d((1, None)),
        [(1, 1, 7, 4), (2, 3, 5, 5), (1, 2, 3, 2), (3, 1, 1, 6), (2, 2, 9, 3)], None,
    ),
    "adaptive_avg_pool_1d": (
        lambda: lm.AdaptiveAvgPool1D(4), lambda t: t.nn.AdaptiveAvgPool1d(4), [(1, 1, 7), (2, 3, 4), (1, 2, 10), (3, 1, 3), (2, 2, 1)], None,
    ),
    "adaptive_max_pool_2d": (  # overlapping bins (7 -> 3, 5 -> 4), even ones (4 -> 2), upsampling (1 -> 3)
        lambda: lm.AdaptiveMaxPool2D((3, 4)), lambda t: t.nn.AdaptiveMaxPool2d((3, 4)),
        [(1, 1, 7, 5), (2, 3, 6, 4), (1, 2, 3, 9), (3, 1, 1, 6), (2, 2, 9, 3)], None,
    ),
    "adaptive_max_pool_2d_global_and_none": (
        lambda: lm.AdaptiveMaxPool2D((1, None)), lambda t: t.nn.AdaptiveMaxPool2d((1, None)),
        [(1, 1, 7, 4), (2, 3, 5, 5), (1, 2, 3, 2), (3, 1, 1, 6), (2, 2, 9, 3)], None,
    ),
    "adaptive_max_pool_1d": (
        lambda: lm.AdaptiveMaxPool1D(4), lambda t: t.nn.AdaptiveMaxPool1d(4), [(1, 1, 7), (2, 3, 4), (1, 2, 10), (3, 1, 3), (2, 2, 1)], None,
    ),
    "upsample_nearest_2x": (
        lambda: lm.Upsample(scale_factor=2), lambda t: t.nn.Upsample(scale_factor=2),
        [(1, 1, 2, 3), (2, 3, 4, 4), (1, 2, 1, 5), (3, 1, 3, 2), (2, 2, 5, 1)], None,
    ),
    "upsample_nearest_size": (  # not a multiple: 5 -> 7, 3 -> 8
        lambda: lm.Upsample(size=(7, 8)), lambda t: t.nn.Upsample(size=(7, 8)),
        [(1, 1, 5, 3), (2, 3, 5, 3), (1, 2, 4, 4), (3, 1, 2, 6), (2, 2, 7, 8)], None,
    ),
    "upsample_bilinear_2x": (
        lambda: lm.Upsample(scale_factor=2, mode="bilinear"),
        lambda t: t.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        [(1, 1, 2, 3), (2, 3, 4, 4), (1, 2, 1, 5), (3, 1, 3, 2), (2, 2, 5, 1)], None,
    ),
    "upsample_bilinear_size_align_corners": (
        lambda: lm.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
        lambda t: t.nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
        [(1, 1, 2, 3), (2, 3, 4, 4), (1, 2, 1, 5), (3, 1, 3, 2), (2, 2, 5, 1)], None,
    ),
    "upsample_linear_1d": (
        lambda: lm.Upsample(scale_factor=1.5, mode="linear"),
        lambda t: t.nn.Upsample(scale_factor=1.5, mode="linear", align_corners=False),
        [(1, 1, 2), (2, 3, 4), (1, 2, 7), (3, 1, 3), (2, 2, 1)], None,
    ),
    "upsample_bicubic_2x": (  # the 4-tap window reaches past the edges of every small input: clamped weights
        lambda: lm.Upsample(scale_factor=2, mode="bicubic"),
        lambda t: t.nn.Upsample(scale_factor=2, mode="bicubic", align_corners=False),
        [(1, 1, 2, 3), (2, 3, 4, 4), (1, 2, 1, 5), (3, 1, 3, 2), (2, 2, 5, 1)], None,
    ),
    "upsample_bicubic_size_align_corners": (  # shrinking one axis, growing the other
        lambda: lm.Upsample(size=(3, 9), mode="bicubic", align_corners=True),
        lambda t: t.nn.Upsample(size=(3, 9), mode="bicubic", align_corners=True),
        [(1, 1, 2, 3), (2, 3, 7, 4), (1, 2, 1, 5), (3, 1, 5, 2), (2, 2, 6, 1)], None,
    ),
    "upsample_nearest_exact_size": (
        lambda: lm.Upsample(size=(7, 3), mode="nearest-exact"), lambda t: t.nn.Upsample(size=(7, 3), mode="nearest-exact"),
        [(1, 1, 5, 3), (2, 3, 5, 8), (1, 2, 4, 4), (3, 1, 2, 6), (2, 2, 7, 5)], None,
    ),
    "upsample_nearest_exact_1d": (
        lambda: lm.Upsample(scale_factor=1.5, mode="nearest-exact"),
        lambda t: t.nn.Upsample(scale_factor=1.5, mode="nearest-exact"),
        [(1, 1, 2), (2, 3, 4), (1, 2, 7), (3, 1, 3), (2, 2, 5)], None,
    ),
    "unfold": (lambda: lm.Unfold(3), lambda t: t.nn.Unfold(3), [(1, 1, 3, 3), (2, 3, 5, 4), (1, 2, 4, 6), (3, 4, 5), (2, 1, 7, 3)], None),
    "unfold_strided_dilated_padded": (
        lambda: lm.Unfold((2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3)),
        lambda t: t.nn.Unfold((2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3)),
        [(1, 2, 5, 7), (3, 1, 4, 4), (2, 4, 6), (1, 1, 1, 1), (2, 3, 3, 5)], None,
    ),
    "fold": (lambda: lm.Fold((4, 5), 2), lambda t: t.nn.Fold((4, 5), 2), [(1, 4, 12), (2, 8, 12), (12, 12), (3, 4, 12), (1, 16, 12)], None),
    "fold_strided_dilated_padded": (
        lambda: lm.Fold((7, 6), (3, 2), dilation=(1, 2), padding=1, stride=(2, 1)),
        lambda t: t.nn.Fold((7, 6), (3, 2), dilation=(1, 2), padding=1, stride=(2, 1)),
        [(2, 12, 24), (1, 6, 24), (12, 24), (3, 6, 24), (1, 18, 24)], None,
    ),
    "upsample_nearest_1d_size": (
        lambda: lm.Upsample(size=11), lambda t: t.nn.Upsample(size=11), [(1, 1, 2), (2, 3, 4), (1, 2, 7), (3, 1, 3), (2, 2, 5)], None,
    ),
    "attention": (lambda: lm.MultiheadAttention(4, 2), lambda t: _torch_self_attention(t, 4, 2), ATTN_SHAPES, None),
    "attention_causal_one_head": (
        lambda: lm.MultiheadAttention(4, 1, causal=True), lambda t: _torch_self_attention(t, 4, 1, causal=True), ATTN_SHAPES, None,
    ),
    "attention_no_bias": (
        lambda: lm.MultiheadAttention(6, 3, bias=False), lambda t: _torch_self_attention(t, 6, 3, bias=False),
        [(1, 1, 6), (2, 3, 6), (1, 4, 6), (3, 2, 6), (2, 5, 6)], None,
    ),
    "encoder_pre_ln_gelu": (
        lambda: lm.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu", norm_first=True),
        lambda t: _torch_encoder_layer(t, 4, 2, 6, "gelu", True), ATTN_SHAPES, None,
    ),
    "encoder_post_ln_relu_causal": (
        lambda: lm.TransformerEncoderLayer(4, 1, 5, dropout=0.0, norm_first=False, causal=True),
        lambda t: _torch_encoder_layer(t, 4, 1, 5, "relu", False, causal=True), ATTN_SHAPES, None,
    ),
    "rnn": (lambda: lm.RNN(3, 4), lambda t: _torch_recurrent(t, "RNN", 3, 4, batch_first=True), SEQ_SHAPES, None),
    "rnn_relu_2_layers_time_major": (
        lambda: lm.RNN(3, 5, 2, nonlinearity="relu", batch_first=False),
        lambda t: _torch_recurrent(t, "RNN", 3, 5, 2, nonlinearity="relu"), SEQ_SHAPES, None,
    ),
    "lstm": (lambda: lm.LSTM(3, 4), lambda t: _torch_recurrent(t, "LSTM", 3, 4, batch_first=True), SEQ_SHAPES, None),
    "lstm_bidirectional_2_layers": (
        lambda: lm.LSTM(3, 2, 2, bidirectional=True),
        lambda t: _torch_recurrent(t, "LSTM", 3, 2, 2, bidirectional=True, batch_first=True), SEQ_SHAPES, None,
    ),
    "lstm_last_no_bias": (
        lambda: lm.LSTM(3, 4, bias=False, bidirectional=True, return_sequences=False),
        lambda t: _torch_recurrent(t, "LSTM", 3, 4, bias=False, bidirectional=True, batch_first=True, last=True),
        SEQ_SHAPES, None,
    ),
    "gru": (lambda: lm.GRU(3, 4), lambda t: _torch_recurrent(t, "GRU", 3, 4, batch_first=True), SEQ_SHAPES, None),
    "gru_bidirectional_2_layers_time_major": (
        lambda: lm.GRU(3, 3, 2, bidirectional=True, batch_first=False),
        lambda t: _torch_recurrent(t, "GRU", 3, 3, 2, bidirectional=True), SEQ_SHAPES, None,
    ),
    "instancenorm_1d": (
        lambda: lm.InstanceNorm1d(3), lambda t: t.nn.InstanceNorm1d(3), [(1, 3, 4), (2, 3, 5), (3, 3, 2), (3, 7), (4, 3, 3)], None,
    ),
    "instancenorm_2d_affine": (
        lambda: lm.InstanceNorm2d(2, affine=True), lambda t: _torch_random_weight(t.nn.InstanceNorm2d(2, affine=True)),
        [(1, 2, 3, 3), (2, 2, 2, 5), (2, 3, 4), (3, 2, 1, 3), (1, 2, 4, 2)], None,
    ),
    "instancenorm_2d_tracked": (  # training mode: instance statistics, running ones updated
        lambda: lm.InstanceNorm2d(3, affine=True, track_running_stats=True),
        lambda t: _torch_random_weight(t.nn.InstanceNorm2d(3, affine=True, track_running_stats=True)),
        [(1, 3, 2, 2), (2, 3, 3, 4), (4, 3, 2, 3), (3, 2, 5), (2, 3, 5, 2)], None,
    ),
    "pixel_shuffle": (
        lambda: lm.PixelShuffle(2), lambda t: t.nn.PixelShuffle(2), [(1, 4, 2, 3), (2, 8, 3, 2), (4, 3, 3), (2, 1, 4, 2, 2), (1, 4, 1, 1)],
        None,
    ),
    "pixel_shuffle_3": (lambda: lm.PixelShuffle(3), lambda t: t.nn.PixelShuffle(3), [(1, 9, 2, 2), (2, 18, 1, 3), (9, 2, 1), (1, 9, 3, 2), (3, 9, 1, 1)], None),
    "pixel_unshuffle": (
        lambda: lm.PixelUnshuffle(2), lambda t: t.nn.PixelUnshuffle(2), [(1, 1, 2, 4), (2, 3, 4, 2), (2, 6, 4), (1, 2, 2, 2), (2, 1, 2, 4, 6)],
        None,
    ),
    "unflatten": (lambda: lm.Unflatten(1, (2, 3)), lambda t: t.nn.Unflatten(1, (2, 3)), [(1, 6), (3, 6), (2, 6, 4), (1, 6, 1), (5, 6)], None),
    "unflatten_last_inferred": (
        lambda: lm.Unflatten(-1, (2, -1)), lambda t: t.nn.Unflatten(-1, (2, -1)), [(1, 4), (3, 2), (2, 3, 6), (8,), (2, 10)], None,
    ),
    "zero_pad_2d": (
        lambda: lm.ZeroPad2d((1, 0, 2, 1)), lambda t: t.nn.ZeroPad2d((1, 0, 2, 1)), [(1, 2, 3, 3), (2, 1, 1, 4), (3, 2, 5), (2, 3, 2, 2), (1, 1, 1, 1)],
        None,
    ),
    "constant_pad_1d": (
        lambda: lm.ConstantPad1d((2, 1), 0.5), lambda t: t.nn.ConstantPad1d((2, 1), 0.5), [(1, 2, 3), (2, 3, 1), (3, 4), (2, 1, 5), (1, 1, 1)], None,
    ),
    "reflection_pad_1d": (
        lambda: lm.ReflectionPad1d((2, 3)), lambda t: t.nn.ReflectionPad1d((2, 3)), [(1, 2, 4), (2, 1, 7), (3, 5), (2, 3, 6), (1, 1, 4)], None,
    ),
    "reflection_pad_2d": (
        lambda: lm.ReflectionPad2d((1, 2, 2, 0)), lambda t: t.nn.ReflectionPad2d((1, 2, 2, 0)),
        [(1, 2, 3, 3), (2, 1, 4, 5), (3, 3, 4), (2, 2, 5, 3), (1, 1, 3, 3)], None,
    ),
    "replication_pad_1d": (
        lambda: lm.ReplicationPad1d((3, 1)), lambda t: t.nn.ReplicationPad1d((3, 1)), [(1, 2, 1), (2, 1, 4), (3, 5), (2, 3, 2), (1, 1, 1)], None,
    ),
    "replication_pad_2d": (
        lambda: lm.ReplicationPad2d(2), lambda t: t.nn.ReplicationPad2d(2), [(1, 2, 1, 1), (2, 1, 3, 4), (3, 2, 3), (2, 2, 4, 3), (1, 1, 2, 1)], None,
    ),
    "circular_pad_1d": (
        lambda: lm.CircularPad1d((3, 1)), lambda t: t.nn.CircularPad1d((3, 1)), [(1, 2, 3), (2, 1, 4), (3, 5), (2, 3, 6), (1, 1, 3)], None,
    ),
    "circular_pad_2d": (
        lambda: lm.CircularPad2d((0, 2, 1, 3)), lambda t: t.nn.CircularPad2d((0, 2, 1, 3)),
        [(1, 2, 3, 2), (2, 1, 4, 5), (3, 3, 4), (2, 2, 5, 3), (1, 1, 3, 2)], None,
    ),
    "dense_relu": (
        lambda: lm.Dense(6, 5, activation="relu"), lambda t: _torch_linear_act(t, 6, 5, "relu"),
        [(1, 6), (4, 6), (9, 6), (2, 3, 6), (3, 1, 6)], None,
    ),
    "dense_gelu_no_bias": (
        lambda: lm.Dense(7, 3, bias=False, activation="gelu"), lambda t: _torch_linear_act(t, 7, 3, "gelu", bias=False),
        [(1, 7), (2, 7), (5, 7), (3, 2, 7), (11, 7)], None,
    ),
    "dense_gelu_tanh": (
        lambda: lm.Dense(4, 9, activation="gelu_tanh"), lambda t: _torch_linear_act(t, 4, 9, "gelu_tanh"),
        [(1, 4), (3, 4), (8, 4), (2, 2, 4), (5, 4)], None,
    ),
    "dense": (lambda: lm.Dense(5, 3), lambda t: t.nn.Linear(5, 3), [(1, 5), (3, 5), (7, 5), (2, 3, 5), (4, 1, 5)], None),
    "dense_no_bias": (
        lambda: lm.Dense(7, 4, bias=False), lambda t: t.nn.Linear(7, 4, bias=False),
        [(1, 7), (2, 7), (5, 7), (3, 2, 7), (11, 7)], None,
    ),
    "dense_wide": (lambda: lm.Dense(17, 33), lambda t: t.nn.Linear(17, 33), [(1, 17), (2, 17), (13, 17), (3, 17), (1, 1, 17)], None),
    "relu": (lambda: lm.ReLU(), lambda t: t.nn.ReLU(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0),
    "leaky_relu": (
        lambda: lm.LeakyReLU(0.2), lambda t: t.nn.LeakyReLU(0.2), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0,
    ),
    "sigmoid": (lambda: lm.Sigmoid(), lambda t: t.nn.Sigmoid(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "tanh": (lambda: lm.Tanh(), lambda t: t.nn.Tanh(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "gelu": (lambda: lm.GELU(), lambda t: t.nn.GELU(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "gelu_tanh": (
        lambda: lm.GELU("tanh"), lambda t: t.nn.GELU(approximate="tanh"), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None,
    ),
    "silu": (lambda: lm.SiLU(), lambda t: t.nn.SiLU(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1), (4, 9)], None),
    "prelu_shared": (
        lambda: lm.PReLU(), lambda t: _torch_random_weight(t.nn.PReLU(), -0.5, 0.5), [(1, 8), (3, 5), (2, 3, 4), (9,), (1, 2, 5)], 0.0,
    ),
    "prelu_per_channel": (
        lambda: lm.PReLU(3, init=0.1), lambda t: _torch_random_weight(t.nn.PReLU(3, init=0.1), -0.5, 0.5),
        [(2, 3), (4, 3), (2, 3, 5), (2, 3, 4, 4), (1, 3, 2, 2)], 0.0,
    ),
    "hardtanh": (  # the kinks inside the inputs' range: both sides of each are checked
        lambda: lm.Hardtanh(-0.5, 0.8), lambda t: t.nn.Hardtanh(-0.5, 0.8), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)],
        (-0.5, 0.8),
    ),
    "relu6": (lambda: lm.ReLU6(), lambda t: t.nn.ReLU6(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0),
    "hardsigmoid": (lambda: lm.Hardsigmoid(), lambda t: t.nn.Hardsigmoid(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "hardswish": (lambda: lm.Hardswish(), lambda t: t.nn.Hardswish(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "elu": (lambda: lm.ELU(), lambda t: t.nn.ELU(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "elu_alpha": (lambda: lm.ELU(0.5), lambda t: t.nn.ELU(0.5), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0),
    "softplus": (lambda: lm.Softplus(), lambda t: t.nn.Softplus(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "selu": (lambda: lm.SELU(), lambda t: t.nn.SELU(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0),
    "celu": (lambda: lm.CELU(0.7), lambda t: t.nn.CELU(0.7), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0),
    "log_sigmoid": (lambda: lm.LogSigmoid(), lambda t: t.nn.LogSigmoid(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "softsign": (lambda: lm.Softsign(), lambda t: t.nn.Softsign(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.0),
    "tanhshrink": (lambda: lm.Tanhshrink(), lambda t: t.nn.Tanhshrink(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "threshold": (lambda: lm.Threshold(0.3, -2.0), lambda t: t.nn.Threshold(0.3, -2.0), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)],
                  0.3),
    "hardshrink": (lambda: lm.Hardshrink(0.4), lambda t: t.nn.Hardshrink(0.4), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)],
                   (-0.4, 0.4)),
    "softshrink": (lambda: lm.Softshrink(0.4), lambda t: t.nn.Softshrink(0.4), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)],
                   (-0.4, 0.4)),
    "glu": (lambda: lm.GLU(), lambda t: t.nn.GLU(), [(1, 4), (3, 6), (2, 3, 4), (8,), (1, 1, 2)], None),
    "glu_dim1": (lambda: lm.GLU(1), lambda t: t.nn.GLU(1), [(1, 4), (3, 6), (2, 4, 3), (1, 2), (2, 2, 1)], None),
    "softmin_dim0": (lambda: lm.Softmin(0), lambda t: t.nn.Softmin(0), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1)], None),
    "softplus_beta_threshold": (  # βx > threshold is the identity: both sides of it in range
        lambda: lm.Softplus(2.0, 1.5), lambda t: t.nn.Softplus(2.0, 1.5), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], 0.75,
    ),
    "mish": (lambda: lm.Mish(), lambda t: t.nn.Mish(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "log_softmax": (lambda: lm.LogSoftmax(), lambda t: t.nn.LogSoftmax(dim=-1), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1)], None),
    "log_softmax_dim1": (
        lambda: lm.LogSoftmax(dim=1), lambda t: t.nn.LogSoftmax(dim=1), [(1, 4), (3, 5), (2, 3, 4), (2, 1, 3), (1, 6)], None,
    ),
    "softmax": (lambda: lm.Softmax(), lambda t: t.nn.Softmax(dim=-1), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1)], None),
    "softmax_dim1": (lambda: lm.Softmax(dim=1), lambda t: t.nn.Softmax(dim=1), [(1, 4), (3, 5), (2, 3, 4), (2, 1, 3), (1, 6)], None),
    "identity": (lambda: lm.Identity(), lambda t: t.nn.Identity(), [(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], None),
    "flatten": (lambda: lm.Flatten(), lambda t: t.nn.Flatten(), [(1, 4), (3, 5), (2, 3, 4), (2, 3, 1, 2), (1, 1, 1)], None),
    "flatten_mid": (
        lambda: lm.Flatten(1, 2), lambda t: t.nn.Flatten(1, 2), [(1, 2, 3, 2), (3, 1, 5, 1), (2, 3, 4, 2), (1, 1, 1, 3), (2, 2, 2, 2)],
        None,
    ),
    "local_response_norm": (
        lambda: lm.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.5), lambda t: t.nn.LocalResponseNorm(3, 0.5, 0.75, 1.5),
        [(1, 5, 3), (2, 4, 3, 3), (3, 1, 4), (2, 7, 2, 3), (1, 2, 2, 2, 2)], None,
    ),
    "local_response_norm_even_size": (  # an even window: ⌊n/2⌋ channels before, ⌊(n-1)/2⌋ after
        lambda: lm.LocalResponseNorm(4, alpha=2.0, beta=0.5), lambda t: t.nn.LocalResponseNorm(4, 2.0, 0.5),
        [(1, 6, 2), (2, 3, 3, 2), (1, 9, 1), (3, 5, 2, 2), (2, 2, 3)], None,
    ),
    "lp_pool_2d": (
        lambda: lm.LPPool2D(2, 2), lambda t: t.nn.LPPool2d(2, 2), [(1, 2, 4, 4), (2, 3, 5, 4), (1, 1, 2, 6), (3, 2, 3, 3), (1, 1, 2, 2)],
        None,
    ),
    "lp_pool_2d_strided_ceil": (  # overlapping windows, ceil_mode windows past the edge (other p: test_lp_pool_...)
        lambda: lm.LPPool2D(2, (3, 2), stride=(2, 1), ceil_mode=True),
        lambda t: t.nn.LPPool2d(2, (3, 2), stride=(2, 1), ceil_mode=True),
        [(1, 2, 4, 4), (2, 1, 6, 3), (1, 3, 3, 2), (2, 2, 5, 5), (1, 1, 4, 2)], None,
    ),
    "lp_pool_1d": (
        lambda: lm.LPPool1D(2, 3, stride=2), lambda t: t.nn.LPPool1d(2, 3, stride=2),
        [(1, 2, 5), (2, 3, 8), (1, 1, 3), (3, 2, 7), (2, 1, 4)], None,
    ),
    "channel_shuffle": (
        lambda: lm.ChannelShuffle(3), lambda t: t.nn.ChannelShuffle(3),
        [(1, 6, 2, 2), (2, 3, 4), (1, 12, 1, 3), (2, 6, 1), (1, 3, 2, 2, 2)], None,
    ),
    "sequential": (
        lambda: lm.Sequential(lm.Dense(6, 8), lm.Tanh(), lm.Dense(8, 3), lm.GELU()),
        lambda t: t.nn.Sequential(t.nn.Linear(6, 8), t.nn.Tanh(), t.nn.Linear(8, 3), t.nn.GELU()),
        [(1, 6), (2, 6), (9, 6), (3, 2, 6), (4, 6)], None,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_contract(name, torch, xp):
    make, torch_make, shapes, kink = CASES[name]
    inputs = random_inputs(shapes, np.random.default_rng(zlib.crc32(name.encode())), away_from=kink)
    assert len(inputs) >= 6
    check_layer(make, inputs, torch_make=lambda: torch_make(torch), torch=torch, xp=xp)


# ---------------------------------------------------------------------------
# Dropout: random, so no PyTorch parity; its own checks instead
# ---------------------------------------------------------------------------


def test_dropout_gradcheck():
    rng = np.random.default_rng(0)
    for x in random_inputs([(1, 4), (3, 5), (2, 3, 4), (7,), (1, 1, 1)], rng):
        assert lm.testing.gradcheck(lm.Dropout(0.3), x)


def test_dropout_train_masks_and_scales(xp):
    layer = lm.Dropout(0.25)
    x = xp.ones((400, 50), dtype=xp.float32)
    y = to_numpy(layer(x))
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    dy = xp.asarray(np.random.default_rng(1).standard_normal((400, 50)).astype(np.float32))
    dx = to_numpy(layer.backward(dy))
    np.testing.assert_allclose(dx, to_numpy(dy) * kept / 0.75, rtol=1e-6)


def test_dropout_eval_and_p0_are_identity(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    for layer in (lm.Dropout(0.5).eval(), lm.Dropout(0.0)):
        np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(x))
        np.testing.assert_array_equal(to_numpy(layer.backward(x)), to_numpy(x))


def test_dropout_is_seeded(xp):
    x = xp.ones((64, 64), dtype=xp.float32)
    lm.manual_seed(5)
    a = to_numpy(lm.Dropout(0.5)(x))
    lm.manual_seed(5)
    b = to_numpy(lm.Dropout(0.5)(x))
    c = to_numpy(lm.Dropout(0.5)(x))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_dropout_replays_from_saved_rng_state(xp):
    x = xp.ones((32, 32), dtype=xp.float32)
    state = lm.get_rng_state()
    a = to_numpy(lm.Dropout(0.5)(x))
    lm.set_rng_state(state)
    np.testing.assert_array_equal(a, to_numpy(lm.Dropout(0.5)(x)))


def test_dropout_rejects_bad_p():
    for p in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="Dropout"):
            lm.Dropout(p)


# ---------------------------------------------------------------------------
# errors: named layer, expected and received, layer untouched
# ---------------------------------------------------------------------------

ALL_LAYERS = [name for name in CASES] + ["dropout"]


def _make(name):
    return lm.Dropout(0.5) if name == "dropout" else CASES[name][0]()


_GOOD_SHAPES = {"layernorm_2d_no_bias": (2, 3, 4), "layernorm_no_affine": (3, 6), "attention": (2, 3, 4),
                "attention_causal_one_head": (2, 3, 4), "attention_no_bias": (2, 3, 6), "encoder_pre_ln_gelu": (2, 3, 4),
                "encoder_post_ln_relu_causal": (2, 3, 4), "dense_no_bias": (3, 7), "dense_relu": (3, 6), "dense_gelu_no_bias": (3, 7), "dense_gelu_tanh": (3, 4), "dense_wide": (3, 17), "flatten_mid": (2, 3, 4, 2), "sequential": (2, 6), "glu": (3, 6), "glu_dim1": (3, 4), "unfold": (2, 3, 5, 4), "unfold_strided_dilated_padded": (2, 3, 5, 4),
                "fold": (2, 8, 12), "fold_strided_dilated_padded": (2, 12, 24),
                **{name: (2, 3, 4, 4) for name in CASES if name.startswith("upsample") and "1d" not in name},
                **{name: (2, 3, 5) for name in CASES if name.startswith("upsample") and "1d" in name},
                "adaptive_avg_pool_2d": (2, 3, 7, 5), "adaptive_avg_pool_2d_global_and_none": (2, 3, 7, 5),
                "adaptive_avg_pool_1d": (2, 3, 7), "adaptive_max_pool_2d": (2, 3, 7, 5),
                "adaptive_max_pool_2d_global_and_none": (2, 3, 7, 5), "adaptive_max_pool_1d": (2, 3, 7),
                "groupnorm": (2, 6, 3), "groupnorm_one_group_no_affine": (2, 3, 5), "groupnorm_instance": (2, 4, 3, 3),
                "rmsnorm_2d_no_affine": (2, 3, 4), "prelu_per_channel": (2, 3, 4),
                "instancenorm_1d": (2, 3, 5), "instancenorm_2d_affine": (2, 2, 3, 3), "instancenorm_2d_tracked": (2, 3, 3, 3),
                "pixel_shuffle": (2, 4, 2, 2), "pixel_shuffle_3": (1, 9, 2, 2), "pixel_unshuffle": (2, 1, 4, 4),
                "unflatten": (3, 6), "unflatten_last_inferred": (3, 4), "zero_pad_2d": (2, 3, 4, 4),
                "reflection_pad_2d": (2, 3, 4, 4), "replication_pad_2d": (2, 3, 4, 4), "circular_pad_2d": (2, 3, 4, 4),
                "constant_pad_1d": (2, 3, 5), "reflection_pad_1d": (2, 3, 5), "replication_pad_1d": (2, 3, 5),
                "circular_pad_1d": (2, 3, 5), "local_response_norm": (2, 4, 3), "local_response_norm_even_size": (2, 4, 3),
                "lp_pool_2d": (2, 3, 4, 4), "lp_pool_2d_strided_ceil": (2, 3, 4, 4), "lp_pool_1d": (2, 3, 5),
                "channel_shuffle": (2, 6, 2),
                **{name: (2, 4, 3) for name in CASES if name.startswith(("rnn", "lstm", "gru"))}}


def _good_input(name):
    shape = _GOOD_SHAPES.get(name, (3, 5))
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _snapshot(layer):
    return {k: np.array(v, copy=True) for k, v in layer.state_dict().items()}


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_integer_input_is_a_dtype_error(name):
    layer = _make(name)
    before = _snapshot(layer)
    x = _good_input(name).astype(np.int64)
    with pytest.raises(lm.DTypeError) as e:
        layer(x)
    msg = str(e.value)
    assert type(layer[0] if name == "sequential" else layer).__name__ in msg and "int64" in msg and "floating" in msg
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())
    assert not layer.has_cache()


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_non_array_input_is_rejected_with_its_type(name, torch):
    layer = _make(name)
    with pytest.raises(lm.DTypeError, match="received torch.Tensor"):
        layer(torch.zeros(_good_input(name).shape))
    with pytest.raises(lm.DTypeError, match="received list"):
        layer(_good_input(name).tolist())


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_wrong_gradient_shape_keeps_the_cache(name):
    layer = _make(name)
    x = _good_input(name)
    y = layer(x)
    bad = np.zeros(y.shape[:-1] + (y.shape[-1] + 1,), dtype=np.float32)
    with pytest.raises(lm.ShapeError) as e:
        layer.backward(bad)
    assert str(tuple(y.shape)) in str(e.value) and str(bad.shape) in str(e.value)
    dx = layer.backward(np.ones_like(y))  # the failed call changed nothing
    assert dx.shape == x.shape


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_backward_without_forward(name):
    layer = _make(name)
    with pytest.raises(lm.CacheError, match="backward"):
        layer.backward(np.ones((3, 5), dtype=np.float32))


def test_dense_wrong_feature_size_names_layer_expected_and_received():
    layer = lm.Dense(5, 3)
    before = _snapshot(layer)
    with pytest.raises(lm.ShapeError) as e:
        layer(np.zeros((4, 6), dtype=np.float32))
    msg = str(e.value)
    assert "Dense(in_features=5, out_features=3" in msg and "size 5" in msg and "(4, 6)" in msg
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())


def test_dense_dtype_must_match_parameters():
    layer = lm.Dense(5, 3)
    with pytest.raises(lm.DTypeError) as e:
        layer(np.zeros((2, 5), dtype=np.float64))
    assert "expected input of dtype float32" in str(e.value) and "received float64" in str(e.value) and "Dense" in str(e.value)
    layer.to(dtype=np.float64)
    assert layer(np.zeros((2, 5))).dtype == np.float64


def test_sequential_error_names_the_inner_layer():
    model = lm.Sequential(lm.Dense(4, 8), lm.ReLU(), lm.Dense(9, 2))
    with pytest.raises(lm.ShapeError, match=r"Dense\(in_features=9, out_features=2"):
        model(np.zeros((2, 4), dtype=np.float32))


def test_softmax_bad_dim_and_flatten_bad_dims():
    with pytest.raises(lm.ShapeError, match="Softmax"):
        lm.Softmax(dim=2)(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match="Flatten"):
        lm.Flatten(1, 3)(np.zeros((2, 3), dtype=np.float32))


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="Dense: expected in_features"):
        lm.Dense(0, 3)
    with pytest.raises(ValueError, match="Dense: expected activation in"):
        lm.Dense(2, 3, activation="swish")
    with pytest.raises(ValueError, match="GELU"):
        lm.GELU("fast")
    with pytest.raises(ValueError, match="LeakyReLU"):
        lm.LeakyReLU(float("nan"))


def test_sigmoid_and_tanh_saturate_without_overflow():
    x = np.array([[-1e4, -80.0, 0.0, 80.0, 1e4]], dtype=np.float32)
    for layer in (lm.Sigmoid(), lm.Tanh()):
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
            y = layer(x)
            dx = layer.backward(np.ones_like(y))
        assert np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_allclose(lm.Sigmoid()(x)[0, [0, 2, 4]], [0.0, 0.5, 1.0])


def test_smooth_activations_saturate_without_overflow_and_match_torch(torch):
    """SiLU, ELU, SELU, CELU, Softplus, Mish, LogSigmoid, Softsign, Softmin and
    LogSoftmax at ±1e4 and ±80: no overflow,
    finite gradients, PyTorch's values."""
    x = np.array([[-1e4, -80.0, -1.0, 0.0, 1.0, 80.0, 1e4]], dtype=np.float32)
    pairs = [(lm.SiLU(), torch.nn.SiLU()), (lm.ELU(), torch.nn.ELU()), (lm.Softplus(), torch.nn.Softplus()),
             (lm.Softplus(0.5, 5.0), torch.nn.Softplus(0.5, 5.0)), (lm.Mish(), torch.nn.Mish()),
             (lm.LogSoftmax(), torch.nn.LogSoftmax(dim=-1)), (lm.SELU(), torch.nn.SELU()), (lm.CELU(0.5), torch.nn.CELU(0.5)),
             (lm.LogSigmoid(), torch.nn.LogSigmoid()), (lm.Softsign(), torch.nn.Softsign()),
             (lm.Softmin(), torch.nn.Softmin(dim=-1))]
    for layer, t in pairs:
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = layer(x)
            dx = layer.backward(np.ones_like(y))
        tx = torch.from_numpy(x).requires_grad_()
        ty = t(tx)
        ty.sum().backward()
        assert np.isfinite(y).all() and np.isfinite(dx).all(), layer
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-6, err_msg=repr(layer))
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=repr(layer))
    with pytest.raises(ValueError, match="Softplus: expected a finite beta > 0"):
        lm.Softplus(0)
    with pytest.raises(ValueError, match="ELU: expected a finite alpha"):
        lm.ELU(float("inf"))
    with pytest.raises(lm.ShapeError, match=r"LogSoftmax\(dim=2\): expected an input with dimension 2"):
        lm.LogSoftmax(dim=2)(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="CELU: expected a finite, non-zero alpha, received 0"):
        lm.CELU(0)
    with pytest.raises(ValueError, match="Softshrink: expected a finite lambd >= 0, received -0.1"):
        lm.Softshrink(-0.1)
    with pytest.raises(ValueError, match="Threshold: expected value as a number, received 'x'"):
        lm.Threshold(0.1, "x")
    glu = lm.GLU(1)
    with pytest.raises(lm.ShapeError, match=r"GLU\(dim=1\): expected an input with an even size in dimension 1, "
                                            r"received shape \(2, 3\)"):
        glu(np.zeros((2, 3), dtype=np.float32))
    assert not glu.has_cache()


def test_groupnorm_is_per_sample_and_validates():
    """GroupNorm normalises each sample alone: a sample gives the same output
    in a batch and by itself, in training and evaluation alike; bf16 inputs
    are normalised in float32."""
    rng = np.random.default_rng(0)
    layer = lm.GroupNorm(3, 6)
    layer.weight.data[...] = rng.standard_normal(6)
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32) * 3 + 2
    with lm.no_grad():
        y = layer(x)
        np.testing.assert_allclose(layer(x[2:3]), y[2:3], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(layer.eval()(x), y)
    groups = ((y - layer.bias.data[:, None, None]) / layer.weight.data[:, None, None]).reshape(4, 3, -1)
    np.testing.assert_allclose(groups.mean(axis=2), 0, atol=1e-5)
    np.testing.assert_allclose(groups.var(axis=2), 1, rtol=1e-3)
    half = lm.amp.autocast(lm.GroupNorm(3, 6), "bfloat16")
    with lm.no_grad():
        yb = half(x)  # cast to bfloat16, normalised in float32, returned in bfloat16
    assert yb.dtype.name == "bfloat16"
    np.testing.assert_allclose(yb.astype(np.float32), lm.GroupNorm(3, 6)(x), atol=0.05)
    with pytest.raises(ValueError, match="GroupNorm: expected num_channels divisible by num_groups, received 6 and 4"):
        lm.GroupNorm(4, 6)
    with pytest.raises(lm.ShapeError, match=r"GroupNorm\(3, 6.*size 6 \(num_channels\) in dimension 1, received shape \(2, 5, 3\)"):
        layer(np.zeros((2, 5, 3), dtype=np.float32))


@pytest.mark.parametrize("name", ["hardtanh", "relu6", "hardsigmoid", "hardswish"])
def test_piecewise_linear_activations_match_pytorch_over_every_piece(name, torch):
    """Inputs over [-8, 8] (the harness's normal inputs rarely reach ±3 or
    6), the kinks themselves included: output and gradient as PyTorch's."""
    make, torch_make, _, _ = CASES[name]
    x = np.concatenate([np.linspace(-8, 8, 161), [-3, 3, 0, 6, -0.5, 0.8]]).astype(np.float32).reshape(1, -1)
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch_make(torch)(tx)
    ty.backward(torch.ones_like(ty))
    layer = make()
    np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), tx.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_prelu_validates_and_trains_its_slopes():
    layer = lm.PReLU(4)
    with pytest.raises(lm.ShapeError, match=r"PReLU\(num_parameters=4\).*size 4 \(num_parameters\) in dimension 1, received shape \(2, 3\)"):
        layer(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="PReLU: expected num_parameters"):
        lm.PReLU(0)
    with pytest.raises(ValueError, match="Hardtanh: expected finite min_val < max_val, received 1 and 1"):
        lm.Hardtanh(1, 1)
    x = -np.ones((2, 4, 3), dtype=np.float32)
    layer(x)
    layer.backward(np.ones_like(x))
    np.testing.assert_allclose(layer.weight.grad, -6)  # Σ dy·x over the 2·3 negative inputs of each channel
    layer.weight.requires_grad = False  # frozen: backward still returns dx, and leaves the slopes' gradient alone
    layer(x)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), 0.25)
    np.testing.assert_allclose(layer.weight.grad, -6)


def test_rmsnorm_scales_rows_to_unit_rms_and_validates():
    """RMSNorm leaves each row with a root mean square of 1 (before the
    weight), keeps its sign and mean direction (no centring), takes eps from
    the input's dtype when None, and computes bf16 inputs in float32."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8)).astype(np.float32) * 5 + 3
    layer = lm.RMSNorm(8, elementwise_affine=False)
    with lm.no_grad():
        y = layer(x)
    np.testing.assert_allclose(np.sqrt((y * y).mean(axis=-1)), 1, rtol=1e-5)
    np.testing.assert_allclose(y / x, np.broadcast_to((y / x)[..., :1], x.shape), rtol=1e-5)  # each row: x times one number
    tiny = np.full((1, 8), 1e-6, dtype=np.float32)  # mean square 1e-12, below float32's epsilon (1.2e-7)
    np.testing.assert_allclose(layer(tiny), 1e-6 / np.sqrt(1e-12 + np.finfo(np.float32).eps), rtol=1e-5)
    half = lm.amp.autocast(lm.RMSNorm(8), "bfloat16")
    with lm.no_grad():
        yb = half(x)
    assert yb.dtype.name == "bfloat16"
    np.testing.assert_allclose(yb.astype(np.float32), y, atol=0.03)
    with pytest.raises(ValueError, match="RMSNorm: expected eps > 0 or None, received 0"):
        lm.RMSNorm(8, eps=0)
    with pytest.raises(lm.ShapeError, match=r"RMSNorm\(\(8,\).*ending in \(8,\) \(normalized_shape\), received shape \(2, 7\)"):
        layer(np.zeros((2, 7), dtype=np.float32))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
def test_upsample_fractional_scales_match_torch(torch, mode):
    """Scale factors that are not integers, one per axis too: the source
    positions use 1/scale_factor, as PyTorch's, and the output size ⌊in · s⌋."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    dy_shape = None
    for scale in (1.7, (2.5, 1.25), 3.0):
        layer = lm.Upsample(scale_factor=scale, mode=mode)
        t = torch.nn.Upsample(scale_factor=scale, mode=mode)
        tx = torch.from_numpy(x).requires_grad_()
        ty = t(tx)
        dy = rng.standard_normal(ty.shape).astype(np.float32)
        (ty * torch.from_numpy(dy)).sum().backward()
        y = layer(x)
        dy_shape = y.shape
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=str(scale))
        np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=str(scale))
    assert dy_shape == (2, 3, 15, 21)


def test_adaptive_avg_pool_is_global_average_pooling_at_size_1_and_validates():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(lm.AdaptiveAvgPool2D(1)(x)[:, :, 0, 0], lm.GlobalAvgPool2D()(x).reshape(2, 3), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2D: expected output_size as 2 positive int\(s\)"):
        lm.AdaptiveAvgPool2D((2, 0))
    with pytest.raises(lm.ShapeError, match=r"AdaptiveAvgPool1D\(output_size=3\): expected a 3-d input \(N, C, L\)"):
        lm.AdaptiveAvgPool1D(3)(x)


def test_upsample_errors_name_the_layer():
    with pytest.raises(ValueError, match="Upsample: expected exactly one of size and scale_factor"):
        lm.Upsample()
    with pytest.raises(ValueError, match="Upsample: expected mode in"):
        lm.Upsample(scale_factor=2, mode="trilinear")
    for mode in ("nearest", "nearest-exact"):
        with pytest.raises(ValueError, match="align_corners applies to linear, bilinear and bicubic modes only"):
            lm.Upsample(scale_factor=2, mode=mode, align_corners=True)
    with pytest.raises(lm.ShapeError, match=r"Upsample\(scale_factor=2.0, mode='bicubic'\): expected a 4-d input"):
        lm.Upsample(scale_factor=2, mode="bicubic")(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"Upsample\(scale_factor=2.0, mode='bilinear'\): expected a 4-d input"):
        lm.Upsample(scale_factor=2, mode="bilinear")(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"expected 2 spatial dimensions, received 1"):
        lm.Upsample(size=(3, 4))(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"gives an empty output"):
        lm.Upsample(scale_factor=0.1)(np.zeros((1, 1, 4, 4), dtype=np.float32))


# ---------------------------------------------------------------------------
# InstanceNorm: running statistics, eval mode, errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_instancenorm_running_stats_and_eval_follow_pytorch(torch, xp, momentum):
    """Five training steps move running_mean/var as PyTorch's (momentum=None
    leaves them alone and num_batches_tracked stays 0, as in PyTorch); eval
    mode then normalises with them, forward and backward."""
    rng = np.random.default_rng(0)
    layer = lm.InstanceNorm2d(3, momentum=momentum, affine=True, track_running_stats=True).to("cpu" if xp is np else "cuda")
    tlayer = torch.nn.InstanceNorm2d(3, momentum=momentum, affine=True, track_running_stats=True)
    for _ in range(5):
        x = (rng.standard_normal((4, 3, 5, 6)) * 2 + 1).astype(np.float32)
        layer(xp.asarray(x))
        tlayer(torch.from_numpy(x))
        layer.clear_cache()
    assert sorted(layer.state_dict()) == sorted(tlayer.state_dict())
    for k, v in tlayer.state_dict().items():
        np.testing.assert_allclose(to_numpy(layer.state_dict()[k]), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    layer.eval(), tlayer.eval()
    with torch.no_grad():
        tlayer.weight.uniform_(0.5, 1.5)
        tlayer.bias.uniform_(-1, 1)
    layer.load_state_dict(tlayer.state_dict())
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_()
    ty = tlayer(tx)
    ty.backward(torch.from_numpy(dy))
    before = {k: to_numpy(v).copy() for k, v in layer.state_dict().items()}
    np.testing.assert_allclose(to_numpy(layer(xp.asarray(x))), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.backward(xp.asarray(dy))), tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.weight.grad), tlayer.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.bias.grad), tlayer.bias.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert all(np.array_equal(before[k], to_numpy(v)) for k, v in layer.state_dict().items())  # eval moved nothing
    assert lm.testing.gradcheck(lm.InstanceNorm1d(3, affine=True, track_running_stats=True).eval().double(),
                                rng.standard_normal((2, 3, 4)))


def test_instancenorm_is_per_sample_and_channel_and_validates():
    rng = np.random.default_rng(1)
    layer = lm.InstanceNorm1d(4)
    x = (rng.standard_normal((3, 4, 9)) * 5 - 2).astype(np.float32)
    y = layer(x)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=2), 1, rtol=1e-3)
    np.testing.assert_allclose(layer(x[1]), y[1], rtol=1e-5, atol=1e-6)  # unbatched (C, L)
    assert layer.backward(np.ones((4, 9), dtype=np.float32)).shape == (4, 9)
    assert layer.state_dict() == {} and not list(layer.parameters())  # PyTorch's defaults: no affine, no running stats
    with pytest.raises(lm.ShapeError, match=r"InstanceNorm1d\(4.*more than 1 spatial element per channel, received shape \(2, 4, 1\)"):
        layer(np.zeros((2, 4, 1), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"InstanceNorm2d\(4.*expected a 3-d or 4-d input, received shape \(2, 4\)"):
        lm.InstanceNorm2d(4)(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"InstanceNorm2d\(4.*size 4 \(num_features\) in dimension 0, received shape \(3, 5, 5\)"):
        lm.InstanceNorm2d(4)(np.zeros((3, 5, 5), dtype=np.float32))
    tracked = lm.InstanceNorm1d(4, track_running_stats=True)
    tracked(x)
    before = {k: v.copy() for k, v in tracked.state_dict().items()}
    assert before["running_mean"].any()
    with pytest.raises(lm.ShapeError):
        tracked(np.zeros((2, 4, 1), dtype=np.float32))
    for k, v in tracked.state_dict().items():  # the failed call moved nothing
        np.testing.assert_array_equal(v, before[k])


def test_instancenorm_checkpointed_updates_running_stats_once():
    """A recompute under Checkpoint leaves the running statistics as one forward did."""
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    plain = lm.InstanceNorm2d(3, track_running_stats=True)
    wrapped = lm.Checkpoint(lm.InstanceNorm2d(3, track_running_stats=True))
    for layer in (plain, wrapped):
        layer.backward(np.ones_like(layer(x)))
    assert plain.running_mean.any()
    for k, v in plain.state_dict().items():
        np.testing.assert_array_equal(wrapped.state_dict()["segment." + k], v)


# ---------------------------------------------------------------------------
# Channel dropout
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls,shape", [("Dropout1d", (40, 30, 7)), ("Dropout2d", (40, 30, 3, 4)), ("Dropout2d", (300, 5, 2))])
def test_channel_dropout_drops_whole_channels(xp, cls, shape):
    layer = getattr(lm, cls)(0.3)
    x = xp.asarray(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    y = to_numpy(layer(x))
    channels = len(shape) - (1 if len(shape) == getattr(lm, cls)._ndims[0] else 2)  # spatial dimensions
    flat = y.reshape(*y.shape[:len(shape) - channels], -1)
    zero = (flat == 0).all(axis=-1)
    kept = ~zero
    assert abs(zero.mean() - 0.3) < 0.06  # whole channels dropped, about p of them
    np.testing.assert_allclose(flat[kept], (to_numpy(x).reshape(flat.shape) / 0.7)[kept], rtol=1e-6)
    dy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    dx = to_numpy(layer.backward(xp.asarray(dy))).reshape(flat.shape)
    np.testing.assert_allclose(dx, dy.reshape(flat.shape) * kept[..., None] / 0.7, rtol=1e-6)


def test_channel_dropout_eval_seeding_gradcheck_and_replay():
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 3))
    np.testing.assert_array_equal(lm.Dropout2d(0.5).eval()(x), x)
    lm.manual_seed(7)
    a = lm.Dropout2d(0.5)(x)
    lm.manual_seed(7)
    np.testing.assert_array_equal(lm.Dropout2d(0.5)(x), a)
    assert lm.testing.gradcheck(lm.Dropout1d(0.4), x[:, :, 0])
    # checkpointing replays the same channel mask: gradients equal the plain run
    body = lm.Sequential(lm.Conv2D(6, 4, 3, padding=1), lm.Dropout2d(0.5), lm.ReLU())
    twin = lm.Sequential(lm.Conv2D(6, 4, 3, padding=1), lm.Dropout2d(0.5), lm.ReLU())
    twin.load_state_dict(body.state_dict())
    x32 = x.astype(np.float32)
    lm.manual_seed(3)
    dy = np.ones_like(body(x32))
    body.backward(dy)
    lm.manual_seed(3)
    checked = lm.Checkpoint(twin)
    checked.backward(np.ones_like(checked(x32)))
    for (name, p), q in zip(body.named_parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_channel_dropout_errors():
    with pytest.raises(lm.ShapeError, match=r"Dropout2d\(p=0.5\): expected a 3-d or 4-d input \(\(N, C, H, W\) or \(C, H, W\)\), received shape \(2, 3\)"):
        lm.Dropout2d(0.5)(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"Dropout1d\(p=0.5\): expected a 2-d or 3-d input"):
        lm.Dropout1d(0.5)(np.zeros((2, 3, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="Dropout2d: expected p in"):
        lm.Dropout2d(1.0)


# ---------------------------------------------------------------------------
# PixelShuffle, Unflatten: arguments and errors
# ---------------------------------------------------------------------------


def test_pixel_shuffle_round_trip_and_errors():
    x = np.random.default_rng(0).standard_normal((2, 12, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(lm.PixelUnshuffle(2)(lm.PixelShuffle(2)(x)), x)
    with pytest.raises(lm.ShapeError, match=r"PixelShuffle\(upscale_factor=3\): expected an input \(\*, C, H, W\) with channels divisible by 9, received shape \(2, 12, 3, 5\)"):
        lm.PixelShuffle(3)(x)
    with pytest.raises(lm.ShapeError, match=r"PixelUnshuffle\(downscale_factor=2\).*height and width divisible by 2, received shape \(2, 12, 3, 5\)"):
        lm.PixelUnshuffle(2)(x)
    with pytest.raises(lm.ShapeError, match=r"PixelShuffle.*at least 3 dimensions, received shape \(4, 4\)"):
        lm.PixelShuffle(2)(np.zeros((4, 4), dtype=np.float32))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="PixelShuffle: expected upscale_factor as a positive int"):
            lm.PixelShuffle(bad)


def test_unflatten_errors():
    with pytest.raises(lm.ShapeError, match=r"Unflatten\(dim=1, unflattened_size=\(2, 3\)\): expected dimension 1 of a size that splits into \(2, 3\), received shape \(4, 5\)"):
        lm.Unflatten(1, (2, 3))(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"received shape \(4, 5\)"):
        lm.Unflatten(1, (2, -1))(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"Unflatten"):
        lm.Unflatten(3, (2, 3))(np.zeros((4, 6), dtype=np.float32))
    for bad in [(), (-1, -1), (0, 3), (2, -2)]:
        with pytest.raises(ValueError, match="Unflatten: expected unflattened_size"):
            lm.Unflatten(1, bad)


def test_unfold_gemm_is_conv2d_and_fold_is_its_adjoint():
    """A convolution is Unfold, one GEMM and a reshape; Fold is Unfold's
    adjoint, <Unfold(x), z> = <x, Fold(z)>, in float64."""
    rng = np.random.default_rng(0)
    conv = lm.Conv2D(3, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), dtype=np.float64)
    unfold = lm.Unfold((3, 2), dilation=(1, 2), padding=1, stride=(2, 1))
    x = rng.standard_normal((2, 3, 7, 6))
    blocks = unfold(x)  # (N, C·KH·KW, L)
    y = (conv.weight.data.reshape(4, -1) @ blocks + conv.bias.data[:, None]).reshape(2, 4, 4, 6)
    np.testing.assert_allclose(y, conv(x), rtol=1e-12, atol=1e-12)
    z = rng.standard_normal(blocks.shape)
    fold = lm.Fold((7, 6), (3, 2), dilation=(1, 2), padding=1, stride=(2, 1))
    np.testing.assert_allclose(np.vdot(blocks, z), np.vdot(x, fold(z)), rtol=1e-12)


def test_fold_and_unfold_errors_name_the_layer():
    unfold = lm.Unfold(3)
    with pytest.raises(lm.ShapeError, match=r"Unfold\(kernel_size=\(3, 3\).*: expected an input at least as large as one "
                                            r"window, received shape \(1, 2, 2, 5\) \(windows 0 x 3\)"):
        unfold(np.zeros((1, 2, 2, 5), np.float32))
    with pytest.raises(lm.ShapeError, match=r"Unfold.*expected a 4-d input \(N, C, H, W\) or a 3-d \(C, H, W\)"):
        unfold(np.zeros((2, 5), np.float32))
    fold = lm.Fold((4, 5), 2)
    with pytest.raises(lm.ShapeError, match=r"Fold\(output_size=\(4, 5\).*: expected an input \(N, C·4, 12\) for 4 taps and "
                                            r"the 3 x 4 windows of a 4 x 5 output, received shape \(2, 6, 12\)"):
        fold(np.zeros((2, 6, 12), np.float32))
    with pytest.raises(lm.ShapeError, match=r"received shape \(2, 8, 11\)"):
        fold(np.zeros((2, 8, 11), np.float32))
    with pytest.raises(ValueError, match=r"Fold: expected output_size >= 1"):
        lm.Fold(0, 2)
    assert not fold.has_cache() and not unfold.has_cache()
