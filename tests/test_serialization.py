"""Saving and loading: safetensors round trips, atomic writes, clear errors
on corrupt or mismatched files, PyTorch weights, and bit-exact resumption of
an interrupted training run (mid-epoch, with dropout, Adam, a scheduler and
a shuffling loader)."""

import json
import os
import random
import struct

import numpy as np
import pytest

import lamina as lm
from lamina.data import DataLoader


def _model():
    return lm.Sequential(lm.Dense(6, 16), lm.ReLU(), lm.Dropout(0.3), lm.Dense(16, 16), lm.BatchNorm1d(16), lm.ReLU(), lm.Dense(16, 3))


def test_weights_round_trip_and_file_is_plain_safetensors(tmp_path):
    model = _model()
    path = tmp_path / "w.safetensors"
    lm.save(model, path, metadata={"note": "hello"})
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "lamina" and "0.weight" in header
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
    sd = lm.load(path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(sd[k], v)
        assert sd[k].dtype == v.dtype
    twin = lm.load(path, _model())
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    model.eval(), twin.eval()
    np.testing.assert_array_equal(model(x), twin(x))


def test_a_crash_while_writing_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    lm.save(_model(), path)
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        lm.save(_model(), path)
    assert path.read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if p != "w.safetensors"] == []


def test_corrupt_foreign_and_mismatched_files_give_clear_errors(tmp_path):
    path = tmp_path / "w.safetensors"
    model = _model()
    lm.save(model, path)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(lm.CheckpointError, match="not a readable safetensors file"):
        lm.load(tmp_path / "cut.safetensors")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(lm.CheckpointError, match="not written by lamina"):
        lm.load(tmp_path / "foreign.safetensors")
    save_file({"a": np.zeros(2)}, str(tmp_path / "future.safetensors"), metadata={"format": "lamina", "format_version": "99"})
    with pytest.raises(lm.CheckpointError, match="format version '99'"):
        lm.load(tmp_path / "future.safetensors")
    other = lm.Sequential(lm.Dense(6, 17))
    before = other[0].weight.data.copy()
    with pytest.raises(lm.StateDictError, match="missing keys"):
        lm.load(path, other)
    np.testing.assert_array_equal(other[0].weight.data, before)
    with pytest.raises(lm.CheckpointError, match="expected a 'checkpoint' file"):
        lm.load_checkpoint(path, model)
    with pytest.raises(FileNotFoundError):
        lm.load(tmp_path / "nothing.safetensors")


def test_pytorch_weights_load_from_file_and_memory(tmp_path, torch):
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    tmodel.eval()
    torch.save(tmodel.state_dict(), tmp_path / "t.pt")

    def ours():
        return lm.Sequential(lm.Conv2D(1, 4, 3), lm.BatchNorm2d(4), lm.ReLU(), lm.Flatten(), lm.Dense(4 * 4 * 4, 3)).eval()

    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32)
    expected = tmodel(torch.from_numpy(x)).detach().numpy()
    for source in (tmp_path / "t.pt", tmodel.state_dict()):
        model = lm.load_torch_weights(source, ours())
        np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)


def _train(model, opt, sched, loader, steps, start=0, stop_after=None, path=None, loss_fn=None):
    """The explicit loop; with ``stop_after``, checkpoint after that many steps and stop."""
    loss_fn = loss_fn or lm.SoftmaxCrossEntropy()
    step = start
    while step < steps:
        for xb, yb in loader:
            loss_fn(model(xb), yb)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            step += 1
            np.random.random()  # the user's own use of NumPy's and Python's
            random.random()     # global generators is restored too
            if step % 5 == 0:
                sched.step()
            if stop_after is not None and step == stop_after:
                lm.save_checkpoint(path, model, opt, sched, loader=loader, step=step, extra={"note": "halfway"})
                return step
            if step == steps:
                return step
    return step


def _setup(seed):
    lm.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 6)).astype(np.float32)
    y = rng.integers(0, 3, 70)
    model = _model()
    opt = lm.optim.Adam(model.parameters(), lr=1e-2)
    sched = lm.optim.StepLR(opt, step_size=2, gamma=0.7)
    loader = DataLoader(x, y, batch_size=16, shuffle=True)
    return model, opt, sched, loader


def test_resuming_an_interrupted_run_is_bit_exact(tmp_path):
    model, opt, sched, loader = _setup(0)
    _train(model, opt, sched, loader, steps=23)
    straight = {k: v.copy() for k, v in model.state_dict().items()}
    straight_rng = (np.random.random(), random.random(), lm.random.cpu_generator().random())

    path = tmp_path / "ckpt.safetensors"
    model, opt, sched, loader = _setup(0)
    done = _train(model, opt, sched, loader, steps=23, stop_after=11, path=path)  # mid-epoch: 5 batches per epoch
    assert loader.position == 1

    model, opt, sched, loader = _setup(12345)  # fresh objects, other seeds everywhere
    info = lm.load_checkpoint(path, model, opt, sched, loader=loader)
    assert info == {"epoch": 0, "step": 11, "extra": {"note": "halfway"}}
    _train(model, opt, sched, loader, steps=23, start=done)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, straight[k], err_msg=k)
    assert (np.random.random(), random.random(), lm.random.cpu_generator().random()) == straight_rng


def test_checkpoint_that_does_not_fit_changes_nothing(tmp_path):
    model, opt, sched, loader = _setup(0)
    path = tmp_path / "ckpt.safetensors"
    lm.save_checkpoint(path, model, opt, sched, loader=loader)
    other = lm.Sequential(lm.Dense(6, 3))
    other_opt = lm.optim.Adam(other.parameters())
    before = other[0].weight.data.copy()
    with pytest.raises(lm.CheckpointError, match="groups of"):
        lm.load_checkpoint(path, other, other_opt)
    with pytest.raises(lm.CheckpointError, match="does not fit this model"):
        lm.load_checkpoint(path, other)
    np.testing.assert_array_equal(other[0].weight.data, before)
    with pytest.raises(lm.CheckpointError, match="state of a Adam, not of a SGD"):
        lm.load_checkpoint(path, _model(), lm.optim.SGD(_model().parameters(), lr=0.1))


def test_weights_load_from_a_checkpoint_and_missing_parts_are_named(tmp_path):
    """lm.load takes the model part of a checkpoint; asking a checkpoint for
    a part it was saved without names the part and changes nothing."""
    model, opt, sched, loader = _setup(0)
    path = tmp_path / "ckpt.safetensors"
    lm.save_checkpoint(path, model)  # the model alone
    weights = lm.load(path)
    assert list(weights) == list(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(weights[k], v)
    other, other_opt, _, _ = _setup(1)
    before = {k: v.copy() for k, v in other.state_dict().items()}
    with pytest.raises(lm.CheckpointError, match=r"ckpt.safetensors' holds no optimizer state"):
        lm.load_checkpoint(path, other, other_opt)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert lm.load(path, other) is other
    np.testing.assert_array_equal(other.state_dict()[k], model.state_dict()[k])
