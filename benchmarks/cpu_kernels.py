"""lamina._C kernels against the NumPy references they replace.

Interleaved runs in one process, medians, ratio C++/NumPy.  The elementwise
and row-wise kernels (GELU, softmax, layer norm) also run on their baseline
(SSE2) build beside the AVX2 one, and against PyTorch's.  Convolutions:
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


def vector_cases(rng, torch):
    """(name, shape, {path: callable}) for the elementwise and row-wise kernels:
    lamina (its AVX2 build where the CPU has one), the same kernel's baseline
    (SSE2) build, the NumPy reference, and PyTorch's forward + backward."""
    C = _ext.cpu_module()

    def baseline(f):
        def run():
            previous = C.set_avx2(False)
            try:
                f()
            finally:
                C.set_avx2(previous)
        return run

    cases = []
    for n in (128 * 512, 1 << 20, 1 << 22):
        x = rng.standard_normal(n).astype(np.float32)
        dy = rng.standard_normal(n).astype(np.float32)
        for approx in ("none", "tanh"):
            def lam(x=x, dy=dy, approx=approx):
                ops.gelu_forward(x, approx), ops.gelu_backward(dy, x, approx)
            fns = {"lamina": lam, "baseline": baseline(lam),
                   "numpy": lambda x=x, dy=dy, approx=approx: (reference.gelu_forward(np, x, approx),
                                                               reference.gelu_backward(np, dy, x, approx))}
            if torch is not None:
                tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
                fns["torch"] = lambda tx=tx, tdy=tdy, approx=approx: (
                    torch.nn.functional.gelu(tx, approximate=approx), torch.ops.aten.gelu_backward(tdy, tx, approximate=approx))
            cases.append((f"gelu[{approx}] fwd+bwd", (n,), fns))
    # attention's softmax (batch 32, 4 heads, 128 keys) and a wide one
    for shape in ((32, 4, 128, 128), (256, 4096)):
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        y = ops.softmax_forward(x, 0.125)

        def lam(x=x, dy=dy, y=y):
            ops.softmax_forward(x, 0.125), ops.softmax_backward(dy, y, 0.125)
        fns = {"lamina": lam, "baseline": baseline(lam),
               "numpy": lambda x=x, dy=dy, y=y: (reference.softmax_forward(np, x, 0.125),
                                                 reference.softmax_backward(np, dy, y, 0.125))}
        if torch is not None:
            tx, tdy, ty = (torch.from_numpy(a) for a in (x, dy, y))
            fns["torch"] = lambda tx=tx, tdy=tdy, ty=ty: (
                torch.softmax(tx * 0.125, -1), torch.ops.aten._softmax_backward_data(tdy, ty, -1, torch.float32) * 0.125)
        cases.append(("softmax fwd+bwd", shape, fns))
    # the transformer block's LayerNorm (32 x 128 tokens of 256) and a wide one
    for rows_, d in ((4096, 256), (1024, 4096)):
        x = rng.standard_normal((rows_, d)).astype(np.float32)
        dy = rng.standard_normal((rows_, d)).astype(np.float32)
        w, b = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)

        def lam(x=x, dy=dy, w=w, b=b):
            _, xhat, rstd = ops.layernorm_forward(x, w, b)
            ops.layernorm_backward(dy, xhat, rstd, w)

        def ref(x=x, dy=dy, w=w, b=b):
            _, xhat, rstd = reference.layernorm_forward(np, x, w, b, 1e-5)
            reference.layernorm_backward(np, dy, xhat, rstd, w, True)
        fns = {"lamina": lam, "baseline": baseline(lam), "numpy": ref}
        if torch is not None:
            tx, tdy, tw, tb = (torch.from_numpy(a) for a in (x, dy, w, b))

            def tln(tx=tx, tdy=tdy, tw=tw, tb=tb, d=d):
                y, mean, rstd = torch.ops.aten.native_layer_norm(tx, [d], tw, tb, 1e-5)
                torch.ops.aten.native_layer_norm_backward(tdy, tx, [d], mean, rstd, tw, tb, [True, True, True])
            fns["torch"] = tln
        cases.append(("layernorm fwd+bwd", (rows_, d), fns))
    return cases


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
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(C.num_threads())
        except ImportError:
            torch = None
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, fns in vector_cases(rng, torch):
        r = bench(fns, args.repeat)
        row = {"kernel": name, "shape": list(shape), "dtype": "float32", "lamina_s": r["lamina"],
               "numpy_s": r["numpy"], "ratio": r["lamina"] / r["numpy"]}
        if "baseline" in r:
            row.update(baseline_s=r["baseline"], ratio_baseline=r["lamina"] / r["baseline"])
        if "torch" in r:
            row.update(torch_s=r["torch"], ratio_torch=r["lamina"] / r["torch"])
        rows.append(row)
    for n, c in ((128, 10), (1024, 10), (512, 1000), (4096, 1000)):
        x = rng.standard_normal((n, c)).astype(np.float32)
        y = rng.integers(0, c, n)
        r = bench({
            "lamina": lambda: ops.softmax_xent(x, y, 0.0, 1.0 / n, True),
            "numpy": lambda: reference.softmax_xent(np, x, y, 0.0, 1.0 / n, True),
        }, args.repeat)
        rows.append({"kernel": "softmax_xent fwd+bwd", "shape": [n, c], "dtype": "float32",
                     "lamina_s": r["lamina"], "numpy_s": r["numpy"], "ratio": r["lamina"] / r["numpy"]})
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
    print(f"{'kernel':28s} {'shape':>20s} {'lamina ms':>10s} {'SSE2 ms':>8s} {'numpy ms':>9s} {'ratio':>6s} "
          f"{'torch ms':>9s} {'ratio':>6s}")
    for r in rows:
        base = f"{r['baseline_s'] * 1e3:8.3f}" if "baseline_s" in r else " " * 8
        t = f"{r['torch_s'] * 1e3:9.3f} {r['ratio_torch']:6.3f}" if "torch_s" in r else ""
        print(f"{r['kernel']:28s} {'x'.join(map(str, r['shape'])):>20s} {r['lamina_s'] * 1e3:10.3f} {base} "
              f"{r['numpy_s'] * 1e3:9.3f} {r['ratio']:6.3f} {t}")


if __name__ == "__main__":
    main()
