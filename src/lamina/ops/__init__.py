"""The one dispatch point between layers and kernels.

Layers call these functions with NumPy or CuPy arrays and never branch on the
backend themselves.  Each function picks, in this order:

* CuPy arrays: lamina's CUDA kernel from ``lamina._C_cuda`` when built;
* NumPy arrays: lamina's C++ kernel from ``lamina._C`` when built and the
  dtype is one it has;
* otherwise the reference in :mod:`lamina.ops.reference`, announced once by
  a :class:`lamina.PerformanceWarning` when a compiled kernel was expected.

Where NumPy or CuPy already do the job well (GEMMs on NumPy's BLAS) the reference *is* the chosen path and nothing is announced.
"""

import contextlib
import functools

import numpy as np

from .. import backend
from ..errors import warn_once
from . import _ext, reference

_CPU_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CUDA_DTYPES = ("float32", "float64", "float16", "bfloat16")


# --------------------------------------------------------------------------
# how a call reaches a compiled kernel
# --------------------------------------------------------------------------


def _cpu_kernel(name, *arrays):
    """The ``lamina._C`` module if it can run ``name`` on these arrays, else None."""
    mod = _ext.cpu_module()
    if mod is None:
        warn_once(
            "no _C",
            f"lamina._C is not built ({_ext.import_error('_C')}); CPU kernels run on the slower NumPy "
            "references. Reinstall lamina with a C++ compiler to build it.",
        )
        return None
    if arrays[0].dtype not in _CPU_DTYPES:
        warn_once(
            f"_C {name} {arrays[0].dtype}",
            f"lamina._C.{name} has no {arrays[0].dtype} kernel; using the NumPy reference",
        )
        return None
    return mod if _one_dtype("_C", name, arrays) else None


_AVX2 = []  # whether lamina._C's float32 vector kernels run their AVX2 + FMA build (asked once)


def _vector_kernel(name, *arrays):
    """:func:`_cpu_kernel` for GELU, softmax, LayerNorm and the LSTM/GRU cells, which have an AVX2 +
    FMA build and a baseline (SSE2) one: on a CPU without AVX2 or FMA the
    baseline build runs, 2-3x slower, and a one-time warning says so."""
    mod = _cpu_kernel(name, *arrays)
    if mod is not None and arrays[0].dtype == np.float32:
        if not _AVX2:
            _AVX2.append(bool(getattr(mod, "cpu_has_avx2_fma", lambda: False)()))
        if not _AVX2[0]:
            warn_once(
                "cpu vector avx2",
                "this CPU lacks AVX2 or FMA (or lamina._C predates its AVX2 build): GELU, softmax, LayerNorm and the "
                "LSTM/GRU cells run "
                "on their baseline SSE2 build, about 2-3x slower",
            )
    return mod


def _cuda_kernel(name, *arrays):
    """The ``lamina._C_cuda`` module if it can run ``name`` on these arrays, else None."""
    mod = _ext.cuda_module()
    if mod is None:
        warn_once(
            "no _C_cuda",
            f"lamina._C_cuda is not built ({_ext.import_error('_C_cuda')}); GPU ops run on CuPy "
            "references instead of lamina's CUDA kernels. Reinstall lamina with nvcc on PATH to build it.",
        )
        return None
    if _name(arrays[0].dtype) not in _CUDA_DTYPES:
        warn_once(f"_C_cuda {name} {arrays[0].dtype}", f"lamina._C_cuda.{name} has no {arrays[0].dtype} kernel; using CuPy")
        return None
    return mod if _one_dtype("_C_cuda", name, arrays) else None


def _one_dtype(module, name, arrays):
    """True when the arrays (None skipped) share the first one's dtype, which
    the kernel reads them all in; else says once that ``name`` takes the
    reference (a kernel given two dtypes would read one of them as garbage)."""
    first = arrays[0].dtype
    for a in arrays[1:]:
        if a is not None and a.dtype != first:
            dtypes = ", ".join(str(b.dtype) for b in arrays if b is not None)
            warn_once(f"{module} {name} {dtypes}", f"lamina.{module}.{name} takes operands of one dtype, received "
                      f"{dtypes}; it runs on the {'CuPy' if module == '_C_cuda' else 'NumPy'} reference")
            return False
    return True


def float32_on_cpu(fn):
    """Run ``fn`` on float16/bfloat16 NumPy arrays by computing in float32.

    The CPU has no 16-bit kernels: the array arguments are widened to float32,
    ``fn`` runs on lamina's float32 kernels, and floating results are rounded
    back to the 16-bit dtype (integer results, such as max-pool indices, are
    left alone).  Storage, and so activation memory, stays 16-bit; the
    arithmetic is float32, as on a GPU's 16-bit units.  Announced once.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        low = None
        for a in args:  # a plain loop: on every kernel call, so the float32/64 case must cost little
            if isinstance(a, np.ndarray) and a.itemsize == 2 and backend.is_low_precision(a.dtype):
                low = a.dtype
                break
        if low is None:
            return fn(*args, **kwargs)
        warn_once(
            "cpu low precision",
            f"lamina computes {low} arrays on the CPU in float32 and rounds the results to {low} "
            "(16-bit storage and activation memory, no 16-bit speedup: the CPU has no 16-bit kernels)",
        )

        def widen(a):
            return a.astype(np.float32) if isinstance(a, np.ndarray) and backend.is_low_precision(a.dtype) else a

        def narrow(r):
            if isinstance(r, np.ndarray) and r.dtype == np.float32:
                return backend.narrow(r, low)
            if isinstance(r, tuple):
                return tuple(narrow(v) for v in r)
            return r

        return narrow(fn(*[widen(a) for a in args], **{k: widen(v) for k, v in kwargs.items()}))

    return wrapper


def _gemm_operand(x):
    """(C-contiguous array holding x's elements, whether x is its transpose, leading dimension)."""
    if x.flags.c_contiguous:
        return x, False, x.shape[1]
    if x.flags.f_contiguous:
        return x.T, True, x.shape[0]
    x = backend.require_cuda().ascontiguousarray(x)
    return x, False, x.shape[1]


_GEMM_DTYPES = ("float32", "float16", "bfloat16")


def _lamina_gemm(a, b):
    """True when a @ b should run on lamina's CUDA GEMM (see
    :func:`lamina.backend.use_kernels`).  When lamina's kernels were chosen
    outright but this product cannot use them (dtype, batched), says so once."""
    choice = backend.kernels()
    if choice == "cupy" or not backend.is_cupy_array(a):
        return False
    if a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and _name(a.dtype) in _GEMM_DTYPES:
        if choice == "auto" and not _auto_prefers_lamina(a, b):
            return False
        return _cuda_kernel("gemm", a) is not None
    if choice == "lamina":
        warn_once(
            f"lamina gemm {a.dtype} {a.ndim}x{b.ndim}",
            f"use_kernels('lamina'): lamina's CUDA GEMM takes 2-d float32, float16 or bfloat16 operands of one "
            f"dtype, received {a.dtype} {a.ndim}-d @ {b.dtype} {b.ndim}-d; this product runs on cuBLAS through CuPy",
        )
    return False


def _auto_prefers_lamina(a, b):
    """``use_kernels("auto")``'s choice for a 2-d product: lamina's GEMM for
    float32 products of at most one wave of 128 x 128 output tiles and for
    fp16/bf16 operands its tensor-core loads take whole; cuBLAS for the rest,
    except inside a CUDA-graph capture, which CuPy's cuBLAS calls cannot join."""
    if a.itemsize == 2:
        return _tensor_core_aligned(a, b) or _captured_on_lamina(a, b)
    tiles = -(-a.shape[0] // _GEMM_TILE) * -(-b.shape[1] // _GEMM_TILE)
    return tiles <= _sm_count(backend.require_cuda()) or _captured_on_lamina(a, b)


def _captured_on_lamina(a, b):
    """True inside a CUDA-graph capture, where cuBLAS through CuPy cannot
    run: the product takes lamina's GEMM although cuBLAS is faster for it,
    which is said once."""
    if not backend.stream_capturing():
        return False
    warn_once(
        "lamina gemm in capture",
        f"use_kernels('auto'): CuPy cannot capture cuBLAS calls, so inside this CUDA-graph capture a "
        f"{a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]} {a.dtype} product runs on lamina's GEMM, "
        f"which is slower than cuBLAS for such products (benchmarks/results/kernels_*.json)",
    )
    return True


def _tensor_core_aligned(a, b):
    """True when both operands of a 16-bit product are 16-byte aligned with
    leading dimensions a multiple of 8 elements, as the tensor-core GEMM's
    16-byte loads (TMA, cp.async) need."""
    for x in (a, b):
        ld = x.shape[1] if x.flags.c_contiguous else x.shape[0] if x.flags.f_contiguous else None
        if ld is None or ld % 8 or x.data.ptr % 16:
            return False
    return True


GEMM_ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh")
_GEMM_TILE = 128  # the SIMT GEMM's block tile (csrc/cuda/simt_gemm.cuh)


def gemm_splits(m, n, k, sm_count):
    """How many ranges the fp32 GEMM cuts its k reduction into (split-K):
    enough blocks for two per multiprocessor when the output is only a few
    128 x 128 tiles (Dense's training shapes: batch 128 is one row of tiles),
    but never ranges of fewer than 32 of k, nor more than 16 ranges.  1 for
    everything else.  Fitted to the H100 sweep (``split_k_sweeps`` in
    benchmarks/results/kernels_*.json): the best counts for 128x512x784,
    128x784x512 and 512x784x128 were 16, 8 and 4, i.e. ranges of 32-64;
    ranges of at least 128 chose 6, 4 and 1, at 1.38, 1.25 and 1.46 times
    the best time.  This rule picks 16, 16 and 4 (1.00, 1.03, 1.00)."""
    tiles = -(-m // _GEMM_TILE) * -(-n // _GEMM_TILE)
    if tiles >= sm_count:
        return 1
    want = -(-2 * sm_count // tiles)
    return int(max(1, min(want, k // 32, 16)))


def gemm_cuda(a, b, bias=None, act="none", out=None, out_dtype=None, keep_preactivation=False):
    """act(a @ b + bias) on lamina's CUDA GEMM: a (M, K), b (K, N) CuPy arrays
    of one dtype (float32 on CUDA cores; float16/bfloat16 on tensor cores
    with float32 accumulation), either of them possibly a transposed view
    (no copy).  The result has ``out_dtype`` (the operands' dtype, or float32
    for 16-bit operands).  With ``keep_preactivation`` returns (y, z), z the
    pre-activation a @ b + bias that the activation's backward needs."""
    cp = backend.require_cuda()
    mod = _ext.cuda_module()
    if act not in GEMM_ACTIVATIONS:
        raise ValueError(f"gemm_cuda: expected act in {GEMM_ACTIVATIONS}, received {act!r}")
    out_dtype = np.dtype(a.dtype if out_dtype is None else out_dtype)
    m, k = a.shape
    n = b.shape[1]
    A, ta, lda = _gemm_operand(a)
    B, tb, ldb = _gemm_operand(b)
    if a.dtype.itemsize == 2 and any(ld % 8 or X.data.ptr % 16 for X, ld in ((A, lda), (B, ldb))):
        warn_once(
            "lamina gemm 16-bit unaligned",
            f"lamina's tensor-core GEMM reads operands 16 bytes at a time (TMA on compute capability 9.0, cp.async "
            f"elsewhere); a leading dimension here is not a multiple of 8 elements (lda {lda}, ldb {ldb}) or an "
            f"operand is not 16-byte aligned, so this product runs with scalar loads, several times slower. "
            f"Pad the feature dimensions to a multiple of 8",
        )
    with a.device:
        c = out if out is not None else cp.empty((m, n), dtype=out_dtype)
        z = cp.empty((m, n), dtype=out_dtype) if keep_preactivation else None
        if bias is not None:
            (bias,) = _contiguous(cp, bias.astype(a.dtype, copy=False))
        splits, workspace = 1, None
        if a.dtype == np.float32 and out_dtype == np.float32:
            splits = gemm_splits(m, n, k, _sm_count(cp))
            workspace = cp.empty(splits * m * n, dtype=np.float32) if splits > 1 else None
        mod.gemm(_addr(c), 0 if z is None else _addr(z), _addr(A), _addr(B), 0 if bias is None else _addr(bias),
                 m, n, k, lda, ldb, n, ta, tb, act, _name(a.dtype), _name(out_dtype), _stream(cp), splits,
                 workspace=0 if workspace is None else _addr(workspace),
                 workspace_bytes=0 if workspace is None else workspace.nbytes)
    return (c, z) if keep_preactivation else c


def tensor_core_gemm(variant=None):
    """The fp16/bf16 GEMM kernel of ``use_kernels('lamina')``: ``"auto"`` (the
    default: wgmma fed by TMA on compute capability 9.0 when the operands
    allow it, else mma.sync), ``"mma"`` or ``"wgmma"`` (an error where it
    cannot run).  Returns the previous choice; ``None`` only reads it."""
    mod = _ext.cuda_module()
    if mod is None:
        raise RuntimeError(f"tensor_core_gemm: lamina._C_cuda is not built ({_ext.import_error('_C_cuda')})")
    return mod.tensor_core_gemm(variant)


def matmul(a, b, out=None):
    """a @ b; for float16/bfloat16 on the CPU, float32 products and sums
    rounded once at the end (as tensor cores do), since NumPy has no 16-bit
    BLAS; on CuPy float32 matrices, lamina's GEMM when chosen with
    :func:`lamina.backend.use_kernels`."""
    if type(a) is np.ndarray and type(b) is np.ndarray and not (a.itemsize == 2 and backend.is_low_precision(a.dtype)):
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)  # the common case, first
    xp = backend.get_array_module(a, b)
    if xp is not np and _lamina_gemm(a, b) and (out is None or out.flags.c_contiguous):
        return gemm_cuda(a, b, out=out)
    if backend.is_low_precision(a.dtype) and (xp is np or (a.dtype.name == "bfloat16" and max(a.ndim, b.ndim) > 2)):
        if xp is not np:
            warn_once(
                "cupy batched bfloat16 matmul",
                f"CuPy has no batched bfloat16 matrix product ({a.shape} @ {b.shape} here); lamina computes batched "
                f"bfloat16 products in float32 and rounds the result to bfloat16, which moves twice the bytes",
            )
        r = xp.matmul(a.astype(np.float32), b.astype(np.float32))
        if out is None:
            return backend.narrow(r, a.dtype)
        out[...] = backend.narrow(r, out.dtype)
        return out
    return xp.matmul(a, b, out=out) if out is not None else xp.matmul(a, b)


def _sm_count(cp):
    """Multiprocessors of CuPy's current device (cached per device)."""
    dev = cp.cuda.Device()
    count = _SM_COUNTS.get(dev.id)
    if count is None:
        count = _SM_COUNTS[dev.id] = int(dev.attributes["MultiProcessorCount"])
    return count


_SM_COUNTS = {}


_DTYPE_NAMES = {}


def _name(dtype):
    """``dtype.name``, cached: NumPy builds that string anew on each access
    (~5 µs), and every kernel call passes one."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


def _contiguous(xp, *arrays):
    return [xp.ascontiguousarray(a) for a in arrays]


def _addr(a):
    """Raw address of an array's first element."""
    if type(a) is np.ndarray:
        return _numpy_addr(a)
    return a.data.ptr if backend.is_cupy_array(a) else a.ctypes.data


def _numpy_addr(a):
    """``a.ctypes.data``, through ``lamina._C.data_ptr`` (20x faster:
    ``ctypes.data`` builds the array's whole ``__array_interface__``, and
    every kernel call passes two or three addresses).  Replaces itself with
    the function :func:`_numpy_addr_function` picks on the first call."""
    global _numpy_addr
    _numpy_addr = _numpy_addr_function()
    return _numpy_addr(a)


def _numpy_addr_function():
    mod = _ext.cpu_module()
    if mod is not None and hasattr(mod, "data_ptr"):
        return mod.data_ptr
    if mod is not None:  # (without lamina._C, _cpu_kernel has already said so)
        warn_once(
            "no _C.data_ptr",
            "lamina._C predates data_ptr (a stale build): kernel calls read array addresses through "
            "ndarray.ctypes.data, ~1.5 us each instead of 0.07 us. Reinstall lamina to rebuild it.",
        )
    return _ctypes_addr


def _ctypes_addr(a):
    return a.ctypes.data


def _stream(xp):
    return xp.cuda.get_current_stream().ptr


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------


@float32_on_cpu
def relu_forward(x):
    """y = max(x, 0)."""
    xp = backend.get_array_module(x)
    if xp is np:
        mod = _cpu_kernel("relu_forward", x)
        if mod is not None:
            (x,) = _contiguous(xp, x)
            y = np.empty_like(x)
            mod.relu_forward(_addr(y), _addr(x), x.size, _name(x.dtype))
            return y
    elif (mod := _cuda_kernel("relu_forward", x)) is not None:
        (x,) = _contiguous(xp, x)
        with x.device:
            y = xp.empty_like(x)
            mod.relu_forward(_addr(y), _addr(x), x.size, _name(x.dtype), _stream(xp))
        return y
    return reference.relu_forward(xp, x)


@float32_on_cpu
def relu_backward(dy, y):
    """dx = dy where y > 0, else 0."""
    xp = backend.get_array_module(dy, y)
    if xp is np:
        mod = _cpu_kernel("relu_backward", dy, y)
        if mod is not None:
            dy, y = _contiguous(xp, dy, y)
            dx = np.empty_like(dy)
            mod.relu_backward(_addr(dx), _addr(dy), _addr(y), dy.size, _name(dy.dtype))
            return dx
    elif (mod := _cuda_kernel("relu_backward", dy, y)) is not None:
        dy, y = _contiguous(xp, dy, y)
        with dy.device:
            dx = xp.empty_like(dy)
            mod.relu_backward(_addr(dx), _addr(dy), _addr(y), dy.size, _name(dy.dtype), _stream(xp))
        return dx
    return reference.relu_backward(xp, dy, y)


@float32_on_cpu
def gelu_forward(x, approximate="none"):
    xp = backend.get_array_module(x)
    tanh = approximate == "tanh"
    if xp is np:
        mod = _vector_kernel("gelu_forward", x)
        if mod is not None:
            (x,) = _contiguous(xp, x)
            y = np.empty_like(x)
            mod.gelu_forward(_addr(y), _addr(x), x.size, tanh, _name(x.dtype))
            return y
    elif (mod := _cuda_kernel("gelu_forward", x)) is not None:
        (x,) = _contiguous(xp, x)
        with x.device:
            y = xp.empty_like(x)
            mod.gelu_forward(_addr(y), _addr(x), x.size, tanh, _name(x.dtype), _stream(xp))
        return y
    return reference.gelu_forward(xp, x, approximate)


@float32_on_cpu
def gelu_backward(dy, x, approximate="none"):
    xp = backend.get_array_module(dy, x)
    tanh = approximate == "tanh"
    if xp is np:
        mod = _vector_kernel("gelu_backward", dy, x)
        if mod is not None:
            dy, x = _contiguous(xp, dy, x)
            dx = np.empty_like(dy)
            mod.gelu_backward(_addr(dx), _addr(dy), _addr(x), dy.size, tanh, _name(dy.dtype))
            return dx
    elif (mod := _cuda_kernel("gelu_backward", dy, x)) is not None:
        dy, x = _contiguous(xp, dy, x)
        with dy.device:
            dx = xp.empty_like(dy)
            mod.gelu_backward(_addr(dx), _addr(dy), _addr(x), dy.size, tanh, _name(dy.dtype), _stream(xp))
        return dx
    return reference.gelu_backward(xp, dy, x, approximate)


@float32_on_cpu
def softmax_forward(x, scale=1.0):
    """softmax(scale * x) over the last axis (scale > 0: attention folds its
    1/sqrt(d) in here).  A row with a NaN, or of -inf only, gives NaN."""
    xp = backend.get_array_module(x)
    if xp is np and x.size and (mod := _vector_kernel("softmax_forward", x)) is not None:
        (x,) = _contiguous(xp, x)
        y = np.empty_like(x)
        mod.softmax_forward(_addr(y), _addr(x), x.size // x.shape[-1], x.shape[-1], float(scale), _name(x.dtype))
        return y
    if xp is not np and x.size and (mod := _cuda_kernel("softmax_forward", x)) is not None:  # one warp a row
        (x,) = _contiguous(xp, x)
        with x.device:
            y = xp.empty_like(x)
            mod.softmax_forward(_addr(y), _addr(x), x.size // x.shape[-1], x.shape[-1], float(scale), _name(x.dtype),
                                _stream(xp))
        return y
    return reference.softmax_forward(xp, x, scale)


@float32_on_cpu
def softmax_backward(dy, y, scale=1.0):
    """dx = scale * y ⊙ (dy - Σ dy ⊙ y) over the last axis: the backward of
    :func:`softmax_forward` from its output y."""
    xp = backend.get_array_module(dy, y)
    if xp is np and dy.size and (mod := _vector_kernel("softmax_backward", dy, y)) is not None:
        dy, y = _contiguous(xp, dy, y)
        dx = np.empty_like(dy)
        mod.softmax_backward(_addr(dx), _addr(dy), _addr(y), dy.size // dy.shape[-1], dy.shape[-1], float(scale),
                             _name(dy.dtype))
        return dx
    if xp is not np and dy.size and (mod := _cuda_kernel("softmax_backward", dy, y)) is not None:
        dy, y = _contiguous(xp, dy, y)
        with dy.device:
            dx = xp.empty_like(dy)
            mod.softmax_backward(_addr(dx), _addr(dy), _addr(y), dy.size // dy.shape[-1], dy.shape[-1], float(scale),
                                 _name(dy.dtype), _stream(xp))
        return dx
    return reference.softmax_backward(xp, dy, y, scale)


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------


def softmax_xent(logits, labels, smoothing=0.0, grad_scale=1.0, need_grad=True):
    """Fused softmax cross-entropy.

    Args:
        logits: (N, C) floating point.
        labels: (N,) int64 class indices, already validated to lie in [0, C).
        smoothing: label smoothing epsilon.
        grad_scale: factor applied to the gradient (1/N for a mean).
        need_grad: also compute d(loss)/d(logits).

    Returns:
        ``(loss_rows, dlogits)``: per-row losses (N,) in the logits' dtype, and
        the scaled gradient (N, C) or None.
    """
    xp = backend.get_array_module(logits, labels)
    if xp is np:
        mod = _cpu_kernel("softmax_xent", logits)
        if mod is not None:
            logits, labels = _contiguous(np, logits, labels.astype(np.int64, copy=False))
            n, c = logits.shape
            loss = np.empty(n, dtype=logits.dtype)
            dlogits = np.empty_like(logits) if need_grad else None
            mod.softmax_xent(
                _addr(loss), _addr(dlogits) if need_grad else 0, _addr(logits), _addr(labels),
                n, c, float(smoothing), float(grad_scale), _name(logits.dtype),
            )
            return loss, dlogits
    elif (mod := _cuda_kernel("softmax_xent", logits)) is not None:
        logits, labels = _contiguous(xp, logits, labels.astype(np.int64, copy=False))
        n, c = logits.shape
        with logits.device:
            loss = xp.empty(n, dtype=logits.dtype)
            dlogits = xp.empty_like(logits) if need_grad else None
            mod.softmax_xent(
                _addr(loss), _addr(dlogits) if need_grad else 0, _addr(logits), _addr(labels), n, c,
                float(smoothing), float(grad_scale), _name(logits.dtype), _stream(xp),
            )
        return loss, dlogits
    return reference.softmax_xent(xp, logits, labels, smoothing, grad_scale, need_grad)


# --------------------------------------------------------------------------
# dense algebra
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# recurrent cells: one time step of LSTM and GRU (lamina/layers/recurrent.py)
# --------------------------------------------------------------------------
# float32/float64 run on one compiled pass a step: lamina._C on NumPy arrays
# (vector lanes over the units), lamina._C_cuda on CuPy arrays (a thread per
# unit); anything else on the references.

_CELL_DTYPES = ("float32", "float64")


def _cell_kernel(name, *arrays):
    """(module, array module, stream args, device context) of the compiled
    kernel that runs ``name`` on these arrays, or None for the reference."""
    a = arrays[0]
    if not a.size:
        return None
    if _name(a.dtype) not in _CELL_DTYPES:
        warn_once(f"cell {name} {a.dtype}", f"lamina's {name} kernels take float32 and float64 (16-bit layers run "
                  f"their cells in float32), received {a.dtype}; using the {'NumPy' if type(a) is np.ndarray else 'CuPy'} "
                  "reference")
        return None
    if type(a) is np.ndarray:
        mod = _vector_kernel(name, *arrays)
        return None if mod is None else (mod, np, (), contextlib.nullcontext())
    if backend.is_cupy_array(a) and (mod := _cuda_kernel(name, *arrays)) is not None:
        cp = backend.require_cuda()
        return mod, cp, (_stream(cp),), a.device
    return None


def _write_back(*pairs):
    """Copy each kernel output into the caller's array where ``_contiguous``
    had to give the kernel a contiguous copy of it."""
    for target, written in pairs:
        if written is not target:
            target[...] = written


def lstm_cell_forward(gx, gh, c_prev, gates, c):
    """One LSTM step: fills ``gates`` (N, 4H: i, f, g, o activated) and ``c``
    (N, H: c_t) and returns h_t (see
    :func:`reference.lstm_cell_forward`)."""
    if (k := _cell_kernel("lstm_cell_forward", gx, gh, c_prev, gates, c)) is not None:
        mod, xp, stream, device = k
        with device:
            gx, gh, c_prev, g_out, c_out = _contiguous(xp, gx, gh, c_prev, gates, c)  # outputs: views kept, or copies
            h = xp.empty_like(c_out)
            mod.lstm_cell_forward(_addr(g_out), _addr(c_out), _addr(h), _addr(gx), _addr(gh), _addr(c_prev),
                                  c.shape[0], c.shape[1], _name(c.dtype), *stream)
            _write_back((gates, g_out), (c, c_out))
        return h
    return reference.lstm_cell_forward(backend.get_array_module(gx), gx, gh, c_prev, gates, c)


def lstm_cell_backward(dh, dc, gates, c, c_prev):
    """(da, dc_prev) of one LSTM step (see :func:`reference.lstm_cell_backward`)."""
    if (k := _cell_kernel("lstm_cell_backward", dh, dc, gates, c, c_prev)) is not None:
        mod, xp, stream, device = k
        with device:
            dh, dc, gates, c, c_prev = _contiguous(xp, dh, dc, gates, c, c_prev)
            da, dc_prev = xp.empty_like(gates), xp.empty_like(c)
            mod.lstm_cell_backward(_addr(da), _addr(dc_prev), _addr(dh), _addr(dc), _addr(gates), _addr(c),
                                   _addr(c_prev), c.shape[0], c.shape[1], _name(c.dtype), *stream)
        return da, dc_prev
    return reference.lstm_cell_backward(backend.get_array_module(dh), dh, dc, gates, c, c_prev)


def gru_cell_forward(gx, gh, h_prev, gates, ghn):
    """One GRU step: fills ``gates`` (N, 3H: r, z, n) and ``ghn`` (N, H:
    gh_n) and returns h_t (see
    :func:`reference.gru_cell_forward`)."""
    if (k := _cell_kernel("gru_cell_forward", gx, gh, h_prev, gates, ghn)) is not None:
        mod, xp, stream, device = k
        with device:
            gx, gh, h_prev, g_out, n_out = _contiguous(xp, gx, gh, h_prev, gates, ghn)  # outputs: views kept, or copies
            h = xp.empty_like(n_out)
            mod.gru_cell_forward(_addr(g_out), _addr(n_out), _addr(h), _addr(gx), _addr(gh), _addr(h_prev),
                                 ghn.shape[0], ghn.shape[1], _name(ghn.dtype), *stream)
            _write_back((gates, g_out), (ghn, n_out))
        return h
    return reference.gru_cell_forward(backend.get_array_module(gx), gx, gh, h_prev, gates, ghn)


def gru_cell_backward(dh, gates, ghn, h_prev):
    """(dgx, dgh, dh_direct) of one GRU step (see :func:`reference.gru_cell_backward`)."""
    if (k := _cell_kernel("gru_cell_backward", dh, gates, ghn, h_prev)) is not None:
        mod, xp, stream, device = k
        with device:
            dh, gates, ghn, h_prev = _contiguous(xp, dh, gates, ghn, h_prev)
            dgx, dgh, dh_direct = xp.empty_like(gates), xp.empty_like(gates), xp.empty_like(dh)
            mod.gru_cell_backward(_addr(dgx), _addr(dgh), _addr(dh_direct), _addr(dh), _addr(gates), _addr(ghn),
                                  _addr(h_prev), dh.shape[0], dh.shape[1], _name(dh.dtype), *stream)
        return dgx, dgh, dh_direct
    return reference.gru_cell_backward(backend.get_array_module(dh), dh, gates, ghn, h_prev)


def linear_forward(x, weight, bias=None):
    """y = x Wᵀ + b for x (M, K), W (N, K), b (N,)."""
    if _lamina_gemm(x, weight):
        return gemm_cuda(x, weight.T, bias)  # the bias add fused into the GEMM's epilogue
    y = matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y


def activation_forward(z, act):
    """act(z) for the activations a GEMM epilogue can fuse."""
    if act == "none":
        return z
    if act == "relu":
        return relu_forward(z)
    return gelu_forward(z, "tanh" if act == "gelu_tanh" else "none")


def activation_backward(dy, z, act):
    """dy act'(z); for ReLU, z may be the output as well."""
    if act == "none":
        return dy
    if act == "relu":
        return relu_backward(dy, z)
    return gelu_backward(dy, z, "tanh" if act == "gelu_tanh" else "none")


def linear_act_forward(x, weight, bias, act):
    """(y, z) with z = x Wᵀ + b and y = act(z).  z is None when backward does
    not need it (no activation, or ReLU, whose backward reads y).  On
    lamina's CUDA GEMM the bias and the activation run in its epilogue."""
    keep = act in ("gelu", "gelu_tanh")
    if _lamina_gemm(x, weight):
        r = gemm_cuda(x, weight.T, bias, act=act, keep_preactivation=keep)
        return r if keep else (r, None)
    z = linear_forward(x, weight, bias)
    return activation_forward(z, act), (z if keep else None)


def bias_act_backward(dy, z, act, need_bias=True):
    """(dz, db): dz = dy act'(z), db = Σ_rows dz (None unless need_bias), for
    (M, N) arrays.  One fused kernel on CuPy with lamina's kernels."""
    if backend.kernels() != "cupy" and backend.is_cupy_array(dy) and act != "none":
        mod = _cuda_kernel("bias_act_backward", dy, z)
        if mod is not None:
            cp = backend.require_cuda()
            dy, z = _contiguous(cp, dy, z)
            m, n = dy.shape
            with dy.device:
                dz = cp.empty_like(dy)
                db = cp.empty((n,), dtype=dy.dtype) if need_bias else None
                mod.bias_act_backward(_addr(dz), 0 if db is None else _addr(db), _addr(dy), _addr(z), m, n, act,
                                      _name(dy.dtype), _stream(cp))
            return dz, db
    dz = activation_backward(dy, z, act)
    if not need_bias:
        return dz, None
    return dz, (dz.sum(axis=0, dtype=np.float32) if backend.is_low_precision(dz.dtype) else dz.sum(axis=0))


def linear_backward(dy, x, weight, need_dx=True, need_bias=True):
    """Gradients of y = x Wᵀ + b: (dx = dy W, dW = dyᵀ x, db = Σ_rows dy);
    dx and db are None unless asked for."""
    dx = matmul(dy, weight) if need_dx else None
    dweight = matmul(dy.T, x)
    if not need_bias:
        return dx, dweight, None
    dbias = dy.sum(axis=0, dtype=np.float32) if backend.is_low_precision(dy.dtype) else dy.sum(axis=0)  # 16-bit: sum in float32
    return dx, dweight, dbias


# --------------------------------------------------------------------------
# fused optimizer updates on the GPU
# --------------------------------------------------------------------------


def fused_update_kernel(p, g):
    """``lamina._C_cuda`` when parameter array ``p`` and its gradient ``g``
    (CuPy, float32/float64, contiguous, same dtype) can be updated in one
    launch; None otherwise (NumPy arrays take the optimizer's own code)."""
    if not backend.is_cupy_array(p):
        return None
    if _name(p.dtype) not in ("float32", "float64") or g.dtype != p.dtype or not (p.flags.c_contiguous and g.flags.c_contiguous):
        warn_once(
            f"fused update {p.dtype} {g.dtype}",
            f"no fused CUDA optimizer update for a {p.dtype} parameter with a {g.dtype} gradient (or a non-contiguous one); "
            "it steps with CuPy's elementwise operations",
        )
        return None
    return _cuda_kernel("sgd_update", p)


def sgd_update(mod, params, grads, bufs, first_steps, lr, momentum, dampening, weight_decay, nesterov):
    """SGD on many CuPy parameters of one dtype and device, in one launch
    per 48 (the multi-tensor kernel of csrc/cuda/optim.cu).  ``bufs[i]`` is
    the momentum buffer (None without momentum), ``first_steps[i]`` True
    when it is fresh.  The caller holds every array until this returns."""
    cp = backend.require_cuda()
    with params[0].device:
        mod.sgd_update([_addr(p) for p in params], [_addr(g) for g in grads], [0 if b is None else _addr(b) for b in bufs],
                       [p.size for p in params], [1.0 if f else 0.0 for f in first_steps], float(lr), float(momentum),
                       float(dampening), float(weight_decay), bool(nesterov), _name(params[0].dtype), _stream(cp))


def adam_update(mod, params, grads, exp_avgs, exp_avg_sqs, step_sizes, bc2_sqrts, lr, beta1, beta2, eps, weight_decay,
                decoupled, steps=None, capturable=False, max_exp_avg_sqs=None):
    """Adam/AdamW on many CuPy parameters of one dtype and device, in one
    launch per 48; ``step_sizes[i]`` = lr / (1 - beta1^t) and
    ``bc2_sqrts[i]`` = sqrt(1 - beta2^t) at parameter i's own step t.
    ``max_exp_avg_sqs`` (AMSGrad): each parameter's running maximum of its
    second moment, updated in the same launch (one per 40 when capturable
    too).  ``capturable``: ``steps[i]`` is parameter i's step count as a 0-d
    device array of its dtype; the launch increments it and forms the bias
    corrections from it, so a CUDA graph of the step stays right on replay."""
    cp = backend.require_cuda()
    amsgrad = max_exp_avg_sqs is not None
    with params[0].device:
        mod.adam_update([_addr(p) for p in params], [_addr(g) for g in grads], [_addr(m) for m in exp_avgs],
                        [_addr(v) for v in exp_avg_sqs], [_addr(v) for v in max_exp_avg_sqs] if amsgrad else [0] * len(params),
                        [p.size for p in params], [float(x) for x in step_sizes], [float(x) for x in bc2_sqrts],
                        [_addr(t) for t in steps] if capturable else [0] * len(params), float(lr), float(beta1),
                        float(beta2), float(eps), float(weight_decay), bool(decoupled), amsgrad, bool(capturable),
                        _name(params[0].dtype), _stream(cp))


def adam_variant_update(mod, kind, params, grads, exp_avgs, exp_avg_sqs, factors, lr, beta1, beta2, eps, weight_decay,
                        decoupled):
    """NAdam (``kind`` "nadam") or RAdam ("radam") on many CuPy parameters
    of one dtype and device, in one launch per 48: Adam's weight decay and
    moments, then the update with ``factors[i]`` = (s0, s1, s2), parameter
    i's step factors formed on the host (csrc/cuda/optim.cu)."""
    cp = backend.require_cuda()
    s0, s1, s2 = ([float(f[k]) for f in factors] for k in range(3))
    with params[0].device:
        mod.adam_variant_update(kind, [_addr(p) for p in params], [_addr(g) for g in grads], [_addr(m) for m in exp_avgs],
                                [_addr(v) for v in exp_avg_sqs], [p.size for p in params], s0, s1, s2, float(lr),
                                float(beta1), float(beta2), float(eps), float(weight_decay), bool(decoupled),
                                _name(params[0].dtype), _stream(cp))


def ctc_loss(log_probs, targets, input_lengths, target_lengths, scale, blank, zero_infinity, need_grad, batch_first):
    """CTC on float32/float64 log-probabilities by lamina's kernels
    (csrc/cuda/ctc.cu: one block per sample, three launches; csrc/cpu/ctc.cpp:
    one sample per OpenMP thread): (nll (N,), grad or None), grad = scale[n] ·
    ∂nll_n/∂log_probs in log_probs' layout ((T, N, C), or (N, T, C) with
    ``batch_first``), 0 past each input's length, NaN for an infeasible
    sample (0 with ``zero_infinity``).  ``targets`` (N, S) padded, the
    lengths and ``scale`` (N,) are host arrays.  None where no kernel can
    run: the caller takes the NumPy/CuPy recursions."""
    if _name(log_probs.dtype) not in ("float32", "float64"):
        return None
    xp = backend.get_array_module(log_probs)
    cuda = xp is not np
    mod = _cuda_kernel("ctc_loss", log_probs) if cuda else _cpu_kernel("ctc_loss", log_probs)
    if mod is None:
        return None
    dtype = log_probs.dtype
    with (log_probs.device if cuda else contextlib.nullcontext()):
        lp = xp.ascontiguousarray(log_probs)
        if batch_first:
            n, t_max, c = lp.shape
            stride_t, stride_n = c, t_max * c
        else:
            t_max, n, c = lp.shape
            stride_t, stride_n = n * c, c
        s_max = targets.shape[1]
        tg, il, tl = (xp.asarray(np.ascontiguousarray(a, dtype=np.int64)) for a in (targets, input_lengths, target_lengths))
        sc = xp.asarray(np.asarray(scale, dtype=dtype))
        nll = xp.empty(n, dtype=dtype)
        alpha = xp.empty((n, t_max, 2 * s_max + 1), dtype=dtype)
        beta = xp.empty_like(alpha) if need_grad else None
        grad = xp.empty_like(lp) if need_grad else None
        args = (_addr(nll), 0 if grad is None else _addr(grad), _addr(alpha), 0 if beta is None else _addr(beta),
                _addr(lp), _addr(tg) if tg.size else 0, _addr(il), _addr(tl), _addr(sc), t_max, n, c, s_max,
                stride_t, stride_n, int(blank), bool(zero_infinity), _name(dtype))
        if cuda:
            mod.ctc_loss(*args, _stream(xp))
        else:
            mod.ctc_loss(*args)
    return nll, grad


def rmsprop_update(mod, params, grads, square_avgs, grad_avgs, bufs, lr, alpha, eps, weight_decay, momentum, centered):
    """RMSprop on many CuPy parameters of one dtype and device, in one launch
    per 48; ``grad_avgs[i]`` is None unless centered, ``bufs[i]`` None
    without momentum."""
    cp = backend.require_cuda()
    with params[0].device:
        mod.rmsprop_update([_addr(p) for p in params], [_addr(g) for g in grads], [_addr(s) for s in square_avgs],
                           [0 if a is None else _addr(a) for a in grad_avgs], [0 if b is None else _addr(b) for b in bufs],
                           [p.size for p in params], float(lr), float(alpha), float(eps), float(weight_decay),
                           float(momentum), bool(centered), _name(params[0].dtype), _stream(cp))


def adagrad_update(mod, params, grads, sums, clrs, eps, weight_decay):
    """Adagrad on many CuPy parameters of one dtype and device, in one launch
    per 48; ``clrs[i]`` = lr / (1 + (t - 1) lr_decay) at parameter i's step t."""
    cp = backend.require_cuda()
    with params[0].device:
        mod.adagrad_update([_addr(p) for p in params], [_addr(g) for g in grads], [_addr(s) for s in sums],
                           [p.size for p in params], [float(c) for c in clrs], float(eps), float(weight_decay),
                           _name(params[0].dtype), _stream(cp))


def lerp_(averages, currents, weight):
    """a ← a + weight · (x − a) in place for every pair (a weight average's
    update: EMA, SWA); x is already on a's device and in its dtype.  CuPy
    float32/float64 contiguous arrays take one multi-tensor launch per 48 of
    one device and dtype; the others, NumPy included, an array expression each."""
    fused = {}
    for a, x in zip(averages, currents):
        if (backend.is_cupy_array(a) and _name(a.dtype) in ("float32", "float64") and a.flags.c_contiguous
                and x.flags.c_contiguous and x.dtype == a.dtype and (mod := _cuda_kernel("lerp_update", a)) is not None):
            fused.setdefault((backend.device_of(a), a.dtype), (mod, []))[1].append((a, x))
            continue
        if backend.is_cupy_array(a):
            warn_once(f"lerp {a.dtype}", f"no fused CUDA weight-average update for a {a.dtype} (or non-contiguous) "
                      "array; it updates with CuPy's elementwise operations")
        a += a.dtype.type(weight) * (x - a)
    for mod, pairs in fused.values():
        cp = backend.require_cuda()
        with pairs[0][0].device:
            mod.lerp_update([_addr(a) for a, _ in pairs], [_addr(x) for _, x in pairs], [a.size for a, _ in pairs],
                            float(weight), _name(pairs[0][0].dtype), _stream(cp))


def unscale_grads(grads, inv_scale):
    """Multiply every gradient by ``inv_scale`` in place; True when any
    result is inf or NaN (lamina.amp.LossScaler's unscale).  CuPy float32 and
    float64 gradients take one multi-tensor launch per 48 and one read of a
    device flag per device and dtype: a single synchronisation per step,
    where checking each gradient would wait on the GPU once per parameter."""
    found = False
    fused = {}  # (device, dtype) -> (module, [grads])
    for g in grads:
        if backend.is_cupy_array(g):
            if _name(g.dtype) in ("float32", "float64") and g.flags.c_contiguous:
                if (mod := _cuda_kernel("unscale_grads", g)) is not None:
                    fused.setdefault((backend.device_of(g), g.dtype), (mod, []))[1].append(g)
                    continue
            else:
                warn_once(f"unscale {g.dtype}", f"LossScaler: a {g.dtype} (or non-contiguous) gradient is unscaled and "
                          "checked with CuPy's operations, one wait for the GPU per such gradient")
        g *= inv_scale
        if not found and not bool(backend.get_array_module(g).isfinite(g).all()):
            found = True
    flags = []
    for mod, gs in fused.values():
        cp = backend.require_cuda()
        with gs[0].device:
            flag = cp.zeros(1, dtype=cp.int32)
            mod.unscale_grads([_addr(g) for g in gs], [g.size for g in gs], float(inv_scale), _addr(flag),
                              _name(gs[0].dtype), _stream(cp))
        flags.append(flag)
    return found or any(bool(int(f.get()[0])) for f in flags)


# --------------------------------------------------------------------------
# random numbers on the GPU
# --------------------------------------------------------------------------


def embedding_backward(dy, idx, num_embeddings):
    """dW (num_embeddings, E) with dW[j] = Σ_{p: idx[p] = j} dy[p], for dy (P, E)
    and idx (P,); summed in float32 at least (16-bit dy) and returned in dy's
    dtype.  CuPy: ``cupy.add.at`` (atomic adds, so the order of a
    row's terms, and its last bits, vary); NumPy: ``np.add.at``, in order."""
    work = np.float32 if backend.is_low_precision(dy.dtype) else dy.dtype
    xp = backend.get_array_module(dy)
    dweight = xp.zeros((num_embeddings, dy.shape[1]), dtype=work)
    if xp is np:
        np.add.at(dweight, idx, dy.astype(work, copy=False))
    else:
        add_at = getattr(xp.add, "at", None)  # CuPy 13 and later; cupyx.scatter_add before (deprecated since)
        if add_at is None:
            import cupyx  # noqa: PLC0415 - CuPy is imported only for CuPy arrays

            add_at = cupyx.scatter_add
        add_at(dweight, idx, dy.astype(work, copy=False))
    return dweight.astype(dy.dtype, copy=False)


def dropout_forward(x, p):
    """(y, scaled mask) of inverted dropout: mask = [u >= p] / (1 - p) with u
    from lamina's generator on x's device (:func:`lamina.random.uniform_like`),
    y = x mask.  On CuPy one fused launch that draws the very same numbers."""
    from .. import random as lrandom  # noqa: PLC0415 - the generator sits below ops

    if backend.is_cupy_array(x) and (mod := _cuda_kernel("dropout_forward", x)) is not None:
        key, offset = lrandom.cuda_draw(x)
        cp = backend.require_cuda()
        (x,) = _contiguous(cp, x)
        with x.device:
            y, mask = cp.empty_like(x), cp.empty_like(x)
            mod.dropout_forward(_addr(y), _addr(mask), _addr(x), x.size, float(p), int(key), int(offset),
                                _name(x.dtype), _stream(cp))
        return y, mask
    keep = lrandom.uniform_like(x) >= p
    scaled_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))  # same shape as x
    return x * scaled_mask, scaled_mask


def channel_dropout_mask(x, p, channel_dims):
    """The scaled mask of channel dropout: one draw per (sample, channel),
    shape x.shape[:channel_dims] + (1,) * (the rest), [u >= p] / (1 - p), u
    from lamina's generator on x's device (so a replay from a saved RNG
    state draws the same mask)."""
    from .. import random as lrandom  # noqa: PLC0415 - the generator sits below ops

    xp = backend.get_array_module(x)
    shape = tuple(x.shape[:channel_dims]) + (1,) * (x.ndim - channel_dims)
    keep = lrandom.uniform_like(xp.empty(shape, dtype=x.dtype)) >= p
    return keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))


def random_uniform_cuda(shape, dtype, key, offset):
    """Counter-based uniform samples on the current GPU (see lamina.random)."""
    return reference.random_uniform_cuda(backend.require_cuda(), shape, dtype, key, offset)


# convolution and pooling live in their own module; imported last because it
# uses the helpers above.
from .conv import (  # noqa: E402, F401 - re-exported for the layers
    Geometry,
    adaptive_maxpool2d_forward,
    avgpool2d_backward,
    avgpool2d_forward,
    batch_to_channels_major,
    channels_to_batch_major,
    col2im,
    col_free,
    conv2d_backward,
    conv2d_backward_col_free,
    conv2d_backward_data,
    conv2d_backward_direct,
    conv2d_backward_implicit,
    conv2d_forward,
    conv2d_forward_col_free,
    conv2d_forward_direct,
    conv2d_forward_implicit,
    cpu_conv,
    geometry,
    give_workspace,
    im2col,
    implicit_gemm_ready,
    maxpool2d_backward,
    maxpool2d_forward,
    maxpool_scatter_backward,
    max_unpool_backward,
    max_unpool_forward,
    release_workspace,
    take_workspace,
    workspace_bytes,
)
from .norm import (  # noqa: E402, F401
    batchnorm_apply,
    batchnorm_backward,
    batchnorm_forward,
    batchnorm_stats,
    layernorm_backward,
    layernorm_forward,
)
from .pad import pad, pad_backward  # noqa: E402, F401
