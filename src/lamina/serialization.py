"""Saving and loading: safetensors files with versioned metadata, no pickle.

* :func:`save` / :func:`load`: a model's weights (its ``state_dict``).
* :func:`save_checkpoint` / :func:`load_checkpoint`: everything a training
  run needs to continue bit for bit: model, optimizer, scheduler, loss scaler,
  data loader position, epoch and step, and every random state (lamina's CPU
  and GPU generators, Python's ``random``, NumPy's global generator).
* :func:`load_torch_weights`: a PyTorch ``state_dict`` (a file saved with
  ``torch.save``, read with ``weights_only=True``, or a mapping in memory).

Arrays are stored as safetensors tensors; everything else (hyperparameters,
counters, generator states) as JSON in the file's metadata.  Files are written
atomically: to a temporary file in the same folder, flushed and fsynced, then
renamed over the target, so a crash never leaves a half-written file.
"""

import json
import os
import random
import tempfile
from collections import OrderedDict

import numpy as np

from . import backend
from . import random as lrandom
from .errors import CheckpointError

FORMAT = "lamina"
FORMAT_VERSION = 1


def _version():
    from . import __version__  # noqa: PLC0415 - the package imports this module

    return __version__


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------


def atomic_write(path, data):
    """Write ``data`` (bytes) to ``path``: temporary file, fsync, rename, fsync the folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _to_numpy(a):
    if hasattr(a, "detach") and hasattr(a, "numpy"):  # a torch tensor
        a = a.detach().cpu().numpy()
    a = backend.to_device(a, "cpu") if backend.is_array(a) else np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d


def _write(path, tensors, kind, state=None):
    from safetensors.numpy import save as st_save  # noqa: PLC0415 - keeps `import lamina` light

    metadata = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind, "lamina_version": _version(),
        "state": json.dumps(state if state is not None else {}),
        "order": json.dumps(list(tensors)),  # safetensors sorts its keys; a state_dict's order is the model's
    }
    atomic_write(path, st_save({k: _to_numpy(v) for k, v in tensors.items()}, metadata=metadata))


def _read(path, expect_kind=None):
    """(tensors, kind, state) from a lamina safetensors file, or a CheckpointError."""
    from safetensors import safe_open  # noqa: PLC0415

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = OrderedDict((k, f.get_tensor(k)) for k in f.keys())
    except Exception as e:  # safetensors raises its own error types for a broken file
        raise CheckpointError(f"{path!r} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} was not written by lamina (metadata format {meta.get('format')!r})")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        version = -1
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has format version {meta.get('format_version')!r}; this lamina reads version {FORMAT_VERSION}")
    kind = meta.get("kind")
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{path!r} holds a {kind!r} file, expected a {expect_kind!r} file")
    try:
        state = json.loads(meta.get("state", "{}"))
        order = json.loads(meta.get("order", "[]"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path!r} has corrupt metadata ({e})") from None
    if isinstance(order, list) and sorted(order) == sorted(tensors):  # else (older files) the file's order
        tensors = OrderedDict((k, tensors[k]) for k in order)
    return tensors, kind, state


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------


def save(model, path, metadata=None):
    """Save a model's ``state_dict`` (or any mapping of name -> array) to
    ``path`` as safetensors.  ``metadata``: JSON-able extras stored with it."""
    tensors = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    _write(path, tensors, "weights", {"user": metadata or {}})


def load(path, model=None, strict=True):
    """Load weights saved by :func:`save` (or the model part of a checkpoint).

    With ``model``, they are loaded into it (validated first: on error the
    model is untouched) and the model is returned; without, the
    ``OrderedDict`` of NumPy arrays is returned.
    """
    tensors, kind, _ = _read(path)
    if kind == "checkpoint":
        tensors = OrderedDict((k[len("model/"):], v) for k, v in tensors.items() if k.startswith("model/"))
    elif kind != "weights":
        raise CheckpointError(f"{os.fspath(path)!r} holds a {kind!r} file, expected weights or a checkpoint")
    if model is None:
        return tensors
    model.load_state_dict(tensors, strict=strict)
    return model


def load_torch_weights(source, model, strict=True):
    """Load a PyTorch ``state_dict`` into a lamina model of the same
    architecture (same key names and layouts).  ``source`` is a mapping of
    tensors or arrays, or a file written by ``torch.save(model.state_dict())``,
    read with ``torch.load(..., weights_only=True)``."""
    if isinstance(source, (str, os.PathLike)):
        try:
            import torch  # noqa: PLC0415
        except ImportError:
            raise ImportError("load_torch_weights: reading a PyTorch file needs torch installed") from None
        source = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
    model.load_state_dict(source, strict=strict)
    return model


# --------------------------------------------------------------------------
# training checkpoints
# --------------------------------------------------------------------------


def _rng_states():
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return (
        {"lamina": lrandom.get_rng_state(), "python": [version, list(internal), gauss],
         "numpy": [kind, int(pos), int(has_gauss), float(cached)]},
        {"rng/numpy_keys": np.asarray(keys, dtype=np.uint32)},
    )


def _set_rng_states(state, tensors):
    lrandom.set_rng_state(state["lamina"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, tensors["rng/numpy_keys"], pos, has_gauss, cached))


def save_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, loader=None, epoch=0, step=0, extra=None):
    """Save everything needed to resume training exactly (see the module docstring).

    ``extra``: JSON-able values of your own (returned by :func:`load_checkpoint`).
    """
    tensors = OrderedDict(("model/" + k, v) for k, v in model.state_dict().items())
    state = {"epoch": int(epoch), "step": int(step), "extra": extra or {}}
    if optimizer is not None:
        osd = optimizer.state_dict()
        scalars = {}
        for i, entry in osd["state"].items():
            for name, value in entry.items():
                if backend.is_array(value) or isinstance(value, np.ndarray):
                    tensors[f"optimizer/{i}/{name}"] = value
                else:
                    scalars.setdefault(str(i), {})[name] = value
        state["optimizer"] = {"type": type(optimizer).__name__, "param_groups": osd["param_groups"], "scalars": scalars}
    for name, obj in (("scheduler", scheduler), ("scaler", scaler), ("loader", loader)):
        if obj is not None:
            state[name] = {"type": type(obj).__name__, "state": obj.state_dict()}
    state["rng"], rng_tensors = _rng_states()
    tensors.update(rng_tensors)
    _write(path, tensors, "checkpoint", state)


def _check_fits(path, optimizer, osd):
    groups = osd["param_groups"]
    if len(groups) != len(optimizer.param_groups) or any(
        len(a["params"]) != len(b["params"]) for a, b in zip(optimizer.param_groups, groups)
    ):
        raise CheckpointError(
            f"{path!r}: the optimizer in the checkpoint has groups of {[len(g['params']) for g in groups]} parameters, "
            f"this one {[len(g['params']) for g in optimizer.param_groups]}"
        )


def load_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, loader=None, restore_rng=True):
    """Restore what :func:`save_checkpoint` saved into the given objects.

    Everything is read and checked before anything changes.  Returns a dict
    with ``epoch``, ``step`` and ``extra``.
    """
    path = os.fspath(path)
    tensors, _, state = _read(path, expect_kind="checkpoint")
    model_sd = OrderedDict((k[len("model/"):], v) for k, v in tensors.items() if k.startswith("model/"))
    parts = {}
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler), ("loader", loader)):
        if obj is None:
            continue
        if name not in state:
            raise CheckpointError(f"{path!r} holds no {name} state")
        if state[name]["type"] != type(obj).__name__:
            raise CheckpointError(f"{path!r} holds the state of a {state[name]['type']}, not of a {type(obj).__name__}")
        parts[name] = state[name]
    osd = None
    if optimizer is not None:
        o = state["optimizer"]
        entries = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, i, name = key.split("/", 2)
                entries.setdefault(int(i), {})[name] = value
        for i, scalars in o["scalars"].items():
            entries.setdefault(int(i), {}).update(scalars)
        osd = {"state": entries, "param_groups": [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in o["param_groups"]]}
        _check_fits(path, optimizer, osd)
    # Validated; now change things.  The model validates every key and shape first.
    try:
        model.load_state_dict(model_sd)
    except Exception as e:
        raise CheckpointError(f"{path!r} does not fit this model: {e}") from None
    if optimizer is not None:
        optimizer.load_state_dict(osd)
    for name in ("scheduler", "scaler", "loader"):
        if name in parts:
            {"scheduler": scheduler, "scaler": scaler, "loader": loader}[name].load_state_dict(parts[name]["state"])
    if restore_rng:
        _set_rng_states(state["rng"], tensors)
    return {"epoch": state["epoch"], "step": state["step"], "extra": state["extra"]}
