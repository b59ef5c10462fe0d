"""lamina's CUDA kernels against cuBLAS and cuDNN (through PyTorch), on a GPU.

* GEMM, fp32 on CUDA cores with TF32 off on both sides: 4096³, 8192³, an odd
  size, and Dense's training shapes with the transposes they use.
* GEMM, bf16 and fp16 on tensor cores (fp32 accumulation): 8192³ and the
  training shapes, once per kernel: mma.sync (v1) and, on compute capability
  9.0, wgmma fed by TMA (v2).
* Convolution forward, backward-data and backward-weight, fp32 (TF32 off)
  and bf16, NCHW on both sides, on ResNet shapes: with the launch plan
  lamina's rules choose and, where it differs, the one its autotuner picks
  (lamina.backend.autotune; cuDNN's autotuner is on as well).

lamina's kernels are called through ``lamina._C_cuda`` on PyTorch's tensors
(their device pointers, PyTorch's current stream), so both sides see the same
memory and stream.  Every kernel is first checked against the reference and
not timed if it differs.  Timing: CUDA events, warm-up, then rounds that
alternate lamina and the reference; medians; ratio = reference time / lamina
time (lamina's share of the reference's throughput: 1.0 is parity).

    python benchmarks/kernels.py [--repeat 15] [--quick] [--sweep]

A kernel whose result differs from the reference, or whose launch fails,
is reported as a 'mismatch' row and not timed; the others still run, and
the exit status is 1.  --sweep also times split-K counts around lamina's choices.

Writes benchmarks/results/kernels_<device>.json, after every row ("complete":
false until the end), so a run cut short keeps the rows it finished.
"""

import argparse
import json
import os
import re
import statistics
import sys

from lamina import ops
from lamina.ops import _ext
from lamina.serialization import atomic_write

GEMM = [  # (name, M, N, K, trans_a, trans_b, dtypes)
    ("square 4096", 4096, 4096, 4096, False, False, ("float32",)),
    ("square 8192", 8192, 8192, 8192, False, False, ("float32", "bfloat16", "float16")),
    ("odd 4000x4100x4200", 4000, 4100, 4200, False, False, ("float32", "bfloat16")),
    ("dense fwd 128x512x784 (x Wt)", 128, 512, 784, False, True, ("float32", "bfloat16")),
    ("dense dx 128x784x512 (dy W)", 128, 784, 512, False, False, ("float32", "bfloat16")),
    ("dense dW 512x784x128 (dyt x)", 512, 784, 128, True, False, ("float32", "bfloat16")),
    ("mlp fwd 4096x4096x1024 (x Wt)", 4096, 4096, 1024, False, True, ("float32", "bfloat16")),
]

CONV = [  # (name, (N, C, H, W), O, kernel, stride, padding)
    ("resnet20 stage1 3x3", (128, 16, 32, 32), 16, 3, 1, 1),
    ("resnet20 stage2 3x3", (128, 32, 16, 16), 32, 3, 1, 1),
    ("resnet20 stage3 3x3", (128, 64, 8, 8), 64, 3, 1, 1),
    ("resnet20 down 3x3 s2", (128, 16, 32, 32), 32, 3, 2, 1),
    ("resnet50 conv2 3x3", (32, 64, 56, 56), 64, 3, 1, 1),
    ("resnet50 conv4 3x3", (32, 256, 14, 14), 256, 3, 1, 1),
    ("resnet50 1x1 expand", (32, 64, 56, 56), 256, 1, 1, 0),
]


class SavedRows(list):
    """Result rows that call save() after every append."""

    def __init__(self, save):
        super().__init__()
        self._save = save

    def append(self, row):
        super().append(row)
        self._save()


def timed_pair(torch, lamina_fn, ref_fn, repeat):
    """Median milliseconds of (lamina_fn, ref_fn), interleaved round by round."""
    for _ in range(3):
        lamina_fn()
        ref_fn()
    times = ([], [])
    for _ in range(repeat):
        for i, fn in enumerate((lamina_fn, ref_fn)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[i].append(start.elapsed_time(end))
    return statistics.median(times[0]), statistics.median(times[1])


# Run first in probe_conv_wgmma's child process (a stand-in device can be set up there).
CHILD_SETUP = ""

# Launches each 16-bit convolution pass on wgmma once, with the narrow kernels (argv[1] == "narrow") or the
# 128 x 128 ones, on two small layers: 16 channels (narrow everywhere, 64 pixels an image) and 136.
_WGMMA_PROBE = r"""
import sys, torch
from lamina import ops
from lamina.ops import _ext
mod = _ext.cuda_module()
mod.conv_wgmma_narrow(sys.argv[1] == "narrow")
stream = torch.cuda.current_stream().cuda_stream
for xshape, o in (((2, 16, 8, 8), 16), ((2, 136, 6, 6), 136)):
    g = tuple(ops.geometry(xshape, (3, 3), (1, 1), (1, 1, 1, 1)))
    x = torch.randn(xshape, device="cuda").bfloat16()
    w = torch.randn((o, xshape[1], 3, 3), device="cuda").bfloat16()
    y = torch.empty((xshape[0], o) + xshape[2:], device="cuda").bfloat16()
    dy, dx, dw = torch.randn_like(y), torch.empty_like(x), torch.empty_like(w)
    assert all(mod.conv2d_on_wgmma(p, g, o, 1, "bfloat16") for p in ("forward", "backward_data", "backward_weight"))
    for splits in (1, 2):
        ws = [torch.empty(max(1, mod.conv2d_workspace_size(p, g, o, 1, "bfloat16", splits)), device="cuda",
                          dtype=torch.uint8) for p in ("forward", "backward_data", "backward_weight")]
        mod.conv2d_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), 0, g, o, 1, "bfloat16", stream, splits,
                           workspace=ws[0].data_ptr(), workspace_bytes=ws[0].numel())
        mod.conv2d_backward_data(dx.data_ptr(), dy.data_ptr(), w.data_ptr(), g, o, 1, "bfloat16", stream,
                                 workspace=ws[1].data_ptr(), workspace_bytes=ws[1].numel())
        mod.conv2d_backward_weight(dw.data_ptr(), ws[2].data_ptr(), ws[2].numel(), dy.data_ptr(), x.data_ptr(), g,
                                   o, 1, splits, "bfloat16", stream)
        torch.cuda.synchronize()
print("ok")
"""


def probe_conv_wgmma(torch, mod, result):
    """On compute capability 9.0, launch the wgmma convolutions once in a child process first: a kernel that
    hangs or faults there (a fault is sticky: it would end every later row of this process) switches off the
    narrow kernels (conv_wgmma_narrow) or wgmma (conv_wgmma) for this run, said in the output and the results'
    "conv_wgmma_probe", so the other rows are still timed."""
    import subprocess

    if torch.cuda.get_device_capability(0) != (9, 0) or not mod.conv_wgmma():
        return
    probe = {}
    for kind in ("narrow", "128"):
        try:
            r = subprocess.run([sys.executable, "-c", CHILD_SETUP + _WGMMA_PROBE, kind], capture_output=True, text=True,
                               timeout=120, check=False)
            probe[kind] = "ok" if r.returncode == 0 else "failed: " + (r.stdout + r.stderr)[-600:]
        except subprocess.TimeoutExpired:
            probe[kind] = "failed: no result in 120 s (a kernel hangs?)"
    result["conv_wgmma_probe"] = probe
    if probe["128"] != "ok":
        mod.conv_wgmma(False)
        print(f"conv wgmma probe: the 128 x 128 kernels {probe['128']}\n  -> this run's 16-bit convolutions on "
              "mma.sync (conv_wgmma(False))", flush=True)
    elif probe["narrow"] != "ok":
        mod.conv_wgmma_narrow(False)
        print(f"conv wgmma probe: the narrow kernels {probe['narrow']}\n  -> this run's wgmma convolutions on the "
              "128 x 128 kernels (conv_wgmma_narrow(False))", flush=True)


def rel_error(torch, got, ref):
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def mismatch(kernel, shape, what, ref_name, err):
    """A row for a kernel whose result differs from the reference: reported, not timed."""
    print(f"{kernel} {shape} {what}: lamina differs from {ref_name} by {err:.2e} (relative): NOT TIMED", flush=True)
    return {"kernel": kernel, "shape": shape, "what": what, "mismatch": True, "max_rel_error": err}


def bench_gemm(torch, mod, args, rows):
    stream = torch.cuda.current_stream().cuda_stream
    hopper = torch.cuda.get_device_capability() == (9, 0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for name, m, n, k, ta, tb, dtypes in GEMM:
        for dtype in dtypes:
            if args.quick and m * n * k > 2**34:
                continue
            tdt = getattr(torch, dtype)
            g = torch.Generator(device="cuda").manual_seed(0)
            a = torch.randn((k, m) if ta else (m, k), device="cuda", generator=g).to(tdt)
            b = torch.randn((n, k) if tb else (k, n), device="cuda", generator=g).to(tdt)
            oa, ob = (a.t() if ta else a), (b.t() if tb else b)
            c = torch.empty((m, n), device="cuda", dtype=tdt)
            ref = torch.empty_like(c)

            # fp32: split-K where lamina.ops.gemm_cuda would use it (few output tiles)
            splits = ops.gemm_splits(m, n, k, sms) if dtype == "float32" else 1
            ws = torch.empty(splits * m * n if splits > 1 else 1, device="cuda", dtype=torch.float32)

            def lamina_fn():
                mod.gemm(c.data_ptr(), 0, a.data_ptr(), b.data_ptr(), 0, m, n, k, a.shape[1], b.shape[1], n, ta, tb,
                         "none", dtype, dtype, stream, splits, workspace=ws.data_ptr(), workspace_bytes=ws.nbytes)

            def ref_fn():
                torch.matmul(oa, ob, out=ref)

            # 16-bit: each tensor-core kernel in turn (v1 mma.sync; v2 wgmma where the device runs sm_90a and
            # TMA can read both operands: rows of a multiple of 16 bytes, as in lamina's own choice, 'auto')
            tma_ok = a.shape[1] % 8 == 0 and b.shape[1] % 8 == 0
            variants = ["auto"] if dtype == "float32" else ["mma"] + (["wgmma"] if hopper and tma_ok else [])
            if dtype != "float32" and hopper and not tma_ok:
                why = "a row of an operand is not a multiple of 16 bytes, which TMA needs; lamina runs mma.sync there"
                print(f"gemm {name:>30} {dtype:>8} wgmma: not run ({why})", flush=True)
                rows.append({"kernel": "gemm", "shape": name, "m": m, "n": n, "k": k, "dtype": dtype, "variant": "wgmma",
                             "not_run": why})
            for variant in variants:
                previous = mod.tensor_core_gemm(variant)
                try:
                    c.fill_(float("nan"))
                    try:
                        lamina_fn()
                    except RuntimeError as e:  # reported, not timed; the other kernels still run
                        print(f"gemm {name} {dtype} ({variant}): {e}: NOT TIMED", flush=True)
                        rows.append({"kernel": "gemm", "shape": name, "what": f"{dtype} ({variant})", "mismatch": True,
                                     "error": str(e)})
                        continue
                    ref_fn()
                    err = rel_error(torch, c, ref)
                    limit = 1e-4 if dtype == "float32" else 2e-2
                    if not err < limit:
                        rows.append(mismatch("gemm", name, f"{dtype} ({variant})", "cuBLAS", err))
                        continue
                    t_l, t_r = timed_pair(torch, lamina_fn, ref_fn, args.repeat)
                finally:
                    mod.tensor_core_gemm(previous)
                flops = 2.0 * m * n * k
                row = {"kernel": "gemm", "shape": name, "m": m, "n": n, "k": k, "trans_a": ta, "trans_b": tb,
                       "dtype": dtype, "variant": "simt" if dtype == "float32" else variant, "splits": splits,
                       "lamina_ms": t_l,
                       "cublas_ms": t_r, "lamina_tflops": flops / t_l / 1e9, "cublas_tflops": flops / t_r / 1e9,
                       "ratio_of_cublas": t_r / t_l, "max_rel_error": err}
                rows.append(row)
                print(f"gemm {name:>30} {dtype:>8} {row['variant']:>5}: lamina {t_l:8.3f} ms "
                      f"({row['lamina_tflops']:6.1f} TFLOP/s)  cuBLAS {t_r:8.3f} ms ({row['cublas_tflops']:6.1f})  "
                      f"ratio {row['ratio_of_cublas']:.2f}", flush=True)


def tuned_plan(torch, pass_name, problem, rule, candidates, launcher):
    """The plan lamina's autotuner (lamina.ops.tuning, as with
    lamina.backend.autotune(True)) picks, timing on PyTorch's current stream."""
    import cupy

    from lamina import backend
    from lamina.ops import tuning

    previous = backend.autotune(True)
    try:
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            return tuning.choose(pass_name, problem, rule, candidates, launcher)
    finally:
        backend.autotune(previous)


def bench_conv(torch, mod, args, rows):
    """Each ResNet shape's three passes against cuDNN: float32 (lamina on CUDA
    cores, TF32 off on both sides: variant "simt"), then bfloat16 (lamina on
    tensor cores: "mma"; the channels-last passes on wgmma where the device
    has compute capability 9.0: "wgmma", timed again on mma.sync: "mma.sync",
    and those on wgmma's narrow kernels again on its 128 x 128 ones:
    "wgmma 128"),
    each with the channels-last kernels where lamina's rule takes them and
    again, for comparison, with the kernels that gather from NCHW everywhere
    ("simt gathered", "mma gathered").  Each pass with the plan lamina's
    rules choose (tile height, blocks per SM, split count), and, when it
    differs, with the one its autotuner picks (cuDNN's own autotuner is on:
    torch.backends.cudnn.benchmark); the gathered kernels with the rule's
    plan only."""
    from lamina.ops import tuning

    stream = torch.cuda.current_stream().cuda_stream
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    F = torch.nn.functional
    wgmma = torch.cuda.get_device_capability(0) == (9, 0) and mod.conv_wgmma()
    configs = [("float32", True, True, True), ("float32", False, True, True), ("bfloat16", True, True, True)]
    if wgmma:  # the passes on wgmma again on mma.sync, and the narrow ones on the 128 x 128 kernels
        configs += [("bfloat16", True, False, True), ("bfloat16", True, True, False)]
    configs.append(("bfloat16", False, True, True))
    for dtype, channels_last, on_wgmma, narrow in configs:
        if dtype != "float32" and not channels_last and not mod.conv_tensor_cores():
            continue
        tdt = getattr(torch, dtype)
        tol = 1e-4 if dtype == "float32" else 2e-2
        tensor = dtype != "float32" and mod.conv_tensor_cores()
        previous = mod.conv_channels_last(channels_last), mod.conv_wgmma(on_wgmma), mod.conv_wgmma_narrow(narrow)
        try:
            _bench_conv_shapes(torch, mod, args, rows, dtype, tdt, tol, tensor, channels_last, stream, sm_count, F,
                               tuning, wgmma and on_wgmma, narrow)
        finally:
            mod.conv_channels_last(previous[0])
            mod.conv_wgmma(previous[1])
            mod.conv_wgmma_narrow(previous[2])


def _bench_conv_shapes(torch, mod, args, rows, dtype, tdt, tol, tensor, channels_last, stream, sm_count, F, tuning,
                       wgmma, narrow):
    """wgmma: the channels-last 16-bit passes run on wgmma ("wgmma" rows); with channels_last but not wgmma on
    a device that has it, only the passes that wgmma would take are timed, on mma.sync ("mma.sync" rows);
    with wgmma but not narrow, only those that take the narrow kernels, on the 128 x 128 ones ("wgmma 128")."""
    kind = ("simt" if dtype == "float32" else "mma") + ("" if channels_last else " gathered")
    cc90 = torch.cuda.get_device_capability(0) == (9, 0)
    comparison = tensor and channels_last and cc90 and (not wgmma or not narrow)
    for name, xshape, o, kk, s, p in CONV:
        if args.quick and xshape[0] * xshape[1] * xshape[2] * xshape[3] * o * kk * kk > 2**33:
            continue
        gen = torch.Generator(device="cuda").manual_seed(1)
        x = torch.randn(xshape, device="cuda", generator=gen).to(tdt)
        w = (torch.randn((o, xshape[1], kk, kk), device="cuda", generator=gen) / (xshape[1] * kk * kk) ** 0.5).to(tdt)
        geo = ops.geometry(xshape, (kk, kk), (s, s), (p, p, p, p))
        y_shape = (geo.n, o, geo.oh, geo.ow)
        dy = torch.randn(y_shape, device="cuda", generator=gen).to(tdt)
        y, dx, dw = torch.empty(y_shape, device="cuda", dtype=tdt), torch.empty_like(x), torch.empty_like(w)
        g = tuple(geo)
        pixels, k = geo.n * geo.oh * geo.ow, xshape[1] * kk * kk
        flops = 2.0 * pixels * o * k
        workspaces = {}

        def workspace(pass_name, splits):  # (address, bytes); one buffer per size (timing must not allocate)
            n = mod.conv2d_workspace_size(pass_name, g, o, 1, dtype, splits)
            if n not in workspaces:
                workspaces[n] = torch.empty(max(1, n), device="cuda", dtype=torch.uint8)
            return (workspaces[n].data_ptr() if n else 0), n

        def forward(plan):
            ws, n = workspace("forward", plan.splits)
            return lambda: mod.conv2d_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), 0, g, o, 1, dtype, stream,
                                              plan.splits, workspace=ws, workspace_bytes=n, rows=plan.rows,
                                              blocks=plan.blocks)

        def backward_data(plan):
            ws, n = workspace("backward_data", 1)
            return lambda: mod.conv2d_backward_data(dx.data_ptr(), dy.data_ptr(), w.data_ptr(), g, o, 1, dtype,
                                                    stream, plan.rows, plan.blocks, workspace=ws, workspace_bytes=n)

        def backward_weight(plan):
            ws, n = workspace("backward_weight", plan.splits)
            return lambda: mod.conv2d_backward_weight(dw.data_ptr(), ws, n, dy.data_ptr(), x.data_ptr(), g,
                                                      o, 1, plan.splits, dtype, stream, plan.rows)

        bw_rule = tuning.Plan(splits=ops.conv.backward_weight_splits(
            geo, o, 1, sm_count, mod.conv2d_wgmma_tile("backward_weight", g, o, 1, dtype)))
        passes = {  # pass: (launcher, rule's plan, candidates, reference, result)
            "forward": (
                forward, tuning.Plan(splits=mod.conv2d_forward_splits(g, o, 1, dtype)),
                lambda: tuning.forward_candidates(o, pixels, k, 1, sm_count, tensor),
                lambda: F.conv2d(x, w, stride=s, padding=p), lambda: y),
            "backward-data": (
                backward_data, tuning.Plan(), lambda: tuning.backward_data_candidates(xshape[1], tensor),
                lambda: torch.nn.grad.conv2d_input(xshape, w, dy, stride=s, padding=p), lambda: dx),
            "backward-weight": (
                backward_weight, bw_rule,
                lambda: tuning.backward_weight_candidates(o, pixels, 1, bw_rule.splits, tensor),
                lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s, padding=p), lambda: dw),
        }
        for pass_name, (launcher, rule, candidates, ref_fn, result) in passes.items():
            # the passes wgmma takes (with the switches on): "wgmma" rows, or their "mma.sync" and "wgmma 128"
            # comparisons
            tile = _wgmma_tile(mod, pass_name.replace("-", "_"), g, o, dtype) if tensor and channels_last else 0
            if comparison and (not tile or (wgmma and tile == 128)):
                continue
            pkind = ("wgmma" if narrow else "wgmma 128") if tile and wgmma else "mma.sync" if tile else kind
            plans, tuned = [("rule", rule)], rule
            if channels_last:  # (the gathered kernels' comparison rows: the rule's plan only)
                try:
                    tuned = tuned_plan(torch, "conv2d_" + pass_name.replace("-", "_"), (g, o, 1, dtype), rule,
                                       candidates, launcher)
                except RuntimeError as e:
                    print(f"conv {name} {pass_name} {dtype}: autotuning failed: {e}", flush=True)
            if tuned != rule:
                plans.append(("tuned", tuned))
            for how, plan in plans:
                lamina_fn = launcher(plan)
                try:
                    lamina_fn()
                except RuntimeError as e:  # reported, not timed; the other kernels still run
                    print(f"conv {name} {pass_name} {dtype} {pkind} ({how} plan): {e}: NOT TIMED", flush=True)
                    rows.append({"kernel": "conv2d " + pass_name, "shape": name, "what": f"{dtype} {pkind} ({how})",
                                 "mismatch": True, "error": str(e)})
                    continue
                err = rel_error(torch, result(), ref_fn())
                if not err < tol:
                    rows.append(mismatch("conv2d " + pass_name, name, f"{dtype} {pkind} ({how} plan {tuple(plan)})",
                                         "cuDNN", err))
                    continue
                t_l, t_r = timed_pair(torch, lamina_fn, ref_fn, args.repeat)
                variant = pkind + (" tuned" if how == "tuned" else "")
                row = {"kernel": "conv2d " + pass_name, "shape": name, "x": list(xshape), "out_channels": o,
                       "kernel_size": kk, "stride": s, "padding": p, "dtype": dtype, "layout": "NCHW",
                       "variant": variant, "plan": plan._asdict(), "tuned_plan": tuned._asdict(),
                       "wgmma_tile": mod.conv2d_wgmma_tile(pass_name.replace("-", "_"), g, o, 1, dtype),
                       "splits": plan.splits,
                       "lamina_ms": t_l, "cudnn_ms": t_r, "lamina_tflops": flops / t_l / 1e9,
                       "cudnn_tflops": flops / t_r / 1e9, "ratio_of_cudnn": t_r / t_l, "max_rel_error": err}
                rows.append(row)
                print(f"conv {name:>22} {pass_name:>15} {dtype:>8} {pkind:>12} {how:>5} {tuple(plan)}: lamina {t_l:8.3f} ms "
                      f"({row['lamina_tflops']:6.1f} TFLOP/s)  cuDNN {t_r:8.3f} ms ({row['cudnn_tflops']:6.1f})  "
                      f"ratio {row['ratio_of_cudnn']:.2f}", flush=True)


def _wgmma_tile(mod, pass_name, g, o, dtype):
    """A convolution pass's channel tile on wgmma with conv_wgmma and conv_wgmma_narrow on (0: not on wgmma;
    the switches are restored)."""
    previous = mod.conv_wgmma(True), mod.conv_wgmma_narrow(True)
    try:
        return mod.conv2d_wgmma_tile(pass_name, g, o, 1, dtype)
    finally:
        mod.conv_wgmma(previous[0])
        mod.conv_wgmma_narrow(previous[1])


def sweep_splits(torch, mod, args, rows):
    """Split counts around the ones lamina picks, timed on the shapes where they
    apply (fp32 GEMMs with few output tiles; convolution forward and
    backward-weight), so that one GPU run also gives the data to tune
    ops.gemm_splits, the forward's rule (conv2d_forward_splits in
    csrc/cuda/conv.cu) and ops.conv.backward_weight_splits.  Results only:
    no reference, no ratio."""
    stream = torch.cuda.current_stream().cuda_stream
    sms = torch.cuda.get_device_properties(0).multi_processor_count

    def timed(fn):
        for _ in range(3):
            fn()
        times = []
        for _ in range(args.repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    for name, m, n, k, ta, tb, _ in GEMM:
        chosen = ops.gemm_splits(m, n, k, sms)
        if chosen == 1 and m * n >= 1024 * 1024:
            continue
        a = torch.randn((k, m) if ta else (m, k), device="cuda")
        b = torch.randn((n, k) if tb else (k, n), device="cuda")
        c = torch.empty((m, n), device="cuda")
        times = {}
        for splits in sorted({1, 2, 3, 4, 6, 8, 12, 16, chosen} & set(range(1, max(1, k // 32) + 1))):
            ws = torch.empty(max(1, splits * m * n if splits > 1 else 1), device="cuda")
            times[splits] = timed(lambda: mod.gemm(c.data_ptr(), 0, a.data_ptr(), b.data_ptr(), 0, m, n, k, a.shape[1],
                                                   b.shape[1], n, ta, tb, "none", "float32", "float32", stream, splits,
                                                   workspace=ws.data_ptr(), workspace_bytes=ws.nbytes))
        rows.append({"kernel": "gemm fp32 split-K", "shape": name, "chosen": chosen, "ms_by_splits": times,
                     "best": min(times, key=times.get)})
        print(f"sweep gemm {name:>30}: chosen {chosen}, best {rows[-1]['best']}: "
              + "  ".join(f"{sp}:{t:.3f}" for sp, t in times.items()), flush=True)
    for name, xshape, o, kk, s, p in CONV:
        geo = ops.geometry(xshape, (kk, kk), (s, s), (p, p, p, p))
        chosen = ops.conv.backward_weight_splits(geo, o, 1, sms)
        x = torch.randn(xshape, device="cuda")
        dy = torch.randn((geo.n, o, geo.oh, geo.ow), device="cuda")
        dw = torch.empty((o, xshape[1], kk, kk), device="cuda")
        times = {}
        for splits in sorted({1, 2, 4, 8, 16, 32, 64, chosen, max(1, chosen // 2), 2 * chosen}):
            ws = torch.empty(max(1, mod.conv2d_workspace_size("backward_weight", tuple(geo), o, 1, "float32", splits)),
                             device="cuda", dtype=torch.uint8)
            times[splits] = timed(lambda: mod.conv2d_backward_weight(dw.data_ptr(), ws.data_ptr(), ws.nbytes,
                                                                     dy.data_ptr(), x.data_ptr(), tuple(geo), o, 1,
                                                                     splits, "float32", stream))
        rows.append({"kernel": "conv2d backward-weight split-K", "shape": name, "chosen": chosen,
                     "ms_by_splits": times, "best": min(times, key=times.get)})
        print(f"sweep conv {name:>22}: chosen {chosen}, best {rows[-1]['best']}: "
              + "  ".join(f"{sp}:{t:.3f}" for sp, t in times.items()), flush=True)

        w = torch.randn((o, xshape[1], kk, kk), device="cuda")
        y = torch.empty((geo.n, o, geo.oh, geo.ow), device="cuda")
        slices = -(-xshape[1] * kk * kk // 8)  # BK = 8: at most one split per slice
        # the 128-row kernel (more than 64 output channels) both ways: two blocks per SM (a few registers
        # spilled) and one
        for two_blocks in (True, False) if o > 64 else (True,):
            before = mod.conv_two_blocks(two_blocks)
            try:
                chosen = mod.conv2d_forward_splits(tuple(geo), o, 1)
                times = {}
                for splits in sorted({1, 2, 3, 4, 5, 6, 8, chosen} & set(range(1, slices + 1))):
                    ws = torch.empty(max(1, mod.conv2d_workspace_size("forward", tuple(geo), o, 1, "float32", splits)),
                                     device="cuda", dtype=torch.uint8)
                    times[splits] = timed(lambda: mod.conv2d_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), 0,
                                                                     tuple(geo), o, 1, "float32", stream, splits,
                                                                     workspace=ws.data_ptr(),
                                                                     workspace_bytes=ws.nbytes))
            finally:
                mod.conv_two_blocks(before)
            rows.append({"kernel": "conv2d forward split-K", "shape": name, "blocks_per_sm": 2 if two_blocks else 1,
                         "chosen": chosen, "ms_by_splits": times, "best": min(times, key=times.get)})
            print(f"sweep conv fwd {name:>18} ({2 if two_blocks else 1} blocks/SM): chosen {chosen}, best "
                  f"{rows[-1]['best']}: " + "  ".join(f"{sp}:{t:.3f}" for sp, t in times.items()), flush=True)
        if xshape[1] > 64:  # backward-data's 128-row kernel (more than 64 input channels) both ways
            dx = torch.empty(xshape, device="cuda")
            times = {}
            for two_blocks in (True, False):
                before = mod.conv_two_blocks(two_blocks)
                try:
                    times[2 if two_blocks else 1] = timed(lambda: mod.conv2d_backward_data(
                        dx.data_ptr(), dy.data_ptr(), w.data_ptr(), tuple(geo), o, 1, "float32", stream))
                finally:
                    mod.conv_two_blocks(before)
            rows.append({"kernel": "conv2d backward-data blocks per SM", "shape": name, "chosen": 2,
                         "ms_by_blocks_per_sm": times, "best": min(times, key=times.get)})
            print(f"sweep conv bwd-data {name:>13}: blocks/SM " + "  ".join(f"{b}:{t:.3f}" for b, t in times.items()),
                  flush=True)
    # bfloat16 on wgmma (slices of 64; one block per SM, two on the narrow kernels): the split counts of the
    # forward's rule and of ops.conv.backward_weight_splits(wgmma_tile=...), neither yet fitted to a measurement
    for name, xshape, o, kk, s, p in CONV:
        geo = ops.geometry(xshape, (kk, kk), (s, s), (p, p, p, p))
        g = tuple(geo)
        x = torch.randn(xshape, device="cuda").bfloat16()
        w = torch.randn((o, xshape[1], kk, kk), device="cuda").bfloat16()
        dy = torch.randn((geo.n, o, geo.oh, geo.ow), device="cuda").bfloat16()
        y, dw = torch.empty_like(dy), torch.empty_like(w)
        for pass_name in ("forward", "backward_weight"):
            tile = mod.conv2d_wgmma_tile(pass_name, g, o, 1, "bfloat16")
            if not tile:
                continue
            if pass_name == "forward":
                chosen = mod.conv2d_forward_splits(g, o, 1, "bfloat16")
                most = -(-xshape[1] * kk * kk // 64)
                counts = {1, 2, 3, 4, 5, 6, 8, chosen}
            else:
                chosen = ops.conv.backward_weight_splits(geo, o, 1, sms, wgmma_tile=tile)
                most = -(-geo.n * geo.oh * geo.ow // 64)
                counts = {1, 2, 3, 4, 6, 8, 12, 16, 32, 64, chosen, max(1, chosen // 2), 2 * chosen}
            times = {}
            for splits in sorted(c for c in counts if c <= most):
                n = mod.conv2d_workspace_size(pass_name, g, o, 1, "bfloat16", splits)
                ws = torch.empty(max(1, n), device="cuda", dtype=torch.uint8)
                if pass_name == "forward":
                    fn = lambda: mod.conv2d_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), 0, g, o, 1,  # noqa: E731
                                                    "bfloat16", stream, splits, workspace=ws.data_ptr(),
                                                    workspace_bytes=n)
                else:
                    fn = lambda: mod.conv2d_backward_weight(dw.data_ptr(), ws.data_ptr(), n, dy.data_ptr(),  # noqa: E731
                                                            x.data_ptr(), g, o, 1, splits, "bfloat16", stream)
                times[splits] = timed(fn)
            label = pass_name.replace("_", "-")
            rows.append({"kernel": f"conv2d {label} split-K", "shape": name, "dtype": "bfloat16", "variant": "wgmma",
                         "wgmma_tile": tile, "chosen": chosen, "ms_by_splits": times,
                         "best": min(times, key=times.get)})
            print(f"sweep conv {label} bf16 wgmma {name:>18}: chosen {chosen}, best {rows[-1]['best']}: "
                  + "  ".join(f"{sp}:{t:.3f}" for sp, t in times.items()), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="skip the largest problems")
    p.add_argument("--sweep", action="store_true", help="also time split-K counts around lamina's choices")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("kernels.py needs a CUDA GPU (and PyTorch built with CUDA)")
    mod = _ext.cuda_module()
    if mod is None:
        sys.exit(f"lamina._C_cuda is not built: {_ext.import_error('_C_cuda')}")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape
    device = torch.cuda.get_device_name(0)
    stem = "kernels_" + re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower()
    path = os.path.join(args.out, stem + ".json")
    result = {
        "benchmark": "kernels", "device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "lamina_archs": mod.archs, "tf32": False, "cudnn_benchmark": True,
        "timing": f"CUDA events, 3 warm-up rounds, medians of {args.repeat} interleaved rounds",
        "ratio": "reference ms / lamina ms (1.0 = parity, higher is better for lamina)", "complete": False,
    }

    def save():
        atomic_write(path, json.dumps(result, indent=2).encode())

    # the file is rewritten after every row, so a run cut short keeps the rows it finished
    rows = result["results"] = SavedRows(save)
    result["split_k_sweeps"] = SavedRows(save)
    bench_gemm(torch, mod, args, rows)
    probe_conv_wgmma(torch, mod, result)
    bench_conv(torch, mod, args, rows)
    if args.sweep:
        sweep_splits(torch, mod, args, result["split_k_sweeps"])
    result["complete"] = True
    save()
    print(f"wrote {path}")
    bad = [r for r in rows if r.get("mismatch")]
    if bad:
        sys.exit(f"{len(bad)} kernel(s) differ from the reference (rows marked 'mismatch', not timed)")


if __name__ == "__main__":
    main()
