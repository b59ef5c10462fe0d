"""The GPU benchmarks run end to end in CI, without a GPU: benchmarks/kernels.py,
benchmarks/bench.py and benchmarks/checkpoint_amp.py with ``--device cuda``
on the emulated device, at toy sizes (tests/emu/benchmarks.py).  Their
timings mean nothing; what is checked is that every GPU branch runs, that
lamina's kernels pass each script's own correctness check before timing,
and that the results files are complete."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "emu"))
sys.path.insert(0, str(HERE.parent / "benchmarks"))
import emulate  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _emulated_device():
    path, why = emulate.build_module()
    if path is None:
        pytest.skip(f"the emulated device cannot be built: {why}")


def run(script, out, *args):
    r = subprocess.run([sys.executable, str(HERE / "emu" / "benchmarks.py"), script, str(out), *args],
                       capture_output=True, text=True, check=False, cwd=HERE.parent)
    return r.returncode, r.stdout + r.stderr


def test_kernel_benchmark(tmp_path):
    status, output = run("kernels", tmp_path)
    assert status == 0, output[-4000:]
    result = json.loads((tmp_path / "kernels_emulated_device_host.json").read_text())
    assert result["complete"] is True
    # the wgmma convolutions, launched once in a child process before any is timed in this one
    assert result["conv_wgmma_probe"] == {"narrow": "ok", "128": "ok"}
    rows = result["results"]
    assert not [r for r in rows if r.get("mismatch")], output[-4000:]
    not_run = [r for r in rows if "not_run" in r]
    assert [(r["shape"], r["dtype"], r["variant"]) for r in not_run] == [("odd (toy)", "bfloat16", "wgmma")]
    rows = [r for r in rows if "not_run" not in r]
    gemm = {(r["shape"], r["dtype"], r["variant"]) for r in rows if r["kernel"] == "gemm"}
    # fp32 on the SIMT kernel; 16-bit on mma.sync everywhere and on wgmma where TMA can read the operands
    assert ("square 8192 (toy)", "float32", "simt") in gemm
    assert {("square 8192 (toy)", d, v) for d in ("bfloat16", "float16") for v in ("mma", "wgmma")} <= gemm
    assert ("odd (toy)", "bfloat16", "mma") in gemm and ("odd (toy)", "bfloat16", "wgmma") not in gemm
    assert "wgmma: not run (a row of an operand is not a multiple of 16 bytes" in output
    conv = [r for r in rows if r["kernel"].startswith("conv2d")]
    rule = [r for r in conv if not r["variant"].endswith(" tuned")]
    # 3 shapes x forward, backward-data, backward-weight x float32, bfloat16 x channels-last rule and gathered,
    # and the five channels-last bfloat16 passes again on mma.sync, where compute capability 9.0 (the emulated
    # device's) runs them on wgmma: backward-data wherever there are 8 output channels, forward and
    # backward-weight where there are 8 input channels too (the 1x1); with at most 16 channels all five take
    # wgmma's narrow kernels, and are timed a third time on its 128 x 128 ones ("wgmma 128")
    assert len(rule) == 46
    assert {r["variant"] for r in rule if r["dtype"] == "bfloat16"} == {"mma", "wgmma", "mma.sync", "wgmma 128",
                                                                        "mma gathered"}
    on_wgmma = {("1x1 (toy)", "conv2d forward"), ("1x1 (toy)", "conv2d backward-weight")} | {
        (shape, "conv2d backward-data") for shape in ("3x3 (toy)", "3x3 s2 (toy)", "1x1 (toy)")}
    for variant in ("wgmma", "mma.sync", "wgmma 128"):
        assert {(r["shape"], r["kernel"]) for r in rule if r["variant"] == variant} == on_wgmma
    assert {r["wgmma_tile"] for r in rule if r["variant"] == "wgmma"} == {16}
    assert {r["wgmma_tile"] for r in rule if r["variant"] == "wgmma 128"} == {128}
    assert {r["variant"] for r in rule if r["dtype"] == "float32"} == {"simt", "simt gathered"}
    # a second, "tuned" row exactly where the autotuner (on host clocks here) picked another plan than the rule's
    tuned = {(r["shape"], r["kernel"], r["variant"][:-len(" tuned")]): r for r in conv if r["variant"].endswith(" tuned")}
    assert len(tuned) == len(conv) - len(rule)
    assert not any(v.endswith(" gathered") for _, _, v in tuned)
    for r in rule:
        twin = tuned.get((r["shape"], r["kernel"], r["variant"]))
        assert (twin is not None) == (r["plan"] != r["tuned_plan"])
        if twin is not None:
            assert twin["plan"] == r["tuned_plan"]
    for r in rows:
        assert r["max_rel_error"] < (1e-4 if r["dtype"] == "float32" else 2e-2)
        assert r["lamina_ms"] > 0
    sweeps = result["split_k_sweeps"]
    assert {s["kernel"] for s in sweeps} == {"gemm fp32 split-K", "conv2d backward-weight split-K",
                                             "conv2d forward split-K"}
    assert all(str(s["best"]) in s["ms_by_splits"] and str(s["chosen"]) in s["ms_by_splits"] for s in sweeps)

    # the report (benchmarks/kernels_report.py): each convolution pass of lamina's default kernel against its target
    # (the toy GEMMs are not the sizes the targets name), and every pair of kernels timed on the same pass
    import kernels_report

    assert kernels_report.summary(result)[2] == 3 * 3 * 2
    text = kernels_report.report(result)
    side = text.split("## Kernels side by side")[1].split("##")[0]
    pairs = [ln.split(" | ")[3:6:2] for ln in side.splitlines() if ln.startswith("| conv2d")]
    # wgmma against mma.sync, wgmma 128 and mma gathered on its 5 passes; the 9 fp32 passes against their NCHW
    # gathers, and the 4 bfloat16 passes on mma.sync by default
    assert sorted(map(tuple, pairs)) == sorted(
        [("wgmma", "mma.sync")] * 5 + [("wgmma", "wgmma 128")] * 5 + [("wgmma", "mma gathered")] * 5
        + [("simt", "simt gathered")] * 9 + [("mma", "mma gathered")] * 4)


def test_training_step_benchmark(tmp_path):
    status, output = run("bench", tmp_path, "--models", "mlp", "--precisions", "fp32,bf16,fp16",
                         "--kernels", "auto,cupy", "--graph")
    assert status == 0, output[-4000:]
    stem = tmp_path / "emulated_device_host"
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["complete"] is True and result["device_kind"] == "cuda" and not result["refused"]
    rows = {(r["kernels"], r["precision"]): r for r in result["results"]}
    assert set(rows) == {(k, p) for k in ("auto", "cupy") for p in ("fp32", "bf16", "fp16")}
    for (kernels, precision), r in rows.items():
        assert r["batch"] == 32 and r["lamina_ms"] > 0 and r["torch_ms"] > 0
        assert r["lamina_pool_peak_bytes"] > 0  # lamina.memory reads the (stand-in) CuPy pool
        if precision == "fp16":
            assert "loss scaler" in r["graph_skipped"]
        else:  # the stand-in refuses stream capture; the run records it and goes on
            assert "not emulated" in r["graph_error"]
    assert {(a["model"], a["precision"]) for a in result["amp_speedups"]} == {
        (m, p) for m in ("mlp", "mlp (cuBLAS kernels)") for p in ("bf16", "fp16")}
    table = stem.with_suffix(".md").read_text()
    assert "| mlp | fp16 | 32 |" in table and "| mlp (cuBLAS kernels) | fp16 | 32 |" in table and "Not captured in a CUDA graph" in table
    assert stem.with_suffix(".png").stat().st_size > 0


def test_checkpoint_and_mixed_precision_benchmark(tmp_path):
    status, output = run("checkpoint_amp", tmp_path, "--blocks", "2", "--batch", "2")
    assert status == 0, output[-4000:]
    result = json.loads((tmp_path / "cuda_checkpoint_amp.json").read_text())
    assert result["device"] == "Emulated device (host)" and result["segments"] == 3
    assert 0 < result["lamina_held_ratio"] < 1  # checkpointing holds only the segments' inputs after forward
    assert 0.4 < result["fp16_over_fp32_memory"] < 0.6
    assert set(result["step_ms"]) == {"lamina_0", "lamina_3", "torch_0", "torch_3"}
