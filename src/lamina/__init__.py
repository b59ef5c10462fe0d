"""lamina: a layer-based deep learning framework with hand-derived backward
passes, one code path over NumPy (CPU) and CuPy (NVIDIA GPUs), and its own
C++ and CUDA kernels.

    import lamina as lm
    model = lm.Sequential(lm.Dense(40, 256), lm.ReLU(), lm.Dense(256, 10))
    loss_fn = lm.SoftmaxCrossEntropy()
    opt = lm.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    loss = loss_fn(model(x), y)           # forward
    model.backward(loss_fn.backward())    # backward, by hand, layer by layer
    opt.step(); opt.zero_grad()
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# NumPy's OpenBLAS keeps its workers spinning for ~0.1 s after each matrix
# product; on a machine with few cores they take the cores from the lamina
# kernel that follows (a small CNN's training step measured 25% slower on 2
# cores).  OpenBLAS reads this once, when NumPy loads: only an import of
# lamina before NumPy can set it, and a value the user set stays.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
del _os, _sys

from . import amp, data, decoding, init, memory, models, optim, profiler, testing, train
from .backend import Device, cuda_available, get_array_module
from .checkpoint import Checkpoint
from .errors import (
    CacheError,
    CheckpointError,
    DeviceError,
    DTypeError,
    LaminaError,
    PerformanceWarning,
    ShapeError,
    StateDictError,
)
from . import layers, losses
from .layers import *  # noqa: F403 - every layer, listed once in layers.__all__
from .losses import *  # noqa: F403 - every loss, listed once in losses.__all__
from .hooks import RemovableHandle
from .module import Layer, Parameter, is_grad_enabled, is_recomputing, no_grad, set_grad_enabled
from .random import get_rng_state, manual_seed, set_rng_state
from .serialization import (
    load,
    load_checkpoint,
    load_torch_weights,
    save,
    save_checkpoint,
)

__all__ = [
    "__version__",
    # framework
    "Layer", "Parameter", "RemovableHandle", "no_grad", "is_grad_enabled", "set_grad_enabled", "is_recomputing",
    "Device", "cuda_available", "get_array_module",
    "manual_seed", "get_rng_state", "set_rng_state",
    # layers
    "Checkpoint", *layers.__all__,
    # losses
    *losses.__all__,
    # saving and loading
    "save", "load", "save_checkpoint", "load_checkpoint", "load_torch_weights",
    # submodules
    "amp", "data", "decoding", "init", "memory", "models", "optim", "profiler", "testing", "train",
    # errors
    "LaminaError", "ShapeError", "DTypeError", "DeviceError", "CacheError", "StateDictError", "CheckpointError",
    "PerformanceWarning",
]
