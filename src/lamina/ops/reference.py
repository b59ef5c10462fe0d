"""Reference implementations of every kernel, written once over ``xp``.

These are the NumPy/CuPy versions that the compiled kernels are tested
against, and the path taken when a compiled kernel does not exist for a
dtype or was not built.  They favour clarity over speed.
"""

import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
CUBIC = 0.044715


def _erf(xp, x):
    if xp is np:
        from scipy.special import erf  # noqa: PLC0415
    else:
        from cupyx.scipy.special import erf  # noqa: PLC0415
    return erf(x)


def relu_forward(xp, x):
    return xp.maximum(x, 0)


def relu_backward(xp, dy, y):
    return xp.where(y > 0, dy, 0).astype(dy.dtype, copy=False)


def gelu_forward(xp, x, approximate):
    if approximate == "tanh":
        u = SQRT_2_OVER_PI * (x + CUBIC * x**3)
        return (0.5 * x * (1 + xp.tanh(u))).astype(x.dtype, copy=False)
    return (0.5 * x * (1 + _erf(xp, x * INV_SQRT_2))).astype(x.dtype, copy=False)


def gelu_backward(xp, dy, x, approximate):
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + CUBIC * x**3))
        du = SQRT_2_OVER_PI * (1 + 3 * CUBIC * x * x)
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
    else:
        cdf = 0.5 * (1 + _erf(xp, x * INV_SQRT_2))
        pdf = INV_SQRT_2PI * xp.exp(-0.5 * x * x)
        d = cdf + x * pdf
    return (dy * d).astype(dy.dtype, copy=False)


def softmax_xent(xp, logits, labels, smoothing, grad_scale, need_grad):
    """Per-row loss and (optionally) gradient; see csrc/cpu/kernels.h for the math."""
    n, c = logits.shape
    acc = np.float64 if logits.dtype == np.float64 else np.float32
    x = logits.astype(acc, copy=False)
    m = x.max(axis=1, keepdims=True)
    d = m - x  # >= 0
    s = xp.exp(-d).sum(axis=1)
    q_off = smoothing / c
    q_on = 1.0 - smoothing + q_off
    rows = xp.arange(n)
    qdist = q_off * d.sum(axis=1) + (q_on - q_off) * d[rows, labels]
    loss = (xp.log(s) + qdist).astype(logits.dtype, copy=False)
    if not need_grad:
        return loss, None
    g = xp.exp(-d) / s[:, None]
    g -= q_off
    g[rows, labels] -= q_on - q_off
    g *= grad_scale
    return loss, g.astype(logits.dtype, copy=False)


# A counter-based generator for the GPU: sample i of a draw at ``offset`` is
# splitmix64(key + offset + i), top 24 (float32) or 53 (float64) bits.
_UNIFORM_SRC = r"""
unsigned long long z = key + (unsigned long long)(offset + i) * 0x9E3779B97F4A7C15ULL;
z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
z = z ^ (z >> 31);
if (sizeof(T) >= 8) { out = (T)((double)(z >> 11) * (1.0 / 9007199254740992.0)); }
else { out = (T)((float)(z >> 40) * (1.0f / 16777216.0f)); }
"""
_uniform_kernel = None


def random_uniform_cuda(cp, shape, dtype, key, offset):
    global _uniform_kernel
    if _uniform_kernel is None:
        _uniform_kernel = cp.ElementwiseKernel(
            "uint64 key, int64 offset", "T out", _UNIFORM_SRC, "lamina_uniform"
        )
    out = cp.empty(shape, dtype=np.float32 if np.dtype(dtype).itemsize < 4 else dtype)
    _uniform_kernel(np.uint64(key), np.int64(offset), out)
    return out.astype(dtype, copy=False)
