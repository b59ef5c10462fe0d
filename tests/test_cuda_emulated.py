"""lamina's CUDA kernels (csrc/cuda/gemm.cu and conv.cu: the fp32 GEMM with
every transpose and epilogue, the fused bias+activation backward, and the
implicit-GEMM convolutions with split-K; activations.cu, softmax_xent.cu
(warp shuffles emulated) and the multi-tensor optimizer updates of optim.cu;
gemm_tc.cu: the fp16/bf16
tensor-core GEMM, its ldmatrix/mma.sync/cp.async standing in as
warp-cooperative CPU code; gemm_wgmma.cu: the sm_90a GEMM, its TMA copies,
mbarriers and wgmma modelled from the PTX ISA) run on the CPU through a block emulator
(tests/emu), against float64 references.  This checks their index
arithmetic, tiling, edge masking and double buffering on every CI run,
without a GPU; the same kernels on the GPU are checked by test_cuda_gemm.py
and test_cuda_conv.py.  Sizes stay small: each CUDA thread is a CPU thread."""

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest

from lamina import ops
from lamina.ops import reference

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import emulate  # noqa: E402

LIB, WHY = emulate.build()
pytestmark = pytest.mark.skipif(LIB is None, reason=f"kernel emulator not built: {WHY}")

ACT = {"none": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}


def ptr(a):
    return ctypes.c_void_p(0 if a is None else a.ctypes.data)


def i64(v):
    return ctypes.c_int64(int(v))


def act64(z, act):
    from scipy.special import erf

    if act == "relu":
        return np.maximum(z, 0)
    if act == "gelu":
        return 0.5 * z * (1 + erf(z / np.sqrt(2)))
    if act == "gelu_tanh":
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    return z


# around the 128 x 128 x 8 tile, with odd leading dimensions (scalar loads) and multiples of 4 (vector loads)
GEMM_CASES = [(1, 1, 1), (5, 3, 7), (128, 128, 8), (129, 127, 9), (130, 260, 16), (64, 131, 33), (3, 129, 200)]


@pytest.mark.parametrize("m,n,k", GEMM_CASES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_emulated_sgemm_matches_float64(m, n, k, ta, tb):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    z_ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64) + bias
    for act in ("none", "relu", "gelu"):
        c = np.full((m, n), np.nan, dtype=np.float32)
        z = np.full((m, n), np.nan, dtype=np.float32)
        rc = LIB.emu_sgemm(ptr(c), ptr(z), ptr(a), ptr(b), ptr(bias), i64(m), i64(n), i64(k), i64(a.shape[1]),
                           i64(b.shape[1]), i64(n), int(ta), int(tb), ACT[act])
        assert rc == 0
        np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5 * np.sqrt(k))
        np.testing.assert_allclose(c, act64(z_ref, act), rtol=1e-5, atol=1e-5 * np.sqrt(k), err_msg=act)


def test_emulated_sgemm_on_a_strided_output_and_no_bias():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((37, 12)).astype(np.float32), rng.standard_normal((12, 20)).astype(np.float32)
    c = np.full((37, 25), 7.0, dtype=np.float32)  # ldc 25 > n 20: columns 20.. must stay untouched
    assert LIB.emu_sgemm(ptr(c), None, ptr(a), ptr(b), None, i64(37), i64(20), i64(12), i64(12), i64(20), i64(25),
                         0, 0, 0) == 0
    np.testing.assert_allclose(c[:, :20], a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert (c[:, 20:] == 7.0).all()


@pytest.mark.parametrize("m,n,k,splits", [(5, 7, 1, 3), (37, 130, 100, 2), (128, 131, 785, 7), (129, 20, 64, 8)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)])
def test_emulated_split_k_sgemm_matches_float64(m, n, k, splits, ta, tb):
    """Split-K: k cut into whole 8-deep slices per split (some splits empty when k is short),
    partial tiles in the workspace, summed in order by the epilogue kernel."""
    rng = np.random.default_rng(m + n + k + splits)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    z_ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64) + bias
    c, z = np.full((m, n), np.nan, np.float32), np.full((m, n), np.nan, np.float32)
    ws = np.full(splits * m * n, np.nan, np.float32)
    rc = LIB.emu_sgemm_split(ptr(c), ptr(z), ptr(ws), splits, ptr(a), ptr(b), ptr(bias), i64(m), i64(n), i64(k),
                             i64(a.shape[1]), i64(b.shape[1]), i64(n), int(ta), int(tb), ACT["relu"])
    assert rc == 0
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    np.testing.assert_allclose(c, np.maximum(z_ref, 0), rtol=1e-5, atol=1e-5 * np.sqrt(k))
    assert LIB.emu_sgemm_split(ptr(c), None, None, 2, ptr(a), ptr(b), None, i64(m), i64(n), i64(k), i64(a.shape[1]),
                               i64(b.shape[1]), i64(n), int(ta), int(tb), 0) != 0  # splits > 1 needs a workspace


def _bf16_bits(a):
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


# around the tensor-core kernel's 128 x 128 x 32 tile; k = 31, 33, 40 ... also move
# the leading dimensions off multiples of 8 (the scalar-load path); (64, 72, 160) runs
# five k-tiles through the cp.async ring
TC_CASES = [(1, 1, 1), (16, 8, 16), (128, 128, 32), (129, 130, 33), (37, 140, 64), (131, 9, 40), (5, 3, 100), (64, 72, 160)]


@pytest.mark.parametrize("m,n,k", TC_CASES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype,out_f32", [("float16", False), ("bfloat16", True)])
def test_emulated_tensor_core_gemm_matches_float64(m, n, k, ta, tb, dtype, out_f32):
    rng = np.random.default_rng(m * 7 + n * 3 + k)

    def operand(shape):
        v = rng.standard_normal(shape).astype(np.float32)
        if dtype == "bfloat16":
            bits = _bf16_bits(v)
            return bits, _bf16_value(bits).astype(np.float64)
        h = v.astype(np.float16)
        return h, h.astype(np.float64)

    a, a64 = operand((k, m) if ta else (m, k))
    b, b64 = operand((n, k) if tb else (k, n))
    bias, bias64 = operand((n,))
    z_ref = (a64.T if ta else a64) @ (b64.T if tb else b64) + bias64
    store = np.float32 if out_f32 else (np.uint16 if dtype == "bfloat16" else np.float16)
    for act in ("none", "gelu"):
        c = np.full((m, n), 0xFFFF if store == np.uint16 else np.nan, dtype=store)
        z = np.full((m, n), 0xFFFF if store == np.uint16 else np.nan, dtype=store)
        rc = LIB.emu_gemm_tc(ptr(c), ptr(z), ptr(a), ptr(b), ptr(bias), i64(m), i64(n), i64(k), i64(a.shape[1]),
                             i64(b.shape[1]), i64(n), int(ta), int(tb), ACT[act], int(dtype == "bfloat16"), int(out_f32))
        assert rc == 0

        def value(v):
            return _bf16_value(v) if store == np.uint16 else v.astype(np.float64)

        rel = 1e-5 if out_f32 else (1e-2 if dtype == "bfloat16" else 2e-3)
        np.testing.assert_allclose(value(z), z_ref, rtol=rel, atol=rel * np.sqrt(k), err_msg="pre-activation")
        np.testing.assert_allclose(value(c), act64(z_ref, act), rtol=rel, atol=rel * np.sqrt(k), err_msg=act)


@pytest.mark.parametrize("m,n", [(1, 1), (9, 33), (70, 5)])
@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh"])
def test_emulated_bias_act_backward(m, n, act):
    rng = np.random.default_rng(m + n)
    dy, z = rng.standard_normal((m, n)).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
    z64, h = z.astype(np.float64), 1e-6
    expected = dy * (act64(z64 + h, act) - act64(z64 - h, act)) / (2 * h)
    dz, db = np.full_like(dy, np.nan), np.full(n, np.nan, dtype=np.float32)
    assert LIB.emu_bias_act_backward(ptr(dz), ptr(db), ptr(dy), ptr(z), i64(m), i64(n), ACT[act]) == 0
    np.testing.assert_allclose(dz, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db, expected.sum(axis=0), rtol=1e-4, atol=1e-4)


CONV_CASES = [
    # (x shape, kernel, stride, padding (t, b, l, r), dilation, groups, out channels)
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1),
    ((2, 3, 7, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 5),
    ((2, 4, 9, 8), (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 2, 6),
    ((1, 6, 11, 5), (5, 3), (3, 2), (2, 2, 0, 1), (1, 2), 3, 3),
    ((3, 2, 10, 12), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, 130),  # out channels across two tiles
    ((1, 9, 6, 7), (2, 2), (1, 1), (0, 1, 1, 0), (1, 1), 1, 4),  # K = 36: the weight's vector loads
    ((2, 130, 3, 3), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 3),  # input channels across two tiles
    # up to 32 channels run on 32-row tiles, 33-64 on 64-row ones, more on 128-row ones
    ((2, 48, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 40),
    ((1, 96, 4, 5), (3, 3), (2, 1), (1, 1, 0, 0), (1, 1), 2, 66),  # per group: 48 in, 33 out
    ((1, 32, 6, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 32),  # exactly one 32-row tile
    # backward-data's stride phases: phases of 1, 2 and 4 taps, several pixel tiles per phase
    ((2, 16, 29, 26), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, 32),
    ((1, 3, 7, 8), (1, 1), (3, 2), (0, 0, 0, 0), (1, 1), 1, 4),  # most phases have pixels but no taps: zeros
    ((2, 4, 12, 11), (3, 3), (2, 4), (2, 1, 0, 3), (2, 2), 2, 6),  # dilation sharing a factor with the stride
]


def _conv_workspace(pass_, geo, splits):
    """A NaN-poisoned workspace of the bytes the pass asks for (split partial sums, channels-last copies)."""
    LIB.emu_conv2d_workspace_size.restype = ctypes.c_longlong
    n = LIB.emu_conv2d_workspace_size(pass_, geo, splits)
    return np.full(max(1, -(-n // 4)), np.nan, dtype=np.float32)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_emulated_conv_kernels_match_float64(case):
    shape, kernel, stride, padding, dilation, groups, o = case
    g = ops.geometry(shape, kernel, stride, padding, dilation)
    rng = np.random.default_rng(sum(shape) + o)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((o, shape[1] // groups, *kernel)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    dy = rng.standard_normal((g.n, o, g.oh, g.ow)).astype(np.float32)
    geo = (ctypes.c_int * 16)(g.n, g.c, g.h, g.w, o, groups, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, g.oh, g.ow)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)

    y_ref = reference.implicit_conv_forward(np, x64, w64, b.astype(np.float64), g, groups)
    for splits in (1, 3):  # 3: split-K, ranges of the reduction over (c, kh, kw) with fp32 partial sums
        y = np.full((g.n, o, g.oh, g.ow), np.nan, dtype=np.float32)
        ws = _conv_workspace(0, geo, splits)
        assert LIB.emu_conv2d_forward(ptr(y), ptr(ws), ptr(x), ptr(w), ptr(b), geo, splits) == 0
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.sqrt(w[0].size), err_msg=f"splits={splits}")

    dx = np.full(shape, np.nan, dtype=np.float32)
    assert LIB.emu_conv2d_backward_data(ptr(dx), ptr(dy), ptr(w), geo) == 0
    dx_ref = reference.implicit_conv_backward_data(np, dy64, w64, g, groups)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5 * np.sqrt(o * g.kh * g.kw))

    dw_ref = reference.implicit_conv_backward_weight(np, dy64, x64, g, o, groups)
    for splits in (1, 3):
        dw = np.full(w.shape, np.nan, dtype=np.float32)
        ws = _conv_workspace(2, geo, splits)
        assert LIB.emu_conv2d_backward_weight(ptr(dw), ptr(ws), ptr(dy), ptr(x), geo, splits) == 0
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-5 * np.sqrt(g.n * g.oh * g.ow), err_msg=f"splits={splits}")


def test_emulated_conv_rejects_an_invalid_shape():
    geo = (ctypes.c_int * 16)(1, 3, 5, 5, 4, 2, 3, 3, 1, 1, 0, 0, 1, 1, 3, 3)  # 3 channels in 2 groups
    x = np.zeros((1, 3, 5, 5), np.float32)
    y = np.zeros((1, 4, 3, 3), np.float32)
    assert LIB.emu_conv2d_forward(ptr(y), None, ptr(x), ptr(np.zeros(36, np.float32)), None, geo, 1) != 0
    geo[5] = 1  # a valid shape, but split-K without a workspace
    assert LIB.emu_conv2d_forward(ptr(y), None, ptr(x), ptr(np.zeros(108, np.float32)), None, geo, 2) != 0


def _geo(shape, kernel, padding, o):
    g = ops.geometry(shape, kernel, (1, 1), padding)
    return (ctypes.c_int * 16)(g.n, g.c, g.h, g.w, o, 1, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, g.oh, g.ow)


def test_emulated_forward_split_count():
    """Forward splits its reduction only when the tiles leave slots empty
    (blocks per SM: two for the 128-row kernel by default, one when it is
    built without spills) and the reduction is long; then the fewest splits
    that fill 85% of their waves, ranges of at least 256."""
    conv4 = _geo((32, 256, 14, 14), (3, 3), (1, 1, 1, 1), 256)  # 98 tiles of 128 x 128, K = 2304
    assert LIB.emu_conv2d_forward_splits(conv4, 132, 1) == 5  # 490 blocks: 93% of two waves of 264
    assert LIB.emu_conv2d_forward_splits(conv4, 132, 0) == 4  # one block per SM: 392 blocks, three full waves
    assert LIB.emu_conv2d_forward_splits(conv4, 49, 1) == 1  # 98 tiles fill 98 slots
    assert LIB.emu_conv2d_forward_splits(conv4, 60, 1) == 6  # 2-5 splits fill 82% of their waves of 120, 6 fill 98%
    short = _geo((128, 64, 8, 8), (3, 3), (1, 1, 1, 1), 64)  # K = 576: too short to split
    assert LIB.emu_conv2d_forward_splits(short, 132, 1) == 1
    small = _geo((1, 512, 7, 7), (3, 3), (1, 1, 1, 1), 64)  # one tile, K = 4608: at most 8 splits
    assert LIB.emu_conv2d_forward_splits(small, 132, 1) == 8


def test_emulated_conv_launch_plans_run_the_builds_they_name():
    """A plan's rows and blocks (lamina.ops.tuning's candidates) reach the
    kernel build that runs, whatever the rule would have chosen, and the
    result is the same for each; 0 leaves the choice to the rule."""
    LIB.emu_launched.restype = ctypes.c_char_p
    g = ops.geometry((2, 72, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1))
    o = 80
    geo = (ctypes.c_int * 16)(g.n, g.c, g.h, g.w, o, 1, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, g.oh, g.ow)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((g.n, g.c, g.h, g.w)).astype(np.float32)
    w = rng.standard_normal((o, g.c, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((g.n, o, g.oh, g.ow)).astype(np.float32)
    ws = np.full(2 * (x.size + dy.size + w.size) + 1024, np.nan, dtype=np.float32)  # partials, NHWC copies
    builds = {  # (rows, blocks) -> the template arguments each pass's kernel is launched with
        (32, 0): ("2, 4", "2, 4", "2"), (64, 0): ("4, 2", "4, 2", "4"),
        (128, 1): ("8, 1", "8, 1", "8"), (128, 2): ("8, 2", "8, 2", "8"),
    }
    results = {}
    LIB.emu_launched()
    for (rows, blocks), (fwd, data, weight) in builds.items():
        for splits in (1, 2):
            outs = []
            for pas, shape, a, b in ((0, dy.shape, x, w), (1, x.shape, dy, w), (2, w.shape, dy, x)):
                out = np.full(shape, np.nan, dtype=np.float32)
                assert LIB.emu_conv2d_planned(pas, ptr(out), ptr(ws), ptr(a), ptr(b), geo, splits, rows, blocks) == 0
                outs.append(out)
            names = LIB.emu_launched().decode().splitlines()
            # 72 input and 80 output channels: forward and backward-weight read channels-last copies
            assert f"conv_forward_kernel<T, OutT, {fwd}, CL>" in names, names
            assert f"conv_backward_data_kernel<T, {data}>" in names, names
            assert f"conv_backward_weight_kernel<T, OutT, {weight}, CL>" in names, names
            results[rows, blocks, splits] = outs
    first = next(iter(results.values()))
    for plan, outs in results.items():
        for got, want, name in zip(outs, first, ("forward", "backward-data", "backward-weight")):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=f"{name} {plan}")
    # the rule: 80 channels, a grid far short of a wave -> halved to 32 rows
    out = np.empty(dy.shape, np.float32)
    assert LIB.emu_conv2d_planned(0, ptr(out), ptr(ws), ptr(x), ptr(w), geo, 1, 0, 0) == 0
    assert LIB.emu_launched().decode().splitlines() == ["cl::transpose_kernel<Bits>"] * 2 + [
        "conv_forward_kernel<T, OutT, 2, 4, CL>"]
    assert LIB.emu_conv2d_planned(0, ptr(out), ptr(ws), ptr(x), ptr(w), geo, 1, 48, 0) != 0  # not a tile height


# The wgmma kernel (gemm_wgmma.cu, sm_90a): TMA needs leading dimensions that are
# multiples of 8, so operands live in wider arrays; sizes straddle the 128-row and
# 128/256-column tiles and the 64-deep k-slices, and the longer k wrap the ring of
# stages (6 for 128-wide tiles, 4 for 256-wide ones).  `sms` is the SM count the
# launcher sees: 1 makes it pick 256-wide tiles.  TMA copies land lazily (when
# waited for: catches reads before the wait) or eagerly (catches refills of a stage
# still being read).
WGMMA_CASES = [  # m, n, k, sms, dtype, out_f32
    (1, 1, 1, 132, "float16", False),
    (130, 136, 72, 132, "bfloat16", True),
    (64, 200, 520, 1, "float16", True),
    (100, 72, 450, 132, "bfloat16", False),
]


def _padded(rng, shape, dtype):
    """(array of `shape` inside a buffer whose rows are a multiple of 8 wide, float64 values, leading dimension)."""
    rows, cols = shape
    ld = -(-cols // 8) * 8 + 8
    v = rng.standard_normal((rows, ld)).astype(np.float32)
    if dtype == "bfloat16":
        buf = _bf16_bits(v)
        return buf, _bf16_value(buf)[:, :cols].astype(np.float64), ld
    buf = v.astype(np.float16)
    return buf, buf[:, :cols].astype(np.float64), ld


@pytest.mark.parametrize("case", WGMMA_CASES, ids=str)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_emulated_wgmma_gemm_matches_float64(case, ta, tb):
    m, n, k, sms, dtype, out_f32 = case
    rng = np.random.default_rng(m + n + k + 2 * ta + tb)
    a, a64, lda = _padded(rng, (k, m) if ta else (m, k), dtype)
    b, b64, ldb = _padded(rng, (n, k) if tb else (k, n), dtype)
    bias, bias64, _ = _padded(rng, (1, n), dtype)
    z_ref = (a64.T if ta else a64) @ (b64.T if tb else b64) + bias64[0]
    store = np.float32 if out_f32 else (np.uint16 if dtype == "bfloat16" else np.float16)
    ldc = n + 3
    c = np.full((m, ldc), 0xFFFF if store == np.uint16 else np.nan, dtype=store)
    z = np.full((m, ldc), 0xFFFF if store == np.uint16 else np.nan, dtype=store)
    untouched = c[:, n:].copy()
    LIB.emu_wgmma_setup(int(ta != tb), sms)
    rc = LIB.emu_gemm_wgmma(ptr(c), ptr(z), ptr(a), ptr(b), ptr(bias), i64(m), i64(n), i64(k), i64(lda), i64(ldb),
                            i64(ldc), int(ta), int(tb), ACT["gelu"], int(dtype == "bfloat16"), int(out_f32))
    assert rc == 0

    def value(v):
        return _bf16_value(v) if store == np.uint16 else v.astype(np.float64)

    rel = 1e-5 if out_f32 else (1e-2 if dtype == "bfloat16" else 2e-3)
    np.testing.assert_allclose(value(z[:, :n]), z_ref, rtol=rel, atol=rel * np.sqrt(k), err_msg="pre-activation")
    np.testing.assert_allclose(value(c[:, :n]), act64(z_ref, "gelu"), rtol=rel, atol=rel * np.sqrt(k))
    np.testing.assert_array_equal(c[:, n:].view(np.uint8), untouched.view(np.uint8))  # beyond n: never written


def test_emulated_wgmma_refuses_operands_tma_cannot_read():
    a = np.zeros((16, 12), np.float16)  # leading dimension 12: not a multiple of 8
    b = np.zeros((12, 16), np.float16)
    c = np.zeros((16, 16), np.float16)
    rc = LIB.emu_gemm_wgmma(ptr(c), None, ptr(a), ptr(b), None, i64(16), i64(16), i64(12), i64(12), i64(16), i64(16),
                            0, 0, 0, 0, 0)
    assert rc != 0


# -- elementwise, softmax cross-entropy and the multi-tensor optimizer updates --

# around the 256-thread block, and enough elements for several grid-stride blocks
ELEMENTWISE_SIZES = [1, 255, 256, 257, 3001]


@pytest.mark.parametrize("n", ELEMENTWISE_SIZES)
def test_emulated_activations_match_float64(n):
    rng = np.random.default_rng(n)
    x, dy = rng.standard_normal(n).astype(np.float32) * 3, rng.standard_normal(n).astype(np.float32)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    x[0] = 0.0  # ReLU's kink: forward 0, and no gradient through it
    y = np.full_like(x, np.nan)
    assert LIB.emu_relu(ptr(y), ptr(x), None, i64(n), 0) == 0
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dx = np.full_like(x, np.nan)
    assert LIB.emu_relu(ptr(dx), ptr(dy), ptr(y), i64(n), 1) == 0
    np.testing.assert_array_equal(dx, np.where(y > 0, dy, 0))
    for approx in ("none", "tanh"):
        x64 = x.astype(np.float64)
        assert LIB.emu_gelu(ptr(y), ptr(x), None, i64(n), int(approx == "tanh"), 0) == 0
        np.testing.assert_allclose(y, reference.gelu_forward(np, x64, approx), rtol=1e-5, atol=1e-6, err_msg=approx)
        assert LIB.emu_gelu(ptr(dx), ptr(dy), ptr(x), i64(n), int(approx == "tanh"), 1) == 0
        np.testing.assert_allclose(dx, reference.gelu_backward(np, dy64, x64, approx), rtol=1e-5, atol=1e-6,
                                   err_msg=approx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c", [(1, 1), (3, 10), (5, 33), (9, 100), (4, 64)])  # rows of one block and of several
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_emulated_softmax_xent_matches_float64(n, c, smoothing, dtype):
    rng = np.random.default_rng(n * 100 + c)
    logits = (rng.standard_normal((n, c)) * 4).astype(dtype)
    logits[0, 0] = 1e4 if c > 1 else logits[0, 0]  # a logit that overflows exp without the max shift
    labels = rng.integers(0, c, n).astype(np.int64)
    loss_ref, g_ref = reference.softmax_xent(np, logits.astype(np.float64), labels, smoothing, 1.0 / n, True)
    loss, g = np.full(n, np.nan, dtype=dtype), np.full((n, c), np.nan, dtype=dtype)
    assert LIB.emu_softmax_xent(ptr(loss), ptr(g), ptr(logits), ptr(labels), i64(n), i64(c), ctypes.c_double(smoothing),
                                ctypes.c_double(1.0 / n), int(dtype == np.float64)) == 0
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(loss, loss_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol)
    only_loss = np.full(n, np.nan, dtype=dtype)  # no gradient asked for: dlogits null
    assert LIB.emu_softmax_xent(ptr(only_loss), None, ptr(logits), ptr(labels), i64(n), i64(c),
                                ctypes.c_double(smoothing), ctypes.c_double(1.0), int(dtype == np.float64)) == 0
    np.testing.assert_array_equal(only_loss, loss)


def test_emulated_softmax_xent_gives_nan_rows_for_labels_out_of_range():
    """Labels left unchecked on the host (Loss.compute on CuPy) never make
    the kernel read outside the row: a NaN loss and gradient row instead."""
    n, c = 6, 37
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((n, c)).astype(np.float32)
    labels = np.array([0, -1, c, c - 1, 2**40, 5], dtype=np.int64)
    loss, g = np.zeros(n, np.float32), np.zeros((n, c), np.float32)
    assert LIB.emu_softmax_xent(ptr(loss), ptr(g), ptr(logits), ptr(labels), i64(n), i64(c), ctypes.c_double(0.0),
                                ctypes.c_double(1.0), 0) == 0
    bad = np.array([False, True, True, False, True, False])
    assert np.isnan(loss[bad]).all() and np.isnan(g[bad]).all()
    ok = ~bad
    loss_ref, g_ref = reference.softmax_xent(np, logits[ok].astype(np.float64), labels[ok], 0.0, 1.0, True)
    np.testing.assert_allclose(loss[ok], loss_ref, rtol=2e-5)
    np.testing.assert_allclose(g[ok], g_ref, rtol=2e-5, atol=1e-7)


# a chunk is 1024 elements: tensors of one element, one chunk less and more, several chunks
MULTI_SIZES = [1, 1023, 1024, 1025, 4099, 7]


def _multi(count_rows):
    """The (count, 6) address table the emulated launchers read."""
    table = np.array([[0 if a is None else a.ctypes.data for a in row] + [0] * (6 - len(row)) for row in count_rows],
                     dtype=np.uintp).reshape(-1, 6)
    return table, ctypes.c_void_p(table.ctypes.data)


def _doubles(values):
    a = np.ascontiguousarray(values, dtype=np.float64)
    return a, ctypes.c_void_p(a.ctypes.data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", [dict(momentum=0.9, nesterov=True, weight_decay=1e-2), dict(momentum=0.0),
                                 dict(momentum=0.5, dampening=0.3)], ids=str)
def test_emulated_multi_tensor_sgd_matches_the_optimizer(cfg, dtype):
    """Several parameters of every size class in one launch, over three steps
    (the first writes the fresh momentum buffers): the same values as
    lamina.optim.SGD on NumPy float64."""
    import lamina as lm

    rng = np.random.default_rng(3)
    init = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
    grads = [[rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES] for _ in range(3)]
    ref = [lm.Parameter(a.astype(np.float64)) for a in init]
    opt = lm.optim.SGD(ref, lr=0.1, **cfg)
    mine = [a.copy() for a in init]
    bufs = [np.full_like(a, np.nan) if cfg["momentum"] else None for a in init]
    for step, gs in enumerate(grads):
        for p, g in zip(ref, gs):
            p.grad = g.astype(np.float64)
        opt.step()
        table, addr = _multi([(p, g, b) for p, g, b in zip(mine, gs, bufs)])
        sizes = np.array(MULTI_SIZES, dtype=np.int64)
        first, first_addr = _doubles([step == 0] * len(mine))
        zeros, zeros_addr = _doubles([0] * len(mine))
        LIB.emu_launches()
        rc = LIB.emu_sgd_update(int(dtype == np.float64), len(mine), addr, ctypes.c_void_p(sizes.ctypes.data), first_addr,
                                zeros_addr, ctypes.c_double(0.1), ctypes.c_double(cfg["momentum"]),
                                ctypes.c_double(cfg.get("dampening", 0.0)), ctypes.c_double(cfg.get("weight_decay", 0.0)),
                                int(cfg.get("nesterov", False)))
        assert rc == 0 and LIB.emu_launches() == 1
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for a, p in zip(mine, ref):
        np.testing.assert_allclose(a, p.data, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_emulated_multi_tensor_adam_matches_the_optimizer(name, dtype, capturable, amsgrad):
    """Parameters at different step counts (each has its own bias
    corrections) in one launch: the same values as lamina.optim.Adam/AdamW on
    NumPy float64.  Capturable: the step counts live on the device, the
    launch increments them and forms the bias corrections from them (the
    host's are NaN, to show they are not read).  AMSGrad: the running maximum
    of the second moment is a sixth array per parameter, and the gradients
    shrink over the steps so that the maximum, not the moment, sets the
    denominator."""
    import lamina as lm

    rng = np.random.default_rng(4)
    init = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
    ref = [lm.Parameter(a.astype(np.float64)) for a in init]
    lr, (b1, b2), eps, wd = 1e-2, (0.9, 0.99), 1e-8, 0.05
    opt = getattr(lm.optim, name)(ref, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad)
    mine = [a.copy() for a in init]
    ms, vs, v_maxes = ([np.zeros_like(a) for a in init] for _ in range(3))
    steps = [0] * len(mine)
    counters = [np.zeros(1, dtype) for _ in mine]  # the device step counts of capturable Adam
    for it in range(4):
        active = [i for i in range(len(mine)) if it == 0 or i % 2 == 0 or it == 3]  # odd ones skip steps 1 and 2
        gs = {i: (rng.standard_normal(MULTI_SIZES[i]) * 0.5**it).astype(dtype) for i in active}
        for i, p in enumerate(ref):
            p.grad = gs[i].astype(np.float64) if i in gs else None
        opt.step()
        for i in active:
            steps[i] += 1
        rows = [[mine[i], gs[i], ms[i], vs[i]] + ([v_maxes[i]] if amsgrad else []) + [counters[i] if capturable else None]
                for i in active]
        table, addr = _multi(rows)
        sizes = np.array([MULTI_SIZES[i] for i in active], dtype=np.int64)
        step_sizes, s_addr = _doubles([np.nan if capturable else lr / (1 - b1 ** steps[i]) for i in active])
        bc2, b_addr = _doubles([np.nan if capturable else np.sqrt(1 - b2 ** steps[i]) for i in active])
        LIB.emu_launches()
        rc = LIB.emu_adam_update(int(dtype == np.float64), len(active), addr, ctypes.c_void_p(sizes.ctypes.data), s_addr,
                                 b_addr, ctypes.c_double(lr), ctypes.c_double(b1), ctypes.c_double(b2),
                                 ctypes.c_double(eps), ctypes.c_double(wd), int(name == "AdamW"), int(amsgrad),
                                 int(capturable))
        assert rc == 0 and LIB.emu_launches() == 1 + capturable
    if capturable:
        assert [int(c[0]) for c in counters] == steps
    if amsgrad:  # the maximum is not the last moment: the test exercises it
        assert any(not np.allclose(vm, v) for vm, v in zip(v_maxes, vs))
        for i, p in enumerate(ref):
            np.testing.assert_allclose(v_maxes[i], opt.state[p]["max_exp_avg_sq"], rtol=1e-5 if dtype == np.float32 else 1e-12)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for a, p in zip(mine, ref):
        np.testing.assert_allclose(a, p.data, rtol=rtol, atol=rtol)


def test_emulated_amsgrad_capturable_launches_per_40():
    """Six pointers per parameter leave room for 40 in the kernel's
    parameter space (48 for the others): 41 parameters take two launches
    (plus a step-count launch each), and every one, the 41st included,
    takes AMSGrad's first step from its own running maximum."""
    n, lr, b1, b2, eps = 41, 1e-2, 0.9, 0.999, 1e-8
    rng = np.random.default_rng(5)
    arrays = [[rng.standard_normal(3) for _ in range(5)] + [np.zeros(1)] for _ in range(n)]
    for row in arrays:
        row[3][:] = row[3] ** 2  # v >= 0
        row[4][:] = row[3] * 4 * (1 + rng.random(3))  # a running maximum above the new v
    p, g, m, v, v_max = (np.array([row[k] for row in arrays]) for k in range(5))
    m_new = m + (1 - b1) * (g - m)
    v_hat = np.maximum(v_max, b2 * v + (1 - b2) * g * g)
    expected = p - lr / (1 - b1) * (m_new / (np.sqrt(v_hat) / np.sqrt(1 - b2) + eps))
    table, addr = _multi(arrays)
    sizes = np.full(n, 3, dtype=np.int64)
    unused, u_addr = _doubles([np.nan] * n)
    LIB.emu_launches()
    rc = LIB.emu_adam_update(1, n, addr, ctypes.c_void_p(sizes.ctypes.data), u_addr, u_addr, ctypes.c_double(lr),
                             ctypes.c_double(b1), ctypes.c_double(b2), ctypes.c_double(eps), ctypes.c_double(0.0), 0,
                             1, 1)
    assert rc == 0 and LIB.emu_launches() == 4
    assert all(row[5][0] == 1 for row in arrays)
    np.testing.assert_allclose(np.array([row[4] for row in arrays]), v_hat, rtol=1e-15)
    np.testing.assert_allclose(np.array([row[0] for row in arrays]), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", [dict(), dict(momentum=0.9, weight_decay=1e-2), dict(centered=True),
                                 dict(centered=True, momentum=0.5, alpha=0.9)], ids=str)
def test_emulated_multi_tensor_rmsprop_matches_the_optimizer(cfg, dtype):
    """Every size class in one launch, over three steps: the same values as
    lamina.optim.RMSprop on NumPy float64 (its unfused array expressions)."""
    import lamina as lm

    rng = np.random.default_rng(7)
    init = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
    ref = [lm.Parameter(a.astype(np.float64)) for a in init]
    opt = lm.optim.RMSprop(ref, lr=1e-2, **cfg)
    mine = [a.copy() for a in init]
    squares = [np.zeros_like(a) for a in init]
    avgs = [np.zeros_like(a) if cfg.get("centered") else None for a in init]
    bufs = [np.zeros_like(a) if cfg.get("momentum") else None for a in init]
    for _ in range(3):
        gs = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
        for p, g in zip(ref, gs):
            p.grad = g.astype(np.float64)
        opt.step()
        table, addr = _multi([(m, g, s, a, b) for m, g, s, a, b in zip(mine, gs, squares, avgs, bufs)])
        sizes = np.array(MULTI_SIZES, dtype=np.int64)
        unused, unused_addr = _doubles([0] * len(mine))
        LIB.emu_launches()
        rc = LIB.emu_rmsprop_update(int(dtype == np.float64), len(mine), addr, ctypes.c_void_p(sizes.ctypes.data),
                                    unused_addr, ctypes.c_double(1e-2), ctypes.c_double(cfg.get("alpha", 0.99)),
                                    ctypes.c_double(1e-8), ctypes.c_double(cfg.get("weight_decay", 0.0)),
                                    ctypes.c_double(cfg.get("momentum", 0.0)), int(cfg.get("centered", False)))
        assert rc == 0 and LIB.emu_launches() == 1
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for a, p in zip(mine, ref):
        np.testing.assert_allclose(a, p.data, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_multi_tensor_adagrad_matches_the_optimizer(dtype):
    """Parameters at different step counts (each its own decayed lr) in one
    launch: the same values as lamina.optim.Adagrad on NumPy float64."""
    import lamina as lm

    rng = np.random.default_rng(8)
    init = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
    ref = [lm.Parameter(a.astype(np.float64)) for a in init]
    lr, decay, wd = 0.1, 0.05, 1e-2
    opt = lm.optim.Adagrad(ref, lr=lr, lr_decay=decay, weight_decay=wd, initial_accumulator_value=0.1)
    mine = [a.copy() for a in init]
    sums = [np.full_like(a, 0.1) for a in init]
    steps = [0] * len(mine)
    for it in range(4):
        active = [i for i in range(len(mine)) if it == 0 or i % 2 == 0 or it == 3]
        gs = {i: rng.standard_normal(MULTI_SIZES[i]).astype(dtype) for i in active}
        for i, p in enumerate(ref):
            p.grad = gs[i].astype(np.float64) if i in gs else None
        opt.step()
        for i in active:
            steps[i] += 1
        table, addr = _multi([(mine[i], gs[i], sums[i]) for i in active])
        sizes = np.array([MULTI_SIZES[i] for i in active], dtype=np.int64)
        clrs, c_addr = _doubles([lr / (1 + (steps[i] - 1) * decay) for i in active])
        LIB.emu_launches()
        rc = LIB.emu_adagrad_update(int(dtype == np.float64), len(active), addr, ctypes.c_void_p(sizes.ctypes.data),
                                    c_addr, c_addr, ctypes.c_double(1e-10), ctypes.c_double(wd))
        assert rc == 0 and LIB.emu_launches() == 1
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for a, p in zip(mine, ref):
        np.testing.assert_allclose(a, p.data, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_multi_tensor_lerp_is_the_weight_average_update(dtype):
    """a ← a + w (x − a) for every array in one launch (EMA and SWA's update)."""
    rng = np.random.default_rng(9)
    avgs = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
    xs = [rng.standard_normal(n).astype(dtype) for n in MULTI_SIZES]
    expect = [a.astype(np.float64) + 0.125 * (x.astype(np.float64) - a) for a, x in zip(avgs, xs)]
    table, addr = _multi([(a, x) for a, x in zip(avgs, xs)])
    sizes = np.array(MULTI_SIZES, dtype=np.int64)
    unused, unused_addr = _doubles([0] * len(avgs))
    LIB.emu_launches()
    rc = LIB.emu_lerp_update(int(dtype == np.float64), len(avgs), addr, ctypes.c_void_p(sizes.ctypes.data), unused_addr,
                             ctypes.c_double(0.125))
    assert rc == 0 and LIB.emu_launches() == 1
    rtol = 1e-15 if dtype == np.float64 else 1e-6
    for a, e in zip(avgs, expect):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_first", [False, True])
def test_emulated_ctc_matches_the_loss_on_the_cpu(dtype, batch_first):
    """The three CTC launches against lamina.losses.CTCLoss on NumPy: a
    target with a repeated label, an empty one, an input shorter than T, an
    infeasible one (NaN rows before its length, 0 after), targets longer
    than a block of threads covers (S' = 2S + 1 > 256), in both layouts;
    outputs poisoned first."""
    import lamina as lm

    rng = np.random.default_rng(12)
    t, n, c, s = 140, 5, 6, 130
    logits = rng.standard_normal((t, n, c)) * 2
    lp = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    targets = rng.integers(1, c, (n, s))
    targets[0, 1] = targets[0, 0]
    il = np.array([t, t - 7, 9, 4, t], dtype=np.int64)
    tl = np.array([6, 3, 0, 3, s], dtype=np.int64)
    targets[3, :3] = 2  # 2 2 2 needs 5 steps: infeasible in 4
    if batch_first:
        lp = np.ascontiguousarray(lp.transpose(1, 0, 2))
    ref = lm.CTCLoss(reduction="sum", batch_first=batch_first)
    with np.errstate(invalid="ignore"):
        want = np.array([ref(lp[i : i + 1] if batch_first else lp[:, i : i + 1], targets[i : i + 1], il[i : i + 1],
                             tl[i : i + 1]) for i in range(n)])
    ref(lp, targets, il, tl)
    want_grad = ref.backward()
    x = lp.astype(dtype)
    nll, grad = np.full(n, np.nan, dtype), np.full_like(x, 7.0)
    alpha, beta = np.full((n, t, 2 * s + 1), 3.0, dtype), np.full((n, t, 2 * s + 1), 3.0, dtype)
    scale = np.ones(n, dtype)
    st, sn = (c, t * c) if batch_first else (n * c, c)

    def addr(a):
        return ctypes.c_void_p(a.ctypes.data)

    targets = np.ascontiguousarray(targets, dtype=np.int64)
    LIB.emu_launches()
    rc = LIB.emu_ctc_loss(int(dtype == np.float64), addr(nll), addr(grad), addr(alpha), addr(beta), addr(x),
                          addr(targets), addr(il), addr(tl), addr(scale), ctypes.c_int64(t), ctypes.c_int64(n),
                          ctypes.c_int64(c), ctypes.c_int64(s), ctypes.c_int64(st), ctypes.c_int64(sn), 0, 0)
    assert rc == 0 and LIB.emu_launches() == 3
    rtol = 1e-11 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(nll, want, rtol=rtol)
    assert np.isinf(nll[3])
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * 1e-2)
    rows = grad[3] if batch_first else grad[:, 3]
    assert np.isnan(rows[:4]).all() and not rows[4:].any()


def test_emulated_multi_tensor_update_splits_long_lists_and_skips_empty_tensors():
    """48 parameters a launch: 49 non-empty ones (of 55) take two launches,
    empty ones take no place, and every parameter is stepped exactly once."""
    count = 55
    sizes = np.array([0 if i % 10 == 3 else 1 + (i * 37) % 300 for i in range(count)], dtype=np.int64)
    params = [np.ones(n, np.float32) for n in sizes]
    grads = [np.full(n, i + 1, np.float32) for i, n in enumerate(sizes)]
    table, addr = _multi([(p, g, None) for p, g in zip(params, grads)])
    first, first_addr = _doubles([0] * count)
    LIB.emu_launches()
    rc = LIB.emu_sgd_update(0, count, addr, ctypes.c_void_p(sizes.ctypes.data), first_addr, first_addr,
                            ctypes.c_double(0.5), ctypes.c_double(0.0), ctypes.c_double(0.0), ctypes.c_double(0.0), 0)
    assert rc == 0 and LIB.emu_launches() == 2
    for i, p in enumerate(params):
        np.testing.assert_array_equal(p, 1 - 0.5 * (i + 1))
    none, none_addr = _doubles([])
    assert LIB.emu_sgd_update(0, 0, addr, ctypes.c_void_p(sizes.ctypes.data), none_addr, none_addr, ctypes.c_double(0.5),
                              ctypes.c_double(0.0), ctypes.c_double(0.0), ctypes.c_double(0.0), 0) == 0
    assert LIB.emu_launches() == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [None, (0, 0), (2, 1023), (3, 1024), (4, 100), (4, 4098), (5, -1)], ids=str)
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_emulated_unscale_grads_scales_and_finds_inf(bad, value, dtype):
    """The loss scaler's unscale: every gradient times 1/S, and the device
    flag set exactly when some result is inf or NaN, wherever it sits (first
    element, either side of a chunk edge, a thread's first of four elements,
    the last tensor's last element)."""
    if bad is None and value is np.nan:
        pytest.skip("no bad value: one case is enough")
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(n).astype(dtype) * 1000 for n in MULTI_SIZES]
    if bad is not None:
        grads[bad[0]][bad[1]] = value
    expected = [g.astype(np.float64) / 1024 for g in grads]
    table, addr = _multi([(g,) for g in grads])
    sizes = np.array(MULTI_SIZES, dtype=np.int64)
    unused, unused_addr = _doubles([0] * len(grads))
    flag = np.zeros(1, np.int32)
    rc = LIB.emu_unscale_grads(int(dtype == np.float64), len(grads), addr, ctypes.c_void_p(sizes.ctypes.data), unused_addr,
                               ctypes.c_double(1 / 1024), ctypes.c_void_p(flag.ctypes.data))
    assert rc == 0 and flag[0] == (bad is not None)
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e.astype(dtype))  # a power of two: exact


# -- batch normalisation --

# (N, C, L): one slice a channel, several (with a short last one), BatchNorm1d's L = 1, a single image
BN_SHAPES = [(2, 3, 5), (4, 1, 1000), (3, 2, 1367), (5, 4, 1), (1, 70, 7), (2, 2, 2049)]


def _bn_reference(x, gamma, beta, eps, mean=None, var=None):
    x = x.astype(np.float64)
    if mean is None:
        mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    inv_std = 1 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None]) * inv_std[None, :, None]
    return xhat * gamma[None, :, None] + beta[None, :, None], xhat, mean, var, inv_std


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_emulated_batchnorm_matches_float64(shape, dtype):
    """Training forward (batch statistics, running statistics updated with
    the unbiased variance), evaluation forward (running statistics), and
    both backwards, against float64.  The input has a large mean: the
    per-slice M2 and Chan's merge keep the variance exact where Σx² − (Σx)²/m
    would cancel."""
    n, c, l = shape
    dbl = int(dtype == np.float64)
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1000).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    eps, f, m = 1e-5, 0.1, n * l
    slices = LIB.emu_batchnorm_slices(i64(n), i64(c), i64(l))
    assert 1 <= slices <= 64 and (slices > 1) == (shape in [(4, 1, 1000), (3, 2, 1367), (2, 2, 2049)])
    ws = np.full(3 * c * slices, np.nan)
    y, xhat = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
    mean, var, inv_std = (np.full(c, np.nan, dtype) for _ in range(3))
    dptr = lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
    rc = LIB.emu_batchnorm_forward(dbl, ptr(y), ptr(xhat), ptr(mean), ptr(var), ptr(inv_std), ptr(rm), ptr(rv), dptr(ws),
                                   ptr(x), ptr(gamma), ptr(beta), i64(n), i64(c), i64(l), ctypes.c_double(eps), 1,
                                   ctypes.c_double(f))
    assert rc == 0
    y_ref, xhat_ref, mean_ref, var_ref, inv_ref = _bn_reference(x, gamma.astype(np.float64), beta.astype(np.float64), eps)
    rtol = 1e-12 if dbl else 2e-5
    np.testing.assert_allclose(mean, mean_ref, rtol=rtol)
    np.testing.assert_allclose(var, var_ref, rtol=1e-10 if dbl else 1e-4)  # float32 x: var of ~9 around 1000
    np.testing.assert_allclose(inv_std, inv_ref, rtol=1e-10 if dbl else 1e-4)
    np.testing.assert_allclose(xhat, xhat_ref, rtol=1e-10 if dbl else 1e-3, atol=1e-10 if dbl else 2e-3)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10 if dbl else 1e-3, atol=1e-10 if dbl else 5e-3)
    np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mean_ref, rtol=rtol)
    np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var_ref * m / (m - 1), rtol=1e-10 if dbl else 1e-4)

    # evaluation: the running statistics, no workspace, nothing updated
    rm_e, rv_e = rm.copy(), rv.copy()
    y_e, inv_e = np.full(shape, np.nan, dtype), np.full(c, np.nan, dtype)
    rc = LIB.emu_batchnorm_forward(dbl, ptr(y_e), None, None, None, ptr(inv_e), ptr(rm_e), ptr(rv_e), None, ptr(x),
                                   ptr(gamma), ptr(beta), i64(n), i64(c), i64(l), ctypes.c_double(eps), 0,
                                   ctypes.c_double(f))
    assert rc == 0
    np.testing.assert_array_equal(rm_e, rm)
    np.testing.assert_array_equal(rv_e, rv)
    y_eref = _bn_reference(x, gamma.astype(np.float64), beta.astype(np.float64), eps, rm.astype(np.float64),
                           rv.astype(np.float64))[0]
    np.testing.assert_allclose(y_e, y_eref, rtol=1e-10 if dbl else 1e-4, atol=1e-8 if dbl else 1e-2)

    dy = rng.standard_normal(shape).astype(dtype)
    for batch_stats in (True, False):
        dx, dg, db = np.full(shape, np.nan, dtype), np.full(c, np.nan, dtype), np.full(c, np.nan, dtype)
        ws2 = np.full(2 * c * slices, np.nan)
        rc = LIB.emu_batchnorm_backward(dbl, ptr(dx), ptr(dg), ptr(db), dptr(ws2), ptr(dy), ptr(xhat), ptr(gamma),
                                        ptr(inv_std), i64(n), i64(c), i64(l), int(batch_stats))
        assert rc == 0
        dx_ref, dg_ref, db_ref = reference.batchnorm_backward(np, dy.astype(np.float64), xhat.astype(np.float64),
                                                              inv_std.astype(np.float64), gamma.astype(np.float64),
                                                              batch_stats)
        tol = 1e-10 if dbl else 1e-4
        np.testing.assert_allclose(db, db_ref, rtol=tol, atol=tol * np.sqrt(m))
        np.testing.assert_allclose(dg, dg_ref, rtol=tol, atol=tol * np.sqrt(m))
        scale = np.abs(dx_ref).max()
        np.testing.assert_allclose(dx / scale, dx_ref / scale, atol=tol, err_msg=f"batch_stats={batch_stats}")


# -- max pooling --

POOL_CASES = [
    # (x shape, kernel, stride, padding (t, b, l, r), dilation)
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),  # LeNet's
    ((1, 2, 7, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # overlapping windows, padding
    ((2, 1, 11, 6), (3, 2), (2, 3), (1, 0, 1, 0), (2, 1)),  # dilation, unequal strides
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 300, 5, 5), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),  # more elements than one block of threads
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_emulated_maxpool_matches_the_reference(case, dtype):
    """PyTorch's rules (first maximum on ties, the last NaN wins), and a
    backward that gathers every window that chose an input, against the
    NumPy reference."""
    shape, kernel, stride, padding, dilation = case
    g = ops.geometry(shape, kernel, stride, padding, dilation)
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-3, 4, shape).astype(dtype)  # few values: many ties
    x.reshape(-1)[::7] = np.nan if x.size > 7 else x.reshape(-1)[::7]
    gi = np.array(tuple(g), dtype=np.int64)
    y, idx = np.full((g.n, g.c, g.oh, g.ow), 7.0, dtype), np.full((g.n, g.c, g.oh, g.ow), -5, np.int64)
    assert LIB.emu_maxpool2d(int(dtype == np.float64), 0, ptr(y), ptr(idx), ptr(x), ptr(gi)) == 0
    y_ref, idx_ref = reference.maxpool_forward(np, x, g)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.full(shape, np.nan, dtype)
    assert LIB.emu_maxpool2d(int(dtype == np.float64), 1, ptr(dx), ptr(idx), ptr(dy), ptr(gi)) == 0
    np.testing.assert_allclose(dx, reference.maxpool_backward(np, dy, idx_ref, g), rtol=1e-6 if dtype == np.float32 else 1e-14)


# -- softmax and layer normalisation (one warp a row) --

ROWWISE_SHAPES = [(1, 1), (3, 31), (5, 32), (6, 33), (9, 100), (2, 257)]  # around the 32 lanes and the 4 rows a block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", ROWWISE_SHAPES, ids=str)
def test_emulated_softmax_matches_float64(shape, dtype):
    """Forward and backward with a scale, a masked (-inf) score (exactly 0),
    a row of -inf only and a row with a NaN (NaN rows, as PyTorch), and a
    row whose exponentials overflow without the max shift."""
    rows, d = shape
    dbl = int(dtype == np.float64)
    rng = np.random.default_rng(rows * d)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    if d > 1:
        x[0, 0] = -np.inf
    if rows > 2:
        x[1] = -np.inf
        x[2, d // 2] = np.nan
    if rows > 3:
        x[-1] *= 1000  # without the max shift, e^(scale x) overflows
    scale = 0.125
    y = np.full(shape, 7.0, dtype)
    assert LIB.emu_softmax(dbl, 0, ptr(y), ptr(x), None, i64(rows), i64(d), ctypes.c_double(scale)) == 0
    with np.errstate(invalid="ignore"):
        y_ref = reference.softmax_forward(np, x.astype(np.float64), scale)
    tol = 1e-12 if dbl else 1e-6
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    if d > 1:
        assert y[0, 0] == 0
    dy = rng.standard_normal(shape).astype(dtype)
    dx = np.full(shape, 7.0, dtype)
    assert LIB.emu_softmax(dbl, 1, ptr(dx), ptr(dy), ptr(y), i64(rows), i64(d), ctypes.c_double(scale)) == 0
    with np.errstate(invalid="ignore"):
        dx_ref = reference.softmax_backward(np, dy.astype(np.float64), y.astype(np.float64), scale)
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", ROWWISE_SHAPES + [(300, 5), (70, 300)], ids=str)
@pytest.mark.parametrize("affine", [True, False])
def test_emulated_layernorm_matches_float64(shape, dtype, affine):
    """Forward (a mean of 100: the two-pass variance), backward with the
    parameter gradients summed over row chunks (several chunks for 300 rows)
    and without them."""
    rows, d = shape
    dbl = int(dtype == np.float64)
    rng = np.random.default_rng(rows + d)
    x = (rng.standard_normal(shape) + 100).astype(dtype)
    w = rng.uniform(0.5, 1.5, d).astype(dtype) if affine else None
    b = rng.standard_normal(d).astype(dtype) if affine else None
    y, xhat, rstd = np.full(shape, 7.0, dtype), np.full(shape, 7.0, dtype), np.full(rows, 7.0, dtype)
    assert LIB.emu_layernorm_forward(dbl, ptr(y), ptr(xhat), ptr(rstd), ptr(x), ptr(w), ptr(b), i64(rows), i64(d),
                                     ctypes.c_double(1e-5)) == 0
    y_ref, xhat_ref, rstd_ref = reference.layernorm_forward(
        np, x.astype(np.float64), None if w is None else w.astype(np.float64), None if b is None else b.astype(np.float64),
        1e-5)
    tol = 1e-10 if dbl else 2e-3  # float32 x around 100: ~1e-5 absolute noise, xhat ~1e-3 relative for tiny var rows
    np.testing.assert_allclose(rstd, rstd_ref, rtol=tol)
    np.testing.assert_allclose(xhat, xhat_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    dy = rng.standard_normal(shape).astype(dtype)
    chunks = LIB.emu_layernorm_row_chunks(i64(rows), i64(d))
    assert (chunks > 1) == (rows >= 64)
    for need_params in (True, False):
        ws = np.full(2 * d * chunks, np.nan)
        dx = np.full(shape, 7.0, dtype)
        dw, db = (np.full(d, 7.0, dtype), np.full(d, 7.0, dtype)) if need_params else (None, None)
        assert LIB.emu_layernorm_backward(dbl, ptr(dx), ptr(dw), ptr(db), ctypes.c_void_p(ws.ctypes.data), ptr(dy),
                                          ptr(xhat), ptr(rstd), ptr(w), i64(rows), i64(d)) == 0
        dx_ref, dw_ref, db_ref = reference.layernorm_backward(
            np, dy.astype(np.float64), xhat.astype(np.float64), rstd.astype(np.float64),
            None if w is None else w.astype(np.float64), True)
        t2 = 1e-10 if dbl else 1e-4
        np.testing.assert_allclose(dx, dx_ref, rtol=t2, atol=t2 * float(np.abs(dx_ref).max()))
        if need_params:
            np.testing.assert_allclose(dw, dw_ref, rtol=t2, atol=t2 * np.sqrt(rows))
            np.testing.assert_allclose(db, db_ref, rtol=t2, atol=t2 * np.sqrt(rows))


def _splitmix_uniform(key, offset, n, dtype):
    """lamina's counter-based GPU generator (reference._UNIFORM_SRC) in NumPy."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.uint64(offset) + np.arange(n, dtype=np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    if dtype == np.float64:
        return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,p", [(1, 0.5), (1000, 0.1), (3001, 0.9)])
def test_emulated_dropout_draws_the_generators_numbers(n, p, dtype):
    """The fused dropout's mask is [u >= p] / (1 - p) for the very numbers
    lamina.random.uniform_like draws at the same (key, offset), so a layer
    on either path, or a checkpoint's replay, sees the same mask."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    key, offset = 0x9E3779B97F4A7C15 * 7 % 2**64, 12345
    y, mask = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    assert LIB.emu_dropout(int(dtype == np.float64), ptr(y), ptr(mask), ptr(x), i64(n), ctypes.c_double(p),
                           ctypes.c_ulonglong(key), i64(offset)) == 0
    u = _splitmix_uniform(key, offset, n, dtype)
    expected = (u >= dtype(p)).astype(dtype) * dtype(1.0 / (1.0 - p))
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(y, x * expected)
    if n > 100:
        assert abs((mask == 0).mean() - p) < 0.05
