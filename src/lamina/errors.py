"""Exceptions and warnings raised by lamina.

Every error raised at a layer boundary names the layer and says what was
expected and what was received, so the message alone locates the problem.
"""

import warnings


class LaminaError(Exception):
    """Base class of lamina's own exceptions."""


class ShapeError(LaminaError, ValueError):
    """An array has the wrong shape for the layer it was given to."""


class DTypeError(LaminaError, TypeError):
    """An array has the wrong dtype for the layer it was given to."""


class DeviceError(LaminaError, RuntimeError):
    """Arrays on different devices (or an unavailable device) were mixed."""


class CacheError(LaminaError, RuntimeError):
    """backward() was called without a forward() that cached its inputs."""


class StateDictError(LaminaError, KeyError):
    """A state_dict does not match the model it is loaded into."""

    def __str__(self):  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class PerformanceWarning(UserWarning):
    """A slower path than the best one is being taken (for example a kernel
    module that was not built).  Silence with
    ``warnings.filterwarnings("ignore", category=lamina.PerformanceWarning)``."""


_warned = set()


def warn_once(key, message, category=PerformanceWarning):
    """Emit ``message`` once per process for ``key``."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, category, stacklevel=3)


class CheckpointError(LaminaError, ValueError):
    """A weights or checkpoint file is corrupt, of another format or version,
    or does not fit the objects it is loaded into."""
