"""Token-by-token decoding with and without a KVCache, next to PyTorch.

A Transformer decoder (4 layers, d_model 256, 8 heads, feed-forward 1024,
post-LN, causal) reads a memory of 64 positions and decodes L positions for
a batch of 8, one call per position:

- lamina, cached: each call runs the newest position alone; every attention
  layer reads the earlier keys and values, and the memory's, from a
  ``lamina.KVCache``.
- lamina and PyTorch, full prefix: each call runs the whole prefix again
  (``nn.TransformerDecoder`` keeps nothing between calls) and keeps the last
  position's output.

Both frameworks hold the same weights (PyTorch's state_dict loaded into
lamina) and read the same inputs.  Before timing, the three outputs at
every position are checked against each other.  Times are medians of
interleaved runs of a whole L-position decode.

Floor.  Call t of the full prefix runs t positions through every layer,
~(4E² + 2E·F + 2tE) multiply-adds each (projections, feed-forward,
attention), so a decode costs ~L²/2 positions' worth: quadratic in L.  The
cache runs one position per call, ~L positions in all: L/2 times less
arithmetic, but L calls' worth of per-call dispatch, which is what a short
decode pays for.

    python benchmarks/decoding.py [--lengths 32,128] [--repeat 5] [--device cpu|cuda]

Writes benchmarks/results/<device>_decoding.json.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402  (as bench.py: OMP_WAIT_POLICY is set above, for both runtimes)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import device_name, time_interleaved  # noqa: E402

import lamina as lm  # noqa: E402
from lamina.serialization import atomic_write  # noqa: E402


def build(d_model, nhead, layers, ff, device):
    """The same decoder in PyTorch and lamina (eval mode, shared weights)."""
    torch.manual_seed(0)
    t = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(d_model, nhead, ff, dropout=0.0, batch_first=True), layers).eval()
    m = lm.TransformerDecoder(lm.TransformerDecoderLayer(d_model, nhead, ff, dropout=0.0, causal=True), layers)
    m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    return t.to(device), m.to(device).eval()


def decoders(t, m, tgt, memory, device):
    """Functions that decode all of tgt's positions, one call each; each
    returns the outputs (N, L, E) as NumPy."""
    xp = lm.get_array_module(m.layers[0].linear1.weight.data)
    x, mem = xp.asarray(tgt), xp.asarray(memory)
    tx, tmem = torch.from_numpy(tgt).to(device), torch.from_numpy(memory).to(device)
    length = tgt.shape[1]
    masks = {n: torch.triu(torch.ones(n, n, dtype=torch.bool, device=device), 1) for n in range(1, length + 1)}

    def lamina_cached():
        cache = lm.KVCache()
        with lm.no_grad():
            return [m(x[:, i:i + 1], mem, cache=cache) for i in range(length)]

    def lamina_full():
        with lm.no_grad():
            return [m(x[:, :i + 1], mem)[:, -1:] for i in range(length)]

    def torch_full():
        with torch.no_grad():
            return [t(tx[:, :i + 1], tmem, tgt_mask=masks[i + 1])[:, -1:] for i in range(length)]

    return {"lamina_cached": lamina_cached, "lamina_full_prefix": lamina_full, "torch_full_prefix": torch_full}


def to_numpy(outs):
    a = outs[0]
    if isinstance(a, torch.Tensor):
        return torch.cat(outs, 1).cpu().numpy()
    xp = lm.get_array_module(a)
    y = xp.concatenate(outs, axis=1)
    return y if xp is np else y.get()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="32,128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--memory", type=int, default=64)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--nhead", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ff", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="default: benchmarks/results/<device>_decoding.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    t, m = build(args.d_model, args.nhead, args.layers, args.ff, args.device)
    rng = np.random.default_rng(0)
    rows = []
    for length in (int(s) for s in args.lengths.split(",")):
        tgt = rng.standard_normal((args.batch, length, args.d_model)).astype(np.float32)
        memory = rng.standard_normal((args.batch, args.memory, args.d_model)).astype(np.float32)
        runs = decoders(t, m, tgt, memory, args.device)
        outs = {k: to_numpy(f()) for k, f in runs.items()}
        ref = outs["torch_full_prefix"]
        errors = {k: float(np.abs(v - ref).max()) for k, v in outs.items()}
        if max(errors.values()) > 1e-3:
            raise SystemExit(f"refusing to time: the decoders disagree with PyTorch by {errors} (length {length})")
        times = time_interleaved({k: (lambda f=f: f()) for k, f in runs.items()}, args.device, args.repeat, warmup=1)
        row = {"length": length, "max_abs_error_vs_torch": errors,
               "seconds": times, "ms_per_position": {k: 1e3 * v / length for k, v in times.items()},
               "ratio_cached_vs_lamina_full": times["lamina_cached"] / times["lamina_full_prefix"],
               "ratio_cached_vs_torch_full": times["lamina_cached"] / times["torch_full_prefix"],
               "ratio_lamina_full_vs_torch_full": times["lamina_full_prefix"] / times["torch_full_prefix"]}
        rows.append(row)
        print(f"L={length:4d}  " + "  ".join(f"{k} {1e3 * v:8.1f} ms" for k, v in times.items()) +
              f"  cached/full {row['ratio_cached_vs_lamina_full']:.3f}"
              f"  lamina full/torch full {row['ratio_lamina_full_vs_torch_full']:.2f}")
    result = {
        "benchmark": "decoding", "device": device_name(args.device), "threads": args.threads,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__, "lamina": lm.__version__,
        "model": {"d_model": args.d_model, "nhead": args.nhead, "layers": args.layers, "dim_feedforward": args.ff,
                  "batch": args.batch, "memory_length": args.memory, "dtype": "float32", "tf32": False},
        "command": "python benchmarks/decoding.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{args.device}_decoding.json")
    atomic_write(out, json.dumps(result, indent=2).encode())
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
