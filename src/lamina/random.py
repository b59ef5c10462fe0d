"""lamina's random sources, seeded together by :func:`manual_seed`.

* initialisation draws from one NumPy generator on the CPU (then the weights
  move to their device), so a seed gives the same weights on every backend;
* dropout draws on the device that holds the activations (the NumPy
  generator on the CPU, a counter-based generator on each GPU);
* shuffling draws from the CPU generator as well.

Each source's state can be read and restored (:func:`get_rng_state`,
:func:`set_rng_state`), which checkpoints and recomputation rely on.
"""

import numpy as np

from . import backend

_DEFAULT_SEED = 0x1A31A

_seed = _DEFAULT_SEED
_cpu = np.random.Generator(np.random.PCG64(_seed))
_cuda = {}  # device index -> offset of the counter-based GPU generator


def manual_seed(seed):
    """Seed every random source lamina uses, on the CPU and every GPU."""
    global _seed, _cpu
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"expected a non-negative seed, received {seed}")
    _seed = seed
    _cpu = np.random.Generator(np.random.PCG64(seed))
    _cuda.clear()  # every GPU stream restarts at offset 0


def initial_seed():
    return _seed


def cpu_generator():
    """The NumPy generator used for initialisation, shuffling and CPU dropout."""
    return _cpu


def uniform_like(x):
    """Uniform samples in [0, 1) with the shape and dtype of ``x``, on its device.

    On the CPU they come from the NumPy generator.  On a GPU they come from a
    counter-based generator: sample i of a draw is a hash of (seed, device,
    offset + i), and the device's offset advances by the draw's size.  Its
    whole state is one integer per device, so it is cheap to save and replay.
    """
    shape, dtype = x.shape, np.dtype(x.dtype)
    if isinstance(x, np.ndarray):
        if dtype.itemsize < 4:
            return _cpu.random(shape, dtype=np.float32).astype(dtype)
        return _cpu.random(shape, dtype=dtype)
    from .ops import random_uniform_cuda  # noqa: PLC0415 - ops sits above this module

    key, offset = cuda_draw(x)
    with x.device:
        return random_uniform_cuda(shape, dtype, key, offset)


def cuda_draw(x):
    """(key, offset) of the next draw of ``x.size`` GPU samples on x's device,
    and the device's offset advanced past them: a kernel that hashes
    (key, offset + i) as ``uniform_like`` does draws the same numbers."""
    if backend.require_cuda().cuda.get_current_stream().is_capturing():
        raise RuntimeError(
            "lamina.random: a draw on the GPU (Dropout's mask, say) while a CUDA graph is being captured; the "
            "generator's offset is passed from the host, so every replay would draw the same numbers. Capture a "
            "step without dropout, or run it eagerly"
        )
    index = x.device.id
    offset = _cuda.get(index, 0)
    _cuda[index] = offset + int(x.size)
    key = (_seed * 0x9E3779B97F4A7C15 + index) % 2**64
    return key, offset


def get_rng_state():
    """A snapshot of every lamina random source (a copy; safe to keep)."""
    return {"seed": _seed, "cpu": _cpu.bit_generator.state, "cuda": dict(_cuda)}


def set_rng_state(state):
    """Restore a snapshot taken by :func:`get_rng_state`."""
    global _seed
    _seed = int(state["seed"])
    _cpu.bit_generator.state = state["cpu"]
    _cuda.clear()
    _cuda.update({int(k): int(v) for k, v in state.get("cuda", {}).items()})
