"""lamina._C kernels against the NumPy references: random data, odd and
large sizes (above the OpenMP threshold), both dtypes, poisoned outputs."""

import numpy as np
import pytest

from lamina import ops
from lamina.ops import _ext, reference

C = _ext.cpu_module()
pytestmark = pytest.mark.skipif(C is None, reason=f"lamina._C not built ({_ext.import_error('_C')})")

SIZES = [1, 2, 7, 255, 256, 257, 4099, (1 << 15) + 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("n", SIZES)
def test_gelu_kernels_match_reference(dtype, approximate, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    y = np.full(n, np.nan, dtype=dtype)  # poisoned: every element must be written
    dx = np.full(n, np.nan, dtype=dtype)
    C.gelu_forward(y.ctypes.data, x.ctypes.data, n, approximate == "tanh", np.dtype(dtype).name)
    C.gelu_backward(dx.ctypes.data, dy.ctypes.data, x.ctypes.data, n, approximate == "tanh", np.dtype(dtype).name)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-13  # float32: 1 + tanh(u) cancels for u << 0
    np.testing.assert_allclose(y, reference.gelu_forward(np, x64, approximate), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, reference.gelu_backward(np, dy64, x64, approximate), rtol=tol, atol=tol)


def test_gelu_dispatch_handles_non_contiguous_input():
    base = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    view = base[:, ::3]
    np.testing.assert_allclose(ops.gelu_forward(view), reference.gelu_forward(np, view, "none"), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(
        ops.gelu_backward(view, view.T.copy().T), reference.gelu_backward(np, view, view, "none"), rtol=2e-6, atol=2e-6
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c", [(1, 1), (1, 5), (3, 2), (17, 10), (64, 1001), (257, 3)])
def test_softmax_xent_kernel_writes_every_output(dtype, n, c):
    rng = np.random.default_rng(n + c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, size=n).astype(np.int64)
    loss = np.full(n, np.nan, dtype=dtype)
    grad = np.full((n, c), np.nan, dtype=dtype)
    C.softmax_xent(loss.ctypes.data, grad.ctypes.data, x.ctypes.data, y.ctypes.data, n, c, 0.05, 1.0 / n, np.dtype(dtype).name)
    rloss, rgrad = reference.softmax_xent(np, x.astype(np.float64), y, 0.05, 1.0 / n, True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, rloss, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, rgrad, rtol=tol, atol=tol)


def test_kernels_reject_unknown_dtypes():
    with pytest.raises(ValueError, match="expected dtype float32 or float64, received float16"):
        C.gelu_forward(0, 0, 0, False, "float16")


def test_float16_on_cpu_warns_once_and_computes_in_float32():
    import warnings

    from lamina.errors import PerformanceWarning, _warned

    _warned.discard("cpu low precision")
    x = np.linspace(-3, 3, 11).astype(np.float16)
    with pytest.warns(PerformanceWarning, match="computes float16 arrays on the CPU in float32"):
        y = ops.gelu_forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.gelu_forward(x)  # second call: silent
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, reference.gelu_forward(np, x.astype(np.float64), "none"), rtol=2e-3, atol=2e-3)


def test_openmp_is_on():
    assert C.openmp and C.num_threads() >= 1
