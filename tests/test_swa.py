"""Weight averaging (lamina.optim.swa_utils) against torch.optim.swa_utils:
EMA and SWA averages, SWALR's schedule, update_bn's statistics."""

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina.optim import swa_utils


def _models(torch):
    """A small CNN in lamina and PyTorch with the same weights (BatchNorm included)."""
    t = torch.nn
    tmodel = t.Sequential(t.Conv2d(2, 3, 3, padding=1), t.BatchNorm2d(3), t.ReLU(), t.Flatten(), t.Linear(3 * 4 * 4, 5))
    model = lm.Sequential(lm.Conv2D(2, 3, 3, padding=1), lm.BatchNorm2d(3), lm.ReLU(), lm.Flatten(), lm.Dense(3 * 4 * 4, 5))
    model.load_state_dict(tmodel.state_dict())
    return model, tmodel


def _perturb(model, tmodel, torch, rng):
    """The same new weights and running statistics in both models (as if a training step had run)."""
    with torch.no_grad():
        for (name, tp), (lname, p) in zip(tmodel.state_dict().items(), model.state_dict().items()):
            assert name == lname
            if tp.dtype == torch.int64:
                tp += 1
                p[...] += 1
                continue
            new = (to_numpy(p) + 0.1 * rng.standard_normal(p.shape)).astype(np.float32)
            tp.copy_(torch.from_numpy(new))
            p[...] = lm.backend.to_device(new, lm.backend.device_of(p))


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize("kind", ["ema", "swa", "ema_avg_fn"])
def test_averaged_model_matches_pytorch(torch, xp, kind, use_buffers):
    from torch.optim import swa_utils as tswa

    model, tmodel = _models(torch)
    if xp is not np:
        model.to("cuda")
    kw, tkw = {}, {}
    if kind == "ema":
        kw, tkw = dict(multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9)), dict(multi_avg_fn=tswa.get_ema_multi_avg_fn(0.9))
    elif kind == "ema_avg_fn":
        kw, tkw = dict(avg_fn=swa_utils.get_ema_avg_fn(0.8)), dict(avg_fn=tswa.get_ema_avg_fn(0.8))
    avg = swa_utils.AveragedModel(model, use_buffers=use_buffers, **kw)
    tavg = tswa.AveragedModel(tmodel, use_buffers=use_buffers, **tkw)
    rng = np.random.default_rng(0)
    for _ in range(6):
        _perturb(model, tmodel, torch, rng)
        avg.update_parameters(model)
        tavg.update_parameters(tmodel)
    sd, tsd = avg.state_dict(), tavg.state_dict()
    assert list(sd) == list(tsd)  # PyTorch's keys: module.<name> and n_averaged
    for k in sd:
        if k.endswith("num_batches_tracked"):  # an integer: lamina copies the model's, PyTorch truncates an average
            assert int(sd[k]) == int(model.state_dict()[k[len("module."):]])
            continue
        np.testing.assert_allclose(to_numpy(sd[k]), tsd[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert int(sd["n_averaged"]) == 6
    # the averaged model is a layer: it runs as the model does
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    avg.eval()
    tavg.eval()
    np.testing.assert_allclose(to_numpy(avg(xp.asarray(x))), tavg(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_swa_is_the_mean_of_the_snapshots_and_the_source_is_left_alone():
    model = lm.Sequential(lm.Dense(3, 4), lm.ReLU(), lm.Dense(4, 2))
    avg = swa_utils.AveragedModel(model)
    snapshots = []
    rng = np.random.default_rng(1)
    for _ in range(5):
        for p in model.parameters():
            p.data[...] = rng.standard_normal(p.data.shape)
        snapshots.append({k: v.copy() for k, v in model.state_dict().items()})
        avg.update_parameters(model)
    for k, v in avg.module.state_dict().items():
        np.testing.assert_allclose(v, np.mean([s[k] for s in snapshots], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], snapshots[-1]["0.weight"])
    assert avg.module is not model and avg.module[0].weight is not model[0].weight


def test_averaged_model_state_round_trip_keeps_the_count(tmp_path):
    model = lm.Sequential(lm.Dense(3, 2))
    ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.5))
    for v in (1.0, 3.0):
        model[0].weight.data[...] = v
        ema.update_parameters(model)
    lm.save(ema, tmp_path / "ema.safetensors")
    fresh = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.5))
    lm.load(tmp_path / "ema.safetensors", fresh)
    model[0].weight.data[...] = 5.0
    fresh.update_parameters(model)  # a third update averages (the count came back), it does not copy
    np.testing.assert_allclose(fresh.module[0].weight.data, 0.5 * 2.0 + 0.5 * 5.0)


def test_averaged_model_errors_leave_it_untouched():
    model = lm.Sequential(lm.Dense(3, 2))
    avg = swa_utils.AveragedModel(model)
    avg.update_parameters(model)
    before = {k: np.array(v, copy=True) for k, v in avg.state_dict().items()}
    with pytest.raises(lm.ShapeError, match=r"AveragedModel\(average=swa\): expected a model with the averaged one's 2 "
                                            r"parameters and buffers, received Sequential with 4"):
        avg.update_parameters(lm.Sequential(lm.Dense(3, 2), lm.Dense(2, 2)))
    with pytest.raises(lm.ShapeError, match=r"expected 0.weight of shape \(2, 3\) in the model, received \(2, 4\)"):
        avg.update_parameters(lm.Sequential(lm.Dense(4, 2)))
    assert all(np.array_equal(before[k], v) for k, v in avg.state_dict().items())
    with pytest.raises(ValueError, match="avg_fn or multi_avg_fn, not both"):
        swa_utils.AveragedModel(model, avg_fn=swa_utils.get_swa_avg_fn(), multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    with pytest.raises(ValueError, match=r"get_ema_multi_avg_fn: expected an EMA decay in \[0, 1\], received 1.5"):
        swa_utils.get_ema_multi_avg_fn(1.5)
    with pytest.raises(ValueError, match=r"SWALR: expected 1 swa_lr values \(one per group\), received 2"):
        swa_utils.SWALR(lm.optim.SGD(model.parameters(), lr=0.1), swa_lr=[0.01, 0.02])
    with pytest.raises(TypeError, match="expected a lamina Layer to average"):
        swa_utils.AveragedModel(object())


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 5])
def test_swalr_matches_pytorch(torch, strategy, anneal_epochs):
    ps, tps = [lm.Parameter(np.zeros(2)) for _ in range(2)], [torch.zeros(2, requires_grad=True) for _ in range(2)]
    opt = lm.optim.SGD([{"params": [ps[0]], "lr": 0.2}, {"params": [ps[1]], "lr": 0.05}], lr=0.2)
    topt = torch.optim.SGD([{"params": [tps[0]], "lr": 0.2}, {"params": [tps[1]], "lr": 0.05}], lr=0.2)
    sched = swa_utils.SWALR(opt, swa_lr=[0.01, 0.02], anneal_epochs=anneal_epochs, anneal_strategy=strategy)
    tsched = torch.optim.swa_utils.SWALR(topt, swa_lr=[0.01, 0.02], anneal_epochs=anneal_epochs, anneal_strategy=strategy)
    for _ in range(9):
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups], rtol=1e-12)
        topt.step()
        sched.step()
        tsched.step()


def test_update_bn_matches_pytorch(torch, xp):
    from torch.optim import swa_utils as tswa

    model, tmodel = _models(torch)
    if xp is not np:
        model.to("cuda")
    rng = np.random.default_rng(2)
    batches = [(rng.standard_normal((n, 2, 4, 4)).astype(np.float32), np.zeros(n, dtype=np.int64)) for n in (3, 5, 2)]
    model.eval()
    tmodel.eval()
    swa_utils.update_bn([(xp.asarray(x), xp.asarray(y)) for x, y in batches], model)
    tswa.update_bn([(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches], tmodel)
    assert not model.training and model[1].momentum == 0.1  # mode and momentum restored
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(to_numpy(model.state_dict()[k]), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    # plain arrays as batches (not tuples) give the same statistics
    first = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    swa_utils.update_bn([xp.asarray(x) for x, _ in batches], model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), first[k], err_msg=k)
    # a model without BatchNorm is left as it was, mode included
    plain = lm.Sequential(lm.Dense(4 * 4 * 2, 2)).eval()
    before = {k: v.copy() for k, v in plain.state_dict().items()}
    swa_utils.update_bn([batches[0][0].reshape(3, -1)], plain)
    assert not plain.training and all(np.array_equal(before[k], v) for k, v in plain.state_dict().items())


def test_ema_of_a_trained_model_evaluates_as_well_as_the_model():
    """An EMA over the last steps of training: its accuracy is close to the model's."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    lm.manual_seed(0)
    model = lm.Sequential(lm.Dense(8, 16), lm.ReLU(), lm.Dense(16, 2))
    opt = lm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.95))
    loss_fn = lm.SoftmaxCrossEntropy()
    for step in range(300):
        i = rng.integers(0, 512, 64)
        loss_fn(model(x[i]), y[i])
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
        ema.update_parameters(model)
    with lm.no_grad():
        acc = (model(x).argmax(1) == y).mean()
        ema_acc = (ema(x).argmax(1) == y).mean()
    assert acc > 0.95 and ema_acc > 0.95
