"""DataLoader (shuffle, drop_last, seeding, mid-epoch resumption), the
train/validation split, and the MNIST IDX and CIFAR-10 readers on small
files the tests write."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import lamina as lm
from lamina.data import DataLoader, load_cifar10, load_mnist, read_idx, train_val_split


def test_loader_batches_cover_every_sample_once():
    x, y = np.arange(10).reshape(10, 1).astype(np.float32), np.arange(10)
    batches = list(DataLoader(x, y, batch_size=3, shuffle=True, seed=1))
    assert [len(b[1]) for b in batches] == [3, 3, 3, 1]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)
    assert len(DataLoader(x, batch_size=3, drop_last=True)) == 3
    assert [b.shape[0] for b in DataLoader(x, batch_size=3, drop_last=True)] == [3, 3, 3]
    np.testing.assert_array_equal(np.concatenate(list(DataLoader(x, batch_size=4)))[:, 0], np.arange(10))


def test_loader_is_seeded_by_manual_seed_and_reshuffles_each_epoch():
    x = np.arange(50)
    lm.manual_seed(3)
    a = DataLoader(x, batch_size=50, shuffle=True)
    lm.manual_seed(3)
    b = DataLoader(x, batch_size=50, shuffle=True)
    e0a, e0b = next(iter(a)), next(iter(b))
    np.testing.assert_array_equal(e0a, e0b)
    assert a.epoch == 0 and a.position == 1
    list(a)  # finish epoch 0 (nothing left)
    assert a.epoch == 1
    assert not np.array_equal(next(iter(a)), e0a)


def test_loader_resumes_mid_epoch_on_the_next_batch():
    x = np.arange(23)
    straight = DataLoader(x, batch_size=4, shuffle=True, seed=5)
    reference = [b.copy() for _ in range(3) for b in straight]
    first = DataLoader(x, batch_size=4, shuffle=True, seed=5)
    got = [b.copy() for b in first]  # epoch 0
    for i, b in enumerate(first):  # epoch 1, interrupted after two batches
        got.append(b.copy())
        if i == 1:
            break
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    resumed = DataLoader(x, batch_size=4, shuffle=True, seed=999)
    resumed.load_state_dict(state)
    got += [b.copy() for b in resumed]  # rest of epoch 1
    got += [b.copy() for b in resumed]  # epoch 2
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


def test_loader_and_split_errors():
    with pytest.raises(ValueError, match="equal length 3.*length 2 for array 1"):
        DataLoader(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros(3), batch_size=0)
    (xt, yt), (xv, yv) = train_val_split(np.arange(20), np.arange(20) * 2, val_fraction=0.25, seed=0)
    assert len(xv) == 5 and len(xt) == 15 and sorted(np.concatenate([xt, xv]).tolist()) == list(range(20))
    np.testing.assert_array_equal(yt, xt * 2)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(np.arange(3), val_fraction=1.0)


class _Squares:
    """A map-style data set made on demand: sample i is (features, label, meta)."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return np.full(3, i, np.float32), i * i, {"id": i}


def test_loader_over_a_data_set_batches_and_resumes_as_over_arrays(torch):
    """A data set's samples are collated field by field (as PyTorch's
    default_collate), in the same order and with the same resumption as
    arrays under the same seed."""
    data = _Squares(11)
    loader = DataLoader(data, batch_size=4, shuffle=True, seed=7)
    twin = DataLoader(np.arange(11), batch_size=4, shuffle=True, seed=7)
    for (xb, yb, meta), ib in zip(loader, twin):
        np.testing.assert_array_equal(xb[:, 0], ib)
        np.testing.assert_array_equal(yb, ib * ib)
        np.testing.assert_array_equal(meta["id"], ib)
        assert xb.dtype == np.float32 and xb.shape == (len(ib), 3)
    assert data.reads == 11 and loader.epoch == 1
    samples = [data[i] for i in (3, 1, 4)]
    ours = lm.data.default_collate(samples)
    theirs = torch.utils.data.default_collate(samples)
    for a, b in zip(ours[:2], theirs[:2]):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(ours[2]["id"], theirs[2]["id"].numpy())

    interrupted = DataLoader(data, batch_size=4, shuffle=True, seed=7)
    first = next(iter(interrupted))
    resumed = DataLoader(_Squares(11), batch_size=4, shuffle=True, seed=0)
    resumed.load_state_dict(interrupted.state_dict())
    rest = [b[1] for b in resumed]
    straight = [b[1] for b in DataLoader(data, batch_size=4, shuffle=True, seed=7)]
    assert [first[1].tolist()] + [r.tolist() for r in rest] == [s.tolist() for s in straight]

    words = DataLoader(["a", "bb", "ccc"], batch_size=2, collate_fn=list)  # a list is a data set too
    assert list(words) == [["a", "bb"], ["ccc"]]


def test_loader_over_a_data_set_refuses_what_it_cannot_batch():
    with pytest.raises(TypeError, match="DataLoader: expected arrays, or a data set with __len__ and __getitem__, "
                                        "received int"):
        DataLoader(3)
    with pytest.raises(ValueError, match="collate_fn applies to a data set"):
        DataLoader(np.zeros(3), collate_fn=list)
    ragged = [np.zeros(2), np.zeros(3)]
    with pytest.raises(ValueError, match=r"samples of one shape to stack, received shapes \[\(2,\), \(3,\)\]; pass a "
                                         "collate_fn"):
        next(iter(DataLoader(ragged, batch_size=2)))
    with pytest.raises(ValueError, match=r"every sample to have 2 fields, as the first, received \[1, 2\]"):
        next(iter(DataLoader([(1, 2), (3,)], batch_size=2)))
    with pytest.raises(ValueError, match=r"every sample to have the keys \['a'\]"):
        next(iter(DataLoader([{"a": 1}, {"b": 2}], batch_size=2)))
    loader = DataLoader(ragged, batch_size=2)
    with pytest.raises(ValueError):
        next(iter(loader))
    assert loader.position == 0  # the batch that failed is read again


def _write_idx(path, array, gz=False):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def test_mnist_idx_loader(tmp_path):
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", 7), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        _write_idx(str(tmp_path / f"{split}-images-idx3-ubyte.gz"), images, gz=True)
        _write_idx(str(tmp_path / f"{split}-labels-idx1-ubyte"), labels)
        data[split] = (images, labels)
    x_train, y_train, x_test, y_test = load_mnist(str(tmp_path))
    assert x_train.shape == (7, 1, 28, 28) and x_train.dtype == np.float32 and y_test.dtype == np.int64
    np.testing.assert_allclose(x_train[:, 0] * 255, data["train"][0])
    np.testing.assert_array_equal(y_test, data["t10k"][1])

    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(str(tmp_path / "bad"))
    _write_idx(str(tmp_path / "short"), np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header promises 6"):
        read_idx(str(tmp_path / "short"))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(str(tmp_path))


def test_cifar10_loader(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    expected = []
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f, protocol=2)
        expected.append((data, labels))
    x_train, y_train, x_test, y_test = load_cifar10(str(tmp_path))
    assert x_train.shape == (8, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(x_train[:4].reshape(4, -1) * 255, expected[0][0], atol=1e-4)
    np.testing.assert_array_equal(y_test, expected[2][1])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar10(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data_batch_1..5 and test_batch"):
        load_cifar10(str(tmp_path / "nowhere"))


def test_pad_sequence_matches_torch_and_feeds_lengths(torch):
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (4, 1, 6, 0, 2)]
    padded, lengths = lm.data.pad_sequence(seqs, padding_value=-1.0)
    want = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(s) for s in seqs], batch_first=True, padding_value=-1.0)
    np.testing.assert_array_equal(padded, want.numpy())
    assert lengths.tolist() == [4, 1, 6, 0, 2] and lengths.dtype == np.int64
    time_major, _ = lm.data.pad_sequence(seqs, batch_first=False)
    assert time_major.shape == (6, 5, 3)
    left, _ = lm.data.pad_sequence([np.array([1, 2]), np.array([3])], padding_side="left")
    np.testing.assert_array_equal(left, [[1, 2], [0, 3]])
    gru = lm.GRU(3, 4, return_sequences=False)  # lengths as the recurrent layers take them (no empty sequence)
    keep = lengths > 0
    with lm.no_grad():
        h = gru(padded[keep], lengths=lengths[keep])
        alone = gru(seqs[0][None])
    np.testing.assert_allclose(h[0], alone[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"pad_sequence: expected every sequence as sequence 0, shape \(L, 3\) of float32"):
        lm.data.pad_sequence([seqs[0], np.zeros((2, 4), dtype=np.float32)])
    with pytest.raises(ValueError, match="at least one sequence"):
        lm.data.pad_sequence([])
