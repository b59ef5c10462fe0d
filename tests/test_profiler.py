"""lamina.profiler: per-layer forward, backward and recompute times from the
hooks, self times that add up, cache sizes, and clean removal."""

import json
import time

import numpy as np
import pytest

import lamina as lm
from lamina.memory import arrays_in


class Sleep(lm.Layer):
    """Identity that takes a known time in forward and in backward."""

    def __init__(self, forward_s, backward_s):
        super().__init__()
        self.forward_s, self.backward_s = forward_s, backward_s

    def forward(self, x):
        time.sleep(self.forward_s)
        self._save(None, out=x)
        return x * 1

    def backward(self, dy):
        self._take_cache(dy)
        time.sleep(self.backward_s)
        return dy * 1


def _cnn(xp):
    model = lm.Sequential(lm.Conv2D(2, 4, 3, padding=1), lm.ReLU(), lm.MaxPool2D(2), lm.Flatten(), lm.Dense(4 * 3 * 2, 5))
    return model.to("cpu" if xp is np else "cuda")


def _step(model, x, loss_fn, y):
    loss_fn(model(x), y)
    model.backward(loss_fn.backward())


def test_every_layer_is_timed_and_self_times_add_up(xp):
    model = _cnn(xp)
    x = xp.asarray(np.random.default_rng(0).standard_normal((3, 2, 7, 5)).astype(np.float32))
    y = xp.asarray(np.arange(3) % 5)
    loss_fn = lm.SoftmaxCrossEntropy()
    with lm.profiler.profile(model) as prof:
        for _ in range(4):
            _step(model, x, loss_fn, y)
    rows = {r["layer"]: r for r in prof.records()}
    assert list(rows) == ["(model)", "0", "1", "2", "3", "4"]
    assert rows["0"]["type"] == "Conv2D" and rows["(model)"]["type"] == "Sequential"
    for r in rows.values():
        assert r["calls"] == 4
        assert r["forward_ms"] > 0 and r["backward_ms"] > 0 and r["recompute_ms"] == 0
        assert 0 <= r["self_forward_ms"] <= r["forward_ms"] + 1e-9
    children = [r for name, r in rows.items() if name != "(model)"]
    for phase in ("forward", "backward"):
        inner = sum(r[f"{phase}_ms"] for r in children)
        assert rows["(model)"][f"{phase}_ms"] >= inner - 1e-6
        np.testing.assert_allclose(rows["(model)"][f"self_{phase}_ms"], rows["(model)"][f"{phase}_ms"] - inner,
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prof.total_ms, rows["(model)"]["forward_ms"] + rows["(model)"]["backward_ms"], rtol=1e-6)
    np.testing.assert_allclose(sum(r["share"] for r in rows.values()), 1.0)
    # the cache a layer keeps for backward, as counted by lamina.memory
    model[0](x)  # the first layer's cache, as the profiled forwards left it
    expected = {id(a): a.nbytes for a in arrays_in(model[0]._cache)}
    assert rows["0"]["cache_bytes"] == sum(expected.values()) > 0
    assert rows["3"]["cache_bytes"] == 0  # Flatten keeps nothing but a shape
    for layer in model.modules():
        assert "_hooks" not in layer.__dict__
    table = prof.table(sort_by="self_ms", max_rows=3)
    assert table.count("\n| ") == 3 and "Total" in table


def test_a_model_without_parameters_is_timed_on_its_inputs_device(xp):
    """A model of activations alone reports "cpu" as its device; the profiler
    takes the clock (CUDA events on a GPU) from its first input instead."""
    model = lm.Sequential(lm.ReLU(), lm.Tanh())
    x = xp.asarray(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    with lm.profiler.profile(model) as prof:
        y = model(x)
        model.backward(xp.ones_like(y))
    assert json.loads(prof.to_json())["device"] == str(lm.backend.device_of(x))
    assert all(r["calls"] == 1 and r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in prof.records())
    assert prof.total_ms > 0


def test_self_time_is_the_layers_own():
    model = lm.Sequential(lm.Sequential(Sleep(0.02, 0.04), lm.Tanh()), Sleep(0.01, 0.0))
    x = np.ones((2, 3), np.float32)
    with lm.profiler.profile(model) as prof:
        y = model(x)
        model.backward(np.ones_like(y))
    rows = {r["layer"]: r for r in prof.records()}
    assert rows["0.0"]["self_forward_ms"] >= 20 and rows["0.0"]["self_backward_ms"] >= 40
    assert rows["1"]["self_forward_ms"] >= 10
    assert rows["0"]["forward_ms"] >= 20 > rows["0"]["self_forward_ms"]
    assert rows["(model)"]["self_forward_ms"] < rows["1"]["self_forward_ms"]
    assert max(prof.records(), key=lambda r: r["self_ms"])["layer"] == "0.0"


def test_checkpointed_segments_report_their_recompute():
    model = lm.Sequential(lm.Dense(6, 8), lm.ReLU(), lm.Dense(8, 8), lm.Tanh(), lm.Dense(8, 3), checkpoint_segments=2)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    with lm.profiler.profile(model) as prof:
        for _ in range(3):
            y = model(x)
            model.backward(np.ones_like(y))
    rows = {r["layer"]: r for r in prof.records()}
    for name in ("0", "1", "2", "3", "4"):
        assert rows[name]["calls"] == 3  # forwards; recomputations are counted as time, not as calls
        # the first segment is recomputed in backward; the last keeps its activations (nothing to save)
        assert (rows[name]["recompute_ms"] > 0) == (name in ("0", "1", "2"))
    assert "recompute ms" in prof.table()


def test_errors_and_misuse():
    model = lm.Sequential(lm.Dense(4, 3), lm.ReLU())
    prof = lm.profiler.profile(model)
    with pytest.raises(RuntimeError, match="stop"):
        prof.records()
    with prof:
        with pytest.raises(lm.ShapeError):
            model(np.ones((2, 5), np.float32))  # fails inside the first layer: its interval is dropped
        y = model(np.ones((2, 4), np.float32))
        model.backward(np.ones_like(y))
        with pytest.raises(RuntimeError, match="already started"):
            prof.start()
    rows = {r["layer"]: r for r in prof.records()}
    assert rows["0"]["calls"] == 1 and rows["(model)"]["calls"] == 1
    with pytest.raises(KeyError, match="no column 'speed'"):
        prof.table(sort_by="speed")


def test_json_is_written(tmp_path):
    model = lm.Sequential(lm.Dense(4, 3), lm.ReLU())
    with lm.profiler.profile(model) as prof:
        y = model(np.ones((2, 4), np.float32))
        model.backward(np.ones_like(y))
    path = tmp_path / "profile.json"
    text = prof.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["device"] == "cpu" and [r["layer"] for r in data["layers"]] == ["(model)", "0", "1"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
