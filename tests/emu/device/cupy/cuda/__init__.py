"""cupy.cuda on the emulated device: one device, the null stream, host-timed
events.  Stream capture (CUDA graphs) is refused: the stand-in's NumPy work
runs at once, so nothing could be replayed."""

import time

from . import runtime  # noqa: F401

_current = [0]


def not_emulated(what):
    """Refuse what the stand-in cannot do (tests/emu/device.py turns this into a skip under pytest)."""
    raise NotImplementedError(what)


class Device:
    def __init__(self, device=None):
        self.id = _current[0] if device is None else int(getattr(device, "id", device))
        if not 0 <= self.id < runtime.getDeviceCount():
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._previous = []

    def __enter__(self):
        self._previous.append(_current[0])
        _current[0] = self.id
        return self

    def __exit__(self, *exc):
        _current[0] = self._previous.pop()

    def use(self):
        _current[0] = self.id

    def synchronize(self):
        pass

    @property
    def compute_capability(self):
        return runtime.COMPUTE_CAPABILITY

    @property
    def attributes(self):
        return {"MultiProcessorCount": runtime.MULTIPROCESSORS}

    @property
    def mem_info(self):
        return (64 << 30, 80 << 30)

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = 0  # the emulated kernels run at once, whatever the stream
        self._previous = []

    def __enter__(self):
        self._previous.append(_stream[0])
        _stream[0] = self
        return self

    def __exit__(self, *exc):
        _stream[0] = self._previous.pop()

    def use(self):
        _stream[0] = self
        return self

    def synchronize(self):
        pass

    def is_capturing(self):
        return False

    def begin_capture(self, mode=None):
        not_emulated("CUDA graph capture is not emulated (the stand-in CuPy computes at once)")

    def end_capture(self):
        not_emulated("CUDA graph capture is not emulated")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass


class ExternalStream(Stream):
    """A stream made elsewhere (PyTorch's), by its pointer: the same one null stream here."""

    def __init__(self, ptr, device_id=-1):
        super().__init__()


Stream.null = Stream(null=True)
_stream = [Stream.null]


def get_current_stream(device=None):
    return _stream[0]


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._t = None

    def record(self, stream=None):
        self._t = time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start, end):
    return (end._t - start._t) * 1e3


def is_available():
    return runtime.getDeviceCount() > 0
