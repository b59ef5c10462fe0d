"""Memory and time of gradient checkpointing and mixed precision, next to PyTorch.

1. A 32-block residual CNN (16 channels at 16x16, batch 32, 3x3 convs with
   BatchNorm), trained with SGD: without checkpointing, and with k ≈ √n
   segments (lamina's ``Sequential(checkpoint_segments=k)``, PyTorch's
   ``checkpoint_sequential``).  Activation memory is what the layers keep for
   backward: lamina counts it with ``lamina.memory.track()`` (peak over the
   step, and what is held when forward ends); PyTorch's is counted with
   saved-tensor hooks (bytes held when forward ends, each storage once).
   Step times are medians of interleaved runs.
2. Activation memory of the same network's step in float16 against float32
   (``lamina.amp.autocast``).  On the CPU 16-bit arithmetic runs in float32,
   so only memory is compared here; the speedup needs a GPU.

    python benchmarks/checkpoint_amp.py [--repeat 5] [--device cuda]

On a GPU (``--device cuda``) both models live there, each step is timed
between device synchronisations, and lamina's memory figures come from the
arrays it tracks on CuPy.  Writes benchmarks/results/cpu_checkpoint_amp.json
(or cuda_checkpoint_amp.json).
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
from bench import torch_saved_bytes  # noqa: E402

import lamina as lm  # noqa: E402
from lamina.serialization import atomic_write  # noqa: E402


def residual_net(m, blocks=32, c=16):
    L = models._ns(m)
    layers = [L["conv"](3, c, 3, padding=1, bias=False), L["bn"](c), L["relu"]()]
    layers += [models._block(L, c, c, 1) for _ in range(blocks)]
    layers += [L["gap"](), L["dense"](c, 10)]
    return layers


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--blocks", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="default: benchmarks/results/<device>_checkpoint_amp.json")
    args = p.parse_args()
    if args.out is None:
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{args.device}_checkpoint_amp.json")
    torch.set_num_threads(os.cpu_count())
    if args.device == "cuda":
        import cupy as xp  # noqa: PLC0415

        torch.backends.cudnn.allow_tf32 = False  # fp32 on both sides
        torch.backends.cuda.matmul.allow_tf32 = False

        def sync():
            xp.cuda.Device().synchronize()
            torch.cuda.synchronize()
    else:
        xp = np

        def sync():
            pass
    n_layers = 3 + args.blocks + 2
    k = round(math.sqrt(n_layers))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    tx, ty = torch.from_numpy(x).to(args.device), torch.from_numpy(y).to(args.device)

    torch.manual_seed(0)
    tlayers = residual_net(torch, args.blocks)
    tmodel = torch.nn.Sequential(*tlayers)
    state = {key: v.numpy() for key, v in tmodel.state_dict().items()}
    tmodel.to(args.device)
    lmodels = {}
    for segments in (0, k):
        lmodels[segments] = lm.Sequential(*residual_net(lm, args.blocks), checkpoint_segments=segments)
        lmodels[segments].load_state_dict(state)
        lmodels[segments].to(args.device)
    x, y = xp.asarray(x), xp.asarray(y)
    loss_fn = lm.SoftmaxCrossEntropy()
    opts = {s: lm.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for s, m in lmodels.items()}
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)

    def lamina_step(segments, track=False):
        model = lmodels[segments]
        with lm.memory.track() as mem:
            logits = model(x)
            held = mem.live_bytes
            loss_fn.compute(logits, y)  # on the device, as PyTorch's loss
            opts[segments].zero_grad()
            model.backward_parameters(loss_fn.backward())
        opts[segments].step()
        return mem.peak_bytes, held

    def torch_step(segments):
        def fwd():
            if segments:
                return torch.utils.checkpoint.checkpoint_sequential(tmodel, segments, tx, use_reentrant=False)
            return tmodel(tx)

        logits, held = torch_saved_bytes(fwd)
        loss = torch.nn.functional.cross_entropy(logits, ty)
        topt.zero_grad()
        loss.backward()
        topt.step()
        return held

    memory = {}
    for segments in (0, k):
        peak, held = lamina_step(segments)
        memory[f"lamina_{segments}"] = {"peak_bytes": peak, "held_after_forward_bytes": held}
        memory[f"torch_{segments}"] = {"held_after_forward_bytes": torch_step(segments)}
    times = {f"{fw}_{s}": [] for fw in ("lamina", "torch") for s in (0, k)}
    for r in range(args.repeat):
        for s in ((0, k) if r % 2 == 0 else (k, 0)):
            sync()
            t = time.perf_counter()
            lamina_step(s)
            sync()
            times[f"lamina_{s}"].append(time.perf_counter() - t)
            t = time.perf_counter()
            torch_step(s)
            sync()
            times[f"torch_{s}"].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}

    # fp16 against fp32 activation memory (same network, no checkpointing)
    half = lm.Sequential(*residual_net(lm, args.blocks))
    half.load_state_dict(state)
    half.to(args.device)
    lm.amp.autocast(half, "float16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lm.PerformanceWarning)  # the CPU computes float16 in float32: said in the docstring
        with lm.memory.track() as mem16:
            loss_fn(half(x.astype(np.float16)), y)
            half.backward_parameters(loss_fn.backward())
    fp32_peak = memory["lamina_0"]["peak_bytes"]

    result = {
        "benchmark": "checkpoint_amp", "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine(),
        "model": f"{args.blocks}-block residual CNN, 16 channels, 16x16, batch {args.batch}", "layers": n_layers, "segments": k,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__, "lamina": lm.__version__,
        "env": {v: os.environ.get(v) for v in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")},
        "memory": memory,
        "lamina_peak_ratio": memory[f"lamina_{k}"]["peak_bytes"] / memory["lamina_0"]["peak_bytes"],
        "lamina_held_ratio": memory[f"lamina_{k}"]["held_after_forward_bytes"] / memory["lamina_0"]["held_after_forward_bytes"],
        "torch_held_ratio": memory[f"torch_{k}"]["held_after_forward_bytes"] / memory["torch_0"]["held_after_forward_bytes"],
        "step_ms": {key: 1e3 * v for key, v in med.items()},
        "lamina_time_ratio": med[f"lamina_{k}"] / med["lamina_0"],
        "torch_time_ratio": med[f"torch_{k}"] / med["torch_0"],
        "fp16_peak_bytes": mem16.peak_bytes, "fp32_peak_bytes": fp32_peak, "fp16_over_fp32_memory": mem16.peak_bytes / fp32_peak,
    }
    mb = 1 / 2**20
    print(f"{result['model']}, {n_layers} layers, {k} segments")
    print(f"  lamina: peak activations {memory['lamina_0']['peak_bytes'] * mb:.1f} -> {memory[f'lamina_{k}']['peak_bytes'] * mb:.1f} MiB "
          f"(ratio {result['lamina_peak_ratio']:.3f}); held after forward ratio {result['lamina_held_ratio']:.3f}; "
          f"step {result['step_ms']['lamina_0']:.0f} -> {result['step_ms'][f'lamina_{k}']:.0f} ms (x{result['lamina_time_ratio']:.2f})")
    print(f"  PyTorch: held after forward {memory['torch_0']['held_after_forward_bytes'] * mb:.1f} -> "
          f"{memory[f'torch_{k}']['held_after_forward_bytes'] * mb:.1f} MiB (ratio {result['torch_held_ratio']:.3f}); "
          f"step {result['step_ms']['torch_0']:.0f} -> {result['step_ms'][f'torch_{k}']:.0f} ms (x{result['torch_time_ratio']:.2f})")
    print(f"  float16 activation memory / float32: {result['fp16_over_fp32_memory']:.3f}")
    atomic_write(args.out, json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
