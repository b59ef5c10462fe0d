"""Mixed precision: 16-bit compute, float32 master weights, loss scaling.

    model = lamina.amp.autocast(model, "bfloat16")   # or "float16"
    scaler = lamina.amp.LossScaler()                 # float16 needs one; bfloat16 does not
    loss = loss_fn(model(x), y)
    model.backward(scaler.scale(loss_fn.backward()))
    scaler.unscale_(opt)                             # optional, before clipping
    lamina.optim.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)                                 # skipped if any gradient is inf or NaN
    scaler.update()

What autocast does:

* Every layer computes in the 16-bit dtype (its ``compute_dtype``): a layer
  with parameters casts its input and a 16-bit copy of its parameters, so
  activations, and the caches backward keeps, are 16-bit (half the memory).
* Parameters, their gradients and the optimizer state stay float32 (the
  master copy): gradients are computed in 16 bits and accumulated into the
  float32 ``grad``.
* Softmax, normalisation and losses reduce in float32.
* GEMMs multiply 16-bit inputs with float32 accumulation (tensor cores on a
  GPU; widened to float32 on the CPU, which has no 16-bit arithmetic: there
  mixed precision saves memory, not time).

bfloat16 on the CPU comes from ml_dtypes.  On the GPU, float16 runs on any
CuPy; bfloat16 needs a CuPy that computes on ml_dtypes' bfloat16 arrays
(CuPy 14 and later), which :func:`lamina.backend.cupy_bfloat16` checks, and
autocast says so when it cannot.  lamina's CUDA kernels take both.
"""

import math

import numpy as np

from . import backend, ops
from .errors import DTypeError


def autocast(model, dtype="bfloat16"):
    """Make every layer of ``model`` compute in ``dtype`` (float16 or
    bfloat16), keeping its float32 parameters as the master copy.
    ``dtype=None`` turns it off.  Returns the model."""
    if dtype is not None:
        dtype = backend.as_dtype(dtype)
        if not backend.is_low_precision(dtype):
            raise DTypeError(f"autocast: expected float16 or bfloat16, received {dtype}")
        if dtype.name == "bfloat16" and model.device.type == "cuda":
            ok, why = backend.cupy_bfloat16()
            if not ok:
                raise DTypeError(f"autocast: bfloat16 on the GPU needs bfloat16 CuPy arrays: {why}; use float16")
    for m in model.modules():
        object.__setattr__(m, "_amp_dtype", dtype)
        m.clear_cache()
    return model


class LossScaler:
    """Dynamic loss scaling with the semantics of ``torch.amp.GradScaler``.

    float16 gradients underflow to zero below 6e-8; scaling the loss by S
    (2^16 to start) lifts them into range.  Before the optimizer steps, the
    float32 gradients are divided by S again and checked: if any is inf or
    NaN the step is skipped (parameters, moments and step counts untouched,
    and a scheduler stepped right after does not advance) and S halves;
    after ``growth_interval`` clean steps in a row S doubles.

    Args:
        init_scale: S at the start (2^16).
        growth_factor, backoff_factor: 2.0 and 0.5.
        growth_interval: clean steps before S grows (2000).
        enabled: False makes every method a pass-through (bfloat16 needs no scaler).
    """

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
        if not init_scale > 0 or not growth_factor > 1 or not 0 < backoff_factor < 1 or int(growth_interval) < 1:
            raise ValueError(
                "LossScaler: expected init_scale > 0, growth_factor > 1, 0 < backoff_factor < 1 and growth_interval >= 1"
            )
        self.enabled = bool(enabled)
        self._scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._unscaled = {}  # id(optimizer) -> found_inf, for the current step

    def get_scale(self):
        return self._scale if self.enabled else 1.0

    def scale(self, grad):
        """The loss gradient times S (pass it to ``model.backward``)."""
        if not self.enabled:
            return grad
        return grad * np.float32(self._scale).astype(grad.dtype) if backend.is_low_precision(grad.dtype) else grad * self._scale

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by S in place and look for inf/NaN.
        At most once per step; call it before clipping gradients."""
        if not self.enabled:
            return
        if id(optimizer) in self._unscaled:
            raise RuntimeError("LossScaler.unscale_: already called for this optimizer since the last update()")
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self._unscaled[id(optimizer)] = ops.unscale_grads(grads, 1.0 / self._scale)

    def step(self, optimizer):
        """``optimizer.step()`` unless a gradient is inf or NaN.  Returns True
        when the step was taken."""
        if not self.enabled:
            optimizer.step()
            optimizer._last_step_skipped = False
            return True
        if id(optimizer) not in self._unscaled:
            self.unscale_(optimizer)
        skipped = self._unscaled[id(optimizer)]
        optimizer._last_step_skipped = skipped
        if not skipped:
            optimizer.step()
        return not skipped

    def update(self):
        """Adjust S after the step: halve it if any optimizer saw inf/NaN,
        else count a clean step and double S every ``growth_interval``."""
        if not self.enabled:
            return
        if any(self._unscaled.values()):
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        if not math.isfinite(self._scale) or self._scale == 0:
            raise FloatingPointError(f"LossScaler: the scale became {self._scale}")
        self._unscaled = {}

    def state_dict(self):
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "growth_tracker": self._growth_tracker, "enabled": self.enabled}

    def load_state_dict(self, state):
        self._scale = float(state["scale"])
        self.growth_factor, self.backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self.growth_interval, self._growth_tracker = int(state["growth_interval"]), int(state["growth_tracker"])
        self.enabled = bool(state["enabled"])
