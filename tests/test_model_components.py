"""The model path as components: Transform -> Trainer -> Evaluator -> InfraValidator -> Pusher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from jaxtx import Pipeline
from jaxtx.components import load_artifact
from jaxtx.components.bulk_inferrer import BulkInferrer
from jaxtx.components.evaluator import Evaluator
from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.infra_validator import InfraValidator
from jaxtx.components.pusher import Pusher
from jaxtx.components.trainer import Trainer
from jaxtx.components.transform import Transform
from jaxtx.pipelines.cli import main
from jaxtx.pipelines.demo import LABEL, preprocess
from jaxtx.pipelines.demo_data import generate_census

pytestmark = pytest.mark.slow


def _col(s: pd.Series) -> np.ndarray:
    """pandas -> what the serving runtime takes: None for missing strings."""
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        return np.array([None if pd.isna(v) else v for v in s], dtype=object)
    return s.to_numpy(dtype=np.float32)


def _pipeline(csv: Path, home: Path, serving: Path, *, auc_floor: float = 0.7) -> Pipeline:
    with Pipeline("model-path", home=str(home)) as p:
        ex = ExampleGen(input_pattern=str(csv))
        tr = Transform(examples=ex, preprocessing_fn=preprocess, passthrough=[LABEL])
        model = Trainer(
            examples=tr.outputs.transformed_examples,
            transform_graph=tr.outputs.transform_graph,
            label=LABEL,
            epochs=3,
            batch_size=128,
            learning_rate=3e-3,
            name="census",
            early_stopping_patience=None,
            log_every_n_steps=5,
        )
        ev = Evaluator(
            model=model,
            examples=ex,
            label=LABEL,
            slicing_specs=[[], ["sex"]],
            sensitive_features=["sex"],
            num_bootstrap=20,
            thresholds=[
                {"metric": "auc", "lower": auc_floor},
                {"metric": "auc", "change": {"direction": "higher_is_better", "absolute": 0.05}},
            ],
            registered_model_name="census",
        )
        infra = InfraValidator(model=model, examples=ex, num_examples=16)
        Pusher(
            model=model,
            model_blessing=ev.outputs.blessing,
            infra_blessing=infra,
            serving_dir=str(serving),
            registered_model_name="census",
        )
    return p


def test_train_evaluate_push_then_baseline_and_rollback(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "census.csv"
    generate_census(2500, seed=11).to_csv(csv, index=False)
    home, serving = tmp_path / "home", tmp_path / "serving"
    p = _pipeline(csv, home, serving)

    r1 = p.run()
    client = MlflowClient(r1.tracking_uri)
    pushed = r1.output("Pusher").properties
    assert (
        pushed["pushed"] is True and pushed["version"] == 1 and pushed["previous_version"] is None
    )
    assert (serving / "census" / "1" / "predict.jaxexport").exists()
    blessing = json.loads(
        Path(r1.output("Evaluator", "blessing").file("blessing.json")).read_text()
    )
    assert blessing["blessed"] and "first model" in blessing["baseline"]["why"]
    infra = json.loads(Path(r1.output("InfraValidator").file("infra_blessing.json")).read_text())
    assert infra["blessed"] and infra["checks"][-1]["check"] == "answers"

    # Training curves are MLflow metric histories and a PNG; the model is an MLflow model.
    trainer_run = r1["Trainer"].mlflow_run_id
    assert len(client.get_metric_history(trainer_run, "loss")) == 3
    assert [m.value for m in client.get_metric_history(trainer_run, "learning_rate")] == [3e-3] * 3
    step_losses = client.get_metric_history(trainer_run, "step_loss")
    assert len(step_losses) >= 5 and all(m.step % 5 == 0 for m in step_losses)
    arts = [a.path for a in client.list_artifacts(trainer_run, "reports/model")]
    assert "reports/model/training_curves.png" in arts
    model = r1.output("Trainer", "model")
    import mlflow

    mlflow.set_tracking_uri(r1.tracking_uri)
    raw = generate_census(20, seed=3).drop(columns=[LABEL])
    via_mlflow = mlflow.pyfunc.load_model(model.properties["mlflow_model_uri"]).predict(raw)
    direct = model.load().predict({c: _col(raw[c]) for c in raw.columns})
    np.testing.assert_allclose(via_mlflow["probabilities"].to_numpy(), direct["probabilities"])

    # Evaluation reports: ROC, calibration, fairness with CIs, HTML.
    reports = Path(r1.output("Evaluator", "evaluation").uri) / "reports"
    assert {"roc.png", "calibration.png", "fairness.png", "evaluation.html"} <= {
        f.name for f in reports.iterdir()
    }

    # A second model: compared against the champion, pushed as version 2.
    r2 = p.run(params={"Trainer.seed": 1})
    assert "Trainer" in r2.executed_nodes and "ExampleGen" in r2.cached_nodes
    b2 = json.loads(Path(r2.output("Evaluator", "blessing").file("blessing.json")).read_text())
    assert "census@champion = version 1" in b2["baseline"]["why"]
    change = [c for c in b2["checks"] if c["kind"].startswith("change")][0]
    assert change["baseline"] is not None
    p2 = r2.output("Pusher").properties
    assert p2["version"] == 2 and p2["previous_version"] == 1
    assert client.get_model_version_by_alias("census", "champion").version in (2, "2")

    # Roll back: alias and served version go back to 1; version 2's copy is kept aside.
    capsys.readouterr()
    assert main(["rollback", "census", "--serving-dir", str(serving), "--home", str(home)]) == 0
    assert "from version 2 back to 1" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("census", "champion").version) == "1"
    assert not (serving / "census" / "2").exists()
    assert (serving / "census" / ".rolled-back" / "2" / "predict.jaxexport").exists()
    assert main(["rollback", "census", "--serving-dir", str(serving), "--home", str(home)]) == 1

    # Batch inference over the raw examples, with Beam.
    inferred = BulkInferrer(
        model=model, examples=r1.output("ExampleGen"), store=str(home / "artifacts")
    )
    table = inferred.read("eval")
    assert "prediction_probabilities" in table.column_names
    assert table.num_rows == r1.output("ExampleGen").properties["split_counts"]["eval"]
    first = table.slice(0, 4).to_pandas()
    again = model.load().predict({c: _col(first[c]) for c in raw.columns})
    np.testing.assert_allclose(first["prediction_probabilities"], again["probabilities"], rtol=1e-6)

    # The export loads in a fresh process that imports no training code.
    code = (
        "import sys, numpy as np; from jaxtx.serving.runtime import LoadedModel;"
        f"m = LoadedModel.load({str(model.model_dir)!r});"
        "out = m.predict({'age': [39.0], 'workclass': ['Private'], 'education': ['Bachelors'],"
        "'education_num': [13.0], 'marital_status': ['Never-married'], 'occupation': ['Sales'],"
        "'relationship': ['Not-in-family'], 'race': ['White'], 'sex': ['Male'], 'capital_gain': [0.0],"
        "'capital_loss': [0.0], 'hours_per_week': [40.0], 'native_region': [None]});"
        "assert 'jaxtx.trainer' not in sys.modules and 'jaxtx.components' not in sys.modules;"
        "print(float(out['probabilities'][0]))"
    )
    prob = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert 0.0 < prob < 1.0


def test_unblessed_model_is_not_pushed(tmp_path: Path) -> None:
    csv = tmp_path / "census.csv"
    generate_census(1500, seed=12).to_csv(csv, index=False)
    serving = tmp_path / "serving"
    r = _pipeline(csv, tmp_path / "home", serving, auc_floor=0.999).run()
    assert r.output("Evaluator", "blessing").properties["blessed"] is False
    props = r.output("Pusher").properties
    assert props["pushed"] is False and "not blessed" in props["reason"]
    assert not (serving / "census").exists()


def test_trainer_rejects_nan_labels_naming_label_and_file(tmp_path: Path, store) -> None:
    df = generate_census(600, seed=13).astype({LABEL: float})
    df.loc[5, LABEL] = np.nan
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    ex = ExampleGen(input_pattern=str(csv), store=store)
    tr = Transform(examples=ex, preprocessing_fn=preprocess, passthrough=[LABEL], store=store)
    with pytest.raises(ValueError, match=rf"label '{LABEL}' has 1 (missing|NaN) values in .*part-"):
        Trainer(
            examples=tr.transformed_examples,
            transform_graph=tr.transform_graph,
            label=LABEL,
            epochs=1,
            store=store,
        )
    assert load_artifact(tr.transformed_examples.uri)  # inputs untouched
    assert isinstance(pd.__version__, str)
