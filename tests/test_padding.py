"""Padding: lamina.ops.pad's backward is the adjoint of its forward in every
mode, the layers' errors, and Conv2D/Conv1D's padding_mode (the layers' and
the convolutions' PyTorch parity and gradchecks run in the contract tests of
test_layers.py and test_conv.py)."""

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina import ops


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,pads", [((2, 3, 5, 4), ((1, 3), (2, 0))), ((1, 1, 4), ((3, 2),)), ((3, 6, 7), ((0, 5), (4, 4)))])
def test_pad_backward_is_the_adjoint_of_pad(xp, mode, shape, pads):
    """<pad(x), dy> = <x, pad_backward(dy)> for random x and dy: backward is
    exactly the transpose of the forward map, borders and corners included."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    y = to_numpy(ops.pad(xp.asarray(x), pads, mode))
    for axis, (before, after) in zip(range(x.ndim - len(pads), x.ndim), pads):
        assert y.shape[axis] == shape[axis] + before + after
    dy = rng.standard_normal(y.shape)
    dx = to_numpy(ops.pad_backward(xp.asarray(dy), pads, mode))
    assert dx.shape == shape
    assert np.vdot(y, dy) == pytest.approx(np.vdot(x, dx), rel=1e-12)


def test_pad_matches_torch_functional_pad(torch):
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    for mode in ("constant", "reflect", "replicate", "circular"):
        ours = ops.pad(x, ((2, 1), (0, 3)), mode)
        theirs = torch.nn.functional.pad(torch.from_numpy(x), (0, 3, 2, 1), mode=mode).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=mode)


def test_replicate_padding_may_exceed_the_input():
    layer = lm.ReplicationPad1d((5, 2))
    x = np.array([[[1.0, 2.0]]], dtype=np.float32)
    np.testing.assert_array_equal(layer(x), [[[1, 1, 1, 1, 1, 1, 2, 2, 2]]])
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 9), dtype=np.float32)), [[[6, 3]]])


def test_padding_layer_errors_name_the_layer_and_leave_it_untouched():
    with pytest.raises(lm.ShapeError, match=r"ReflectionPad2d\(\(3, 0, 1, 1\)\): expected size at least 4 in dimension 3 "
                                            r"for reflect padding, received shape \(2, 2, 5, 3\)"):
        lm.ReflectionPad2d((3, 0, 1, 1))(np.zeros((2, 2, 5, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"CircularPad1d\(\(4, 4\)\): expected size at least 4 in dimension 2"):
        lm.CircularPad1d(4)(np.zeros((1, 2, 3), dtype=np.float32))
    lm.CircularPad1d(3)(np.zeros((1, 2, 3), dtype=np.float32))  # pad = size is allowed
    with pytest.raises(lm.ShapeError, match=r"ZeroPad2d\(\(1, 1, 1, 1\)\): expected a 3-d or 4-d input, received shape \(5,\)"):
        lm.ZeroPad2d(1)(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"ConstantPad2d: expected padding as an int or a tuple of 4 ints, received \(1, 2\)"):
        lm.ConstantPad2d((1, 2), 3.0)
    with pytest.raises(ValueError, match=r"ReplicationPad1d: expected padding >= 0, received -1"):
        lm.ReplicationPad1d(-1)
    layer = lm.ReflectionPad1d(2)
    layer(np.ones((1, 1, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError):
        layer(np.ones((1, 1, 2), dtype=np.float32))
    assert layer.backward(np.ones((1, 1, 7), dtype=np.float32)).shape == (1, 1, 3)  # the first forward's cache survived
    assert repr(lm.ConstantPad2d(1, 2.5)) == "ConstantPad2d((1, 1, 1, 1), value=2.5)"


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")  # CPU 16-bit runs in float32, said once
def test_padding_keeps_16_bit_dtypes():
    x = np.ones((1, 2, 3, 3), dtype=np.float32)
    half = lm.amp.autocast(lm.Sequential(lm.Conv2D(2, 2, 1), lm.ReflectionPad2d(1)), "bfloat16")
    with lm.no_grad():
        y = half(x)
    assert y.dtype.name == "bfloat16" and y.shape == (1, 2, 5, 5)


def test_conv_padding_mode_arguments_and_errors():
    with pytest.raises(ValueError, match=r"Conv2D: expected padding_mode in \('zeros', 'reflect', 'replicate', 'circular'\), received 'mirror'"):
        lm.Conv2D(2, 2, 3, padding_mode="mirror")
    conv = lm.Conv2D(2, 3, 3, padding=2, padding_mode="reflect")
    assert "padding_mode='reflect'" in repr(conv)
    assert sorted(conv.state_dict()) == ["bias", "weight"]
    before = {k: v.copy() for k, v in conv.state_dict().items()}
    with pytest.raises(lm.ShapeError, match=r"Conv2D\(2, 3.*expected an input height of at least 3 for reflect padding, received shape \(1, 2, 2, 5\)"):
        conv(np.zeros((1, 2, 2, 5), dtype=np.float32))
    assert not conv.has_cache() and all(np.array_equal(before[k], v) for k, v in conv.state_dict().items())
    with pytest.raises(lm.ShapeError, match=r"Conv1D\(2, 2.*expected an input width of at least 4 for circular padding, received shape \(1, 2, 3\)"):
        lm.Conv1D(2, 2, 3, padding=4, padding_mode="circular")(np.zeros((1, 2, 3), dtype=np.float32))


def test_conv_reflect_padding_backward_parameters_and_keep_col(monkeypatch):
    """backward_parameters (no dx) and keep_col=False give the full backward's
    parameter gradients with a non-zero padding mode."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    full = lm.Conv2D(3, 4, 3, stride=2, padding=1, padding_mode="circular")
    part = lm.Conv2D(3, 4, 3, stride=2, padding=1, padding_mode="circular", keep_col=False)
    part.load_state_dict(full.state_dict())
    full(x)
    full.backward(dy)
    part(x)
    assert part.backward_parameters(dy) is None
    np.testing.assert_allclose(part.weight.grad, full.weight.grad, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(part.bias.grad, full.bias.grad, rtol=1e-6)
