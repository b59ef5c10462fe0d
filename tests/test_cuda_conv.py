"""lamina's implicit-GEMM convolution kernels (csrc/cuda/conv.cu) against a
float64 reference on fresh random data: the random geometries of
test_ops_conv.py (stride, four-sided padding, dilation, groups, batch 1,
odd sizes) plus ResNet shapes and sizes around the 128-wide tile; outputs
poisoned before each launch; split-K on and off; float16/bfloat16; Conv2D
on the kernels against the CPU.  GPU only."""

import numpy as np
import pytest
from conftest import requires_cuda
from harness import check_gpu_kernels_match_cpu
from test_cuda_gemm import _hopper, from_bf16_bits, storage
from test_ops_conv import GEOMETRIES, _grouped_problem

import lamina as lm
from lamina import ops

pytestmark = [pytest.mark.gpu, requires_cuda]

# around the 128 x 128 tile: 127/128/129 output channels, pixel counts either side of 128
EXTRA = [
    (ops.geometry((1, 3, 11, 12), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 128),
    (ops.geometry((2, 129, 8, 8), (1, 1), (1, 1), (0, 0, 0, 0)), 1, 127),
    (ops.geometry((3, 16, 13, 5), (3, 3), (2, 2), (1, 1, 1, 1)), 1, 129),
    (ops.geometry((4, 64, 16, 16), (3, 3), (2, 2), (1, 1, 1, 1)), 1, 32),  # ResNet-20 stage change
    (ops.geometry((8, 16, 32, 32), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 16),  # ResNet-20 stage 1
    (ops.geometry((2, 8, 9, 9), (3, 3), (1, 1), (1, 1, 1, 1)), 8, 8),  # depthwise
]


def _case_id(case):
    return "x".join(map(str, case[0] if len(case) == 3 else case)) + (f"-g{case[1]}-o{case[2]}" if len(case) == 3 else "")


def _problem(case, seed):
    if len(case) == 3:  # (geometry, groups, out channels)
        g, groups, o = case
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((g.n, g.c, g.h, g.w))
        w = rng.standard_normal((o, g.c // groups, g.kh, g.kw))
        return g, x, w, rng.standard_normal(o), rng.standard_normal((g.n, o, g.oh, g.ow)), groups
    x, w, b, dy, groups = _grouped_problem(case, seed)
    return case, x, w, b, dy, groups


def _workspace(keep, mod, pass_name, g, o, groups, dtype, splits, dy=0):
    """(address, bytes) of a workspace of the size the pass asks for (for backward-weight's `dy`, its address,
    or any dy), every byte 0xFF (NaN in float32, float16 and bfloat16: poisoned), kept alive in `keep`; (0, 0)
    when the pass needs none."""
    import cupy as cp

    n = mod.conv2d_workspace_size(pass_name, tuple(g), o, groups, dtype, splits, dy=dy)
    if n == 0:
        return 0, 0
    keep.append(cp.full(n, 0xFF, dtype=np.uint8))
    return keep[-1].data.ptr, n


def _launch_all(g, x, w, b, dy, groups, dtype, splits, rows=0, blocks=0):
    """Run the three kernels on storage-dtype copies, forward and backward-weight with `splits` split-K
    ranges, the SIMT kernels of `rows` rows built for `blocks` blocks per SM (0: the rule's); return host
    float arrays and their float64 references."""
    import cupy as cp

    from lamina.ops import _ext, reference

    mod = _ext.cuda_module()
    o = w.shape[0]
    (xs, x64), (ws, w64), (bs, b64), (dys, dy64) = (storage(a.astype(np.float32), dtype) for a in (x, w, b, dy))
    gx, gw, gb, gdy = (cp.asarray(a) for a in (xs, ws, bs, dys))
    store = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
    poison = 0xFFFF if dtype == "bfloat16" else np.nan
    y = cp.full((g.n, o, g.oh, g.ow), poison, dtype=store)
    dx = cp.full((g.n, g.c, g.h, g.w), poison, dtype=store)
    dw = cp.full(w.shape, poison, dtype=store)
    stream, keep = cp.cuda.get_current_stream().ptr, []
    mod.conv2d_forward(y.data.ptr, gx.data.ptr, gw.data.ptr, gb.data.ptr, tuple(g), o, groups, dtype, stream, splits,
                       *_workspace(keep, mod, "forward", g, o, groups, dtype, splits), rows, blocks)
    mod.conv2d_backward_data(dx.data.ptr, gdy.data.ptr, gw.data.ptr, tuple(g), o, groups, dtype, stream, rows, blocks,
                             *_workspace(keep, mod, "backward_data", g, o, groups, dtype, 1))
    mod.conv2d_backward_weight(dw.data.ptr, *_workspace(keep, mod, "backward_weight", g, o, groups, dtype, splits,
                                                        dy=gdy.data.ptr),
                               gdy.data.ptr, gx.data.ptr, tuple(g), o, groups, splits, dtype, stream, rows)

    def host(a):
        a = cp.asnumpy(a)
        return from_bf16_bits(a) if dtype == "bfloat16" else a.astype(np.float32)

    y_ref = reference.implicit_conv_forward(np, x64, w64, b64, g, groups)
    dx_ref = reference.implicit_conv_backward_data(np, dy64, w64, g, groups)
    dw_ref = reference.implicit_conv_backward_weight(np, dy64, x64, g, o, groups)
    return (host(y), y_ref), (host(dx), dx_ref), (host(dw), dw_ref)


def _check(results, dtype, g, w):
    k_fwd = w.shape[1] * g.kh * g.kw
    k_dw = g.n * g.oh * g.ow
    k_dx = w.shape[0] * g.kh * g.kw
    rel = {"float32": 1e-4, "float16": 2e-3, "bfloat16": 1e-2}[dtype]
    for (got, ref), k, name in zip(results, (k_fwd, k_dx, k_dw), ("forward", "backward-data", "backward-weight")):
        np.testing.assert_allclose(got, ref, rtol=rel, atol=rel * np.sqrt(k), err_msg=f"{name} {dtype} {g}")


@pytest.mark.parametrize("fill", [True, False], ids=["tile_fill", "tile_by_channels"])
@pytest.mark.parametrize("case", GEOMETRIES + EXTRA, ids=_case_id)
def test_conv_kernels_match_float64(case, fill):
    """With tile filling (the default) these small problems run on 32-row
    tiles; without it, on the 64- and 128-row tiles their channels pick."""
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    previous = mod.conv_tile_fill(fill)
    try:
        g, x, w, b, dy, groups = _problem(case, 11)
        for splits in (1, 3):
            _check(_launch_all(g, x, w, b, dy, groups, "float32", splits), "float32", g, w)
    finally:
        mod.conv_tile_fill(previous)


@pytest.mark.parametrize("case", [c for c in EXTRA if c[2] > 64], ids=_case_id)
def test_conv_forward_one_block_per_sm_matches_float64(case):
    """The forward's 128-row kernel built for one block per SM (no spills)
    instead of two: the same results, and the split rule counts its slots."""
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    g, x, w, b, dy, groups = _problem(case, 13)
    previous_fill, previous = mod.conv_tile_fill(False), mod.conv_two_blocks(False)
    try:
        assert mod.conv_two_blocks() is False
        for splits in (1, 2):
            _check(_launch_all(g, x, w, b, dy, groups, "float32", splits), "float32", g, w)
    finally:
        mod.conv_two_blocks(previous)
        mod.conv_tile_fill(previous_fill)
    assert mod.conv_two_blocks() is previous


PLANS = [(32, 0), (64, 0), (128, 1), (128, 2)]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"rows{p[0]}-blocks{p[1]}")
@pytest.mark.parametrize("case", EXTRA[:3] + GEOMETRIES[::7], ids=_case_id)
def test_conv_launch_plans_match_float64(case, plan):
    """Every kernel build an autotuning call may choose (lamina.ops.tuning),
    named explicitly: 32-, 64- and 128-row tiles, the 128-row forward and
    backward-data in their one- and two-block builds, unsplit and split,
    whatever the channel counts (the rule would not pick most of these)."""
    g, x, w, b, dy, groups = _problem(case, 17)
    rows, blocks = plan
    for splits in (1, 2):
        _check(_launch_all(g, x, w, b, dy, groups, "float32", splits, rows, blocks), "float32", g, w)


def test_conv_launch_plan_arguments_are_checked():
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    g = ops.geometry((1, 4, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1))
    y, x, w = cp.zeros((1, 4, 5, 5), np.float32), cp.zeros((1, 4, 5, 5), np.float32), cp.zeros((4, 4, 3, 3), np.float32)
    stream = cp.cuda.get_current_stream().ptr
    with pytest.raises(ValueError, match="conv2d_forward: expected rows 0 .*, received 48"):
        mod.conv2d_forward(y.data.ptr, x.data.ptr, w.data.ptr, 0, tuple(g), 4, 1, "float32", stream, 1, rows=48)
    with pytest.raises(ValueError, match="conv2d_backward_data: expected blocks 0 .*, received 3"):
        mod.conv2d_backward_data(x.data.ptr, y.data.ptr, w.data.ptr, tuple(g), 4, 1, "float32", stream, 128, 3)
    with pytest.raises(ValueError, match="conv2d_backward_weight: expected rows"):
        mod.conv2d_backward_weight(w.data.ptr, 0, 0, y.data.ptr, x.data.ptr, tuple(g), 4, 1, 1, "float32", stream, 16)


@pytest.fixture
def autotuning():
    from lamina.ops import tuning

    tuning.clear()
    previous = lm.backend.autotune(True)
    yield tuning
    lm.backend.autotune(previous)
    tuning.clear()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_autotune_times_each_pass_once_and_keeps_its_plan(autotuning, monkeypatch, dtype):
    """With autotune on, a Conv2D's three passes each time their candidate
    plans on the first call and reuse the winner after; the results still
    match the CPU layer whatever plan won."""
    import cupy as cp

    timed = []
    fastest = autotuning._fastest

    def counting(cp_, candidates, launcher):
        plan = fastest(cp_, candidates, launcher)
        assert plan in candidates
        timed.append((candidates, plan))
        return plan

    monkeypatch.setattr(autotuning, "_fastest", counting)
    monkeypatch.setattr(autotuning, "ROUNDS", 2)
    lm.manual_seed(0)
    cpu, gpu = lm.Conv2D(96, 72, 3, padding=1), lm.Conv2D(96, 72, 3, padding=1)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda", dtype=np.dtype(dtype))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 96, 5, 6)).astype(np.float32)
    dy = rng.standard_normal((1, 72, 5, 6)).astype(np.float32)
    y_cpu, dx_cpu = cpu(x), cpu.backward(dy)
    tol = 1e-4 if dtype == "float32" else 1e-2
    for _ in range(2):
        gpu.zero_grad()
        y = gpu(cp.asarray(x, dtype=dtype))
        dx = gpu.backward(cp.asarray(dy, dtype=dtype))
        np.testing.assert_allclose(cp.asnumpy(y).astype(np.float32), y_cpu, rtol=tol, atol=tol * 30)
        np.testing.assert_allclose(cp.asnumpy(dx).astype(np.float32), dx_cpu, rtol=tol, atol=tol * 30)
        np.testing.assert_allclose(cp.asnumpy(gpu.weight.grad).astype(np.float32), cpu.weight.grad, rtol=tol,
                                   atol=tol * 30)
    chosen = autotuning.plans()
    assert sorted(key[0] for key in chosen) == ["conv2d_backward_data", "conv2d_backward_weight", "conv2d_forward"]
    assert len(timed) == 3  # the second step reused them
    forward = next(c for c, _ in timed if any(p.splits > 1 for p in c))  # K = 864 over one tile: splits are tried
    if dtype == "float32":
        assert {(p.rows, p.blocks) for p in forward} >= {(32, 0), (64, 0), (128, 1), (128, 2)}
    else:  # the tensor cores' one tile shape: only split counts
        assert {(p.rows, p.blocks) for p in forward} == {(0, 0)}


def test_autotune_inside_a_capture_runs_the_rule_and_says_so(autotuning, monkeypatch):
    import cupy as cp

    from lamina import backend

    monkeypatch.setattr(lm.errors, "_warned", set())
    monkeypatch.setattr(backend, "stream_capturing", lambda: True)
    monkeypatch.setattr(autotuning, "_fastest", lambda *a: pytest.fail("timed inside a capture"))
    layer = lm.Conv2D(3, 4, 3).to("cuda")
    with pytest.warns(lm.PerformanceWarning, match="CUDA-graph capture"):
        layer(cp.ones((1, 3, 6, 6), dtype=np.float32))
    assert autotuning.plans() == {}


@pytest.mark.parametrize("tensor_cores", [True, False], ids=["mma", "simt"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", GEOMETRIES[::5] + EXTRA[:4], ids=_case_id)
def test_conv_kernels_16_bit_match_float64(case, dtype, tensor_cores):
    """On tensor cores (128 x 128 tiles of mma.sync, k in slices of 32: the
    default) and on the SIMT core; forward and backward-weight split in two."""
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    previous = mod.conv_tensor_cores(tensor_cores)
    try:
        g, x, w, b, dy, groups = _problem(case, 12)
        _check(_launch_all(g, x, w, b, dy, groups, dtype, 2), dtype, g, w)
        # whole slices, and more splits than some reductions have (small problems: the emulated device's
        # mma.sync is slow)
        for splits in (1, 5) if tensor_cores and g.n * g.oh * g.ow <= 1024 else ():
            _check(_launch_all(g, x, w, b, dy, groups, dtype, splits), dtype, g, w)
    finally:
        mod.conv_tensor_cores(previous)
    assert mod.conv_tensor_cores() is previous


# Layers for the channels-last kernels (csrc/cuda/conv.cu): 16-bit on tensor cores where the channels
# per group are multiples of 8, fp32 on the SIMT core (forward and backward-weight) where they are
# multiples of 4.  Odd images, batch 1, stride, four-sided padding, dilation, groups, reductions that
# end inside a slice, more than one 128-row or 128-pixel tile, a stride phase with no taps; and layers
# where only some passes qualify.
CHANNELS_LAST = [
    (ops.geometry((2, 16, 9, 7), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 24),  # K = 144: 4.5 slices
    (ops.geometry((1, 8, 5, 6), (3, 3), (2, 2), (1, 0, 1, 2)), 1, 8),  # batch 1, stride 2, four-sided padding
    (ops.geometry((2, 32, 6, 5), (3, 3), (1, 1), (1, 1, 1, 1)), 2, 16),  # groups: 16 in, 8 out per group
    (ops.geometry((1, 8, 11, 10), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)), 1, 8),  # dilation
    (ops.geometry((3, 24, 7, 7), (1, 1), (2, 2), (0, 0, 0, 0)), 1, 40),  # 1x1, stride 2
    (ops.geometry((2, 136, 3, 4), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 136),  # two 128-row tiles, K = 1224
    (ops.geometry((3, 8, 9, 9), (5, 3), (2, 1), (2, 2, 1, 1)), 1, 16),  # 243 input pixels: 2 column tiles
    (ops.geometry((2, 8, 9, 9), (3, 3), (2, 2), (2, 2, 2, 2), (2, 2)), 1, 8),  # odd phases have no taps
    (ops.geometry((2, 16, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 12),  # forward only (O % 8 != 0)
    (ops.geometry((2, 12, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 16),  # backward-data only (C % 8 != 0)
    (ops.geometry((2, 36, 5, 6), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 20),  # multiples of 4, not 8: fp32 only
    (ops.geometry((2, 64, 4, 4), (3, 3), (1, 1), (1, 1, 1, 1)), 2, 8),  # groups, fp32 forward's K = 288
    (ops.geometry((1, 32, 11, 10), (3, 3), (2, 2), (1, 0, 2, 1), (2, 1)), 1, 8),  # stride, padding, dilation
    # 630 pixels: backward-weight's 10 slices of 64 (the last one partial) wrap the wgmma kernel's 4 stages
    (ops.geometry((2, 8, 15, 21), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 16),
    # OH*OW % 8 == 0, so backward-weight takes wgmma's narrow kernel too (it reads dy's NCHW planes by 8 pixels):
    # 48 pixels an image, a 64-pixel slice spans two; 24 output channels in a 32-channel tile
    (ops.geometry((3, 16, 8, 6), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 24),
    (ops.geometry((2, 64, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1)), 1, 64),  # 64-channel tiles, 5 dW column tiles
    (ops.geometry((2, 16, 16, 12), (3, 3), (2, 2), (1, 1, 1, 1)), 1, 40),  # stride 2; 40 channels in a 64 tile
    (ops.geometry((2, 32, 8, 4), (3, 3), (1, 1), (1, 1, 1, 1)), 2, 32),  # groups: 16 in, 16 out per group
]


def _expected_channels_last(g, o, groups, kk, dtype):
    cg, og = g.c // groups, o // groups
    if dtype != "float32":
        return ({"forward"} if cg % 8 == 0 else set()) | ({"backward_data"} if og % 8 == 0 else set()) | (
            {"backward_weight"} if cg % 8 == 0 and og % 8 == 0 else set())
    pointwise = kk == 1 and g.sh == g.sw == 1 and g.pt == g.pl == 0 and (g.oh, g.ow) == (g.h, g.w)
    forward = cg % 4 == 0 and cg * kk >= 256 and not pointwise
    return ({"forward"} if forward else set()) | ({"backward_weight"} if cg % 4 == 0 and og % 4 == 0 else set())


def _expected_wgmma_tile(pass_name, g, o, groups):
    """wgmma_narrow_tile (csrc/cuda/launchers.h): the channels on the 128 x 128 tile's row side, rounded up to
    16, 32 or 64, where they are at most 64 (backward-weight: and OH*OW % 8 == 0); else 128."""
    ch = g.c // groups if pass_name == "backward_data" else o // groups
    if ch > 64 or (pass_name == "backward_weight" and g.oh * g.ow % 8):
        return 128
    return 16 if ch <= 16 else 32 if ch <= 32 else 64


def _channels_last_passes(mod, g, o, groups, dtype):
    """The passes that take the channels-last kernels: those that ask for a workspace when unsplit."""
    return {p for p in ("forward", "backward_data", "backward_weight")
            if mod.conv2d_workspace_size(p, tuple(g), o, groups, dtype) > 0}


@pytest.mark.parametrize("splits", [1, 3])
def test_conv_backward_weight_narrow_wgmma_with_misaligned_dy_matches_float64(splits):
    """The narrow wgmma backward-weight reads dy's NCHW planes by 16 bytes; a dy
    that is not 16-byte aligned (here 2 bytes off) goes through the NHWC copy
    and the 128 x 128 kernel instead, with the same numbers."""
    import cupy as cp

    from lamina.ops import _ext, reference

    mod = _ext.cuda_module()
    g, x, w, _, dy, groups = _problem(CHANNELS_LAST[-4], 23)  # 24 output channels, 48 pixels an image
    o, dtype = w.shape[0], "bfloat16"
    if mod.conv2d_wgmma_tile("backward_weight", tuple(g), o, groups, dtype) != 32:
        pytest.skip("backward-weight does not run on wgmma's narrow kernels on this device")
    (xs, x64), (dys, dy64) = (storage(a.astype(np.float32), dtype) for a in (x, dy))
    gx = cp.asarray(xs)
    buf = cp.zeros(dys.size + 1, dtype=dys.dtype)
    buf[1:] = cp.asarray(dys.ravel())
    gdy = buf[1:]  # 2 bytes past a 256-byte boundary
    assert gdy.data.ptr % 16 == 2
    dw = cp.full(w.shape, 0xFFFF, dtype=np.uint16)
    # the workspace: an aligned dy needs no copy of its own (a 256-byte multiple less), this one does
    stream, keep, aligned = cp.cuda.get_current_stream().ptr, [], buf.data.ptr
    any_dy = mod.conv2d_workspace_size("backward_weight", tuple(g), o, groups, dtype, splits)
    assert mod.conv2d_workspace_size("backward_weight", tuple(g), o, groups, dtype, splits, dy=gdy.data.ptr) == any_dy
    short = mod.conv2d_workspace_size("backward_weight", tuple(g), o, groups, dtype, splits, dy=aligned)
    assert any_dy - short == -(-dys.size * 2 // 256) * 256
    ws = cp.full(any_dy, 0xFF, dtype=np.uint8)
    with pytest.raises(ValueError, match=f"expected a workspace of {any_dy} bytes .* received workspace_bytes={short}"):
        mod.conv2d_backward_weight(dw.data.ptr, ws.data.ptr, short, gdy.data.ptr, gx.data.ptr, tuple(g), o, groups,
                                   splits, dtype, stream)
    assert int((dw != 0xFFFF).sum()) == 0  # refused before anything ran
    mod.conv2d_backward_weight(dw.data.ptr, *_workspace(keep, mod, "backward_weight", g, o, groups, dtype, splits,
                                                        dy=gdy.data.ptr),
                               gdy.data.ptr, gx.data.ptr, tuple(g), o, groups, splits, dtype, stream)
    ref = reference.implicit_conv_backward_weight(np, dy64, x64, g, o, groups)
    np.testing.assert_allclose(from_bf16_bits(cp.asnumpy(dw)), ref, rtol=1e-2, atol=1e-2 * np.sqrt(g.n * g.oh * g.ow))


def test_conv2d_backward_with_misaligned_dy_says_so_once_and_matches_float64():
    """At the layer's entry point (ops.conv.conv2d_backward_implicit), a dy view
    2 bytes past a 16-byte boundary cannot take the narrow wgmma
    backward-weight: a PerformanceWarning says so, once, and dW is right."""
    import warnings

    import cupy as cp

    from lamina import errors
    from lamina.ops import _ext, reference

    mod = _ext.cuda_module()
    g, x, w, _, dy, groups = _problem(CHANNELS_LAST[-4], 29)  # 24 output channels, 48 pixels an image
    o = w.shape[0]
    if mod.conv2d_wgmma_tile("backward_weight", tuple(g), o, groups, "float16") != 32:
        pytest.skip("backward-weight does not run on wgmma's narrow kernels on this device")
    x16, w16, dy16 = (a.astype(np.float16) for a in (x, w, dy))
    buf = cp.zeros(dy16.size + 1, dtype=np.float16)
    buf[1:] = cp.asarray(dy16.ravel())
    gdy = buf[1:].reshape(dy16.shape)
    assert gdy.data.ptr % 16 == 2
    errors._warned.discard("conv2d narrow wgmma dy alignment")
    with pytest.warns(errors.PerformanceWarning, match="16-byte boundary"):
        _, dw, _ = ops.conv.conv2d_backward_implicit(gdy, cp.asarray(x16), cp.asarray(w16), g, groups,
                                                     need_dx=False, need_bias=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", errors.PerformanceWarning)  # once per process
        ops.conv.conv2d_backward_implicit(gdy, cp.asarray(x16), cp.asarray(w16), g, groups, need_dx=False,
                                          need_bias=False)
    ref = reference.implicit_conv_backward_weight(np, dy16.astype(np.float64), x16.astype(np.float64), g, o, groups)
    np.testing.assert_allclose(cp.asnumpy(dw).astype(np.float32), ref, rtol=2e-3,
                               atol=2e-3 * np.sqrt(g.n * g.oh * g.ow))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", CHANNELS_LAST, ids=_case_id)
def test_conv_kernels_channels_last_match_float64(case, dtype):
    """NHWC copies, then 16-byte tiles (cp.async on tensor cores, float4
    loads on the SIMT core, every launch plan there), unsplit and split
    (forward over (kh, kw, c), backward-weight over pixels); and the same
    numbers from the gathered kernels (conv_channels_last(False))."""
    from lamina.ops import _ext

    mod = _ext.cuda_module()
    g, x, w, b, dy, groups = _problem(case, 21)
    o = w.shape[0]
    assert _channels_last_passes(mod, g, o, groups, dtype) == _expected_channels_last(g, o, groups, g.kh * g.kw,
                                                                                       dtype)
    # on compute capability 9.0 every 16-bit channels-last pass runs on wgmma (conv_wgmma.cu), elsewhere none
    on_wgmma = {p for p in ("forward", "backward_data", "backward_weight")
                if mod.conv2d_on_wgmma(p, tuple(g), o, groups, dtype)}
    assert on_wgmma == (_expected_channels_last(g, o, groups, g.kh * g.kw, dtype)
                        if dtype != "float32" and _hopper() else set())
    # there, the passes with at most 64 channels on the tile's row side take the narrow kernels
    assert {p: mod.conv2d_wgmma_tile(p, tuple(g), o, groups, dtype) for p in on_wgmma} == {
        p: _expected_wgmma_tile(p, g, o, groups) for p in on_wgmma}
    for rows, blocks in [(0, 0)] + (PLANS if dtype == "float32" else []):
        for splits in (1, 3):
            _check(_launch_all(g, x, w, b, dy, groups, dtype, splits, rows, blocks), dtype, g, w)
    if any(mod.conv2d_wgmma_tile(p, tuple(g), o, groups, dtype) < 128 for p in on_wgmma):
        before = mod.conv_wgmma_narrow(False)  # those passes on the 128 x 128 wgmma kernels too
        try:
            assert {mod.conv2d_wgmma_tile(p, tuple(g), o, groups, dtype) for p in on_wgmma} == {128}
            for splits in (1, 3):
                _check(_launch_all(g, x, w, b, dy, groups, dtype, splits), dtype, g, w)
        finally:
            mod.conv_wgmma_narrow(before)
    if dtype != "float32":  # the 16-bit passes on mma.sync too, where compute capability 9.0 runs them on wgmma
        before = mod.conv_wgmma(False)
        try:
            assert not any(mod.conv2d_on_wgmma(p, tuple(g), o, groups, dtype)
                           for p in ("forward", "backward_data", "backward_weight"))
            for splits in (1, 3):
                _check(_launch_all(g, x, w, b, dy, groups, dtype, splits), dtype, g, w)
        finally:
            mod.conv_wgmma(before)
    previous = mod.conv_channels_last(False)
    try:
        assert _channels_last_passes(mod, g, o, groups, dtype) == set()
        _check(_launch_all(g, x, w, b, dy, groups, dtype, 2), dtype, g, w)
    finally:
        mod.conv_channels_last(previous)
    assert mod.conv_channels_last() is previous


def test_channels_last_workspace_is_required_and_sized():
    """A 16-bit pass on the channels-last kernels needs its NHWC copies'
    workspace: without one the binding says how many bytes; float32 and
    the gathered kernels need none unsplit."""
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    g = ops.geometry((2, 16, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1))
    x, w = cp.zeros((2, 16, 5, 5), np.float16), cp.zeros((8, 16, 3, 3), np.float16)
    y = cp.zeros((2, 8, 5, 5), np.float16)
    stream = cp.cuda.get_current_stream().ptr
    size = mod.conv2d_workspace_size("forward", tuple(g), 8, 1, "float16")
    assert size >= 2 * (x.size + w.size)  # x and w, channels-last
    with pytest.raises(ValueError, match=f"conv2d_forward: expected a workspace of {size} bytes"):
        mod.conv2d_forward(y.data.ptr, x.data.ptr, w.data.ptr, 0, tuple(g), 8, 1, "float16", stream)
    with pytest.raises(ValueError, match="conv2d_backward_data: expected a workspace of"):
        mod.conv2d_backward_data(x.data.ptr, y.data.ptr, w.data.ptr, tuple(g), 8, 1, "float16", stream)
    with pytest.raises(ValueError, match="conv2d_backward_weight: expected a workspace of"):
        mod.conv2d_backward_weight(w.data.ptr, 0, 0, y.data.ptr, x.data.ptr, tuple(g), 8, 1, 1, "float16", stream)
    short = cp.empty(size - 1, dtype=np.uint8)  # one byte short: refused before anything is launched
    with pytest.raises(ValueError, match=f"conv2d_forward: expected a workspace of {size} bytes .*received "
                                         f"workspace_bytes={size - 1}"):
        mod.conv2d_forward(y.data.ptr, x.data.ptr, w.data.ptr, 0, tuple(g), 8, 1, "float16", stream,
                           workspace=short.data.ptr, workspace_bytes=short.nbytes)
    assert mod.conv2d_workspace_size("forward", tuple(g), 8, 1, "float32") == 0
    assert mod.conv2d_workspace_size("forward", tuple(g), 8, 1, "float32", 3) >= 3 * y.size * 4
    with pytest.raises(ValueError, match="expected pass forward, backward_data or backward_weight, received fwd"):
        mod.conv2d_workspace_size("fwd", tuple(g), 8, 1, "float16")
    previous = mod.conv_channels_last(False)
    try:
        assert mod.conv2d_workspace_size("forward", tuple(g), 8, 1, "float16") == 0
    finally:
        mod.conv_channels_last(previous)


def test_16_bit_conv_layers_on_tensor_cores_match_the_cpu():
    """Conv2D in float16 (weights and input) on the tensor-core kernels
    against the float32 CPU layer: a layer whose forward splits its
    reduction (K = 1152 over one tile) and a strided one."""
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    assert mod.conv_tensor_cores() is True
    g = ops.geometry((2, 128, 6, 6), (3, 3), (1, 1), (1, 1, 1, 1))
    assert mod.conv2d_forward_splits(tuple(g), 8, 1, "float16") == 4
    rng = np.random.default_rng(8)
    for shape, make in (((2, 128, 6, 6), lambda: lm.Conv2D(128, 8, 3, padding=1)),
                        ((3, 4, 11, 9), lambda: lm.Conv2D(4, 6, 3, stride=2, padding=1))):
        lm.manual_seed(0)
        cpu, gpu = make(), make()
        gpu.load_state_dict(cpu.state_dict())
        gpu.to("cuda", dtype=np.float16)
        x = rng.standard_normal(shape).astype(np.float32)
        y_cpu = cpu(x)
        dy = rng.standard_normal(y_cpu.shape).astype(np.float32)
        dx_cpu = cpu.backward(dy)
        y = gpu(cp.asarray(x, dtype=np.float16))
        dx = gpu.backward(cp.asarray(dy, dtype=np.float16))
        k = cpu.weight.data[0].size
        np.testing.assert_allclose(cp.asnumpy(y).astype(np.float32), y_cpu, rtol=1e-2, atol=2e-3 * np.sqrt(k))
        np.testing.assert_allclose(cp.asnumpy(dx).astype(np.float32), dx_cpu, rtol=1e-2, atol=2e-3 * np.sqrt(k))
        for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
            np.testing.assert_allclose(cp.asnumpy(q.grad).astype(np.float32), p.grad, rtol=1e-2,
                                       atol=2e-3 * np.sqrt(y_cpu.size / y_cpu.shape[1]), err_msg=name)


def test_backward_weight_split_k_is_deterministic():
    import cupy as cp

    from lamina.ops import _ext

    g, x, w, b, dy, groups = _problem(EXTRA[4], 3)
    mod = _ext.cuda_module()
    gx, gdy = cp.asarray(x.astype(np.float32)), cp.asarray(dy.astype(np.float32))
    runs = []
    for _ in range(3):
        dw = cp.empty(w.shape, dtype=np.float32)
        ws = cp.empty(mod.conv2d_workspace_size("backward_weight", tuple(g), w.shape[0], groups, "float32", 40),
                      dtype=np.uint8)
        mod.conv2d_backward_weight(dw.data.ptr, ws.data.ptr, ws.nbytes, gdy.data.ptr, gx.data.ptr, tuple(g), w.shape[0],
                                   groups, 40, "float32", cp.cuda.get_current_stream().ptr)
        runs.append(cp.asnumpy(dw))
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2), dict(groups=2, bias=False)])
def test_conv2d_layer_on_lamina_kernels_matches_the_cpu(kwargs):
    x = np.random.default_rng(0).standard_normal((3, 4, 11, 9)).astype(np.float32)
    check_gpu_kernels_match_cpu(lambda: lm.Conv2D(4, 6, 3, **kwargs), x, grad_atol=1e-4)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, output_padding=1), dict(groups=2, bias=False)])
def test_conv_transpose2d_on_lamina_kernels_matches_the_cpu(kwargs):
    """ConvTranspose2D's forward on the implicit-GEMM backward-data kernel,
    its backward on the forward and backward-weight kernels."""
    x = np.random.default_rng(0).standard_normal((3, 4, 7, 5)).astype(np.float32)
    check_gpu_kernels_match_cpu(lambda: lm.ConvTranspose2D(4, 6, 3, **kwargs), x, grad_atol=1e-4)


def test_forward_split_k_on_a_long_reduction_with_few_tiles():
    """128 input channels of 3x3 (K = 1152) into 8 outputs on 6x6 images:
    one tile, so the forward splits its reduction (fp32 partial sums in a
    workspace, then the bias).  The layer matches the CPU, and the split
    forward is deterministic."""
    import cupy as cp

    from lamina.ops import _ext

    mod = _ext.cuda_module()
    g = ops.geometry((2, 128, 6, 6), (3, 3), (1, 1), (1, 1, 1, 1))
    splits = mod.conv2d_forward_splits(tuple(g), 8, 1)
    assert splits == 4  # ranges of at least 256 of the 1152
    x = np.random.default_rng(5).standard_normal((2, 128, 6, 6)).astype(np.float32)
    check_gpu_kernels_match_cpu(lambda: lm.Conv2D(128, 8, 3, padding=1), x, grad_atol=1e-4)

    w = cp.asarray(np.random.default_rng(6).standard_normal((8, 128, 3, 3)).astype(np.float32))
    gx, b = cp.asarray(x), cp.asarray(np.arange(8, dtype=np.float32))
    runs = []
    for _ in range(3):
        y = cp.full((2, 8, 6, 6), np.nan, dtype=np.float32)
        ws = cp.full(mod.conv2d_workspace_size("forward", tuple(g), 8, 1, "float32", splits), 0xFF, dtype=np.uint8)
        mod.conv2d_forward(y.data.ptr, gx.data.ptr, w.data.ptr, b.data.ptr, tuple(g), 8, 1, "float32",
                           cp.cuda.get_current_stream().ptr, splits, ws.data.ptr, ws.nbytes)
        runs.append(cp.asnumpy(y))
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    with pytest.raises(ValueError, match="conv2d_forward: expected a workspace"):  # split-K without one
        mod.conv2d_forward(y.data.ptr, gx.data.ptr, w.data.ptr, b.data.ptr, tuple(g), 8, 1, "float32",
                           cp.cuda.get_current_stream().ptr, splits, 0)
