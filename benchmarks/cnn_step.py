"""A CNN training step in lamina against the same step in PyTorch, on the CPU.

Forward, softmax cross-entropy, backward and an SGD-with-momentum update of
the LeNet-style CNN (conv32-pool-conv64-pool-fc128-fc10 on 1x28x28, batch 64)
and of a CIFAR ResNet-20 (3x32x32, batch 128 by default), with the same
weights (PyTorch's initialisation, loaded into lamina) and the same data, in
one process, interleaved step by step, after warm-up; medians.

Before timing anything the first step is checked: loss and every parameter
gradient must match PyTorch, or nothing is timed.

    python benchmarks/cnn_step.py [--models lenet,resnet20] [--repeat 30] [--threads 2]

Writes benchmarks/results/cpu_cnn_step.json and prints a table plus lamina's
time per layer.

Threads.  NumPy's OpenBLAS keeps its worker threads spinning for about 2^28
cycles (~0.1 s) after each GEMM.  Interleaved with PyTorch, that spinning
takes a core from PyTorch's next step (and PyTorch's OpenMP threads do the
same to lamina), so neither side would be measured as it runs alone.  This
script therefore sets OPENBLAS_THREAD_TIMEOUT=4 (the minimum) and
OMP_WAIT_POLICY=PASSIVE (for PyTorch's OpenMP runtime too) before anything
loads, so that no idle thread pool spins.  Both are recorded in the results,
and each framework is also timed in a block of its own steps ("blocked"),
which shows what interleaving still costs.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402  (before lamina: its OpenMP runtime keeps its own settings)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

import lamina as lm  # noqa: E402
from lamina.ops import _ext  # noqa: E402

CONFIGS = {
    "lenet": dict(build=models.lenet, input=(1, 28, 28), batch=64),
    "resnet20": dict(build=lambda m: models.resnet(m, 3), input=(3, 32, 32), batch=128),
    "resnet8": dict(build=lambda m: models.resnet(m, 1), input=(3, 32, 32), batch=64),
}


def count_flops(model, input_shape, batch):
    """FLOPs of one training step: 2 per multiply-add, forward plus the two
    backward GEMMs (dx and dW) of every Conv2D and Dense: 3x the forward."""
    macs = 0
    shapes = {}
    hooks = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(lambda mod, i, o: shapes.__setitem__(mod, o.shape)))
    with torch.no_grad():
        model(torch.zeros(batch, *input_shape))
    for h in hooks:
        h.remove()
    for mod, out in shapes.items():
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.weight[0].numel()  # C/G * KH * KW
            macs += out.numel() * k
        else:
            macs += out.numel() * mod.in_features
    return 3 * 2 * macs


class LayerTimer:
    """Wall time of each top-level layer's forward and backward in lamina."""

    def __init__(self, model):
        self.times = {}
        self.model = model
        for name, layer in model.named_children():
            for kind in ("forward", "backward"):
                fn = getattr(layer, kind)

                def timed(*a, _fn=fn, _key=(name, type(layer).__name__, kind)):
                    t = time.perf_counter()
                    out = _fn(*a)
                    self.times.setdefault(_key, []).append(time.perf_counter() - t)
                    return out

                object.__setattr__(layer, kind, timed)

    def remove(self):
        for _, layer in self.model.named_children():
            for kind in ("forward", "backward"):
                object.__delattr__(layer, kind)


def check_first_step(name, lmodel, tmodel, x, y, rtol=2e-3, atol=2e-4):
    """One step's loss and gradients in both frameworks; an error if they differ."""
    loss_fn = lm.SoftmaxCrossEntropy()
    loss = loss_fn(lmodel(x), y)
    lmodel.zero_grad(set_to_none=True)
    lmodel.backward(loss_fn.backward())
    tmodel.zero_grad(set_to_none=True)
    tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    problems = []
    if not np.isclose(loss, tloss.item(), rtol=rtol, atol=atol):
        problems.append(f"loss {loss:.6g} vs PyTorch {tloss.item():.6g}")
    tgrads = {k: p.grad.numpy() for k, p in tmodel.named_parameters()}
    for key, p in lmodel.named_parameters():
        g, tg = p.grad, tgrads[key]
        scale = max(float(np.abs(tg).max()), 1e-12)
        err = float(np.abs(g - tg).max()) / scale
        if err > rtol * 10:
            problems.append(f"grad of {key}: max error {err:.2e} of its largest element")
    if problems:
        raise SystemExit(f"{name}: lamina does not match PyTorch on the first step, refusing to time it:\n  " + "\n  ".join(problems))
    return loss


def bench_model(name, cfg, repeat, warmup, seed=0):
    torch.manual_seed(seed)
    tmodel = cfg["build"](torch)
    lmodel = cfg["build"](lm)
    lmodel.load_state_dict(tmodel.state_dict())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["batch"], *cfg["input"])).astype(np.float32)
    y = rng.integers(0, 10, cfg["batch"]).astype(np.int64)
    first_loss = check_first_step(name, lmodel, tmodel, x, y)

    loss_fn = lm.SoftmaxCrossEntropy()
    lopt = lm.optim.SGD(lmodel.parameters(), lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def lamina_step():
        loss_fn(lmodel(x), y)
        lopt.zero_grad()
        lmodel.backward(loss_fn.backward())
        lopt.step()

    def torch_step():
        loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
        topt.zero_grad()
        loss.backward()
        topt.step()

    steps = {"lamina": lamina_step, "torch": torch_step}
    for _ in range(warmup):
        for f in steps.values():
            f()
    times = {k: [] for k in steps}
    timer = LayerTimer(lmodel)
    for r in range(repeat):
        order = ("lamina", "torch") if r % 2 == 0 else ("torch", "lamina")  # neither always goes first
        for k in order:
            t = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t)
    timer.remove()
    blocked = {}
    for k, f in steps.items():
        f()
        ts = []
        for _ in range(max(5, repeat // 2)):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        blocked[k] = statistics.median(ts)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = count_flops(tmodel, cfg["input"], cfg["batch"])
    layers = [
        {"layer": n, "type": t, "pass": kind, "median_ms": 1e3 * statistics.median(v)}
        for (n, t, kind), v in timer.times.items()
    ]
    return {
        "model": name, "batch": cfg["batch"], "input": list(cfg["input"]), "first_step_loss": float(first_loss),
        "lamina_ms": 1e3 * med["lamina"], "torch_ms": 1e3 * med["torch"], "ratio": med["lamina"] / med["torch"],
        "lamina_iqr_ms": 1e3 * float(np.subtract(*np.percentile(times["lamina"], [75, 25]))),
        "torch_iqr_ms": 1e3 * float(np.subtract(*np.percentile(times["torch"], [75, 25]))),
        "blocked_lamina_ms": 1e3 * blocked["lamina"], "blocked_torch_ms": 1e3 * blocked["torch"],
        "blocked_ratio": blocked["lamina"] / blocked["torch"],
        "gflop_per_step": flops / 1e9,
        "lamina_gflops": flops / med["lamina"] / 1e9, "torch_gflops": flops / med["torch"] / 1e9,
        "lamina_layers": layers,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="lenet,resnet20")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu_cnn_step.json"))
    args = p.parse_args()
    if _ext.cpu_module() is None:
        raise SystemExit(f"lamina._C is not built ({_ext.import_error('_C')}): nothing to benchmark")
    torch.set_num_threads(args.threads)
    _ext.cpu_module().set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        row = bench_model(name, CONFIGS[name], args.repeat, args.warmup)
        rows.append(row)
        print(f"\n{name} (batch {row['batch']}, {row['gflop_per_step']:.2f} GFLOP/step): lamina {row['lamina_ms']:.1f} ms, "
              f"PyTorch {row['torch_ms']:.1f} ms, ratio {row['ratio']:.2f} "
              f"({row['lamina_gflops']:.0f} vs {row['torch_gflops']:.0f} GFLOP/s); blocked: {row['blocked_lamina_ms']:.1f} vs "
              f"{row['blocked_torch_ms']:.1f} ms, ratio {row['blocked_ratio']:.2f}")
        for layer in sorted(row["lamina_layers"], key=lambda r: -r["median_ms"])[:8]:
            print(f"    {layer['layer']:>3} {layer['type']:<12} {layer['pass']:<8} {layer['median_ms']:7.2f} ms")
    result = {
        "benchmark": "cnn_step", "device": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "threads": args.threads, "repeat": args.repeat, "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__, "lamina": lm.__version__,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")},
        "results": rows,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
