"""Several train steps per compiled call (``steps_per_execution``) change nothing but speed.

Both data paths are covered: the host pipeline (``device_resident=False``)
and rows kept on the device (``device_resident=True``, the default for small
in-memory data); see also test_trainer_resident.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from jaxtx import trainer as jt

N, BATCH = 1000, 77  # 12 full batches and a padded one of 76 rows: 13 per epoch


def _leaves(state: jt.TrainState) -> list[np.ndarray]:
    return [np.asarray(p) for p in jax.tree.leaves((state.params, state.opt_state))]


def _assert_bit_identical(a: jt.TrainState, b: jt.TrainState) -> None:
    assert int(a.step) == int(b.step)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _trainer(spe: int | None, resident: bool | str = "auto") -> jt.TrainLoop:
    model = jt.MLP(hidden=(16, 8), vocab_sizes={"cat": 6}, dropout=0.2)
    return jt.TrainLoop(
        model,
        optax.adam(1e-2),
        loss="bce",
        seed=3,
        steps_per_execution=spe,
        device_resident=resident,
    )


class _Steps(jt.Callback):
    """Records every step with its loss, and the state's step where it must be exact."""

    def __init__(self, exact_every: int | None = None, stop_at: int | None = None) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.exact: list[tuple[int, int]] = []
        self.exact_every, self.stop_at = exact_every, stop_at

    def needs_exact_state(self, step: int) -> bool:
        return bool(self.exact_every) and step % self.exact_every == 0

    def on_step_end(self, step, state, metrics):
        self.steps.append(step)
        self.losses.append(float(metrics["loss"]))
        if self.needs_exact_state(step):
            self.exact.append((step, int(state.step)))
        return step == self.stop_at


def test_same_params_whatever_steps_per_execution(binary_data, write_parquet):
    feats, labels = binary_data(N)
    names = sorted(feats)  # the ArrayDataset's packing order: the compiled steps are shared
    files = write_parquet(feats, labels)
    sources = {
        "array": lambda: jt.ArrayDataset(feats, labels, batch_size=BATCH, shuffle_seed=0),
        "parquet": lambda: jt.ParquetDataset(
            files, names, "label", batch_size=BATCH, shuffle_seed=0
        ),
        "stream": lambda: jt.ParquetDataset(
            files,
            names,
            "label",
            batch_size=BATCH,
            shuffle_seed=0,
            in_memory=False,
            shuffle_buffer_size=300,
            read_batch_size=100,
        ),
        # a re-iterable of dict batches, stacked in the trainer instead of the prefetch thread
        "list": lambda: [
            ({k: v[i : i + BATCH] for k, v in feats.items()}, labels[i : i + BATCH])
            for i in range(0, N, BATCH)
        ],
    }
    t = _trainer(None)  # one trainer (one set of compiled steps), its settings changed per fit
    init = t.init_state({k: v[:BATCH] for k, v in feats.items()})  # what fit() starts from
    results = {}
    for source, spe, resident in [
        ("array", 1, False),
        ("array", 4, False),
        ("array", None, False),
        ("array", 4, True),
        ("array", None, True),
        ("parquet", 4, False),
        ("parquet", None, "auto"),
        ("stream", 1, False),
        ("stream", 4, "auto"),
        ("list", 1, False),
        ("list", 4, "auto"),
    ]:
        t.steps_per_execution, t.device_resident = spe, resident
        rec = _Steps()
        h = t.fit(sources[source](), epochs=2, callbacks=[rec], state=init)
        assert t.resident == (resident is not False and source in ("array", "parquet"))
        results[source, spe, resident] = (t.state, h, rec)
    assert results["array", 1, False][2].steps == list(range(1, 27))
    for (source, _, _), (state, h, rec) in results.items():
        # the Parquet file is served from memory in the ArrayDataset's shuffled order
        ref = source if source in ("list", "stream") else "array"
        ref_state, ref_h, ref_rec = results[ref, 1, False]
        _assert_bit_identical(ref_state, state)
        assert h.history["loss"] == ref_h.history["loss"]
        assert h.history["accuracy"] == ref_h.history["accuracy"]
        assert rec.steps == ref_rec.steps  # every step reaches the callbacks, in order
        assert rec.losses == ref_rec.losses  # with its own metrics


def test_auto_steps_per_execution():
    t = _trainer(None)
    assert t._resolve_steps_per_execution(1024, 976) == 8
    assert t._resolve_steps_per_execution(77, 13) == 13
    assert t._resolve_steps_per_execution(77, None) == 64
    assert t._resolve_steps_per_execution(8192, 100) == 1
    assert t._resolve_steps_per_execution(100_000, 100) == 1
    assert _trainer(3)._resolve_steps_per_execution(1024, 976) == 3
    with pytest.raises(ValueError, match="steps_per_execution must be a positive int"):
        _trainer(0)


def test_stacked_groups_are_the_batches_of_an_epoch(binary_data):
    feats, labels = binary_data(N)
    ds = jt.ArrayDataset(feats, labels, batch_size=BATCH, shuffle_seed=0, drop_remainder=False)
    batches = list(ds.packed_epoch(1))
    groups = list(ds.packed_groups(1, 5, rows=78))
    assert [len(g) for g in groups] == [5, 5, 3]
    flat = [(g.x[0][i], g.x[1][i], g.labels[i], g.sizes[i]) for g in groups for i in range(len(g))]
    assert len(flat) == len(batches)
    for (f, ints, y, size), hb in zip(flat, batches, strict=True):
        assert f.shape == (78, ds.layout.n_float) and size == len(hb)
        np.testing.assert_array_equal(f[:size], hb.floats)
        np.testing.assert_array_equal(ints[:size], hb.ints)
        np.testing.assert_array_equal(y[:size], hb.labels)
        assert not f[size:].any() and not y[size:].any()
    dropped = jt.ArrayDataset(feats, labels, batch_size=BATCH, shuffle_seed=0, drop_remainder=True)
    assert [g.sizes for g in dropped.packed_groups(0, 4)] == [(BATCH,) * 4] * 3


@pytest.mark.parametrize("resident", [False, True])
def test_steps_limit_stop_request_and_exact_state(binary_data, resident):
    feats, labels = binary_data(N)
    data = jt.ArrayDataset(feats, labels, batch_size=BATCH, shuffle_seed=0)
    t = _trainer(1, resident)
    init = t.init_state({k: v[:BATCH] for k, v in feats.items()})
    t.fit(data, steps=18, state=init)
    ref = t.state
    t.steps_per_execution = 4
    rec = _Steps(exact_every=3)
    h = t.fit(data, steps=18, callbacks=[rec], state=init)
    _assert_bit_identical(ref, t.state)  # the limit cuts the group short
    assert [r["step"] for r in h.epochs] == [13, 18] and rec.steps == list(range(1, 19))
    assert rec.exact == [(s, s) for s in range(3, 19, 3)]  # calls end where asked
    # a stop request takes effect at the end of the call that ran the step
    stopper = _Steps(stop_at=6)
    t.fit(data, epochs=3, callbacks=[stopper], state=init)
    assert stopper.steps == list(range(1, 9)) and int(t.state.step) == 8


@pytest.mark.parametrize("resident", [False, True])
def test_early_stopping_is_unchanged(binary_data, resident):
    feats, labels = binary_data(300)
    train = jt.ArrayDataset(feats, labels, batch_size=50, shuffle_seed=0)
    ev_feats, _ = binary_data(200, seed=2)
    noise = np.random.default_rng(0).integers(0, 2, 200).astype(np.float32)
    ev = jt.ArrayDataset(ev_feats, noise, batch_size=200)
    out = []
    t = _trainer(1, resident)
    for spe in (1, None):
        stopper = jt.EarlyStopping("val_loss", patience=2)
        t.steps_per_execution = spe
        h = t.fit(train, ev, epochs=30, callbacks=[stopper])
        assert stopper.stopped_epoch == len(h.epochs) - 1 < 29
        out.append((h.history["val_loss"], _leaves(t.state)))
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1], strict=True):
        np.testing.assert_array_equal(a, b)


class _Crash(jt.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, step, state, metrics):
        if step == self.at:
            raise RuntimeError("crash")


@pytest.mark.parametrize("resident", [False, True])
def test_resume_after_checkpoint_matches(binary_data, tmp_path, resident):
    feats, labels = binary_data(N)
    ev = jt.ArrayDataset(*binary_data(200, seed=1), batch_size=200)

    def data():
        return jt.ArrayDataset(feats, labels, batch_size=BATCH, shuffle_seed=0)

    t = _trainer(1, not resident)  # the reference on the other path
    ref_h = t.fit(data(), ev, epochs=3)
    ref = t.state

    t.steps_per_execution, t.device_resident = 4, resident
    ckpt = jt.Checkpoint(tmp_path / "ckpt", every_n_steps=5, every_n_epochs=None)
    with pytest.raises(RuntimeError, match="crash"):
        t.fit(data(), ev, epochs=3, callbacks=[ckpt, _Crash(at=19)])
    ckpt.close()
    assert ckpt.latest_step() == 15  # mid-epoch 1, saved at the end of a call

    # resuming with other settings changes nothing either
    t.steps_per_execution, t.device_resident = None, not resident
    resumed = jt.Checkpoint(tmp_path / "ckpt", every_n_steps=5, every_n_epochs=None)
    h = t.fit(data(), ev, epochs=3, callbacks=[resumed])
    resumed.close()
    assert resumed.restored_step == 15 and h.initial_step == 15
    _assert_bit_identical(ref, t.state)
    assert h.history["loss"] == ref_h.history["loss"]
    assert h.history["val_loss"] == ref_h.history["val_loss"]


SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    import optax
    from jaxtx import trainer as jt

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    n = 530
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(np.float32)
    feats = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}
    out = {}
    # batch 45 is padded to 46 rows; the last batch holds 35
    for spe, resident in [(1, False), (4, False), (None, True), (4, True)]:
        train = jt.ArrayDataset(feats, y, batch_size=45, shuffle_seed=0)
        model = jt.MLP(hidden=(16,), dropout=0.1)
        t = jt.TrainLoop(
            model, optax.adam(1e-2), loss="bce", steps_per_execution=spe,
            device_resident=resident,
        )
        h = t.fit(train, epochs=2)
        assert t.resident == resident
        assert len(jax.tree.leaves(t.state.params)[0].sharding.device_set) == 2
        out[f"{spe}/{resident}"] = {
            "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(t.state.params)],
            "loss": h.history["loss"],
        }
    print("RESULT" + json.dumps(out))
    """
)


def test_two_devices_same_params_whatever_steps_per_execution(run_on_two_devices):
    out = run_on_two_devices(SCRIPT, timeout=180)
    ref = out.pop("1/False")
    for key, got in out.items():
        assert got == ref, key


def test_checkpoint_asks_for_exact_states(tmp_path: Path):
    ckpt = jt.Checkpoint(tmp_path / "c", every_n_steps=7)
    assert [s for s in range(1, 30) if ckpt.needs_exact_state(s)] == [7, 14, 21, 28]
    assert not jt.Checkpoint(tmp_path / "d").needs_exact_state(7)
    assert not jt.Callback().needs_exact_state(7)
