"""Where a training step's time goes, layer by layer.

    with lamina.profiler.profile(model) as prof:
        for xb, yb in batches:
            loss_fn(model(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
    print(prof.table())

The profiler registers forward and backward hooks (:mod:`lamina.hooks`) on
every layer of ``model`` while the block runs and removes them at its end.
Each hook stamps the time: ``time.perf_counter`` on the CPU, a CUDA event on
the current stream on the GPU (read once, at the end, so the GPU is never
made to wait inside the step).  Each layer gets its forward, backward and
recomputed-forward (gradient checkpointing) time, each inclusive of its
children and as *self* time (its own work alone), the number of calls, and
the bytes its cache held after its forward (what it keeps for backward).
The self times add up to the model's own time; the loss and the optimizer
step are outside it.

A profiled step is slower than a plain one (a few microseconds per hook on
the CPU; on the GPU an event record per hook): compare layers with each
other, and time whole steps without the profiler (``lamina bench``).
"""

import json
import time

from . import backend
from .memory import _root, arrays_in
from .module import is_recomputing
from .serialization import atomic_write

PHASES = ("forward", "backward", "recompute")


class _Interval:
    __slots__ = ("name", "phase", "start", "end", "children", "parent")

    def __init__(self, name, phase, start, parent):
        self.name, self.phase, self.start, self.end = name, phase, start, None
        self.children, self.parent = [], parent


class Profile:
    """Per-layer times of everything ``model`` runs between :meth:`start`
    and :meth:`stop` (or inside ``with``).  Read the results with
    :meth:`records`, :meth:`table` or :meth:`to_json` after it stopped."""

    def __init__(self, model):
        self.model = model
        self._handles = []
        self._stack = []  # open intervals, innermost last
        self._roots = []  # closed outermost intervals
        self._calls = {}  # (name, phase) -> calls
        self._cache = {}  # name -> largest cache seen after a forward, bytes
        self._types = {}
        self._cp = None
        self._device = None
        self._records = None

    # -- recording --------------------------------------------------------------

    def start(self):
        if self._handles:
            raise RuntimeError("Profile.start: already started")
        self._device = self.model.device
        self._cp = None if self._device.type == "cpu" else backend.require_cuda()
        # a model without parameters says "cpu": its first input decides the clock instead
        self._clock_from_input = next(self.model.parameters(), None) is None
        for name, layer in self.model.named_modules():
            name = name or "(model)"
            self._types[name] = type(layer).__name__
            self._handles += [
                layer.register_forward_pre_hook(lambda m, args, name=name: self._open(name, self._phase(), args),
                                                prepend=True),
                layer.register_forward_hook(lambda m, args, out, name=name: self._close_forward(name, m, out),
                                            always_call=True),
                layer.register_full_backward_pre_hook(lambda m, go, name=name: self._open(name, "backward"), prepend=True),
                layer.register_full_backward_hook(lambda m, gi, go, name=name: self._close(name, "backward")),
            ]
        return self

    def stop(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        self._stack = []  # a layer that raised leaves its interval open: dropped
        self._records = self._summarise()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @staticmethod
    def _phase():
        return "recompute" if is_recomputing() else "forward"

    def _stamp(self):
        if self._cp is None:
            return time.perf_counter()
        event = self._cp.cuda.Event()
        event.record()
        return event

    def _open(self, name, phase, args=()):
        if self._clock_from_input and args and backend.is_array(args[0]):
            self._clock_from_input = False
            self._device = backend.device_of(args[0])
            self._cp = None if self._device.type == "cpu" else backend.require_cuda()
        parent = self._stack[-1] if self._stack else None
        interval = _Interval(name, phase, self._stamp(), parent)
        (parent.children if parent is not None else self._roots).append(interval)
        self._stack.append(interval)

    def _close(self, name, phase, failed=False):
        end = self._stamp()
        for i in range(len(self._stack) - 1, -1, -1):  # intervals above it were left open by an error: dropped
            interval = self._stack[i]
            if interval.name == name and interval.phase == phase:
                del self._stack[i:]
                if not failed:  # a failed call keeps no end: it is left out of the results
                    interval.end = end
                    self._calls[name, phase] = self._calls.get((name, phase), 0) + 1
                return

    def _close_forward(self, name, layer, out):
        self._close(name, self._phase(), failed=out is None)  # None: forward raised (an always_call hook)
        if out is None:
            return
        cache = layer.__dict__.get("_cache")
        if cache is not None:
            roots = {id(r): r for r in (_root(a) for a in arrays_in(cache))}
            nbytes = sum(int(r.nbytes) for r in roots.values())
            self._cache[name] = max(self._cache.get(name, 0), nbytes)

    # -- results ----------------------------------------------------------------

    def _elapsed_ms(self, interval):
        if self._cp is None:
            return (interval.end - interval.start) * 1e3
        return float(self._cp.cuda.get_elapsed_time(interval.start, interval.end))

    def _summarise(self):
        if self._cp is not None and self._roots:
            self._cp.cuda.get_current_stream().synchronize()
        totals = {}  # (name, phase) -> [inclusive ms, self ms]

        def visit(interval):
            if interval.end is None:
                return 0.0  # never closed (an error inside it)
            ms = self._elapsed_ms(interval)
            inner = sum(visit(child) for child in interval.children)
            entry = totals.setdefault((interval.name, interval.phase), [0.0, 0.0])
            entry[0] += ms
            entry[1] += ms - inner
            return ms

        for root in self._roots:
            visit(root)
        records = []
        for name, kind in self._types.items():
            row = {"layer": name, "type": kind, "calls": self._calls.get((name, "forward"), 0)}
            for phase in PHASES:
                incl, own = totals.get((name, phase), (0.0, 0.0))
                row[f"{phase}_ms"] = incl
                row[f"self_{phase}_ms"] = own
            row["self_ms"] = sum(row[f"self_{p}_ms"] for p in PHASES)
            row["cache_bytes"] = self._cache.get(name, 0)
            records.append(row)
        total = sum(r["self_ms"] for r in records)
        for r in records:
            r["share"] = r["self_ms"] / total if total > 0 else 0.0
        return records

    def _results(self):
        if self._records is None:
            raise RuntimeError("Profile: stop() it (or leave its with block) before reading the results")
        return self._records

    def records(self):
        """One dict per layer, in the model's order: ``layer`` (its dotted
        name; "(model)" for the model itself), ``type``, ``calls``
        (forwards), ``forward_ms``, ``backward_ms``, ``recompute_ms``
        (inclusive of children, summed over calls), the same as
        ``self_*_ms``, ``self_ms`` (their sum), ``share`` (of the summed self
        times) and ``cache_bytes`` (the largest cache left by a forward)."""
        return [dict(r) for r in self._results()]

    @property
    def total_ms(self):
        """The model's own time: forward, backward and recomputation of every
        outermost call, summed."""
        return sum(r["self_ms"] for r in self._results())

    def table(self, sort_by=None, max_rows=None):
        """A Markdown table of :meth:`records`; ``sort_by`` a column name
        ("self_ms", "backward_ms", "cache_bytes", ...), largest first;
        ``max_rows`` keeps the first rows."""
        rows = self._results()
        if sort_by is not None:
            if sort_by not in rows[0]:
                raise KeyError(f"Profile.table: no column {sort_by!r}; the columns are {list(rows[0])}")
            rows = sorted(rows, key=lambda r: r[sort_by], reverse=True)
        rows = rows[:max_rows] if max_rows is not None else rows
        recompute = any(r["recompute_ms"] for r in rows)
        head = ["layer", "type", "calls", "forward ms", "backward ms"] + (["recompute ms"] if recompute else [])
        head += ["self ms", "self %", "cache MiB"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["layer"], r["type"], str(r["calls"]), f"{r['forward_ms']:.3f}", f"{r['backward_ms']:.3f}"]
            cells += [f"{r['recompute_ms']:.3f}"] if recompute else []
            cells += [f"{r['self_ms']:.3f}", f"{100 * r['share']:.1f}", f"{r['cache_bytes'] / 2**20:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        device = str(self._device)
        lines.append(f"\nTotal {self.total_ms:.3f} ms of layer time on {device} (the loss and the optimizer are outside it).")
        return "\n".join(lines)

    def to_json(self, path=None):
        """The records as JSON text; written to ``path`` as well when given."""
        text = json.dumps({"device": str(self._device), "total_ms": self.total_ms, "layers": self.records()}, indent=2)
        if path is not None:
            atomic_write(path, text.encode())
        return text


def profile(model):
    """A :class:`Profile` of ``model``, to use as ``with profile(model) as prof:``."""
    return Profile(model)
