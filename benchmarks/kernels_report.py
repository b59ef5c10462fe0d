"""A kernel benchmark's results (benchmarks/kernels.py) as a Markdown report:
each target met or missed, lamina's kernels side by side, the split-K sweeps.

    python benchmarks/kernels_report.py RESULTS.json [--out REPORT.md] [--baseline EARLIER.json]

Writes REPORT.md (default: RESULTS.json with .md for .json) and prints the
summary line.  Sections:

* Targets: each row that a target speaks of, lamina's default kernel and
  launch plan (variant ``simt``, ``mma`` or ``wgmma``) against cuBLAS or
  cuDNN, and the plan lamina's autotuner picks where that differs (cuDNN's
  own autotuner is on for the reference).  The targets: fp32 GEMM at least
  0.85 of cuBLAS at 4096³, 8192³ and the odd size; bf16 GEMM at least 0.6 at
  8192³; convolution forward at least 0.7 and both gradients at least 0.5
  of cuDNN, every shape and precision timed.
* Kernels side by side: the same pass on two of lamina's kernels (wgmma
  against mma.sync and against wgmma's 128 x 128 tiles, channels-last
  against the NCHW gathers), as the time of the second over the first.
* Split-K sweeps: the split count each rule chose against the fastest
  timed, and how much slower the choice was.
* Against an earlier run (--baseline): each kernel, shape, precision and
  variant timed in both, its time then and now and its ratio then and now,
  so that a run checks the predictions made since the earlier one.
* Rows not timed: kernels that differed from the reference or did not run.
"""

import argparse
import json
import os
import sys

GEMM_TARGETS = {  # (shape, dtype): least ratio of cuBLAS
    ("square 4096", "float32"): 0.85,
    ("square 8192", "float32"): 0.85,
    ("odd 4000x4100x4200", "float32"): 0.85,
    ("square 8192", "bfloat16"): 0.6,
}
CONV_TARGETS = {"conv2d forward": 0.7, "conv2d backward-data": 0.5, "conv2d backward-weight": 0.5}
DEFAULT_VARIANTS = ("simt", "mma", "wgmma")  # lamina's default kernel; older results have no variant
COMPARISONS = [  # (first, second): the same pass on two kernels
    ("wgmma", "mma.sync"),
    ("wgmma", "wgmma 128"),
    ("simt", "simt gathered"),
    ("mma", "mma gathered"),
    ("wgmma", "mma gathered"),
]


def _ratio(row):
    return row.get("ratio_of_cublas", row.get("ratio_of_cudnn"))


def _ref_ms(row):
    return row.get("cublas_ms", row.get("cudnn_ms"))


def _variant(row):
    return row.get("variant") or "simt"


def _timed(rows):
    return [r for r in rows if "lamina_ms" in r]


def _default_rows(rows):
    """{(kernel, shape, dtype): row} of lamina's default kernel and plan.  A 16-bit GEMM runs on wgmma
    where it has a row (the device runs it and TMA can read the operands), else on mma.sync."""
    out = {}
    for r in _timed(rows):
        if _variant(r) not in DEFAULT_VARIANTS:
            continue
        key = (r["kernel"], r["shape"], r.get("dtype", "float32"))
        if key not in out or _variant(r) == "wgmma":
            out[key] = r
    return out


def _tuned_rows(rows):
    return {(r["kernel"], r["shape"], r.get("dtype", "float32"), _variant(r)[:-len(" tuned")]): r
            for r in _timed(rows) if _variant(r).endswith(" tuned")}


def target_rows(result):
    """[(kernel, shape, dtype, target, default row, tuned row or None)] for every timed row a target
    covers, in the order the benchmark ran them."""
    rows = result.get("results", [])
    default, tuned = _default_rows(rows), _tuned_rows(rows)
    out = []
    for (kernel, shape, dtype), row in default.items():
        target = GEMM_TARGETS.get((shape, dtype)) if kernel == "gemm" else CONV_TARGETS.get(kernel)
        if target is not None:
            out.append((kernel, shape, dtype, target, row, tuned.get((kernel, shape, dtype, _variant(row)))))
    return out


def summary(result):
    """(met, met with the autotuner's plans, targets): counts of target rows."""
    rows = target_rows(result)
    met = sum(_ratio(r) >= t for *_, t, r, _ in rows)
    met_tuned = sum(max(_ratio(r), _ratio(tr) if tr else 0) >= t for *_, t, r, tr in rows)
    return met, met_tuned, len(rows)


def _plan(row):
    plan = row.get("plan")
    if plan:
        return ", ".join(f"{k} {v}" for k, v in plan.items() if v)
    return f"splits {row['splits']}" if row.get("splits") else ""


def _fmt(x, digits=2):
    return "" if x is None else f"{x:.{digits}f}"


def _keyed(result):
    return {(r["kernel"], r["shape"], r.get("dtype", "float32"), _variant(r)): r
            for r in _timed(result.get("results", []))}


def report(result, baseline=None):
    lines = [f"# Kernels against cuBLAS and cuDNN: {result.get('device', '?')}", ""]
    facts = [f"{k} {result[k]}" for k in ("torch", "cuda", "cudnn", "lamina_archs") if k in result]
    lines.append("; ".join(facts) + f"; TF32 {'on' if result.get('tf32') else 'off'}; "
                 f"cuDNN autotuner {'on' if result.get('cudnn_benchmark') else 'off'}.")
    if result.get("timing"):
        lines.append(f"Timing: {result['timing']}. Ratio: reference time / lamina time (higher is better).")
    if not result.get("complete", False):
        lines.append("**The run did not finish**: the rows below are those it completed.")
    probe = result.get("conv_wgmma_probe")
    if probe and any(v != "ok" for v in probe.values()):
        lines.append(f"wgmma convolution probe: {probe} (the failed kind was switched off for the run).")
    met, met_tuned, total = summary(result)
    lines += ["", f"**Targets: {met} of {total} met with lamina's default plans, {met_tuned} with its "
              "autotuner's.**", "", "## Targets", "",
              "| kernel | shape | dtype | variant | plan | lamina ms | reference ms | lamina TFLOP/s | ratio | "
              "tuned plan | tuned ratio | target | |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kernel, shape, dtype, target, row, tuned in target_rows(result):
        best = max(_ratio(row), _ratio(tuned) if tuned else 0)
        verdict = "met" if _ratio(row) >= target else "met tuned" if best >= target else "**missed**"
        lines.append(f"| {kernel} | {shape} | {dtype} | {_variant(row)} | {_plan(row)} | {_fmt(row['lamina_ms'], 3)} | "
                     f"{_fmt(_ref_ms(row), 3)} | {_fmt(row.get('lamina_tflops'), 1)} | {_fmt(_ratio(row))} | "
                     f"{_plan(tuned) if tuned else ''} | {_fmt(_ratio(tuned)) if tuned else ''} | ≥ {target} | "
                     f"{verdict} |")

    timed = _keyed(result)
    pairs = []
    for first, second in COMPARISONS:
        for (kernel, shape, dtype, variant), a in timed.items():
            b = timed.get((kernel, shape, dtype, second))
            if variant == first and b is not None:
                pairs.append((kernel, shape, dtype, first, second, a, b))
    if pairs:
        lines += ["", "## Kernels side by side", "",
                  "The same pass on two of lamina's kernels, each with its rule's plan; speed-up = second ms / first ms.",
                  "", "| kernel | shape | dtype | first | ms | second | ms | speed-up |", "|---|---|---|---|---|---|---|---|"]
        for kernel, shape, dtype, first, second, a, b in pairs:
            lines.append(f"| {kernel} | {shape} | {dtype} | {first} | {_fmt(a['lamina_ms'], 3)} | {second} | "
                         f"{_fmt(b['lamina_ms'], 3)} | {_fmt(b['lamina_ms'] / a['lamina_ms'])} |")

    sweeps = [s for s in result.get("split_k_sweeps", []) if s.get("ms_by_splits")]
    if sweeps:
        lines += ["", "## Split-K sweeps", "",
                  "The rule's split count against the fastest timed; cost = time at the rule's count / best time.", "",
                  "| kernel | shape | variant | chosen | best | ms chosen | ms best | cost |", "|---|---|---|---|---|---|---|---|"]
        for s in sweeps:
            times = {int(k): v for k, v in s["ms_by_splits"].items()}
            chosen, best = int(s["chosen"]), int(s["best"])
            variant = " ".join(str(x) for x in (s.get("dtype", "float32"), s.get("variant", ""),
                                                f"tile {s['wgmma_tile']}" if s.get("wgmma_tile") else "",
                                                f"{s['blocks_per_sm']} blocks/SM" if s.get("blocks_per_sm") else "")
                               if x)
            at_chosen = times.get(chosen)
            cost = at_chosen / times[best] if at_chosen else None
            lines.append(f"| {s['kernel']} | {s['shape']} | {variant} | {chosen} | {best} | {_fmt(at_chosen, 3)} | "
                         f"{_fmt(times[best], 3)} | {_fmt(cost)} |")

    if baseline is not None:
        before = _keyed(baseline)
        both = [(key, before[key], row) for key, row in timed.items() if key in before]
        lines += ["", f"## Against the earlier run ({baseline.get('device', '?')}, lamina {baseline.get('lamina_archs', '?')})",
                  "", "Each row timed in both runs; speed-up = earlier ms / ms now.", "",
                  "| kernel | shape | dtype | variant | ms then | ms now | speed-up | ratio then | ratio now |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (kernel, shape, dtype, variant), old, new in both:
            lines.append(f"| {kernel} | {shape} | {dtype} | {variant} | {_fmt(old['lamina_ms'], 3)} | "
                         f"{_fmt(new['lamina_ms'], 3)} | {_fmt(old['lamina_ms'] / new['lamina_ms'])} | "
                         f"{_fmt(_ratio(old))} | {_fmt(_ratio(new))} |")
        if not both:
            lines.append("| (no row in common) | | | | | | | | |")

    untimed = [r for r in result.get("results", []) if "lamina_ms" not in r]
    if untimed:
        lines += ["", "## Rows not timed", ""]
        for r in untimed:
            what = r.get("what") or f"{r.get('dtype', '')} {r.get('variant', '')}".strip()
            why = r.get("not_run") or r.get("error") or (
                f"differs from the reference by {r['max_rel_error']:.2e}" if "max_rel_error" in r else "mismatch")
            lines.append(f"* {r['kernel']} {r['shape']} {what}: {why}")
    return "\n".join(lines) + "\n"


def _load(path):
    with open(path) as f:
        result = json.load(f)
    if result.get("benchmark") != "kernels":
        sys.exit(f"{path}: not a kernel benchmark's results (benchmark: {result.get('benchmark')!r})")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a kernels_<device>.json written by benchmarks/kernels.py")
    p.add_argument("--out", help="the report's path (default: the results' path with .md)")
    p.add_argument("--baseline", help="an earlier run's results, to set each row beside its earlier time")
    args = p.parse_args(argv)
    result = _load(args.results)
    baseline = _load(args.baseline) if args.baseline else None
    out = args.out or os.path.splitext(args.results)[0] + ".md"
    from lamina.serialization import atomic_write

    atomic_write(out, report(result, baseline).encode())
    met, met_tuned, total = summary(result)
    print(f"{result.get('device', '?')}: {met} of {total} targets met ({met_tuned} with the autotuner's plans); "
          f"wrote {out}")


if __name__ == "__main__":
    main()
