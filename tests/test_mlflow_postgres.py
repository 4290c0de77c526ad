"""The demo pipeline against an MLflow tracking server on PostgreSQL with proxied artifacts.

A real PostgreSQL (Debian's package, run from a temp data folder) and a real
``mlflow server --serve-artifacts`` on 127.0.0.1: the pipeline tracks its runs,
registers the model, moves the ``champion`` alias and pushes through the
server; ``jaxtx rollback`` moves the alias back through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _services import MlflowServer, Postgres, mlflow_server, patient_prefect, postgres

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _patient_prefect() -> Iterator[None]:
    with patient_prefect():
        yield


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


@pytest.fixture(scope="module")
def tracking(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    pg.create_database("mlflow")
    with mlflow_server(pg.url("mlflow"), tmp_path_factory.mktemp("mlflow-server")) as server:
        print(f"\nservices: {pg.version}; MLflow {server.version} server at {server.uri}")
        yield server


def test_demo_tracks_registers_pushes_and_rolls_back_through_the_server(
    pg: Postgres,
    tracking: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from jaxtx.pipelines.cli import main
    from jaxtx.pipelines.demo import MODEL_NAME, create_pipeline, ensure_demo_data

    home = tmp_path / "home"
    monkeypatch.setenv("JAXTX_HOME", str(home))
    data = ensure_demo_data(home / "demo-data", rows=3000)
    serving = home / "serving"
    pipeline = create_pipeline(str(data), home=str(home), serving_dir=str(serving), epochs=3)
    pipeline.tracking_uri = tracking.uri

    first = pipeline.run()
    assert len(first.executed_nodes) == 14 and first.tracking_uri == tracking.uri
    client = MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    exp = client.get_experiment_by_name("census-demo")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    assert len(client.search_runs([exp.experiment_id])) == 15  # 1 parent + 14 components
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == "1"
    assert (serving / MODEL_NAME / "1" / "predict.jaxexport").exists()

    # Everything went to PostgreSQL and through the artifact proxy, not to a local store.
    ((runs,),) = pg.query("mlflow", "SELECT count(*) FROM runs")
    ((versions,),) = pg.query("mlflow", "SELECT count(*) FROM model_versions")
    assert (runs, versions) == (15, 1)
    assert any(tracking.artifacts.rglob("MLmodel"))
    assert not (home / "mlflow.db").exists()
    mlflow.set_tracking_uri(tracking.uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    assert pyfunc.metadata.run_id is not None

    # A second model (another seed; a plain AUC floor so it is blessed): version 2.
    # Pushing the same model again would register nothing (idempotent push).
    second = pipeline.run(
        params={"Trainer.seed": 1, "Evaluator.thresholds": [{"metric": "auc", "lower": 0.5}]}
    )
    assert {"Trainer", "Evaluator", "Pusher"} <= set(second.executed_nodes)
    assert "ExampleGen" in second.cached_nodes
    mv = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert mv.version == "2" and mv.tags["jaxtx.previous_version"] == "1"

    # jaxtx rollback through the server (--tracking-uri, then $MLFLOW_TRACKING_URI).
    capsys.readouterr()
    rollback = ["rollback", MODEL_NAME, "--serving-dir", str(serving)]
    assert main([*rollback, "--tracking-uri", tracking.uri]) == 0
    assert "moved from version 2 back to 1" in capsys.readouterr().out
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == "1"
    assert client.get_model_version(MODEL_NAME, "2").tags["jaxtx.rolled_back"] == "true"
    assert not (serving / MODEL_NAME / "2").exists()
    assert (serving / MODEL_NAME / ".rolled-back" / "2").is_dir()
    # Nothing left to roll back to: a clear error, exit code 1.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.uri)
    assert main(rollback) == 1
    assert "first push" in capsys.readouterr().err
