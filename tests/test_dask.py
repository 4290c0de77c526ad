"""Every Beam component on Beam's Dask runner against a real ``dask.distributed`` cluster.

A LocalCluster with 2 worker processes on 127.0.0.1 (module scope); each
component runs once in process and once on the cluster, and the artifacts are
compared on every exact field: counts, written rows, min/max, top-k, fitted
constants, predictions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pytest.importorskip("dask.distributed")

from _services import _http_ok, free_port, wait_until
from dask.distributed import Client, LocalCluster

import jaxtx.trainer.transform as tx
from jaxtx import Artifact, Examples, Output, Statistics, component
from jaxtx.core.beam import RUNNER_NAMES, pipeline_options
from jaxtx.data import ingest
from jaxtx.serving.bulk import bulk_predict
from jaxtx.validation.schema import infer_schema, save_schema
from jaxtx.validation.statistics import compute_split_statistics
from jaxtx.validation.validate_file import validate_file

ROWS = 3000


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes, one thread each, on 127.0.0.1."""
    with LocalCluster(
        processes=True,
        n_workers=2,
        threads_per_worker=1,
        dashboard_address=None,
        host="127.0.0.1",
    ) as c:
        yield c


@pytest.fixture(scope="module")
def dask_options(cluster: LocalCluster) -> list[str]:
    return ["--runner=dask", f"--dask_client_address={cluster.scheduler_address}"]


@pytest.fixture(scope="module")
def raw_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of ROWS rows plus two malformed lines."""
    rng = np.random.default_rng(7)
    table = pa.table(
        {
            "age": rng.integers(17, 90, ROWS),
            "hours": np.round(rng.uniform(1, 99, ROWS), 3),
            "workclass": rng.choice(["Private", "Self-emp", "Gov", "None"], ROWS),
            "label": rng.integers(0, 2, ROWS).astype(np.float64),
        }
    )
    path = tmp_path_factory.mktemp("raw") / "data.csv"
    pacsv.write_csv(table, path)
    with open(path, "a", encoding="utf-8") as f:
        f.write('"1","2"\n')  # too few fields
        f.write('"x","3.5","Private","1"\n')  # age is not a number
    return path


def _rows(paths: Any) -> pa.Table:
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    return table.sort_by([(n, "ascending") for n in table.column_names])


@pytest.fixture(scope="module")
def ingested(
    raw_csv: Path, dask_options: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("ingest")
    local = ingest([str(raw_csv)], str(base / "local"))
    remote = ingest([str(raw_csv)], str(base / "dask"), beam_options=dask_options)
    return {"local": local, "dask": remote, "base": base}


def test_short_runner_names_map_to_beam_runners() -> None:
    assert pipeline_options(["--runner=dask"]).get_all_options()["runner"] == RUNNER_NAMES["dask"]
    assert pipeline_options({"runner": "Flink"}).get_all_options()["runner"] == "FlinkRunner"
    assert pipeline_options(None).get_all_options()["runner"] == "FnApiRunner"
    assert pipeline_options(["--runner=direct"]).get_all_options()["runner"] == "FnApiRunner"
    other = "apache_beam.runners.dask.dask_runner.DaskRunner"
    assert pipeline_options([f"--runner={other}"]).get_all_options()["runner"] == other


def test_example_gen_on_dask_writes_what_in_process_writes(ingested: dict[str, Any]) -> None:
    local, remote, base = ingested["local"], ingested["dask"], ingested["base"]
    assert remote.num_read == local.num_read == ROWS + 2
    assert remote.num_rejected == local.num_rejected == 2
    assert remote.split_counts == local.split_counts
    assert sum(remote.split_counts.values()) == ROWS
    for split in local.split_counts:
        assert _rows(remote.split_files[split]).equals(_rows(local.split_files[split])), split
    # Nothing left behind: no temporary folders of re-run sinks, no count file.
    leftovers = [p for p in (base / "dask").rglob("*") if "beam-temp" in p.name or p.name[0] == "_"]
    assert leftovers == []


def test_statistics_gen_on_dask_equals_in_process(
    ingested: dict[str, Any], dask_options: list[str]
) -> None:
    files = {s: list(f) for s, f in ingested["local"].split_files.items()}
    local = compute_split_statistics(files)
    remote = compute_split_statistics(files, beam_options=dask_options)
    assert set(remote) == set(local)
    for split in local:
        _same_exact_stats(remote[split], local[split], split)


def _same_exact_stats(got: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    """Equal on every exact field (counts, min/max, top-k); mean and std to rounding."""
    assert got["num_rows"] == want["num_rows"], where
    assert got["features"].keys() == want["features"].keys(), where
    for name, w in want["features"].items():
        g = got["features"][name]
        at = f"{where}/{name}"
        for key in ("type", "arrow_type", "num_present", "num_missing"):
            assert g[key] == w[key], f"{at}/{key}"
        if w["num"] is not None:
            for key in ("min", "max", "num_zeros", "num_nan", "num_pos_inf", "num_neg_inf"):
                assert g["num"][key] == w["num"][key], f"{at}/{key}"
            for key in ("mean", "std"):
                assert math.isclose(g["num"][key], w["num"][key], rel_tol=1e-9), f"{at}/{key}"
        if w["str"] is not None:
            for key in ("num_unique", "num_empty", "top_k", "value_counts", "avg_length"):
                assert g["str"][key] == w["str"][key], f"{at}/{key}"


def _preprocess(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
    return {
        "age": tx.scale_to_z_score(inputs["age"]),
        "hours": tx.scale_to_0_1(inputs["hours"]),
        "workclass": tx.vocabulary(inputs["workclass"], num_oov_buckets=1),
    }


def _predict(params: Mapping[str, Any], f: Mapping[str, Any]) -> dict[str, Any]:
    logit = params["w"][0] * f["age"] + params["w"][1] * f["hours"]
    logit = logit + jnp.asarray(params["wc"])[f["workclass"]]
    return {"probabilities": jax.nn.sigmoid(logit)}


def test_transform_analyze_and_apply_on_dask(
    ingested: dict[str, Any], dask_options: list[str], tmp_path: Path
) -> None:
    files = {s: list(f) for s, f in ingested["local"].split_files.items()}
    local = tx.analyze(_preprocess, os.path.dirname(files["train"][0]))
    remote = tx.analyze(_preprocess, os.path.dirname(files["train"][0]), beam_options=dask_options)
    assert [c.name for c in remote.output_columns] == [c.name for c in local.output_columns]
    assert [c.cardinality for c in remote.output_columns] == [
        c.cardinality for c in local.output_columns
    ]
    counts_local = tx.transform_parquet(local, files, tmp_path / "local", passthrough=["label"])
    counts_dask = tx.transform_parquet(
        remote, files, tmp_path / "dask", passthrough=["label"], beam_options=dask_options
    )
    assert counts_dask == counts_local == ingested["local"].split_counts
    for split in files:
        want = _rows(sorted((tmp_path / "local" / split).glob("*.parquet")))
        got = _rows(sorted((tmp_path / "dask" / split).glob("*.parquet")))
        assert got.column_names == want.column_names
        for name in want.column_names:
            w, g = want[name].to_numpy(), got[name].to_numpy()
            if np.issubdtype(w.dtype, np.floating):
                np.testing.assert_allclose(g, w, rtol=1e-6, err_msg=f"{split}/{name}")
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"{split}/{name}")

    # BulkInferrer's library on the same cluster: same predictions as in process.
    model_dir = tmp_path / "model" / "1"
    tx.export_transformed_model(
        local,
        _predict,
        {"w": np.array([0.5, -1.0], np.float32), "wc": np.linspace(-1, 1, 5, dtype=np.float32)},
        model_dir,
        name="dask",
        task="binary_classification",
        outputs={"probabilities": "float32"},
    )
    evals = files["eval"]
    n_local = bulk_predict(model_dir, evals, tmp_path / "pred-local")
    n_dask = bulk_predict(model_dir, evals, tmp_path / "pred-dask", beam_options=dask_options)
    assert n_dask == n_local == ingested["local"].split_counts["eval"]
    for f in evals:
        name = os.path.basename(f)
        want = pq.read_table(tmp_path / "pred-local" / name)
        got = pq.read_table(tmp_path / "pred-dask" / name)
        assert got.equals(want), name


def _anomaly_facts(anomalies: Any) -> list[tuple[Any, ...]]:
    """Every field; the rows a description quotes as a set (quarantine order varies)."""
    return [
        (a.feature, a.type, a.severity, a.expected, a.found, sorted(a.description.split("; ")))
        for a in anomalies
    ]


def test_validate_on_dask_equals_in_process(
    ingested: dict[str, Any], raw_csv: Path, dask_options: list[str], tmp_path: Path
) -> None:
    files = {s: list(f) for s, f in ingested["local"].split_files.items()}
    schema_path = tmp_path / "schema.yaml"
    save_schema(infer_schema(compute_split_statistics(files)), schema_path)
    local, _ = validate_file(str(raw_csv), str(schema_path))
    remote, _ = validate_file(str(raw_csv), str(schema_path), beam_options=dask_options)
    assert _anomaly_facts(remote) == _anomaly_facts(local)
    assert any("2 of" in str(a) for a in local)  # the malformed rows are reported


def test_workers_are_other_processes(cluster: LocalCluster) -> None:
    with Client(cluster.scheduler_address) as client:
        pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


# -- component tasks on Dask workers, through prefect-dask and a real Prefect server ----------


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME; stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = home / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
           "--port", str(port)]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(
            lambda: _http_ok(f"{url}/health"),
            what=f"prefect server on {url}",
            timeout=400,
            proc=proc,
            log=log,
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


class Pid(Artifact):
    """Where a component ran."""


@component
def WhereAmI(statistics: Statistics, where: Output[Pid]) -> dict[str, float]:
    (where.path / "ran.txt").write_text("ran")
    return {"pid": float(os.getpid()), "num_rows": float(statistics.split("train")["num_rows"])}


def _demo(data: Path, home: Path) -> Any:
    from jaxtx.pipelines.demo import create_pipeline

    pipeline = create_pipeline(str(data), home=str(home), train_model=False)
    with pipeline:
        WhereAmI(statistics=pipeline["StatisticsGen"].outputs["statistics"])
    return pipeline


def _manifest(art: Artifact) -> dict[str, Any]:
    return json.loads((Path(art.uri) / "artifact.json").read_text())["manifest"]


def _same_examples(got: Artifact, want: Artifact, where: str) -> None:
    """Same Parquet bytes and properties; the same quarantine lines in any order."""
    g, w = _manifest(got), _manifest(want)
    assert {k: v for k, v in g.items() if k.startswith("data/")} == {
        k: v for k, v in w.items() if k.startswith("data/")
    }, where
    assert got.properties == want.properties, where

    def lines(a: Artifact) -> list[str]:
        return sorted(
            line
            for f in sorted((Path(a.uri) / "quarantine").glob("*.jsonl"))
            for line in f.read_text().splitlines()
        )

    assert lines(got) == lines(want), where


def _anomaly_keys(art: Artifact) -> list[tuple[Any, ...]]:
    """Anomalies but drift/skew comparisons (their distances come from the sketches,
    which are not deterministic yet: one near its threshold flips from run to run)."""
    return sorted(
        (a.get("feature"), a.get("type"), a.get("severity"))
        for a in art.read_json("anomalies.json")
        if not str(a.get("type")).startswith("COMPARATOR_")
    )


def test_demo_data_half_runs_its_tasks_on_dask_workers(
    cluster: LocalCluster, prefect_api: str, tmp_path: Path
) -> None:
    from jaxtx.core.settings import Settings
    from jaxtx.pipelines.demo import ensure_demo_data

    data = ensure_demo_data(tmp_path / "demo-data", rows=2000)
    local_home, dask_home = tmp_path / "local", tmp_path / "dask"
    local = _demo(data, local_home).run(track=False, progress=False)
    settings = Settings.resolve(
        home=dask_home,
        task_runner=f"dask://{cluster.scheduler_address.removeprefix('tcp://')}",
        prefect_api_url=prefect_api,
        environ={},
    )
    remote = _demo(data, dask_home).run(track=False, progress=False, settings=settings)

    with Client(cluster.scheduler_address) as client:
        worker_pids = set(client.run(os.getpid).values())
    assert os.getpid() not in worker_pids
    assert set(remote.nodes) == set(local.nodes) and len(remote.executed_nodes) == 10
    ran_on = {n: r.outputs[next(iter(r.outputs))].producer["pid"] for n, r in remote.nodes.items()}
    assert set(ran_on.values()) <= worker_pids, ran_on  # every component, built-in or not
    assert int(remote["WhereAmI"].metrics["pid"]) in worker_pids
    print(f"driver pid {os.getpid()}, worker pids {sorted(worker_pids)}, nodes ran on {ran_on}")
    assert all(
        r.outputs[next(iter(r.outputs))].producer["pid"] == os.getpid()
        for r in local.nodes.values()
    )
    differ = []
    for node_id, run in local.nodes.items():
        for name, art in run.outputs.items():
            other = remote[node_id].outputs[name]
            if other.fingerprint != art.fingerprint:
                differ.append(f"{node_id}.{name}")
            if run.component == "StatisticsGen":  # sketches' bytes vary until deterministic
                assert art.split_names, node_id
                for split in art.split_names:
                    _same_exact_stats(other.split(split), art.split(split), f"{node_id}/{split}")
            if isinstance(art, Examples) and other.fingerprint != art.fingerprint:
                _same_examples(other, art, f"{node_id}.{name}")
            if node_id == "ExampleValidator":
                assert _anomaly_keys(other) == _anomaly_keys(art)
    # Not byte-identical yet: statistics sketches, the quarantine's line order (the
    # same lines), and the anomalies that quote them. Everything else is.
    allowed = ("StatisticsGen", "ExampleGen.examples", "ExampleValidator.anomalies")
    assert not [d for d in differ if not any(a in d for a in allowed)], differ

    # The flow run and its task runs are on the Prefect server.
    req = urllib.request.Request(
        f"{prefect_api}/task_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        names = {t["name"] for t in json.loads(r.read())}
    assert set(remote.nodes) <= names
