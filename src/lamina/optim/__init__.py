"""Optimizers, learning-rate schedulers and gradient clipping."""

from . import lr_scheduler, swa_utils
from .adam import Adam, AdamW, RMSprop
from .adaptive import Adadelta, Adagrad, Adamax, NAdam, RAdam, Rprop
from .clip import clip_grad_norm_, clip_grad_value_
from .lr_scheduler import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LinearWarmup,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from .optimizer import Optimizer
from .sgd import ASGD, SGD

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta", "Rprop", "ASGD",
    "clip_grad_norm_", "clip_grad_value_",
    "lr_scheduler", "swa_utils", "LRScheduler", "StepLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "ExponentialLR", "MultiStepLR",
    "OneCycleLR", "LinearLR", "LinearWarmup", "SequentialLR", "LambdaLR", "MultiplicativeLR", "ConstantLR", "PolynomialLR",
    "CyclicLR", "ChainedScheduler",
    "ReduceLROnPlateau",
]
