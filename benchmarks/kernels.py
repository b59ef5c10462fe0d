"""lamina's CUDA GEMM against cuBLAS (through CuPy), on a GPU.

fp32 with TF32 off on both sides (CuPy's default compute type for float32
is full fp32 unless CUPY_TF32 is set; this script clears it), at 4096³,
8192³, an odd size and training shapes, every transpose Dense uses.
Device-event timings, medians after warm-up, ratio lamina/cuBLAS as
throughput (higher is better for lamina).  Each kernel is checked against
cuBLAS before it is timed.

    python benchmarks/kernels.py [--repeat 20]

Writes benchmarks/results/kernels_<device>.json.
"""

import os

os.environ.pop("CUPY_TF32", None)

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from lamina import backend, ops  # noqa: E402

SHAPES = [  # (name, M, N, K, trans_a, trans_b)
    ("square 4096", 4096, 4096, 4096, False, False),
    ("square 8192", 8192, 8192, 8192, False, False),
    ("odd 4000x4100x4200", 4000, 4100, 4200, False, False),
    ("dense fwd 128x512x784 (x Wt)", 128, 512, 784, False, True),
    ("dense dx 128x784x512 (dy W)", 128, 784, 512, False, False),
    ("dense dW 512x784x128 (dyt x)", 512, 784, 128, True, False),
    ("conv2 fwd 64x12544x800", 64, 12544, 800, False, False),
]


def time_ms(cp, fn, repeat):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args()
    cp = backend.require_cuda()
    props = cp.cuda.runtime.getDeviceProperties(0)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    rng = np.random.default_rng(0)
    rows = []
    for name, m, n, k, ta, tb in SHAPES:
        a = cp.asarray(rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32))
        b = cp.asarray(rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32))
        oa, ob = (a.T if ta else a), (b.T if tb else b)
        ref = oa @ ob
        got = ops.gemm_cuda(oa, ob)
        err = float(cp.abs(got - ref).max() / cp.abs(ref).max())
        if not err < 1e-4:
            sys.exit(f"{name}: lamina's GEMM differs from cuBLAS by {err:.2e} (relative): not timing it")
        out = cp.empty((m, n), dtype=cp.float32)
        t_lamina = time_ms(cp, lambda: ops.gemm_cuda(oa, ob, out=out), args.repeat)
        t_cublas = time_ms(cp, lambda: cp.matmul(oa, ob, out=out), args.repeat)
        flops = 2.0 * m * n * k
        row = {"shape": name, "m": m, "n": n, "k": k, "trans_a": ta, "trans_b": tb, "dtype": "float32", "tf32": False,
               "lamina_ms": t_lamina, "cublas_ms": t_cublas, "lamina_tflops": flops / t_lamina / 1e9,
               "cublas_tflops": flops / t_cublas / 1e9, "ratio_of_cublas": t_cublas / t_lamina, "max_rel_error": err}
        rows.append(row)
        print(f"{name:>32}: lamina {t_lamina:8.3f} ms ({row['lamina_tflops']:6.1f} TFLOP/s)  cuBLAS {t_cublas:8.3f} ms "
              f"({row['cublas_tflops']:6.1f} TFLOP/s)  lamina/cuBLAS throughput {row['ratio_of_cublas']:.2f}", flush=True)
    result = {"benchmark": "kernels", "device": device, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
              "cupy": cp.__version__, "results": rows}
    stem = "kernels_" + re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, stem + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
