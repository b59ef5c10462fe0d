"""SGD against torch.optim.SGD on identical gradients."""

import numpy as np
import pytest

import lamina as lm

CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=1e-2),
    dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_torch_over_200_steps(torch, cfg, dtype):
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (3,), (1, 7)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ps = [lm.Parameter(a.copy()) for a in init]
    tps = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = lm.optim.SGD(ps, **cfg)
    topt = torch.optim.SGD(tps, **cfg)
    for _ in range(200):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for p, tp, g in zip(ps, tps, grads):
            p.grad = g.copy()
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=tol, atol=tol)


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
    opt.zero_grad()
    np.testing.assert_array_equal(p.grad, 0)
    opt.zero_grad(set_to_none=True)
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
