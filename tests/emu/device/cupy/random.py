"""cupy.random on the emulated device: NumPy's legacy global generator, results on the device."""

import numpy as _np


def _on_device(f):
    def draw(*args, **kwargs):
        from . import ndarray

        r = f(*args, **kwargs)
        return ndarray._of(_np.asarray(r))

    return draw


seed = _np.random.seed
rand = _on_device(_np.random.rand)
randn = _on_device(_np.random.randn)
random = _on_device(_np.random.random)
random_sample = random
uniform = _on_device(_np.random.uniform)
normal = _on_device(_np.random.normal)
standard_normal = _on_device(_np.random.standard_normal)
randint = _on_device(_np.random.randint)
