"""lamina's layers, one family per file."""

from .attention import (
    KVCache,
    MultiheadAttention,
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from .activations import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .containers import Flatten, Identity, LayerDict, LayerList, Residual, Sequential
from .conv import Conv1D, Conv2D, ConvTranspose1D, ConvTranspose2D
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm
from .pooling import AvgPool1D, AvgPool2D, GlobalAvgPool2D, MaxPool1D, MaxPool2D
from .recurrent import GRU, LSTM, RNN
from .resample import AdaptiveAvgPool1D, AdaptiveAvgPool2D, Upsample

__all__ = [
    "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "Softplus", "Mish", "PReLU", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish", "Softmax", "LogSoftmax", "Identity", "Flatten", "Dropout", "Sequential",
    "Residual", "LayerList", "LayerDict", "Conv1D", "Conv2D", "ConvTranspose1D", "ConvTranspose2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool2D", "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "Upsample",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm", "GroupNorm", "MultiheadAttention", "KVCache",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "Embedding", "RNN", "LSTM", "GRU",
]
