"""Where lamina's training step spends its host (Python) time.

    python benchmarks/host_profile.py [--model resnet20] [--device cuda] [--steps 20] [--top 30]

On the GPU an eager step costs the host's dispatch (Python, CuPy's launch
path) plus whatever GPU work it fails to hide; a CUDA graph removes the
first.  This runs bench.py's model (same weights, data and optimizer) for a
few warm-up steps, then times ``--steps`` steps three ways: host time to
issue them without waiting, the same steps waited for, and under cProfile,
whose table (functions by own time) it prints.  Writes nothing.
"""

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402 - the benchmark's models and step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=sorted(bench.CONFIGS))
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    pair = bench.Pair(args.model, bench.CONFIGS[args.model], args.device, args.precision)
    for _ in range(3):
        pair.lamina_step()
    bench._sync(args.device)

    t = time.perf_counter()
    for _ in range(args.steps):
        pair.lamina_step()
    issued = time.perf_counter() - t
    bench._sync(args.device)
    done = time.perf_counter() - t
    print(f"{args.model} [{args.precision}] on {args.device}: {1e3 * issued / args.steps:.2f} ms per step to issue, "
          f"{1e3 * done / args.steps:.2f} ms per step done")

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        pair.lamina_step()
    bench._sync(args.device)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
