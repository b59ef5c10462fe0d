"""scikit-learn's handwritten digits, shipped with lamina (no download, no
scikit-learn needed): 1797 images of 8x8 pixels with values 0..16, 10 classes.

The data are the test set of the UCI "Optical Recognition of Handwritten
Digits" data set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), as distributed
by scikit-learn's ``load_digits``; see README.md in this folder.
"""

import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


def load_digits(test_fraction=0.2, seed=0, dtype=np.float32, flat=False):
    """The digits, split into train and test sets with a seeded shuffle.

    Args:
        test_fraction: share of the 1797 images held out for testing.
        seed: seed of the split's shuffle (NumPy's PCG64), independent of
            :func:`lamina.manual_seed`.
        dtype: dtype of the images, scaled to [0, 1].
        flat: return images as (N, 64) instead of (N, 1, 8, 8).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images and int64 labels.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"load_digits: expected test_fraction in (0, 1), received {test_fraction!r}")
    with np.load(_PATH) as data:
        images, labels = data["images"], data["labels"]
    x = (images.astype(dtype) / 16).reshape(-1, 64 if flat else 1, *(() if flat else (8, 8)))
    y = labels.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
