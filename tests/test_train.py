"""End to end: an MLP learns MNIST-1D; the command line works."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import lamina as lm
from lamina.models import mlp
from lamina.train import evaluate, train_epoch


@pytest.mark.slow
def test_mlp_reaches_62_percent_on_mnist1d_within_a_minute(mnist1d):
    x_train, y_train, x_test, y_test = mnist1d
    assert x_train.shape == (4000, 40) and x_test.shape == (1000, 40)
    start = time.perf_counter()
    lm.manual_seed(0)
    model = mlp(40, (256, 256), 10)
    loss_fn = lm.SoftmaxCrossEntropy()
    opt = lm.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first_loss = evaluate(model, loss_fn, x_test, y_test)[0]
    for _ in range(20):
        train_epoch(model, loss_fn, opt, x_train, y_train, batch_size=100)
    test_loss, test_acc = evaluate(model, loss_fn, x_test, y_test)
    elapsed = time.perf_counter() - start
    assert test_acc >= 0.62, f"test accuracy {test_acc:.3f}"
    assert test_loss < first_loss
    assert elapsed < 60, f"took {elapsed:.1f} s"


def test_mnist1d_generation_restores_global_rng_state():
    import random

    from lamina.data import load_mnist1d

    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    x, y, _, _ = load_mnist1d(num_samples=100)
    assert (random.random(), np.random.rand()) == expected
    assert x.shape == (80, 40) and x.dtype == np.float32 and y.dtype == np.int64 and set(y) <= set(range(10))


def _cli(*args):
    env = dict(os.environ, PYTHONWARNINGS="error::DeprecationWarning")
    return subprocess.run([sys.executable, "-m", "lamina", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_info_reports_kernels_and_backends():
    out = _cli("info")
    assert out.returncode == 0, out.stderr
    assert "lamina 0.1.0" in out.stdout and "lamina._C " in out.stdout and "cuda_available" in out.stdout
    assert "lamina._C_cuda" in out.stdout and "cupy" in out.stdout


@pytest.mark.slow
def test_cli_train_prints_metrics_and_writes_its_outputs(tmp_path):
    out = _cli("train", "--epochs", "3", "--hidden", "64", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["epochs"] == 3 and metrics["device"] == "cpu" and 0.2 < metrics["test_accuracy"] <= 1.0
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint.safetensors", "history.png", "metrics.json", "model.safetensors"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    model = lm.load(tmp_path / "run" / "model.safetensors", mlp(40, (64,), 10))
    assert model.num_parameters() == metrics["parameters"]
    assert "ecutable" not in out.stderr and "Traceback" not in out.stderr


def test_cli_train_cnn_reaches_90_percent_on_mnist1d(tmp_path):
    """The MNIST-1D paper's CNN (94% published) through the command line."""
    out = _cli("train", "--model", "cnn", "--optimizer", "adam", "--lr", "0.01", "--epochs", "30", "--device", "cpu",
               "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["test_accuracy"] >= 0.90, metrics


def test_cli_train_with_mixed_precision_and_checkpointing(tmp_path):
    out = _cli("train", "--epochs", "2", "--amp", "float16", "--checkpoint-segments", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["amp"] == "float16" and 0.2 < metrics["test_accuracy"] <= 1.0
    assert "float16 mixed precision, 2 checkpoint segments" in out.stdout
    assert "computes float16 arrays on the CPU in float32" in out.stderr  # said once, not silently


def test_cli_train_rejects_bad_arguments_clearly(tmp_path):
    for args, message in [
        (("--data", "mnist"), "needs the folder of the downloaded files"),
        (("--data", "imagenet"), "unknown --data 'imagenet'"),
        (("--model", "resnet"), "--model resnet needs image data"),
        (("--model", "cnn", "--data", "digits", "--optimizer", "lbfgs"), "unknown --optimizer 'lbfgs'"),
    ]:
        out = _cli("train", *args, "--out", str(tmp_path))
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_cli_profile_prints_a_table_of_every_layer(tmp_path):
    out = _cli("profile", "--model", "cnn", "--data", "digits", "--steps", "3", "--warmup", "1", "--device", "cpu",
               "--sort", "self_ms", "--json", str(tmp_path / "p.json"))
    assert out.returncode == 0, out.stderr
    assert "lamina profile: cnn" in out.stdout and "| layer | type | calls |" in out.stdout
    data = json.loads((tmp_path / "p.json").read_text())
    layers = {r["layer"]: r for r in data["layers"]}
    assert layers["(model)"]["type"] == "Sequential" and layers["0"]["type"] == "Conv2D"
    assert all(r["calls"] == 3 for r in layers.values())
    selfs = [r["self_ms"] for r in data["layers"]]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "layer" not in line]
    assert len(rows) == len(layers) and rows[0].split(" | ")[0] == f"| {max(layers.values(), key=lambda r: r['self_ms'])['layer']}"
    np.testing.assert_allclose(sum(selfs), data["total_ms"])
    bad = _cli("profile", "--model", "resnet")
    assert bad.returncode != 0 and "--model resnet needs image data" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_gradcheck_prints_a_table_and_passes():
    out = _cli("gradcheck")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Conv2D(3, 4, 3, stride=2, padding=1)" in out.stdout and "BatchNorm2d(3)" in out.stdout
    assert "FAIL" not in out.stdout and "of" in out.stdout.splitlines()[-1]


def _example(name):
    """examples/<name>.py as a module."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_cnn_example_reaches_97_percent_on_digits():
    """examples/cnn_digits.py with fewer epochs (8 instead of 30)."""
    assert _example("cnn_digits").main(epochs=8, seed=0, verbose=False) >= 0.97


def test_gru_example_learns_mnist1d_as_a_sequence():
    """examples/gru_mnist1d.py for 3 epochs (of 20): well above chance (10%)."""
    assert _example("gru_mnist1d").main(epochs=3, seed=0, verbose=False) >= 0.3


def test_padded_sequences_example_masks_beat_reading_the_padding():
    """examples/padded_sequences.py for 200 steps (of 600): the GRU with
    lengths and the encoder with a padding mask solve the task; the same
    models reading the (random) padding fall clearly short."""
    acc = _example("padded_sequences").main(steps=200, seed=0, verbose=False)
    for name in ("GRU", "Transformer"):
        assert acc[f"{name}, masked"] >= 0.98, acc
        assert acc[f"{name}, reading the padding"] < acc[f"{name}, masked"] - 0.05, acc


def test_digits_ship_with_the_package_and_split_reproducibly():
    from lamina.data import load_digits

    x_train, y_train, x_test, y_test = load_digits()
    assert x_train.shape == (1438, 1, 8, 8) and x_test.shape == (359, 1, 8, 8)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() == 1
    assert sorted(set(y_train.tolist())) == list(range(10)) and y_train.dtype == np.int64
    again = load_digits()
    np.testing.assert_array_equal(again[0], x_train)
    np.testing.assert_array_equal(again[3], y_test)
    assert load_digits(flat=True)[0].shape == (1438, 64)
    assert not np.array_equal(load_digits(seed=1)[3], y_test)


def test_seq2seq_example_sorts_with_greedy_decoding():
    """examples/seq2seq_sort.py for 200 steps (of 600): an encoder-decoder
    Transformer, trained through cross-attention with hand-derived
    gradients, sorts most unseen sequences exactly when decoding greedily."""
    result = _example("seq2seq_sort").main(steps=200, seed=0, verbose=False)
    assert result["token_accuracy"] >= 0.98, result
    assert result["exact_match"] >= 0.9, result


def test_seq2seq_example_decodes_the_same_with_and_without_the_kv_cache():
    """Greedy decoding token by token with a KVCache (the newest token
    alone through the decoder) and without (the whole prefix each step)
    picks the same tokens."""
    ex = _example("seq2seq_sort")
    lm.manual_seed(4)
    model = ex.Seq2Seq()
    src, lengths, _, _ = ex.make_data(64, np.random.default_rng(4))
    cached = model.generate(src, lengths)
    assert cached.shape == (64, ex.LONGEST + 1)
    assert np.array_equal(cached, model.generate(src, lengths, use_cache=False))
