"""lamina against PyTorch: one harness for training-step benchmarks, CPU and GPU.

For each model, the same architecture is built in both frameworks, PyTorch's
initial weights are loaded into lamina, and both train on the same data in
one process. Before anything is timed, the first step's loss and every
parameter gradient must match PyTorch; if they do not, the harness refuses
to time and says why. Then both run interleaved (the order alternating each
round) after warm-up, and the medians are reported.

Models: mlp (784-512-512-10, batch 128), mlp_wide (4096-4096-4096-4096-10,
batch 1024: compute-bound on a GPU, for the mixed-precision speedup), lenet (conv32-pool-conv64-pool-
fc128-fc10 on 1x28x28, batch 64), resnet20 (3x32x32, batch 128),
transformer (one pre-LN encoder block, E=256, 4 heads, FF 1024, on
sequences of 128, batch 32, then a linear classifier), lstm (LSTM(128, 256)
over sequences of 50, batch 64, its final hidden state into a linear
classifier).
Precisions: fp32 (TF32 off on both sides), and bf16/fp16 mixed precision
(lamina.amp.autocast against torch.autocast; on the CPU lamina computes
16-bit arrays in float32, so this compares memory more than time).
On a GPU the step is timed with device events, and with --graph it is also
captured into a CUDA graph (CuPy stream capture for lamina, torch.cuda.graphs
for PyTorch) and replayed.

Reported per model and precision: step time, throughput (samples/s),
lamina/PyTorch ratio, peak activation memory (lamina: lamina.memory;
PyTorch: bytes autograd saves for backward; on a GPU also each framework's
allocator peak), FLOPs per step and the GFLOP/s each reaches, and lamina's
per-layer dispatch cost (a step of 40 tiny layers divided by 40: the
Python and launch overhead each layer adds, the floor that no kernel
speedup removes; times the model's layer count it is the dispatch floor).

    lamina bench                                   # from a source checkout
    python benchmarks/bench.py --models mlp,lenet --precisions fp32,bf16 --repeat 30

Writes benchmarks/results/<device>.json, a Markdown table (.md) and a bar
chart (.png).  The JSON and the table are rewritten after every model
("complete": false until the last), so a run cut short keeps what finished.

Threads (CPU): NumPy's OpenBLAS keeps its workers spinning for ~0.1 s after
each GEMM and PyTorch's OpenMP workers spin after each op; interleaved on
few cores each would steal the other's cores. So this script sets
OPENBLAS_THREAD_TIMEOUT=4 and OMP_WAIT_POLICY=PASSIVE before anything loads,
records both, and also times each framework in a block of its own steps.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before lamina: its OpenMP runtime keeps its own settings)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

import lamina as lm  # noqa: E402
from lamina import backend  # noqa: E402
from lamina.serialization import atomic_write  # noqa: E402

CONFIGS = {
    "mlp": dict(build=models.mlp, input=(784,), batch=128, classes=10),
    # compute-bound on a GPU (~0.28 TFLOP per step): where mixed precision's speedup shows
    "mlp_wide": dict(build=lambda m: models.mlp(m, (4096, 4096, 4096, 4096, 10)), input=(4096,), batch=1024, classes=10),
    "lenet": dict(build=models.lenet, input=(1, 28, 28), batch=64, classes=10),
    "resnet20": dict(build=lambda m: models.resnet(m, 3), input=(3, 32, 32), batch=128, classes=10),
    "resnet8": dict(build=lambda m: models.resnet(m, 1), input=(3, 32, 32), batch=64, classes=10),
    "transformer": dict(build=models.transformer, input=(128, 256), batch=32, classes=10),
    "lstm": dict(build=models.lstm, input=(50, 128), batch=64, classes=10),
}
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LAMINA_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


# --------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------


class ReferenceUnavailable(Exception):
    """PyTorch's side of a model cannot run on this machine (say, an op that
    its CPU autocast does not support): the model is skipped, not refused."""


def count_flops(model, input_shape, batch):
    """FLOPs of one training step: 2 per multiply-add, forward plus the two
    backward GEMMs (dx and dW) of every Conv2d and Linear: 3x the forward."""
    shapes = {}
    kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.MultiheadAttention, torch.nn.RNNBase)

    def record(mod, i, o):  # recurrent layers: their input's shape; the others: their output's
        shapes[mod] = i[0].shape if isinstance(mod, torch.nn.RNNBase) else (o[0] if isinstance(o, tuple) else o).shape

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(torch.zeros(batch, *input_shape, device=next(model.parameters()).device))
    for h in hooks:
        h.remove()
    macs = 0
    for mod, out in shapes.items():
        if isinstance(mod, torch.nn.RNNBase):  # every step: x_t W_ihᵀ and h_{t-1} W_hhᵀ, per layer and direction
            n, seq = (out[0], out[1]) if mod.batch_first else (out[1], out[0])
            macs += sum(n * seq * p.shape[0] * p.shape[1] for name, p in mod.named_parameters() if name.startswith("weight"))
            continue
        if isinstance(mod, torch.nn.MultiheadAttention):  # the q/k/v projection, q kᵀ and p v (out_proj is a Linear)
            n, seq, e = out
            macs += n * seq * 3 * e * e + 2 * n * seq * seq * e
            continue
        k = mod.weight[0].numel() if isinstance(mod, torch.nn.Conv2d) else mod.in_features
        macs += out.numel() * k
    return 3 * 2 * macs


def torch_saved_bytes(fn):
    """(fn(), bytes of the tensors autograd saves for backward, each storage once)."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


# --------------------------------------------------------------------------
# one model
# --------------------------------------------------------------------------


class Pair:
    """A model in both frameworks with its optimizer, data and step functions."""

    def __init__(self, name, cfg, device, precision, batch=None, seed=0):
        self.name, self.cfg, self.device, self.precision = name, cfg, device, precision
        self.batch = batch or cfg["batch"]
        torch.manual_seed(seed)
        self.tdev = torch.device("cuda" if device == "cuda" else "cpu")
        self.tmodel = cfg["build"](torch).to(self.tdev)
        self.lmodel = cfg["build"](lm)
        self.lmodel.load_state_dict(self.tmodel.state_dict())
        self.lmodel.to(device)
        if precision != "fp32":
            lm.amp.autocast(self.lmodel, LAMINA_DTYPES[precision])
        self.xp = np if device == "cpu" else backend.require_cuda()
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch, *cfg["input"])).astype(np.float32)
        y = rng.integers(0, cfg["classes"], self.batch).astype(np.int64)
        self.x, self.y = self.xp.asarray(x), self.xp.asarray(y)
        self.tx, self.ty = torch.from_numpy(x).to(self.tdev), torch.from_numpy(y).to(self.tdev)
        self.loss_fn = lm.SoftmaxCrossEntropy()
        self.lopt = lm.optim.SGD(self.lmodel.parameters(), lr=0.01, momentum=0.9)
        self.topt = torch.optim.SGD(self.tmodel.parameters(), lr=0.01, momentum=0.9)
        self.scaler = lm.amp.LossScaler(enabled=precision == "fp16")
        self.tscaler = torch.amp.GradScaler(self.tdev.type, enabled=precision == "fp16")

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.tdev.type, dtype=TORCH_DTYPES[self.precision])

    def lamina_step(self):
        # compute(): the loss stays on the device, as PyTorch's does (a float would wait for the GPU each step)
        self.loss_fn.compute(self.lmodel(self.x), self.y)
        self.lopt.zero_grad()
        self.lmodel.backward_parameters(self.scaler.scale(self.loss_fn.backward()))  # as PyTorch: no input grad
        self.scaler.step(self.lopt)
        self.scaler.update()

    def torch_step(self):
        with self._autocast():
            loss = torch.nn.functional.cross_entropy(self.tmodel(self.tx), self.ty)
        self.topt.zero_grad()
        self.tscaler.scale(loss).backward()
        self.tscaler.step(self.topt)
        self.tscaler.update()

    def check_first_step(self):
        """Loss and every gradient of one step, before any update, against a
        float64 run of the PyTorch model (same weights and data), next to
        PyTorch's own error against that run.

        Gradients are compared norm-wise, with an element-wise bound beside.
        The norm-wise error must be within ``rtol`` of float64 or at most
        twice PyTorch's own; the largest element's error (a maximum, so a
        noisier figure) within max(10 ``rtol``, 0.2) or three times PyTorch's own.
        Some gradients are ill-conditioned in any 32- or 16-bit
        arithmetic (a BatchNorm bias gradient is a sum of terms that nearly
        cancel; a ReLU unit within rounding of zero switches on in one
        implementation and off in another, and with random labels one such
        unit moves an element by ~1/sqrt(B) of the largest).  On ResNet-20
        PyTorch's own float32 gradients are up to 3.5e-3 off float64
        norm-wise, and its bfloat16 autocast ones up to 0.65.  A wrong kernel
        is off by O(1) on every gradient it touches, including the
        well-conditioned ones."""
        rtol = 2e-3 if self.precision == "fp32" else 6e-2
        loss = self.loss_fn(self.lmodel(self.x), self.y)
        self.lmodel.zero_grad(set_to_none=True)
        self.lmodel.backward_parameters(self.loss_fn.backward())
        self.tmodel.zero_grad(set_to_none=True)
        exact = copy.deepcopy(self.tmodel).double()
        loss64 = torch.nn.functional.cross_entropy(exact(self.tx.double()), self.ty)
        loss64.backward()
        try:
            with self._autocast():
                tloss = torch.nn.functional.cross_entropy(self.tmodel(self.tx), self.ty)
            tloss.float().backward()
        except RuntimeError as e:  # PyTorch cannot run this step here: nothing to compare with or time against
            raise ReferenceUnavailable(f"PyTorch's own step fails: {str(e).splitlines()[0]}") from e
        problems = []
        exact_loss = loss64.item()
        if abs(loss - exact_loss) > max(rtol * abs(exact_loss) + rtol / 10, 2 * abs(tloss.item() - exact_loss)):
            problems.append(f"loss {loss:.6g} vs {exact_loss:.6g} in float64 (PyTorch {tloss.item():.6g})")
        g64 = {k: p.grad.cpu().numpy() for k, p in exact.named_parameters()}
        tgrads = {k: p.grad.float().cpu().numpy().astype(np.float64) for k, p in self.tmodel.named_parameters()}
        for key, p in self.lmodel.named_parameters():
            g, ref = backend.to_device(p.grad, "cpu").astype(np.float64), g64[key]
            norm, scale = max(float(np.linalg.norm(ref)), 1e-30), max(float(np.abs(ref).max()), 1e-30)
            err, terr = float(np.linalg.norm(g - ref)) / norm, float(np.linalg.norm(tgrads[key] - ref)) / norm
            worst, tworst = float(np.abs(g - ref).max()) / scale, float(np.abs(tgrads[key] - ref).max()) / scale
            if err > max(rtol, 2 * terr) or worst > max(10 * rtol, 0.2, 3 * tworst):
                problems.append(f"gradient of {key}: norm-wise error {err:.2e} against float64 (PyTorch's own "
                                f"{terr:.2e}), max error {worst:.2e} of its largest element (PyTorch's own {tworst:.2e})")
        self.lmodel.zero_grad(set_to_none=True)
        self.tmodel.zero_grad(set_to_none=True)
        if problems:
            raise SystemExit(
                f"{self.name} [{self.precision}]: lamina does not match PyTorch on the first step, refusing to time it:\n  "
                + "\n  ".join(problems)
            )
        return loss

    def memory(self):
        """(lamina peak activation bytes, PyTorch saved-for-backward bytes) of one step."""
        with lm.memory.track() as m:
            self.lamina_step()
        _, saved = torch_saved_bytes(lambda: self.torch_step())
        return m.peak_bytes, saved, m.peak_device_bytes - m.device_bytes_at_start


def _sync(device):
    if device == "cuda":
        backend.require_cuda().cuda.get_current_stream().synchronize()
        torch.cuda.synchronize()


def time_interleaved(steps, device, repeat, warmup):
    """Median seconds of each step function, interleaved, order alternating."""
    for _ in range(warmup):
        for f in steps.values():
            f()
    _sync(device)
    times = {k: [] for k in steps}
    keys = list(steps)
    for r in range(repeat):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            if device == "cuda":
                cp = backend.require_cuda()
                if k.startswith("torch"):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    steps[k]()
                    end.record()
                    torch.cuda.synchronize()
                    times[k].append(start.elapsed_time(end) / 1e3)
                else:
                    start, end = cp.cuda.Event(), cp.cuda.Event()
                    start.record()
                    steps[k]()
                    end.record()
                    end.synchronize()
                    times[k].append(cp.cuda.get_elapsed_time(start, end) / 1e3)
            else:
                t = time.perf_counter()
                steps[k]()
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def graph_steps(pair):
    """Step functions that replay a CUDA graph of the whole step in each framework."""
    cp = backend.require_cuda()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        for _ in range(3):
            pair.lamina_step()
        stream.synchronize()
        stream.begin_capture()
        try:
            pair.lamina_step()
        except BaseException:
            try:
                stream.end_capture()  # leave the stream usable for the next model
            except Exception:  # noqa: BLE001 - the capture may already be invalid
                pass
            raise
        lgraph = stream.end_capture()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            pair.torch_step()
    torch.cuda.current_stream().wait_stream(s)
    tgraph = torch.cuda.CUDAGraph()
    pair.topt.zero_grad(set_to_none=False)
    with torch.cuda.graph(tgraph):
        pair.torch_step()
    # replayed on the current stream, where time_interleaved records its events
    # (launched on the capture stream, the events would time the launch alone)
    return {"lamina_graph": lambda: lgraph.launch(cp.cuda.get_current_stream()), "torch_graph": tgraph.replay}


_dispatch = {}


def dispatch_cost(device):
    """Seconds of Python and launch overhead per layer in a training step,
    ``{"lamina": s, "torch": s}``: the same step of 40 layers (Linear(4, 4)
    and ReLU, batch 1, SGD) in each framework, whose arithmetic is
    negligible, timed interleaved and divided by 40."""
    if device not in _dispatch:
        lm.manual_seed(0)
        layers, tlayers = [], []
        for _ in range(20):
            layers += [lm.Dense(4, 4), lm.ReLU()]
            tlayers += [torch.nn.Linear(4, 4), torch.nn.ReLU()]
        model = lm.Sequential(*layers).to(device)
        tmodel = torch.nn.Sequential(*tlayers).to(device)
        xp = np if device == "cpu" else backend.require_cuda()
        x, dy = xp.ones((1, 4), dtype=np.float32), xp.ones((1, 4), dtype=np.float32)
        tx, tdy = torch.ones(1, 4, device=device), torch.ones(1, 4, device=device)
        opt = lm.optim.SGD(model.parameters(), lr=0.0)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.0)

        def step():
            model(x)
            opt.zero_grad()
            model.backward(dy)
            opt.step()

        def tstep():
            y = tmodel(tx)
            topt.zero_grad()
            y.backward(tdy)
            topt.step()

        med = time_interleaved({"lamina": step, "torch": tstep}, device, 50, 5)
        _dispatch[device] = {k: v / 40 for k, v in med.items()}
    return _dispatch[device]


def layer_profile(pair, steps, top=8):
    """lamina.profiler over ``steps`` of lamina's step: the ``top`` layers by
    self time, per step (forward, backward and recompute inclusive of
    children; self time their own), and the layers' total per step."""
    with lm.profiler.profile(pair.lmodel) as prof:
        for _ in range(steps):
            pair.lamina_step()
    keep = ("layer", "type", "forward_ms", "backward_ms", "recompute_ms", "self_ms", "share", "cache_bytes")
    rows = sorted(prof.records(), key=lambda r: r["self_ms"], reverse=True)[:top]
    per_step = [{k: (r[k] / steps if k.endswith("_ms") else r[k]) for k in keep} for r in rows]
    return {"steps": steps, "layers_ms_per_step": prof.total_ms / steps, "top": per_step}


def bench(name, device, precision, repeat, warmup, graph, profile=0):
    cfg = CONFIGS[name]
    pair = Pair(name, cfg, device, precision)
    first_loss = pair.check_first_step()
    steps = {"lamina": pair.lamina_step, "torch": pair.torch_step}
    med = time_interleaved(steps, device, repeat, warmup)
    blocked = {k: time_interleaved({k: f}, device, max(5, repeat // 2), 1)[k] for k, f in steps.items()}
    lpeak, tsaved, ldev = pair.memory()
    flops = count_flops(pair.tmodel, cfg["input"], pair.batch)
    n_layers = sum(1 for m in pair.lmodel.modules() if not m._children)
    dispatch = dispatch_cost(device)
    row = {
        "model": name, "precision": precision, "batch": pair.batch, "first_step_loss": float(first_loss),
        "lamina_ms": 1e3 * med["lamina"], "torch_ms": 1e3 * med["torch"], "ratio": med["lamina"] / med["torch"],
        "blocked_lamina_ms": 1e3 * blocked["lamina"], "blocked_torch_ms": 1e3 * blocked["torch"],
        "blocked_ratio": blocked["lamina"] / blocked["torch"],
        "lamina_samples_per_s": pair.batch / med["lamina"], "torch_samples_per_s": pair.batch / med["torch"],
        "gflop_per_step": flops / 1e9, "lamina_gflops": flops / med["lamina"] / 1e9, "torch_gflops": flops / med["torch"] / 1e9,
        "lamina_peak_activation_bytes": lpeak, "torch_saved_for_backward_bytes": tsaved,
        "lamina_layers": n_layers, "lamina_dispatch_us_per_layer": 1e6 * dispatch["lamina"],
        "torch_dispatch_us_per_layer": 1e6 * dispatch["torch"],
        "lamina_dispatch_floor_ms": 1e3 * dispatch["lamina"] * n_layers,
    }
    if profile:
        row["layer_profile"] = layer_profile(pair, profile)
    if device == "cuda":
        row["lamina_pool_peak_bytes"] = ldev
        row["torch_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
        if graph and precision == "fp16":
            row["graph_skipped"] = ("fp16: the loss scaler reads its overflow flag on the host every step "
                                    "(PyTorch's GradScaler too), which a captured graph cannot")
        elif graph:
            try:
                g = time_interleaved(graph_steps(pair), device, repeat, warmup)
            except Exception as e:  # noqa: BLE001 - recorded in the row, the other models still run
                row["graph_error"] = f"{type(e).__name__}: {e}"
                print(f"  {name} [{precision}]: CUDA-graph capture failed: {row['graph_error']}", file=sys.stderr)
            else:
                row.update({"lamina_graph_ms": 1e3 * g["lamina_graph"], "torch_graph_ms": 1e3 * g["torch_graph"],
                            "graph_ratio_vs_torch_eager": g["lamina_graph"] / med["torch"]})
    return row


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------


def _dispatch_pair(row):
    torch_us = row.get("torch_dispatch_us_per_layer")  # absent in results from before it was measured
    lamina_us = row["lamina_dispatch_us_per_layer"]
    return f"{lamina_us:.0f}" if torch_us is None else f"{lamina_us:.0f} / {torch_us:.0f}"


def markdown(result):
    lines = [
        f"Device: {result['device']} ({result['cpu_count']} CPU threads); lamina {result['lamina']}, PyTorch {result['torch']}, "
        f"NumPy {result['numpy']}, Python {result['python']}.",
        f"Settings: {json.dumps(result['settings'])}.",
        f"Command: `{result['command']}`",
        "",
        "| model | precision | batch | lamina ms | PyTorch ms | ratio | blocked ratio | lamina GFLOP/s | PyTorch GFLOP/s "
        "| lamina act. MiB | PyTorch saved MiB | dispatch floor ms | dispatch µs/layer, lamina / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {_label(r)} | {r['precision']} | {r['batch']} | {r['lamina_ms']:.1f} | {r['torch_ms']:.1f} | **{r['ratio']:.2f}** "
            f"| {r['blocked_ratio']:.2f} | {r['lamina_gflops']:.0f} | {r['torch_gflops']:.0f} "
            f"| {r['lamina_peak_activation_bytes'] / 2**20:.1f} | {r['torch_saved_for_backward_bytes'] / 2**20:.1f} "
            f"| {r['lamina_dispatch_floor_ms']:.2f} | {_dispatch_pair(r)} |"
        )
    graphed = [r for r in result["results"] if "lamina_graph_ms" in r]
    if graphed:
        lines += ["", "Whole step captured in a CUDA graph (ratio: lamina graph / PyTorch eager, and graph / graph):", "",
                  "| model | precision | lamina graph ms | PyTorch graph ms | vs PyTorch eager | vs PyTorch graph |",
                  "|---|---|---|---|---|---|"]
        for r in graphed:
            lines.append(f"| {_label(r)} | {r['precision']} | {r['lamina_graph_ms']:.2f} | {r['torch_graph_ms']:.2f} "
                         f"| **{r['graph_ratio_vs_torch_eager']:.2f}** | {r['lamina_graph_ms'] / r['torch_graph_ms']:.2f} |")
    not_graphed = [r for r in result["results"] if "graph_skipped" in r or "graph_error" in r]
    if not_graphed:
        lines += ["", "Not captured in a CUDA graph:", ""]
        lines += [f"* {_label(r)} [{r['precision']}]: {r.get('graph_skipped') or r.get('graph_error')}" for r in not_graphed]
    if result.get("refused"):
        lines += ["", "Not timed: the first step does not match PyTorch:", ""]
        lines += [f"* {r['model']} [{r['precision']}]" + (f" ({r['kernels']} kernels)" if r.get("kernels") else "")
                  + ": " + r["reason"].replace("\n", " ") for r in result["refused"]]
    if result.get("skipped"):
        lines += ["", "Not run: PyTorch's side fails on this machine:", ""]
        lines += [f"* {r['model']} [{r['precision']}]: {r['reason']}" for r in result["skipped"]]
    profiled = [r for r in result["results"] if "layer_profile" in r]
    if profiled:
        lines += ["", "Where lamina's step goes (`lamina.profiler`, ms per step; the layers by self time, with "
                  "forward / backward inclusive of their children):", ""]
        for r in profiled:
            prof = r["layer_profile"]
            tops = "; ".join(f"{t['layer']} {t['type']} {t['self_ms']:.2f} ({t['forward_ms']:.2f} / {t['backward_ms']:.2f})"
                             for t in prof["top"][:5])
            lines.append(f"* {_label(r)} [{r['precision']}]: layers {prof['layers_ms_per_step']:.2f} of "
                         f"{r['lamina_ms']:.2f} ms; {tops}")
    if result.get("amp_speedups"):
        lines += ["", "Mixed precision: step-time speedup over each framework's own fp32 step:", "",
                  "| model | precision | lamina speedup | PyTorch autocast speedup |", "|---|---|---|---|"]
        for a in result["amp_speedups"]:
            lines.append(f"| {a['model']} | {a['precision']} | {a['lamina_speedup']:.2f} | {a['torch_speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def _label(r):
    """The model's name, with the kernels when they were not ``use_kernels``' default."""
    return r["model"] + {"lamina": " (lamina kernels)", "cupy": " (cuBLAS kernels)"}.get(r.get("kernels"), "")


def amp_speedups(rows):
    """fp32 step time / 16-bit step time, per model and kernel choice, for lamina and PyTorch."""
    out = []
    fp32 = {(r["model"], r.get("kernels")): r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        base = fp32.get((r["model"], r.get("kernels")))
        if r["precision"] != "fp32" and base is not None:
            out.append({"model": _label(r), "precision": r["precision"],
                        "lamina_speedup": base["lamina_ms"] / r["lamina_ms"],
                        "torch_speedup": base["torch_ms"] / r["torch_ms"]})
    return out


def bar_chart(result, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # noqa: PLC0415

    rows = result["results"]
    labels = [f"{r['model']}\n{r['precision']}" for r in rows]
    fig = Figure(figsize=(max(5, 1.6 * len(rows)), 3.8), layout="constrained")
    ax = fig.subplots()
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["lamina_ms"] for r in rows], 0.4, label="lamina")
    ax.bar(xs + 0.2, [r["torch_ms"] for r in rows], 0.4, label="PyTorch")
    for x, r in zip(xs, rows):
        ax.annotate(f"{r['ratio']:.2f}x", (x, max(r["lamina_ms"], r["torch_ms"])), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, labels)
    ax.set_ylabel("training step, ms (median)")
    ax.set_title(f"lamina vs PyTorch on {result['device']}")
    ax.legend()
    fig.savefig(path, dpi=110)


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                return m.group(1).strip()
    return platform.processor() or platform.machine()


def main(argv=None):
    p = argparse.ArgumentParser(prog="lamina bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,lenet,resnet20")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16, fp16, comma separated")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--graph", action="store_true", help="also time CUDA-graph replays of the step (GPU)")
    p.add_argument("--profile", type=int, default=0,
                   help="after timing, profile this many of lamina's steps layer by layer (lamina.profiler)")
    p.add_argument("--kernels", default="auto",
                   help="GPU: lamina.backend.use_kernels' choice, comma separated: 'auto' (the default: lamina's own "
                        "CUDA kernels where they are faster), 'lamina' (lamina's kernels wherever they run), 'cupy' "
                        "(cuBLAS through CuPy, convolution as im2col + cuBLAS)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--name", default=None, help="file name stem of the results (default: from the device)")
    args = p.parse_args(argv)
    device = ("cuda" if lm.cuda_available() and torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.set_num_threads(args.threads)
    from lamina.ops import _ext  # noqa: PLC0415

    if _ext.cpu_module() is not None:
        _ext.cpu_module().set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    rows, refused, skipped = [], [], []
    dev = device_name(device)
    stem = args.name or ("cpu" if device == "cpu" else re.sub(r"[^A-Za-z0-9]+", "_", dev).strip("_").lower())
    header = {
        "benchmark": "lamina bench", "device": dev, "device_kind": device, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__, "lamina": lm.__version__,
        "settings": {"threads": args.threads, "repeat": args.repeat, "warmup": args.warmup, "tf32": False,
                     **{k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")}},
        "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }

    def save(complete):
        """Write the JSON and Markdown of what has run so far (after every model, so
        that a run cut short keeps its finished rows), and at the end the chart."""
        result = {**header, "complete": complete, "results": rows, "refused": refused, "skipped": skipped,
                  "amp_speedups": amp_speedups(rows)}
        base = os.path.join(args.out, stem)
        atomic_write(base + ".json", json.dumps(result, indent=2).encode())
        atomic_write(base + ".md", markdown(result).encode())
        if complete:
            bar_chart(result, base + ".png")
            print(f"wrote {base}.json, .md and .png")

    kernel_choices = args.kernels.split(",") if device == "cuda" else ["auto"]
    for name, kernels, precision in itertools.product(args.models.split(","), kernel_choices, args.precisions.split(",")):
        if device == "cuda" and precision == "bf16" and not lm.backend.cupy_bfloat16()[0]:
            print(f"{name} [bf16]: skipped: {lm.backend.cupy_bfloat16()[1]}")
            continue
        previous = lm.backend.use_kernels(kernels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", lm.PerformanceWarning)  # CPU 16-bit runs in float32: in the docstring
                row = bench(name, device, precision, args.repeat, args.warmup, args.graph, args.profile)
        except ReferenceUnavailable as e:
            print(f"{name} [{precision}]: skipped: {e}", flush=True)
            skipped.append({"model": name, "precision": precision, "kernels": kernels if device == "cuda" else None,
                            "reason": str(e)})
            save(complete=False)
            continue
        except SystemExit as e:  # the first step does not match PyTorch: report it, time the others
            print(e, flush=True)
            refused.append({"model": name, "precision": precision, "kernels": kernels if device == "cuda" else None,
                            "reason": str(e)})
            save(complete=False)
            continue
        finally:
            lm.backend.use_kernels(previous)
        if device == "cuda":
            row["kernels"] = kernels
        rows.append(row)
        print(f"{_label(row):>9} [{precision}] batch {row['batch']:>3}: lamina {row['lamina_ms']:8.1f} ms  PyTorch {row['torch_ms']:8.1f} ms"
              f"  ratio {row['ratio']:.2f} (blocked {row['blocked_ratio']:.2f})  {row['lamina_gflops']:.0f} vs "
              f"{row['torch_gflops']:.0f} GFLOP/s  activations {row['lamina_peak_activation_bytes'] / 2**20:.1f} vs "
              f"{row['torch_saved_for_backward_bytes'] / 2**20:.1f} MiB  dispatch floor {row['lamina_dispatch_floor_ms']:.2f} ms "
              f"({row['lamina_dispatch_us_per_layer']:.0f} µs x {row['lamina_layers']} layers; "
              f"PyTorch {row['torch_dispatch_us_per_layer']:.0f} µs per layer)",
              flush=True)
        save(complete=False)
    save(complete=True)
    if refused:
        print(f"{len(refused)} run(s) refused: their first step does not match PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
