"""Tuner: an Optuna study that resumes after a kill, and a pipeline whose Tuner's best
parameters (trials as nested MLflow runs) beat the Trainer's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from jaxtx.components import Hyperparameters, Tuner
from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.trainer import Trainer
from jaxtx.components.transform import Transform
from jaxtx.core.model_format import LoadedModel, read_quantization
from jaxtx.core.tuning import parse_search_space, run_study
from jaxtx.pipelines import Pipeline
from jaxtx.pipelines.demo import LABEL, preprocess
from jaxtx.pipelines.demo_data import generate_census

SPACE = {
    "x": {"type": "float", "low": -3.0, "high": 3.0},
    "k": {"type": "int", "low": 1, "high": 4},
}

# A study in a child process: each trial prints "start <number>"; trial 4 prints
# "blocked 4" and waits on stdin, which never comes: the parent kills it there.
_CHILD = textwrap.dedent(
    """
    import sys
    from jaxtx.core.tuning import run_study

    def objective(number, params, report):
        print("start", number, flush=True)
        if number == 4 and sys.argv[2] == "block":
            print("blocked", number, flush=True)
            sys.stdin.read()
        for epoch in range(3):
            report(epoch, (params["x"] - 1.0) ** 2 + epoch * 0.0)
        return (params["x"] - 1.0) ** 2 + 0.1 * params["k"]

    space = {"x": {"type": "float", "low": -3.0, "high": 3.0},
             "k": {"type": "int", "low": 1, "high": 4}}
    result = run_study(objective, space, storage=sys.argv[1], num_trials=10, seed=3)
    print("best", result.best_value, len(result.trials), flush=True)
    """
)


def test_killed_study_resumes_and_trial_numbers_continue(tmp_path: Path) -> None:
    storage = tmp_path / "study.db"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(storage), "block"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line.split())
        if line.startswith("blocked"):
            break
    child.kill()
    child.wait()
    assert [line[1] for line in lines if line[0] == "start"] == ["0", "1", "2", "3", "4"]

    seen: list[int] = []

    def objective(number, params, report):
        seen.append(number)
        return (params["x"] - 1.0) ** 2 + 0.1 * params["k"]

    result = run_study(objective, SPACE, storage=storage, num_trials=10, seed=3)
    states = {t["number"]: t["state"] for t in result.trials}
    assert states[4] == "FAIL"  # left running by the killed process
    assert seen == list(range(5, 11))  # numbering continues after the killed trial
    finished = [n for n, s in states.items() if s in ("COMPLETE", "PRUNED")]
    assert len(finished) == 10
    # Running it again finds the study complete and runs nothing.
    seen.clear()
    again = run_study(objective, SPACE, storage=storage, num_trials=10, seed=3)
    assert seen == [] and again.best_value == result.best_value


def test_pruning_stops_hopeless_trials(tmp_path: Path) -> None:
    def objective(number, params, report):
        for epoch in range(5):
            report(epoch, abs(params["x"] - 1.0) + 1.0 / (epoch + 1))
        return abs(params["x"] - 1.0)

    result = run_study(objective, SPACE, storage=tmp_path / "s.db", num_trials=25, seed=0)
    states = [t["state"] for t in result.trials]
    assert states.count("PRUNED") >= 3
    assert abs(result.best_params["x"] - 1.0) < 0.5


def test_search_space_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="'lr': needs numbers low < high"):
        parse_search_space({"lr": {"type": "float", "low": 1.0, "high": 0.1}})
    with pytest.raises(ValueError, match="'lr': log=true needs low > 0"):
        parse_search_space({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}})
    with pytest.raises(ValueError, match="'h': type must be one of"):
        parse_search_space({"h": {"type": "list"}})
    with pytest.raises(ValueError, match="'h': categorical needs"):
        parse_search_space({"h": {"type": "categorical", "choices": []}})


@pytest.mark.slow
def test_tuner_beats_defaults_with_trials_as_nested_runs(tmp_path: Path) -> None:
    csv = tmp_path / "census.csv"
    generate_census(1500, seed=5).to_csv(csv, index=False)
    common = {"label": LABEL, "epochs": 3, "early_stopping_patience": None, "name": "census"}
    with Pipeline("tuning", home=str(tmp_path / "home")) as p:
        ex = ExampleGen(input_pattern=str(csv))
        tr = Transform(examples=ex, preprocessing_fn=preprocess, passthrough=[LABEL])
        tuner = Tuner(
            examples=tr.outputs.transformed_examples,
            transform_graph=tr.outputs.transform_graph,
            label=LABEL,
            search_space={
                "learning_rate": {"type": "float", "low": 1e-4, "high": 0.05, "log": True},
                "hidden": {"type": "categorical", "choices": [[16], [64, 32]]},
            },
            num_trials=8,
            epochs=3,
        )
        Trainer(
            examples=tr.outputs.transformed_examples,
            transform_graph=tr.outputs.transform_graph,
            id="Default",
            **common,
        )
        Trainer(
            examples=tr.outputs.transformed_examples,
            transform_graph=tr.outputs.transform_graph,
            hyperparameters=tuner.outputs.best,
            quantize_int8=True,
            id="Tuned",
            **common,
        )
    run = p.run()
    best = run.output("Tuner", "best")
    assert isinstance(best, Hyperparameters)
    values = best.values()
    assert set(values) == {"learning_rate", "hidden"}
    default_loss = run.output("Default").properties["final_metrics"]["val_loss"]
    tuned_loss = run.output("Tuned").properties["final_metrics"]["val_loss"]
    print(f"val_loss default={default_loss:.4f} tuned={tuned_loss:.4f} with {values}")
    assert tuned_loss < default_loss
    tuned = run.output("Tuned")
    training = json.loads(Path(tuned.file("training.json")).read_text())
    # The int8 variant of the tuned model loads and agrees with the float model.
    table = run.output("ExampleGen").read("eval").slice(0, 64)
    p_float = tuned.load().predict(table)["probabilities"]
    p_int8 = LoadedModel.load(tuned.quantized_model_dir).predict(table)["probabilities"]
    assert np.max(np.abs(p_float - p_int8)) < 0.05
    assert read_quantization(tuned.quantized_model_dir)["num_quantized"] >= 2
    assert str(tuple(values["hidden"])) in training["model_def"]

    client = MlflowClient(run.tracking_uri)
    tuner_run = client.get_run(run["Tuner"].mlflow_run_id)
    children = client.search_runs(
        [tuner_run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{tuner_run.info.run_id}'",
    )
    assert len(children) == 8
    states = {c.data.tags["jaxtx.trial_state"] for c in children}
    assert states <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states
    first = next(c for c in children if c.data.tags["jaxtx.trial"] == "0")
    assert len(client.get_metric_history(first.info.run_id, "val_loss")) == 3
    assert "learning_rate" in first.data.params
