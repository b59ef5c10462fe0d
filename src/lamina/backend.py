"""Array modules, devices, transfers and availability.

lamina runs one code path over NumPy (CPU) and CuPy (NVIDIA GPUs).  A layer
never asks "which backend am I on": it calls :func:`get_array_module` on its
input and uses whatever module holds the array.  CuPy is imported lazily, the
first time a GPU array or device is asked for, so ``import lamina`` never
touches CUDA.
"""

import os

import numpy as np

from .errors import DeviceError

_cupy = None
_cupy_error = None
_cupy_checked = False


def cupy_module():
    """Return the ``cupy`` module, or None if it cannot be imported."""
    global _cupy, _cupy_error, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # noqa: PLC0415 - imported lazily on purpose

            _cupy = cupy
        except Exception as e:  # ImportError, or a CUDA library failing to load
            _cupy_error = f"{type(e).__name__}: {e}"
    return _cupy


def cupy_import_error():
    """Why CuPy could not be imported (None if it imported or was never tried)."""
    cupy_module()
    return _cupy_error


_cupy_types = {}  # type -> whether it is CuPy's (every layer call asks, so it is cached)


def is_cupy_array(x):
    """True for a ``cupy.ndarray``, without importing CuPy."""
    t = type(x)
    known = _cupy_types.get(t)
    if known is None:
        known = _cupy_types[t] = t.__module__.split(".", 1)[0] == "cupy"
    return known


def is_array(x):
    return isinstance(x, np.ndarray) or is_cupy_array(x)


def get_array_module(*arrays):
    """``numpy`` or ``cupy``: the module that holds the given arrays.

    Arrays from both modules in one call raise :class:`DeviceError`.
    """
    on_gpu = on_cpu = False
    for a in arrays:
        if type(a) is np.ndarray:
            on_cpu = True
        elif a is None or np.isscalar(a):
            continue
        elif is_cupy_array(a):
            on_gpu = True
        else:
            on_cpu = True
    if on_gpu and on_cpu:
        raise DeviceError("expected arrays on one device, received a mix of numpy and cupy arrays")
    return cupy_module() if on_gpu else np


class Device:
    """A device: ``Device("cpu")``, ``Device("cuda")``, ``Device("cuda:1")``."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"expected a device string such as 'cpu' or 'cuda:0', received {spec!r}")
        kind, _, idx = spec.strip().lower().partition(":")
        if kind not in ("cpu", "cuda") or (kind == "cpu" and idx) or (idx and not idx.isdigit()):
            raise ValueError(f"expected a device 'cpu', 'cuda' or 'cuda:N', received {spec!r}")
        self.type = kind
        self.index = (int(idx) if idx else 0) if kind == "cuda" else None

    def __eq__(self, other):
        if type(other) is not Device:
            try:
                other = Device(other)
            except (TypeError, ValueError):
                return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    def __repr__(self):
        return f"Device('{self}')"


CPU = Device("cpu")


def device_of(x):
    """The :class:`Device` an array lives on."""
    if is_cupy_array(x):
        index = x.device.id
        device = _CUDA_DEVICES.get(index)
        if device is None:
            device = _CUDA_DEVICES[index] = Device(f"cuda:{index}")
        return device
    return CPU


_CUDA_DEVICES = {}  # index -> Device: asked several times per layer call, so parsed once


def to_device(x, device):
    """Return ``x`` on ``device`` (the same object when it is already there)."""
    device = Device(device)
    if device.type == "cpu":
        return x.get() if is_cupy_array(x) else x
    cp = require_cuda(device)
    if is_cupy_array(x) and x.device.id == device.index:
        return x
    with cp.cuda.Device(device.index):
        return cp.asarray(x)


def require_cuda(device=None):
    """Return ``cupy`` or raise a :class:`DeviceError` that says why CUDA is unusable."""
    cp = cupy_module()
    if cp is None:
        raise DeviceError(f"CUDA device requested but CuPy cannot be imported ({_cupy_error})")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise DeviceError(f"CUDA device requested but none is usable ({type(e).__name__}: {e})") from None
    if device is not None and Device(device).index >= count:
        raise DeviceError(f"expected a device index below {count}, received {Device(device)}")
    return cp


def cuda_device_count():
    cp = cupy_module()
    if cp is None:
        return 0
    try:
        return cp.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def cuda_available():
    """True when lamina's CUDA module is built and imports, CuPy imports, and a
    CUDA device is present."""
    from .ops import _ext  # noqa: PLC0415 - ops sits above backend

    return _ext.cuda_module() is not None and cuda_device_count() > 0


def synchronize(device=None):
    """Wait for all work queued on ``device`` (no-op on the CPU)."""
    device = Device(device or "cpu")
    if device.type == "cuda":
        cp = require_cuda(device)
        with cp.cuda.Device(device.index):
            cp.cuda.get_current_stream().synchronize()


# Which GPU kernels run the GEMMs of Dense and Conv on CuPy arrays.
_KERNEL_CHOICES = ("auto", "lamina", "cupy")
_kernels = "auto"


def use_kernels(name):
    """Choose the GPU kernels behind Dense and Conv on CuPy arrays:

    * ``"auto"`` (the default): lamina's own kernels wherever they were
      measured faster on an H100 (benchmarks/results/kernels_*.json,
      bench_*.json), cuBLAS through CuPy for the rest: the implicit-GEMM
      convolution (0.7 to 1.6 times cuDNN's speed on ResNet-20's layers, where
      im2col + cuBLAS makes ResNet-20's step 2.2 times slower), lamina's GEMM
      for products of at most one wave of 128 x 128 tiles (Dense at training
      batch sizes: 1.3 to 1.4 times cuBLAS's speed) and for fp16/bf16 operands
      that suit its tensor-core loads, cuBLAS for large float32 products (where
      lamina's SIMT GEMM reaches 0.86 of cuBLAS), for unaligned fp16/bf16
      operands, for batched products and for float64.  Inside a CUDA-graph
      capture every product lamina can run is lamina's: CuPy cannot capture
      cuBLAS calls.
    * ``"lamina"``: lamina's kernels for every product and convolution they
      can take: its GEMM (fp32 on CUDA cores, fp16/bf16 on tensor cores) with
      the bias and ``Dense(activation=...)`` fused into the epilogue and the
      fused bias+activation backward, and implicit-GEMM convolution (no im2col
      matrix; backward from the input).  Says so once where one cannot run.
    * ``"cupy"``: cuBLAS through CuPy (Conv as im2col + cuBLAS), the
      reference lamina's kernels are measured against.

    NumPy arrays are not affected.  Returns the previous choice.
    """
    global _kernels
    if name not in _KERNEL_CHOICES:
        raise ValueError(f"use_kernels: expected one of {_KERNEL_CHOICES}, received {name!r}")
    previous, _kernels = _kernels, name
    return previous


def stream_capturing():
    """True while CuPy's current stream is being captured into a CUDA graph."""
    cp = cupy_module()
    return cp is not None and cp.cuda.get_current_stream().is_capturing()


def kernels():
    """The current choice of :func:`use_kernels`."""
    return _kernels


# Whether lamina's convolution kernels choose their launch plan by timing (lamina.ops.tuning).
_autotune = os.environ.get("LAMINA_AUTOTUNE", "0") not in ("", "0")


def autotune(enabled=None):
    """Whether lamina's GPU convolutions time their launch plans and keep the
    fastest per problem, as ``torch.backends.cudnn.benchmark`` does for
    cuDNN.  Off by default (or as the environment variable
    ``LAMINA_AUTOTUNE=1`` sets it).

    Every convolution pass can run several ways that compute the same
    result: a tile height of 32, 64 or 128 output channels, the 128-row
    kernels built for one or two blocks per multiprocessor, and its
    reduction cut into a number of ranges whose fp32 partial sums are added
    in a fixed order.  Off, lamina's rules pick one from the problem's shape
    (fitted to H100 measurements; deterministic).  On, the first call of each
    distinct problem (geometry, channels, groups, dtype, device) times the
    candidates on the current stream, once each plus a few rounds of the
    close ones, and later calls reuse the fastest (:func:`lamina.ops.tuning.
    plans` lists them).  The cost: that first call synchronises and takes
    tens of launches' time, and since timing can choose another split count
    on another run, results may differ between processes in the last bits
    (within one process each problem keeps its plan).  A problem first met
    inside a CUDA-graph capture cannot be timed: it runs the rule's plan, and
    a warning says so once.

    ``enabled``: True or False to set it, None to leave it.  Returns the
    previous setting.
    """
    global _autotune
    previous = _autotune
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise TypeError(f"autotune: expected True, False or None, received {enabled!r}")
        _autotune = enabled
    return previous


def as_dtype(dtype):
    """Normalise a dtype argument (``np.float32``, ``"float64"``, ``"bfloat16"``, ...) to ``np.dtype``.

    ``"bfloat16"`` needs ml_dtypes (NumPy has no bfloat16 of its own)."""
    if isinstance(dtype, str) and dtype in ("bfloat16", "bf16"):
        import ml_dtypes  # noqa: PLC0415

        return np.dtype(ml_dtypes.bfloat16)
    if isinstance(dtype, str) and dtype in ("fp16", "half"):
        return np.dtype(np.float16)
    return np.dtype(dtype)


_cupy_bf16 = None  # (supported, why not) once probed


def cupy_bfloat16():
    """(True, "") when CuPy holds and computes on bfloat16 arrays (CuPy 14
    and later with ml_dtypes installed), else (False, why not).  Probed once,
    on the current device, with the operations autocast relies on: casts,
    elementwise arithmetic, reductions and a matrix product."""
    global _cupy_bf16
    if _cupy_bf16 is None:
        cp = cupy_module()
        if cp is None:
            _cupy_bf16 = (False, f"CuPy is not available ({cupy_import_error()})")
            return _cupy_bf16
        try:
            import ml_dtypes  # noqa: PLC0415

            bf16 = np.dtype(ml_dtypes.bfloat16)
            a = cp.arange(16, dtype=cp.float32).reshape(4, 4).astype(bf16)
            b = (a * a + a).astype(cp.float32).sum() + (a @ a).astype(cp.float32).sum()
            want = float(((np.arange(16.0).reshape(4, 4) ** 2 + np.arange(16.0).reshape(4, 4)).sum()
                          + (np.arange(16.0).reshape(4, 4) @ np.arange(16.0).reshape(4, 4)).sum()))
            ok = abs(float(b) - want) <= 1e-2 * want
            _cupy_bf16 = (ok, "" if ok else "CuPy's bfloat16 arithmetic gave wrong results")
        except Exception as e:  # an old CuPy, no ml_dtypes, or an unsupported operation
            _cupy_bf16 = (False, f"CuPy {getattr(cp, '__version__', '?')} cannot compute on bfloat16 arrays "
                                 f"({type(e).__name__}: {e}); CuPy 14 or later with ml_dtypes can")
    return _cupy_bf16


def narrow(a, dtype):
    """``a.astype(dtype)`` for a cast to a 16-bit dtype: values beyond its
    range become inf without a NumPy warning (under loss scaling an overflow
    is expected; the scaler detects it and skips the step)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype)


def finfo(dtype):
    """``np.finfo`` for every float dtype lamina computes in, bfloat16 included
    (through ml_dtypes, which has its own finfo)."""
    dt = np.dtype(dtype)
    if dt.name == "bfloat16":
        import ml_dtypes  # noqa: PLC0415

        return ml_dtypes.finfo(dt)
    return np.finfo(dt)


def is_low_precision(dtype):
    """float16 or bfloat16: stored in 16 bits, computed in float32.  (On
    every layer call, so it checks the item size before any name.)"""
    dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    return dt.itemsize == 2 and (dt.kind == "f" or dt.name == "bfloat16")
