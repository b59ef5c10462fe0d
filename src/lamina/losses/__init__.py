"""Losses.

A loss is called like a function, ``loss = loss_fn(logits, target)``, and
returns the loss as a Python float.  ``loss_fn.backward()`` then returns
d(loss)/d(logits), to be passed to the model's ``backward``.  Losses have no
parameters, so they are not layers, but they validate their inputs the same
way and name themselves in every error.

A Python float makes the host wait for the GPU at every step.
``loss_fn.compute(logits, target)`` does the same work but returns the loss
as a 0-d float64 array on the logits' device, so the host can go on queueing
the backward and the update (and a whole step can be captured in a CUDA
graph); read it with ``float(loss)`` when you log it.

``reduction="none"`` keeps one loss per element (per sample for CTCLoss,
per prediction for the class losses), as PyTorch's: the call returns them
as an array, and ``loss_fn.backward(dloss)`` takes their gradient (of the
returned shape: per-sample weights, say) and returns the input's.  With
"mean" or "sum", ``backward()`` takes no argument, or a number that scales
the gradient.

A loss over several inputs (the ranking and metric-learning losses, the
Gaussian likelihood with its variance) is called with them in PyTorch's
order, and ``backward`` returns a tuple: one gradient per input that gets
one, in that order.
"""

from .base import Loss
from .classification import NLLLoss, SoftmaxCrossEntropy
from .ctc import CTCLoss
from .margin import (
    CosineEmbeddingLoss,
    HingeEmbeddingLoss,
    MarginRankingLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    SoftMarginLoss,
    TripletMarginLoss,
)
from .probabilistic import BCELoss, BCEWithLogits, KLDivLoss
from .regression import GaussianNLLLoss, HuberLoss, L1Loss, MSELoss, PoissonNLLLoss, SmoothL1Loss

__all__ = [
    "BCELoss", "BCEWithLogits", "CTCLoss", "CosineEmbeddingLoss", "GaussianNLLLoss", "HingeEmbeddingLoss", "HuberLoss",
    "KLDivLoss", "L1Loss", "Loss", "MSELoss", "MarginRankingLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss",
    "NLLLoss", "PoissonNLLLoss", "SmoothL1Loss", "SoftMarginLoss", "SoftmaxCrossEntropy", "TripletMarginLoss",
]
