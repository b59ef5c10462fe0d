"""Batches over in-memory arrays: shuffled, seeded and resumable."""

import numpy as np

from .. import random as lrandom


class DataLoader:
    """Iterate over aligned arrays (inputs, labels, ...), or over a data set
    of samples, in mini-batches.

    Args:
        *arrays: NumPy arrays with the same first dimension; or one data set
            (PyTorch's map-style protocol): an object with ``__len__`` and
            ``__getitem__(i)`` returning sample i, for example an array,
            a tuple of arrays, or a dict of them, made on demand (loaded
            from disk, augmented).
        batch_size: samples per batch.
        shuffle: a new permutation every epoch.
        drop_last: skip the last batch when it is smaller than batch_size.
        seed: seed of the shuffle.  By default it is drawn once, at
            construction, from lamina's generator, so :func:`lamina.manual_seed`
            fixes it.
        collate_fn: a data set's samples (a list) to one batch; by default
            :func:`default_collate` (NumPy stacks, field by field).

    Epoch e's order is a pure function of (seed, e): the permutation of
    ``numpy.random.default_rng([seed, e])``.  Together with the number of
    batches already consumed that is the loader's whole state
    (:meth:`state_dict`), so an interrupted run resumes mid-epoch on exactly
    the batch it would have seen next.

    Each iteration yields a tuple with one batch per array (or the batch
    itself for a single array), or a data set's collated batch, and advances
    :attr:`epoch` when it completes.
    """

    def __init__(self, *arrays, batch_size=32, shuffle=False, drop_last=False, seed=None, collate_fn=None):
        if not arrays:
            raise ValueError("DataLoader: expected at least one array")
        self.dataset = None
        if len(arrays) == 1 and not hasattr(arrays[0], "shape"):
            if not (hasattr(arrays[0], "__len__") and hasattr(arrays[0], "__getitem__")):
                raise TypeError(f"DataLoader: expected arrays, or a data set with __len__ and __getitem__, received "
                                f"{type(arrays[0]).__name__}")
            self.dataset, arrays = arrays[0], ()
        elif collate_fn is not None:
            raise ValueError("DataLoader: collate_fn applies to a data set; arrays are batched by indexing")
        n = len(self.dataset) if self.dataset is not None else len(arrays[0])
        for i, a in enumerate(arrays):
            if not hasattr(a, "shape") or len(a) != n:
                raise ValueError(
                    f"DataLoader: expected arrays of equal length {n}, received length "
                    f"{len(a) if hasattr(a, '__len__') else '?'} for array {i}"
                )
        if int(batch_size) <= 0:
            raise ValueError(f"DataLoader: expected batch_size >= 1, received {batch_size!r}")
        self.arrays = arrays
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(lrandom.cpu_generator().integers(2**62)) if seed is None else int(seed)
        self.epoch = 0
        self.position = 0  # batches of the current epoch already yielded

    @property
    def num_samples(self):
        return len(self.dataset) if self.dataset is not None else len(self.arrays[0])

    def __len__(self):
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch):
        """The sample order of ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)

    def __iter__(self):
        order = self.order(self.epoch)
        for b in range(self.position, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.dataset is not None:
                batch = self.collate_fn([self.dataset[int(i)] for i in idx])
            else:
                batch = tuple(a[idx] for a in self.arrays)
                batch = batch if len(batch) > 1 else batch[0]
            self.position = b + 1  # counted once the batch exists: a sample that fails to load is read again
            yield batch
        self.epoch += 1
        self.position = 0

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])


def default_collate(samples):
    """A list of samples to one batch, as PyTorch's ``default_collate`` for
    NumPy: tuples and lists field by field (a tuple of batches), dicts key
    by key, and arrays or numbers stacked along a new first axis."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if any(not isinstance(s, (tuple, list)) or len(s) != len(first) for s in samples):
            raise ValueError(f"DataLoader: expected every sample to have {len(first)} fields, as the first, received "
                             f"{sorted({len(s) if isinstance(s, (tuple, list)) else 1 for s in samples})}")
        return tuple(default_collate([s[k] for s in samples]) for k in range(len(first)))
    if isinstance(first, dict):
        if any(not isinstance(s, dict) or s.keys() != first.keys() for s in samples):
            raise ValueError(f"DataLoader: expected every sample to have the keys {list(first)}, as the first")
        return {k: default_collate([s[k] for s in samples]) for k in first}
    arrays = [np.asarray(s) for s in samples]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"DataLoader: expected samples of one shape to stack, received shapes "
                         f"{sorted({a.shape for a in arrays})}; pass a collate_fn to batch them otherwise")
    return np.stack(arrays)


def train_val_split(*arrays, val_fraction=0.1, seed=0):
    """Split aligned arrays into a training part and a validation part with a
    seeded shuffle.  Returns ``(train_arrays, val_arrays)``, two tuples."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"train_val_split: expected val_fraction in (0, 1), received {val_fraction!r}")
    n = len(arrays[0])
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    return tuple(a[train] for a in arrays), tuple(a[val] for a in arrays)
