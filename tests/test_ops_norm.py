"""BatchNorm kernels of lamina._C against the NumPy references: odd shapes,
L = 1 (BatchNorm1d on (N, C)), both dtypes, with and without affine
parameters, batch and running statistics; poisoned outputs."""

import numpy as np
import pytest

from lamina import ops
from lamina.ops import _ext, reference

C = _ext.cpu_module()
pytestmark = pytest.mark.skipif(C is None, reason=f"lamina._C not built ({_ext.import_error('_C')})")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 2), (2, 3, 1), (7, 5, 1), (4, 3, 13), (64, 16, 1024)])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_kernels_match_reference(shape, dtype, affine):
    rng = np.random.default_rng(sum(shape))
    n, c, l = shape
    name = np.dtype(dtype).name
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    x64 = x.astype(np.float64)
    mean, var = np.full(c, np.nan, dtype), np.full(c, np.nan, dtype)
    C.batchnorm_stats(mean.ctypes.data, var.ctypes.data, x.ctypes.data, n, c, l, name)
    rmean, rvar = reference.batchnorm_stats(np, x64)
    np.testing.assert_allclose(mean, rmean, **tol)
    np.testing.assert_allclose(var, rvar, **tol)

    inv_std = (1 / np.sqrt(rvar + 1e-5)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    y, xhat = ops.batchnorm_apply(x, rmean.astype(dtype), inv_std, gamma, beta)
    ry, rxhat = reference.batchnorm_apply(
        np, x64, rmean, inv_std.astype(np.float64), None if gamma is None else gamma.astype(np.float64),
        None if beta is None else beta.astype(np.float64), True,
    )
    np.testing.assert_allclose(y, ry, **tol)
    np.testing.assert_allclose(xhat, rxhat, **tol)
    assert ops.batchnorm_apply(x, rmean.astype(dtype), inv_std, gamma, beta, need_xhat=False)[1] is None

    dy = rng.standard_normal(shape).astype(dtype)
    for batch_stats in (True, False):
        dx, dgamma, dbeta = ops.batchnorm_backward(dy, xhat, inv_std, gamma, batch_stats)
        rdx, rdgamma, rdbeta = reference.batchnorm_backward(
            np, dy.astype(np.float64), xhat.astype(np.float64), inv_std.astype(np.float64),
            None if gamma is None else gamma.astype(np.float64), batch_stats,
        )
        scale = dict(rtol=tol["rtol"] * 10, atol=tol["atol"] * max(1, l))
        np.testing.assert_allclose(dx, rdx, **scale)
        np.testing.assert_allclose(dgamma, rdgamma, **scale)
        np.testing.assert_allclose(dbeta, rdbeta, **scale)
