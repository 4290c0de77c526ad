"""fit() control: steps, early stopping, callbacks, Parquet input end to end."""

from __future__ import annotations

import io

import jax
import numpy as np
import optax
import pytest

from jaxtx import trainer as jt


class _Recorder(jt.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, state, ctx):
        self.events.append(("begin", int(state.step), ctx.steps_per_epoch))

    def on_step_end(self, step, state, metrics):
        self.events.append(("step", step))

    def on_epoch_end(self, epoch, state, logs):
        self.events.append(("epoch", epoch, logs["step"]))

    def on_train_end(self, state, history):
        self.events.append(("end", len(history.epochs)))


def test_parquet_fit_with_callbacks(binary_data, write_parquet):
    feats, labels = binary_data(600)
    files = write_parquet(feats, labels, shards=2, row_group_size=128)
    ev_files = write_parquet(*binary_data(200, seed=1), name="eval")
    names = ["x0", "x1", "x2", "x3", "x4", "cat"]
    train = jt.ParquetDataset(files, names, "label", batch_size=64, shuffle_seed=0, in_memory=False)
    ev = jt.ParquetDataset(ev_files, names, "label", batch_size=200)
    sched = optax.exponential_decay(0.02, transition_steps=10, decay_rate=0.5)
    rec, per_epoch, per_step = _Recorder(), [], []
    out = io.StringIO()
    t = jt.TrainLoop(jt.MLP(hidden=(16,), vocab_sizes={"cat": 6}), optax.adam(sched), loss="bce")
    h = t.fit(
        train,
        ev,
        steps=25,
        callbacks=[
            rec,
            jt.MetricsCallback(lambda e, m: per_epoch.append((e, m))),
            jt.MetricsCallback(lambda s, m: per_step.append((s, m["loss"])), every=5),
            jt.ProgressBar(interval=0.0, stream=out),
            jt.LearningRateLogger(sched),
        ],
    )
    # 10 steps per epoch, stop after 25 steps: epochs 0, 1 and a partial 2
    assert [r["step"] for r in h.epochs] == [10, 20, 25]
    assert rec.events[0] == ("begin", 0, 10) and rec.events[-1] == ("end", 3)
    assert [e for e in rec.events if e[0] == "epoch"] == [
        ("epoch", 0, 10),
        ("epoch", 1, 20),
        ("epoch", 2, 25),
    ]
    assert [s for s, _ in per_step] == [5, 10, 15, 20, 25]
    assert per_epoch[0][0] == 0 and {"loss", "accuracy", "val_loss", "learning_rate"} <= set(
        per_epoch[0][1]
    )
    assert h.history["learning_rate"] == pytest.approx([float(sched(s)) for s in (10, 20, 25)])
    assert "epoch 1 step 3/10 loss" in out.getvalue() and "epoch 3 done: loss" in out.getvalue()
    assert int(t.state.step) == 25


def test_early_stopping(binary_data):
    feats, labels = binary_data(300)
    train = jt.ArrayDataset(feats, labels, batch_size=100, shuffle_seed=0)
    # eval labels are noise, so val_loss stops improving quickly
    ev_feats, _ = binary_data(200, seed=2)
    noise = np.random.default_rng(0).integers(0, 2, 200).astype(np.float32)
    ev = jt.ArrayDataset(ev_feats, noise, batch_size=200)
    stopper = jt.EarlyStopping("val_loss", patience=2)
    t = jt.TrainLoop(jt.MLP(hidden=(32,), vocab_sizes={"cat": 6}), optax.adam(5e-2), loss="bce")
    h = t.fit(train, ev, epochs=50, callbacks=[stopper])
    assert len(h.epochs) < 50
    assert stopper.stopped_epoch == len(h.epochs) - 1
    assert stopper.best_epoch == len(h.epochs) - 3
    assert min(h.history["val_loss"]) == pytest.approx(stopper.best)
    with pytest.raises(KeyError, match="monitors 'val_auc' but the epoch record only has"):
        t.fit(train, ev, epochs=1, callbacks=[jt.EarlyStopping("val_auc")])
    assert jt.EarlyStopping("val_accuracy").mode == "max"


def test_fit_argument_errors(binary_data):
    feats, labels = binary_data(50)
    t = jt.TrainLoop(jt.MLP(hidden=(4,)), optax.sgd(0.1), loss="bce")
    ds = jt.ArrayDataset(feats, labels, batch_size=10)
    with pytest.raises(ValueError, match="pass epochs=N or steps=N"):
        t.fit(ds)
    with pytest.raises(ValueError, match="no state"):
        t.evaluate(ds)
    gen = ((feats, labels) for _ in range(1))
    with pytest.raises(TypeError, match="iterator and was used up after one epoch"):
        t.fit(gen, epochs=2)


def test_mesh_uses_every_device():
    t = jt.TrainLoop(jt.MLP(hidden=(4,)), optax.sgd(0.1), loss="bce")
    assert t.mesh.shape["data"] == jax.device_count()
