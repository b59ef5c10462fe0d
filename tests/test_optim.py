"""Optimizers against torch.optim on identical gradients (200 steps, float64
and float32), L1 and gradient clipping, state_dict resumption."""

import copy

import numpy as np
import pytest
from conftest import requires_cuda

import lamina as lm

# (lamina class name, torch class name, hyperparameters shared by both)
CONFIGS = [
    ("SGD", "SGD", dict(lr=0.1)),
    ("SGD", "SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", "SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", "SGD", dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=1e-2)),
    ("SGD", "SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    ("Adam", "Adam", dict(lr=1e-2)),
    ("Adam", "Adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("Adam", "Adam", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", "AdamW", dict(lr=1e-2)),
    ("AdamW", "AdamW", dict(lr=5e-3, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", "RMSprop", dict(lr=1e-2)),
    ("RMSprop", "RMSprop", dict(lr=1e-3, alpha=0.9, weight_decay=1e-3, momentum=0.9)),
    ("RMSprop", "RMSprop", dict(lr=1e-3, centered=True, momentum=0.5, eps=1e-6)),
    ("Adagrad", "Adagrad", dict(lr=1e-2)),
    ("Adagrad", "Adagrad", dict(lr=5e-2, lr_decay=1e-3, weight_decay=1e-2, initial_accumulator_value=0.1, eps=1e-8)),
    ("NAdam", "NAdam", dict(lr=2e-3)),
    ("NAdam", "NAdam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, momentum_decay=1e-2)),
    ("NAdam", "NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", "RAdam", dict(lr=1e-2)),  # 200 steps: the first 5 are momentum SGD (ρ_t ≤ 5), the rest rectified
    ("RAdam", "RAdam", dict(lr=3e-3, betas=(0.8, 0.9), weight_decay=1e-2)),
    ("RAdam", "RAdam", dict(lr=3e-3, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adamax", "Adamax", dict(lr=2e-3)),
    ("Adamax", "Adamax", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("Adadelta", "Adadelta", dict()),
    ("Adadelta", "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=1e-2)),
    ("Rprop", "Rprop", dict()),  # random gradients flip signs: every branch of the step-size rule runs
    ("Rprop", "Rprop", dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))),  # both clamps
    ("ASGD", "ASGD", dict(lr=1e-2)),
    ("ASGD", "ASGD", dict(lr=5e-2, lambd=1e-2, alpha=0.5, t0=50, weight_decay=1e-2)),  # averaging from step 51
]


def _run_side_by_side(torch, lm_cls, torch_cls, cfg, dtype, steps=200, l1=0.0, clip=None, seed=0):
    """Both optimizers on identical parameters and identical random gradients;
    returns the final parameters of each."""
    rng = np.random.default_rng(seed)
    shapes = [(5, 3), (3,), (1, 7)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ps = [lm.Parameter(a.copy()) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(lm.optim, lm_cls)(ps, l1=l1, **cfg)
    topt = getattr(torch.optim, torch_cls)(tps, **cfg)
    for _ in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for p, tp, g in zip(ps, tps, grads):
            p.grad = g.copy()
            tp.grad = torch.from_numpy(g.copy())
        if clip is not None:
            kind, value = clip
            if kind == "norm":
                n = lm.optim.clip_grad_norm_(ps, value)
                tn = torch.nn.utils.clip_grad_norm_(tps, value)
                assert n == pytest.approx(float(tn), rel=1e-5)
            else:
                lm.optim.clip_grad_value_(ps, value)
                torch.nn.utils.clip_grad_value_(tps, value)
        if l1:  # lamina adds L1 inside step(), after clipping, like weight decay; written out on the torch side
            for tp in tps:
                tp.grad += l1 * torch.sign(tp.detach())
        opt.step()
        topt.step()
    return [p.data for p in ps], [tp.detach().numpy() for tp in tps]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lm_cls,torch_cls,cfg", CONFIGS, ids=lambda c: c if isinstance(c, str) else ",".join(f"{k}={v}" for k, v in c.items()))
def test_optimizer_matches_torch_over_200_steps(torch, lm_cls, torch_cls, cfg, dtype):
    ours, theirs = _run_side_by_side(torch, lm_cls, torch_cls, cfg, dtype)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    if lm_cls in ("NAdam", "ASGD") and dtype == np.float64:
        # PyTorch keeps NAdam's product of momenta, ASGD's rate and averaging weight in float32 scalars (its
        # default dtype); lamina in float64 (test_asgd_averages_the_iterates_as_pytorch: exact with float64 ones)
        tol = 1e-8 if lm_cls == "NAdam" else 1e-6
    for p, tp in zip(ours, theirs):
        assert p.dtype == dtype
        np.testing.assert_allclose(p, tp, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "lm_cls,cfg,l1,clip",
    [
        ("SGD", dict(lr=0.05, momentum=0.9), 1e-2, None),
        ("Adam", dict(lr=1e-2), 1e-3, ("norm", 1.0)),
        ("SGD", dict(lr=0.05, momentum=0.9), 0.0, ("norm", 0.5)),
        ("RMSprop", dict(lr=1e-3), 0.0, ("value", 0.3)),
    ],
)
def test_l1_and_clipping_match_torch(torch, lm_cls, cfg, l1, clip, dtype):
    ours, theirs = _run_side_by_side(torch, lm_cls, lm_cls, cfg, dtype, l1=l1, clip=clip)
    tol = 1e-10 if dtype == np.float64 else 5e-5
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p, tp, rtol=tol, atol=tol)


def test_asgd_averages_the_iterates_as_pytorch(torch):
    """ASGD's average ``ax`` (the point to evaluate) follows PyTorch's: a
    copy of the iterate until t0, then the running mean of the ones after.
    PyTorch's default dtype set to float64 makes its rate and averaging
    weight float64 scalars, as lamina's: then the two agree to rounding."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _asgd_against_torch(torch)
    finally:
        torch.set_default_dtype(default)


def _asgd_against_torch(torch):
    rng = np.random.default_rng(3)
    init = rng.standard_normal((4, 3))
    p, tp = lm.Parameter(init.copy()), torch.tensor(init.copy(), requires_grad=True)
    cfg = dict(lr=5e-2, lambd=1e-3, t0=20)
    opt, topt = lm.optim.ASGD([p], **cfg), torch.optim.ASGD([tp], **cfg)
    for step in range(60):
        g = rng.standard_normal((4, 3))
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        np.testing.assert_allclose(opt.state[p]["ax"], topt.state[tp]["ax"].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(opt.state[p]["ax"], p.data)  # averaging since step 21


def test_clip_grad_norm_inf_and_nonfinite():
    a, b = lm.Parameter(np.zeros(3)), lm.Parameter(np.zeros(2))
    a.grad, b.grad = np.array([3.0, -4.0, 0.0]), np.array([1.0, 2.0])
    assert lm.optim.clip_grad_norm_([a, b], 2.0, norm_type=np.inf) == 4.0
    np.testing.assert_allclose(a.grad, np.array([3.0, -4.0, 0.0]) * 2 / (4 + 1e-6))
    b.grad[0] = np.nan
    with pytest.raises(RuntimeError, match="total norm"):
        lm.optim.clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "SGD", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta",
                                  "Rprop", "ASGD"])
def test_optimizer_resumes_exactly_from_its_state_dict(name):
    """Half the steps, a state_dict round trip into a fresh optimizer, the
    other half: bit for bit the same as running straight through."""
    cfg = dict(lr=1e-2, momentum=0.9) if name in ("SGD", "RMSprop") else dict(lr=1e-2)
    rng = np.random.default_rng(0)
    init = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(20)]

    def run(split):
        p = lm.Parameter(init.copy())
        opt = getattr(lm.optim, name)([p], **cfg)
        for i, g in enumerate(grads):
            if i == split:
                sd = opt.state_dict()
                p = lm.Parameter(p.data.copy())
                opt = getattr(lm.optim, name)([p], **cfg)
                opt.load_state_dict(sd)
            p.grad = g.copy()
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=None), run(split=10))


def test_param_groups_and_state_dict_round_trip():
    a, b = lm.Parameter(np.ones(3)), lm.Parameter(np.ones(2))
    opt = lm.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    for p in (a, b):
        p.grad = np.ones_like(p.data)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][1]["params"] == [1] and "momentum_buffer" in sd["state"][0]

    a2, b2 = lm.Parameter(a.data.copy()), lm.Parameter(b.data.copy())
    opt2 = lm.optim.SGD([{"params": [a2]}, {"params": [b2], "lr": 0.123}], lr=0.1, momentum=0.9)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[1]["lr"] == 0.5
    for p in (a, b, a2, b2):
        p.grad = np.full_like(p.data, 0.5)
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(a.data, a2.data)
    np.testing.assert_array_equal(b.data, b2.data)


def test_zero_grad_and_validation():
    p = lm.Parameter(np.ones(2))
    p.grad = np.ones(2)
    opt = lm.optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, 0)
    opt.zero_grad()  # PyTorch's default: set_to_none=True
    assert p.grad is None
    opt.step()  # no gradient: nothing happens
    np.testing.assert_array_equal(p.data, 1)
    with pytest.raises(ValueError, match="lr"):
        lm.optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        lm.optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty"):
        lm.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        lm.optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="expected 1 parameter groups, received 2"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]})


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: lm.optim.Adam(p, lr=-1), "Adam: expected lr >= 0, received -1"),
        (lambda p: lm.optim.AdamW(p, betas=(0.9, 1.0)), r"AdamW: expected betas in \[0, 1\)"),
        (lambda p: lm.optim.RMSprop(p, alpha=-0.5), "RMSprop: expected alpha >= 0"),
        (lambda p: lm.optim.SGD(p, lr=0.1, l1=-1), "SGD: expected l1 >= 0"),
        (lambda p: lm.optim.Adagrad(p, lr_decay=-1), "Adagrad: expected lr_decay >= 0"),
        (lambda p: lm.optim.NAdam(p, momentum_decay=-1), "NAdam: expected momentum_decay >= 0"),
        (lambda p: lm.optim.RAdam(p, betas=(1.0, 0.9)), r"RAdam: expected betas in \[0, 1\)"),
        (lambda p: lm.optim.Adamax(p, betas=(0.9, 1.5)), r"Adamax: expected betas in \[0, 1\)"),
        (lambda p: lm.optim.Adadelta(p, rho=1.5), r"Adadelta: expected rho in \[0, 1\], received 1.5"),
        (lambda p: lm.optim.Rprop(p, etas=(1.2, 0.5)), r"Rprop: expected etas \(η₋, η₊\) with 0 < η₋ < 1 < η₊, "
                                                       r"received \(1.2, 0.5\)"),
        (lambda p: lm.optim.Rprop(p, step_sizes=(1.0, 0.1)), r"Rprop: expected step_sizes \(min, max\) with 0 <= min "
                                                             r"<= max, received \(1.0, 0.1\)"),
        (lambda p: lm.optim.ASGD(p, lambd=-1), "ASGD: expected lambd >= 0, received -1"),
    ],
)
def test_bad_hyperparameters_name_the_optimizer(make, match):
    with pytest.raises(ValueError, match=match):
        make([lm.Parameter(np.zeros(2))])


@pytest.mark.parametrize(
    "name,cfg",
    [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)), ("SGD", dict(lr=0.1)),
     ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.2)), ("Adam", dict(lr=1e-2, weight_decay=1e-2)),
     ("AdamW", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, amsgrad=True)), ("Adagrad", dict(lr=1e-2, lr_decay=1e-2)),
     ("NAdam", dict(lr=1e-2, weight_decay=1e-2)), ("RAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
     ("RMSprop", dict(lr=1e-2, weight_decay=1e-2)), ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True)),
     ("Adagrad", dict(lr=5e-2, weight_decay=1e-2, initial_accumulator_value=0.1)),
     ("Adamax", dict(lr=1e-2, weight_decay=1e-2)), ("Adadelta", dict(lr=1.0, weight_decay=1e-2)), ("Rprop", dict(lr=1e-2)),
     ("ASGD", dict(lr=1e-2, t0=10, weight_decay=1e-2))],
)
def test_optimizers_on_each_backend_match_the_cpu(name, cfg, xp):
    """On CuPy the updates run as one fused CUDA kernel per parameter: the
    same trajectory as the CPU within float32 rounding."""
    rng = np.random.default_rng(0)
    init = rng.standard_normal((33, 7)).astype(np.float32)
    grads = [rng.standard_normal((33, 7)).astype(np.float32) for _ in range(50)]
    finals = []
    for mod in (np, xp):
        p = lm.Parameter(mod.asarray(init.copy()))
        opt = getattr(lm.optim, name)([p], l1=1e-3, **cfg)
        for g in grads:
            p.grad = mod.asarray(g)
            opt.step()
        finals.append(lm.backend.to_device(p.data, "cpu"))
        assert opt.state_dict()["param_groups"][0]["lr"] == cfg["lr"]
    np.testing.assert_allclose(finals[1], finals[0], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,cfg", [("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)), ("SGD", dict(lr=0.1)),
                                      ("Adam", dict(lr=1e-2)), ("AdamW", dict(lr=1e-2)),
                                      ("Adam", dict(lr=1e-2, capturable=True)), ("AdamW", dict(lr=1e-2, capturable=True)),
                                      ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
                                      ("AdamW", dict(lr=1e-2, amsgrad=True, capturable=True)),
                                      ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=1e-3)),
                                      ("Adagrad", dict(lr=5e-2, lr_decay=1e-2)),
                                      ("NAdam", dict(lr=1e-2, weight_decay=1e-2)),
                                      ("NAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)),
                                      ("RAdam", dict(lr=1e-2, weight_decay=1e-2)),
                                      ("RAdam", dict(lr=1e-2, betas=(0.9, 0.9), weight_decay=0.1, decoupled_weight_decay=True))])
def test_multi_tensor_updates_on_the_gpu_match_the_cpu(name, cfg, xp):
    """On CuPy one launch updates up to 48 parameters (csrc/cuda/optim.cu):
    60 parameters of many sizes, float32 and float64 in one group, some
    without a gradient on some steps (so Adam's step counts differ), follow
    the CPU's trajectory."""
    rng = np.random.default_rng(1)
    shapes = [(1,), (1023,), (1024,), (1025,), (33, 7), (5, 300)] * 10
    dtypes = [np.float32 if i % 7 else np.float64 for i in range(len(shapes))]
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    steps = [[rng.standard_normal(s).astype(d) if (i + t) % 5 else None for i, (s, d) in enumerate(zip(shapes, dtypes))]
             for t in range(6)]
    finals = []
    for mod in (np, xp):
        params = [lm.Parameter(mod.asarray(a.copy())) for a in init]
        opt = getattr(lm.optim, name)(params, **cfg)
        for grads in steps:
            for p, g in zip(params, grads):
                p.grad = None if g is None else mod.asarray(g)
            opt.step()
        finals.append([lm.backend.to_device(p.data, "cpu") for p in params])
    for gpu, cpu in zip(*finals[::-1]):
        np.testing.assert_allclose(gpu, cpu, rtol=2e-5, atol=2e-6)


def test_adam_takes_a_step_count_saved_as_an_array():
    """A capturable Adam keeps its step counts as 0-d device arrays, so its
    state_dict holds 0-d arrays; a plain Adam (or the CPU) that loads it
    goes on from the same step."""
    rng = np.random.default_rng(0)
    init, grads = rng.standard_normal(5), [rng.standard_normal(5) for _ in range(4)]
    finals = []
    for as_array in (False, True):
        p = lm.Parameter(init.copy())
        opt = lm.optim.Adam([p], lr=0.1)
        for i, g in enumerate(grads):
            if i == 2 and as_array:
                opt.state[p]["step"] = np.array(float(opt.state[p]["step"]))
            p.grad = g.copy()
            opt.step()
        assert opt.state[p]["step"] == 4
        finals.append(p.data)
    np.testing.assert_array_equal(finals[0], finals[1])


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name,kernel", [("RMSprop", "rmsprop_update"), ("Adagrad", "adagrad_update"), ("SGD", "sgd_update"),
                                         ("Adam", "adam_update"), ("AMSGrad", "adam_update"),
                                         ("NAdam", "adam_variant_update"), ("RAdam", "adam_variant_update")])
def test_cupy_steps_take_the_multi_tensor_launch(name, kernel, monkeypatch):
    """50 CuPy float32 parameters: one call of the fused update per step (it
    launches once per 48), not the CuPy expressions."""
    cp = lm.backend.cupy_module()
    calls = []
    real = getattr(lm.ops, kernel)

    def counting(mod, *args, **kwargs):
        calls.append(len(next(a for a in args if isinstance(a, (list, tuple)))))  # the parameters
        return real(mod, *args, **kwargs)

    monkeypatch.setattr(lm.ops, kernel, counting)
    params = [lm.Parameter(cp.ones((3, 5), dtype=cp.float32)) for _ in range(50)]
    opt = lm.optim.Adam(params, lr=0.1, amsgrad=True) if name == "AMSGrad" else getattr(lm.optim, name)(params, lr=0.1)
    for p in params:
        p.grad = cp.full((3, 5), 0.5, dtype=cp.float32)
    opt.step()
    assert calls == [50]


def test_a_state_dict_that_does_not_fit_leaves_the_optimizer_unchanged():
    """Every mismatch names the optimizer and what it expected; the state
    and hyperparameters it had are kept."""
    rng = np.random.default_rng(0)
    a, b = lm.Parameter(rng.standard_normal((3, 2))), lm.Parameter(rng.standard_normal(4))
    opt = lm.optim.Adam([a, b], lr=0.1)
    for p in (a, b):
        p.grad = np.ones_like(p.data)
    opt.step()
    good = opt.state_dict()
    before = {id(p): {k: np.copy(v) for k, v in opt.state[p].items()} for p in (a, b)}

    wrong_shape = copy.deepcopy(good)
    wrong_shape["state"][1]["exp_avg"] = np.zeros(5)
    wrong_shape["param_groups"][0]["lr"] = 0.5
    unknown_index = copy.deepcopy(good)
    unknown_index["state"][7] = unknown_index["state"].pop(1)
    group_size = copy.deepcopy(good)
    group_size["param_groups"][0]["params"] = [0]
    cases = [
        (wrong_shape, r"Adam.load_state_dict: expected state 'exp_avg' of shape \(4,\), received \(5,\)"),
        (unknown_index, r"Adam.load_state_dict: state for parameter 7, which no group lists \(groups list \[0, 1\]\)"),
        (group_size, "Adam.load_state_dict: expected a group of 2 parameters, received 1"),
        ({"state": {}}, r"Adam.load_state_dict: expected a dict with 'state' and 'param_groups', received \['state'\]"),
        ([good], "Adam.load_state_dict: expected a dict with 'state' and 'param_groups', received list"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(bad)
        assert opt.param_groups[0]["lr"] == 0.1
        for p in (a, b):
            for k, v in before[id(p)].items():
                np.testing.assert_array_equal(opt.state[p][k], v)
    opt.load_state_dict(good)  # and the right one still loads


def test_optimizer_rejects_what_is_not_a_parameter_and_describes_itself():
    with pytest.raises(TypeError, match="SGD: expected Parameters, received ndarray"):
        lm.optim.SGD([np.zeros(3)], lr=0.1)
    a, b = lm.Parameter(np.zeros(2)), lm.Parameter(np.zeros(3))
    opt = lm.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.splitlines()[0] == "SGD ("
    assert "group 0: 1 parameters, lr=0.1, momentum=0.9" in text
    assert "group 1: 1 parameters, lr=0.5, momentum=0.9" in text
