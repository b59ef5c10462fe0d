"""lamina's GPU benchmarks on the emulated device, at toy sizes: every GPU
branch of benchmarks/kernels.py, benchmarks/bench.py and
benchmarks/checkpoint_amp.py runs end to end (the correctness checks before
timing, the rows, the JSON, Markdown and chart they write) before a GPU
session spends its time on them.

    python tests/emu/benchmarks.py kernels OUTDIR
    python tests/emu/benchmarks.py bench OUTDIR [bench.py options]
    python tests/emu/benchmarks.py checkpoint_amp OUTDIR

lamina's side runs on the emulated device of tests/emu/device.py (the
stand-in CuPy and lamina._C_cuda over the emulated kernels); PyTorch's
"cuda" side runs on the host (tests/emu/host_torch.py).  The scripts run
unchanged, with their problem sizes cut down here (each script's own
tables of shapes and models are replaced before its main() runs).  Their
timings mean nothing: host clocks around emulated kernels.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# kernels.py: every dtype, transpose and kernel variant, at sizes off the tiles
GEMM = [
    ("square 8192 (toy)", 72, 40, 56, False, False, ("float32", "bfloat16", "float16")),  # TMA-aligned: wgmma too
    ("odd (toy)", 70, 44, 50, False, False, ("float32", "bfloat16")),  # rows TMA cannot read: mma.sync only
    ("dense fwd (x Wt, toy)", 33, 64, 40, False, True, ("float32", "bfloat16")),
    ("dense dW (dyt x, toy)", 48, 24, 72, True, False, ("float32", "bfloat16")),
]
CONV = [
    ("3x3 (toy)", (2, 4, 9, 9), 8, 3, 1, 1),
    ("3x3 s2 (toy)", (2, 4, 9, 9), 8, 3, 2, 1),
    ("1x1 (toy)", (2, 8, 6, 4), 16, 1, 1, 0),  # OH*OW % 8 == 0: backward-weight on wgmma's narrow kernel too
]
# bench.py's batches: small, but not so small that one 16-bit rounding decides
# the first-step check (at batch 4 the MLP's hidden gradients hang on a few
# ReLU units within rounding of zero)
BATCH = {"mlp": 32, "mlp_wide": 32}
SMALL_BATCH = 4  # the convolutional and transformer models
MLP_WIDE = (64, 64, 64, 64, 10)  # bench.py: mlp_wide, narrowed


def _setup():
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import device  # noqa: PLC0415

    why = device.install(skip_refused=False)
    if why is not None:
        sys.exit(f"the emulated device cannot be built: {why}")
    import host_torch  # noqa: PLC0415

    host_torch.install()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("kernels", "bench", "checkpoint_amp"):
        sys.exit(__doc__)
    script, out, rest = argv[0], argv[1], argv[2:]
    os.makedirs(out, exist_ok=True)
    _setup()
    if script == "kernels":
        import kernels  # noqa: PLC0415

        kernels.GEMM, kernels.CONV = GEMM, CONV
        # the wgmma probe's child process on the emulated device too
        kernels.CHILD_SETUP = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import benchmarks; "
                               "benchmarks._setup()\n")
        sys.argv = ["kernels.py", "--repeat", "2", "--sweep", "--out", out, *rest]
        return kernels.main()
    if script == "bench":
        import bench  # noqa: PLC0415
        import models  # noqa: PLC0415

        for name, cfg in bench.CONFIGS.items():
            cfg["batch"] = BATCH.get(name, SMALL_BATCH)
        bench.CONFIGS["mlp_wide"].update(build=lambda m: models.mlp(m, MLP_WIDE), input=(MLP_WIDE[0],))
        return bench.main(["--device", "cuda", "--repeat", "2", "--warmup", "1", "--out", out, *rest])
    import checkpoint_amp  # noqa: PLC0415

    sys.argv = ["checkpoint_amp.py", "--device", "cuda", "--blocks", "3", "--batch", "4", "--repeat", "2",
                "--out", os.path.join(out, "cuda_checkpoint_amp.json"), *rest]
    return checkpoint_amp.main()


if __name__ == "__main__":
    sys.exit(main())
