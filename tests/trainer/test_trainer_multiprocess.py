"""Training in two JAX processes on 127.0.0.1 (gloo CPU collectives), real processes.

The job (``_mp_job.train``) trains a small MLP on 1000 rows in 4 Parquet
files, batch 64, 2 epochs (32 steps), checkpointing and exporting. It runs
once in this process (one process, one device) and in two worker processes
started by ``jaxtx.trainer.distributed`` (one CPU device each, the mesh spans
both).

Tolerance of the one- vs two-process comparison: the global batches are the
same rows in the same order, so the only difference is where the gradient is
summed: one device sums all 64 rows, two devices each sum 32 and an all-reduce
adds the two partial sums. Float32 addition is not associative, so single
updates differ by a few ulps (about 1e-7 relative) and 32 Adam steps carry
that along; we measured at most 2.4e-7 absolute on the parameters (1 device
vs 2 processes) and allow ``atol=1e-6, rtol=1e-5``. One process on a
2-device mesh (the same two partial sums, added in one process) gives the
two-process parameters bit for bit, and so does a killed-and-resumed
two-process run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import psutil
import pytest

from jaxtx.trainer import distributed

HERE = Path(__file__).parent
TIMEOUT_S = 240.0
"""Bound on one launch: the 2-core test machine is shared, so generous."""


def _rows(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    ids = rng.integers(0, 6, size=n).astype(np.int32)
    y = ((x[:, 0] - 0.8 * x[:, 1] + np.where(ids % 2 == 0, 1.0, -1.0)) > 0).astype(np.float32)
    return {**{f"x{i}": x[:, i] for i in range(5)}, "cat": ids, "label": y}


def _write(folder: Path, parts: list[dict[str, np.ndarray]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    for s, cols in enumerate(parts):
        pq.write_table(pa.table(cols), folder / f"part-{s}.parquet")


def _write_data(folder: Path, n: int = 1000, shards: int = 4) -> None:
    rows = _rows(n)
    _write(
        folder,
        [{k: v[idx] for k, v in rows.items()} for idx in np.array_split(np.arange(n), shards)],
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The workers' extra environment: the job module on the path, a shared compile cache."""
    cache = tmp_path_factory.mktemp("jax-cache")
    return {
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mp") / "data"
    _write_data(folder)
    return folder


@pytest.fixture(scope="module")
def two(data: Path, env: dict[str, str]) -> dict[str, Any]:
    """An uninterrupted two-process run, recording which process wrote which file."""
    out = data.parent / "two"
    result = distributed.launch(
        "_mp_job:train",
        dict(data_dir=str(data), out_dir=str(out), epochs=2, record_writes=True),
        processes=2,
        timeout_s=TIMEOUT_S,
        env=env,
    )
    return {"out": out, **result}


def _max_abs_diff(a: Any, b: Any) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


def _wait_for(cond: Callable[[], bool], what: str, launch: distributed.Launch) -> None:
    """Poll ``cond`` until it holds (bounded), failing early if a worker exits."""
    deadline = time.monotonic() + TIMEOUT_S
    while not cond():
        if launch.running() != [0, 1]:
            launch.wait()  # raises with the failed worker's stderr
            pytest.fail(f"the workers finished before {what}")
        assert time.monotonic() < deadline, f"no {what} after {TIMEOUT_S:.0f} s"
        time.sleep(0.05)


@pytest.mark.parametrize(("n", "batch", "count"), [(100, 16, 2), (100, 30, 4), (70, 64, 3)])
def test_process_parts_put_together_are_the_global_batches(n: int, batch: int, count: int) -> None:
    from jaxtx.trainer import ArrayDataset

    rows = _rows(n)
    feats = {k: v for k, v in rows.items() if k != "label"}
    whole = ArrayDataset(feats, rows["label"], batch, shuffle_seed=3)
    parts = [distributed.ProcessShard(whole, p, count) for p in range(count)]
    assert all(len(p) == len(whole) for p in parts)  # every process steps as often
    for epoch in (0, 1):
        expected = list(whole.packed_epoch(epoch))
        got = [list(p.packed_epoch(epoch)) for p in parts]
        for i, hb in enumerate(expected):
            for field in ("floats", "ints", "labels"):
                joined = np.concatenate([getattr(g[i], field) for g in got])
                np.testing.assert_array_equal(joined, getattr(hb, field))
        groups = [list(p.packed_groups(epoch, 3, rows=parts[0].batch_size)) for p in parts]
        sizes = [sum((g.sizes for g in gs), ()) for gs in groups]
        assert [sum(col) for col in zip(*sizes, strict=True)] == [len(hb) for hb in expected]


def test_two_processes_match_one_process(
    two: dict[str, Any], data: Path, env: dict[str, str]
) -> None:
    import _mp_job

    assert (two["process_count"], two["device_count"]) == (2, 2)
    # one process, one device (this process): equal up to the summation order
    one = _mp_job.train(str(data), str(data.parent / "one"), epochs=2)
    assert (one["process_count"], one["device_count"]) == (1, 1)
    diff = _max_abs_diff(one["params"], two["params"])
    print(f"max |params(1 process, 1 device) - params(2 processes)| = {diff:.3g}")
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        one["params"],
        two["params"],
    )
    steps = [r["step"] for r in two["history"]["epochs"]]
    assert steps == [r["step"] for r in one["history"]["epochs"]] == [16, 32]
    for r1, r2 in zip(one["history"]["epochs"], two["history"]["epochs"], strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
        assert r2["val_loss"] == pytest.approx(r1["val_loss"], rel=1e-5)

    # one process on the same 2-device mesh, host pipeline: the same sums, bit for bit
    same_mesh = distributed.launch(
        "_mp_job:train",
        dict(
            data_dir=str(data), out_dir=str(data.parent / "mesh2"), epochs=2, device_resident=False
        ),
        processes=1,
        devices_per_process=2,
        timeout_s=TIMEOUT_S,
        env=env,
    )
    assert (same_mesh["process_count"], same_mesh["device_count"]) == (1, 2)
    assert _max_abs_diff(same_mesh["params"], two["params"]) == 0.0


def test_checkpoints_and_export_written_once(two: dict[str, Any]) -> None:
    out: Path = two["out"]
    writes = [json.loads((out / f"writes-{p}.json").read_text()) for p in (0, 1)]
    # process 0 writes the export, the history and commits each checkpoint (the rename)
    assert {"model/predict.jaxexport", "model/signature.json", "history.json"} <= set(writes[0])
    assert {"ckpt/16", "ckpt/32"} <= set(writes[0])
    # process 1 writes only its own slice list of the replicated arrays (Orbax's
    # replica-parallel save: each array's bytes are written once, split between processes)
    assert writes[1], "process 1 recorded nothing; is the audit hook running?"
    for path in writes[1]:
        parts = Path(path).parts
        assert parts[0] == "ckpt" and parts[-1] == "process_1", path
        assert parts[1].endswith(".orbax-checkpoint-tmp"), path
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["16", "32"]
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        "predict.jaxexport",
        "signature.json",
    ]
    from jaxtx.trainer import load_exported

    model = load_exported(str(out / "model"))
    rng = np.random.default_rng(1)
    feats = {f"x{i}": rng.normal(size=8).astype(np.float32) for i in range(5)}
    feats["cat"] = rng.integers(0, 6, size=8).astype(np.int32)
    probs = model(feats)["probabilities"]
    assert probs.shape == (8,) and np.all((probs >= 0) & (probs <= 1))


def test_killed_worker_stops_the_launch_and_a_rerun_resumes(
    two: dict[str, Any], data: Path, env: dict[str, str]
) -> None:
    out = data.parent / "killed"
    marker = data.parent / "stalled"
    kwargs = dict(data_dir=str(data), out_dir=str(out), epochs=2, every_n_steps=4)
    launch = distributed.start(
        "_mp_job:train",
        {**kwargs, "stall": (6, 1, str(marker))},
        processes=2,
        timeout_s=TIMEOUT_S,
        stop_grace_s=5,
        env=env,
    )
    pids = list(launch.pids)
    _wait_for(lambda: (out / "ckpt" / "4").is_dir() and marker.exists(), "checkpoint 4", launch)
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(distributed.WorkerError) as err:
        launch.wait()
    assert err.value.process_id == 1 and err.value.returncode == -signal.SIGKILL
    assert "process 1" in str(err.value) and "SIGKILL" in str(err.value)
    for pid in pids:  # no orphan: both workers are gone (reaped, not zombies)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not [p for p in psutil.Process().children(recursive=True) if p.pid in pids]

    steps = sorted(int(p.name) for p in (out / "ckpt").iterdir() if p.name.isdigit())
    assert steps == [4]
    resumed = distributed.launch("_mp_job:train", kwargs, processes=2, timeout_s=TIMEOUT_S, env=env)
    print(f"resumed from step {resumed['restored_step']}")
    assert resumed["restored_step"] == 4
    assert resumed["history"]["initial_step"] == 4
    assert _max_abs_diff(resumed["params"], two["params"]) == 0.0


def test_a_failing_process_is_named_with_its_exit_code_and_stderr(
    env: dict[str, str], tmp_path: Path
) -> None:
    launch = distributed.start(
        "_mp_job:fail_on",
        {"process": 1, "message": "bad row 17 in part-3.parquet"},
        processes=2,
        timeout_s=TIMEOUT_S,
        stop_grace_s=5,
        env=env,
        log_dir=tmp_path / "logs",
    )
    with pytest.raises(distributed.WorkerError) as err:
        launch.wait()
    assert (err.value.process_id, err.value.returncode) == (1, 1)
    text = str(err.value)
    assert "process 1" in text and "exited with code 1" in text
    assert "ValueError: bad row 17 in part-3.parquet" in text
    assert str(tmp_path / "logs") in text
    assert not any(psutil.pid_exists(p) for p in launch.pids)


def test_each_process_reading_its_own_files(tmp_path: Path, env: dict[str, str]) -> None:
    """``ParquetDataset(shard_index=p, num_shards=2)``: process p reads files p and p + 2 only.

    The global batch is then process 0's 32 rows followed by process 1's 32
    rows; one process reading a file in that order with batch 64 is the
    reference (equal up to summation order, as above).
    """
    import _mp_job

    rows = _rows(1024)
    files = [{k: v[i * 256 : (i + 1) * 256] for k, v in rows.items()} for i in range(4)]
    _write(tmp_path / "data", files)
    result = distributed.launch(
        "_mp_job:train",
        dict(
            data_dir=str(tmp_path / "data"),
            out_dir=str(tmp_path / "two"),
            epochs=2,
            batch_size=32,
            shuffle=False,
            file_shards=True,
        ),
        processes=2,
        timeout_s=TIMEOUT_S,
        env=env,
    )
    own = [
        {k: np.concatenate([files[p][k], files[p + 2][k]]) for k in rows} for p in (0, 1)
    ]  # what each process reads, in its order
    merged = {  # global batch i: process 0's batch i, then process 1's
        k: np.concatenate([own[p][k][i * 32 : (i + 1) * 32] for i in range(16) for p in (0, 1)])
        for k in rows
    }
    _write(tmp_path / "merged", [merged])
    one = _mp_job.train(
        str(tmp_path / "merged"), str(tmp_path / "one"), epochs=2, batch_size=64, shuffle=False
    )
    assert [r["step"] for r in result["history"]["epochs"]] == [16, 32]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        one["params"],
        result["params"],
    )


_PARENT = """
import sys
from jaxtx.trainer import distributed
launch = distributed.start("_mp_job:train", dict(data_dir=sys.argv[1], out_dir=sys.argv[2],
    epochs=1, stall=(2, 1, sys.argv[3])), processes=2, timeout_s=240)
print(*launch.pids, flush=True)
launch.wait()
"""


@pytest.mark.slow
def test_workers_die_with_the_launching_process(
    data: Path, env: dict[str, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    marker = tmp_path / "stalled"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(data), str(tmp_path / "out"), str(marker)],
        stdout=subprocess.PIPE,
        env={**os.environ, **env},
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2, "the parent printed no worker pids"
        deadline = time.monotonic() + TIMEOUT_S
        while not marker.exists():  # both workers are inside training
            assert parent.poll() is None, "the launch ended early"
            assert time.monotonic() < deadline, "the workers never reached step 2"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(timeout=30)

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 30
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their launcher"
        time.sleep(0.05)


@pytest.mark.slow
def test_trainer_component_with_two_processes(tmp_path: Path, store) -> None:
    from jaxtx.components.example_gen import ExampleGen
    from jaxtx.components.trainer import Trainer
    from jaxtx.components.transform import Transform
    from jaxtx.pipelines.demo import LABEL, preprocess
    from jaxtx.pipelines.demo_data import generate_census

    csv = tmp_path / "census.csv"
    generate_census(600, seed=3).to_csv(csv, index=False)
    ex = ExampleGen(input_pattern=str(csv), store=store)
    tr = Transform(examples=ex, preprocessing_fn=preprocess, passthrough=[LABEL], store=store)
    common: dict[str, Any] = dict(
        examples=tr.transformed_examples,
        transform_graph=tr.transform_graph,
        label=LABEL,
        epochs=2,
        batch_size=64,
        early_stopping_patience=None,
        store=store,
    )
    two = Trainer(**common, processes=2)
    one = Trainer(**common)
    assert two.properties["epochs_run"] == one.properties["epochs_run"] == 2
    m1, m2 = one.properties["final_metrics"], two.properties["final_metrics"]
    assert m2.keys() == m1.keys()
    for k in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-6), k
    raw = generate_census(16, seed=4).drop(columns=[LABEL])
    p1 = one.load().predict(raw)["probabilities"]
    p2 = two.load().predict(raw)["probabilities"]
    np.testing.assert_allclose(p2, p1, rtol=1e-5, atol=1e-6)


def test_the_cause_named_is_the_killed_process_when_its_peers_exit_at_the_same_moment(
    tmp_path: Path,
) -> None:
    """Which watcher thread saw an exit first is noise within a second: a signal wins there."""
    import subprocess
    import sys

    def proc(code: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", code])

    exit_1 = "import sys; sys.exit(1)"
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    procs = [proc(exit_1), proc(killed), proc(exit_1)]
    for p in procs:
        p.wait()
    launch = distributed.Launch(procs, "127.0.0.1:1", str(tmp_path), tmp_path / "r", None, 1, False)
    t = time.monotonic()
    # process 0's exit was seen 0.3 s before the killed process's, process 2's 5 s later
    launch._ended.update({0: t, 1: t + 0.3, 2: t + 5.0})
    err = launch._error([0, 1, 2])
    assert [f.process_id for f in err.failures] == [1, 0, 2]
    assert err.returncode == -signal.SIGKILL
    # seen more than a second apart, the earlier exit is the cause, whatever its kind
    launch._ended.update({0: t, 1: t + 2.0, 2: t + 5.0})
    assert [f.process_id for f in launch._error([0, 1, 2]).failures] == [0, 1, 2]
