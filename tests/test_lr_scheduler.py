"""Learning-rate schedulers against torch.optim.lr_scheduler: the lr of every
group at every step, and exact resumption from state_dict."""

import numpy as np
import pytest

import lamina as lm


def _pair(torch, lrs=(0.1, 0.02)):
    ps = [lm.Parameter(np.zeros(2)) for _ in lrs]
    tps = [torch.zeros(2, requires_grad=True) for _ in lrs]
    opt = lm.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)], lr=lrs[0], momentum=0.9)
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tps, lrs)], lr=lrs[0], momentum=0.9)
    return opt, topt


SCHEDULES = {
    "step": (lambda m, o: m.StepLR(o, step_size=7, gamma=0.5), lambda t, o: t.StepLR(o, step_size=7, gamma=0.5)),
    "cosine": (lambda m, o: m.CosineAnnealingLR(o, T_max=20, eta_min=1e-4), lambda t, o: t.CosineAnnealingLR(o, T_max=20, eta_min=1e-4)),
    "linear": (lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=8), lambda t, o: t.LinearLR(o, start_factor=0.1, total_iters=8)),
    "multistep": (lambda m, o: m.MultiStepLR(o, [12, 5, 30], gamma=0.3), lambda t, o: t.MultiStepLR(o, [12, 5, 30], gamma=0.3)),
    "exponential": (lambda m, o: m.ExponentialLR(o, 0.93), lambda t, o: t.ExponentialLR(o, 0.93)),
    "warm_restarts": (
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3),
        lambda t, o: t.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3),
    ),
    "warm_restarts_constant_period": (
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7), lambda t, o: t.CosineAnnealingWarmRestarts(o, T_0=7),
    ),
    "one_cycle": (
        lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=40), lambda t, o: t.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=40),
    ),
    "one_cycle_three_phase_linear": (
        lambda m, o: m.OneCycleLR(o, max_lr=0.3, epochs=4, steps_per_epoch=11, pct_start=0.25, anneal_strategy="linear",
                                  three_phase=True, div_factor=10),
        lambda t, o: t.OneCycleLR(o, max_lr=0.3, epochs=4, steps_per_epoch=11, pct_start=0.25, anneal_strategy="linear",
                                  three_phase=True, div_factor=10),
    ),
    "lambda_per_group": (
        lambda m, o: m.LambdaLR(o, [lambda t: 0.95**t, lambda t: 1 / (1 + t)]),
        lambda t, o: t.LambdaLR(o, [lambda t: 0.95**t, lambda t: 1 / (1 + t)]),
    ),
    "multiplicative": (
        lambda m, o: m.MultiplicativeLR(o, lambda t: 0.9 if t % 3 else 1.05),
        lambda t, o: t.MultiplicativeLR(o, lambda t: 0.9 if t % 3 else 1.05),
    ),
    "constant": (lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=6), lambda t, o: t.ConstantLR(o, factor=0.25, total_iters=6)),
    "polynomial": (lambda m, o: m.PolynomialLR(o, total_iters=25, power=2.0), lambda t, o: t.PolynomialLR(o, total_iters=25, power=2.0)),
    "cyclic_triangular": (
        lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=[0.2, 0.1], step_size_up=4, step_size_down=7),
        lambda t, o: t.CyclicLR(o, base_lr=0.01, max_lr=[0.2, 0.1], step_size_up=4, step_size_down=7),
    ),
    "cyclic_triangular2": (
        lambda m, o: m.CyclicLR(o, base_lr=[0.01, 0.002], max_lr=0.3, step_size_up=5, mode="triangular2",
                                base_momentum=0.7, max_momentum=0.95),
        lambda t, o: t.CyclicLR(o, base_lr=[0.01, 0.002], max_lr=0.3, step_size_up=5, mode="triangular2",
                                base_momentum=0.7, max_momentum=0.95),
    ),
    "cyclic_exp_range_no_momentum": (
        lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, mode="exp_range", gamma=0.97,
                                cycle_momentum=False),
        lambda t, o: t.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, mode="exp_range", gamma=0.97,
                                cycle_momentum=False),
    ),
    "cyclic_scale_fn_iterations": (
        lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=6, step_size_down=2,
                                scale_fn=lambda x: 1 / (1 + 0.1 * x), scale_mode="iterations"),
        lambda t, o: t.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=6, step_size_down=2,
                                scale_fn=lambda x: 1 / (1 + 0.1 * x), scale_mode="iterations"),
    ),
    "chained_constant_exponential_step": (
        lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.1, total_iters=3), m.ExponentialLR(o, 0.95),
                                         m.StepLR(o, 10, 0.5)]),
        lambda t, o: t.ChainedScheduler([t.ConstantLR(o, factor=0.1, total_iters=3), t.ExponentialLR(o, 0.95),
                                         t.StepLR(o, 10, 0.5)]),
    ),
    "warmup_then_cosine": (
        lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.01, total_iters=5), m.CosineAnnealingLR(o, T_max=30)], [5]),
        lambda t, o: t.SequentialLR(o, [t.LinearLR(o, start_factor=0.01, total_iters=5), t.CosineAnnealingLR(o, T_max=30)], [5]),
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scheduler_matches_torch(torch, name):
    make, tmake = SCHEDULES[name]
    opt, topt = _pair(torch)
    sched, tsched = make(lm.optim.lr_scheduler, opt), tmake(torch.optim.lr_scheduler, topt)
    for _ in range(40):
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups], rtol=1e-9)
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-9)
        np.testing.assert_allclose([g["momentum"] for g in opt.param_groups], [g["momentum"] for g in topt.param_groups],
                                   rtol=1e-9)  # OneCycleLR cycles it
        topt.step()  # torch warns if the scheduler steps before the optimizer
        sched.step()
        tsched.step()


def test_one_cycle_cycles_adam_beta1_and_stops_after_total_steps(torch):
    p, tp = lm.Parameter(np.zeros(2)), torch.zeros(2, requires_grad=True)
    opt, topt = lm.optim.Adam([p], betas=(0.9, 0.99)), torch.optim.Adam([tp], betas=(0.9, 0.99))
    kw = dict(max_lr=0.01, total_steps=20, base_momentum=0.8, max_momentum=0.9)
    sched, tsched = lm.optim.OneCycleLR(opt, **kw), torch.optim.lr_scheduler.OneCycleLR(topt, **kw)
    for _ in range(20):
        assert opt.param_groups[0]["betas"] == pytest.approx(topt.param_groups[0]["betas"], rel=1e-12)
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-9)
        topt.step()
        sched.step()
        tsched.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 21 times, beyond total_steps = 20"):
        sched.step()
    with pytest.raises(ValueError, match="cycle_momentum needs an optimizer with 'momentum' or 'betas'"):
        lm.optim.OneCycleLR(lm.optim.Optimizer([lm.Parameter(np.zeros(1))], dict(lr=0.1)), max_lr=1.0, total_steps=5)


def test_reduce_on_plateau_matches_torch(torch):
    opt, topt = _pair(torch)
    kw = dict(mode="min", factor=0.5, patience=2, threshold=0.01, cooldown=1, min_lr=[0.01, 0.004])
    sched = lm.optim.ReduceLROnPlateau(opt, **kw)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    metrics = [1.0, 0.9, 0.895, 0.9, 0.91, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69, 0.71, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    for m in metrics:
        sched.step(m)
        tsched.step(m)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in topt.param_groups], rel=1e-12)
    assert opt.param_groups[0]["lr"] < 0.1  # it did reduce
    mx = lm.optim.ReduceLROnPlateau(opt, mode="max", threshold_mode="abs", patience=0)
    mx.step(1.0)
    before = opt.param_groups[0]["lr"]
    mx.step(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(before * 0.1) or opt.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scheduler_resumes_from_state_dict(torch, name):
    make, _ = SCHEDULES[name]
    opt, _ = _pair(torch)
    sched = make(lm.optim.lr_scheduler, opt)
    for _ in range(9):
        sched.step()
    osd, ssd = opt.state_dict(), sched.state_dict()
    straight = []
    for _ in range(10):
        sched.step()
        straight.append(sched.get_last_lr())

    opt2, _ = _pair(torch)
    opt2.load_state_dict(osd)
    sched2 = make(lm.optim.lr_scheduler, opt2)
    sched2.load_state_dict(ssd)
    resumed = []
    for _ in range(10):
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == straight


def test_scheduler_argument_errors():
    opt = lm.optim.SGD([lm.Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lm.optim.StepLR(opt, 0)
    with pytest.raises(ValueError, match="factor < 1"):
        lm.optim.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="expected 1 milestones"):
        lm.optim.SequentialLR(opt, [lm.optim.StepLR(opt, 2), lm.optim.StepLR(opt, 3)], [])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scheduler_state_is_json_data_and_goes_into_checkpoints(torch, name, tmp_path):
    """Functions (LambdaLR's lambdas, CyclicLR's scale_fn) stay out of the state, as in PyTorch."""
    import json

    make, _ = SCHEDULES[name]
    opt, _ = _pair(torch)
    sched = make(lm.optim.lr_scheduler, opt)
    for _ in range(5):
        sched.step()
    json.dumps(sched.state_dict())
    model = lm.Dense(2, 2)
    lm.save_checkpoint(tmp_path / "ck.lamina", model, opt, sched)
    opt2, _ = _pair(torch)
    sched2 = make(lm.optim.lr_scheduler, opt2)
    lm.load_checkpoint(tmp_path / "ck.lamina", model, opt2, sched2)
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_new_scheduler_argument_errors():
    opt = lm.optim.SGD([lm.Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="LambdaLR: expected lr_lambda as a function of the step"):
        lm.optim.LambdaLR(opt, 0.5)
    with pytest.raises(ValueError, match=r"LambdaLR: expected 1 lr_lambda values \(one per group\), received 2"):
        lm.optim.LambdaLR(opt, [abs, abs])
    with pytest.raises(ValueError, match="ConstantLR: expected factor in"):
        lm.optim.ConstantLR(opt, factor=2.0)
    with pytest.raises(ValueError, match="PolynomialLR: expected total_iters >= 1"):
        lm.optim.PolynomialLR(opt, total_iters=0)
    with pytest.raises(ValueError, match="CyclicLR: expected mode 'triangular', 'triangular2' or 'exp_range', received 'saw'"):
        lm.optim.CyclicLR(opt, 0.01, 0.1, mode="saw")
    with pytest.raises(ValueError, match="CyclicLR: expected step_size_up >= 1"):
        lm.optim.CyclicLR(opt, 0.01, 0.1, step_size_up=0)
    with pytest.raises(ValueError, match="CyclicLR: cycle_momentum needs an optimizer with 'momentum' or 'betas'"):
        lm.optim.CyclicLR(lm.optim.Optimizer([lm.Parameter(np.zeros(1))], dict(lr=0.1)), 0.01, 0.1)
    with pytest.raises(ValueError, match="ChainedScheduler: CosineAnnealingLR is not a factor schedule"):
        lm.optim.ChainedScheduler([lm.optim.ExponentialLR(opt, 0.9), lm.optim.CosineAnnealingLR(opt, 10)])
    other = lm.optim.SGD([lm.Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="ChainedScheduler: every scheduler must drive the same optimizer"):
        lm.optim.ChainedScheduler([lm.optim.ExponentialLR(opt, 0.9), lm.optim.StepLR(other, 3)])


def test_multiplicative_lr_is_linear_time_and_recomputes_after_a_jump():
    calls = []
    opt = lm.optim.SGD([lm.Parameter(np.zeros(1))], lr=1.0)
    sched = lm.optim.MultiplicativeLR(opt, lambda t: calls.append(t) or 0.5)
    for _ in range(100):
        sched.step()
    assert len(calls) == 100 and opt.param_groups[0]["lr"] == 0.5**100
    assert sched.lr_at(3) == [0.125]  # an earlier step: the product is rebuilt from t = 0
