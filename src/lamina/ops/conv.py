"""Convolution and pooling: im2col + GEMM on both backends, C++ window kernels on the CPU.

The geometry of one window sweep is a :class:`Geometry`.  Layers build it
with :func:`geometry` after validating their input, then call the functions
here; each picks ``lamina._C`` for NumPy float32/float64 arrays and the
NumPy/CuPy reference otherwise (see :mod:`lamina.ops`).

Convolution as GEMM, with P = OH*OW, K = C/G*KH*KW and G groups:

    col = im2col(x)                                  (G*K, N*P)
    Y_g = W_g @ col_g                                (O/G, N*P), then (N, O, P) + b
    dW_g = dY_g @ col_gᵀ                             (O/G, K)
    dcol_g = W_gᵀ @ dY_g,  dx = col2im(dcol)         (N, C, H, W)
    db = Σ_{n,p} dy

The GEMMs run on NumPy's BLAS (cuBLAS through CuPy on the GPU).

Memory.  col is the largest array of a CNN step (KH*KW times the input).
On the CPU it comes from a pool of work buffers (:func:`take_workspace`) and
goes back to it when its backward is done (or at once under no_grad), and
dcol, which lives only inside :func:`conv2d_backward`, is written into a
per-thread scratch buffer.  Both save a fresh allocation, whose page faults
cost about as much as the im2col itself (csrc/NOTES.md), and the pool holds
no more than the most cols that were ever alive at once, which gradient
checkpointing keeps small.  :func:`release_workspace` frees both.
(CuPy has a memory pool of its own.)
"""

import threading
from typing import NamedTuple

import numpy as np

from .. import backend
from ..errors import warn_once
from . import _addr, _contiguous, _name, _cpu_kernel, _cuda_kernel, _ext, _sm_count, _stream, float32_on_cpu, matmul, reference, tuning


class Geometry(NamedTuple):
    """Input (n, c, h, w), kernel (kh, kw), stride (sh, sw), padding top/left
    (pt, pl), dilation (dh, dw), output (oh, ow).  The bottom/right padding
    is implied by the output size."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    dh: int
    dw: int
    oh: int
    ow: int


def output_size(size, kernel, stride, pad_before, pad_after, dilation):
    """floor((size + pads - dilation*(kernel-1) - 1) / stride) + 1 (may be < 1)."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def geometry(x_shape, kernel, stride, padding, dilation=(1, 1)):
    """Geometry of sweeping a (kh, kw) window over x (N, C, H, W); padding is
    (top, bottom, left, right).  The caller checks that oh, ow >= 1."""
    n, c, h, w = (int(s) for s in x_shape)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = padding
    oh = output_size(h, kh, sh, pt, pb, dh)
    ow = output_size(w, kw, sw, pl, pr, dw)
    return Geometry(n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)


# --------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------


@float32_on_cpu
def im2col(x, g, pooled=False):
    """x (N, C, H, W) -> col (C*KH*KW, N*OH*OW), zero where a window reads padding.

    ``pooled``: write into a buffer from :func:`take_workspace` (the caller
    gives it back with :func:`give_workspace` when done).
    """
    xp = backend.get_array_module(x)
    shape = (g.c * g.kh * g.kw, g.n * g.oh * g.ow)
    if xp is np and (mod := _cpu_kernel("im2col", x)) is not None:
        (x,) = _contiguous(np, x)
        col = take_workspace(shape, x.dtype) if pooled else np.empty(shape, dtype=x.dtype)
        mod.im2col(_addr(col), _addr(x), g, _name(x.dtype))
        return col
    return reference.im2col(xp, x, g)


_pool_lock = threading.Lock()
_pool = {}  # (shape, dtype) -> [free NumPy arrays]


def take_workspace(shape, dtype):
    """A NumPy array of ``shape`` and ``dtype`` (contents garbage), reused from
    the pool when one of that size was given back."""
    key = (tuple(shape), np.dtype(dtype).str)
    with _pool_lock:
        free = _pool.get(key)
        if free:
            return free.pop()
    return np.empty(shape, dtype=dtype)


def give_workspace(a):
    """Return an array to the pool.  Only for arrays nothing reads any more."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.base is None:
        with _pool_lock:
            _pool.setdefault((a.shape, a.dtype.str), []).append(a)


def workspace_bytes():
    """Bytes held by the pool of free work buffers and this thread's scratch buffer."""
    with _pool_lock:
        pooled = sum(a.nbytes for free in _pool.values() for a in free)
    buf = getattr(_scratch, "buf", None)
    return pooled + (0 if buf is None else buf.nbytes)


def release_workspace():
    """Free the pooled work buffers and this thread's scratch buffer."""
    with _pool_lock:
        _pool.clear()
    _scratch.buf = None


_scratch = threading.local()


def _scratch_array(shape, dtype):
    """A NumPy array of ``shape`` whose memory is reused from call to call on
    this thread (its contents are garbage).  Only for results that die before
    the function that asked for them returns."""
    dtype = np.dtype(dtype)
    need = int(np.prod(shape)) * dtype.itemsize
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < need:
        buf = _scratch.buf = np.empty(need, dtype=np.uint8)
    return buf[:need].view(dtype).reshape(shape)



@float32_on_cpu
def col2im(dcol, g):
    """The adjoint of :func:`im2col`: dx (N, C, H, W), summing overlapping windows."""
    xp = backend.get_array_module(dcol)
    if xp is np and (mod := _cpu_kernel("col2im", dcol)) is not None:
        (dcol,) = _contiguous(np, dcol)
        dx = np.empty((g.n, g.c, g.h, g.w), dtype=dcol.dtype)
        mod.col2im(_addr(dx), _addr(dcol), g, _name(dcol.dtype))
        return dx
    return reference.col2im(xp, dcol, g)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------


@float32_on_cpu
def channels_to_batch_major(y, bias, n):
    """(C, N*P) GEMM output -> (N, C, P), plus bias[c] when bias is not None."""
    xp = backend.get_array_module(y)
    c, p = y.shape[0], y.shape[1] // n
    if xp is np and (mod := _cpu_kernel("channels_to_batch_major", y)) is not None:
        (y,) = _contiguous(np, y)
        out = np.empty((n, c, p), dtype=y.dtype)
        mod.channels_to_batch_major(_addr(out), _addr(y), 0 if bias is None else _addr(bias), n, c, p, _name(y.dtype))
        return out
    return reference.channels_to_batch_major(xp, y, bias, n)


@float32_on_cpu
def batch_to_channels_major(dy, need_sums=True):
    """(N, C, P) -> ((C, N*P), per-channel sums (C,) or None)."""
    xp = backend.get_array_module(dy)
    n, c, p = dy.shape
    if xp is np and (mod := _cpu_kernel("batch_to_channels_major", dy)) is not None:
        (dy,) = _contiguous(np, dy)
        out = np.empty((c, n * p), dtype=dy.dtype)
        sums = np.empty(c, dtype=dy.dtype) if need_sums else None
        mod.batch_to_channels_major(_addr(out), 0 if sums is None else _addr(sums), _addr(dy), n, c, p, _name(dy.dtype))
        return out, sums
    return reference.batch_to_channels_major(xp, dy, need_sums)


def conv2d_forward(x, weight, bias, g, groups, keep_col=True):
    """y (N, O, OH, OW) and the col matrix that backward needs (None, and
    col's buffer back in the pool, unless ``keep_col``).

    x (N, C, H, W), weight (O, C/G, KH, KW), bias (O,) or None.
    """
    o = weight.shape[0]
    col = im2col(x, g, pooled=True)  # (C*KH*KW, N*P)
    if groups == 1:
        y = matmul(weight.reshape(o, -1), col)  # (O, N*P)
    else:
        k = col.shape[0] // groups
        y = matmul(weight.reshape(groups, o // groups, k), col.reshape(groups, k, -1))  # (G, O/G, N*P)
    y = channels_to_batch_major(y.reshape(o, -1), bias, g.n)
    if not keep_col:
        give_workspace(col)
        col = None
    return y.reshape(g.n, o, g.oh, g.ow), col


def conv2d_backward(dy, col, weight, g, groups, need_dx=True):
    """(dx, dweight, dbias) of :func:`conv2d_forward`; dx is None unless
    need_dx.  Gives col back to the pool: it is dead after this."""
    xp = backend.get_array_module(dy)
    o = weight.shape[0]
    dy_t, dbias = batch_to_channels_major(dy.reshape(g.n, o, -1))  # (O, N*P), (O,)
    k = col.shape[0] // groups
    dcol = None
    if need_dx:
        dcol = _scratch_array(col.shape, col.dtype) if xp is np else xp.empty_like(col)
    if groups == 1:
        dweight = matmul(dy_t, col.T).reshape(weight.shape)
        if need_dx:
            matmul(weight.reshape(o, -1).T, dy_t, out=dcol)
    else:
        dy_g = dy_t.reshape(groups, o // groups, -1)
        col_g = col.reshape(groups, k, -1)
        dweight = matmul(dy_g, col_g.transpose(0, 2, 1)).reshape(weight.shape)
        if need_dx:
            matmul(weight.reshape(groups, o // groups, k).transpose(0, 2, 1), dy_g, out=dcol.reshape(groups, k, -1))
    give_workspace(col)
    dx = col2im(dcol, g) if need_dx else None
    return dx, dweight, dbias


# --------------------------------------------------------------------------
# without a col matrix: which kernel, and the calls that hide the backend
# --------------------------------------------------------------------------

_CPU_CONV_CHOICES = ("direct", "im2col")
_cpu_conv = "direct"


def cpu_conv(name=None):
    """Choose how stride-1 convolutions of NumPy arrays run:

    * ``"direct"`` (the default): lamina's direct kernel (csrc/cpu/conv_direct.cpp,
      AVX2 + FMA): each image's input, zero-padded, stays in cache and the
      kernel reads its windows in place.  No col matrix, so backward keeps
      only the input (KH·KW times less activation memory) and the memory
      traffic of writing and reading col is gone;
    * ``"im2col"``: im2col + NumPy's BLAS, the reference the direct kernel is
      measured against (benchmarks/cpu_kernels.py).

    Strided convolutions, and padding wider than the dilated kernel, always
    run on im2col.  Returns the previous choice; ``None`` only reads it.
    """
    global _cpu_conv
    if name is None:
        return _cpu_conv
    if name not in _CPU_CONV_CHOICES:
        raise ValueError(f"cpu_conv: expected one of {_CPU_CONV_CHOICES}, received {name!r}")
    previous, _cpu_conv = _cpu_conv, name
    return previous


def _direct_ready(x, weight, g):
    """True when lamina's direct CPU kernel takes this convolution (announced
    once when it was chosen but the CPU lacks AVX2 or FMA)."""
    if _cpu_conv != "direct" or not isinstance(x, np.ndarray) or x.dtype != weight.dtype:
        return False
    mod = _ext.cpu_module()
    if mod is None:
        return False  # announced by the im2col kernels' own lookup
    if not hasattr(mod, "conv_direct_forward"):
        warn_once(
            "cpu conv direct missing",
            "lamina._C was built without the direct convolution kernel (an older build); stride-1 convolutions run "
            "on im2col + BLAS. Reinstall lamina to rebuild it",
        )
        return False
    if not mod.conv_direct_geometry_ok(tuple(g)):
        return False
    if not _direct_supported(mod):
        warn_once(
            "cpu conv direct",
            "lamina's direct convolution kernel needs a CPU with AVX2 and FMA; this one lacks them, so "
            "stride-1 convolutions run on im2col + BLAS (slower, and col is cached for backward)",
        )
        return False
    return x.dtype in _DIRECT_DTYPES or backend.is_low_precision(x.dtype)


_DIRECT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_DIRECT_SUPPORTED = []


def _direct_supported(mod):
    if not _DIRECT_SUPPORTED:
        _DIRECT_SUPPORTED.append(bool(mod.conv_direct_supported()))
    return _DIRECT_SUPPORTED[0]


def col_free(x, weight, g):
    """True when this convolution runs without a col matrix, so that backward
    needs only the input x: on lamina's implicit-GEMM CUDA kernels
    (``use_kernels("lamina")``) or on the direct CPU kernel (:func:`cpu_conv`).
    Otherwise it runs as im2col + GEMM (:func:`conv2d_forward`)."""
    if backend.is_cupy_array(x):
        return implicit_gemm_ready(x, weight)
    return _direct_ready(x, weight, g)


def conv2d_forward_col_free(x, weight, bias, g, groups):
    """y (N, O, OH, OW) = conv(x, weight) + bias, when :func:`col_free`."""
    if backend.is_cupy_array(x):
        return conv2d_forward_implicit(x, weight, bias, g, groups)
    return conv2d_forward_direct(x, weight, bias, g, groups)


def conv2d_backward_col_free(dy, x, weight, g, groups, need_dx=True, need_bias=True):
    """(dx, dweight, dbias) of :func:`conv2d_forward_col_free` from the input
    x; dx is None unless need_dx, dbias may be None unless need_bias (the
    CPU kernel computes it in the weight gradient's pass, the GPU in a
    reduction of its own)."""
    if backend.is_cupy_array(dy):
        return conv2d_backward_implicit(dy, x, weight, g, groups, need_dx=need_dx, need_bias=need_bias)
    return conv2d_backward_direct(dy, x, weight, g, groups, need_dx=need_dx)


def conv2d_backward_data(dy, weight, g, groups):
    """dx (N, C, H, W) of a convolution with geometry g from its output
    gradient dy (N, O, OH, OW) alone: no weight gradient, no input.  This is
    a transposed convolution's forward (:class:`lamina.ConvTranspose2D`).
    Runs on the direct (CPU) or implicit-GEMM (CUDA) backward-data kernel
    where :func:`col_free`, else as one GEMM per group and col2im."""
    if col_free(dy, weight, g):
        if backend.is_cupy_array(dy):
            return _implicit_backward_data(dy, weight, g, groups)
        return _direct_backward_data(dy, weight, g, groups)
    return _gemm_backward_data(dy, weight, g, groups)


@float32_on_cpu
def _gemm_backward_data(dy, weight, g, groups):
    o = weight.shape[0]
    dy_t, _ = batch_to_channels_major(dy.reshape(g.n, o, -1), need_sums=False)  # (O, N*P)
    if groups == 1:
        dcol = matmul(weight.reshape(o, -1).T, dy_t)
    else:
        k = (g.c // groups) * g.kh * g.kw
        dcol = matmul(weight.reshape(groups, o // groups, k).transpose(0, 2, 1), dy_t.reshape(groups, o // groups, -1))
    return col2im(dcol.reshape(-1, g.n * g.oh * g.ow), g)


# --------------------------------------------------------------------------
# direct stride-1 convolution on the CPU (csrc/cpu/conv_direct.cpp)
# --------------------------------------------------------------------------


@float32_on_cpu
def conv2d_forward_direct(x, weight, bias, g, groups):
    """y (N, O, OH, OW) = conv(x, weight) + bias on the direct CPU kernel."""
    mod = _ext.cpu_module()
    o = weight.shape[0]
    x, weight = _contiguous(np, x, weight)
    if bias is not None:
        (bias,) = _contiguous(np, bias.astype(x.dtype, copy=False))
    y = np.empty((g.n, o, g.oh, g.ow), dtype=x.dtype)
    mod.conv_direct_forward(_addr(y), _addr(x), _addr(weight), 0 if bias is None else _addr(bias), tuple(g), o,
                            groups, _name(x.dtype))
    return y


@float32_on_cpu
def conv2d_backward_direct(dy, x, weight, g, groups, need_dx=True):
    """(dx, dweight, dbias) on the direct CPU kernel; dx is None unless need_dx."""
    mod = _ext.cpu_module()
    o = weight.shape[0]
    dy, x, weight = _contiguous(np, dy, x, weight)
    dx = _direct_backward_data(dy, weight, g, groups) if need_dx else None
    dweight = np.empty(weight.shape, dtype=dy.dtype)
    dbias = np.empty(o, dtype=dy.dtype)
    mod.conv_direct_backward_weight(_addr(dweight), _addr(dbias), _addr(dy), _addr(x), tuple(g), o, groups,
                                    _name(dy.dtype))
    return dx, dweight, dbias


@float32_on_cpu
def _direct_backward_data(dy, weight, g, groups):
    mod = _ext.cpu_module()
    dy, weight = _contiguous(np, dy, weight)
    dx = np.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
    mod.conv_direct_backward_data(_addr(dx), _addr(dy), _addr(weight), tuple(g), weight.shape[0], groups,
                                  _name(dy.dtype))
    return dx


# --------------------------------------------------------------------------
# implicit GEMM on the GPU (csrc/cuda/conv.cu): no col matrix at all
# --------------------------------------------------------------------------

_IMPLICIT_DTYPES = ("float32", "float16", "bfloat16")
_TILE = 128  # the SIMT core's block tile (csrc/cuda/simt_gemm.cuh)


def implicit_gemm_ready(x, weight):
    """True when a convolution of CuPy arrays x and weight should run on
    lamina's implicit-GEMM kernels (chosen with
    :func:`lamina.backend.use_kernels`).  When they were chosen but cannot
    take these arrays, says so once.  ``"auto"`` chooses them for every
    convolution they can take."""
    choice = backend.kernels()
    if choice == "cupy" or not backend.is_cupy_array(x):
        return False
    if x.dtype == weight.dtype and _name(x.dtype) in _IMPLICIT_DTYPES:
        return _cuda_kernel("conv2d_forward", x) is not None
    if choice == "auto":
        return False
    warn_once(
        f"lamina conv {x.dtype} {weight.dtype}",
        f"use_kernels('lamina'): lamina's implicit-GEMM convolution takes float32, float16 or bfloat16 input and "
        f"weight of one dtype, received {x.dtype} and {weight.dtype}; this convolution runs on im2col + cuBLAS",
    )
    return False


def backward_weight_splits(g, o, groups, sm_count, wgmma_tile=0):
    """How many ranges backward-weight cuts its reduction over the N*OH*OW
    pixels into: enough blocks for four per multiprocessor when the weight
    gradient itself is only a few tiles (ResNet's 16-channel stage: one),
    but never ranges of fewer than 128 pixels.  Fitted to the H100 sweep in
    benchmarks/results/kernels_*.json (``split_k_sweeps``): two blocks per SM
    and 512 pixels left ResNet-20's 64-channel stage and ResNet-50's
    256-channel layer at 1.8 and 1.2 times their best time.

    ``wgmma_tile``: the pass runs on wgmma with this channel tile
    (``conv2d_wgmma_tile``): 128, the 128 x 128 kernel, one block per
    multiprocessor; 16, 32 or 64, the narrow kernels (128 columns of dW by
    that many output channels), two.  Pixels go in slices of 64, and a second
    wave is a whole block's time, so the rule is the forward's
    (conv2d_forward_splits in csrc/cuda/conv.cu): the fewest splits, ranges
    of at least 512 pixels, whose blocks fill 85% of the waves they take,
    else the count that fills them best.  Not yet fitted to a measurement."""
    k = (g.c // groups) * g.kh * g.kw
    rows = wgmma_tile or _TILE
    tiles = -(-(o // groups) // rows) * -(-k // _TILE) * groups
    slots = sm_count * (0 if not wgmma_tile else 1 if wgmma_tile >= _TILE else 2)
    if tiles >= (slots or sm_count):
        return 1  # a wave of blocks already
    pixels = g.n * g.oh * g.ow
    if wgmma_tile:
        slices = -(-pixels // 64)
        most = min(256, pixels // 512, 65535 // groups)
        best, best_fill = 1, 0.0
        for sp in range(2, most + 1):
            per = -(-slices // sp)
            blocks = tiles * -(-slices // per)  # splits that get pixels
            fill = blocks / (-(-blocks // slots) * slots)
            if fill >= 0.85:
                return sp
            if fill > best_fill + 1e-9:
                best, best_fill = sp, fill
        return best
    want = -(-4 * sm_count // tiles)
    most = max(1, pixels // 128)
    return int(max(1, min(want, most, 65535 // groups)))


class _Workspace:
    """A pass's device workspace (``conv2d_workspace_size`` bytes: fp32
    partial sums of split-K plans, channels-last copies of 16-bit
    operands): one buffer, grown to the largest asked for, shared by the
    plans an autotuning call times one after another on one stream."""

    def __init__(self, cp):
        self.cp, self.buf = cp, None

    def address(self, nbytes):
        if nbytes == 0:
            return 0
        if self.buf is None or self.buf.size < nbytes:
            self.buf = self.cp.empty(nbytes, dtype=np.uint8)
        return _addr(self.buf)


def _tensor_cores(mod, dtype):
    return dtype != "float32" and mod.conv_tensor_cores()


def conv2d_forward_implicit(x, weight, bias, g, groups):
    """y (N, O, OH, OW) = conv(x, weight) + bias on lamina's implicit-GEMM kernel."""
    cp = backend.require_cuda()
    mod = _ext.cuda_module()
    o = weight.shape[0]
    x, weight = _contiguous(cp, x, weight)
    with x.device:
        if bias is not None:
            (bias,) = _contiguous(cp, bias.astype(x.dtype, copy=False))
        y = cp.empty((g.n, o, g.oh, g.ow), dtype=x.dtype)
        dtype, ws = _name(x.dtype), _Workspace(cp)
        args = (_addr(y), _addr(x), _addr(weight), 0 if bias is None else _addr(bias), tuple(g), o, groups, dtype,
                _stream(cp))

        def launcher(plan):
            n = mod.conv2d_workspace_size("forward", tuple(g), o, groups, dtype, plan.splits)
            return lambda: mod.conv2d_forward(*args, plan.splits, workspace=ws.address(n), workspace_bytes=n,
                                              rows=plan.rows, blocks=plan.blocks)

        # split-K only for grids short of a wave with a long reduction (the kernel's own rule:
        # csrc/cuda/conv.cu, conv2d_forward_splits), unless autotuning finds better
        rule = tuning.Plan(splits=mod.conv2d_forward_splits(tuple(g), o, groups, dtype))
        plan = tuning.choose(
            "conv2d_forward", (tuple(g), o, groups, dtype), rule,
            lambda: tuning.forward_candidates(o // groups, g.n * g.oh * g.ow, (g.c // groups) * g.kh * g.kw, groups,
                                              _sm_count(cp), _tensor_cores(mod, dtype)),
            launcher)
        launcher(plan)()
    return y


def conv2d_backward_implicit(dy, x, weight, g, groups, need_dx=True, need_bias=True):
    """(dx, dweight, dbias) of :func:`conv2d_forward_implicit` from the input
    x (no col matrix); dx is None unless need_dx, dbias None unless need_bias."""
    cp = backend.require_cuda()
    mod = _ext.cuda_module()
    o = weight.shape[0]
    dy, x, weight = _contiguous(cp, dy, x, weight)
    with dy.device:
        low = backend.is_low_precision(dy.dtype)
        dbias = dy.sum(axis=(0, 2, 3), dtype=np.float32 if low else None) if need_bias else None
        dx = _implicit_backward_data(dy, weight, g, groups) if need_dx else None
        dweight = cp.empty(weight.shape, dtype=dy.dtype)
        dtype, ws = _name(dy.dtype), _Workspace(cp)

        def launcher(plan):
            n = mod.conv2d_workspace_size("backward_weight", tuple(g), o, groups, dtype, plan.splits, dy=_addr(dy))
            return lambda: mod.conv2d_backward_weight(_addr(dweight), ws.address(n), n, _addr(dy), _addr(x), tuple(g),
                                                      o, groups, plan.splits, dtype, _stream(cp), plan.rows)

        tile = mod.conv2d_wgmma_tile("backward_weight", tuple(g), o, groups, dtype)
        if 0 < tile < _TILE and _addr(dy) % 16:
            # (a view of dy starting inside a 16-byte chunk; fresh CuPy arrays are 256-byte aligned)
            warn_once(
                "conv2d narrow wgmma dy alignment",
                f"lamina Conv2D backward-weight: dy {tuple(dy.shape)} starts {_addr(dy) % 16} bytes past a 16-byte "
                "boundary, so the narrow wgmma kernel (which reads dy's planes 16 bytes at a time) cannot take it: "
                "dy is copied to NHWC and the pass runs on the 128 x 128 kernel, slower for few channels",
            )
            tile = _TILE
        rule = tuning.Plan(splits=backward_weight_splits(g, o, groups, _sm_count(cp), tile))
        plan = tuning.choose(
            "conv2d_backward_weight", (tuple(g), o, groups, dtype), rule,
            lambda: tuning.backward_weight_candidates(o // groups, g.n * g.oh * g.ow, groups, rule.splits,
                                                      _tensor_cores(mod, dtype)),
            launcher)
        launcher(plan)()
    return dx, dweight, dbias


def _implicit_backward_data(dy, weight, g, groups):
    cp = backend.require_cuda()
    mod = _ext.cuda_module()
    dy, weight = _contiguous(cp, dy, weight)
    with dy.device:
        dx = cp.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
        dtype, o, ws = _name(dy.dtype), weight.shape[0], _Workspace(cp)
        n = mod.conv2d_workspace_size("backward_data", tuple(g), o, groups, dtype)

        def launcher(plan):
            return lambda: mod.conv2d_backward_data(_addr(dx), _addr(dy), _addr(weight), tuple(g), o, groups, dtype,
                                                    _stream(cp), plan.rows, plan.blocks, workspace=ws.address(n),
                                                    workspace_bytes=n)

        plan = tuning.choose(
            "conv2d_backward_data", (tuple(g), o, groups, dtype), tuning.Plan(),
            lambda: tuning.backward_data_candidates(g.c // groups, _tensor_cores(mod, dtype)), launcher)
        launcher(plan)()
    return dx


# --------------------------------------------------------------------------
# pooling (planes of x (N, C, H, W) pooled independently)
# --------------------------------------------------------------------------


def _undilated(g):
    """The C++ average-pooling kernels read windows without dilation (the
    average-pooling layers have none, as PyTorch's); a dilated geometry,
    which only a direct ops call can ask for, takes the reference.  Max
    pooling reads dilated windows in C++ and CUDA."""
    return g.dh == 1 and g.dw == 1


def _planes(g):
    """The geometry as the C++ pooling kernels read it: N*C planes."""
    return g._replace(n=g.n * g.c, c=1)


@float32_on_cpu
def maxpool2d_forward(x, g):
    """(y, idx): y (N, C, OH, OW), idx (N, C, OH, OW) int64 = ih*W + iw of each maximum."""
    xp = backend.get_array_module(x)
    if xp is np and (mod := _cpu_kernel("maxpool_forward", x)) is not None:
        (x,) = _contiguous(np, x)
        y = np.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
        idx = np.empty((g.n, g.c, g.oh, g.ow), dtype=np.int64)
        mod.maxpool_forward(_addr(y), _addr(idx), _addr(x), _planes(g), _name(x.dtype))
        return y, idx
    if xp is not np and (mod := _cuda_kernel("maxpool2d_forward", x)) is not None:  # one launch (csrc/cuda/pool.cu)
        (x,) = _contiguous(xp, x)
        with x.device:
            y = xp.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
            idx = xp.empty((g.n, g.c, g.oh, g.ow), dtype=np.int64)
            mod.maxpool2d_forward(_addr(y), _addr(idx), _addr(x), tuple(g), _name(x.dtype), _stream(xp))
        return y, idx
    return reference.maxpool_forward(xp, x, g)


@float32_on_cpu
def maxpool2d_backward(dy, idx, g):
    """dx (N, C, H, W): each dy added at its window's maximum."""
    xp = backend.get_array_module(dy, idx)
    if xp is np and (mod := _cpu_kernel("maxpool_backward", dy)) is not None:
        dy, idx = _contiguous(np, dy, idx)
        dx = np.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
        mod.maxpool_backward(_addr(dx), _addr(dy), _addr(idx), _planes(g), _name(dy.dtype))
        return dx
    if xp is not np and (mod := _cuda_kernel("maxpool2d_backward", dy)) is not None:  # one launch, no atomics
        dy, idx = _contiguous(xp, dy, idx)
        with dy.device:
            dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
            mod.maxpool2d_backward(_addr(dx), _addr(dy), _addr(idx), tuple(g), _name(dy.dtype), _stream(xp))
        return dx
    return reference.maxpool_backward(xp, dy, idx, g)


@float32_on_cpu
def avgpool2d_forward(x, g, count_include_pad=True):
    xp = backend.get_array_module(x)
    if xp is np and _undilated(g) and (mod := _cpu_kernel("avgpool_forward", x)) is not None:
        (x,) = _contiguous(np, x)
        y = np.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
        mod.avgpool_forward(_addr(y), _addr(x), _planes(g), bool(count_include_pad), _name(x.dtype))
        return y
    return reference.avgpool_forward(xp, x, g, count_include_pad)


@float32_on_cpu
def avgpool2d_backward(dy, g, count_include_pad=True):
    xp = backend.get_array_module(dy)
    if xp is np and _undilated(g) and (mod := _cpu_kernel("avgpool_backward", dy)) is not None:
        (dy,) = _contiguous(np, dy)
        dx = np.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
        mod.avgpool_backward(_addr(dx), _addr(dy), _planes(g), bool(count_include_pad), _name(dy.dtype))
        return dx
    return reference.avgpool_backward(xp, dy, g, count_include_pad)


def adaptive_maxpool2d_forward(x, oh, ow):
    """(y, idx), both (N, C, OH, OW): the maximum of each adaptive window
    (PyTorch's ``adaptive_max_pool2d``) and its index ih*W + iw (int64).
    Windows of unequal sizes are gathered and reduced by NumPy or CuPy, on
    both backends; there is no compiled kernel for them."""
    return reference.adaptive_maxpool_forward(backend.get_array_module(x), x, oh, ow)


def maxpool_scatter_backward(dy, idx, h, w):
    """dx (N, C, H, W): each dy (N, C, OH, OW) added at its index ih*W + iw,
    for windows of any shape (adaptive max pooling); a scatter-add."""
    return reference.scatter_add_planes(backend.get_array_module(dy, idx), dy, idx, h, w)


def max_unpool_forward(x, idx, size):
    """x, idx (N, C, L) -> (N, C, size): each x[n, c, l] written at idx[n, c, l], zeros elsewhere."""
    return reference.max_unpool_forward(backend.get_array_module(x, idx), x, idx, size)


def max_unpool_backward(dy, idx):
    """dx (N, C, L) = dy[n, c, idx[n, c, l]]."""
    return reference.max_unpool_backward(backend.get_array_module(dy, idx), dy, idx)
