"""lamina's CUDA GEMM against a float64 reference: fresh random data, sizes
around the 64-wide tile (1, 63, 64, 65) and primes, every transpose
combination, the bias and ReLU epilogue, poisoned outputs; Dense and Conv2D
on it against the CPU.  GPU only; the kernel switch is checked everywhere."""

import itertools

import numpy as np
import pytest

import lamina as lm
from conftest import requires_cuda
from harness import to_numpy
from lamina import backend

SIZES = [1, 63, 64, 65, 127, 131]


def test_use_kernels_validates_and_leaves_numpy_alone():
    assert backend.kernels() == "cupy"  # the documented default
    previous = backend.use_kernels("lamina")
    try:
        assert previous == "cupy" and backend.kernels() == "lamina"
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        layer = lm.Dense(4, 2)
        np.testing.assert_allclose(layer(x), x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    finally:
        backend.use_kernels(previous)
    with pytest.raises(ValueError, match="expected one of"):
        backend.use_kernels("cudnn")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("m,n,k", [(m, n, k) for m, n, k in itertools.product(SIZES, SIZES, [1, 17, 64, 129]) if (m * n) % 3 == 0 or m == n][:60])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_gemm_kernel_matches_float64(m, n, k, ta, tb):
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    ref_a, ref_b = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
    for act, use_bias in (("none", False), ("none", True), ("relu", True)):
        expected = ref_a @ ref_b + (bias if use_bias else 0)
        if act == "relu":
            expected = np.maximum(expected, 0)
        ga, gb, gbias = cp.asarray(a), cp.asarray(b), cp.asarray(bias)
        c = cp.full((m, n), cp.nan, dtype=cp.float32)  # poisoned: every element must be written
        mod.gemm(c.data.ptr, ga.data.ptr, gb.data.ptr, gbias.data.ptr if use_bias else 0, m, n, k,
                 a.shape[1], b.shape[1], n, ta, tb, act, "float32", cp.cuda.get_current_stream().ptr)
        np.testing.assert_allclose(cp.asnumpy(c), expected, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.gpu
@requires_cuda
def test_models_on_lamina_kernels_match_the_cpu():
    lm.manual_seed(0)
    cpu = lm.Sequential(lm.Conv2D(3, 8, 3, padding=1), lm.ReLU(), lm.MaxPool2D(2), lm.Flatten(), lm.Dense(8 * 16, 10))
    gpu = lm.Sequential(lm.Conv2D(3, 8, 3, padding=1), lm.ReLU(), lm.MaxPool2D(2), lm.Flatten(), lm.Dense(8 * 16, 10))
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((5, 10)).astype(np.float32)
    previous = backend.use_kernels("lamina")
    try:
        import cupy as cp

        y = gpu(cp.asarray(x))
        dx = gpu.backward(cp.asarray(dy))
    finally:
        backend.use_kernels(previous)
    np.testing.assert_allclose(to_numpy(y), cpu(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dx), cpu.backward(dy), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        np.testing.assert_allclose(to_numpy(q.grad), p.grad, rtol=1e-4, atol=1e-5, err_msg=name)
