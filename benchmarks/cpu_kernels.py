"""lamina._C kernels against the NumPy references they replace.

Interleaved runs in one process, medians, ratio C++/NumPy.  Writes
benchmarks/results/cpu_kernels.json.

    python benchmarks/cpu_kernels.py [--repeat 50]
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from lamina import ops
from lamina.ops import _ext, reference


def bench(fns, repeat):
    """Median seconds of each callable, run interleaved after one warm-up."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu_kernels.json"))
    args = p.parse_args()
    C = _ext.cpu_module()
    if C is None:
        raise SystemExit(f"lamina._C is not built: {_ext.import_error('_C')}")
    rng = np.random.default_rng(0)
    rows = []
    for n in (128 * 512, 1 << 20, 1 << 22):
        x = rng.standard_normal(n).astype(np.float32)
        dy = rng.standard_normal(n).astype(np.float32)
        for approx in ("none", "tanh"):
            r = bench({
                "lamina": lambda: (ops.gelu_forward(x, approx), ops.gelu_backward(dy, x, approx)),
                "numpy": lambda: (reference.gelu_forward(np, x, approx), reference.gelu_backward(np, dy, x, approx)),
            }, args.repeat)
            rows.append({"kernel": f"gelu[{approx}] fwd+bwd", "shape": [n], "dtype": "float32",
                         "lamina_s": r["lamina"], "numpy_s": r["numpy"], "ratio": r["lamina"] / r["numpy"]})
    for n, c in ((128, 10), (1024, 10), (512, 1000), (4096, 1000)):
        x = rng.standard_normal((n, c)).astype(np.float32)
        y = rng.integers(0, c, n)
        r = bench({
            "lamina": lambda: ops.softmax_xent(x, y, 0.0, 1.0 / n, True),
            "numpy": lambda: reference.softmax_xent(np, x, y, 0.0, 1.0 / n, True),
        }, args.repeat)
        rows.append({"kernel": "softmax_xent fwd+bwd", "shape": [n, c], "dtype": "float32",
                     "lamina_s": r["lamina"], "numpy_s": r["numpy"], "ratio": r["lamina"] / r["numpy"]})
    result = {
        "device": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "omp_threads": C.num_threads(),
        "numpy": np.__version__, "python": platform.python_version(), "repeat": args.repeat, "rows": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(f"{'kernel':24s} {'shape':>12s} {'lamina ms':>10s} {'numpy ms':>10s} {'ratio':>7s}")
    for r in rows:
        print(f"{r['kernel']:24s} {'x'.join(map(str, r['shape'])):>12s} {r['lamina_s'] * 1e3:10.3f} {r['numpy_s'] * 1e3:10.3f} {r['ratio']:7.3f}")


if __name__ == "__main__":
    main()
