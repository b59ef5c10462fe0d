"""lamina._C_cuda: built and importable wherever nvcc is (CI included), and,
on a machine with a GPU, each kernel against a float64 reference."""

import shutil

import numpy as np
import pytest
from conftest import requires_cuda

import lamina as lm
from lamina import backend, ops
from lamina.ops import _ext

G = _ext.cuda_module()
SIZES = [1, 255, 256, 257, 1021, 65536, 65537, 1_000_003]


def test_cuda_module_is_built_where_nvcc_is():
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: lamina built without its CUDA module")
    assert G is not None, f"nvcc is present but lamina._C_cuda did not import: {_ext.import_error('_C_cuda')}"
    assert "sm_80" in G.archs and "sm_90" in G.archs and "sm_90a" in G.archs  # sm_90a: the wgmma GEMM
    assert {"relu_forward", "relu_backward", "gelu_forward", "gelu_backward", "gemm", "softmax_xent"} <= set(G.kernels)
    assert G.runtime_version() >= 11000


def test_cuda_module_reports_no_device_without_one():
    if G is None:
        pytest.skip("lamina._C_cuda not built")
    if backend.cuda_device_count() > 0:
        pytest.skip("a GPU is present")
    assert G.device_count() == 0
    assert not lm.cuda_available()


# ---------------------------------------------------------------------------
# on a GPU
# ---------------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16"]


def _poisoned(cp, n, dtype):
    return cp.full(n, cp.nan, dtype=dtype)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_relu_kernels_match_reference(dtype, n):
    cp = backend.cupy_module()
    rng = np.random.default_rng(n)
    x64 = rng.standard_normal(n)
    dy64 = rng.standard_normal(n)
    x, dy = cp.asarray(x64.astype(dtype)), cp.asarray(dy64.astype(dtype))
    y, dx = _poisoned(cp, n, dtype), _poisoned(cp, n, dtype)
    stream = cp.cuda.get_current_stream().ptr
    G.relu_forward(y.data.ptr, x.data.ptr, n, dtype, stream)
    G.relu_backward(dx.data.ptr, dy.data.ptr, y.data.ptr, n, dtype, stream)
    xs = x.get().astype(np.float64)  # the exact inputs the kernel saw
    np.testing.assert_array_equal(y.get().astype(np.float64), np.maximum(xs, 0))
    np.testing.assert_array_equal(dx.get().astype(np.float64), np.where(xs > 0, dy.get().astype(np.float64), 0))


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_gelu_kernels_match_reference(approximate, dtype, n):
    from lamina.ops import reference

    cp = backend.cupy_module()
    rng = np.random.default_rng(n + 1)
    x = cp.asarray((rng.standard_normal(n) * 3).astype(dtype))
    dy = cp.asarray(rng.standard_normal(n).astype(dtype))
    y, dx = _poisoned(cp, n, dtype), _poisoned(cp, n, dtype)
    stream = cp.cuda.get_current_stream().ptr
    G.gelu_forward(y.data.ptr, x.data.ptr, n, approximate == "tanh", dtype, stream)
    G.gelu_backward(dx.data.ptr, dy.data.ptr, x.data.ptr, n, approximate == "tanh", dtype, stream)
    x64, dy64 = x.get().astype(np.float64), dy.get().astype(np.float64)
    tol = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-2}[dtype]
    np.testing.assert_allclose(y.get().astype(np.float64), reference.gelu_forward(np, x64, approximate), rtol=tol, atol=tol)
    np.testing.assert_allclose(
        dx.get().astype(np.float64), reference.gelu_backward(np, dy64, x64, approximate), rtol=tol, atol=tol
    )


@requires_cuda
@pytest.mark.gpu
def test_relu_layer_runs_lamina_kernel_on_cupy(monkeypatch):
    cp = backend.cupy_module()
    calls = []
    real = G.relu_forward
    monkeypatch.setattr(G, "relu_forward", lambda *a: (calls.append(a), real(*a))[1])
    x = cp.asarray(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    y = lm.ReLU()(x)
    assert calls and isinstance(y, cp.ndarray)
    np.testing.assert_array_equal(y.get(), np.maximum(x.get(), 0))


@requires_cuda
@pytest.mark.gpu
def test_whole_model_gpu_matches_cpu():
    cp = backend.cupy_module()
    lm.manual_seed(0)
    cpu = lm.Sequential(lm.Dense(40, 64), lm.ReLU(), lm.Dense(64, 32), lm.GELU(), lm.Dense(32, 10))
    gpu = lm.Sequential(lm.Dense(40, 64), lm.ReLU(), lm.Dense(64, 32), lm.GELU(), lm.Dense(32, 10))
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((17, 40)).astype(np.float32)
    y = rng.integers(0, 10, 17)
    fn_c, fn_g = lm.SoftmaxCrossEntropy(), lm.SoftmaxCrossEntropy()
    loss_c = fn_c(cpu(x), y)
    loss_g = fn_g(gpu(cp.asarray(x)), cp.asarray(y))
    cpu.backward(fn_c.backward())
    dx = gpu.backward(fn_g.backward())
    assert isinstance(dx, cp.ndarray)
    np.testing.assert_allclose(loss_g, loss_c, rtol=1e-5)
    for (n, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_allclose(q.grad.get(), p.grad, rtol=1e-4, atol=1e-6, err_msg=n)


@requires_cuda
@pytest.mark.gpu
def test_mixing_devices_is_a_device_error_naming_the_layer():
    cp = backend.cupy_module()
    layer = lm.Dense(3, 2)
    with pytest.raises(lm.DeviceError, match=r"Dense\(in_features=3.*expected input on cpu.*received it on cuda:0"):
        layer(cp.ones((2, 3), dtype=cp.float32))
    relu = lm.ReLU()
    relu(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(lm.DeviceError, match=r"ReLU\(\).*output gradient on cpu"):
        relu.backward(cp.ones((2, 3), dtype=cp.float32))
    fn = lm.SoftmaxCrossEntropy()
    with pytest.raises(lm.DeviceError, match="SoftmaxCrossEntropy"):
        fn(cp.ones((2, 3), dtype=cp.float32), np.zeros(2, dtype=np.int64))


@requires_cuda
@pytest.mark.gpu
def test_gpu_dropout_is_seeded_and_replayable():
    cp = backend.cupy_module()
    x = cp.ones((256, 256), dtype=cp.float32)
    lm.manual_seed(3)
    a = lm.Dropout(0.3)(x).get()
    lm.manual_seed(3)
    state = lm.get_rng_state()
    b = lm.Dropout(0.3)(x).get()
    lm.set_rng_state(state)
    c = lm.Dropout(0.3)(x).get()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, c)
    assert abs((a != 0).mean() - 0.7) < 0.01


@requires_cuda
@pytest.mark.gpu
def test_relu_kernel_via_ops_has_no_fallback_warning():
    import warnings

    cp = backend.cupy_module()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.relu_backward(cp.ones(10, dtype=cp.float32), ops.relu_forward(cp.ones(10, dtype=cp.float32)))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(1, 1), (1, 5), (3, 31), (7, 32), (5, 33), (64, 10), (33, 1000), (2, 4099)])
def test_softmax_xent_kernel_matches_float64(n, c, dtype):
    import cupy as cp

    rng = np.random.default_rng(n * 7 + c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, n).astype(np.int64)
    gx, gy = cp.asarray(x), cp.asarray(y)
    loss = cp.full(n, cp.nan, dtype=dtype)  # poisoned
    grad = cp.full((n, c), cp.nan, dtype=dtype)
    G.softmax_xent(loss.data.ptr, grad.data.ptr, gx.data.ptr, gy.data.ptr, n, c, 0.1, 1.0 / n, dtype,
                   cp.cuda.get_current_stream().ptr)
    rloss, rgrad = ops.reference.softmax_xent(np, x.astype(np.float64), y, 0.1, 1.0 / n, True)
    tol = {"float64": 1e-12, "float32": 2e-5, "float16": 5e-3}[dtype]
    np.testing.assert_allclose(cp.asnumpy(loss).astype(np.float64), rloss, rtol=tol, atol=tol)
    np.testing.assert_allclose(cp.asnumpy(grad).astype(np.float64), rgrad, rtol=tol, atol=tol)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("opt_name,cfg", [("SGD", dict(lr=1e-2, momentum=0.9)), ("Adam", dict(lr=1e-2, capturable=True)),
                                          ("AdamW", dict(lr=1e-2, capturable=True)), ("Adam", dict(lr=1e-2))])
def test_a_whole_training_step_captures_into_a_cuda_graph(kind, opt_name, cfg):
    """forward, Loss.compute, zero_grad, backward and the multi-tensor update
    wait for nothing on the host, so CuPy can capture the step into a CUDA
    graph. Five replays move the parameters, Adam's moments and step counts
    (capturable) and BatchNorm's statistics as five eager steps of a twin
    model do.  Adam without capturable refuses to be captured: its bias
    corrections would come from a step count on the host."""
    import cupy as cp

    lm.manual_seed(0)
    if kind == "mlp":
        make = lambda: lm.Sequential(lm.Dense(20, 32, activation="relu"), lm.Dense(32, 32), lm.ReLU(), lm.Dense(32, 5))
        shape = (16, 20)
    else:
        make = lambda: lm.Sequential(lm.Conv2D(3, 8, 3, padding=1), lm.BatchNorm2d(8), lm.ReLU(), lm.MaxPool2D(2),
                                     lm.Flatten(), lm.Dense(8 * 4 * 4, 5))
        shape = (6, 3, 8, 8)
    graphed, eager = make().to("cuda"), make().to("cuda")
    eager.load_state_dict(graphed.state_dict())
    rng = np.random.default_rng(0)
    x, y = cp.asarray(rng.standard_normal(shape).astype(np.float32)), cp.asarray(rng.integers(0, 5, shape[0]))
    loss_fn = lm.SoftmaxCrossEntropy()
    opts = {id(m): getattr(lm.optim, opt_name)(m.parameters(), **cfg) for m in (graphed, eager)}

    def step(model):
        loss = loss_fn.compute(model(x), y)
        opts[id(model)].zero_grad()
        model.backward_parameters(loss_fn.backward())
        opts[id(model)].step()
        return loss

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        for _ in range(2):  # warm up: the pool holds every block the step asks for, the optimizer state exists
            step(graphed)
        stream.synchronize()
        stream.begin_capture()
        if opt_name.startswith("Adam") and not cfg.get("capturable"):
            with pytest.raises(RuntimeError, match=r"Adam.step: called while a CUDA graph is being captured"):
                step(graphed)
            stream.end_capture()
            return
        graph_loss = step(graphed)
        graph = stream.end_capture()
        for _ in range(5):
            graph.launch(stream)
        stream.synchronize()
    for _ in range(2 + 5):
        eager_loss = step(eager)
    assert abs(float(graph_loss) - float(eager_loss)) <= 1e-5 * max(1.0, abs(float(eager_loss)))
    for (name, a), b in zip(graphed.state_dict().items(), eager.state_dict().values()):
        np.testing.assert_allclose(backend.to_device(a, "cpu"), backend.to_device(b, "cpu"), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    if opt_name.startswith("Adam"):
        for p in graphed.parameters():
            assert float(opts[id(graphed)].state[p]["step"]) == 7
        for p, q in zip(graphed.parameters(), eager.parameters()):
            np.testing.assert_allclose(backend.to_device(opts[id(graphed)].state[p]["exp_avg_sq"], "cpu"),
                                       backend.to_device(opts[id(eager)].state[q]["exp_avg_sq"], "cpu"), rtol=1e-5,
                                       atol=1e-9)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1, 2), (2, 3, 1), (7, 5, 1), (4, 3, 13), pytest.param((128, 16, 1024), id="big-resnet"),
                                   (3, 70, 7), (2, 1, 5000)])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_kernels_match_the_cpu(shape, dtype, affine):
    """csrc/cuda/batchnorm.cu through ops.batchnorm_forward/backward: batch
    statistics with the running ones updated, running statistics, no xhat,
    both backwards; against the CPU kernels, on odd shapes, a large mean,
    and outputs that start as NaN (poisoned by the allocator's reuse)."""
    import cupy as cp

    rng = np.random.default_rng(sum(shape))
    n, c, l = shape
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    dy = rng.standard_normal(shape).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)
    outs = {}
    for xp in (np, cp):
        cp.full(4 * x.size, cp.nan, dtype=dtype)  # freed at once: the pool hands NaNs to what comes next
        dev = lambda a: None if a is None else xp.asarray(a)  # noqa: E731
        rm, rv = xp.zeros(c, dtype=dtype), xp.ones(c, dtype=dtype)
        y, xhat, inv_std = ops.batchnorm_forward(dev(x), dev(gamma), dev(beta), 1e-5, running=(rm, rv, 0.25))
        y_eval, none, inv_eval = ops.batchnorm_forward(dev(x), dev(gamma), dev(beta), 1e-5, batch_stats=False,
                                                       running=(rm, rv), need_xhat=False)
        assert none is None
        grads = [ops.batchnorm_backward(dev(dy), xhat, inv_std, dev(gamma), bs) for bs in (True, False)]
        outs[xp] = [backend.to_device(a, "cpu") for a in (y, xhat, inv_std, rm, rv, y_eval, inv_eval, *grads[0], *grads[1])]
    names = "y xhat inv_std running_mean running_var y_eval inv_std_eval dx dgamma dbeta dx_eval dgamma_eval dbeta_eval"
    for name, a, b in zip(names.split(), outs[cp], outs[np]):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a / scale, b / scale, err_msg=name, **tol)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("case", [((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
                                  ((3, 5, 13, 11), (3, 3), (2, 1), (1, 1, 1, 1), (1, 2)),
                                  pytest.param(((64, 32, 28, 28), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)), id="big-lenet")],
                         ids=str)
@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")  # the CPU side computes float16 in float32
def test_maxpool_kernels_match_the_cpu(case, dtype):
    """csrc/cuda/pool.cu through ops.maxpool2d_forward/backward against the
    CPU kernels: ties, NaNs and overlapping windows give the same indices,
    values and gradients."""
    import cupy as cp

    shape, kernel, stride, padding, dilation = case
    g = ops.geometry(shape, kernel, stride, padding, dilation)
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, shape).astype(dtype)
    x.reshape(-1)[::11] = np.nan
    dy = rng.standard_normal((g.n, g.c, g.oh, g.ow)).astype(dtype)
    y_c, idx_c = ops.maxpool2d_forward(x, g)
    dx_c = ops.maxpool2d_backward(dy, idx_c, g)
    y_g, idx_g = ops.maxpool2d_forward(cp.asarray(x), g)
    dx_g = ops.maxpool2d_backward(cp.asarray(dy), idx_g, g)
    np.testing.assert_array_equal(cp.asnumpy(idx_g), idx_c)
    np.testing.assert_array_equal(cp.asnumpy(y_g), y_c)
    np.testing.assert_allclose(cp.asnumpy(dx_g).astype(np.float64), dx_c.astype(np.float64),
                               rtol=1e-2 if dtype == "float16" else 1e-6)


@requires_cuda
@pytest.mark.gpu
def test_dropout_refuses_to_be_captured_into_a_cuda_graph():
    """The GPU generator's offset comes from the host: a captured mask would
    repeat on every replay, so a draw during a capture raises."""
    import cupy as cp

    drop = lm.Dropout(0.5).to("cuda")
    x = cp.ones((4, 8), dtype=cp.float32)
    drop(x)  # eagerly: fine
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="while a CUDA graph is being captured"):
            drop(x)
        stream.end_capture()


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 33), pytest.param((32, 4, 128, 128), id="big-attention"), (7, 1000)],
                         ids=str)
def test_softmax_kernels_match_the_cpu(shape, dtype):
    """csrc/cuda/rowwise.cu's softmax with attention's scale, and a masked
    score, against the CPU kernels."""
    import cupy as cp

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.reshape(-1, shape[-1])[0, 0] = -np.inf
    dy = rng.standard_normal(shape).astype(dtype)
    scale = 0.125
    y_c = ops.softmax_forward(x, scale)
    y_g = ops.softmax_forward(cp.asarray(x), scale)
    tol = 2e-3 if dtype == "float16" else (1e-6 if dtype == "float32" else 1e-13)
    np.testing.assert_allclose(cp.asnumpy(y_g).astype(np.float64), y_c.astype(np.float64), rtol=tol, atol=tol)
    dx_c = ops.softmax_backward(dy, y_c, scale)
    dx_g = ops.softmax_backward(cp.asarray(dy), cp.asarray(y_c), scale)
    np.testing.assert_allclose(cp.asnumpy(dx_g).astype(np.float64), dx_c.astype(np.float64), rtol=tol, atol=tol)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 31), pytest.param((4096, 256), id="big-4096x256"),
                                   pytest.param((1024, 4096), id="big-1024x4096"), (300, 5)], ids=str)
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_kernels_match_the_cpu(shape, dtype, affine):
    """csrc/cuda/rowwise.cu's layer norm, forward and backward with the
    parameter gradients summed over row chunks, against the CPU kernels."""
    import cupy as cp

    rng = np.random.default_rng(2)
    rows, d = shape
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.uniform(0.5, 1.5, d).astype(dtype) if affine else None
    b = rng.standard_normal(d).astype(dtype) if affine else None
    dy = rng.standard_normal(shape).astype(dtype)
    dev = lambda a: None if a is None else cp.asarray(a)  # noqa: E731
    cpu = ops.layernorm_forward(x, w, b, 1e-5)
    gpu = ops.layernorm_forward(dev(x), dev(w), dev(b), 1e-5)
    cpu += ops.layernorm_backward(dy, cpu[1], cpu[2], w)
    gpu += ops.layernorm_backward(dev(dy), gpu[1], gpu[2], dev(w))
    tol = 1e-4 if dtype == "float32" else 1e-10
    for name, a, c in zip("y xhat rstd dx dweight dbias".split(), gpu, cpu):
        scale = max(1.0, float(np.abs(c).max()))
        np.testing.assert_allclose(cp.asnumpy(a) / scale, c / scale, atol=tol, err_msg=name)


@requires_cuda
@pytest.mark.gpu
def test_workspaces_shorter_than_the_kernels_need_are_refused():
    """The raw bindings that take a workspace take its size too, and refuse
    a missing or short one with both sizes named, before anything is
    launched (a kernel would write past its end); the outputs stay as they
    were.  The convolutions' own check is in test_cuda_conv.py."""
    import cupy as cp

    stream = cp.cuda.get_current_stream().ptr
    n, c, l = 4, 3, 5
    slices = G.batchnorm_slices(n, c, l)
    x = cp.ones((n, c, l), np.float32)
    y = cp.full_like(x, 7.0)
    inv_std, dgamma, dbeta = (cp.empty(c, np.float32) for _ in range(3))
    short = cp.empty(3 * c * slices - 1, np.float64)
    with pytest.raises(ValueError, match=f"batchnorm_forward: expected a workspace of {24 * c * slices} bytes .*"
                                         f"received workspace_bytes={short.nbytes}"):
        G.batchnorm_forward(y.data.ptr, 0, 0, 0, inv_std.data.ptr, 0, 0, short.data.ptr, x.data.ptr, 0, 0, n, c, l,
                            1e-5, True, -1.0, "float32", stream, workspace_bytes=short.nbytes)
    with pytest.raises(ValueError, match="batchnorm_forward: expected a workspace of .* received none"):
        G.batchnorm_forward(y.data.ptr, 0, 0, 0, inv_std.data.ptr, 0, 0, 0, x.data.ptr, 0, 0, n, c, l,
                            1e-5, True, -1.0, "float32", stream)
    with pytest.raises(ValueError, match=f"batchnorm_backward: expected a workspace of {16 * c * slices} bytes"):
        G.batchnorm_backward(y.data.ptr, dgamma.data.ptr, dbeta.data.ptr, short.data.ptr, x.data.ptr, x.data.ptr, 0,
                             inv_std.data.ptr, n, c, l, True, "float32", stream,
                             workspace_bytes=16 * c * slices - 8)
    assert bool((y == 7.0).all())  # nothing ran

    rows, d = 6, 5
    chunks = G.layernorm_row_chunks(rows, d)
    a = cp.ones((rows, d), np.float32)
    dw, db, rstd = cp.empty(d, np.float32), cp.empty(d, np.float32), cp.ones(rows, np.float32)
    ws = cp.empty(2 * d * chunks, np.float64)
    with pytest.raises(ValueError, match=f"layernorm_backward: expected a workspace of {ws.nbytes} bytes"):
        G.layernorm_backward(a.data.ptr, dw.data.ptr, db.data.ptr, ws.data.ptr, a.data.ptr, a.data.ptr,
                             rstd.data.ptr, 0, rows, d, "float32", stream, workspace_bytes=ws.nbytes - 8)
    dx = cp.empty_like(a)
    G.layernorm_backward(dx.data.ptr, dw.data.ptr, db.data.ptr, ws.data.ptr, a.data.ptr, a.data.ptr, rstd.data.ptr,
                         0, rows, d, "float32", stream, workspace_bytes=ws.nbytes)  # the exact size is enough
    # dy = xhat = 1: dweight = sum of dy * xhat and dbias = sum of dy over the rows
    np.testing.assert_array_equal(cp.asnumpy(dw), np.full(d, rows, np.float32))
    np.testing.assert_array_equal(cp.asnumpy(db), np.full(d, rows, np.float32))
    G.layernorm_backward(dx.data.ptr, 0, 0, 0, a.data.ptr, a.data.ptr, rstd.data.ptr, 0, rows, d, "float32",
                         stream)  # dx alone needs none

    m, k, splits = 8, 64, 2
    b, out = cp.ones((k, m), np.float32), cp.empty((m, m), np.float32)
    ws = cp.empty(splits * m * m, np.float32)
    with pytest.raises(ValueError, match=f"gemm: expected a workspace of {ws.nbytes} bytes"):
        G.gemm(out.data.ptr, 0, b.data.ptr, b.data.ptr, 0, m, m, k, m, m, m, True, False, "none", "float32",
               "float32", stream, splits, workspace=ws.data.ptr, workspace_bytes=ws.nbytes - 4)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_fused_dropout_draws_the_same_mask_as_the_generator(dtype):
    """Dropout on CuPy runs one fused launch; its mask and output equal the
    composed ones (uniform_like >= p, scaled, times x, each rounded to the
    dtype) drawn from the same generator state."""
    import cupy as cp

    x = cp.asarray(np.random.default_rng(0).standard_normal((33, 257)).astype(dtype))
    drop = lm.Dropout(0.3).to("cuda")
    lm.manual_seed(5)
    y = drop(x)
    lm.manual_seed(5)
    keep = lm.random.uniform_like(x) >= 0.3
    expected = keep.astype(x.dtype) * x.dtype.type(1 / 0.7)
    np.testing.assert_array_equal(cp.asnumpy(y), cp.asnumpy(x * expected))
    np.testing.assert_array_equal(cp.asnumpy(drop.backward(cp.ones_like(x))), cp.asnumpy(expected))
