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

from . import amp, data, init, memory, models, optim, testing, train
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
from .layers import (
    AdaptiveAvgPool1D,
    AdaptiveAvgPool2D,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    AvgPool1D,
    AvgPool2D,
    BatchNorm1d,
    BatchNorm2d,
    Conv1D,
    Conv2D,
    ConvTranspose1D,
    ConvTranspose2D,
    Dense,
    ELU,
    Dropout,
    Dropout1d,
    Dropout2d,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    GroupNorm,
    GRU,
    Identity,
    InstanceNorm1d,
    InstanceNorm2d,
    CircularPad1d,
    CircularPad2d,
    ConstantPad1d,
    ConstantPad2d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReplicationPad1d,
    ReplicationPad2d,
    ZeroPad1d,
    ZeroPad2d,
    PixelShuffle,
    PixelUnshuffle,
    Unflatten,
    KVCache,
    LayerDict,
    LayerList,
    LayerNorm,
    LeakyReLU,
    LogSoftmax,
    LSTM,
    MaxPool1D,
    MaxPool2D,
    Mish,
    MultiheadAttention,
    PReLU,
    ReLU,
    ReLU6,
    Residual,
    RMSNorm,
    RNN,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    Upsample,
)
from .losses import (
    BCELoss,
    CTCLoss,
    BCEWithLogits,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
    SoftmaxCrossEntropy,
)
from .module import Layer, Parameter, is_grad_enabled, no_grad, set_grad_enabled
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
    "Layer", "Parameter", "no_grad", "is_grad_enabled", "set_grad_enabled",
    "Device", "cuda_available", "get_array_module",
    "manual_seed", "get_rng_state", "set_rng_state",
    # layers
    "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "Softplus", "Mish", "PReLU", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish", "Softmax", "LogSoftmax",
    "Identity", "Flatten", "Dropout", "Sequential", "Residual", "LayerList", "LayerDict", "Checkpoint",
    "Conv1D", "Conv2D", "ConvTranspose1D", "ConvTranspose2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool2D", "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "Upsample",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm", "GroupNorm", "MultiheadAttention", "KVCache",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "Dropout1d", "Dropout2d", "Unflatten", "InstanceNorm1d", "InstanceNorm2d", "PixelShuffle", "PixelUnshuffle", "ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d", "CircularPad1d", "CircularPad2d",
    "Embedding", "RNN", "LSTM", "GRU",
    # losses
    "Loss", "SoftmaxCrossEntropy", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCEWithLogits", "BCELoss", "KLDivLoss", "CTCLoss",
    # saving and loading
    "save", "load", "save_checkpoint", "load_checkpoint", "load_torch_weights",
    # submodules
    "amp", "data", "init", "memory", "models", "optim", "testing", "train",
    # errors
    "LaminaError", "ShapeError", "DTypeError", "DeviceError", "CacheError", "StateDictError", "CheckpointError",
    "PerformanceWarning",
]
