"""Max pooling's indices (``return_indices``), MaxUnpool1D/2D and
AdaptiveMaxPool's indices, tie and NaN rules: against PyTorch, finite
differences, and the errors."""

import numpy as np
import pytest
from conftest import requires_cuda
from harness import random_inputs, to_numpy

import lamina as lm

# (name, factory(module) -> (pool, unpool), input shape); the factory builds the PyTorch twins too
POOL_UNPOOL = [
    ("2x2", lambda m: (m.MaxPool2D(2, return_indices=True), m.MaxUnpool2D(2)), (2, 3, 6, 8)),
    ("3_s2_p1", lambda m: (m.MaxPool2D(3, 2, 1, return_indices=True), m.MaxUnpool2D(3, 2, 1)), (1, 2, 7, 5)),
    ("overlapping_3_s1", lambda m: (m.MaxPool2D(3, 1, 1, return_indices=True), m.MaxUnpool2D(3, 1, 1)), (2, 2, 4, 5)),
    ("2x3_s2x1", lambda m: (m.MaxPool2D((2, 3), (2, 1), return_indices=True), m.MaxUnpool2D((2, 3), (2, 1))), (1, 3, 5, 6)),
    ("dilated_ceil", lambda m: (m.MaxPool2D(2, 2, dilation=2, return_indices=True, ceil_mode=True), m.MaxUnpool2D(2, 2)),
     (2, 1, 7, 7)),
    ("1d_3_s2_p1", lambda m: (m.MaxPool1D(3, 2, 1, return_indices=True), m.MaxUnpool1D(3, 2, 1)), (2, 3, 9)),
    ("1d_batch1", lambda m: (m.MaxPool1D(2, return_indices=True), m.MaxUnpool1D(2)), (1, 1, 5)),
]


def _torch_pair(torch, name):
    make = dict((c[0], c[1]) for c in POOL_UNPOOL)[name]
    t = torch.nn
    mapping = {"MaxPool2D": t.MaxPool2d, "MaxPool1D": t.MaxPool1d, "MaxUnpool2D": t.MaxUnpool2d, "MaxUnpool1D": t.MaxUnpool1d}

    class Shim:  # builds the PyTorch twins through the same factory
        def __getattr__(self, attr):
            return mapping[attr]

    return make(Shim())


class PoolUnpool(lm.Layer):
    """unpool(*pool(x)) back at the input's size: a layer to gradcheck both."""

    def __init__(self, pool, unpool):
        super().__init__()
        self.pool, self.unpool = pool, unpool

    def forward(self, x):
        y, idx = self.pool(x)
        return self.unpool(y, idx, output_size=x.shape)

    def backward(self, dy):
        return self.pool.backward(self.unpool.backward(dy))


class FixedUnpool(lm.Layer):
    """x -> unpool(x, indices) with the indices fixed: a layer to gradcheck the unpooling alone."""

    def __init__(self, unpool, idx, output_size=None):
        super().__init__()
        self.unpool, self.idx, self.output_size = unpool, idx, output_size

    def forward(self, x):
        return self.unpool(x, self.idx, output_size=self.output_size)

    def backward(self, dy):
        return self.unpool.backward(dy)


@pytest.mark.parametrize("name,make,shape", POOL_UNPOOL, ids=[c[0] for c in POOL_UNPOOL])
def test_pool_indices_and_unpool_match_pytorch(name, make, shape, torch, xp):
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(shape).astype(np.float32)
    pool, unpool = make(lm)
    tpool, tunpool = _torch_pair(torch, name)

    y, idx = pool(xp.asarray(x))
    ty, tidx = tpool(torch.from_numpy(x))
    assert idx.dtype == np.int64 and idx.shape == y.shape
    np.testing.assert_array_equal(to_numpy(idx), tidx.numpy())
    np.testing.assert_array_equal(to_numpy(y), ty.numpy())

    ty = ty.detach().requires_grad_(True)
    z = unpool(y, idx, output_size=x.shape)
    tz = tunpool(ty, tidx, output_size=x.shape)
    np.testing.assert_array_equal(to_numpy(z), tz.detach().numpy())
    dz = rng.standard_normal(z.shape).astype(np.float32)
    tz.backward(torch.from_numpy(dz))
    dy = unpool.backward(xp.asarray(dz))
    np.testing.assert_array_equal(to_numpy(dy), ty.grad.numpy())
    assert dy.dtype == np.float32 and dy.shape == y.shape

    # the pooling layer's backward is unchanged by return_indices
    dx = pool.backward(dy)
    tx = torch.from_numpy(x).requires_grad_(True)
    tpool(tx)[0].backward(ty.grad)
    np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=1e-6, atol=1e-7)


# Windows that do not overlap: no input is the maximum of two windows.  Where
# one is, unpooling writes it twice to one place and the backward gives both
# writes the gradient (a gather), as PyTorch's does, so the composite's
# backward is not its derivative there; the parity test above covers those.
DISJOINT = [c for c in POOL_UNPOOL if c[0] in ("2x2", "1d_batch1")] + [
    ("3_s3_p1", lambda m: (m.MaxPool2D(3, 3, 1, return_indices=True), m.MaxUnpool2D(3, 3, 1)), (2, 2, 7, 5)),
    ("1d_2_s3", lambda m: (m.MaxPool1D(2, 3, return_indices=True), m.MaxUnpool1D(2, 3)), (2, 3, 8)),
]


@pytest.mark.parametrize("name,make,shape", DISJOINT, ids=[c[0] for c in DISJOINT])
def test_pool_unpool_gradcheck(name, make, shape):
    for x in random_inputs([shape, (1, *shape[1:])], np.random.default_rng(3)):
        assert lm.testing.gradcheck(PoolUnpool(*make(lm)), x)


def test_unpool_alone_gradcheck_and_default_size(torch):
    rng = np.random.default_rng(0)
    idx = np.stack([rng.permutation(20)[:6] for _ in range(6)]).reshape(2, 3, 2, 3)  # distinct per plane
    x = rng.standard_normal((2, 3, 2, 3))
    assert lm.testing.gradcheck(FixedUnpool(lm.MaxUnpool2D((2, 3), (2, 2)), idx, output_size=(4, 6)), x)
    # default size: (in - 1) * stride - 2 * padding + kernel per axis, as PyTorch
    for k, s, p, shape in [(2, 2, 0, (1, 1, 3, 4)), (3, 2, 1, (2, 2, 3, 3)), ((3, 2), (1, 3), (1, 0), (1, 2, 4, 2))]:
        xin = torch.zeros(shape)
        tidx = torch.zeros(shape, dtype=torch.int64)
        expect = torch.nn.MaxUnpool2d(k, s, p)(xin, tidx).shape
        assert lm.MaxUnpool2D(k, s, p)(xin.numpy(), tidx.numpy()).shape == tuple(expect)


def test_unpool_accepts_the_whole_shape_or_spatial_size_and_int32_indices():
    x = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 1, 2, 3)
    idx = np.array([[[[0, 3, 5], [10, 12, 16]]]], dtype=np.int32)
    un = lm.MaxUnpool2D(2)
    a = un(x, idx, output_size=(1, 1, 5, 7))
    b = un(x, idx, output_size=(5, 7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 1, 5, 7) and a.sum() == x.sum()
    assert a.ravel()[16] == 6 and a.ravel()[1] == 0


def test_adaptive_max_pool_indices_ties_and_nans_match_pytorch(torch, xp):
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((2, 3, 7, 6)), 0).astype(np.float32)  # many tied zeros
    x[0, 0] = 0  # a whole plane of ties
    x[1, 2, 1, 2] = x[1, 2, 2, 1] = np.nan  # two NaNs in a window: PyTorch keeps the last
    for size in [(3, 4), (7, 6), (1, 1), (2, None), (5, 9)]:
        y, idx = lm.AdaptiveMaxPool2D(size, return_indices=True)(xp.asarray(x))
        ty, tidx = torch.nn.AdaptiveMaxPool2d(size, return_indices=True)(torch.from_numpy(x))
        np.testing.assert_array_equal(to_numpy(idx), tidx.numpy(), err_msg=str(size))
        np.testing.assert_array_equal(to_numpy(y), ty.numpy(), err_msg=str(size))
    x1 = x[:, :, 0, :].copy()
    y, idx = lm.AdaptiveMaxPool1D(4, return_indices=True)(xp.asarray(x1))
    ty, tidx = torch.nn.AdaptiveMaxPool1d(4, return_indices=True)(torch.from_numpy(x1))
    np.testing.assert_array_equal(to_numpy(idx), tidx.numpy())
    # and the indices unpool as PyTorch's would
    z = lm.MaxUnpool1D(3, 1)(y, idx)
    np.testing.assert_array_equal(to_numpy(z), torch.nn.MaxUnpool1d(3, 1)(ty, tidx).numpy())


def test_max_pool_ties_route_the_gradient_as_pytorch(torch, xp):
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    x[0, 1, 1:3, 1:3] = 1.0
    for make, tmake in [(lambda: lm.MaxPool2D(3, 1, 1), lambda: torch.nn.MaxPool2d(3, 1, 1)),
                        (lambda: lm.AdaptiveMaxPool2D(3), lambda: torch.nn.AdaptiveMaxPool2d(3))]:
        layer = make()
        y = layer(xp.asarray(x))
        dx = layer.backward(xp.ones_like(y))
        tx = torch.from_numpy(x).requires_grad_(True)
        tmake()(tx).sum().backward()
        np.testing.assert_array_equal(to_numpy(dx), tx.grad.numpy())


# ---------------------------------------------------------------------------
# errors: the layer named, expected and received, nothing cached
# ---------------------------------------------------------------------------


def _pooled():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6)).astype(np.float32)
    return lm.MaxPool2D(2, return_indices=True)(x)


def test_unpool_rejects_bad_indices():
    y, idx = _pooled()
    un = lm.MaxUnpool2D(2)
    with pytest.raises(lm.DTypeError, match=r"MaxUnpool2D\(kernel_size=\(2, 2\).*integer indices.*float32"):
        un(y, idx.astype(np.float32))
    with pytest.raises(lm.DTypeError, match=r"MaxUnpool2D.*integer indices.*received list"):
        un(y, idx.tolist())
    with pytest.raises(lm.ShapeError, match=r"MaxUnpool2D.*indices of the input's shape \(2, 3, 2, 3\), received \(2, 3, 2, 2\)"):
        un(y, idx[..., :2])
    bad = idx.copy()
    bad[1, 2, 1, 2] = 24
    with pytest.raises(IndexError, match=r"MaxUnpool2D.*indices in \[0, 24\).*\(4, 6\).*from 0 to 24"):
        un(y, bad)
    bad[1, 2, 1, 2] = -1
    with pytest.raises(IndexError, match=r"from -1 to"):
        un(y, bad)
    assert not un.has_cache()


def test_unpool_rejects_bad_output_size_and_input():
    y, idx = _pooled()
    un = lm.MaxUnpool2D(2)
    with pytest.raises(lm.ShapeError, match=r"MaxUnpool2D.*output_size between \(3, 5\) and \(5, 7\).*\(2, 3, 2, 3\).*\(6, 6\)"):
        un(y, idx, output_size=(6, 6))
    with pytest.raises(ValueError, match=r"MaxUnpool2D.*output_size as 2 ints \(or the whole shape of 4\), received \(4,\)"):
        un(y, idx, output_size=(4,))
    with pytest.raises(lm.ShapeError, match=r"MaxUnpool2D.*expected a 4-d input, received shape \(3, 2, 3\)"):
        un(y[0], idx[0])
    with pytest.raises(lm.DTypeError, match=r"MaxUnpool2D.*floating-point input, received dtype int64"):
        un(idx, idx)
    assert not un.has_cache()
    with pytest.raises(ValueError, match=r"MaxUnpool1D: expected kernel_size as an int or a tuple of 1 ints"):
        lm.MaxUnpool1D((2, 2))


@pytest.mark.gpu
@requires_cuda
def test_unpool_indices_on_another_device_are_rejected():
    cp = lm.backend.cupy_module()
    y, idx = _pooled()
    un = lm.MaxUnpool2D(2)
    with pytest.raises(lm.DeviceError, match=r"MaxUnpool2D.*indices on cpu \(where the input is\), received them on cuda:0"):
        un(y, cp.asarray(idx))
    with pytest.raises(lm.DeviceError, match=r"indices on cuda:0 \(where the input is\), received them on cpu"):
        un(cp.asarray(y), idx)
    assert not un.has_cache()


def test_adaptive_max_pool_errors():
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool2D: expected output_size as 2 positive int\(s\)"):
        lm.AdaptiveMaxPool2D((2, 0))
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool1D: expected output_size as 1 positive int"):
        lm.AdaptiveMaxPool1D((2, 3))
    layer = lm.AdaptiveMaxPool2D(2)
    with pytest.raises(lm.ShapeError, match=r"AdaptiveMaxPool2D\(output_size=\(2, 2\)\): expected a 4-d input, received shape \(3, 4, 4\)"):
        layer(np.zeros((3, 4, 4), dtype=np.float32))
    with pytest.raises(lm.ShapeError, match=r"AdaptiveMaxPool2D.*non-empty spatial dimensions, received shape \(1, 2, 0, 4\)"):
        layer(np.zeros((1, 2, 0, 4), dtype=np.float32))
    assert not layer.has_cache()


def test_repr_shows_return_indices():
    assert "return_indices=True" in repr(lm.MaxPool2D(2, return_indices=True))
    assert "return_indices" not in repr(lm.MaxPool2D(2))
    assert repr(lm.AdaptiveMaxPool2D((3, None), return_indices=True)) == "AdaptiveMaxPool2D(output_size=(3, None), return_indices=True)"
