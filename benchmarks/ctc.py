"""CTC loss, forward and backward, next to PyTorch's ``F.ctc_loss``.

A batch of N log-probability sequences (T steps, C classes) with targets of
S labels (random, repeats allowed), the same arrays in both frameworks.
Timed, interleaved, medians of whole forward+backward calls:

- ``lamina``: ``CTCLoss`` as users call it (on CUDA: lamina's kernel,
  csrc/cuda/ctc.cu; on the CPU: the NumPy recursions);
- ``lamina_recursions`` (CUDA only): the CuPy recursions the kernel
  replaces, a few launches per step;
- ``torch``: ``F.ctc_loss`` (cuDNN's or PyTorch's own kernel on CUDA).

Before timing, the losses and the gradients with respect to the logits
(through a log_softmax in both) are checked against each other.

Floor: the work is ~3·T·S' log-add-exps per sample (S' = 2S + 1) plus the
T·C gradient: microseconds of arithmetic, so on a GPU the time is T
dependent steps (latency), and on the CPU it is the per-step cost of NumPy.

    python benchmarks/ctc.py [--device cpu|cuda] [--shapes 100x16x28x20,400x32x40x60] [--repeat 5]

Shapes are T x N x C x S.  Writes benchmarks/results/<device>_ctc.json.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import device_name, time_interleaved  # noqa: E402

import lamina as lm  # noqa: E402
from lamina.serialization import atomic_write  # noqa: E402


def case(t, n, c, s, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((t, n, c)).astype(np.float32)
    targets = rng.integers(1, c, (n, s))
    input_lengths = np.full(n, t, dtype=np.int64)
    input_lengths[1::2] = t - t // 5
    target_lengths = np.full(n, s, dtype=np.int64)
    target_lengths[1::3] = s // 2
    return logits, targets, input_lengths, target_lengths


def runners(logits, targets, il, tl, device):
    xp = np if device == "cpu" else lm.backend.cupy_module()
    x, y = xp.asarray(logits), xp.asarray(targets)
    tx = torch.from_numpy(logits).to(device).requires_grad_(True)
    ty, til, ttl = (torch.from_numpy(a).to(device) for a in (targets, il, tl))

    def lamina_step():
        log_softmax, ctc = lm.LogSoftmax(), lm.CTCLoss()
        loss = ctc.compute(log_softmax(x), y, il, tl)
        return loss, log_softmax.backward(ctc.backward())

    def lamina_recursions():
        real = lm.ops.ctc_loss
        lm.ops.ctc_loss = lambda *a, **k: None  # the CuPy recursions the kernel replaces
        try:
            return lamina_step()
        finally:
            lm.ops.ctc_loss = real

    def torch_step():
        tx.grad = None
        loss = torch.nn.functional.ctc_loss(tx.log_softmax(2), ty, til, ttl)
        loss.backward()
        return loss, tx.grad

    runs = {"lamina": lamina_step, "torch": torch_step}
    if device != "cpu":
        runs["lamina_recursions"] = lamina_recursions
    return runs


def host(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return lm.backend.to_device(a, "cpu")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="100x16x28x20,400x32x40x60", help="T x N x C x S, comma-separated")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="default: benchmarks/results/<device>_ctc.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    result = {
        "benchmark": "ctc", "device": device_name(args.device), "threads": args.threads,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__, "lamina": lm.__version__,
        "dtype": "float32", "reduction": "mean",
        "command": "python benchmarks/ctc.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{args.device}_ctc.json")
    for shape in args.shapes.split(","):
        t, n, c, s = (int(v) for v in shape.lower().split("x"))
        logits, targets, il, tl = case(t, n, c, s)
        runs = runners(logits, targets, il, tl, args.device)
        outs = {k: f() for k, f in runs.items()}
        ref_loss, ref_grad = (host(v) for v in outs["torch"])
        errors = {}
        for k, (loss, grad) in outs.items():
            errors[k] = {"loss_rel": float(abs(host(loss) - ref_loss) / abs(ref_loss)),
                         "grad_abs": float(np.abs(host(grad) - ref_grad).max())}
        if max(e["loss_rel"] for e in errors.values()) > 1e-4 or max(e["grad_abs"] for e in errors.values()) > 1e-4:
            raise SystemExit(f"refusing to time: lamina and PyTorch disagree on {shape}: {errors}")
        times = time_interleaved({k: (lambda f=f: f()) for k, f in runs.items()}, args.device, args.repeat, warmup=1)
        row = {"T": t, "N": n, "C": c, "S": s, "errors_vs_torch": errors, "seconds": times,
               "ratio_lamina_vs_torch": times["lamina"] / times["torch"]}
        if "lamina_recursions" in times:
            row["ratio_kernel_vs_recursions"] = times["lamina"] / times["lamina_recursions"]
        rows.append(row)
        print(f"{shape:>16}  " + "  ".join(f"{k} {1e3 * v:8.2f} ms" for k, v in times.items()) +
              f"  lamina/torch {row['ratio_lamina_vs_torch']:.2f}")
        atomic_write(out, json.dumps(result, indent=2).encode())  # after every row
    return result


if __name__ == "__main__":
    main()
