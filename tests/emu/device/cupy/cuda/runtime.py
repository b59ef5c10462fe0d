"""cupy.cuda.runtime on the emulated device: one H100-like device."""

COMPUTE_CAPABILITY = "90"
MULTIPROCESSORS = 132


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount():  # noqa: N802 - CuPy's name
    return 1


def getDevice():  # noqa: N802
    from . import _current

    return _current[0]


def runtimeGetVersion():  # noqa: N802
    return 13000


def driverGetVersion():  # noqa: N802
    return 13000


def getDeviceProperties(device):  # noqa: N802
    return {"name": b"lamina emulated device", "major": 9, "minor": 0, "multiProcessorCount": MULTIPROCESSORS,
            "totalGlobalMem": 80 << 30}


def deviceSynchronize():  # noqa: N802
    pass
