"""lamina's CUDA GEMM against a float64 reference: fresh random data, sizes
around the 64-wide tile (1, 63, 64, 65) and primes, every transpose
combination, the bias and ReLU epilogue, poisoned outputs; Dense and Conv2D
on it against the CPU.  GPU only; the kernel switch is checked everywhere."""

import itertools

import numpy as np
import pytest

import lamina as lm
from conftest import requires_cuda
from harness import check_gpu_kernels_match_cpu
from lamina import backend

SIZES = [1, 63, 64, 65, 127, 131]


def test_use_kernels_validates_and_leaves_numpy_alone():
    assert backend.kernels() == "auto"  # the documented default
    previous = backend.use_kernels("lamina")
    try:
        assert previous == "auto" and backend.kernels() == "lamina"
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        layer = lm.Dense(4, 2)
        np.testing.assert_allclose(layer(x), x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    finally:
        backend.use_kernels(previous)
    with pytest.raises(ValueError, match="expected one of"):
        backend.use_kernels("cudnn")


@pytest.mark.gpu
@requires_cuda
def test_auto_kernels_take_lamina_where_it_was_measured_faster(monkeypatch):
    """use_kernels("auto"): lamina's GEMM for float32 products of at most a
    wave of 128 x 128 tiles and for aligned fp16/bf16 operands; cuBLAS for
    larger float32 products, unaligned 16-bit operands, batched products
    and float64, without a warning (it is the choice, not a fallback);
    use_kernels("lamina") says once when a product cannot take its GEMM."""
    import warnings

    import cupy as cp

    from lamina import ops

    monkeypatch.setattr(lm.errors, "_warned", set())
    sms = ops._sm_count(cp)
    small = cp.ones((128, 784), dtype=np.float32), cp.ones((784, 512), dtype=np.float32)
    big = cp.ones((128 * sms, 784), dtype=np.float32), cp.ones((784, 256), dtype=np.float32)  # 2 waves of tiles
    half = cp.ones((64, 64), dtype=np.float16), cp.ones((64, 64), dtype=np.float16)
    unaligned = cp.ones((64, 60), dtype=np.float16), cp.ones((60, 60), dtype=np.float16)
    batched = cp.ones((2, 8, 8), dtype=np.float32), cp.ones((2, 8, 8), dtype=np.float32)
    double = cp.ones((8, 8)), cp.ones((8, 8))
    previous = backend.use_kernels("auto")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ops._lamina_gemm(*small) and ops._lamina_gemm(*half)
            assert ops._lamina_gemm(small[0], half[1]) is False  # two dtypes
            for a, b in (big, unaligned, batched, double):
                assert ops._lamina_gemm(a, b) is False
            np.testing.assert_allclose(cp.asnumpy(ops.matmul(*small)), 784.0)
        backend.use_kernels("lamina")
        assert ops._lamina_gemm(*big)
        with pytest.warns(lm.PerformanceWarning, match="lamina's CUDA GEMM takes 2-d"):
            assert ops._lamina_gemm(*batched) is False
        backend.use_kernels("cupy")
        assert not any(ops._lamina_gemm(a, b) for a, b in (small, half, big))
    finally:
        backend.use_kernels(previous)


@pytest.mark.gpu
@requires_cuda
def test_batched_bfloat16_products_on_cupy_run_in_float32(monkeypatch):
    """CuPy has no batched bfloat16 matmul: lamina computes it in float32 and
    rounds once, saying so once."""
    import cupy as cp

    from lamina import ops

    if not backend.cupy_bfloat16()[0]:
        pytest.skip(f"this CuPy cannot compute on bfloat16: {backend.cupy_bfloat16()[1]}")
    monkeypatch.setattr(lm.errors, "_warned", set())
    bf16 = backend.as_dtype("bfloat16")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 5, 7)).astype(bf16), rng.standard_normal((2, 3, 7, 4)).astype(bf16)
    with pytest.warns(lm.PerformanceWarning, match="no batched bfloat16"):
        got = ops.matmul(cp.asarray(a), cp.asarray(b))
    assert got.dtype == bf16 and got.shape == (2, 3, 5, 4)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(bf16)
    np.testing.assert_array_equal(cp.asnumpy(got).astype(np.float32), want.astype(np.float32))


def to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even, as the GPU converts."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def storage(a, dtype):
    """(host array in the storage dtype, its exactly representable float64 value)."""
    if dtype == "bfloat16":
        bits = to_bf16_bits(a)
        return bits, from_bf16_bits(bits).astype(np.float64)
    s = a.astype(dtype)
    return s, s.astype(np.float64)


def gelu64(z, tanh):
    from scipy.special import erf

    if tanh:
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


ACTS = {"none": lambda z: z, "relu": lambda z: np.maximum(z, 0), "gelu": lambda z: gelu64(z, False),
        "gelu_tanh": lambda z: gelu64(z, True)}


def run_gemm(mod, m, n, k, ta, tb, dtype, out_dtype, act, use_bias, seed, keep_z=False):
    """One launch of lamina._C_cuda.gemm on fresh random data; returns (c, z, float64 reference c, z)."""
    import cupy as cp

    rng = np.random.default_rng(seed)
    a, ra = storage(rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32), dtype)
    b, rb = storage(rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32), dtype)
    bias, rbias = storage(rng.standard_normal(n).astype(np.float32), dtype)
    z_ref = (ra.T if ta else ra) @ (rb.T if tb else rb) + (rbias if use_bias else 0)
    out_np = np.uint16 if out_dtype == "bfloat16" else np.dtype(out_dtype)
    poison = 0xFFFF if out_dtype == "bfloat16" else np.nan  # NaN in every storage dtype
    c = cp.full((m, n), poison, dtype=out_np)  # poisoned: every element must be written
    z = cp.full((m, n), poison, dtype=out_np) if keep_z else None
    ga, gb, gbias = cp.asarray(a), cp.asarray(b), cp.asarray(bias)
    mod.gemm(c.data.ptr, z.data.ptr if keep_z else 0, ga.data.ptr, gb.data.ptr, gbias.data.ptr if use_bias else 0,
             m, n, k, a.shape[1], b.shape[1], n, ta, tb, act, dtype, out_dtype, cp.cuda.get_current_stream().ptr)

    def host(v):
        v = cp.asnumpy(v)
        return from_bf16_bits(v) if out_dtype == "bfloat16" else v.astype(np.float32)

    return host(c), (host(z) if keep_z else None), ACTS[act](z_ref), z_ref


def tolerance(dtype, out_dtype, k):
    # fp32 accumulation of exactly represented inputs; the output rounding dominates for 16-bit outputs.
    if out_dtype == "float32":
        return dict(rtol=1e-4, atol=1e-4 * np.sqrt(k))
    return dict(rtol=1e-2 if out_dtype == "bfloat16" else 2e-3, atol=(1e-2 if out_dtype == "bfloat16" else 2e-3) * np.sqrt(k))


GEMM_SHAPES = [(m, n, k) for m, n, k in itertools.product(SIZES, SIZES, [1, 17, 64, 129]) if (m * n) % 3 == 0 or m == n][:60]
# around the tensor-core kernel's 128 x 128 x 32 tile, and primes
TC_SHAPES = [(1, 1, 1), (127, 128, 31), (128, 128, 32), (129, 129, 33), (257, 131, 97), (61, 263, 200), (128, 8, 16)]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES + TC_SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_fp32_gemm_matches_float64(m, n, k, ta, tb):
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    for act, use_bias in (("none", False), ("none", True), ("relu", True)):
        c, _, ref, _ = run_gemm(mod, m, n, k, ta, tb, "float32", "float32", act, use_bias, m * 10007 + n * 101 + k)
        np.testing.assert_allclose(c, ref, **tolerance("float32", "float32", k), err_msg=f"{act} bias={use_bias}")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("m,n,k", TC_SHAPES + [(64, 65, 63), (1, 130, 8), (300, 1, 40)])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype,out_dtype", [("float16", "float16"), ("float16", "float32"), ("bfloat16", "bfloat16"),
                                             ("bfloat16", "float32")])
def test_tensor_core_gemm_matches_float64(m, n, k, ta, tb, dtype, out_dtype):
    """k = 31, 33, 97, ... also leave the leading dimensions off multiples of 8: the scalar-load path."""
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    c, _, ref, _ = run_gemm(mod, m, n, k, ta, tb, dtype, out_dtype, "none", True, m + 7 * n + 13 * k)
    np.testing.assert_allclose(c, ref, **tolerance(dtype, out_dtype, k))


def _hopper():
    import cupy as cp

    return cp.cuda.Device().compute_capability == "90"


# Around the wgmma kernel's 128 x 128|256 x 64 tiles; k = 700 wraps its ring of stages
# twice; (2048, 4096, 1000) gives enough tiles for the 256-wide ones.
WGMMA_SHAPES = [(1, 1, 1), (128, 128, 64), (129, 257, 65), (61, 263, 200), (300, 136, 700),
                pytest.param(2048, 4096, 1000, marks=pytest.mark.big)]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("variant", ["wgmma", "mma"])
@pytest.mark.parametrize("m,n,k", WGMMA_SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype,out_dtype", [("float16", "float16"), ("bfloat16", "float32")])
def test_tensor_core_gemm_variants_on_padded_operands(variant, m, n, k, ta, tb, dtype, out_dtype):
    """Each tensor-core kernel forced in turn, on operands whose rows are padded to a
    multiple of 8 elements (what TMA needs), the output written into a wider array
    whose extra columns must stay untouched; the reference is float64 on the host."""
    import cupy as cp

    from lamina.ops import _ext

    if variant == "wgmma" and not _hopper():
        pytest.skip("the wgmma kernel is sm_90a code: compute capability 9.0 only")
    mod = _ext.cuda_module()
    rng = np.random.default_rng(m + 3 * n + 7 * k + ta + 2 * tb)

    def padded(rows, cols):
        ld = -(-cols // 8) * 8 + 8
        host, ref = storage(rng.standard_normal((rows, ld)).astype(np.float32), dtype)
        return cp.asarray(host), ref[:, :cols], ld

    a, ra, lda = padded(*((k, m) if ta else (m, k)))
    b, rb, ldb = padded(*((n, k) if tb else (k, n)))
    bias, rbias = storage(rng.standard_normal(n).astype(np.float32), dtype)
    ra, rb = (cp.asarray(ra), cp.asarray(rb)) if m * n * k > 10**8 else (ra, rb)  # big: float64 on the GPU
    ref = cp.asnumpy((ra.T if ta else ra) @ (rb.T if tb else rb)) + rbias
    out_np = np.uint16 if out_dtype == "bfloat16" else np.dtype(out_dtype)
    ldc = n + 5
    c = cp.full((m, ldc), np.nan, dtype=out_np)
    previous = mod.tensor_core_gemm(variant)
    try:
        bias_d = cp.asarray(bias)
        mod.gemm(c.data.ptr, 0, a.data.ptr, b.data.ptr, bias_d.data.ptr, m, n, k, lda, ldb, ldc, ta, tb,
                 "none", dtype, out_dtype, cp.cuda.get_current_stream().ptr)
    finally:
        mod.tensor_core_gemm(previous)
    host = cp.asnumpy(c)
    assert np.isnan(host[:, n:].astype(np.float32)).all()
    np.testing.assert_allclose(host[:, :n].astype(np.float32), ref, **tolerance(dtype, out_dtype, k))


@pytest.mark.gpu
@requires_cuda
def test_forcing_wgmma_where_it_cannot_run_is_an_error():
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    a = cp.zeros((16, 12), cp.float16)  # leading dimension 12: TMA cannot read it
    c = cp.zeros((16, 12), cp.float16)
    previous = mod.tensor_core_gemm("wgmma")
    try:
        with pytest.raises(RuntimeError):
            mod.gemm(c.data.ptr, 0, a.data.ptr, a.data.ptr, 0, 16, 12, 12, 12, 12, 12, False, True, "none", "float16",
                     "float16", cp.cuda.get_current_stream().ptr)
    finally:
        mod.tensor_core_gemm(previous)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh"])
def test_gemm_epilogue_activations_and_preactivation(dtype, act):
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    out = "float32" if dtype == "float32" else dtype
    c, z, ref, z_ref = run_gemm(mod, 130, 67, 96, False, True, dtype, out, act, True, 5, keep_z=True)
    np.testing.assert_allclose(z, z_ref, **tolerance(dtype, out, 96))
    np.testing.assert_allclose(c, ref, **tolerance(dtype, out, 96))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("m,n", [(1, 1), (128, 10), (257, 33), (1000, 512)])
@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh"])
def test_bias_act_backward_matches_float64(m, n, act):
    import cupy as cp

    from lamina import ops

    rng = np.random.default_rng(m + n)
    dy, z = rng.standard_normal((m, n)).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
    z64 = z.astype(np.float64)
    h = 1e-6
    grad = (ACTS[act](z64 + h) - ACTS[act](z64 - h)) / (2 * h)  # act'(z) by central differences in float64
    previous = backend.use_kernels("lamina")
    try:
        dz, db = ops.bias_act_backward(cp.asarray(dy), cp.asarray(z), act)
    finally:
        backend.use_kernels(previous)
    np.testing.assert_allclose(cp.asnumpy(dz), dy * grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(db), (dy * grad).sum(axis=0), rtol=1e-4, atol=1e-4 * np.sqrt(m))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("act", [None, "relu", "gelu"])
def test_dense_with_activation_on_lamina_kernels_matches_the_cpu(act):
    rng = np.random.default_rng(0)
    check_gpu_kernels_match_cpu(lambda: lm.Dense(37, 29, activation=act), rng.standard_normal((19, 37)).astype(np.float32))


@pytest.mark.gpu
@requires_cuda
def test_models_on_lamina_kernels_match_the_cpu():
    def make():
        return lm.Sequential(lm.Conv2D(3, 8, 3, padding=1), lm.ReLU(), lm.MaxPool2D(2), lm.Flatten(), lm.Dense(8 * 16, 10))

    check_gpu_kernels_match_cpu(make, np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32))


def test_tensor_core_gemm_switch_validates_and_restores():
    from lamina import ops
    from lamina.ops import _ext

    if _ext.cuda_module() is None:
        pytest.skip("lamina._C_cuda is not built")
    assert ops.tensor_core_gemm() == "auto"  # the default
    previous = ops.tensor_core_gemm("mma")
    try:
        assert previous == "auto" and ops.tensor_core_gemm() == "mma"
        with pytest.raises(ValueError, match="expected 'auto', 'mma' or 'wgmma'"):
            ops.tensor_core_gemm("cublas")
        assert ops.tensor_core_gemm() == "mma"  # a rejected choice changes nothing
    finally:
        ops.tensor_core_gemm(previous)
    assert ops.tensor_core_gemm() == "auto"


def test_split_k_heuristic_on_dense_shapes():
    from lamina import ops

    sms = 132
    assert ops.gemm_splits(128, 512, 784, sms) == 16  # 4 tiles: 16 ranges (the cap) of 49
    assert ops.gemm_splits(128, 784, 512, sms) == 16
    assert ops.gemm_splits(512, 784, 128, sms) == 4  # 28 tiles, k = 128: ranges of 32
    assert ops.gemm_splits(512, 784, 31, sms) == 1  # k too short to split
    assert ops.gemm_splits(4096, 4096, 1024, sms) == 1  # enough tiles already
    assert ops.gemm_splits(1, 1, 10**6, sms) == 16  # capped


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("m,n,k", [(128, 512, 784), (128, 784, 512), (1, 3, 1000), (129, 130, 257)])
@pytest.mark.parametrize("splits", [2, 5, 64])
@pytest.mark.parametrize("ta,tb", [(False, True), (True, False)])
def test_split_k_gemm_matches_float64(m, n, k, splits, ta, tb):
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    rng = np.random.default_rng(m + n + k + splits)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64) + bias
    c = cp.full((m, n), cp.nan, dtype=cp.float32)
    ws = cp.full(splits * m * n, cp.nan, dtype=cp.float32)  # poisoned: every slab must be written
    ga, gb, gbias = cp.asarray(a), cp.asarray(b), cp.asarray(bias)
    mod.gemm(c.data.ptr, 0, ga.data.ptr, gb.data.ptr, gbias.data.ptr, m, n, k, a.shape[1], b.shape[1], n, ta, tb,
             "gelu", "float32", "float32", cp.cuda.get_current_stream().ptr, splits, ws.data.ptr, ws.nbytes)
    np.testing.assert_allclose(cp.asnumpy(c), gelu64(ref, False), rtol=1e-4, atol=1e-4 * np.sqrt(k))
    again = cp.empty_like(c)  # deterministic: the slabs are added in a fixed order
    mod.gemm(again.data.ptr, 0, ga.data.ptr, gb.data.ptr, gbias.data.ptr, m, n, k, a.shape[1], b.shape[1], n, ta, tb,
             "gelu", "float32", "float32", cp.cuda.get_current_stream().ptr, splits, ws.data.ptr, ws.nbytes)
    assert cp.array_equal(c, again)
