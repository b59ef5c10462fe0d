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
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from .containers import Flatten, Identity, LayerDict, LayerList, Residual, Sequential, Unflatten
from .conv import Conv1D, Conv2D, ConvTranspose1D, ConvTranspose2D
from .dense import Dense
from .distance import Bilinear, CosineSimilarity, PairwiseDistance
from .dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d, FeatureAlphaDropout
from .embedding import Embedding
from .fold import Fold, Unfold
from .norm import (
    BatchNorm1d,
    BatchNorm2d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    LocalResponseNorm,
    RMSNorm,
)
from .padding import (
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
)
from .pooling import (
    AdaptiveMaxPool1D,
    AdaptiveMaxPool2D,
    AvgPool1D,
    AvgPool2D,
    GlobalAvgPool2D,
    LPPool1D,
    LPPool2D,
    MaxPool1D,
    MaxPool2D,
    MaxUnpool1D,
    MaxUnpool2D,
)
from .recurrent import GRU, LSTM, RNN
from .resample import AdaptiveAvgPool1D, AdaptiveAvgPool2D, ChannelShuffle, PixelShuffle, PixelUnshuffle, Upsample

__all__ = [
    "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "Softplus", "Mish", "PReLU", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish", "Softmax", "LogSoftmax",
    "SELU", "CELU", "GLU", "LogSigmoid", "Softsign", "Softmin", "Tanhshrink", "Threshold", "Hardshrink", "Softshrink", "Identity", "Flatten", "Dropout", "Sequential",
    "Residual", "LayerList", "LayerDict", "Conv1D", "Conv2D", "ConvTranspose1D", "ConvTranspose2D", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool2D", "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "MaxUnpool1D", "MaxUnpool2D", "Upsample",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "RMSNorm", "GroupNorm", "MultiheadAttention", "KVCache",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder", "Transformer",
    "Dropout1d", "Dropout2d", "Unflatten", "InstanceNorm1d", "InstanceNorm2d", "PixelShuffle", "PixelUnshuffle", "ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d", "CircularPad1d", "CircularPad2d",
    "Embedding", "RNN", "LSTM", "GRU", "Fold", "Unfold", "Bilinear", "CosineSimilarity", "PairwiseDistance",
    "LocalResponseNorm", "LPPool1D", "LPPool2D", "ChannelShuffle", "AlphaDropout", "FeatureAlphaDropout",
]
