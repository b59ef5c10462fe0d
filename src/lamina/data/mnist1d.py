"""MNIST-1D (Greydanus, 2020): 1-D signals of length 40 in 10 classes,
generated procedurally by the ``mnist1d`` package, so nothing is downloaded.
"""

import random

import numpy as np


def load_mnist1d(num_samples=5000, seed=42, train_split=0.8, dtype=np.float32):
    """Generate MNIST-1D with ``mnist1d``'s ``make_dataset``.

    The defaults reproduce the published data set (5000 samples, seed 42,
    4000 train / 1000 test).  ``make_dataset`` reseeds Python's and NumPy's
    global generators; their states are restored afterwards, so calling this
    does not disturb any other random stream.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float signals (N, 40) and
        int64 labels (N,).
    """
    from mnist1d.data import get_dataset_args, make_dataset  # noqa: PLC0415 - heavy import (matplotlib)

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    args.train_split = float(train_split)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (
        data["x"].astype(dtype),
        data["y"].astype(np.int64),
        data["x_test"].astype(dtype),
        data["y_test"].astype(np.int64),
    )
