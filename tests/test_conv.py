"""Convolution, pooling, BatchNorm and Residual through the layer contract
(gradcheck in float64, PyTorch parity in float32, state round trip, an SGD
step) over a grid of kernel, stride, padding, dilation and groups; then the
kernels against their references, BatchNorm's running statistics, errors."""

import warnings
import zlib

import numpy as np
import pytest
from harness import check_layer, random_inputs, to_numpy

import lamina as lm


def _inputs(name, shapes):
    return random_inputs(shapes, np.random.default_rng(zlib.crc32(name.encode())))


# (name, lamina factory, torch factory, input shapes)
CONV2D = [
    ("k3", dict(kernel_size=3), [(1, 4, 5, 5), (2, 4, 6, 7), (3, 4, 3, 4)]),
    ("k3_s2_p1", dict(kernel_size=3, stride=2, padding=1), [(1, 4, 5, 5), (2, 4, 6, 7), (1, 4, 1, 1)]),
    ("k2x3_s2x1_p1x0", dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)), [(1, 4, 5, 5), (2, 4, 4, 3)]),
    ("k3_same_d2", dict(kernel_size=3, padding="same", dilation=2), [(1, 4, 5, 5), (2, 4, 6, 3)]),
    ("k2x4_same", dict(kernel_size=(2, 4), padding="same"), [(1, 4, 5, 5), (2, 4, 3, 6)]),
    ("k3_valid_s1x3", dict(kernel_size=3, padding="valid", stride=(1, 3)), [(1, 4, 5, 7), (2, 4, 3, 8)]),
    ("k3_g2_s2_p1", dict(kernel_size=3, stride=2, padding=1, groups=2), [(1, 4, 5, 5), (2, 4, 7, 6)]),
    ("k1_g4", dict(kernel_size=1, groups=4), [(1, 4, 3, 3), (2, 4, 2, 5)]),
    ("k3_d2x1_p2_s2_g2", dict(kernel_size=3, dilation=(2, 1), padding=2, stride=2, groups=2), [(1, 4, 5, 6), (2, 4, 7, 4)]),
    ("k2_s2_nobias", dict(kernel_size=2, stride=2, bias=False), [(1, 4, 4, 4), (2, 4, 5, 7)]),
    ("k5_full", dict(kernel_size=5, padding=(0, 1)), [(1, 4, 5, 5), (2, 4, 6, 3)]),
    ("k3_p1_reflect", dict(kernel_size=3, padding=1, padding_mode="reflect"), [(1, 4, 2, 2), (2, 4, 5, 7)]),
    ("k3_p2x1_s2_g2_replicate", dict(kernel_size=3, padding=(2, 1), stride=2, groups=2, padding_mode="replicate"),
     [(1, 4, 1, 1), (2, 4, 6, 5)]),
    ("k3_p2_d2_circular", dict(kernel_size=3, padding=2, dilation=2, padding_mode="circular"), [(1, 4, 2, 3), (2, 4, 5, 4)]),
    ("k4x3_same_reflect", dict(kernel_size=(4, 3), padding="same", padding_mode="reflect"), [(1, 4, 3, 2), (2, 4, 6, 5)]),
]


# PyTorch itself warns that its even-kernel 'same' padding copies the input.
SAME_EVEN = "ignore:Using padding='same' with even kernel:UserWarning"


@pytest.fixture(params=["direct", "im2col"])
def cpu_conv(request, xp):
    """Each CPU convolution algorithm (lamina.ops.cpu_conv) in turn; strided
    geometries run on im2col under both."""
    if xp is not np and request.param == "im2col":
        pytest.skip("lamina.ops.cpu_conv chooses among CPU kernels; CuPy arrays are not affected")
    previous = lm.ops.cpu_conv(request.param)
    yield request.param
    lm.ops.cpu_conv(previous)


@pytest.mark.filterwarnings(SAME_EVEN)
@pytest.mark.parametrize("name,kwargs,shapes", CONV2D, ids=[c[0] for c in CONV2D])
def test_conv2d_contract(name, kwargs, shapes, torch, xp, cpu_conv):
    out = 6 if kwargs.get("groups", 1) == 2 else 8
    check_layer(
        lambda: lm.Conv2D(4, out, **kwargs), _inputs(name, shapes),
        torch_make=lambda: torch.nn.Conv2d(4, out, **kwargs), torch=torch, xp=xp, rtol=1e-4, atol=1e-5, grad_atol=1e-4,
    )


CONV1D = [
    ("k3_p1", dict(kernel_size=3, padding=1), [(1, 4, 5), (2, 4, 9), (3, 4, 1)]),
    ("k5_s2_valid", dict(kernel_size=5, stride=2, padding="valid"), [(1, 4, 5), (2, 4, 12)]),
    ("k4_same_d3", dict(kernel_size=4, padding="same", dilation=3), [(1, 4, 7), (2, 4, 3)]),
    ("k3_g2_s3", dict(kernel_size=3, stride=3, groups=2), [(1, 4, 5), (2, 4, 10)]),
    ("k5_p3_reflect", dict(kernel_size=5, padding=3, padding_mode="reflect"), [(1, 4, 4), (2, 4, 9)]),
    ("k3_p2_s2_circular", dict(kernel_size=3, padding=2, stride=2, padding_mode="circular"), [(1, 4, 2), (2, 4, 7)]),
    ("k2_same_replicate", dict(kernel_size=2, padding="same", padding_mode="replicate"), [(1, 4, 1), (2, 4, 6)]),
]


@pytest.mark.filterwarnings(SAME_EVEN)
@pytest.mark.parametrize("name,kwargs,shapes", CONV1D, ids=[c[0] for c in CONV1D])
def test_conv1d_contract(name, kwargs, shapes, torch, xp, cpu_conv):
    check_layer(
        lambda: lm.Conv1D(4, 6, **kwargs), _inputs(name, shapes),
        torch_make=lambda: torch.nn.Conv1d(4, 6, **kwargs), torch=torch, xp=xp, rtol=1e-4, atol=1e-5, grad_atol=1e-4,
    )


POOL = [
    ("max2", lambda: lm.MaxPool2D(2), lambda t: t.nn.MaxPool2d(2), [(1, 3, 4, 4), (2, 3, 5, 7), (1, 1, 2, 2)]),
    ("max3_s2_p1", lambda: lm.MaxPool2D(3, 2, 1), lambda t: t.nn.MaxPool2d(3, 2, 1), [(1, 3, 5, 5), (2, 2, 6, 7)]),
    ("max2x3_s1x2", lambda: lm.MaxPool2D((2, 3), (1, 2)), lambda t: t.nn.MaxPool2d((2, 3), (1, 2)), [(1, 2, 4, 5), (2, 3, 3, 8)]),
    ("avg2", lambda: lm.AvgPool2D(2), lambda t: t.nn.AvgPool2d(2), [(1, 3, 4, 4), (2, 3, 5, 7), (1, 1, 2, 2)]),
    ("avg3_s2_p1", lambda: lm.AvgPool2D(3, 2, 1), lambda t: t.nn.AvgPool2d(3, 2, 1), [(1, 3, 5, 5), (2, 2, 6, 7)]),
    (
        "avg3_s2_p1_exclude_pad", lambda: lm.AvgPool2D(3, 2, 1, count_include_pad=False),
        lambda t: t.nn.AvgPool2d(3, 2, 1, count_include_pad=False), [(1, 3, 5, 5), (2, 2, 6, 7)],
    ),
    ("avg2x3_s1x2_p1x1", lambda: lm.AvgPool2D((2, 3), (1, 2), 1), lambda t: t.nn.AvgPool2d((2, 3), (1, 2), 1), [(1, 2, 4, 5), (2, 3, 3, 8)]),
    ("max1d_3_s2_p1", lambda: lm.MaxPool1D(3, 2, 1), lambda t: t.nn.MaxPool1d(3, 2, 1), [(1, 3, 7), (2, 2, 4)]),
    ("avg1d_2", lambda: lm.AvgPool1D(2), lambda t: t.nn.AvgPool1d(2), [(1, 3, 7), (2, 2, 4)]),
    ("max2_ceil", lambda: lm.MaxPool2D(2, ceil_mode=True), lambda t: t.nn.MaxPool2d(2, ceil_mode=True),
     [(1, 3, 5, 5), (2, 2, 3, 6), (1, 1, 1, 1)]),
    ("max3_s2_p1_d2_ceil", lambda: lm.MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True),
     lambda t: t.nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), [(1, 3, 6, 6), (2, 2, 5, 8)]),
    ("max3x2_d2x3_s1", lambda: lm.MaxPool2D((3, 2), 1, dilation=(2, 3)), lambda t: t.nn.MaxPool2d((3, 2), 1, dilation=(2, 3)),
     [(1, 2, 5, 4), (2, 3, 7, 6)]),
    ("max1d_3_s2_d2_ceil", lambda: lm.MaxPool1D(3, 2, 1, dilation=2, ceil_mode=True),
     lambda t: t.nn.MaxPool1d(3, 2, 1, dilation=2, ceil_mode=True), [(1, 3, 8), (2, 2, 5)]),
    ("avg3_s2_p1_ceil", lambda: lm.AvgPool2D(3, 2, 1, ceil_mode=True), lambda t: t.nn.AvgPool2d(3, 2, 1, ceil_mode=True),
     [(1, 3, 6, 6), (2, 2, 4, 7)]),
    ("avg2_s3_ceil_exclude_pad", lambda: lm.AvgPool2D(2, 3, 1, count_include_pad=False, ceil_mode=True),
     lambda t: t.nn.AvgPool2d(2, 3, 1, count_include_pad=False, ceil_mode=True), [(1, 3, 5, 5), (2, 2, 8, 6)]),
    ("avg3_s2_p1_divisor", lambda: lm.AvgPool2D(3, 2, 1, divisor_override=4),
     lambda t: t.nn.AvgPool2d(3, 2, 1, divisor_override=4), [(1, 3, 5, 5), (2, 2, 6, 7)]),
    ("avg1d_3_s2_ceil", lambda: lm.AvgPool1D(3, 2, 1, ceil_mode=True), lambda t: t.nn.AvgPool1d(3, 2, 1, ceil_mode=True),
     [(1, 3, 6), (2, 2, 9)]),
    ("global_avg", lambda: lm.GlobalAvgPool2D(), lambda t: t.nn.Sequential(t.nn.AdaptiveAvgPool2d(1), t.nn.Flatten()), [(1, 3, 4, 4), (2, 5, 3, 1)]),
    ("global_avg_keepdims", lambda: lm.GlobalAvgPool2D(keepdims=True), lambda t: t.nn.AdaptiveAvgPool2d(1), [(1, 3, 4, 4), (2, 5, 3, 2)]),
]


@pytest.mark.parametrize("name,make,torch_make,shapes", POOL, ids=[c[0] for c in POOL])
def test_pool_contract(name, make, torch_make, shapes, torch, xp):
    check_layer(make, _inputs(name, shapes), torch_make=lambda: torch_make(torch), torch=torch, xp=xp)


def _with_random_stats(tbn, seed):
    rng = np.random.default_rng(seed)
    c = tbn.num_features
    tbn.running_mean.copy_(tbn.running_mean.new_tensor(rng.standard_normal(c)))
    tbn.running_var.copy_(tbn.running_var.new_tensor(rng.uniform(0.5, 2.0, c)))
    with __import__("torch").no_grad():
        tbn.weight.copy_(tbn.weight.new_tensor(rng.uniform(0.5, 1.5, c)))
        tbn.bias.copy_(tbn.bias.new_tensor(rng.standard_normal(c)))
    tbn.num_batches_tracked.fill_(3)
    return tbn


BATCHNORM = [
    ("bn2d", lambda: lm.BatchNorm2d(3), lambda t: t.nn.BatchNorm2d(3), [(1, 3, 2, 2), (4, 3, 3, 5), (2, 3, 1, 3)]),
    (
        "bn2d_eval", lambda: lm.BatchNorm2d(3).eval(), lambda t: _with_random_stats(t.nn.BatchNorm2d(3), 1),
        [(1, 3, 2, 2), (4, 3, 3, 5)],
    ),
    ("bn2d_no_affine", lambda: lm.BatchNorm2d(2, affine=False), lambda t: t.nn.BatchNorm2d(2, affine=False), [(3, 2, 2, 3), (1, 2, 4, 1)]),
    ("bn1d", lambda: lm.BatchNorm1d(5), lambda t: t.nn.BatchNorm1d(5), [(2, 5), (7, 5), (3, 5, 4)]),
    ("bn1d_momentum_none", lambda: lm.BatchNorm1d(4, momentum=None), lambda t: t.nn.BatchNorm1d(4, momentum=None), [(3, 4), (2, 4, 3)]),
    (
        "bn1d_untracked", lambda: lm.BatchNorm1d(4, track_running_stats=False),
        lambda t: t.nn.BatchNorm1d(4, track_running_stats=False), [(3, 4), (2, 4, 3)],
    ),
]


@pytest.mark.parametrize("name,make,torch_make,shapes", BATCHNORM, ids=[c[0] for c in BATCHNORM])
def test_batchnorm_contract(name, make, torch_make, shapes, torch, xp):
    check_layer(make, _inputs(name, shapes), torch_make=lambda: torch_make(torch), torch=torch, xp=xp, rtol=1e-4, atol=1e-5, grad_atol=1e-4)


def _torch_residual(t, body, shortcut=None):
    class Residual(t.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    return Residual()


def _basic_body(m, cin, cout, stride):
    conv, bn = (m.Conv2D, m.BatchNorm2d) if m is lm else (m.nn.Conv2d, m.nn.BatchNorm2d)
    relu = lm.ReLU if m is lm else m.nn.ReLU
    seq = lm.Sequential if m is lm else m.nn.Sequential
    return seq(conv(cin, cout, 3, stride=stride, padding=1, bias=False), bn(cout), relu(), conv(cout, cout, 3, padding=1), bn(cout))


def test_residual_identity_contract(torch, xp):
    check_layer(
        lambda: lm.Residual(_basic_body(lm, 3, 3, 1)), _inputs("res_id", [(1, 3, 3, 4), (2, 3, 5, 5)]),
        torch_make=lambda: _torch_residual(torch, _basic_body(torch, 3, 3, 1)),
        torch=torch, xp=xp, rtol=1e-4, atol=1e-5, grad_atol=1e-4,
    )


def test_residual_projection_contract(torch, xp):
    check_layer(
        lambda: lm.Residual(_basic_body(lm, 2, 4, 2), shortcut=lm.Sequential(lm.Conv2D(2, 4, 1, stride=2, bias=False), lm.BatchNorm2d(4))),
        _inputs("res_proj", [(1, 2, 3, 4), (2, 2, 6, 5)]),
        torch_make=lambda: _torch_residual(
            torch, _basic_body(torch, 2, 4, 2),
            torch.nn.Sequential(torch.nn.Conv2d(2, 4, 1, stride=2, bias=False), torch.nn.BatchNorm2d(4)),
        ),
        torch=torch, xp=xp, rtol=1e-4, atol=1e-5, grad_atol=1e-4,
    )


# ---------------------------------------------------------------------------
# BatchNorm's running statistics over training, against PyTorch
# ---------------------------------------------------------------------------


def _small_cnn(m):
    if m is lm:
        return lm.Sequential(
            lm.Conv2D(1, 4, 3, padding=1), lm.BatchNorm2d(4), lm.ReLU(), lm.MaxPool2D(2),
            lm.Flatten(), lm.Dense(4 * 3 * 3, 6), lm.BatchNorm1d(6), lm.ReLU(), lm.Dense(6, 3),
        )
    nn = m.nn
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3),
    )


def test_batchnorm_running_stats_follow_pytorch_over_training(torch, xp):
    """Ten SGD steps of a small CNN with BatchNorm2d and BatchNorm1d: every
    weight, running mean, running variance and num_batches_tracked matches
    PyTorch, and eval-mode outputs agree."""
    tmodel = _small_cnn(torch)
    model = _small_cnn(lm)
    model.load_state_dict(tmodel.state_dict())
    model.to("cpu" if xp is np else "cuda")
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    opt = lm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = lm.SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.standard_normal((8, 1, 7, 6)).astype(np.float32)
        y = rng.integers(0, 3, 8)
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        loss = loss_fn(model(xp.asarray(x)), xp.asarray(y))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4, abs=1e-5)
    tstate = tmodel.state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(to_numpy(value), tstate[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key)
    assert int(to_numpy(model[1].num_batches_tracked)) == 10
    tmodel.eval(), model.eval()
    x = rng.standard_normal((3, 1, 7, 6)).astype(np.float32)
    with lm.no_grad():
        np.testing.assert_allclose(
            to_numpy(model(xp.asarray(x))), tmodel(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5
        )


def test_batchnorm_eval_leaves_running_stats_alone():
    bn = lm.BatchNorm2d(3).eval()
    bn(np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32))
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    assert int(bn.num_batches_tracked) == 0


def test_batchnorm_state_dict_uses_pytorch_names(torch):
    assert list(lm.BatchNorm2d(3).state_dict()) == list(torch.nn.BatchNorm2d(3).state_dict())
    assert list(lm.BatchNorm1d(3, affine=False, track_running_stats=False).state_dict()) == []


# kwargs and input shapes of transposed convolutions with 4 input and 6 output channels
CONVT2D = [
    ("k3", dict(kernel_size=3), [(1, 4, 1, 1), (2, 4, 3, 4), (1, 4, 5, 2)]),
    ("k3_s2_p1_op1", dict(kernel_size=3, stride=2, padding=1, output_padding=1), [(1, 4, 3, 3), (2, 4, 4, 5)]),
    ("k4_s2_p1", dict(kernel_size=4, stride=2, padding=1), [(1, 4, 2, 3), (3, 4, 3, 3)]),
    ("k2x3_s3x1_p0x1_op2x0", dict(kernel_size=(2, 3), stride=(3, 1), padding=(0, 1), output_padding=(2, 0)),
     [(1, 4, 3, 3), (2, 4, 2, 5)]),
    ("k3_d2_s2_p2_g2", dict(kernel_size=3, dilation=2, stride=2, padding=2, groups=2), [(1, 4, 4, 3), (2, 4, 3, 5)]),
    ("k1_s2_nobias", dict(kernel_size=1, stride=2, bias=False), [(1, 4, 3, 3), (2, 4, 2, 4)]),
    # output_padding of a stride or more, allowed below the dilation: windows past x's reach get the bias alone
    ("k3_s1_d3_op2", dict(kernel_size=3, dilation=3, output_padding=2), [(1, 4, 1, 1), (2, 4, 3, 2)]),
    ("k2x3_s2x1_d3x2_p1_op2x1_g2", dict(kernel_size=(2, 3), stride=(2, 1), dilation=(3, 2), padding=1,
                                        output_padding=(2, 1), groups=2), [(1, 4, 2, 3), (2, 4, 3, 1)]),
]


CONVT1D = [
    ("k3_p1", dict(kernel_size=3, padding=1), [(1, 4, 1), (2, 4, 6), (3, 4, 3)]),
    ("k5_s3_p1_op2", dict(kernel_size=5, stride=3, padding=1, output_padding=2), [(1, 4, 4), (2, 4, 7)]),
    ("k2_s2_g2_d3", dict(kernel_size=2, stride=2, groups=2, dilation=3), [(1, 4, 5), (2, 4, 2)]),
    ("k2_s1_d4_op3", dict(kernel_size=2, dilation=4, output_padding=3, bias=False), [(1, 4, 1), (2, 4, 5)]),
]

CONVT = [(f"2d_{n}", "ConvTranspose2D", "ConvTranspose2d", k, s) for n, k, s in CONVT2D] + [
    (f"1d_{n}", "ConvTranspose1D", "ConvTranspose1d", k, s) for n, k, s in CONVT1D]


@pytest.mark.parametrize("name,cls,torch_cls,kwargs,shapes", CONVT, ids=[c[0] for c in CONVT])
def test_conv_transpose_contract(name, cls, torch_cls, kwargs, shapes, torch, xp, cpu_conv):
    check_layer(
        lambda: getattr(lm, cls)(4, 6, **kwargs), _inputs(name, shapes),
        torch_make=lambda: getattr(torch.nn, torch_cls)(4, 6, **kwargs), torch=torch, xp=xp, rtol=1e-4, atol=1e-5,
        grad_atol=1e-4,
    )


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(z), x> = <z, convT(x)> with one weight and no bias: the
    definition the layer is built on, checked in float64."""
    rng = np.random.default_rng(0)
    for kwargs in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(2, 3), stride=(1, 2), dilation=2, groups=2)]:
        convt = lm.ConvTranspose2D(4, 6, bias=False, dtype=np.float64, **kwargs)
        conv = lm.Conv2D(6, 4, bias=False, dtype=np.float64, **kwargs)
        conv.weight.data[...] = convt.weight.data  # (4, 6/G, kh, kw): conv's (out, in/G) layout
        x = rng.standard_normal((2, 4, 5, 6))
        y = convt(x)
        z = rng.standard_normal(y.shape)
        assert conv(z).shape == x.shape
        np.testing.assert_allclose(np.vdot(conv(z), x), np.vdot(z, y), rtol=1e-12)


def test_conv_transpose_output_size_weight_layout_and_init(torch):
    layer = lm.ConvTranspose2D(8, 6, 3, stride=2, padding=1, groups=2)
    assert layer.weight.shape == (8, 3, 3, 3) and layer.bias.shape == (6,)
    t = torch.nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, groups=2)
    assert list(layer.state_dict()) == list(t.state_dict())
    bound = 1 / np.sqrt(3 * 9)  # PyTorch's fan_in: weight.shape[1] * kh * kw
    assert bound * 0.9 < np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    x = np.zeros((2, 8, 5, 4), dtype=np.float32)
    assert layer(x).shape == (2, 6, 9, 7)
    assert layer(x, output_size=(10, 8)).shape == (2, 6, 10, 8)  # output_padding (1, 1) for this call
    assert layer(x, output_size=(2, 6, 9, 8)).shape == (2, 6, 9, 8)
    assert layer.output_padding == (0, 0)
    layer.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((2, 8, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(x, output_size=(10, 7)), t(torch.from_numpy(x), output_size=(10, 7)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert "ConvTranspose2D(8, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2" in repr(layer)


def test_conv_transpose_errors_name_the_layer_and_leave_it_untouched():
    for make, match in [
        (lambda: lm.ConvTranspose2D(4, 6, 3, stride=2, output_padding=2), r"ConvTranspose2D: expected output_padding "
                                                                         r"smaller than max\(stride, dilation\) \(2, 2\), "
                                                                         r"received \(2, 2\)"),
        (lambda: lm.ConvTranspose1D(4, 6, 3, dilation=3, output_padding=3), r"ConvTranspose1D: expected "
                                                                             r"output_padding smaller than max\(stride, "
                                                                             r"dilation\) \(3,\), received \(3,\)"),
        (lambda: lm.ConvTranspose2D(4, 6, 3, padding="same"), "ConvTranspose2D: expected padding as an int or a tuple"),
        (lambda: lm.ConvTranspose1D(3, 6, 3, groups=2), "divisible by groups"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()
    layer = lm.ConvTranspose2D(4, 6, 3, stride=2, padding=1)
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    x = np.zeros((2, 4, 5, 5), dtype=np.float32)
    with pytest.raises(lm.ShapeError, match=r"ConvTranspose2D\(4, 6.*size 4 \(in_channels\) in dimension 1, "
                                            r"received shape \(2, 3, 5, 5\)"):
        layer(np.zeros((2, 3, 5, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"output_size between \(9, 9\) and \(10, 10\).*received \(11, 9\)"):
        layer(x, output_size=(11, 9))
    with pytest.raises(lm.ShapeError, match=r"at least one element per dimension.*\(1, 4, 1, 1\)"):
        lm.ConvTranspose2D(4, 6, 1, padding=1)(np.zeros((1, 4, 1, 1), dtype=np.float32))
    with pytest.raises(lm.DTypeError, match="ConvTranspose2D.*float32.*float64"):
        layer(np.zeros((2, 4, 5, 5)))
    assert not layer.has_cache()
    y = layer(x)
    with pytest.raises(lm.ShapeError, match=r"output gradient of shape \(2, 6, 9, 9\)"):
        layer.backward(np.zeros((2, 6, 9, 8), dtype=np.float32))
    assert layer.has_cache()
    layer.backward(np.ones_like(y))
    assert all(np.array_equal(before[k], v) for k, v in layer.state_dict().items())


def test_conv_transpose_mixed_precision_tracks_float32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    ref = lm.ConvTranspose2D(4, 6, 3, stride=2, padding=1, output_padding=1)
    low = lm.ConvTranspose2D(4, 6, 3, stride=2, padding=1, output_padding=1)
    low.load_state_dict(ref.state_dict())
    y = ref(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref.backward(dy)
    lm.amp.autocast(low, "bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lm.PerformanceWarning)
        y16 = low(x)
        low.backward(dy)
    assert y16.dtype.name == "bfloat16"
    assert np.abs(y16.astype(np.float32) - y).max() < 0.02 * np.abs(y).max()
    for p, q in zip(ref.parameters(), low.parameters()):
        assert q.grad.dtype == np.float32
        assert np.linalg.norm(q.grad - p.grad) < 0.02 * np.linalg.norm(p.grad)


def test_a_conv_autoencoder_learns_to_reconstruct_digits():
    """Conv2D down, ConvTranspose2D up: 8x8 digits through a 4x4 bottleneck
    of 8 channels; the reconstruction error falls well below the
    data's variance."""
    x = lm.data.load_digits()[0][:512].reshape(-1, 1, 8, 8).astype(np.float32)
    lm.manual_seed(0)
    model = lm.Sequential(
        lm.Conv2D(1, 16, 3, padding=1), lm.ReLU(), lm.Conv2D(16, 8, 3, stride=2, padding=1), lm.ReLU(),
        lm.ConvTranspose2D(8, 16, 3, stride=2, padding=1, output_padding=1), lm.ReLU(), lm.Conv2D(16, 1, 3, padding=1),
    )
    loss_fn = lm.MSELoss()
    opt = lm.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for i in range(0, 512, 64):
            model.zero_grad()
            loss_fn(model(x[i:i + 64]), x[i:i + 64])
            model.backward(loss_fn.backward())
            opt.step()
    with lm.no_grad():
        mse = loss_fn(model(x), x)
    assert mse < 0.1 * x.var(), (mse, x.var())


# ---------------------------------------------------------------------------
# Shapes, arguments and errors
# ---------------------------------------------------------------------------


def test_conv_output_sizes_and_weight_layout():
    x = np.zeros((2, 3, 9, 8), dtype=np.float32)
    assert lm.Conv2D(3, 5, 3, padding="same")(x).shape == (2, 5, 9, 8)
    assert lm.Conv2D(3, 5, (2, 4), padding="same", dilation=(1, 2))(x).shape == (2, 5, 9, 8)
    assert lm.Conv2D(3, 5, 3, padding="valid")(x).shape == (2, 5, 7, 6)
    assert lm.Conv2D(3, 6, 3, stride=2, padding=1, groups=3)(x).shape == (2, 6, 5, 4)
    assert lm.Conv2D(3, 6, 3, groups=3).weight.shape == (6, 1, 3, 3)
    assert lm.Conv1D(3, 4, 5, stride=2)(np.zeros((2, 3, 11), dtype=np.float32)).shape == (2, 4, 4)
    assert lm.MaxPool2D(2)(x).shape == (2, 3, 4, 4)
    assert lm.AvgPool2D(3, stride=1, padding=1)(x).shape == x.shape
    assert lm.GlobalAvgPool2D()(x).shape == (2, 3)


def test_conv_default_init_matches_pytorch_bounds(torch):
    lm.manual_seed(0)
    w = lm.Conv2D(16, 8, 3).weight.data
    bound = 1 / np.sqrt(16 * 9)  # kaiming_uniform(a=√5) gives U(±1/√fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: lm.Conv2D(3, 4, 3, groups=2), "divisible by groups"),
        (lambda: lm.Conv2D(3, 4, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
        (lambda: lm.Conv2D(3, 4, 3, padding="full"), "expected padding 'same', 'valid'"),
        (lambda: lm.Conv2D(3, 4, (3, 3, 3)), "kernel_size as an int or a tuple of 2 ints"),
        (lambda: lm.Conv2D(3, 4, 0), "kernel_size >= 1"),
        (lambda: lm.Conv2D(3, 4, 3, padding=-1), "padding >= 0"),
        (lambda: lm.Conv1D(0, 4, 3), "in_channels to be a positive int"),
        (lambda: lm.MaxPool2D(2, padding=2), "padding at most half the kernel"),
        (lambda: lm.BatchNorm2d(3, momentum=2), "momentum in"),
    ],
)
def test_bad_arguments_name_the_layer(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_conv_rejects_bad_inputs_and_stays_untouched():
    conv = lm.Conv2D(3, 4, 3)
    w = conv.weight.data.copy()
    x = np.zeros((2, 3, 5, 5), dtype=np.float32)
    y = conv(x)
    with pytest.raises(lm.ShapeError, match=r"Conv2D\(3, 4.*expected input with size 3 \(in_channels\) in dimension 1, received shape \(2, 2, 5, 5\)"):
        conv(np.zeros((2, 2, 5, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"expected a 4-d input, received shape \(3, 5, 5\)"):
        conv(np.zeros((3, 5, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match="covers the dilated kernel, received shape"):
        conv(np.zeros((2, 3, 2, 5), dtype=np.float32))
    with pytest.raises(lm.DTypeError, match="dtype float32 .* received float64"):
        conv(np.zeros((2, 3, 5, 5)))
    with pytest.raises(lm.ShapeError, match=r"expected the output gradient of shape \(2, 4, 3, 3\)"):
        conv.backward(np.zeros((2, 4, 3, 2), dtype=np.float32))
    assert conv.has_cache()
    np.testing.assert_array_equal(conv.weight.data, w)
    assert conv.backward(np.ones_like(y)).shape == x.shape


def test_pool_and_batchnorm_errors():
    with pytest.raises(lm.ShapeError, match=r"MaxPool2D.*at least as large as the kernel"):
        lm.MaxPool2D(3)(np.zeros((1, 1, 2, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"MaxPool1D.*expected a 3-d input"):
        lm.MaxPool1D(2)(np.zeros((1, 1, 2, 5), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"BatchNorm1d.*more than 1 value per channel"):
        lm.BatchNorm1d(3)(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"BatchNorm2d.*expected a 4-d input, received shape \(2, 3\)"):
        lm.BatchNorm2d(3)(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"BatchNorm1d.*size 3 \(num_features\)"):
        lm.BatchNorm1d(3)(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"AvgPool2D: expected divisor_override as a positive int or None, received 0"):
        lm.AvgPool2D(2, divisor_override=0)
    with pytest.raises(ValueError, match=r"MaxPool2D: expected dilation >= 1, received 0"):
        lm.MaxPool2D(2, dilation=0)
    assert repr(lm.MaxPool2D(3, 2, 1, dilation=2, ceil_mode=True)) == (
        "MaxPool2D(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), ceil_mode=True)")


def test_pool_ceil_mode_output_sizes_match_pytorch(torch):
    """PyTorch's rule: rounding up adds a window only where it starts inside
    the input or the left padding; sizes over a grid of geometries."""
    for size in range(2, 12):
        for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 3, 1), (2, 3, 1), (4, 3, 2), (3, 1, 0)]:
            if size + 2 * p < k:
                continue
            x = np.zeros((1, 1, size, size + 1), dtype=np.float32)
            for ours, theirs in [(lm.MaxPool2D(k, s, p, ceil_mode=True), torch.nn.MaxPool2d(k, s, p, ceil_mode=True)),
                                 (lm.AvgPool2D(k, s, p, ceil_mode=True), torch.nn.AvgPool2d(k, s, p, ceil_mode=True))]:
                with lm.no_grad():
                    assert ours(x).shape == tuple(theirs(torch.from_numpy(x)).shape), (size, k, s, p, ours)


def test_residual_shape_mismatch_names_both_shapes():
    block = lm.Residual(lm.Conv2D(2, 3, 1))
    with pytest.raises(lm.ShapeError, match=r"Residual.*\(1, 3, 4, 4\) and \(1, 2, 4, 4\)"):
        block(np.zeros((1, 2, 4, 4), dtype=np.float32))
    assert [n for n, _ in block.named_children()] == ["body"]


# ---------------------------------------------------------------------------
# Without lamina._C: the references take over, and say so once
# ---------------------------------------------------------------------------


def test_layers_run_on_references_without_the_cpu_module(monkeypatch, torch):
    from lamina.errors import PerformanceWarning, _warned
    from lamina.ops import _ext

    monkeypatch.setitem(_ext._modules, "_C", None)
    monkeypatch.setitem(_ext._errors, "_C", "disabled by the test")
    _warned.discard("no _C")
    with pytest.warns(PerformanceWarning, match="lamina._C is not built"):
        for make, tmake, shapes in [
            (lambda: lm.Conv2D(3, 4, 3, stride=2, padding=1), lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), [(1, 3, 5, 5), (2, 3, 4, 7)]),
            (lambda: lm.MaxPool2D(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1), [(1, 3, 5, 5), (2, 3, 4, 7)]),
            (lambda: lm.AvgPool2D(3, 2, 1, count_include_pad=False), lambda: torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False), [(2, 3, 4, 7)]),
        ]:
            check_layer(make, _inputs("no_C", shapes), torch_make=tmake, torch=torch, rtol=1e-4, atol=1e-5, grad_atol=1e-4)
    _warned.discard("no _C")


def test_conv_work_buffers_never_corrupt_a_pending_backward():
    """Conv2D takes col from a pool of work buffers and gives it back after
    backward (or at once under no_grad); forwards in between, with and without
    gradients, must never hand out the buffer a pending backward reads."""
    rng = np.random.default_rng(0)
    conv = lm.Conv2D(2, 3, 3, padding=1)
    x1, x2 = (rng.standard_normal((2, 2, 5, 5)).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)

    ref = lm.Conv2D(2, 3, 3, padding=1)
    ref.load_state_dict(conv.state_dict())
    ref(x1)
    dx_ref = ref.backward(dy)

    conv(x2)  # a first step leaves a buffer in the pool
    conv.backward(dy)
    conv.zero_grad()
    conv(x1)
    with lm.no_grad():
        conv(x2)  # takes a buffer and gives it back at once
    other = lm.Conv2D(2, 3, 3, padding=1)
    other(x2)  # another layer with the same shapes takes one too
    np.testing.assert_array_equal(conv.backward(dy), dx_ref)
    np.testing.assert_array_equal(conv.weight.grad, ref.weight.grad)
    assert lm.ops.workspace_bytes() > 0
    lm.ops.release_workspace()
    assert lm.ops.workspace_bytes() == 0


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, groups=2, dilation=2, padding=2)])
def test_keep_col_false_gives_identical_gradients_with_less_memory(kwargs, monkeypatch):
    monkeypatch.setattr(lm.ops.conv, "_cpu_conv", "im2col")  # keep_col concerns the im2col path only
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    fast, lean = lm.Conv2D(4, 6, **kwargs), lm.Conv2D(4, 6, keep_col=False, **kwargs)
    lean.load_state_dict(fast.state_dict())
    peaks = []
    for layer in (fast, lean):
        with lm.memory.track() as m:
            y = layer(x)
            dx = layer.backward(np.ones_like(y))
        peaks.append(m.peak_bytes)
        layer.dx = dx
    np.testing.assert_array_equal(fast.dx, lean.dx)
    np.testing.assert_array_equal(fast.weight.grad, lean.weight.grad)
    assert peaks[1] * 2 < peaks[0] and "keep_col=False" in repr(lean)
    assert lm.testing.gradcheck(lm.Conv2D(2, 3, 3, stride=2, keep_col=False), rng.standard_normal((2, 2, 5, 6)))


def _direct_available():
    mod = lm.ops._ext.cpu_module()
    return mod is not None and mod.conv_direct_supported()


@pytest.mark.skipif(not _direct_available(), reason="lamina._C not built, or this CPU lacks AVX2 or FMA")
def test_direct_conv_caches_the_input_not_col_and_matches_im2col(monkeypatch):
    """A stride-1 convolution on the direct kernel keeps only x for backward
    (the im2col path keeps col, KH*KW times larger) and gives the same
    output and gradients as im2col to float32 rounding."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    direct, im2col = lm.Conv2D(8, 8, 3, padding=1), lm.Conv2D(8, 8, 3, padding=1)
    im2col.load_state_dict(direct.state_dict())
    results, cached = [], []
    for layer, algo in ((direct, "direct"), (im2col, "im2col")):
        monkeypatch.setattr(lm.ops.conv, "_cpu_conv", algo)
        with lm.memory.track() as m:
            y = layer(x)
            cached.append(m.live_bytes)
            dx = layer.backward(dy)
        results.append((y, dx, layer.weight.grad.copy(), layer.bias.grad.copy()))
    assert cached[0] <= x.nbytes + 1024 < 4 * x.nbytes < cached[1]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_cpu_conv_choice_is_validated_and_announced_where_the_cpu_cannot(monkeypatch):
    with pytest.raises(ValueError, match=r"cpu_conv: expected one of \('direct', 'im2col'\), received 'fft'"):
        lm.ops.cpu_conv("fft")
    assert lm.ops.cpu_conv() == "direct"
    if lm.ops._ext.cpu_module() is None:
        pytest.skip("lamina._C not built")
    monkeypatch.setattr(lm.ops.conv, "_DIRECT_SUPPORTED", [False])
    monkeypatch.setattr(lm.errors, "_warned", set())
    conv = lm.Conv2D(2, 3, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    with pytest.warns(lm.PerformanceWarning, match="needs a CPU with AVX2 and FMA"):
        with lm.memory.track() as m:
            y = conv(x)
    assert m.live_bytes >= 9 * x.nbytes  # im2col ran and its col is cached
    g = lm.ops.geometry(x.shape, (3, 3), (1, 1), (1, 1, 1, 1))
    np.testing.assert_array_equal(y, lm.ops.conv2d_forward(x, conv.weight.data, conv.bias.data, g, 1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv(x)  # said once
