"""Every prediction path gives the same outputs for the same raw rows.

One small model is fitted with the transform library (a vocabulary, a hash of
the same column through a ``source`` entry, and a hash of its own column),
exported, and then fed the same raw rows (nulls, unseen categories, empty
strings) through: the numpy transform graph + the predict function,
``LoadedModel`` (column dict and Arrow table), ``jaxtx.trainer.load_exported``,
the MLflow pyfunc (real SQLite store), the HTTP server (TF REST rows and
columns, Open Inference v2 on 127.0.0.1) and BulkInferrer (Beam).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jaxtx.trainer as jt
import jaxtx.trainer.transform as tx
from jaxtx.core.model_format import InputError, LoadedModel, StringLookup, to_model_inputs

sys.path.insert(0, str(Path(__file__).parent / "serving"))

from _serving_server import RunningServer

REGIONS = ["north", "south", "east", "west", "centre"]
WORKCLASS = ["Private", "Self-emp", "Local-gov"]
LABEL = "label"

#: Raw rows: nulls in every column, unseen categories, an empty string.
RAW: dict[str, list[Any]] = {
    "age": [39.0, None, 52.0, 18.0, 70.5, None, 33.0, 45.0],
    "hours": [40.0, 20.0, None, 60.0, 10.0, 35.0, 80.0, 1.0],
    "workclass": ["Private", None, "Never-seen", "Self-emp", "", "Local-gov", "Private", "État"],
    "region": ["north", "south", None, "atlantis", "west", "", "centre", "east"],
}
NAMES = list(RAW)


def _training_table(n: int = 400, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.uniform(17, 90, n)
    age_null = rng.random(n) < 0.05
    wc = rng.choice(WORKCLASS, n).astype(object)
    wc[rng.random(n) < 0.05] = None
    region = rng.choice(REGIONS, n).astype(object)
    return pa.table(
        {
            "age": pa.array(age, mask=age_null),
            "hours": pa.array(rng.uniform(1, 99, n)),
            "workclass": pa.array(wc.tolist(), pa.string()),
            "region": pa.array(region.tolist(), pa.string()),
            LABEL: pa.array(rng.integers(0, 2, n).astype(np.float64)),
        }
    )


def _preprocess(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
    return {
        "age": tx.scale_to_z_score(tx.fill_missing(inputs["age"], "mean")),
        "hours": tx.scale_to_0_1(inputs["hours"]),
        "workclass": tx.vocabulary(inputs["workclass"], num_oov_buckets=2),
        "wc_hash": tx.hash_strings(inputs["workclass"], num_buckets=4),
        "region": tx.hash_strings(inputs["region"], num_buckets=7),
    }


def _predict(params: Mapping[str, Any], f: Mapping[str, Any]) -> dict[str, Any]:
    logit = (
        params["w"][0] * jnp.nan_to_num(f["age"])
        + params["w"][1] * jnp.nan_to_num(f["hours"], nan=-1.0)
        + jnp.asarray(params["wc"])[f["workclass"]]
        + jnp.asarray(params["wc_hash"])[f["wc_hash"]]
        + jnp.asarray(params["region"])[f["region"]]
    )
    return {"logits": logit, "probabilities": jax.nn.sigmoid(logit)}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    """(transform graph, params, model directory ``<base>/paths/1``)."""
    base = tmp_path_factory.mktemp("paths")
    data = base / "train"
    data.mkdir()
    pq.write_table(_training_table(), data / "part-0.parquet")
    graph = tx.analyze(_preprocess, data)
    cards = {c.name: c.cardinality for c in graph.output_columns}
    params = {
        "w": np.array([0.7, -1.3], np.float32),
        "wc": np.linspace(-1, 1, cards["workclass"]).astype(np.float32),
        "wc_hash": np.linspace(0.5, -0.5, cards["wc_hash"]).astype(np.float32),
        "region": np.linspace(-2, 2, cards["region"]).astype(np.float32),
    }
    model_dir = base / "models" / "paths" / "1"
    tx.export_transformed_model(
        graph,
        _predict,
        params,
        model_dir,
        name="paths",
        task="binary_classification",
        outputs={"probabilities": "float32", "logits": "float32"},
    )
    return graph, params, model_dir


@pytest.fixture(scope="module")
def reference(fitted: tuple[Any, dict[str, Any], Path]) -> dict[str, np.ndarray]:
    """The numpy transform graph, then the predict function: the training-time view."""
    graph, params, _ = fitted
    features = graph.apply_numpy(RAW)
    out = jax.jit(_predict)(params, features)
    return {k: np.asarray(v) for k, v in out.items()}


def _same(got: Mapping[str, Any], want: Mapping[str, np.ndarray], where: str) -> None:
    for name in ("probabilities", "logits"):
        np.testing.assert_allclose(
            np.asarray(got[name], np.float32),
            want[name],
            rtol=2e-6,
            atol=2e-6,
            err_msg=f"{where}: {name}",
        )


def test_the_model_uses_vocabulary_hash_and_source_entries(fitted: Any) -> None:
    _, _, model_dir = fitted
    entries = json.loads((model_dir / "preprocess.json").read_text())
    assert entries["workclass__workclass"]["kind"] == "vocabulary"
    assert entries["workclass__wc_hash"] == {
        "kind": "hash",
        "num_buckets": 4,
        "default": "",
        "source": "workclass",
    }
    assert entries["region"] == {"kind": "hash", "num_buckets": 7, "default": ""}


def test_loaded_model_column_dict_and_table(fitted: Any, reference: Any) -> None:
    model = LoadedModel.load(fitted[2])
    _same(model.predict(RAW), reference, "LoadedModel, column dict")
    table = pa.table({k: pa.array(v) for k, v in RAW.items()} | {LABEL: pa.array([1.0] * 8)})
    _same(model.predict(table), reference, "LoadedModel, Arrow table")
    _same(model.predict(table.to_batches()[0]), reference, "LoadedModel, RecordBatch")
    rows = [{k: RAW[k][i] for k in NAMES if RAW[k][i] is not None} for i in range(8)]
    _same(model.predict(rows), reference, "LoadedModel, JSON rows")


def test_load_exported_honours_hash_entries(fitted: Any, reference: Any) -> None:
    """Regression: ``load_exported`` mapped every string of a hash entry to id 0."""
    loaded = jt.load_exported(fitted[2])
    features = {
        "age": np.array([np.nan if v is None else v for v in RAW["age"]], np.float32),
        "hours": np.array([np.nan if v is None else v for v in RAW["hours"]], np.float32),
        "workclass": np.array(RAW["workclass"], dtype=object),
        "region": np.array(RAW["region"], dtype=object),
    }
    _same(loaded(features), reference, "load_exported")


def test_load_exported_hash_entry_from_trainer_export(tmp_path: Path) -> None:
    """Regression, trainer export path: a plain ``"kind": "hash"`` entry."""
    table = jnp.linspace(-1.0, 1.0, 5)

    def predict(params: Any, f: Mapping[str, Any]) -> dict[str, Any]:
        return {"score": jnp.asarray(params)[f["city"]] + 0.0 * f["x"]}

    sig = jt.make_signature(
        "hashed", "regression", {"x": "float32", "city": "string"}, {"score": "float32"}
    )
    pre = {"city": {"kind": "hash", "num_buckets": 5, "default": ""}}
    out = jt.export_model(predict, table, sig, tmp_path / "m", preprocess=pre)
    cities = ["paris", "rome", "oslo", None, "lima"]
    got = jt.load_exported(out)(
        {"x": np.zeros(5, np.float32), "city": np.array(cities, dtype=object)}
    )["score"]
    ids = StringLookup((), num_oov_buckets=5, kind="hash").ids(cities)
    assert len(set(ids.tolist())) > 1  # the cities do not all share one bucket
    np.testing.assert_allclose(got, np.asarray(table)[ids], rtol=1e-6)


def test_missing_column_is_named_never_replaced(fitted: Any, tmp_path: Path) -> None:
    """Regression: a missing column was replaced by the table's last column (the label)."""
    model = LoadedModel.load(fitted[2])
    table = pa.table(
        {"age": RAW["age"], "hours_per_week": RAW["hours"], "workclass": RAW["workclass"]}
        | {"region": RAW["region"], LABEL: [0.0] * 8}
    )
    with pytest.raises(InputError, match=r"'hours'.*no such column.*did you mean 'hours_per_week'"):
        to_model_inputs(table, model)
    with pytest.raises(InputError, match=r"'hours'.*did you mean 'hours_per_week'"):
        model.predict(table.to_pandas())
    from jaxtx.serving.bulk import bulk_predict

    pq.write_table(table, tmp_path / "part-0.parquet")
    with pytest.raises(Exception, match=r"'hours'.*did you mean 'hours_per_week'"):
        bulk_predict(fitted[2], [tmp_path / "part-0.parquet"], tmp_path / "out")


def test_mlflow_pyfunc(fitted: Any, reference: Any, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from jaxtx.components._mlflow_model import log_jaxtx_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("paths", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    frame = pd.DataFrame(RAW)
    model_uri = log_jaxtx_model(
        tracking_uri=uri, run_id=run.info.run_id, model_dir=fitted[2], input_example=frame
    )
    client.set_terminated(run.info.run_id)
    # Load from the logged model's storage location: no process-wide tracking URI.
    location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    loaded = mlflow.pyfunc.load_model(location)
    got = loaded.predict(frame.assign(**{LABEL: 0.0}))
    _same({k: got[k].to_numpy() for k in got.columns}, reference, "MLflow pyfunc")


def _v2_body(raw: Mapping[str, list[Any]]) -> tuple[bytes, str]:
    """An Open Inference v2 request: floats as binary FP32 (NaN = missing), strings as JSON."""
    binary = b""
    inputs = []
    for name in ("age", "hours"):
        data = np.array([np.nan if v is None else v for v in raw[name]], np.float32).tobytes()
        inputs.append(
            {
                "name": name,
                "shape": [len(raw[name])],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(data)},
            }
        )
        binary += data
    for name in ("workclass", "region"):
        inputs.append(
            {"name": name, "shape": [len(raw[name])], "datatype": "BYTES", "data": raw[name]}
        )
    head = json.dumps({"inputs": inputs}).encode()
    return head + binary, str(len(head))


def test_http_server_tf_rest_and_v2(fitted: Any, reference: Any, tmp_path: Path) -> None:
    from jaxtx.serving.server import ServerConfig

    shutil.copytree(fitted[2], tmp_path / "paths" / "1")
    server = RunningServer(ServerConfig(base_dir=tmp_path, freeze_gc=False))
    try:
        server.wait_ready()
        rows = [{k: RAW[k][i] for k in NAMES} for i in range(8)]
        r = server.client.post("/v1/models/paths:predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        got = {k: [p[k] for p in preds] for k in ("probabilities", "logits")}
        _same(got, reference, "TF REST rows")
        r = server.client.post("/v1/models/paths:predict", json={"inputs": RAW})
        assert r.status_code == 200, r.text
        _same(r.json()["outputs"], reference, "TF REST columns")
        body, head_len = _v2_body(RAW)
        r = server.client.post(
            "/v2/models/paths/infer",
            content=body,
            headers={"Inference-Header-Content-Length": head_len},
        )
        assert r.status_code == 200, r.text
        _same({o["name"]: o["data"] for o in r.json()["outputs"]}, reference, "v2")
    finally:
        server.stop()


def test_bulk_inferrer(fitted: Any, reference: Any, tmp_path: Path) -> None:
    from jaxtx.components import ArtifactStore
    from jaxtx.components._artifacts import Examples, Model
    from jaxtx.components.bulk_inferrer import BulkInferrer

    store = ArtifactStore(tmp_path / "artifacts")
    ex_out = store.new_output(Examples, "Test", "examples")
    (ex_out.path / "data" / "eval").mkdir(parents=True)
    table = pa.table({k: pa.array(v) for k, v in RAW.items()} | {LABEL: pa.array([1.0] * 8)})
    pq.write_table(table.slice(0, 5), ex_out.path / "data" / "eval" / "part-0.parquet")
    pq.write_table(table.slice(5), ex_out.path / "data" / "eval" / "part-1.parquet")
    ex_out.properties.update(split_names=["eval"], split_counts={"eval": 8})
    examples = store.commit(ex_out)
    model_out = store.new_output(Model, "Test", "model")
    shutil.copytree(fitted[2], model_out.path / "model")
    model_out.properties.update(task="binary_classification")
    model = store.commit(model_out)

    result = BulkInferrer(
        model=model, examples=examples, batch_rows=3, store=str(tmp_path / "artifacts")
    )
    out = result.read("eval")
    assert out.column_names == [*NAMES, LABEL, "prediction_probabilities", "prediction_logits"]
    assert out.column(LABEL).to_pylist() == [1.0] * 8  # inputs kept as they are
    got = {
        "probabilities": out["prediction_probabilities"].to_numpy(),
        "logits": out["prediction_logits"].to_numpy(),
    }
    _same(got, reference, "BulkInferrer")


def test_bulk_predict_library_and_evaluator_scoring(
    fitted: Any, reference: Any, tmp_path: Path
) -> None:
    """The libraries under BulkInferrer and the Evaluator, without the component machinery."""
    from jaxtx.serving.bulk import bulk_predict
    from jaxtx.validation.model_scoring import evaluate_predictions, score_table

    table = pa.table({k: pa.array(v) for k, v in RAW.items()} | {LABEL: pa.array([1.0, 0.0] * 4)})
    pq.write_table(table, tmp_path / "part-0.parquet")
    rows = bulk_predict(fitted[2], [tmp_path / "part-0.parquet"], tmp_path / "out", batch_rows=5)
    assert rows == 8
    out = pq.read_table(tmp_path / "out" / "part-0.parquet")
    _same(
        {"probabilities": out["prediction_probabilities"], "logits": out["prediction_logits"]},
        reference,
        "bulk_predict",
    )
    model = LoadedModel.load(fitted[2])
    scores = score_table(model.predict, table, "binary_classification", chunk_rows=3)
    np.testing.assert_allclose(scores, reference["probabilities"], rtol=2e-6, atol=2e-6)
    sex = np.array(["a", "b"] * 4, dtype=object)
    doc, fairness = evaluate_predictions(
        table[LABEL].to_numpy(),
        scores,
        task="binary_classification",
        features={"sex": sex},
        slicing_specs=[(), ("sex",)],
        min_slice_size=1,
        sensitive_features=["sex"],
        num_bootstrap=5,
    )
    assert fairness is not None and "fairness" in json.dumps(doc)
    assert [s["spec"] for s in doc["slices"]][:1] == [[]]
