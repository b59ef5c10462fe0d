"""im2col/col2im and the pooling kernels of lamina._C against the NumPy
references over random geometries (stride, padding, dilation, odd sizes,
batch 1), both dtypes, poisoned outputs; the same functions through
lamina.ops on each backend; the adjoint identity that ties im2col to col2im."""

import numpy as np
import pytest
from harness import to_numpy

from lamina import ops
from lamina.ops import _ext, reference

C = _ext.cpu_module()
needs_c = pytest.mark.skipif(C is None, reason=f"lamina._C not built ({_ext.import_error('_C')})")


def random_geometry(rng, pool=False):
    """A random valid geometry (output at least 1x1) and its 4-sided padding."""
    while True:
        n, c = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = (1, 1) if pool else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        if pool:  # PyTorch's rule: padding at most half the kernel, symmetric
            pt, pl = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
            pb, pr = pt, pl
        else:
            pt, pb, pl, pr = (int(v) for v in rng.integers(0, 3, size=4))
        g = ops.geometry((n, c, h, w), (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw))
        if g.oh >= 1 and g.ow >= 1:
            return g


GEOMETRIES = [random_geometry(np.random.default_rng(seed)) for seed in range(40)]
# Larger than any OpenMP chunk, stride 1 (the memcpy path) and stride 2.
GEOMETRIES += [
    ops.geometry((5, 7, 29, 31), (3, 3), (1, 1), (1, 1, 1, 1)),
    ops.geometry((3, 6, 33, 17), (5, 3), (2, 2), (2, 1, 0, 2), (2, 1)),
]
POOL_GEOMETRIES = [random_geometry(np.random.default_rng(100 + seed), pool=True) for seed in range(30)]
POOL_GEOMETRIES += [ops.geometry((4, 9, 28, 28), (2, 2), (2, 2), (0, 0, 0, 0))]
# ceil_mode: a last window hanging over the bottom/right edge (the 2x2 fast path too)
POOL_GEOMETRIES += [ops.geometry((2, 3, 5, 7), (2, 2), (2, 2), (0, 0, 0, 0))._replace(oh=3, ow=4),
                    ops.geometry((1, 2, 6, 6), (3, 3), (2, 2), (1, 1, 1, 1))._replace(oh=4, ow=4)]
# dilated windows: max pooling only (no average pooling has dilation)
DILATED_POOL_GEOMETRIES = [ops.geometry((2, 3, 9, 8), (3, 2), (2, 1), (1, 1, 1, 1), (2, 3)),
                           ops.geometry((1, 2, 7, 7), (3, 3), (1, 2), (1, 1, 0, 0), (3, 2))._replace(ow=4),
                           ops.geometry((2, 2, 2, 12), (1, 4), (1, 3), (0, 0, 2, 2), (1, 2))]


def _tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("g", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
def test_im2col_col2im_kernels_match_reference(g, dtype):
    rng = np.random.default_rng(sum(g))
    x = rng.standard_normal((g.n, g.c, g.h, g.w)).astype(dtype)
    col = np.full((g.c * g.kh * g.kw, g.n * g.oh * g.ow), np.nan, dtype=dtype)  # poisoned
    C.im2col(col.ctypes.data, x.ctypes.data, g, np.dtype(dtype).name)
    np.testing.assert_array_equal(col, reference.im2col(np, x, g))

    dcol = rng.standard_normal(col.shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype=dtype)
    C.col2im(dx.ctypes.data, dcol.ctypes.data, g, np.dtype(dtype).name)
    np.testing.assert_allclose(dx, reference.col2im(np, dcol.astype(np.float64), g), **_tol(dtype))


@pytest.mark.parametrize("g", GEOMETRIES[:12], ids=lambda g: "x".join(map(str, g)))
def test_col2im_is_the_adjoint_of_im2col(g, xp):
    """<im2col(x), d> = <x, col2im(d)> for every x and d: col2im is exactly the
    transpose of the linear map im2col, which is what backward needs."""
    rng = np.random.default_rng(sum(g) + 1)
    x = rng.standard_normal((g.n, g.c, g.h, g.w))
    d = rng.standard_normal((g.c * g.kh * g.kw, g.n * g.oh * g.ow))
    lhs = float(np.sum(to_numpy(ops.im2col(xp.asarray(x), g)) * d))
    rhs = float(np.sum(x * to_numpy(ops.col2im(xp.asarray(d), g))))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("g", GEOMETRIES[::4], ids=lambda g: "x".join(map(str, g)))
def test_ops_im2col_on_each_backend_matches_cpu(g, xp):
    rng = np.random.default_rng(sum(g) + 2)
    x = rng.standard_normal((g.n, g.c, g.h, g.w)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(ops.im2col(xp.asarray(x), g)), reference.im2col(np, x, g))


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("g", POOL_GEOMETRIES + DILATED_POOL_GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
def test_pool_kernels_match_reference(g, dtype):
    rng = np.random.default_rng(sum(g))
    planes = g._replace(n=g.n * g.c, c=1)
    name = np.dtype(dtype).name
    x = rng.standard_normal((g.n, g.c, g.h, g.w)).astype(dtype)
    dy = rng.standard_normal((g.n, g.c, g.oh, g.ow)).astype(dtype)

    y = np.full(dy.shape, np.nan, dtype=dtype)
    idx = np.full(dy.shape, -1, dtype=np.int64)
    C.maxpool_forward(y.ctypes.data, idx.ctypes.data, x.ctypes.data, planes, name)
    ry, ridx = reference.maxpool_forward(np, x, g)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    dx = np.full(x.shape, np.nan, dtype=dtype)
    C.maxpool_backward(dx.ctypes.data, dy.ctypes.data, idx.ctypes.data, planes, name)
    np.testing.assert_allclose(dx, reference.maxpool_backward(np, dy, idx, g), **_tol(dtype))

    if g.dh != 1 or g.dw != 1:
        return
    for include_pad in (True, False):
        y = np.full(dy.shape, np.nan, dtype=dtype)
        C.avgpool_forward(y.ctypes.data, x.ctypes.data, planes, include_pad, name)
        np.testing.assert_allclose(y, reference.avgpool_forward(np, x.astype(np.float64), g, include_pad), **_tol(dtype))
        dx = np.full(x.shape, np.nan, dtype=dtype)
        C.avgpool_backward(dx.ctypes.data, dy.ctypes.data, planes, include_pad, name)
        np.testing.assert_allclose(dx, reference.avgpool_backward(np, dy.astype(np.float64), g, include_pad), **_tol(dtype))


@pytest.mark.parametrize("window", [(2, 2, 0, 1), (3, 1, 1, 1), (2, 1, 1, 2)], ids=["2x2_fast_path", "3x3_s1_p1", "2x2_d2"])
def test_maxpool_nan_and_ties_follow_pytorch(window, xp, torch):
    """A NaN in a window is its maximum (the last NaN if several), and ties
    take the first index: PyTorch's indices exactly, on both code paths; a
    dilated window (ops only: the pooling layers have no dilation) too."""
    k, s, p, d = window
    x = np.array([[[[1.0, 1.0, 0.0, np.nan, 2.0, 2.0], [1.0, 0.5, np.nan, 3.0, 2.0, 1.0],
                    [0.0, 0.0, 0.0, 0.0, np.nan, np.nan], [0.0, 0.0, -1.0, 5.0, 1.0, np.nan]]]], dtype=np.float32)
    g = ops.geometry(x.shape, (k, k), (s, s), (p, p, p, p), (d, d))
    y, idx = ops.maxpool2d_forward(xp.asarray(x), g)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, return_indices=True)
    np.testing.assert_array_equal(to_numpy(idx), tidx.numpy())
    np.testing.assert_array_equal(to_numpy(y), ty.numpy())


def test_kernels_reject_negative_geometry():
    if C is None:
        pytest.skip("lamina._C not built")
    with pytest.raises(ValueError, match="negative convolution geometry"):
        C.im2col(0, 0, (1, 1, 1, 1, 1, 1, 1, 1, -1, 0, 1, 1, 1, 1), "float32")


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,p", [(1, 1, 1), (3, 5, 7), (64, 32, 196), (2, 3, 4099)])
def test_channel_transposes_match_reference(n, c, p, dtype):
    rng = np.random.default_rng(n * c + p)
    y = rng.standard_normal((c, n * p)).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    for b in (bias, None):
        np.testing.assert_array_equal(ops.channels_to_batch_major(y, b, n), reference.channels_to_batch_major(np, y, b, n))
    dy = rng.standard_normal((n, c, p)).astype(dtype)
    out, sums = ops.batch_to_channels_major(dy)
    rout, rsums = reference.batch_to_channels_major(np, dy.astype(np.float64), True)
    np.testing.assert_array_equal(out, rout.astype(dtype))
    np.testing.assert_allclose(sums, rsums, **(dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else _tol(dtype)))
    assert ops.batch_to_channels_major(dy, need_sums=False)[1] is None


# ---------------------------------------------------------------------------
# Implicit GEMM: the NumPy mirror of the CUDA kernels' index arithmetic
# (reference.implicit_conv_*) against the im2col path, which is itself
# checked against PyTorch in test_conv.py.  The CUDA kernels are compared
# with this arithmetic's results on the GPU (test_cuda_conv.py).
# ---------------------------------------------------------------------------


def _grouped_problem(g, seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([d for d in range(1, g.c + 1) if g.c % d == 0]))
    o = groups * int(rng.integers(1, 4))
    x = rng.standard_normal((g.n, g.c, g.h, g.w))
    w = rng.standard_normal((o, g.c // groups, g.kh, g.kw))
    b = rng.standard_normal(o)
    dy = rng.standard_normal((g.n, o, g.oh, g.ow))
    return x, w, b, dy, groups


@pytest.mark.parametrize("g", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
def test_implicit_gemm_arithmetic_matches_im2col(g):
    x, w, b, dy, groups = _grouped_problem(g, sum(g))
    o = w.shape[0]
    y_ref, col = ops.conv2d_forward(x, w, b, g, groups)
    dx_ref, dw_ref, _ = ops.conv2d_backward(dy, col, w, g, groups)
    np.testing.assert_allclose(reference.implicit_conv_forward(np, x, w, b, g, groups), y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.implicit_conv_backward_data(np, dy, w, g, groups), dx_ref, rtol=1e-12, atol=1e-12)
    for splits in (1, 2, 7):
        dw = reference.implicit_conv_backward_weight(np, dy, x, g, o, groups, splits)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12, err_msg=f"splits={splits}")


@pytest.mark.parametrize("q,splits", [(1, 1), (7, 3), (8, 1), (9, 2), (1000, 7), (131072, 33), (24, 5)])
def test_implicit_split_ranges_tile_the_reduction(q, splits):
    ranges = reference.implicit_split_ranges(q, splits)
    assert len(ranges) == splits and ranges[0][0] == 0 and ranges[-1][1] == q
    for (b0, e0), (b1, _) in zip(ranges, ranges[1:]):
        assert e0 == b1 and b0 <= e0 and (b0 == e0 or b0 % reference.IMPLICIT_BK == 0)


def test_backward_weight_splits_fill_the_gpu_without_tiny_ranges():
    resnet_stage1 = ops.geometry((128, 16, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1))
    splits = ops.conv.backward_weight_splits(resnet_stage1, 16, 1, sm_count=132)
    assert 100 <= splits <= 264  # one 128x128 tile (16 x 144): split the 131072 pixels across the SMs
    q = resnet_stage1.n * resnet_stage1.oh * resnet_stage1.ow
    assert q / splits >= 256
    wide = ops.geometry((8, 512, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1))  # 144 tiles already, and only 392 pixels
    assert ops.conv.backward_weight_splits(wide, 512, 1, sm_count=132) == 1
    # 8 groups of one tile each want 66 splits (four blocks per SM); 16384 pixels allow 128 of at least 128
    grouped = ops.geometry((64, 32, 16, 16), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(grouped, 32, 8, sm_count=132) == 66
    # ResNet-20's 64-channel stage: 5 tiles would want 106 splits, its 8192 pixels allow 64 of 128
    stage3 = ops.geometry((128, 64, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(stage3, 64, 1, sm_count=132) == 64
    tiny = ops.geometry((1, 1, 3, 3), (3, 3), (1, 1), (0, 0, 0, 0))
    assert ops.conv.backward_weight_splits(tiny, 1, 1, sm_count=132) == 1


def test_backward_weight_splits_on_wgmma_fill_whole_waves_of_one_block_per_sm():
    # ResNet-50 conv4: 36 tiles, 98 slices of 64 pixels.  2-6 splits fill 55-82% of their waves of 132, 7 fill
    # 95% (252 blocks in two waves); the four-per-SM rule would take 15 splits of 7 slices
    conv4 = ops.geometry((32, 256, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(conv4, 256, 1, sm_count=132, wgmma_tile=128) == 7
    assert ops.conv.backward_weight_splits(conv4, 256, 1, sm_count=132) == 15
    # ResNet-20's 16-channel stage: 2 tiles; 57 splits of 36 slices give 114 blocks, 86% of one wave
    stage1 = ops.geometry((128, 16, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(stage1, 16, 1, sm_count=132, wgmma_tile=128) == 57
    # ranges of at least 512 pixels: 1024 pixels allow 2 splits, which fill 4 of 132 slots (best there is)
    small = ops.geometry((1, 64, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(small, 64, 1, sm_count=132, wgmma_tile=128) == 2
    # too few pixels for two ranges: one
    tiny = ops.geometry((1, 64, 16, 16), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(tiny, 64, 1, sm_count=132, wgmma_tile=128) == 1


def test_backward_weight_splits_on_narrow_wgmma_count_two_blocks_per_sm():
    # the same rule over 264 slots.  ResNet-20's 16-channel stage: 2 tiles of 128 dW columns by 16 channels,
    # 2048 slices; 113 splits would take 19 slices each, so only 108 get any (216 blocks, 82%); 114 of 18 fill 86%
    stage1 = ops.geometry((128, 16, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(stage1, 16, 1, sm_count=132, wgmma_tile=16) == 114
    # ResNet-50 conv2 (64 channels): 5 tiles, 1568 slices; 45 splits of 35 slices, 225 blocks, 85%
    conv2 = ops.geometry((32, 64, 56, 56), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(conv2, 64, 1, sm_count=132, wgmma_tile=64) == 45
    # ResNet-20's 64-channel stage: 8192 pixels allow 16 ranges of 512, 80 blocks; the best there is
    stage3 = ops.geometry((128, 64, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(stage3, 64, 1, sm_count=132, wgmma_tile=64) == 16
    tiny = ops.geometry((1, 64, 16, 16), (3, 3), (1, 1), (1, 1, 1, 1))
    assert ops.conv.backward_weight_splits(tiny, 64, 1, sm_count=132, wgmma_tile=64) == 1


# ---------------------------------------------------------------------------
# The direct stride-1 CPU kernel (csrc/cpu/conv_direct.cpp) against the
# im2col path in float64, whose results test_conv.py holds to PyTorch.
# ---------------------------------------------------------------------------


def _direct_domain(g):
    """The Python statement of conv_direct_geometry_ok: stride 1, and padding
    on each side at most the dilated kernel's span (so that backward-data,
    a correlation of dy padded by span - padding, pads by >= 0)."""
    pb = g.oh + g.dh * (g.kh - 1) - g.h - g.pt
    pr = g.ow + g.dw * (g.kw - 1) - g.w - g.pl
    span_h, span_w = g.dh * (g.kh - 1), g.dw * (g.kw - 1)
    return g.sh == g.sw == 1 and 0 <= g.pt <= span_h and 0 <= pb <= span_h and 0 <= g.pl <= span_w and 0 <= pr <= span_w


def _stride1_geometry(seed):
    rng = np.random.default_rng(1000 + seed)
    while True:
        g = random_geometry(rng)
        pb, pr = (int(v) for v in rng.integers(0, 3, size=2))
        g = ops.geometry((g.n, g.c, g.h, g.w), (g.kh, g.kw), (1, 1), (g.pt, pb, g.pl, pr), (g.dh, g.dw))
        if g.oh >= 1 and g.ow >= 1 and _direct_domain(g):
            return g


DIRECT_GEOMETRIES = [_stride1_geometry(seed) for seed in range(24)]
DIRECT_GEOMETRIES += [
    ops.geometry((37, 5, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1)),  # several image chunks per thread in backward-weight
    ops.geometry((2, 3, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (2, 2)),  # ResNet stage 3's plane, dilated
    ops.geometry((1, 9, 13, 27), (5, 5), (1, 1), (2, 2, 2, 2)),  # 5x5 'same' (LeNet), batch 1
    ops.geometry((3, 2, 1, 50), (1, 7), (1, 1), (0, 0, 6, 0)),  # Conv1D-shaped, causal padding
    ops.geometry((2, 4, 6, 7), (1, 1), (1, 1), (0, 0, 0, 0)),  # 1x1
]


@needs_c
def test_direct_domain_matches_the_kernel():
    for seed in range(200):
        g = random_geometry(np.random.default_rng(seed))
        assert C.conv_direct_geometry_ok(tuple(g)) == _direct_domain(g), g
    assert all(C.conv_direct_geometry_ok(tuple(g)) for g in DIRECT_GEOMETRIES)


def _check_direct(g, x, w, b, dy, groups, dtype):
    """Both register-block variants of forward, backward-data and
    backward-weight against the float64 im2col path; outputs poisoned."""
    x, w, b, dy = (a.astype(dtype) for a in (x, w, b, dy))
    o, name, geo = w.shape[0], np.dtype(dtype).name, tuple(g)
    y_ref, col = ops.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), g, groups)
    dx_ref, dw_ref, db_ref = ops.conv2d_backward(dy.astype(np.float64), col, w.astype(np.float64), g, groups)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for variant in ("auto", "pixels", "channels"):
        for bias in (b, None):
            y = np.full(y_ref.shape, np.nan, dtype=dtype)
            C.conv_direct_forward(y.ctypes.data, x.ctypes.data, w.ctypes.data, 0 if bias is None else bias.ctypes.data,
                                  geo, o, groups, name, variant)
            np.testing.assert_allclose(y, y_ref if bias is not None else y_ref - b.reshape(1, -1, 1, 1), **tol,
                                       err_msg=f"forward, {variant}")
        dx = np.full(x.shape, np.nan, dtype=dtype)
        C.conv_direct_backward_data(dx.ctypes.data, dy.ctypes.data, w.ctypes.data, geo, o, groups, name, variant)
        np.testing.assert_allclose(dx, dx_ref, **tol, err_msg=f"backward-data, {variant}")
        dw, db = np.full(w.shape, np.nan, dtype=dtype), np.full(o, np.nan, dtype=dtype)
        C.conv_direct_backward_weight(dw.ctypes.data, db.ctypes.data, dy.ctypes.data, x.ctypes.data, geo, o, groups,
                                      name, variant)
        np.testing.assert_allclose(dw, dw_ref, **tol, err_msg=f"backward-weight, {variant}")
        np.testing.assert_allclose(db, db_ref, **tol, err_msg=f"backward-weight's bias, {variant}")
        dw = np.full(w.shape, np.nan, dtype=dtype)
        C.conv_direct_backward_weight(dw.ctypes.data, 0, dy.ctypes.data, x.ctypes.data, geo, o, groups, name,
                                      variant)  # no db
        np.testing.assert_allclose(dw, dw_ref, **tol, err_msg=f"backward-weight without db, {variant}")


needs_direct = pytest.mark.skipif(C is None or not C.conv_direct_supported(),
                                  reason="lamina._C not built, or this CPU lacks AVX2 or FMA")


@needs_direct
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("g", DIRECT_GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
def test_direct_kernels_match_im2col(g, dtype):
    _check_direct(g, *_grouped_problem(g, sum(g)), dtype)


# Output channels per group past one register block of channel vectors (16
# floats, 8 doubles) and not a multiple of it, pixel counts not a multiple
# of the 6-pixel block, groups: (input shape, kernel, padding, dilation, O, G).
WIDE = [
    ((3, 8, 7, 5), (3, 3), (1, 1, 1, 1), (1, 1), 20, 1),
    ((2, 6, 8, 8), (3, 3), (1, 1, 1, 1), (1, 1), 40, 2),
    ((1, 20, 5, 9), (5, 3), (2, 2, 0, 1), (1, 2), 17, 1),
    ((4, 34, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 34, 2),
    # enough images on small planes that backward-weight sums several per register block
    ((17, 8, 6, 6), (3, 3), (1, 1, 1, 1), (1, 1), 24, 1),
    ((19, 6, 5, 7), (2, 3), (1, 0, 1, 1), (1, 1), 18, 2),
]


@needs_direct
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kernel,padding,dilation,o,groups", WIDE, ids=lambda v: str(v))
def test_direct_kernels_with_many_channels_match_im2col(shape, kernel, padding, dilation, o, groups, dtype):
    g = ops.geometry(shape, kernel, (1, 1), padding, dilation)
    rng = np.random.default_rng(o + groups)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((o, shape[1] // groups, *kernel))
    _check_direct(g, x, w, rng.standard_normal(o), rng.standard_normal((g.n, o, g.oh, g.ow)), groups, dtype)


@needs_direct
def test_direct_kernels_refuse_geometry_outside_their_domain():
    strided = ops.geometry((1, 1, 5, 5), (3, 3), (2, 2), (1, 1, 1, 1))
    wide_pad = ops.geometry((1, 1, 5, 5), (3, 3), (1, 1), (3, 3, 0, 0))
    for g in (strided, wide_pad):
        assert not C.conv_direct_geometry_ok(tuple(g))
        with pytest.raises(ValueError, match="outside the direct kernel's domain"):
            C.conv_direct_forward(0, 0, 0, 0, tuple(g), 1, 1, "float32")
    ok = ops.geometry((1, 1, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="expected variant 'auto', 'pixels' or 'channels', received 'rows'"):
        C.conv_direct_forward(0, 0, 0, 0, tuple(ok), 1, 1, "float32", "rows")
