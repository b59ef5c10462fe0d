"""Mixed precision: autocast keeps float32 master weights and 16-bit
activations; LossScaler follows torch.amp.GradScaler step for step, skips
exactly the steps with inf/NaN gradients (parameters, moments, step counts
and schedulers untouched); fp16 and bf16 training land within 2 points of
fp32; activation memory halves."""

import numpy as np
import pytest

import lamina as lm
from conftest import requires_cuda

pytestmark = pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")  # CPU 16-bit runs in float32, said once


def test_autocast_computes_in_16_bits_with_float32_master_weights():
    import ml_dtypes

    lm.manual_seed(0)
    model = lm.Sequential(lm.Conv2D(1, 4, 3, padding=1), lm.BatchNorm2d(4), lm.ReLU(), lm.MaxPool2D(2),
                          lm.Flatten(), lm.Dense(16, 3))
    lm.amp.autocast(model, "bfloat16")
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)  # float32 in: cast by the first layer
    y = model(x)
    assert y.dtype == ml_dtypes.bfloat16 and model.compute_dtype == ml_dtypes.bfloat16
    loss_fn = lm.SoftmaxCrossEntropy()
    loss_fn(y, np.array([0, 2]))
    g = loss_fn.backward()
    assert g.dtype == np.float32  # losses reduce in float32
    model.backward(g)
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, name
    assert model[1].running_mean.dtype == np.float32
    lm.amp.autocast(model, None)
    assert model(x).dtype == np.float32
    with pytest.raises(lm.DTypeError, match="expected float16 or bfloat16"):
        lm.amp.autocast(model, "float64")


def test_16_bit_outputs_follow_float32_closely():
    lm.manual_seed(0)
    ref = lm.Sequential(lm.Conv2D(2, 8, 3, padding=1), lm.BatchNorm2d(8), lm.ReLU(), lm.Flatten(), lm.Dense(8 * 25, 5))
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    expected = ref(x)
    for dtype, tol in (("float16", 2e-2), ("bfloat16", 6e-2)):
        lm.amp.autocast(ref, dtype)
        got = ref(x).astype(np.float32)
        lm.amp.autocast(ref, None)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def _torch_and_lamina_scalers(torch, growth_interval):
    return (lm.amp.LossScaler(init_scale=2.0**10, growth_interval=growth_interval),
            torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=growth_interval))


def test_scale_schedule_matches_torch_gradscaler_with_forced_overflows(torch):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(5).astype(np.float32)
    p = lm.Parameter(w0.copy())
    tp = torch.tensor(w0.copy(), requires_grad=True)
    opt = lm.optim.SGD([p], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    scaler, tscaler = _torch_and_lamina_scalers(torch, growth_interval=3)
    overflow_steps = {2, 3, 9, 10, 11, 17}
    for step in range(25):
        g = rng.standard_normal(5).astype(np.float32)
        if step in overflow_steps:
            g[step % 5] = np.inf if step % 2 else np.nan
        opt.zero_grad()
        topt.zero_grad()
        p.grad = scaler.scale(g.copy())  # what backward of a scaled loss would leave
        tscaler.scale((tp * torch.from_numpy(g)).sum()).backward()
        took = scaler.step(opt)
        tscaler.step(topt)
        scaler.update()
        tscaler.update()
        assert took == (step not in overflow_steps)
        assert scaler.get_scale() == tscaler.get_scale(), step
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_injected_overflow_skips_exactly_that_step():
    p = lm.Parameter(np.ones(4, dtype=np.float32))
    opt = lm.optim.Adam([p], lr=0.1)
    sched = lm.optim.StepLR(opt, step_size=1, gamma=0.5)
    scaler = lm.amp.LossScaler(init_scale=8.0)
    history = []
    for step in range(4):
        opt.zero_grad()
        g = np.full(4, 0.5, dtype=np.float32)
        if step == 2:
            g[1] = np.inf
        p.grad = scaler.scale(g)
        before = (p.data.copy(), {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state.get(p, {}).items()})
        took = scaler.step(opt)
        scaler.update()
        sched.step()
        history.append((took, opt.state[p]["step"], opt.param_groups[0]["lr"], scaler.get_scale()))
        if not took:
            np.testing.assert_array_equal(p.data, before[0])
            for k, v in before[1].items():
                np.testing.assert_array_equal(opt.state[p][k], v)
    assert history == [(True, 1, 0.05, 8.0), (True, 2, 0.025, 8.0), (False, 2, 0.025, 4.0), (True, 3, 0.0125, 4.0)]


def test_unscale_before_clipping_and_state_round_trip(tmp_path):
    p = lm.Parameter(np.zeros(3, dtype=np.float32))
    opt = lm.optim.SGD([p], lr=1.0)
    scaler = lm.amp.LossScaler(init_scale=1024.0, growth_interval=2)
    p.grad = scaler.scale(np.array([3.0, 4.0, 0.0], dtype=np.float32))
    scaler.unscale_(opt)
    assert lm.optim.clip_grad_norm_([p], 1.0) == pytest.approx(5.0)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(opt)
    scaler.step(opt)  # no second unscale
    scaler.update()
    np.testing.assert_allclose(p.data, [-0.6, -0.8, 0.0], rtol=1e-5)
    model = lm.Sequential(lm.Dense(2, 2))
    lm.save_checkpoint(tmp_path / "c.safetensors", model, scaler=scaler)
    other = lm.amp.LossScaler()
    lm.load_checkpoint(tmp_path / "c.safetensors", model, scaler=other)
    assert other.state_dict() == scaler.state_dict() and other.get_scale() == 1024.0
    off = lm.amp.LossScaler(enabled=False)
    g = np.ones(2, dtype=np.float32)
    assert off.scale(g) is g and off.get_scale() == 1.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_training_on_mnist1d_lands_within_2_points(dtype, mnist1d):
    x_train, y_train, x_test, y_test = mnist1d
    accuracy = {}
    for mode in (None, dtype):
        lm.manual_seed(0)
        model = lm.models.mlp(40, (256, 256), 10)
        if mode:
            lm.amp.autocast(model, mode)
        opt = lm.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        scaler = lm.amp.LossScaler(enabled=mode == "float16")  # bfloat16 runs without one
        loss_fn = lm.SoftmaxCrossEntropy()
        loader = lm.data.DataLoader(x_train, y_train, batch_size=100, shuffle=True, seed=0)
        for _ in range(20):
            for xb, yb in loader:
                loss_fn(model(xb), yb)
                opt.zero_grad()
                model.backward(scaler.scale(loss_fn.backward()))
                scaler.step(opt)
                scaler.update()
        accuracy[mode] = lm.train.evaluate(model, loss_fn, x_test, y_test)[1]
    assert accuracy[None] >= 0.6
    assert abs(accuracy[dtype] - accuracy[None]) <= 0.02, accuracy


def test_fp16_activation_memory_is_about_half():
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    y = np.arange(16) % 10
    peaks = {}
    for dtype in (None, "float16"):
        lm.manual_seed(0)
        model = lm.models.resnet(3, 10, blocks_per_stage=1)
        if dtype:
            lm.amp.autocast(model, dtype)
        loss_fn = lm.SoftmaxCrossEntropy()
        with lm.memory.track() as m:
            loss_fn(model(x.astype(np.float16) if dtype else x), y)
            model.backward(loss_fn.backward())
        peaks[dtype] = m.peak_bytes
    assert peaks["float16"] / peaks[None] <= 0.55, peaks


def test_cupy_bfloat16_probe_says_why_not_without_cupy():
    ok, why = lm.backend.cupy_bfloat16()
    if lm.backend.cupy_module() is not None:
        pytest.skip("CuPy is present: the GPU tests below use the probe")
    assert not ok and "CuPy is not available" in why


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kernels", ["cupy", "lamina"])
def test_mixed_precision_on_the_gpu_tracks_the_cpu(dtype, kernels):
    """The same model and batch under autocast on CuPy and on NumPy: loss and
    float32 master gradients agree to 16-bit accuracy, on cuBLAS/cuDNN and on
    lamina's kernels (the tensor-core GEMM and implicit-GEMM convolutions)."""
    if dtype == "bfloat16" and not lm.backend.cupy_bfloat16()[0]:
        pytest.skip(lm.backend.cupy_bfloat16()[1])
    import cupy as cp

    lm.manual_seed(0)
    # (no bias on the convolution: BatchNorm's mean removes it, so its gradient is rounding noise around 0)
    cpu = lm.Sequential(lm.Conv2D(3, 8, 3, padding=1, bias=False), lm.BatchNorm2d(8), lm.ReLU(), lm.MaxPool2D(2),
                        lm.Flatten(), lm.Dense(8 * 4 * 4, 32, activation="gelu"), lm.Dense(32, 5))
    gpu = lm.Sequential(lm.Conv2D(3, 8, 3, padding=1, bias=False), lm.BatchNorm2d(8), lm.ReLU(), lm.MaxPool2D(2),
                        lm.Flatten(), lm.Dense(8 * 4 * 4, 32, activation="gelu"), lm.Dense(32, 5))
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, 6)
    results = []
    previous = lm.backend.use_kernels(kernels)
    try:
        for model, xp in ((cpu, np), (gpu, cp)):
            lm.amp.autocast(model, dtype)
            loss_fn = lm.SoftmaxCrossEntropy()
            loss = loss_fn(model(xp.asarray(x)), xp.asarray(y))
            model.backward(loss_fn.backward())
            results.append((loss, {n: lm.backend.to_device(p.grad, "cpu") for n, p in model.named_parameters()}))
    finally:
        lm.backend.use_kernels(previous)
    (loss_cpu, g_cpu), (loss_gpu, g_gpu) = results
    tol = 3e-2 if dtype == "float16" else 1e-1
    assert abs(loss_cpu - loss_gpu) <= tol * abs(loss_cpu)
    for name in g_cpu:
        scale = np.abs(g_cpu[name]).max() + 1e-6
        np.testing.assert_allclose(g_gpu[name] / scale, g_cpu[name] / scale, atol=tol, err_msg=name)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("bad", [None, (0, 0), (38, 1024), (59, -1)], ids=str)
def test_loss_scaler_on_the_gpu_unscales_in_one_launch_and_finds_inf(bad):
    """On CuPy the unscale is one multi-tensor launch per 48 gradients and
    one read of a device flag: 60 float32 and float64 gradients come out
    exactly as on the CPU, and an inf anywhere skips the step on both."""
    import cupy as cp

    rng = np.random.default_rng(2)
    shapes = [(1,), (1023,), (1025,), (33, 7)] * 15
    dtypes = [np.float64 if i % 9 == 0 else np.float32 for i in range(len(shapes))]
    grads = [rng.standard_normal(s).astype(d) * 1e3 for s, d in zip(shapes, dtypes)]
    if bad is not None:
        grads[bad[0]].reshape(-1)[bad[1]] = np.inf
    results = []
    for xp in (np, cp):
        params = [lm.Parameter(xp.ones(s, dtype=d)) for s, d in zip(shapes, dtypes)]
        opt = lm.optim.SGD(params, lr=1.0)
        scaler = lm.amp.LossScaler(init_scale=1024.0)
        for p, g in zip(params, grads):
            p.grad = xp.asarray(g.copy())  # the CPU unscales in place: each backend its own copy
        scaler.unscale_(opt)
        took = scaler.step(opt)
        results.append((took, [lm.backend.to_device(p.grad, "cpu") for p in params]))
    (took_cpu, g_cpu), (took_gpu, g_gpu) = results
    assert took_cpu == took_gpu == (bad is None)
    for a, b in zip(g_gpu, g_cpu):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
@requires_cuda
def test_autocast_bfloat16_on_a_gpu_without_bfloat16_cupy_says_so():
    if lm.backend.cupy_bfloat16()[0]:
        pytest.skip("this CuPy computes on bfloat16 arrays")
    model = lm.Sequential(lm.Dense(4, 2)).to("cuda")
    with pytest.raises(lm.DTypeError, match="bfloat16 on the GPU needs bfloat16 CuPy arrays"):
        lm.amp.autocast(model, "bfloat16")
    assert model.compute_dtype == np.float32  # unchanged
