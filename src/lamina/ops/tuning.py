"""Launch plans for lamina's GPU convolutions, chosen by timing them.

Each pass of the implicit-GEMM convolution (csrc/cuda/conv.cu) can run
several ways that compute the same result:

* ``rows``: the SIMT kernels' tile height, 32, 64 or 128 output channels
  (forward and backward-weight) or input channels (backward-data);
* ``blocks``: the 128-row forward and backward-data kernels built for one
  block per multiprocessor (no register spills) or two (a few spilled);
* ``splits``: forward and backward-weight cut their reduction into that
  many ranges, whose fp32 partial sums are added in a fixed order.

lamina's rules pick a plan from the problem's shape alone (fitted to H100
measurements: ``conv2d_forward_splits``, ``tile_tm_filling`` in conv.cu,
:func:`lamina.ops.conv.backward_weight_splits`).  With
:func:`lamina.backend.autotune` on, the first call of each distinct problem
times the rule's plan and its alternatives on the current stream and keeps
the fastest, as cuDNN's benchmark mode does for its algorithms.  The
fp16/bf16 tensor-core kernels have one tile shape, so only their split
count is tuned.
"""

import statistics
import threading
from typing import NamedTuple

from .. import backend
from ..errors import warn_once
from . import _ext


class Plan(NamedTuple):
    """One launch plan; 0 in ``rows`` or ``blocks``: the rule's choice."""

    rows: int = 0
    blocks: int = 0
    splits: int = 1


# Timing: each candidate launched once untimed (its first launch loads the
# kernel), then timed once; those within SLACK of the fastest are timed
# ROUNDS - 1 more times, interleaved, and the lowest median wins.
ROUNDS = 5
SLACK = 1.5

_plans = {}  # (pass, problem..., device) -> Plan
_lock = threading.Lock()


def plans():
    """The plans chosen so far: {(pass, geometry, out channels, groups, dtype, device, switches): Plan}."""
    with _lock:
        return dict(_plans)


def clear():
    """Forget every chosen plan (the next call of each problem times again)."""
    with _lock:
        _plans.clear()


def choose(pass_name, problem, rule, candidates, launcher):
    """The plan to run ``pass_name`` ("conv2d_forward", ...) with on
    ``problem`` (geometry, out channels, groups, dtype): ``rule`` unless
    autotuning is on, else the fastest of ``rule`` and ``candidates()``,
    timed on the problem's first call and kept.  ``launcher(plan)`` returns a
    callable that launches the pass with that plan on CuPy's current stream
    (anything it allocates it allocates on its first call, which is not
    timed)."""
    if not backend.autotune():
        return rule
    cp = backend.require_cuda()
    mod = _ext.cuda_module()
    # the switches change what the rule's plan (zeros) and the 16-bit kernels mean
    key = (pass_name, *problem, cp.cuda.Device().id, mod.conv_tensor_cores(), mod.conv_channels_last(),
           mod.conv_wgmma(), mod.conv_wgmma_narrow(), mod.conv_two_blocks(), mod.conv_tile_fill())
    with _lock:
        plan = _plans.get(key)
    if plan is not None:
        return plan
    if backend.stream_capturing():
        warn_once(
            f"autotune capture {pass_name}",
            f"lamina autotune: a {pass_name} first met inside a CUDA-graph capture cannot be timed and runs the rule's "
            f"plan; run the step once before capturing to tune it",
        )
        return rule
    plan = _fastest(cp, [rule] + [c for c in dict.fromkeys(candidates()) if c != rule], launcher)
    with _lock:
        return _plans.setdefault(key, plan)


def _fastest(cp, candidates, launcher):
    stream = cp.cuda.get_current_stream()
    launches = {plan: launcher(plan) for plan in candidates}

    def timed(launch):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        launch()
        end.record(stream)
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end)

    for launch in launches.values():
        launch()
    times = {plan: [timed(launch)] for plan, launch in launches.items()}
    best = min(t[0] for t in times.values())
    close = [plan for plan, t in times.items() if t[0] <= SLACK * best]
    for _ in range(ROUNDS - 1):
        for plan in close:
            times[plan].append(timed(launches[plan]))
    # the rule's plan (first) wins ties: it is the deterministic default
    return min(close, key=lambda plan: statistics.median(times[plan]))


def _heights(m):
    """The SIMT tile heights worth trying for m rows: 32 up to the smallest that holds them."""
    return [r for r in (32, 64, 128) if r < 2 * m or r == 32]


def _bases(m, blocks_choice, tensor):
    """(rows, blocks) of the kernels that can run m rows: the tensor cores' one shape, or the SIMT heights
    (the 128-row kernel in its 1- and 2-block builds where it has both)."""
    if tensor:
        return [(0, 0)]
    return [(r, b) for r in _heights(m) for b in ((1, 2) if r == 128 and blocks_choice else (0,))]


def forward_candidates(og, pixels, k, groups, sm_count, tensor):
    """Forward's plans: each kernel shape, unsplit and, where its tiles leave
    multiprocessor slots empty, with 2 to 8 splits of at least 128 of the
    C/G*KH*KW reduction."""
    out = []
    for rows, blocks in _bases(og, True, tensor):
        height = rows or 128
        tiles = -(-og // height) * -(-pixels // 128) * groups
        per_sm = {32: 4, 64: 2}.get(rows, blocks or 2)
        out.append(Plan(rows, blocks, 1))
        if tiles < per_sm * sm_count:
            out += [Plan(rows, blocks, s) for s in (2, 3, 4, 5, 6, 8) if k // s >= 128 and s * groups <= 65535]
    return out


def backward_data_candidates(cg, tensor):
    """Backward-data's plans: each kernel shape (it does not split)."""
    return [Plan(rows, blocks, 1) for rows, blocks in _bases(cg, True, tensor)]


def backward_weight_candidates(og, pixels, groups, rule_splits, tensor):
    """Backward-weight's plans: each tile height with split counts around the
    rule's (and powers of two up to 64), in ranges of at least 128 of the
    N*OH*OW pixels."""
    most = max(1, min(pixels // 128, 65535 // groups))
    r = rule_splits
    counts = sorted({c for c in (1, 2, 4, 8, 16, 32, 64, r, r // 2, 2 * r, 3 * r // 2, 3 * r // 4) if 1 <= c <= most})
    return [Plan(rows, 0, c) for rows, _ in _bases(og, False, tensor) for c in counts]
