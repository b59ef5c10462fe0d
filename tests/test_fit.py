"""fit(): history and metrics, validation in eval mode, early stopping with
restore-best, periodic checkpoints and bit-exact resumption, schedulers,
gradient norms, the plot, and a quiet progress bar off a terminal."""

import numpy as np
import pytest

import lamina as lm
from lamina.data import DataLoader
from lamina.train import EarlyStopping, ModelCheckpoint, fit, resume


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    return x, y


def _model():
    return lm.Sequential(lm.Dense(5, 32), lm.ReLU(), lm.Dropout(0.1), lm.Dense(32, 3))


def test_fit_learns_and_records_history(capsys):
    lm.manual_seed(0)
    x, y = _data()
    model = _model()
    opt = lm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = lm.optim.StepLR(opt, step_size=3, gamma=0.5)
    hist = fit(model, lm.SoftmaxCrossEntropy(), opt, (x, y), val=_data(60, 1), epochs=6, batch_size=16, scheduler=sched)
    assert hist.epochs == [1, 2, 3, 4, 5, 6]
    assert set(hist.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert hist["loss"][-1] < hist["loss"][0] and hist["val_accuracy"][-1] > 0.8
    assert hist["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
    assert set(hist.grad_norms) == {"0", "3"} and all(v > 0 for v in hist.grad_norms["0"])
    assert model.training  # left in training mode, validation notwithstanding
    assert capsys.readouterr().err == ""  # no terminal: no progress bar, no epoch lines


def test_early_stopping_restores_the_best_weights():
    lm.manual_seed(0)
    x, y = _data()
    model = _model()
    opt = lm.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    seen = {}

    class Snapshot(lm.train.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen[epoch] = {k: v.copy() for k, v in trainer.model.state_dict().items()}

    stop = EarlyStopping(monitor="val_loss", patience=2)
    hist = fit(model, lm.SoftmaxCrossEntropy(), opt, (x, y), val=_data(30, 2), epochs=100, batch_size=8,
               callbacks=[Snapshot(), stop])
    assert stop.stopped_epoch is not None and len(hist.epochs) == stop.stopped_epoch < 100
    best = int(np.argmin(hist["val_loss"])) + 1
    assert stop.best_epoch == best
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, seen[best][k])


def test_checkpoint_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    def setup(seed):
        lm.manual_seed(seed)
        x, y = _data()
        model = _model()
        opt = lm.optim.Adam(model.parameters(), lr=1e-2)
        sched = lm.optim.CosineAnnealingLR(opt, T_max=6)
        return model, opt, sched, DataLoader(x, y, batch_size=16, shuffle=True)

    model, opt, sched, loader = setup(0)
    full = fit(model, lm.SoftmaxCrossEntropy(), opt, loader, val=_data(30, 3), epochs=6, scheduler=sched)
    straight = {k: v.copy() for k, v in model.state_dict().items()}

    model, opt, sched, loader = setup(0)
    fit(model, lm.SoftmaxCrossEntropy(), opt, loader, val=_data(30, 3), epochs=3, scheduler=sched,
        callbacks=[ModelCheckpoint(tmp_path, every=1, monitor="val_loss")])
    assert (tmp_path / "checkpoint.safetensors").exists() and (tmp_path / "best.safetensors").exists()

    model, opt, sched, loader = setup(99)
    trainer = resume(tmp_path / "checkpoint.safetensors", model, lm.SoftmaxCrossEntropy(), opt, loader, scheduler=sched)
    assert trainer.epoch == 3 and trainer.step == 3 * len(loader)
    hist = fit(model, lm.SoftmaxCrossEntropy(), opt, loader, val=_data(30, 3), epochs=6, scheduler=sched, trainer=trainer)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, straight[k], err_msg=k)
    assert hist.metrics == full.metrics and hist.epochs == full.epochs


def test_history_plot_writes_a_png(tmp_path):
    lm.manual_seed(0)
    x, y = _data()
    model = _model()
    hist = fit(model, lm.SoftmaxCrossEntropy(), lm.optim.SGD(model.parameters(), lr=0.1), (x, y), val=(x, y), epochs=3)
    out = hist.plot(tmp_path / "history.png", title="test")
    data = (tmp_path / "history.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000 and out == tmp_path / "history.png"


def test_fit_with_clipping_and_progress_forced_on(capsys):
    lm.manual_seed(0)
    x, y = _data()
    model = _model()
    fit(model, lm.SoftmaxCrossEntropy(), lm.optim.SGD(model.parameters(), lr=0.1), (x, y), epochs=1, clip_grad_norm=0.01, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss" in err
    with pytest.raises(KeyError, match="'val_loss' is not logged"):
        fit(model, lm.SoftmaxCrossEntropy(), lm.optim.SGD(model.parameters(), lr=0.1), (x, y), epochs=1,
            callbacks=[EarlyStopping()])


@pytest.mark.filterwarnings("ignore::lamina.PerformanceWarning")
def test_fit_with_float16_loss_scaling_and_checkpoint_segments(tmp_path):
    lm.manual_seed(0)
    x, y = _data()
    model = lm.Sequential(lm.Dense(5, 32), lm.ReLU(), lm.Dense(32, 32), lm.ReLU(), lm.Dense(32, 3), checkpoint_segments=2)
    lm.amp.autocast(model, "float16")
    scaler = lm.amp.LossScaler(init_scale=2.0**20, growth_interval=4)  # starts too high: the first steps overflow
    opt = lm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hist = fit(model, lm.SoftmaxCrossEntropy(), opt, (x, y), val=(x, y), epochs=5, batch_size=16, scaler=scaler,
               callbacks=[ModelCheckpoint(tmp_path)])
    assert hist["val_accuracy"][-1] > 0.7 and all(np.isfinite(hist["loss"]))
    assert model[0].weight.dtype == np.float32 and scaler.get_scale() < 2.0**20
    other = lm.amp.LossScaler()
    lm.load_checkpoint(tmp_path / "checkpoint.safetensors", model, scaler=other)
    assert other.get_scale() == scaler.get_scale()
