"""benchmarks/kernels_report.py: the kernel benchmark's results as a report of
targets met and missed, kernels side by side and split-K sweeps."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
H100 = os.path.join(ROOT, "benchmarks", "results", "kernels_nvidia_h100_80gb_hbm3.json")


def conv_row(kernel, shape, dtype, variant, ms, ref_ms, **extra):
    return {"kernel": kernel, "shape": shape, "dtype": dtype, "variant": variant, "lamina_ms": ms, "cudnn_ms": ref_ms,
            "ratio_of_cudnn": ref_ms / ms, "lamina_tflops": 1.0, **extra}


def gemm_row(shape, dtype, variant, ms, ref_ms):
    return {"kernel": "gemm", "shape": shape, "dtype": dtype, "variant": variant, "lamina_ms": ms, "cublas_ms": ref_ms,
            "ratio_of_cublas": ref_ms / ms, "splits": 1}


def synthetic():
    fwd, bwd_w = "conv2d forward", "conv2d backward-weight"
    return {
        "benchmark": "kernels", "device": "Test GPU", "complete": False, "tf32": False, "cudnn_benchmark": True,
        "conv_wgmma_probe": {"narrow": "hung (killed after 60 s)", "128": "ok"},
        "results": [
            # the 16-bit GEMM's default is wgmma wherever it has a row, whichever came first
            gemm_row("square 8192", "bfloat16", "wgmma", 2.0, 1.0),  # 0.5: missed
            gemm_row("square 8192", "bfloat16", "mma", 4.0, 1.0),
            gemm_row("square 8192", "float32", "simt", 1.0, 0.9),  # 0.9: met
            gemm_row("dense fwd 128x512x784 (x Wt)", "float32", "simt", 1.0, 0.1),  # no target for it
            conv_row(fwd, "conv4", "bfloat16", "wgmma", 1.0, 0.6, plan={"rows": 0, "blocks": 0, "splits": 4}),
            conv_row(fwd, "conv4", "bfloat16", "wgmma tuned", 0.8, 0.6, plan={"rows": 0, "blocks": 0, "splits": 2}),
            conv_row(fwd, "conv4", "bfloat16", "mma.sync", 3.0, 0.6),
            conv_row(fwd, "conv4", "bfloat16", "wgmma 128", 1.5, 0.6),
            conv_row(fwd, "conv4", "bfloat16", "mma gathered", 6.0, 0.6),
            conv_row(bwd_w, "conv4", "float32", "simt", 2.0, 0.5),  # 0.25: missed, also tuned
            conv_row(bwd_w, "conv4", "float32", "simt tuned", 1.5, 0.5),
            {"kernel": bwd_w, "shape": "conv2", "what": "bfloat16 wgmma (rule)", "mismatch": True,
             "max_rel_error": 0.5},
            {"kernel": "gemm", "shape": "odd", "dtype": "bfloat16", "variant": "wgmma", "not_run": "TMA cannot"},
        ],
        "split_k_sweeps": [
            {"kernel": "conv2d backward-weight split-K", "shape": "conv4", "dtype": "bfloat16", "variant": "wgmma",
             "wgmma_tile": 128, "chosen": 7, "ms_by_splits": {"1": 0.3, "7": 0.12, "14": 0.1}, "best": 14},
        ],
    }


def test_report_of_a_synthetic_run():
    import kernels_report

    result = synthetic()
    assert kernels_report.summary(result) == (1, 2, 4)
    targets = {(k, s, d): (t, r["variant"], tuned and tuned["variant"])
               for k, s, d, t, r, tuned in kernels_report.target_rows(result)}
    assert targets == {
        ("gemm", "square 8192", "bfloat16"): (0.6, "wgmma", None),
        ("gemm", "square 8192", "float32"): (0.85, "simt", None),
        ("conv2d forward", "conv4", "bfloat16"): (0.7, "wgmma", "wgmma tuned"),
        ("conv2d backward-weight", "conv4", "float32"): (0.5, "simt", "simt tuned"),
    }
    text = kernels_report.report(result)
    assert "**Targets: 1 of 4 met with lamina's default plans, 2 with its autotuner's.**" in text
    assert "**The run did not finish**" in text
    assert "hung (killed after 60 s)" in text
    lines = text.splitlines()

    def line(*cells):
        found = [ln for ln in lines if all(f"| {c} |" in ln for c in cells)]
        assert len(found) == 1, (cells, found)
        return found[0]

    assert line("gemm", "square 8192", "bfloat16", "wgmma").endswith("| 0.50 |  |  | ≥ 0.6 | **missed** |")
    assert line("gemm", "square 8192", "float32").endswith("| 0.90 |  |  | ≥ 0.85 | met |")
    # the rule's plan misses, the autotuner's meets
    assert line("conv2d forward", "conv4", "bfloat16", "wgmma", "splits 4").endswith(
        "| 0.60 | splits 2 | 0.75 | ≥ 0.7 | met tuned |")
    assert line("conv2d backward-weight", "conv4", "float32", "simt").endswith("| 0.25 |  | 0.33 | ≥ 0.5 | **missed** |")
    # side by side: second ms / first ms
    assert line("conv2d forward", "conv4", "wgmma", "mma.sync").endswith("| 3.00 |")
    assert line("conv2d forward", "conv4", "wgmma", "wgmma 128").endswith("| 1.50 |")
    assert line("conv2d forward", "conv4", "wgmma", "mma gathered").endswith("| 6.00 |")
    # the sweep: the rule chose 7 at 0.12 ms, 14 took 0.1
    assert line("conv2d backward-weight split-K", "conv4", "bfloat16 wgmma tile 128").endswith(
        "| 7 | 14 | 0.120 | 0.100 | 1.20 |")
    assert "* conv2d backward-weight conv2 bfloat16 wgmma (rule): differs from the reference by 5.00e-01" in text
    assert "* gemm odd bfloat16 wgmma: TMA cannot" in text


def test_report_of_the_committed_h100_run():
    """The last H100 run's results (v4): the five misses named in csrc/NOTES.md and docs/benchmarks.md."""
    import kernels_report

    with open(H100) as f:
        result = json.load(f)
    missed = {(k, s, d): round(kernels_report._ratio(r), 2) for k, s, d, t, r, _ in kernels_report.target_rows(result)
              if kernels_report._ratio(r) < t}
    assert missed == {
        ("gemm", "square 4096", "float32"): 0.84,
        ("conv2d forward", "resnet20 stage3 3x3", "float32"): 0.62,
        ("conv2d forward", "resnet50 conv4 3x3", "float32"): 0.56,
        ("conv2d forward", "resnet50 1x1 expand", "float32"): 0.61,
        ("conv2d backward-weight", "resnet50 conv4 3x3", "float32"): 0.28,
    }
    assert kernels_report.summary(result) == (20, 20, 25)


def test_command_line(tmp_path):
    out = tmp_path / "report.md"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "kernels_report.py"), H100, "--out", str(out)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "NVIDIA H100 80GB HBM3: 20 of 25 targets met (20 with the autotuner's plans)" in r.stdout
    assert out.read_text().startswith("# Kernels against cuBLAS and cuDNN: NVIDIA H100 80GB HBM3\n")
    other = tmp_path / "bench.json"
    other.write_text(json.dumps({"benchmark": "training step"}))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "kernels_report.py"), str(other)],
                       capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "not a kernel benchmark's results" in r.stderr
    assert not (tmp_path / "bench.md").exists()


@pytest.mark.parametrize("missing", ["results", "split_k_sweeps"])
def test_report_of_a_run_cut_short(missing):
    import kernels_report

    result = synthetic()
    del result[missing]
    text = kernels_report.report(result)
    assert text.startswith("# Kernels against cuBLAS and cuDNN: Test GPU\n")
    if missing == "results":  # no targets, no pairs, nothing untimed; the sweep still reported
        assert kernels_report.summary(result) == (0, 0, 0)
        assert "**Targets: 0 of 0 met" in text and "## Kernels side by side" not in text
        assert "## Rows not timed" not in text and "| 7 | 14 | 0.120 | 0.100 | 1.20 |" in text
    else:  # the same targets and pairs, no sweep section
        assert kernels_report.summary(result) == (1, 2, 4)
        assert "## Split-K sweeps" not in text and "## Kernels side by side" in text


def test_report_against_an_earlier_run(tmp_path):
    """--baseline: each row timed in both runs, its time and ratio then and now (the committed H100 run, v4,
    has no variant on its convolution rows: they are the default 'simt')."""
    import kernels_report

    with open(H100) as f:
        before = json.load(f)
    now = synthetic()
    now["results"].append(conv_row("conv2d backward-weight", "resnet50 conv4 3x3", "float32", "simt", 0.28, 0.155))
    text = kernels_report.report(now, before)
    section = text.split("## Against the earlier run (NVIDIA H100 80GB HBM3")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| conv2d") or ln.startswith("| gemm")]
    # e.g. square 8192 float32 simt: 25.018 ms then, 1.0 now; the conv4 row: 0.560 then, 0.28 now (2x)
    assert rows == [
        "| gemm | square 8192 | bfloat16 | wgmma | 1.906 | 2.000 | 0.95 | 0.83 | 0.50 |",
        "| gemm | square 8192 | bfloat16 | mma | 3.990 | 4.000 | 1.00 | 0.38 | 0.25 |",
        "| gemm | square 8192 | float32 | simt | 25.018 | 1.000 | 25.02 | 0.86 | 0.90 |",
        "| gemm | dense fwd 128x512x784 (x Wt) | float32 | simt | 0.030 | 1.000 | 0.03 | 1.01 | 0.10 |",
        "| conv2d backward-weight | resnet50 conv4 3x3 | float32 | simt | 0.560 | 0.280 | 2.00 | 0.28 | 0.55 |",
    ]
    assert "(no row in common)" in kernels_report.report(now, {"results": [gemm_row("other", "float32", "simt", 1, 1)]})
    out = tmp_path / "now.md"
    (tmp_path / "now.json").write_text(json.dumps(now))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "kernels_report.py"), str(tmp_path / "now.json"),
                        "--baseline", H100, "--out", str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "| 0.560 | 0.280 | 2.00 | 0.28 | 0.55 |" in out.read_text()
