"""Loaders for data sets a user downloaded: MNIST (IDX files) and CIFAR-10
(the "python version" batches).  Nothing here downloads anything."""

import gzip
import os
import pickle

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """Read one IDX file (optionally gzipped) into a NumPy array.

    Format: two zero bytes, a dtype code, the number of dimensions, then each
    dimension as a big-endian uint32, then the data.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"read_idx: {path} holds {len(raw) - header} data bytes, its header promises {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(directory, names):
    for name in names:
        for candidate in (name, name + ".gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"expected one of {names} (optionally .gz) in {directory!r}")


def load_mnist(directory, dtype=np.float32):
    """MNIST from the four IDX files in ``directory`` (as distributed, gzipped
    or not; "train-images.idx3-ubyte" spellings too).

    Returns ``(x_train, y_train, x_test, y_test)``: images (N, 1, 28, 28)
    scaled to [0, 1] and int64 labels.
    """
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_find(directory, [f"{split}-images-idx3-ubyte", f"{split}-images.idx3-ubyte"]))
        labels = read_idx(_find(directory, [f"{split}-labels-idx1-ubyte", f"{split}-labels.idx1-ubyte"]))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"load_mnist: expected images (N, H, W) and labels (N,) in {directory!r}, "
                f"received {images.shape} and {labels.shape}"
            )
        out += [(images.astype(dtype) / 255)[:, None], labels.astype(np.int64)]
    return tuple(out)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches and nothing else: only the NumPy
    functions that rebuild an array may be looked up, so a tampered file
    cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"load_cifar10: refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path):
    with open(path, "rb") as f:
        try:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        except Exception as e:
            raise ValueError(f"load_cifar10: cannot read {path}: {e}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"load_cifar10: {path} does not hold a CIFAR-10 batch")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"load_cifar10: {path} has no 'data' and 'labels' entries")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"load_cifar10: {path}: expected data (N, 3072) and N labels, received {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load_cifar10(directory, dtype=np.float32):
    """CIFAR-10 from the python batches (data_batch_1..5, test_batch) in
    ``directory`` or in its ``cifar-10-batches-py`` subfolder.

    Returns ``(x_train, y_train, x_test, y_test)``: images (N, 3, 32, 32)
    scaled to [0, 1] and int64 labels.
    """
    sub = os.path.join(directory, "cifar-10-batches-py")
    if os.path.isdir(sub):
        directory = sub
    train_files = sorted(f for f in os.listdir(directory) if f.startswith("data_batch_")) if os.path.isdir(directory) else []
    if not train_files or not os.path.isfile(os.path.join(directory, "test_batch")):
        raise FileNotFoundError(f"load_cifar10: expected data_batch_1..5 and test_batch in {directory!r}")
    parts = [_read_cifar_batch(os.path.join(directory, f)) for f in train_files]
    x_test, y_test = _read_cifar_batch(os.path.join(directory, "test_batch"))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train.astype(dtype) / 255, y_train, x_test.astype(dtype) / 255, y_test
