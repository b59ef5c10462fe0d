"""lamina._C kernels against the NumPy references they replace.

Interleaved runs in one process, medians, ratio C++/NumPy.  Convolutions:
lamina's direct kernel (forward + backward-data + backward-weight) against
the im2col + BLAS path it replaces and against PyTorch (oneDNN) on the same
threads.  Writes benchmarks/results/cpu_kernels.json.

    python benchmarks/cpu_kernels.py [--repeat 50]
"""

import argparse
import json
import os
import platform
import statistics
import time

# As in bench.py: idle BLAS and OpenMP workers must not spin on the cores the
# other framework is about to use.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from lamina import ops  # noqa: E402
from lamina.ops import _ext, reference  # noqa: E402
from lamina.serialization import atomic_write  # noqa: E402

# (name, N, C, H, W, O, kernel, padding): every stride-1 convolution of the bench models.
CONVS = [
    ("resnet20 stage1 3x3", 128, 16, 32, 32, 16, 3, 1),
    ("resnet20 stage2 3x3", 128, 32, 16, 16, 32, 3, 1),
    ("resnet20 stage3 3x3", 128, 64, 8, 8, 64, 3, 1),
    ("resnet20 stem 3x3", 128, 3, 32, 32, 16, 3, 1),
    ("lenet conv1 5x5", 64, 1, 28, 28, 32, 5, 2),
    ("lenet conv2 5x5", 64, 32, 14, 14, 64, 5, 2),
]


def conv_rows(repeat, torch):
    """A training step's three convolution passes per path, interleaved."""
    rng = np.random.default_rng(1)
    rows = []
    for name, n, c, h, w, o, k, p in CONVS:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((o, c, k, k)).astype(np.float32)
        g = ops.geometry(x.shape, (k, k), (1, 1), (p, p, p, p))
        dy = rng.standard_normal((n, o, g.oh, g.ow)).astype(np.float32)

        def direct():
            ops.conv2d_forward_direct(x, wt, None, g, 1)
            ops.conv2d_backward_direct(dy, x, wt, g, 1)

        def im2col():  # col kept from forward to backward, as Conv2D's default keep_col=True
            _, col = ops.conv2d_forward(x, wt, None, g, 1)
            ops.conv2d_backward(dy, col, wt, g, 1)

        fns = {"lamina": direct, "numpy": im2col}
        if torch is not None:
            tx, tw, tdy = (torch.from_numpy(a) for a in (x, wt, dy))
            tx.requires_grad_(True)
            tw.requires_grad_(True)

            def pytorch():
                torch.nn.functional.conv2d(tx, tw, padding=p).backward(tdy)
                tx.grad = tw.grad = None

            fns["torch"] = pytorch
        r = bench(fns, repeat)
        flop = 3 * 2 * n * o * c * k * k * g.oh * g.ow
        row = {"kernel": f"conv {name} fwd+bwd", "shape": [n, c, h, w, o, k, k], "dtype": "float32",
               "lamina_s": r["lamina"], "numpy_s": r["numpy"], "ratio": r["lamina"] / r["numpy"],
               "lamina_gflops": flop / r["lamina"] / 1e9}
        if torch is not None:
            row.update(torch_s=r["torch"], ratio_torch=r["lamina"] / r["torch"])
        rows.append(row)
    return rows


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
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch in the convolution rows")
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
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(C.num_threads())
        except ImportError:
            torch = None
    if C.conv_direct_supported():
        rows += conv_rows(max(5, args.repeat // 5), torch)
    else:
        print("this CPU lacks AVX2 or FMA: no direct convolution rows")
    result = {
        "device": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "omp_threads": C.num_threads(),
        "numpy": np.__version__, "python": platform.python_version(), "repeat": args.repeat,
        "torch": None if torch is None else torch.__version__,
        **{k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")}, "rows": rows,
    }
    atomic_write(args.out, json.dumps(result, indent=2).encode())
    print(f"{'kernel':36s} {'shape':>22s} {'lamina ms':>10s} {'numpy ms':>10s} {'ratio':>7s} {'torch ms':>9s} {'ratio':>7s}")
    for r in rows:
        t = f"{r['torch_s'] * 1e3:9.3f} {r['ratio_torch']:7.3f}" if "torch_s" in r else ""
        print(f"{r['kernel']:36s} {'x'.join(map(str, r['shape'])):>22s} {r['lamina_s'] * 1e3:10.3f} "
              f"{r['numpy_s'] * 1e3:10.3f} {r['ratio']:7.3f} {t}")


if __name__ == "__main__":
    main()
