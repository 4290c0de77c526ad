"""Training rows kept on the device (``device_resident``) give the host path's results."""

from __future__ import annotations

import json
import os
import textwrap

import jax
import numpy as np
import optax
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtx import trainer as jt
from jaxtx.trainer._resident import place, resident_columns
from jaxtx.trainer._trainer import _ahead

HERE = os.path.dirname(os.path.abspath(__file__))
N, BATCH = 1000, 77  # 12 full batches and one of 76 rows


def _trainer(**kw) -> jt.TrainLoop:
    model = jt.MLP(hidden=(16, 8), vocab_sizes={"cat": 6}, dropout=0.2)
    return jt.TrainLoop(model, optax.adam(1e-2), loss="bce", seed=3, **kw)


def _leaves(state: jt.TrainState) -> list[np.ndarray]:
    return [np.asarray(p) for p in jax.tree.leaves((state.params, state.opt_state))]


class _Record(jt.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []

    def on_step_end(self, step, state, metrics):
        self.steps.append(step)
        self.losses.append(float(metrics["loss"]))


def test_batches_are_the_host_pipelines(binary_data):
    """The index matrix picks, batch for batch, the rows the host pipeline yields."""
    feats, labels = binary_data(N)
    for drop in (False, True):
        ds = jt.ArrayDataset(feats, labels, batch_size=BATCH, shuffle_seed=4, drop_remainder=drop)
        cols = ds.in_memory_columns()
        mesh = jt.make_mesh(jax.devices()[:1])
        data = place(cols, ds, mesh, rows=80)
        idx = data.indices(2)
        host = list(ds.packed_epoch(2))
        assert idx.shape == (len(host), 80) and data.steps == len(ds)
        for row, hb in zip(idx, host, strict=True):
            real = row[row < N]
            assert len(real) == len(hb) and (row[len(hb) :] == N).all()
            np.testing.assert_array_equal(cols.floats[real], hb.floats)
            np.testing.assert_array_equal(cols.ints[real], hb.ints)
            np.testing.assert_array_equal(cols.labels[real], hb.labels)
        # the padding row after the data is zeros
        assert not np.asarray(data.x[0])[N:].any() and not np.asarray(data.labels)[N:].any()


@pytest.mark.parametrize("drop", [False, True])
def test_same_results_as_one_step_per_call_on_the_host(binary_data, write_parquet, drop):
    feats, labels = binary_data(N)
    files = write_parquet(feats, labels)
    ev = jt.ArrayDataset(*binary_data(200, seed=1), batch_size=64)
    t = _trainer()
    init = t.init_state({k: v[:BATCH] for k, v in feats.items()})
    runs = {}
    for name, spe, resident in [
        ("host", 1, False),
        ("epoch", None, True),
        ("chunks", 5, True),
        ("parquet", None, "auto"),
    ]:
        t.steps_per_execution, t.device_resident = spe, resident
        if name == "parquet":
            data = jt.ParquetDataset(
                files, sorted(feats), "label", BATCH, shuffle_seed=0, drop_remainder=drop
            )
        else:
            data = jt.ArrayDataset(feats, labels, BATCH, shuffle_seed=0, drop_remainder=drop)
        rec = _Record()
        h = t.fit(data, ev, epochs=2, callbacks=[rec], state=init)
        assert t.resident == (resident is not False)
        runs[name] = (_leaves(t.state), h, rec)
    ref_leaves, ref_h, ref_rec = runs.pop("host")
    assert ref_rec.steps == list(range(1, 2 * (12 if drop else 13) + 1))
    for name, (leaves, h, rec) in runs.items():
        for a, b in zip(ref_leaves, leaves, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
        for key in ("loss", "accuracy", "val_loss"):
            assert h.history[key] == ref_h.history[key], (name, key)
        assert rec.steps == ref_rec.steps and rec.losses == ref_rec.losses, name


def test_one_call_per_epoch_unless_told(binary_data):
    feats, labels = binary_data(N)
    data = jt.ArrayDataset(feats, labels, BATCH, shuffle_seed=0)

    class Calls(jt.Callback):
        """Counts compiled calls: a call's steps share one state object."""

        def __init__(self) -> None:
            self.states: list[int] = []

        def on_step_end(self, step, state, metrics):
            if not self.states or self.states[-1] != id(state.step):
                self.states.append(id(state.step))

    for spe, calls in [(None, 2), (5, 6), (1, 26)]:
        cb = Calls()
        _trainer(steps_per_execution=spe, device_resident=True).fit(data, epochs=2, callbacks=[cb])
        assert len(cb.states) == calls, spe


def test_which_data_is_placed(binary_data, write_parquet):
    feats, labels = binary_data(300)
    files = write_parquet(feats, labels)
    array = jt.ArrayDataset(feats, labels, 50)
    stream = jt.ParquetDataset(files, sorted(feats), "label", 50, in_memory=False)
    batches = [({k: v[i : i + 50] for k, v in feats.items()}, labels[i : i + 50]) for i in (0, 50)]
    mesh = jt.make_mesh()
    assert resident_columns(array, "auto", mesh, 0.25) is not None
    assert resident_columns(array, "auto", mesh, 1e-12) is None  # does not fit
    assert resident_columns(array, True, mesh, 1e-12) is not None  # placed whatever its size
    assert resident_columns(array, False, mesh, 1.0) is None
    assert resident_columns(stream, "auto", mesh, 1.0) is None
    assert resident_columns(batches, "auto", mesh, 1.0) is None
    for data in (stream, batches):
        with pytest.raises(ValueError, match="device_resident=True cannot place"):
            resident_columns(data, True, mesh, 1.0)
    t = _trainer(device_resident=True)
    with pytest.raises(ValueError, match="not an in-memory dataset"):
        t.fit(stream, epochs=1)
    t = _trainer(device_memory_fraction=1e-12)
    t.fit(array, epochs=1)
    assert not t.resident
    with pytest.raises(ValueError, match="device_resident must be"):
        _trainer(device_resident="yes")
    with pytest.raises(ValueError, match="device_memory_fraction must be"):
        _trainer(device_memory_fraction=0.0)


def test_host_groups_are_put_one_call_ahead():
    log: list[str] = []

    def put(item: int) -> int:
        log.append(f"put {item}")
        return item

    for item in _ahead(range(4), put):  # type: ignore[arg-type]
        log.append(f"use {item}")
    assert log == ["put 0", "put 1", "use 0", "put 2", "use 1", "put 3", "use 2", "use 3"]


SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    import optax
    from jaxtx import trainer as jt

    assert jax.device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    n = 531  # the resident rows, with the zero row after them: 532, 266 per device
    x = rng.normal(size=(n, 3)).astype(np.float32)
    ids = rng.integers(0, 4, n).astype(np.int32)
    y = (x[:, 0] + (ids == 1) > 0.3).astype(np.float32)
    feats = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "id": ids}
    out = {}
    for drop in (False, True):  # batch 45 is padded to 46 rows
        for spe, resident in [(1, False), (None, True), (3, True)]:
            train = jt.ArrayDataset(feats, y, 45, shuffle_seed=0, drop_remainder=drop)
            model = jt.MLP(hidden=(16, 8), vocab_sizes={"id": 4}, dropout=0.1)
            t = jt.TrainLoop(
                model, optax.adam(1e-2), loss="bce", steps_per_execution=spe,
                device_resident=resident,
            )
            h = t.fit(train, epochs=2)
            assert t.resident == resident
            assert len(jax.tree.leaves(t.state.params)[0].sharding.device_set) == 2
            out[f"{drop}/{spe}/{resident}"] = {
                "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(t.state.params)],
                "loss": h.history["loss"],
            }
    # the rows are split over both devices
    from jaxtx.trainer._resident import place
    ds = jt.ArrayDataset(feats, y, 45)
    data = place(ds.in_memory_columns(), ds, jt.make_mesh(), 46)
    shards = [s.data.shape[0] for s in data.x[0].addressable_shards]
    out["shards"] = shards
    print("RESULT" + json.dumps(out))
    """
)


def test_two_devices_same_results_as_the_host_path(run_on_two_devices):
    out = run_on_two_devices(SCRIPT, timeout=300)
    assert out.pop("shards") == [266, 266]
    for drop in ("False", "True"):
        ref = out[f"{drop}/1/False"]
        for key in (f"{drop}/None/True", f"{drop}/3/True"):
            assert out[key] == ref, key


# The multi-process job's training (tests/trainer/_mp_job.py: an MLP on rows in 4 Parquet
# files, 2 epochs) on shapes whose batches do not split evenly: (rows, batch_size,
# drop_remainder). Every way of running the steps must give the state of one step per call.
# On 2 devices the scanned host steps once differed from it by an ulp in Adam's moments
# (5.96e-8 in the job's final parameters), on every shape: the batch slice was fused into
# the step's kernels, and XLA:CPU contracts multiply-adds into FMAs kernel by kernel.
SHAPES = {
    "job": (1000, 64, False),  # 15 full batches and one of 40 rows
    "job-dropped": (1000, 64, True),  # the batch of 40 rows dropped
    "odd-batch": (1000, 63, False),  # 63 rows padded to 64 on 2 devices; last batch 55
    "no-remainder": (1024, 64, False),  # full batches only
    "small": (531, 45, False),  # 45 padded to 46; last batch 36
}
RUNS = [(1, False), (None, False), (3, False), (None, "auto"), (3, True), (1, True)]
"""``(steps_per_execution, device_resident)``; the first is the reference."""


def _job_states(shapes: dict, runs: list, folder: str) -> dict:
    """Train the job once per shape and run; their final states, losses and step counts."""
    out = {}
    for name, (n, batch, drop) in shapes.items():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, 5)).astype(np.float32)
        ids = rng.integers(0, 6, size=n).astype(np.int32)
        y = (x[:, 0] - 0.8 * x[:, 1] + np.where(ids % 2 == 0, 1.0, -1.0)) > 0
        cols = {**{f"x{i}": x[:, i] for i in range(5)}, "cat": ids, "label": y.astype(np.float32)}
        files = []
        for s, rows in enumerate(np.array_split(np.arange(n), 4)):
            files.append(f"{folder}/{name}-{s}.parquet")
            pq.write_table(pa.table({k: v[rows] for k, v in cols.items()}), files[-1])
        loop = jt.TrainLoop(
            jt.MLP(hidden=(16,), vocab_sizes={"cat": 6}),
            optax.adam(1e-2),
            loss="binary_crossentropy",
            seed=0,
        )
        features = [f"x{i}" for i in range(5)] + ["cat"]
        for spe, resident in runs:
            loop.steps_per_execution, loop.device_resident = spe, resident
            train = jt.ParquetDataset(
                files, features, "label", batch, shuffle_seed=0, drop_remainder=drop
            )
            h = loop.fit(train, epochs=2)
            assert loop.resident == (resident is not False)
            leaves = jax.tree.leaves((loop.state.params, loop.state.opt_state))
            out[f"{name}/{spe}/{resident}"] = {
                "state": [np.asarray(a).ravel().tolist() for a in leaves],
                "loss": h.history["loss"],
                "accuracy": h.history["accuracy"],
                "steps": int(loop.state.step),
            }
    return out


JOB_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax
    sys.path.insert(0, sys.argv[1])
    from test_trainer_resident import _job_states

    assert jax.device_count() == 2, jax.devices()
    shapes, runs = json.loads(sys.argv[2]), [tuple(r) for r in json.loads(sys.argv[3])]
    with tempfile.TemporaryDirectory() as folder:
        print("RESULT" + json.dumps(_job_states(shapes, runs, folder)))
    """
)


@pytest.fixture(scope="module")
def two_device_job_states(run_on_two_devices) -> dict:
    """The job's final states for every shape and run, trained on a 2-device mesh."""
    return run_on_two_devices(JOB_SCRIPT, HERE, json.dumps(SHAPES), json.dumps(RUNS), timeout=600)


def _assert_runs_match(states: dict, shape: str) -> None:
    n, batch, drop = SHAPES[shape]
    ref = states[f"{shape}/{RUNS[0][0]}/{RUNS[0][1]}"]
    assert ref["steps"] == 2 * (n // batch if drop else -(-n // batch))
    for spe, resident in RUNS[1:]:
        got = states[f"{shape}/{spe}/{resident}"]
        assert got["steps"] == ref["steps"]
        for i, (a, b) in enumerate(zip(ref["state"], got["state"], strict=True)):
            np.testing.assert_array_equal(
                np.asarray(a), np.asarray(b), err_msg=f"leaf {i}, {spe=}, {resident=}"
            )
        assert got["loss"] == ref["loss"] and got["accuracy"] == ref["accuracy"], (spe, resident)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_two_devices_job_shapes_same_state_every_way(two_device_job_states, shape):
    """2 devices: host steps (one per call, scanned groups) and resident rows agree bit for bit."""
    _assert_runs_match(two_device_job_states, shape)


@pytest.mark.parametrize("shape", ["job", "odd-batch"])
def test_one_device_job_shapes_same_state_every_way(tmp_path, shape):
    states = _job_states({shape: SHAPES[shape]}, RUNS, str(tmp_path))
    _assert_runs_match(states, shape)
