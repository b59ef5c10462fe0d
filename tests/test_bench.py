"""The benchmark harness: it refuses to time a model that does not match
PyTorch, and writes JSON, Markdown and a PNG (run briefly, not for timing)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def test_harness_refuses_to_time_a_mismatch(torch):
    import bench

    pair = bench.Pair("mlp", bench.CONFIGS["mlp"], "cpu", "fp32", batch=8)
    pair.check_first_step()  # matches
    w = pair.lmodel[2].weight
    w.data = w.data + np.float32(0.01)  # one layer off
    with pytest.raises(SystemExit, match="refusing to time it") as info:
        pair.check_first_step()
    assert "gradient of 2.weight" in str(info.value) and "loss" in str(info.value)


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")
def test_lamina_bench_writes_json_markdown_and_png(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "bench", "--path", os.path.join(ROOT, "benchmarks", "bench.py"), "--models", "mlp",
         "--precisions", "fp32,bf16", "--repeat", "2", "--warmup", "1", "--profile", "2", "--out", str(tmp_path),
         "--name", "t"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["precision"] for r in result["results"]] == ["fp32", "bf16"]
    row = result["results"][0]
    assert row["lamina_ms"] > 0 and row["torch_ms"] > 0 and row["ratio"] == pytest.approx(row["lamina_ms"] / row["torch_ms"])
    assert row["gflop_per_step"] == pytest.approx(3 * 2 * 128 * (784 * 512 + 512 * 512 + 512 * 10) / 1e9)
    assert result["settings"]["tf32"] is False and result["torch"] and result["device"] and result["complete"] is True
    assert "| mlp | fp32 | 128 |" in (tmp_path / "t.md").read_text()
    prof = row["layer_profile"]  # --profile: lamina.profiler over 2 steps, the layers by self time
    assert prof["steps"] == 2 and prof["layers_ms_per_step"] > 0
    assert [t["self_ms"] for t in prof["top"]] == sorted((t["self_ms"] for t in prof["top"]), reverse=True)
    assert prof["top"][0]["type"] == "Dense" and "Where lamina's step goes" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["lenet", "resnet8", "lstm"])
def test_golden_whole_model_matches_pytorch(name, torch):
    """Logits, loss and every parameter gradient of a whole model's step, against
    PyTorch with the same weights and data (the check `lamina bench` makes
    before it times anything)."""
    import bench

    pair = bench.Pair(name, bench.CONFIGS[name], "cpu", "fp32", batch=4)
    logits = pair.lmodel(pair.x)
    np.testing.assert_allclose(logits, pair.tmodel(pair.tx).detach().numpy(), rtol=1e-4, atol=1e-5)
    pair.check_first_step()


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")
def test_a_refused_model_is_reported_and_the_others_still_timed(tmp_path, monkeypatch, torch):
    import bench

    real = bench.Pair.check_first_step

    def check(self):
        if self.name == "lenet":
            raise SystemExit("lenet [fp32]: lamina does not match PyTorch on the first step, refusing to time it:\n  planted")
        return real(self)

    monkeypatch.setattr(bench.Pair, "check_first_step", check)
    rc = bench.main(["--models", "lenet,mlp", "--precisions", "fp32", "--repeat", "2", "--warmup", "1",
                     "--out", str(tmp_path), "--name", "t"])
    assert rc == 1
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["model"] for r in result["results"]] == ["mlp"]
    assert [r["model"] for r in result["refused"]] == ["lenet"] and "planted" in result["refused"][0]["reason"]
    assert "Not timed" in (tmp_path / "t.md").read_text()


def test_flops_of_the_lstm_count_both_gemms_of_every_step(torch):
    import bench

    pair = bench.Pair("lstm", bench.CONFIGS["lstm"], "cpu", "fp32", batch=4)
    n, length, f, h = 4, 50, 128, 256
    macs = n * length * 4 * h * (f + h) + n * h * 10  # x_t W_ihᵀ and h_{t-1} W_hhᵀ every step, then the classifier
    assert bench.count_flops(pair.tmodel, bench.CONFIGS["lstm"]["input"], n) == 3 * 2 * macs


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")
def test_a_model_pytorch_cannot_run_is_skipped_not_refused(tmp_path, monkeypatch, torch):
    import bench

    real = bench.Pair.check_first_step

    def check(self):
        if self.name == "lenet":
            raise bench.ReferenceUnavailable("PyTorch's own step fails: planted")
        return real(self)

    monkeypatch.setattr(bench.Pair, "check_first_step", check)
    rc = bench.main(["--models", "lenet,mlp", "--precisions", "fp32", "--repeat", "2", "--warmup", "1",
                     "--out", str(tmp_path), "--name", "t"])
    assert rc == 0
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["model"] for r in result["results"]] == ["mlp"] and not result["refused"]
    assert [r["model"] for r in result["skipped"]] == ["lenet"] and "planted" in result["skipped"][0]["reason"]
    assert "Not run: PyTorch's side fails" in (tmp_path / "t.md").read_text()


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")
def test_a_run_cut_short_keeps_the_models_it_finished(tmp_path, monkeypatch, torch):
    """The results are rewritten after every model: a run stopped at a time
    limit (on a GPU lent for minutes) still leaves its finished rows."""
    import bench

    real = bench.bench

    def bench_until_lenet(name, *args):
        if name == "lenet":
            raise KeyboardInterrupt  # what a time limit looks like from inside
        return real(name, *args)

    monkeypatch.setattr(bench, "bench", bench_until_lenet)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--models", "mlp,lenet", "--precisions", "fp32", "--repeat", "2", "--warmup", "1",
                    "--out", str(tmp_path), "--name", "t"])
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["complete"] is False and [r["model"] for r in result["results"]] == ["mlp"]
    assert "| mlp | fp32 | 128 |" in (tmp_path / "t.md").read_text()
    assert not (tmp_path / "t.png").exists()


def test_decoding_benchmark_checks_then_times_cached_and_full_decoding(tmp_path, torch):
    """benchmarks/decoding.py at a toy size: the cached and full-prefix
    decoders agree with PyTorch's before anything is timed, and the JSON
    holds every time and ratio."""
    import decoding

    out = tmp_path / "decoding.json"
    result = decoding.main(["--lengths", "3,5", "--batch", "2", "--memory", "4", "--d-model", "16", "--nhead", "2",
                            "--layers", "2", "--ff", "24", "--repeat", "1", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert [r["length"] for r in result["rows"]] == [3, 5]
    for row in result["rows"]:
        assert max(row["max_abs_error_vs_torch"].values()) < 1e-4
        assert set(row["seconds"]) == {"lamina_cached", "lamina_full_prefix", "torch_full_prefix"}
        assert row["ratio_cached_vs_lamina_full"] == row["seconds"]["lamina_cached"] / row["seconds"]["lamina_full_prefix"]
