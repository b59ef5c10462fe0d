"""PyTorch's CUDA device on the host, for the emulated device: scripts that
put PyTorch's side on ``"cuda"`` (the benchmarks) run on a CPU build of
PyTorch, unchanged.

* Every ``device="cuda"`` (a string, ``"cuda:N"`` or a ``torch.device``) given
  to a PyTorch function or tensor method becomes the CPU, through a
  ``TorchFunctionMode`` that stays entered; so do ``torch.Generator``,
  ``torch.autocast`` and ``torch.amp.GradScaler`` for ``"cuda"``.
* ``torch.cuda`` answers for one device that looks like the emulated one
  (compute capability, SM count from ``cupy.cuda.runtime``): events are host
  clocks, synchronisation returns at once, streams are the host's order.
* CUDA graphs are refused (``torch.cuda.CUDAGraph`` raises
  NotImplementedError), as the stand-in CuPy refuses stream capture.

Tensors' ``data_ptr()`` are host addresses, which is what the emulated
``lamina._C_cuda`` reads, so lamina's kernels and PyTorch's CPU reference
see the same memory.  Nothing here is a timing: it runs the GPU branches of
a script, end to end, with small sizes.
"""

import contextlib
import types

import torch
from torch.overrides import TorchFunctionMode

NAME = "Emulated device (host)"


def _host(d):
    """``d`` with a CUDA device replaced by the CPU; anything else unchanged."""
    if isinstance(d, torch.device) and d.type == "cuda":
        return torch.device("cpu")
    if isinstance(d, str) and (d == "cuda" or d.startswith("cuda:")):
        return "cpu"
    return d


class _OnHost(TorchFunctionMode):
    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _host(kwargs["device"])
        name = getattr(func, "__name__", "")
        if name in ("cuda",):  # tensor.cuda(): already on the "device"
            return args[0]
        if name in ("to", "_parse_to"):
            args = tuple(_host(a) for a in args)
        return func(*args, **kwargs)


class _Stream:
    cuda_stream = 0  # the emulated kernels run at once, on the caller's thread

    def __init__(self, device=None, priority=0):
        pass

    def wait_stream(self, other):
        pass

    def wait_event(self, event):
        pass

    def synchronize(self):
        pass


class _CUDAGraph:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("CUDA graph capture is not emulated (PyTorch runs on the host)")


def _properties(device=0):
    import cupy  # noqa: PLC0415 - the stand-in: PyTorch sees the device that CuPy sees

    d = cupy.cuda.runtime.getDeviceProperties(0)
    return types.SimpleNamespace(name=NAME, multi_processor_count=d["multiProcessorCount"], major=d["major"],
                                 minor=d["minor"], total_memory=d["totalGlobalMem"])


_installed = []


def install():
    """Enter the mode and patch ``torch.cuda`` (once per process)."""
    if _installed:
        return
    import cupy.cuda  # noqa: PLC0415 - the stand-in (tests/emu/device.py installs it first)

    class Event(cupy.cuda.Event):  # a host clock, as the stand-in CuPy's, with PyTorch's methods
        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            super().__init__()

        def query(self):
            return True

        def elapsed_time(self, end):
            return cupy.cuda.get_elapsed_time(self, end)

    cuda = torch.cuda
    stream = _Stream()
    patches = {
        "is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
        "get_device_name": lambda device=None: NAME,
        "get_device_capability": lambda device=None: (_properties().major, _properties().minor),
        "get_device_properties": _properties, "synchronize": lambda device=None: None,
        "current_stream": lambda device=None: stream, "default_stream": lambda device=None: stream,
        "Stream": _Stream, "Event": Event, "stream": lambda s: contextlib.nullcontext(),
        "CUDAGraph": _CUDAGraph, "graph": lambda *a, **k: contextlib.nullcontext(),
        "max_memory_allocated": lambda device=None: 0, "memory_allocated": lambda device=None: 0,
        "reset_peak_memory_stats": lambda device=None: None, "empty_cache": lambda: None,
        "manual_seed": lambda seed: None, "manual_seed_all": lambda seed: None,
    }
    for name, value in patches.items():
        setattr(cuda, name, value)

    generator = torch.Generator

    class _Meta(type(generator)):
        def __instancecheck__(cls, obj):  # torch's own generators are torch.Generator still
            return isinstance(obj, generator)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, generator)

    class Generator(generator, metaclass=_Meta):
        def __new__(cls, device="cpu"):
            return super().__new__(cls, _host(device))

        def __init__(self, device="cpu"):
            pass

    torch.Generator = Generator

    class autocast(torch.autocast):  # noqa: N801 - torch's name
        def __init__(self, device_type, *args, **kwargs):
            super().__init__(_host(device_type), *args, **kwargs)

    class GradScaler(torch.amp.GradScaler):
        def __init__(self, device="cuda", *args, **kwargs):
            super().__init__(_host(device), *args, **kwargs)

    torch.autocast, torch.amp.GradScaler = autocast, GradScaler
    mode = _OnHost()
    mode.__enter__()  # for the rest of the process
    _installed.append(mode)
