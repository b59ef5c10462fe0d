"""A stand-in for CuPy on the CPU, for the emulated device (tests/emu/device.py).

Arrays are NumPy arrays in a wrapper that keeps CuPy's rules where lamina
could break them unnoticed on NumPy:

* a ``cupy.ndarray`` is not a ``numpy.ndarray``: ``np.asarray(x)`` raises
  CuPy's TypeError (use ``.get()``), and arithmetic or a ``cupy`` function
  given a NumPy array raises, as CuPy does;
* reductions and indexing to a scalar return 0-d arrays, not NumPy scalars;
* ``x.data.ptr`` is the address of the first element and ``x.device`` a
  ``cupy.cuda.Device``, so lamina's emulated ``_C_cuda`` (its real pybind11
  bindings over the kernels run by tests/emu/emu.h) reads and writes the
  array's memory in place.

What it does not emulate it refuses: CUDA graph capture, and
``ElementwiseKernel`` sources other than those with a NumPy stand-in in
``_ELEMENTWISE`` below.
"""

import builtins
import collections
import weakref

import numpy as _np

from . import cuda  # noqa: F401  (cupy.cuda)
from . import random  # noqa: F401  (cupy.random)

__version__ = "14.0.0+emulated"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array "
             "explicitly.")

# ---------------------------------------------------------------------------
# the memory pool: bytes of the live buffers that stand-in arrays own
# ---------------------------------------------------------------------------

_buffers = weakref.WeakValueDictionary()  # id(root) -> root numpy array


def _root(a):
    while isinstance(a.base, _np.ndarray):
        a = a.base
    return a


class MemoryPool:
    def used_bytes(self):
        return builtins.sum(int(b.nbytes) for b in list(_buffers.values()))

    def total_bytes(self):
        return self.used_bytes()

    def free_bytes(self):
        return 0

    def free_all_blocks(self):
        pass

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass


_pool = MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pool


# ---------------------------------------------------------------------------
# the array
# ---------------------------------------------------------------------------


_recent = collections.deque(maxlen=64)


class _Pointer:
    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr


def _unwrap(x, fn):
    """x with stand-in arrays replaced by their NumPy arrays; a NumPy array
    (not a scalar) raises as CuPy does."""
    if type(x) is ndarray:
        return x._a
    if isinstance(x, _np.ndarray):
        raise TypeError(f"Unsupported type {type(x)} (cupy.{fn} given a numpy.ndarray: move it with cupy.asarray)")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, fn) for v in x)
    return x


def _unwrap_index(x):
    if type(x) is ndarray:
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap_index(v) for v in x)
    return x


def _bfloat16(inputs, r):
    """r in bfloat16 when every array or NumPy scalar among ``inputs`` is
    bfloat16: CuPy computes bfloat16 in bfloat16 (a matrix product on cuBLAS,
    with float32 accumulation), where NumPy with ml_dtypes promotes
    products, and arithmetic with a Python float, to float32."""
    if not isinstance(r, _np.ndarray) or r.dtype != _np.float32:
        return r
    dtypes = [x.dtype for x in inputs if isinstance(x, (_np.ndarray, _np.generic))]
    if dtypes and all(d.name == "bfloat16" for d in dtypes):
        return r.astype(dtypes[0])
    return r


def _wrap(r):
    if isinstance(r, _np.ndarray):
        return ndarray._of(r)
    if isinstance(r, _np.generic) and not isinstance(r, (_np.str_, _np.bytes_, _np.void)):
        return ndarray._of(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


class ndarray:  # noqa: N801 - CuPy's name
    """A NumPy array standing in for device memory."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None:
            raise NotImplementedError("cupy.ndarray(memptr=...) is not emulated")
        self._a = _np.empty(shape, dtype=dtype, order=order)
        _buffers[id(self._a)] = self._a

    @classmethod
    def _of(cls, a):
        x = cls.__new__(cls)
        x._a = a
        r = _root(a)
        _buffers[id(r)] = r
        return x

    # -- CuPy's own API -----------------------------------------------------
    @property
    def data(self):
        # CuPy's pool is stream-ordered: an array freed right after its
        # address was read (``cp.asarray(b).data.ptr`` as an argument) is not
        # reused before the kernel that reads it has run.  NumPy would hand
        # the memory back at once, so the last arrays whose address was read
        # are kept alive for a while.
        _recent.append(self._a)
        return _Pointer(self._a.__array_interface__["data"][0])

    @property
    def device(self):
        return cuda.Device(0)

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy(order="C" if order == "C" else "A")

    def set(self, arr, stream=None):
        if type(arr) is ndarray:
            raise TypeError("ndarray.set: expected a numpy.ndarray")
        self._a[...] = arr

    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], ufunc.__name__)
        args = _unwrap(inputs, ufunc.__name__)
        return _wrap(_bfloat16(args, getattr(ufunc, method)(*args, **kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        mine = globals().get(func.__name__) or _Function(func.__name__, func)
        return mine(*args, **kwargs)

    # -- attributes -----------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._of(self._a.T))
    mT = property(lambda self: ndarray._of(_np.swapaxes(self._a, -1, -2)))
    real = property(lambda self: ndarray._of(self._a.real))
    imag = property(lambda self: ndarray._of(self._a.imag))

    @property
    def base(self):
        return None if self._a.base is None else ndarray._of(_root(self._a))

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    def __getattr__(self, name):  # methods: astype, reshape, sum, ...
        if name in _ACCUMULATING:
            return lambda *args, **kwargs: globals()[name](self, *args, **kwargs)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            if "out" in kwargs:
                kwargs["out"] = _unwrap(kwargs["out"], name)
            return _wrap(attr(*_unwrap(args, name), **kwargs))

        return method

    def item(self, *args):
        return self._a.item(*args)

    def tolist(self):
        return self._a.tolist()

    def __getitem__(self, index):
        return _wrap(self._a[_unwrap_index(index)])

    def __setitem__(self, index, value):
        self._a[_unwrap_index(index)] = value._a if type(value) is ndarray else value

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __copy__(self):
        return ndarray._of(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray._of(self._a.copy())

    def __reduce__(self):
        return (array, (self._a,))

    __hash__ = None


def _binary(name):
    def op(self, other):
        if isinstance(other, _np.ndarray):
            raise TypeError(f"Unsupported type {type(other)}")
        o = other._a if type(other) is ndarray else other
        return _wrap(_bfloat16((self._a, o), getattr(self._a, name)(o)))

    op.__name__ = name
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift",
              "rshift", "divmod"):
    for _form in (f"__{_name}__", f"__r{_name}__", f"__i{_name}__"):
        if hasattr(_np.ndarray, _form):
            setattr(ndarray, _form, _binary(_form))
for _form in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(ndarray, _form, _binary(_form))
for _form in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _form, (lambda f: lambda self: _wrap(getattr(self._a, f)()))(_form))
# conversions and text: the NumPy array's own (a 0-d array to a Python number, as CuPy does after a sync)
for _form in ("__len__", "__bool__", "__float__", "__int__", "__index__", "__complex__", "__repr__", "__str__"):
    setattr(ndarray, _form, (lambda f: lambda self: getattr(self._a, f)())(_form))


# ---------------------------------------------------------------------------
# module functions: NumPy's, over unwrapped arrays
# ---------------------------------------------------------------------------


def asarray(a, dtype=None, order=None, *, blocking=False):
    if type(a) is ndarray:
        return a if dtype is None or _np.dtype(dtype) == a.dtype else a.astype(dtype)
    return ndarray._of(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    src = obj._a if type(obj) is ndarray else obj
    return ndarray._of(_np.array(src, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asanyarray(a, dtype=None, order=None):
    return asarray(a, dtype, order)


def ascontiguousarray(a, dtype=None):
    return _wrap(_np.ascontiguousarray(_unwrap(a, "ascontiguousarray"), dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if type(a) is ndarray:
        return a.get(out=out)
    return _np.asarray(a, order=order)


# Reductions of float16 (and bfloat16) arrays accumulate in float32 on CuPy,
# where NumPy would add in 16 bits; the result keeps the 16-bit dtype.
_ACCUMULATING = ("sum", "mean", "var", "std", "cumsum")


def _accumulating(name):
    f = getattr(_np, name)

    def reduce(a, *args, **kwargs):
        x = _unwrap(a, name)
        if x.dtype.itemsize == 2 and x.dtype.kind in "fV" and kwargs.get("dtype") is None and "out" not in kwargs:
            return _wrap(f(x.astype(_np.float32), *args, **kwargs).astype(x.dtype))
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], name)
        return _wrap(f(x, *args, **kwargs))

    reduce.__name__ = name
    return reduce


for _name in _ACCUMULATING:
    globals()[_name] = _accumulating(_name)


def get_array_module(*args):
    return __import__(__name__) if builtins.any(type(a) is ndarray for a in args) else _np


class _Function:
    """A NumPy function or ufunc taking and returning stand-in arrays."""

    def __init__(self, name, f):
        self.__name__, self._f = name, f

    def __call__(self, *args, **kwargs):
        kwargs = {k: _unwrap(v, self.__name__) for k, v in kwargs.items()}
        args = _unwrap(args, self.__name__)
        r = self._f(*args, **kwargs)
        return _wrap(r if "dtype" in kwargs else _bfloat16(args, r))

    def __getattr__(self, name):  # ufunc.reduce, ufunc.at, ...
        attr = getattr(self._f, name)
        return _Function(f"{self.__name__}.{name}", attr) if callable(attr) else attr


class _Submodule:
    def __init__(self, name, module):
        self.__name__, self._m = name, module

    def __getattr__(self, name):
        attr = getattr(self._m, name)
        if isinstance(attr, type(_np)):
            return _Submodule(f"{self.__name__}.{name}", attr)
        if callable(attr) and not isinstance(attr, type):
            return _Function(name, attr)
        return attr


lib = _Submodule("cupy.lib", _np.lib)
linalg = _Submodule("cupy.linalg", _np.linalg)
fft = _Submodule("cupy.fft", _np.fft)


def __getattr__(name):
    attr = getattr(_np, name)
    if isinstance(attr, type) or not callable(attr):  # dtypes, scalar types, constants
        return attr
    f = _Function(name, attr)
    globals()[name] = f
    return f


# ---------------------------------------------------------------------------
# ElementwiseKernel: only sources with a NumPy stand-in
# ---------------------------------------------------------------------------


def _lamina_uniform(key, offset, out):
    """lamina.ops.reference's counter-based generator (splitmix64), in NumPy."""
    m64 = _np.uint64
    with _np.errstate(over="ignore"):
        i = _np.arange(out.size, dtype=m64) + m64(int(offset))
        z = m64(int(key)) + i * m64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> m64(30))) * m64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> m64(27))) * m64(0x94D049BB133111EB)
        z = z ^ (z >> m64(31))
    if out.dtype.itemsize >= 8:
        v = (z >> m64(11)).astype(_np.float64) * (1.0 / 9007199254740992.0)
    else:
        v = (z >> m64(40)).astype(_np.float32) * _np.float32(1.0 / 16777216.0)
    out._a[...] = v.reshape(out.shape).astype(out.dtype)
    return out


_ELEMENTWISE = {"lamina_uniform": _lamina_uniform}


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        if name not in _ELEMENTWISE:
            raise NotImplementedError(f"cupy.ElementwiseKernel {name!r}: no NumPy stand-in on the emulated device")
        self.name, self._f = name, _ELEMENTWISE[name]

    def __call__(self, *args, **kwargs):
        return self._f(*args, **kwargs)

