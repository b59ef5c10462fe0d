"""How much memory the activations of a training step hold.

Layers keep what backward needs in their caches; that is the activation
memory a step holds, and the memory that gradient checkpointing and mixed
precision save.  Inside ``with lamina.memory.track() as m:`` every cache a
layer stores or drops is counted, each underlying buffer once (views of one
array, or one array cached by two layers, count once):

    with lamina.memory.track() as m:
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
    print(m.peak_bytes, m.live_bytes)

On a GPU the tracker also samples CuPy's memory pool at every cache event
(``peak_device_bytes``, ``device_bytes_at_start``), which counts everything
the pool holds, temporaries included.
"""

import contextlib
import threading

from . import backend

_local = threading.local()


def _trackers():
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _root(a):
    while getattr(a, "base", None) is not None and backend.is_array(a.base):
        a = a.base
    return a


def arrays_in(obj, out=None):
    """Every NumPy/CuPy array inside nested tuples, lists and dicts."""
    out = [] if out is None else out
    if backend.is_array(obj):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            arrays_in(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            arrays_in(item, out)
    return out


class Tracker:
    """Live and peak bytes of the arrays held in layer caches."""

    def __init__(self):
        self._refs = {}  # id(root buffer) -> [count, nbytes, root]
        self.live_bytes = 0
        self.peak_bytes = 0
        self.events = 0
        self.device_bytes_at_start = 0
        self.peak_device_bytes = 0
        self._pool = None

    def _start(self):
        cp = backend.cupy_module() if backend.cuda_device_count() else None
        if cp is not None:
            self._pool = cp.get_default_memory_pool()
            self.device_bytes_at_start = self.peak_device_bytes = int(self._pool.used_bytes())

    def change(self, old, new):
        for a in arrays_in(new):
            r = _root(a)
            entry = self._refs.get(id(r))
            if entry is None:
                self._refs[id(r)] = [1, int(r.nbytes), r]
                self.live_bytes += int(r.nbytes)
            else:
                entry[0] += 1
        for a in arrays_in(old):
            r = _root(a)
            entry = self._refs.get(id(r))
            if entry is None:
                continue  # cached before tracking began
            entry[0] -= 1
            if entry[0] == 0:
                self.live_bytes -= entry[1]
                del self._refs[id(r)]
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self.events += 1
        if self._pool is not None:
            self.peak_device_bytes = max(self.peak_device_bytes, int(self._pool.used_bytes()))

    def reset_peak(self):
        self.peak_bytes = self.live_bytes
        if self._pool is not None:
            self.peak_device_bytes = int(self._pool.used_bytes())

    def __repr__(self):
        return f"Tracker(live_bytes={self.live_bytes:,}, peak_bytes={self.peak_bytes:,})"


@contextlib.contextmanager
def track():
    """Count activation memory (layer caches) until the block ends; yields a :class:`Tracker`."""
    t = Tracker()
    t._start()
    _trackers().append(t)
    try:
        yield t
    finally:
        _trackers().remove(t)


def _on_cache_change(old, new):
    """Called by Layer whenever a cache is replaced (cheap when nothing tracks)."""
    stack = getattr(_local, "stack", None)
    if stack:
        for t in stack:
            t.change(old, new)
