"""Int8 weight-only export: a normal jaxtx.model/1 directory that loads, serves over HTTP
and through the MLflow pyfunc, and whose metric change the Evaluator measures and gates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "serving"))

from _serving_server import RunningServer
from _toy_model import toy_mlp_params, toy_mlp_predict, toy_table, write_toy_mlp

from jaxtx import ArtifactStore
from jaxtx.components._artifacts import Examples, Model
from jaxtx.components._mlflow_model import log_jaxtx_model
from jaxtx.components.evaluator import Evaluator
from jaxtx.core.model_format import (
    QUANTIZATION_FILE,
    LoadedModel,
    quantize_predict,
    read_quantization,
    write_quantization,
)
from jaxtx.serving.server import ServerConfig


def _write_pair(root: Path) -> tuple[LoadedModel, LoadedModel]:
    params = toy_mlp_params(seed=1)
    float_model = write_toy_mlp(root / "model", params)
    q_fn, q_params, info = quantize_predict(toy_mlp_predict, params, min_size=64)
    int8 = write_toy_mlp(root / "model_int8", q_params, q_fn)
    write_quantization(root / "model_int8", info)
    return float_model, int8


def test_int8_export_is_smaller_close_and_described(tmp_path: Path) -> None:
    float_model, int8 = _write_pair(tmp_path)
    info = read_quantization(tmp_path / "model_int8")
    assert info is not None and read_quantization(tmp_path / "model") is None
    assert info["scheme"] == "int8_weight_only_per_channel"
    assert {p["path"] for p in info["parameters"]} == {"['w1']", "['emb']", "['w2']"}
    assert info["num_kept"] == 2 and info["quantized_bytes"] < 0.6 * info["float_bytes"]
    size = {
        name: (tmp_path / name / "predict.jaxexport").stat().st_size
        for name in ("model", "model_int8")
    }
    assert size["model_int8"] < size["model"]
    table = toy_table(500, seed=2, missing=True)
    p_float = float_model.predict(table)["probabilities"]
    p_int8 = int8.predict(table)["probabilities"]
    assert np.max(np.abs(p_float - p_int8)) < 0.02
    assert not np.array_equal(p_float, p_int8)  # the weights really are int8
    assert (tmp_path / "model_int8" / QUANTIZATION_FILE).exists()


def test_int8_model_serves_over_http_and_loads_as_pyfunc(tmp_path: Path) -> None:
    _, int8 = _write_pair(tmp_path / "m")
    base = tmp_path / "serving" / "toy"
    base.mkdir(parents=True)
    (tmp_path / "m" / "model_int8").rename(base / "1")
    server = RunningServer(ServerConfig(base_dir=tmp_path / "serving", freeze_gc=False))
    try:
        server.wait_ready()
        rows = [{"x1": 1.0, "x2": -2.0, "x3": 0.5, "x4": 3.0, "color": "red"}]
        answer = server.client.post("/v1/models/toy:predict", json={"instances": rows})
        assert answer.status_code == 200, answer.text
        served = answer.json()["predictions"][0]["probabilities"]
    finally:
        server.stop()
    local = LoadedModel.load(base / "1")
    direct = float(local.predict(rows)["probabilities"][0])
    assert served == pytest.approx(direct, rel=1e-6)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("q"))
    frame = toy_table(5, seed=3).select(["x1", "x2", "x3", "x4", "color"]).to_pandas()
    model_uri = log_jaxtx_model(
        tracking_uri=uri, run_id=run.info.run_id, model_dir=base / "1", input_example=frame
    )
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(model_uri).predict(frame)
    np.testing.assert_allclose(
        loaded["probabilities"].to_numpy(), local.predict(frame)["probabilities"], rtol=1e-6
    )


def test_evaluator_measures_and_gates_the_metric_change(store: ArtifactStore) -> None:
    out = store.new_output(Model, "Test", "model")
    float_model, _ = _write_pair(out.path)
    out.properties.update(task="binary_classification", quantized_model="model_int8")
    model = store.commit(out)
    table = toy_table(1500, seed=4)
    labels = np.random.default_rng(5).binomial(1, float_model.predict(table)["probabilities"])
    table = table.append_column("label", pa.array(labels.astype(np.int64)))
    ex = store.new_output(Examples, "Test", "examples")
    (ex.path / "data" / "eval").mkdir(parents=True)
    pq.write_table(table, ex.path / "data" / "eval" / "part-00000-of-00001.parquet")
    ex.properties["split_names"] = ["eval"]
    examples = store.commit(ex)

    outputs = Evaluator(
        model=model,
        examples=examples,
        label="label",
        num_bootstrap=10,
        thresholds=[
            {"metric": "quantization.auc", "lower": -0.01},
            {"metric": "quantization.log_loss", "upper": 0.01},
            {"metric": "quantization.accuracy@0.5", "lower": 0.05},  # demands a gain: fails
        ],
        store=store,
    )
    doc = json.loads(Path(outputs.evaluation.file("evaluation.json")).read_text())
    report = doc["quantization"]
    auc = report["metrics"]["auc"]
    assert abs(auc["change"]) < 0.01 and auc["change"] == auc["quantized"] - auc["float"]
    assert report["size_bytes"]["quantized"] < report["size_bytes"]["float"]
    assert report["quantization"]["scheme"] == "int8_weight_only_per_channel"
    blessing = json.loads(Path(outputs.blessing.file("blessing.json")).read_text())
    assert [c["passed"] for c in blessing["checks"]] == [True, True, False]
    assert blessing["blessed"] is False
    html = (Path(outputs.evaluation.uri) / "reports" / "evaluation.html").read_text()
    assert "Int8 variant" in html
