"""Honest re-runs: checkpoints resume only the same execution, pushes are idempotent,
and a killed run is cleaned up by the next one (MLflow runs, staging, processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from jaxtx import Artifact, Output, Pipeline, RunContext, component
from jaxtx.components.evaluator import Evaluator
from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.pusher import Pusher
from jaxtx.components.trainer import Trainer
from jaxtx.components.transform import Transform
from jaxtx.pipelines.demo import LABEL, preprocess
from jaxtx.pipelines.demo_data import generate_census


class Marker(Artifact):
    """What a checkpointing toy component saw in its work folder."""


def test_retry_resumes_its_own_checkpoint_a_later_run_does_not(home: Path, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    @component(retries=1, retry_delay_seconds=0)
    def Checkpointing(out: Output[Marker], ctx: RunContext, *, path: str) -> None:
        n = int(Path(path).read_text()) if Path(path).exists() else 0
        Path(path).write_text(str(n + 1))
        assert ctx.work_dir is not None
        ckpt = ctx.work_dir / "step.txt"
        found = ckpt.read_text() if ckpt.exists() else None
        ckpt.write_text("step 7")
        if n == 0:
            raise ConnectionError("interrupted after a checkpoint")
        (out.path / "seen.json").write_text(json.dumps(found))

    p = Pipeline("ckpt", nodes=[Checkpointing.node(path=str(attempts))], home=str(home))
    r1 = p.run()
    assert r1.output("Checkpointing").read_json("seen.json") == "step 7"  # the retry resumed
    assert not list((home / "artifacts" / ".work").glob("*/*")), "work folder kept after success"
    attempts.write_text("1")  # no failure this time
    r2 = p.run(cache=False)
    assert r2.output("Checkpointing").read_json("seen.json") is None  # a new execution


def _model_pipeline(csv: Path, home: Path, serving: Path, *, epochs: int = 2) -> Pipeline:
    with Pipeline("reruns", home=str(home)) as p:
        ex = ExampleGen(input_pattern=str(csv))
        tr = Transform(examples=ex, preprocessing_fn=preprocess, passthrough=[LABEL])
        model = Trainer(
            examples=tr.outputs.transformed_examples,
            transform_graph=tr.outputs.transform_graph,
            label=LABEL,
            epochs=epochs,
            batch_size=64,
            learning_rate=3e-3,
            name="census",
            early_stopping_patience=None,
        )
        ev = Evaluator(
            model=model,
            examples=ex,
            label=LABEL,
            num_bootstrap=5,
            thresholds=[{"metric": "auc", "lower": 0.5}],
            registered_model_name="census",
        )
        Pusher(
            model=model,
            model_blessing=ev.outputs.blessing,
            serving_dir=str(serving),
            registered_model_name="census",
        )
    return p


def _versions(tracking_uri: str) -> list[str]:
    client = MlflowClient(tracking_uri)
    return sorted(str(v.version) for v in client.search_model_versions("name='census'"))


@pytest.fixture(scope="module")
def census_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    csv = tmp_path_factory.mktemp("data") / "census.csv"
    generate_census(800, seed=5).to_csv(csv, index=False)
    return csv


def test_cache_false_trains_from_step_zero_and_push_is_idempotent(
    census_csv: Path, tmp_path: Path
) -> None:
    home, serving = tmp_path / "home", tmp_path / "serving"
    p = _model_pipeline(census_csv, home, serving)
    r1 = p.run()
    assert r1.output("Pusher").properties["version"] == 1
    assert "Summary of reruns" in r1.summary and "pushed census version 1" in r1.summary

    # cache=False on the Trainer: it trains again from step 0 (no finished checkpoint
    # is resumed), gives the same model, and Pusher pushes nothing.
    r2 = p.with_node(p["Trainer"].with_options(cache=False)).run()
    assert "Trainer" in r2.executed_nodes and "Transform" in r2.cached_nodes
    history = json.loads((r2.output("Trainer").model_dir / "history.json").read_text())
    assert history["initial_step"] == 0, "cache=False resumed a finished checkpoint"
    assert not list((home / "artifacts" / ".work").glob("*/*"))
    pushed = r2.output("Pusher").properties
    assert pushed["pushed"] is False and pushed["same_as_version"] == 1, pushed
    assert "same model as census version 1" in r2["Pusher"].outcome.line
    assert _versions(r2.tracking_uri) == ["1"]
    assert sorted(d.name for d in (serving / "census").iterdir()) == ["1"]
    client = MlflowClient(r2.tracking_uri)
    parent = client.get_run(r2.mlflow_run_id)
    assert parent.data.tags["jaxtx.pushed_version"] == "none"
    assert "same model" in parent.data.tags["jaxtx.push_reason"]
    assert parent.data.tags["jaxtx.blessed"] == "true"
    assert parent.info.run_name == "reruns #2" and "auc" in parent.data.metrics
    assert "not pushed: same model" in parent.data.tags["mlflow.note.content"]
    kind = client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"

    # The registered version points at the Trainer's run and links the others.
    v1 = client.get_model_version("census", "1")
    assert v1.run_id == r1["Trainer"].mlflow_run_id
    assert v1.tags["jaxtx.evaluator_run"] == r1["Evaluator"].mlflow_run_id
    assert v1.tags["jaxtx.pusher_run"] == r1["Pusher"].mlflow_run_id
    assert "Training (final epoch)" in v1.description


def test_damaged_transform_then_two_reruns_push_nothing_new(
    census_csv: Path, tmp_path: Path
) -> None:
    home, serving = tmp_path / "home", tmp_path / "serving"
    p = _model_pipeline(census_csv, home, serving)
    r1 = p.run()
    assert _versions(r1.tracking_uri) == ["1"]
    graph = Path(r1.output("Transform", "transform_graph").uri) / "transform_graph.json"
    graph.write_text(graph.read_text() + " ")
    for i in range(2):
        r = p.run()
        assert i > 0 or "Transform" in r.executed_nodes
        assert _versions(r.tracking_uri) == ["1"]
        assert sorted(d.name for d in (serving / "census").iterdir()) == ["1"]


_KILLED_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_reruns import _model_pipeline
from pathlib import Path
p = _model_pipeline(Path({csv!r}), Path({home!r}), Path({serving!r}), epochs=400)
p.run()
"""


def _checkpointed(home: Path) -> bool:
    """A Trainer checkpoint exists (training is under way)."""
    return any((home / "artifacts" / ".work").glob("*/Trainer-*/checkpoints/*"))


def test_kill_9_during_training_then_rerun_cleans_up(census_csv: Path, tmp_path: Path) -> None:
    home, serving = tmp_path / "home", tmp_path / "serving"
    script = _KILLED_SCRIPT.format(
        tests=str(Path(__file__).parent), csv=str(census_csv), home=str(home), serving=str(serving)
    )
    env = {**os.environ, "JAXTX_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 300
        while not _checkpointed(home):
            assert proc.poll() is None, "the pipeline ended before training started"
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.5)  # polling, not synchronization: the condition is checked
        running = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_runs(
            ["1"], "attributes.status = 'RUNNING' and tags.`jaxtx.node` = 'Trainer'"
        )
        assert running, "the Trainer's MLflow run is not RUNNING while it trains"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert list((home / "artifacts" / ".staging").glob("out-*")), "no staging while training"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans after kill -9: {[c.cmdline() for c in alive]}"

    p = _model_pipeline(census_csv, home, serving)
    r = p.run()
    assert {"ExampleGen", "Transform"} <= set(r.cached_nodes)
    client = MlflowClient(r.tracking_uri)
    exp = client.get_experiment_by_name("reruns").experiment_id
    killed = client.search_runs([exp], "attributes.status = 'KILLED'")
    names = {k.data.tags.get("jaxtx.node", "parent") for k in killed}
    assert {"Trainer", "parent"} <= names, names
    assert all("gone" in k.data.tags["jaxtx.killed"] for k in killed)
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")
    assert not list((home / "artifacts" / ".staging").glob("out-*"))
    assert len(_versions(r.tracking_uri)) <= 1
