"""lamina._C kernels against the NumPy references: random data, odd and
large sizes (above the OpenMP threshold), both dtypes, poisoned outputs."""

import os
import subprocess
import sys

import numpy as np
import pytest

from lamina import ops
from lamina.ops import _ext, reference

C = _ext.cpu_module()
pytestmark = pytest.mark.skipif(C is None, reason=f"lamina._C not built ({_ext.import_error('_C')})")

SIZES = [1, 2, 7, 255, 256, 257, 4099, (1 << 15) + 3]


@pytest.fixture(params=["avx2", "baseline"])
def isa(request):
    """Each float32 elementwise kernel has two builds: AVX2 + FMA, used where the
    CPU has both, and the baseline (SSE2) one; every test runs on each."""
    if request.param == "avx2" and not C.cpu_has_avx2_fma():
        pytest.skip("this CPU lacks AVX2 or FMA")
    previous = C.set_avx2(request.param == "avx2")
    yield request.param
    C.set_avx2(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("n", SIZES)
def test_gelu_kernels_match_reference(dtype, approximate, n, isa):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    y = np.full(n, np.nan, dtype=dtype)  # poisoned: every element must be written
    dx = np.full(n, np.nan, dtype=dtype)
    C.gelu_forward(y.ctypes.data, x.ctypes.data, n, approximate == "tanh", np.dtype(dtype).name)
    C.gelu_backward(dx.ctypes.data, dy.ctypes.data, x.ctypes.data, n, approximate == "tanh", np.dtype(dtype).name)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-13  # float32: 1 + tanh(u) cancels for u << 0
    np.testing.assert_allclose(y, reference.gelu_forward(np, x64, approximate), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, reference.gelu_backward(np, dy64, x64, approximate), rtol=tol, atol=tol)


def test_gelu_dispatch_handles_non_contiguous_input():
    base = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    view = base[:, ::3]
    np.testing.assert_allclose(ops.gelu_forward(view), reference.gelu_forward(np, view, "none"), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(
        ops.gelu_backward(view, view.T.copy().T), reference.gelu_backward(np, view, view, "none"), rtol=2e-6, atol=2e-6
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c", [(1, 1), (1, 5), (3, 2), (17, 10), (64, 1001), (257, 3)])
def test_softmax_xent_kernel_writes_every_output(dtype, n, c):
    rng = np.random.default_rng(n + c)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    y = rng.integers(0, c, size=n).astype(np.int64)
    loss = np.full(n, np.nan, dtype=dtype)
    grad = np.full((n, c), np.nan, dtype=dtype)
    C.softmax_xent(loss.ctypes.data, grad.ctypes.data, x.ctypes.data, y.ctypes.data, n, c, 0.05, 1.0 / n, np.dtype(dtype).name)
    rloss, rgrad = reference.softmax_xent(np, x.astype(np.float64), y, 0.05, 1.0 / n, True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, rloss, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, rgrad, rtol=tol, atol=tol)


def test_kernels_reject_unknown_dtypes():
    with pytest.raises(ValueError, match="expected dtype float32 or float64, received float16"):
        C.gelu_forward(0, 0, 0, False, "float16")


def test_data_ptr_is_the_address_ctypes_gives():
    import ml_dtypes

    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    frozen = base.copy()
    frozen.flags.writeable = False
    arrays = [base, base[1:, 2:], base[:, ::-2], base.T, frozen, np.empty((0, 3)), base.astype(ml_dtypes.bfloat16)]
    for a in arrays:
        assert C.data_ptr(a) == a.ctypes.data
        assert ops._addr(a) == a.ctypes.data
    with pytest.raises(TypeError, match="expected a numpy.ndarray"):
        C.data_ptr([1.0, 2.0])


def test_float16_on_cpu_warns_once_and_computes_in_float32():
    import warnings

    from lamina.errors import PerformanceWarning, _warned

    _warned.discard("cpu low precision")
    x = np.linspace(-3, 3, 11).astype(np.float16)
    with pytest.warns(PerformanceWarning, match="computes float16 arrays on the CPU in float32"):
        y = ops.gelu_forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.gelu_forward(x)  # second call: silent
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, reference.gelu_forward(np, x.astype(np.float64), "none"), rtol=2e-3, atol=2e-3)


def test_openmp_is_on():
    assert C.openmp and C.num_threads() >= 1


ROWS_D = [(1, 1), (1, 7), (3, 8), (5, 33), (2, 1000), (300, 128), (37, 4099)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,d", ROWS_D)
@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_softmax_kernels_match_reference(dtype, rows, d, scale, isa):
    rng = np.random.default_rng(rows * d)
    x = (rng.standard_normal((rows, d)) * 4).astype(dtype)
    dy = rng.standard_normal((rows, d)).astype(dtype)
    y = np.full_like(x, np.nan)  # poisoned
    dx = np.full_like(x, np.nan)
    C.softmax_forward(y.ctypes.data, x.ctypes.data, rows, d, scale, np.dtype(dtype).name)
    C.softmax_backward(dx.ctypes.data, dy.ctypes.data, y.ctypes.data, rows, d, scale, np.dtype(dtype).name)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y64 = reference.softmax_forward(np, x64, scale)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, y64, rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=tol * 10)
    np.testing.assert_allclose(dx, reference.softmax_backward(np, dy64, y.astype(np.float64), scale), rtol=tol * 50,
                               atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_kernel_masks_nans_and_extremes_like_pytorch(dtype, isa):
    """-inf (a causal mask) gives exactly 0; a row with a NaN, or of -inf only,
    gives NaN; +-1e30 logits stay finite."""
    torch = pytest.importorskip("torch")
    inf = np.inf
    x = np.array([[0.0, -inf, 1.0, -inf], [-inf, -inf, -inf, -inf], [0.0, np.nan, 1.0, 2.0], [1e30, -1e30, 0.0, 1e30],
                  [-1e4, 1e4, -1e4, 0.0]], dtype=dtype)
    y = ops.softmax_forward(x, 0.5)
    expected = torch.softmax(torch.from_numpy(x) * 0.5, dim=-1).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=0)  # allclose treats NaN == NaN
    assert y[0, 1] == 0.0 and y[0, 3] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,d", ROWS_D[1:])
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_layernorm_kernels_match_reference(dtype, rows, d, affine, isa):
    rng = np.random.default_rng(rows + d)
    x = (rng.standard_normal((rows, d)) * 3 + 5).astype(dtype)  # an offset mean: the variance must not cancel
    dy = rng.standard_normal((rows, d)).astype(dtype)
    w = rng.standard_normal(d).astype(dtype) if affine != "none" else None
    b = rng.standard_normal(d).astype(dtype) if affine == "weight+bias" else None
    y, xhat, rstd = ops.layernorm_forward(x, w, b, 1e-5)
    dx, dw, db = ops.layernorm_backward(dy, xhat, rstd, w, need_params=True)
    as64 = [None if a is None else a.astype(np.float64) for a in (x, dy, w, b)]
    y64, xhat64, rstd64 = reference.layernorm_forward(np, as64[0], as64[2], as64[3], 1e-5)
    dx64, dw64, db64 = reference.layernorm_backward(np, as64[1], xhat64, rstd64, as64[2], True)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for got, ref in ((y, y64), (xhat, xhat64), (rstd, rstd64), (dx, dx64)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    # the column sums add `rows` terms of size ~1
    np.testing.assert_allclose(dw, dw64, rtol=tol, atol=tol * rows)
    np.testing.assert_allclose(db, db64, rtol=tol, atol=tol * rows)
    dx2, dw2, db2 = ops.layernorm_backward(dy, xhat, rstd, w, need_params=False)
    assert dw2 is None and db2 is None
    np.testing.assert_array_equal(dx2, dx)


def test_layernorm_kernel_writes_every_output():
    rows, d = 5, 9
    x = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    y, xhat = np.full_like(x, np.nan), np.full_like(x, np.nan)
    rstd = np.full(rows, np.nan, dtype=np.float32)
    C.layernorm_forward(y.ctypes.data, xhat.ctypes.data, rstd.ctypes.data, x.ctypes.data, 0, 0, rows, d, 1e-5, "float32")
    dx, dw, db = np.full_like(x, np.nan), np.full(d, np.nan, np.float32), np.full(d, np.nan, np.float32)
    C.layernorm_backward(dx.ctypes.data, dw.ctypes.data, db.ctypes.data, x.ctypes.data, xhat.ctypes.data,
                         rstd.ctypes.data, 0, rows, d, "float32")
    for a in (y, xhat, rstd, dx, dw, db):
        assert np.isfinite(a).all()


CELL_SIZES = [(1, 1), (3, 7), (5, 33), (64, 256), (300, 129)]  # (rows, hidden); the last two above the threading threshold


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,hh", CELL_SIZES)
def test_lstm_cell_kernels_match_reference(dtype, n, hh, isa):
    rng = np.random.default_rng(n * 1000 + hh)
    gx, gh = (rng.standard_normal((n, 4 * hh)).astype(dtype) * 2 for _ in range(2))
    c_prev, dh, dc = (rng.standard_normal((n, hh)).astype(dtype) for _ in range(3))
    gates, c = np.full((n, 4 * hh), np.nan, dtype), np.full((n, hh), np.nan, dtype)  # poisoned
    h = ops.lstm_cell_forward(gx, gh, c_prev, gates, c)
    gates64, c64 = np.empty((n, 4 * hh)), np.empty((n, hh))
    h64 = reference.lstm_cell_forward(np, gx.astype(np.float64), gh.astype(np.float64), c_prev.astype(np.float64),
                                      gates64, c64)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for got, ref in ((gates, gates64), (c, c64), (h, h64)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    da, dc_prev = ops.lstm_cell_backward(dh, dc, gates, c, c_prev)
    da64, dc_prev64 = reference.lstm_cell_backward(np, dh.astype(np.float64), dc.astype(np.float64), gates64, c64,
                                                   c_prev.astype(np.float64))
    np.testing.assert_allclose(da, da64, rtol=tol, atol=tol)
    np.testing.assert_allclose(dc_prev, dc_prev64, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,hh", CELL_SIZES)
def test_gru_cell_kernels_match_reference(dtype, n, hh, isa):
    rng = np.random.default_rng(n * 1000 + hh)
    gx, gh = (rng.standard_normal((n, 3 * hh)).astype(dtype) * 2 for _ in range(2))
    h_prev, dh = (rng.standard_normal((n, hh)).astype(dtype) for _ in range(2))
    gates, ghn = np.full((n, 3 * hh), np.nan, dtype), np.full((n, hh), np.nan, dtype)  # poisoned
    h = ops.gru_cell_forward(gx, gh, h_prev, gates, ghn)
    gates64, ghn64 = np.empty((n, 3 * hh)), np.empty((n, hh))
    h64 = reference.gru_cell_forward(np, gx.astype(np.float64), gh.astype(np.float64), h_prev.astype(np.float64),
                                     gates64, ghn64)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for got, ref in ((gates, gates64), (ghn, ghn64), (h, h64)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    got = ops.gru_cell_backward(dh, gates, ghn, h_prev)
    ref = reference.gru_cell_backward(np, dh.astype(np.float64), gates64, ghn64, h_prev.astype(np.float64))
    for g, r in zip(got, ref):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


def test_lstm_cell_forward_may_overwrite_its_previous_state():
    """Without gradients the LSTM reuses one slot: c_t is written over c_{t-1}."""
    rng = np.random.default_rng(0)
    gx, gh = (rng.standard_normal((4, 20)).astype(np.float32) for _ in range(2))
    c = rng.standard_normal((4, 5)).astype(np.float32)
    gates, expected_c = np.empty((4, 20), np.float32), np.empty((4, 5), np.float32)
    expected_h = reference.lstm_cell_forward(np, gx, gh, c.copy(), gates.copy(), expected_c)
    h = ops.lstm_cell_forward(gx, gh, c, gates, c)
    np.testing.assert_allclose(c, expected_c, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(h, expected_h, rtol=2e-6, atol=2e-6)


def test_cell_kernels_fill_non_contiguous_outputs_and_announce_a_16_bit_call(monkeypatch):
    import lamina as lm

    monkeypatch.setattr(lm.errors, "_warned", set())
    rng = np.random.default_rng(1)
    gx, gh = (rng.standard_normal((3, 12)).astype(np.float32) for _ in range(2))
    c_prev = rng.standard_normal((3, 3)).astype(np.float32)
    wide_gates, wide_c = np.zeros((3, 24), np.float32), np.zeros((3, 6), np.float32)
    gates, c = wide_gates[:, ::2], wide_c[:, ::2]  # strided views: the kernel writes copies, then they are copied back
    h = ops.lstm_cell_forward(gx, gh, c_prev, gates, c)
    g64, c64 = np.empty((3, 12)), np.empty((3, 3))
    h64 = reference.lstm_cell_forward(np, gx, gh, c_prev, g64, c64)
    for got, ref in ((gates, g64), (c, c64), (h, h64)):
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6)
    assert not wide_gates[:, 1::2].any()  # nothing written between the view's elements
    with pytest.warns(lm.PerformanceWarning, match="lstm_cell_forward kernels take float32 and float64.*float16"):
        ops.lstm_cell_forward(gx.astype(np.float16), gh.astype(np.float16), c_prev.astype(np.float16),
                              np.empty((3, 12), np.float16), np.empty((3, 3), np.float16))


AVX2_SOURCES = {
    "conv_direct.cpp": {"conv_direct_geometry_ok", "conv_direct_forward", "conv_direct_backward_data",
                        "conv_direct_backward_weight"},
    "vector_kernels_avx2.cpp": {"gelu_forward_avx2", "gelu_backward_avx2", "softmax_forward_avx2",
                                "softmax_backward_avx2", "layernorm_forward_avx2", "layernorm_backward_avx2",
                                "lstm_cell_forward_avx2", "lstm_cell_backward_avx2", "gru_cell_forward_avx2",
                                "gru_cell_backward_avx2", "ctc_alpha_row_avx2", "ctc_beta_row_avx2",
                                "ctc_posterior_row_avx2"},
}


@pytest.mark.parametrize("source", sorted(AVX2_SOURCES))
def test_avx2_files_export_only_their_entry_points(source, tmp_path):
    """The files built for AVX2 + FMA must define no symbol the linker could
    share with baseline code (an inline function or template instantiation
    with external linkage would be one copy for the whole module, and might
    be the AVX2 one: an illegal instruction on an older CPU).  Compiled here
    as setup.py compiles them, their global symbols are listed with nm."""
    import shutil
    import subprocess

    cxx, nm = shutil.which("g++") or shutil.which("c++"), shutil.which("nm")
    if cxx is None or nm is None:
        pytest.skip("needs a C++ compiler and nm")
    src = os.path.join(os.path.dirname(__file__), "..", "csrc", "cpu", source)
    obj = tmp_path / "k.o"
    subprocess.run([cxx, "-std=c++17", "-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-c", src,
                    "-o", str(obj)], check=True, capture_output=True)
    out = subprocess.run([nm, "-C", "--defined-only", str(obj)], check=True, capture_output=True, text=True).stdout
    exported = set()
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in "TWi":  # code visible outside the object (data cannot fault)
            exported.add(parts[2].split("(")[0].split("<")[0].rsplit("::", 1)[-1])
    assert exported == AVX2_SOURCES[source], f"{source} exports {sorted(exported)}"


def test_a_cpu_without_avx2_is_announced_once(monkeypatch):
    """The baseline build of GELU/softmax/LayerNorm is correct but slower: a
    PerformanceWarning says so, once, instead of falling back silently."""
    import warnings

    import lamina as lm

    monkeypatch.setattr(ops, "_AVX2", [False])
    monkeypatch.setattr(lm.errors, "_warned", set())
    x = np.ones((4, 8), dtype=np.float32)
    with pytest.warns(lm.PerformanceWarning, match="lacks AVX2 or FMA.*baseline SSE2 build"):
        ops.softmax_forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.gelu_forward(x)
        ops.layernorm_forward(x)



def test_a_stale_build_without_data_ptr_is_announced_once(monkeypatch):
    import warnings

    from lamina.errors import PerformanceWarning, _warned

    class Stale:  # a lamina._C built before data_ptr existed
        pass

    assert ops._numpy_addr_function() is C.data_ptr
    monkeypatch.setattr(_ext, "cpu_module", lambda: Stale())
    _warned.discard("no _C.data_ptr")
    with pytest.warns(PerformanceWarning, match="stale build"):
        fn = ops._numpy_addr_function()
    x = np.arange(3.0)[::2]
    assert fn(x) == x.ctypes.data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops._numpy_addr_function()  # second time: silent


@pytest.mark.parametrize("op", ["relu_backward", "gelu_backward", "softmax_backward", "batchnorm_apply", "batchnorm_backward"])
def test_operands_of_two_dtypes_take_the_reference_and_say_so(op):
    """A kernel reads every operand in the first one's dtype: given a float32
    gradient and a float64 saved input it would read the float64 bytes as
    float32 pairs.  Such a call takes the reference instead (a PerformanceWarning,
    once), with the reference's numbers."""
    import lamina as lm
    from lamina.errors import _warned

    rng = np.random.default_rng(0)
    a32 = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b64 = rng.standard_normal((3, 4, 5))
    c64, d64 = rng.random(4) + 0.5, rng.standard_normal(4)
    calls = {
        "relu_backward": (lambda: ops.relu_backward(a32, b64), lambda: reference.relu_backward(np, a32, b64)),
        "gelu_backward": (lambda: ops.gelu_backward(a32, b64), lambda: reference.gelu_backward(np, a32, b64, "none")),
        "softmax_backward": (lambda: ops.softmax_backward(a32, b64), lambda: reference.softmax_backward(np, a32, b64, 1.0)),
        "batchnorm_apply": (lambda: ops.batchnorm_apply(a32, d64, c64, c64, d64),
                            lambda: reference.batchnorm_apply(np, a32, d64, c64, c64, d64, True)),
        "batchnorm_backward": (lambda: ops.batchnorm_backward(a32, b64, c64, c64),
                               lambda: reference.batchnorm_backward(np, a32, b64, c64, c64, True)),
    }
    run, ref = calls[op]
    _warned.clear()
    with pytest.warns(lm.PerformanceWarning, match="takes operands of one dtype"):
        got = run()
    want = ref()
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("order,env,warns", [
    ("torch first", None, True),            # torch started OpenMP with threads that spin: say so
    ("lamina first", None, False),          # lamina set PASSIVE before the runtime loaded, for both
    ("torch first", "ACTIVE", False),       # the user chose: nothing to say
])
def test_openmp_wait_policy_is_passive_or_the_spinning_is_announced(order, env, warns):
    """The OpenMP runtime reads OMP_WAIT_POLICY once, when it loads; lamina._C
    shares the runtime PyTorch loaded.  Run in a fresh interpreter, since
    this process's runtime is already started."""
    pytest.importorskip("torch")
    imports = "import torch; import lamina" if order == "torch first" else "import lamina; import torch"
    code = (f"import os, warnings; {imports}; import numpy as np\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    lamina.ReLU()(np.zeros(3, dtype=np.float32))\n"
            "print(os.environ['OMP_WAIT_POLICY'], sum('OMP_WAIT_POLICY' in str(x.message) for x in w))")
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env is not None:
        environ["OMP_WAIT_POLICY"] = env
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    policy, count = out.stdout.split()
    assert policy == (env or "PASSIVE")
    assert int(count) == (1 if warns else 0), out.stderr


@pytest.mark.parametrize("order,env,expect", [
    ("lamina first", None, "4"),      # set before NumPy loads OpenBLAS, which reads it then
    ("numpy first", None, "unset"),   # too late to matter: left alone
    ("lamina first", "28", "28"),     # the user's value stays
])
def test_openblas_thread_timeout_is_set_when_lamina_loads_numpy(order, env, expect):
    imports = "import lamina, numpy" if order == "lamina first" else "import numpy, lamina"
    code = f"import os; {imports}; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset'))"
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env is not None:
        environ["OPENBLAS_THREAD_TIMEOUT"] = env
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expect
