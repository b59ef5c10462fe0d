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


def _work(dtype):
    """float64 stays float64; everything else reduces in float32."""
    return np.float64 if dtype == np.float64 else np.float32


def softmax_forward(xp, x, scale):
    """softmax(scale * x) over the last axis, scale > 0."""
    xw = x.astype(_work(x.dtype), copy=False)
    e = xp.exp(scale * (xw - xw.max(axis=-1, keepdims=True)))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype, copy=False)


def softmax_backward(xp, dy, y, scale):
    """scale * y (dy - sum(dy y)) over the last axis."""
    work = _work(dy.dtype)
    dyw, yw = dy.astype(work, copy=False), y.astype(work, copy=False)
    return (scale * yw * (dyw - (dyw * yw).sum(axis=-1, keepdims=True))).astype(dy.dtype, copy=False)


def layernorm_forward(xp, x, weight, bias, eps):
    """(y, xhat, rstd) for x (R, D); see csrc/cpu/kernels.h."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    rstd = (1 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)).astype(x.dtype, copy=False)
    xhat = xc * rstd
    y = xhat * weight if weight is not None else xhat
    if bias is not None:
        y = y + bias
    return y, xhat, rstd[:, 0]


def layernorm_backward(xp, dy, xhat, rstd, weight, need_params):
    """(dx, dweight, dbias) for dy, xhat (R, D); the sums are None unless need_params."""
    g = dy * weight if weight is not None else dy
    dx = rstd[:, None] * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    if not need_params:
        return dx, None, None
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


def _sigmoid(xp, a):
    """σ(a) = ½ (1 + tanh(a/2)): the same function, and no exponential to overflow."""
    return 0.5 + 0.5 * xp.tanh(0.5 * a)


def lstm_cell_forward(xp, gx, gh, c_prev, gates, c):
    """One LSTM step (gate order i, f, g, o): writes the activated gates
    (N, 4H) and c_t (N, H) into ``gates`` and ``c``, returns h_t.
        i, f, o = σ(a_i, a_f, a_o),  g = tanh(a_g),  a = gx + gh
        c_t = f ⊙ c_prev + i ⊙ g,   h_t = o ⊙ tanh(c_t)"""
    hh = c.shape[-1]
    a = gx + gh
    gates[...] = _sigmoid(xp, a)
    gates[:, 2 * hh:3 * hh] = xp.tanh(a[:, 2 * hh:3 * hh])
    i, f, g, o = (gates[:, k * hh:(k + 1) * hh] for k in range(4))
    c[...] = f * c_prev + i * g
    return o * xp.tanh(c)


def lstm_cell_backward(xp, dh, dc, gates, c, c_prev):
    """(da, dc_prev) of one LSTM step, from dh (of h_t) and dc (of c_t, from step t+1):
        dc ← dc + dh ⊙ o ⊙ (1 - tanh²(c_t))
        da = [dc ⊙ g ⊙ i(1-i), dc ⊙ c_prev ⊙ f(1-f), dc ⊙ i ⊙ (1-g²), dh ⊙ tanh(c_t) ⊙ o(1-o)]
        dc_prev = dc ⊙ f"""
    hh = c.shape[-1]
    i, f, g, o = (gates[:, k * hh:(k + 1) * hh] for k in range(4))
    tc = xp.tanh(c)
    dc = dc + dh * o * (1 - tc * tc)
    da = xp.empty_like(gates)
    da[:, :hh] = dc * g * i * (1 - i)
    da[:, hh:2 * hh] = dc * c_prev * f * (1 - f)
    da[:, 2 * hh:3 * hh] = dc * i * (1 - g * g)
    da[:, 3 * hh:] = dh * tc * o * (1 - o)
    return da, dc * f


def gru_cell_forward(xp, gx, gh, h_prev, gates, ghn):
    """One GRU step (gate order r, z, n): writes r, z, n (N, 3H) into
    ``gates`` and gh_n (N, H) into ``ghn``, returns h_t.
        r = σ(gx_r + gh_r),  z = σ(gx_z + gh_z),  n = tanh(gx_n + r ⊙ gh_n)
        h_t = (1 - z) ⊙ n + z ⊙ h_prev"""
    hh = ghn.shape[-1]
    gates[:, :2 * hh] = _sigmoid(xp, gx[:, :2 * hh] + gh[:, :2 * hh])
    r, z = gates[:, :hh], gates[:, hh:2 * hh]
    ghn[...] = gh[:, 2 * hh:]
    n = gates[:, 2 * hh:]
    n[...] = xp.tanh(gx[:, 2 * hh:] + r * ghn)
    return n + z * (h_prev - n)


def gru_cell_backward(xp, dh, gates, ghn, h_prev):
    """(dgx, dgh, dh_direct) of one GRU step, from dh (of h_t):
        da_n = dh ⊙ (1-z) ⊙ (1-n²),  da_r = da_n ⊙ gh_n ⊙ r(1-r),  da_z = dh ⊙ (h_prev - n) ⊙ z(1-z)
        dgx = [da_r, da_z, da_n],  dgh = [da_r, da_z, da_n ⊙ r],  dh_direct = dh ⊙ z"""
    hh = ghn.shape[-1]
    r, z, n = (gates[:, k * hh:(k + 1) * hh] for k in range(3))
    dgx = xp.empty_like(gates)
    dan = dgx[:, 2 * hh:]
    dan[...] = dh * (1 - z) * (1 - n * n)
    dgx[:, :hh] = dan * ghn * r * (1 - r)
    dgx[:, hh:2 * hh] = dh * (h_prev - n) * z * (1 - z)
    dgh = dgx.copy()
    dgh[:, 2 * hh:] *= r
    return dgx, dgh, dh * z


def softmax_xent(xp, logits, labels, smoothing, grad_scale, need_grad):
    """Per-row loss and (optionally) gradient; see csrc/cpu/kernels.h for the math."""
    n, c = logits.shape
    acc = _work(logits.dtype)
    x = logits.astype(acc, copy=False)
    m = x.max(axis=1, keepdims=True)
    d = m - x  # >= 0
    s = xp.exp(-d).sum(axis=1)
    q_off = smoothing / c
    q_on = 1.0 - smoothing + q_off
    rows = xp.arange(n)
    bad = None
    if xp is not np:  # labels unchecked on the host (Loss.compute): NaN where out of range, as the CUDA kernel
        bad = (labels < 0) | (labels >= c)
        labels = xp.where(bad, 0, labels)
    qdist = q_off * d.sum(axis=1) + (q_on - q_off) * d[rows, labels]
    loss = xp.log(s) + qdist
    if bad is not None:
        loss[bad] = xp.nan
    loss = loss.astype(logits.dtype, copy=False)
    if not need_grad:
        return loss, None
    g = xp.exp(-d) / s[:, None]
    g -= q_off
    g[rows, labels] -= q_on - q_off
    g *= grad_scale
    if bad is not None:
        g[bad] = xp.nan
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


# --------------------------------------------------------------------------
# convolution and pooling (geometry: lamina.ops.conv.Geometry)
# --------------------------------------------------------------------------


def _padded(xp, x, g, value=0):
    """x padded so every window of the geometry fits: (N, C, Hp, Wp)."""
    need_h = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1
    need_w = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1
    pb = max(0, need_h - g.pt - g.h)
    pr = max(0, need_w - g.pl - g.w)
    return xp.pad(x, ((0, 0), (0, 0), (g.pt, pb), (g.pl, pr)), constant_values=value)


def _windows(xp, xpad, g):
    """A strided view (N, C, KH, KW, OH, OW) of the padded input; no copy."""
    s = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(g.n, g.c, g.kh, g.kw, g.oh, g.ow),
        strides=(s[0], s[1], s[2] * g.dh, s[3] * g.dw, s[2] * g.sh, s[3] * g.sw),
    )


def im2col(xp, x, g):
    """x (N, C, H, W) -> col (C*KH*KW, N*OH*OW); see csrc/cpu/conv.cpp."""
    win = _windows(xp, _padded(xp, x, g), g)
    return xp.ascontiguousarray(win.transpose(1, 2, 3, 0, 4, 5)).reshape(g.c * g.kh * g.kw, g.n * g.oh * g.ow)


def _scatter_windows(xp, parts, g, dtype):
    """Sum parts[i][j] (N, C, OH, OW) into the input pixels window (i, j) reads."""
    hp = max(g.pt + g.h, (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1)
    wp = max(g.pl + g.w, (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1)
    dxp = xp.zeros((g.n, g.c, hp, wp), dtype=dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            h0, w0 = i * g.dh, j * g.dw
            dxp[:, :, h0 : h0 + g.sh * (g.oh - 1) + 1 : g.sh, w0 : w0 + g.sw * (g.ow - 1) + 1 : g.sw] += parts(i, j)
    return xp.ascontiguousarray(dxp[:, :, g.pt : g.pt + g.h, g.pl : g.pl + g.w])


def col2im(xp, dcol, g):
    """The adjoint of im2col: dx (N, C, H, W)."""
    d6 = dcol.reshape(g.c, g.kh, g.kw, g.n, g.oh, g.ow)
    return _scatter_windows(xp, lambda i, j: d6[:, i, j].transpose(1, 0, 2, 3), g, dcol.dtype)


def channels_to_batch_major(xp, y, bias, n):
    c = y.shape[0]
    out = xp.ascontiguousarray(y.reshape(c, n, -1).transpose(1, 0, 2))
    if bias is not None:
        out += bias.reshape(1, c, 1)
    return out


def batch_to_channels_major(xp, dy, need_sums):
    n, c, _ = dy.shape
    out = xp.ascontiguousarray(dy.transpose(1, 0, 2)).reshape(c, -1)
    return out, (out.sum(axis=1) if need_sums else None)


def maxpool_forward(xp, x, g):
    """(y, idx): y (N, C, OH, OW) and idx = ih*W + iw of each maximum (int64)."""
    win = _windows(xp, _padded(xp, x, g, value=-np.inf), g)  # (N, C, KH, KW, OH, OW)
    y, k = _window_max(xp, win.reshape(g.n, g.c, g.kh * g.kw, g.oh, g.ow), axis=2)
    ih = xp.arange(g.oh)[:, None] * g.sh - g.pt + k // g.kw * g.dh
    iw = xp.arange(g.ow)[None, :] * g.sw - g.pl + k % g.kw * g.dw
    return xp.ascontiguousarray(y), (ih * g.w + iw).astype(np.int64)


def _window_max(xp, flat, axis):
    """(max, index) over ``axis`` of window values in PyTorch's scan order:
    the first maximum, except that PyTorch's rule "take v when v > max or v
    is NaN" makes the last NaN win."""
    k = xp.argmax(flat, axis=axis)
    nan = xp.isnan(flat)
    last_nan = flat.shape[axis] - 1 - xp.argmax(xp.flip(nan, axis=axis), axis=axis)
    k = xp.where(nan.any(axis=axis), last_nan, k)
    return xp.take_along_axis(flat, xp.expand_dims(k, axis), axis=axis).squeeze(axis), k


def adaptive_bins(size, out):
    """Adaptive pooling's windows along one axis (PyTorch's): output i reads
    start[i] .. end[i] - 1 with start = ⌊i·size/out⌋, end = ⌈(i+1)·size/out⌉."""
    i = np.arange(out)
    return i * size // out, -(-(i + 1) * size // out)


def _adaptive_taps(size, out):
    """(taps (out, K), valid (out, K)): every window's input positions padded
    to the widest window K; padding taps repeat the last position, invalid."""
    start, end = adaptive_bins(size, out)
    taps = start[:, None] + np.arange(int((end - start).max()))
    return np.minimum(taps, end[:, None] - 1), taps < end[:, None]


def adaptive_maxpool_forward(xp, x, oh, ow):
    """x (N, C, H, W) -> (y, idx), both (N, C, OH, OW); idx = ih*W + iw of
    each window's maximum (int64), as PyTorch's return_indices.  The windows
    are gathered, at most (H + OH)(W + OW) values per plane, and scanned in
    PyTorch's row-major order (separable maxima would break ties differently)."""
    n, c, h, w = x.shape
    rows, rvalid = _adaptive_taps(h, oh)
    cols, cvalid = _adaptive_taps(w, ow)
    kh, kw = rows.shape[1], cols.shape[1]
    win = x[:, :, xp.asarray(rows)[:, :, None, None], xp.asarray(cols)[None, None]]  # (N, C, OH, KH, OW, KW)
    valid = xp.asarray(rvalid[:, :, None, None] & cvalid[None, None])
    win = xp.where(valid, win, xp.asarray(-np.inf, dtype=x.dtype))
    flat = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, kh * kw)
    y, k = _window_max(xp, flat, axis=4)
    ih = xp.asarray(rows)[xp.arange(oh)[:, None], k // kw]
    iw = xp.asarray(cols)[xp.arange(ow)[None, :], k % kw]
    return xp.ascontiguousarray(y).astype(x.dtype, copy=False), (ih * w + iw).astype(np.int64)


def max_unpool_forward(xp, x, idx, size):
    """x, idx (N, C, L) -> y (N, C, size): zeros but y[n, c, idx[n, c, l]] = x[n, c, l]
    (the inverse of max pooling's scatter; a repeated index keeps one of its values)."""
    n, c, length = x.shape
    y = xp.zeros((n * c, size), dtype=x.dtype)
    y[xp.arange(n * c)[:, None], idx.reshape(n * c, length)] = x.reshape(n * c, length)
    return y.reshape(n, c, size)


def max_unpool_backward(xp, dy, idx):
    """dy (N, C, size), idx (N, C, L) -> dx (N, C, L) = dy[n, c, idx[n, c, l]] (a gather)."""
    n, c, size = dy.shape
    return xp.take_along_axis(dy.reshape(n * c, size), idx.reshape(n * c, -1), axis=1).reshape(idx.shape)


def maxpool_backward(xp, dy, idx, g):
    return scatter_add_planes(xp, dy, idx, g.h, g.w)


def scatter_add_planes(xp, dy, idx, h, w):
    """dx (N, C, H, W): every dy[n, c, ...] added at position idx[n, c, ...] = ih*W + iw of its plane."""
    n, c = dy.shape[:2]
    planes = xp.arange(n * c, dtype=np.int64).reshape(n, c, *(1,) * (dy.ndim - 2)) * (h * w)
    dx = xp.bincount((planes + idx).ravel(), weights=dy.ravel(), minlength=n * c * h * w)
    return dx.astype(dy.dtype).reshape(n, c, h, w)


def _avg_divisor(xp, g, count_include_pad, dtype):
    if count_include_pad:
        return g.kh * g.kw
    ones = xp.ones((1, 1, g.h, g.w), dtype=dtype)
    counts = _windows(xp, _padded(xp, ones, g._replace(n=1, c=1)), g._replace(n=1, c=1)).sum(axis=(2, 3))
    return counts  # (1, 1, OH, OW)


def avgpool_forward(xp, x, g, count_include_pad):
    s = _windows(xp, _padded(xp, x, g), g).sum(axis=(2, 3))
    return (s / _avg_divisor(xp, g, count_include_pad, x.dtype)).astype(x.dtype, copy=False)


def avgpool_backward(xp, dy, g, count_include_pad):
    share = (dy / _avg_divisor(xp, g, count_include_pad, dy.dtype)).astype(dy.dtype, copy=False)
    return _scatter_windows(xp, lambda i, j: share, g, dy.dtype)


# --------------------------------------------------------------------------
# batch normalisation over x (N, C, L)
# --------------------------------------------------------------------------


def batchnorm_stats(xp, x):
    mean = x.mean(axis=(0, 2), dtype=x.dtype)
    var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2), dtype=x.dtype)
    return mean, var


def batchnorm_apply(xp, x, mean, inv_std, gamma, beta, need_xhat):
    xhat = (x - mean[None, :, None]) * inv_std[None, :, None]
    y = xhat * gamma[None, :, None] if gamma is not None else xhat.copy()
    if beta is not None:
        y += beta[None, :, None]
    return y, (xhat if need_xhat else None)


def batchnorm_backward(xp, dy, xhat, inv_std, gamma, batch_stats):
    dbeta = dy.sum(axis=(0, 2))
    dgamma = (dy * xhat).sum(axis=(0, 2))
    scale = inv_std if gamma is None else gamma * inv_std
    if not batch_stats:
        return dy * scale[None, :, None], dgamma, dbeta
    m = dy.shape[0] * dy.shape[2]
    dx = scale[None, :, None] * (dy - (dbeta / m)[None, :, None] - xhat * (dgamma / m)[None, :, None])
    return dx.astype(dy.dtype, copy=False), dgamma, dbeta


# --------------------------------------------------------------------------
# Implicit-GEMM convolution: a NumPy/CuPy mirror of the operand loaders and
# epilogues of csrc/cuda/conv.cu.  Every element is found by the same index
# arithmetic the kernels use (decode k into (c, kh, kw) or (o, kh, kw), a
# pixel into (n, h, w), the stride-divisibility test of backward-data, the
# split-K ranges of backward-weight), vectorised over whole index grids, so
# that the arithmetic is proven on the CPU against PyTorch and im2col.
# --------------------------------------------------------------------------

IMPLICIT_BK = 8  # the SIMT core's k-slice: split-K ranges are multiples of it


def _implicit_sizes(g, o, groups):
    cg, og = g.c // groups, o // groups
    return cg, og, g.kh * g.kw


def implicit_conv_forward(xp, x, w, bias, g, groups):
    """y[n, g*Og + o, p] = Σ_k W_g[o, k] col_g[k, (n, p)] + b: conv.cu's forward."""
    o = w.shape[0]
    cg, og, kk = _implicit_sizes(g, o, groups)
    p = g.oh * g.ow
    k = xp.arange(cg * kk)[:, None]  # rows of col_g: (c, kh, kw)
    q = xp.arange(g.n * p)[None, :]  # columns: output pixels (n, oh, ow)
    c, r = k // kk, k % kk
    n, pp = q // p, q % p
    ih = (pp // g.ow) * g.sh - g.pt + (r // g.kw) * g.dh
    iw = (pp % g.ow) * g.sw - g.pl + (r % g.kw) * g.dw
    inside = (ih >= 0) & (ih < g.h) & (iw >= 0) & (iw < g.w)
    y = xp.empty((g.n, o, p), dtype=x.dtype)
    for gi in range(groups):
        xg = x[:, gi * cg:(gi + 1) * cg]
        col = xp.where(inside, xg[n, c, xp.clip(ih, 0, g.h - 1), xp.clip(iw, 0, g.w - 1)], 0)
        acc = w[gi * og:(gi + 1) * og].reshape(og, -1) @ col  # (Og, N*P)
        if bias is not None:
            acc = acc + bias[gi * og:(gi + 1) * og, None]
        y[:, gi * og:(gi + 1) * og] = acc.reshape(og, g.n, p).transpose(1, 0, 2)
    return y.reshape(g.n, o, g.oh, g.ow)


def implicit_data_phase(r, size, pad, kernel, stride, dil):
    """One axis of backward-data's stride phase r, as conv.cu's phase_axis:
    the input positions ``first + j*stride`` (j < count) whose ``pos + pad``
    is r modulo the stride, the taps ``k0 + i*kstep`` (i < kcount) with
    ``tap*dil`` ≡ r, and the output position ``base + j - (t0 + i*tstep)``
    where input j and tap i meet."""
    first = (r - pad) % stride
    count = -(-(size - first) // stride) if first < size else 0
    kstep = stride // math.gcd(stride, dil)
    k0 = next((k for k in range(min(kernel, kstep)) if (k * dil) % stride == r), None)
    kcount = 0 if k0 is None else -(-(kernel - k0) // kstep)
    k0 = k0 or 0
    return dict(first=first, count=count, k0=k0, kstep=kstep, kcount=kcount,
                base=(first + pad - r) // stride, t0=(k0 * dil - r) // stride, tstep=kstep * dil // stride)


def implicit_conv_backward_data(xp, dy, w, g, groups):
    """dx[n, g*Cg + c, ih, iw] = Σ_{(o,kh,kw)} W[g*Og + o, c, kh, kw] dy[n, o, oh, ow] over
    the window positions that land on an output pixel: conv.cu's backward-data,
    one dense problem per stride phase of the input pixels (implicit_data_phase)."""
    o = w.shape[0]
    cg, og, kk = _implicit_sizes(g, o, groups)
    dx = xp.zeros((g.n, g.c, g.h, g.w), dtype=dy.dtype)
    for phase in range(g.sh * g.sw):
        ph = implicit_data_phase(phase // g.sw, g.h, g.pt, g.kh, g.sh, g.dh)
        pw = implicit_data_phase(phase % g.sw, g.w, g.pl, g.kw, g.sw, g.dw)
        hw, taps = ph["count"] * pw["count"], ph["kcount"] * pw["kcount"]
        if hw == 0:
            continue
        ih = ph["first"] + xp.arange(ph["count"]) * g.sh
        iw = pw["first"] + xp.arange(pw["count"]) * g.sw
        if taps == 0:  # no tap reaches these pixels: their gradient is 0
            dx[:, :, ih[:, None], iw[None, :]] = 0
            continue
        k = xp.arange(og * taps)[:, None]  # (o, i, j)
        q = xp.arange(g.n * hw)[None, :]  # this phase's input pixels (n, jh, jw)
        oc, r = k // taps, k % taps
        ti, tj = r // pw["kcount"], r % pw["kcount"]
        n, pp = q // hw, q % hw
        oh = ph["base"] + pp // pw["count"] - (ph["t0"] + ti * ph["tstep"])
        ow = pw["base"] + pp % pw["count"] - (pw["t0"] + tj * pw["tstep"])
        lands = (oh >= 0) & (oh < g.oh) & (ow >= 0) & (ow < g.ow)
        kh = ph["k0"] + xp.arange(ph["kcount"]) * ph["kstep"]
        kw = pw["k0"] + xp.arange(pw["kcount"]) * pw["kstep"]
        for gi in range(groups):
            dyg = dy[:, gi * og:(gi + 1) * og]
            b = xp.where(lands, dyg[n, oc, xp.clip(oh, 0, g.oh - 1), xp.clip(ow, 0, g.ow - 1)], 0)  # (Og*taps, N*hw)
            wg = w[gi * og:(gi + 1) * og][:, :, kh[:, None], kw[None, :]]  # (Og, Cg, kcount_h, kcount_w)
            a = wg.reshape(og, cg, taps).transpose(1, 0, 2).reshape(cg, og * taps)  # A[c, (o, i, j)]
            part = (a @ b).reshape(cg, g.n, ph["count"], pw["count"]).transpose(1, 0, 2, 3)
            dx[:, gi * cg:(gi + 1) * cg, ih[:, None], iw[None, :]] = part
    return dx


def implicit_split_ranges(q_total, splits):
    """The pixel ranges [begin, end) of backward-weight's splits, each a
    whole number of k-slices (some may be empty), as conv.cu cuts them."""
    slices = -(-q_total // IMPLICIT_BK)
    chunk = -(-slices // splits) * IMPLICIT_BK
    return [(min(s * chunk, q_total), min(q_total, (s + 1) * chunk)) for s in range(splits)]


def implicit_conv_backward_weight(xp, dy, x, g, o, groups, splits=1):
    """dW_g[o, k] = Σ_q dy_g[o, q] col_g[k, q], the reduction over pixels q
    cut into ``splits`` ranges whose float32 partial sums are added in split
    order: conv.cu's backward-weight."""
    cg, og, kk = _implicit_sizes(g, o, groups)
    p = g.oh * g.ow
    k = xp.arange(cg * kk)[:, None]
    q = xp.arange(g.n * p)[None, :]
    c, r = k // kk, k % kk
    n, pp = q // p, q % p
    ih = (pp // g.ow) * g.sh - g.pt + (r // g.kw) * g.dh
    iw = (pp % g.ow) * g.sw - g.pl + (r % g.kw) * g.dw
    inside = (ih >= 0) & (ih < g.h) & (iw >= 0) & (iw < g.w)
    acc_dtype = np.float64 if dy.dtype == np.float64 else np.float32
    dw = xp.zeros((o, cg * kk), dtype=acc_dtype)
    ranges = implicit_split_ranges(g.n * p, splits)
    for gi in range(groups):
        col = xp.where(inside, x[:, gi * cg:(gi + 1) * cg][n, c, xp.clip(ih, 0, g.h - 1), xp.clip(iw, 0, g.w - 1)], 0)
        a = dy[:, gi * og:(gi + 1) * og].reshape(g.n, og, p).transpose(1, 0, 2).reshape(og, -1)  # A[o, (n, p)]
        for begin, end in ranges:
            dw[gi * og:(gi + 1) * og] += (a[:, begin:end].astype(acc_dtype) @ col[:, begin:end].T.astype(acc_dtype))
    return dw.astype(dy.dtype).reshape(o, cg, g.kh, g.kw)
