"""Tasks and labels in the library: the task -> loss map, label checks, train_transformed."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import optax
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtx import trainer as jt
from jaxtx.trainer import transform as tx
from jaxtx.trainer._losses import resolve_loss


def test_one_task_to_loss_mapping_agrees_with_loss_specs() -> None:
    assert sorted(jt.TASKS) == ["binary_classification", "multiclass_classification", "regression"]
    for task, spec in jt.TASKS.items():
        assert jt.loss_for_task(task) is spec
        assert resolve_loss(spec.name).task == task
    with pytest.raises(ValueError, match=r"task must be one of \['binary_classification'"):
        jt.loss_for_task("ranking")


@pytest.mark.parametrize(
    "task, classes",
    [("binary_classification", 1), ("multiclass_classification", 3), ("regression", 1)],
)
def test_task_outputs_are_what_predict_fn_returns(task: str, classes: int) -> None:
    model = jt.MLP(hidden=(4,), out=classes)
    loop = jt.TrainLoop(model, optax.sgd(0.1), loss=jt.loss_for_task(task).name)
    feats = {"a": np.zeros(3, np.float32)}
    state = loop.init_state(feats)
    out = loop.predict(feats, state)
    assert sorted(out) == sorted(jt.task_outputs(task))
    assert all(v.dtype == np.float32 for v in out.values())


def test_check_label_names_label_file_and_count(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0.0, 1.0]}), good)
    assert jt.check_label([str(good)], "y") == 2
    with pytest.raises(jt.DataError, match=r"label 'z' is not in the data \(file .*good.parquet"):
        jt.check_label([str(good)], "z")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"y": pa.array([1.0, None, None])}), nulls)
    with pytest.raises(jt.DataError, match=r"label 'y' has 2 missing values in .*nulls.parquet"):
        jt.check_label([str(good), str(nulls)], "y")
    nans = tmp_path / "nans.parquet"
    pq.write_table(pa.table({"y": pa.array([1.0, float("nan")])}), nans)
    with pytest.raises(jt.DataError, match=r"label 'y' has 1 NaN values in .*nans.parquet"):
        jt.check_label([str(nans)], "y")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"y": pa.array([], pa.float64())}), empty)
    with pytest.raises(jt.DataError, match="the eval split has no rows"):
        jt.check_label([str(empty)], "y", what="the eval split")


def _preprocess(inputs: dict[str, tx.Column]) -> dict[str, tx.Column]:
    return {
        "x": tx.scale_to_z_score(inputs["x"]),
        "c": tx.vocabulary(inputs["c"], num_oov_buckets=1),
    }


def test_train_transformed_is_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=n)
    c = rng.choice(["a", "b", "c"], n)
    y = ((x > 0) ^ (c == "b")).astype(np.float32)
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"x": x, "c": c, "label": y}), raw)
    graph = tx.analyze(_preprocess, raw, use_beam=False)
    tx.transform_parquet(
        graph, {"train": [str(raw)]}, tmp_path / "t", passthrough=["label"], use_beam=False
    )
    files = [str(tmp_path / "t" / "train" / "part-00000.parquet")]

    def train() -> jt.TrainResult:
        return jt.train_transformed(
            graph,
            files,
            files,
            label="label",
            epochs=2,
            batch_size=64,
            seed=3,
            early_stopping_patience=None,
        )

    a, b = train(), train()
    assert a.features == ["x", "c"]
    assert a.model_def.vocab_sizes == {"c": graph.output_columns[1].cardinality}
    assert len(a.history.history["loss"]) == 2 and "val_accuracy" in a.history.history
    for p, q in zip(
        jax.tree.leaves(a.loop.state.params),
        jax.tree.leaves(b.loop.state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(q))
    with pytest.raises(jt.DataError, match="label 'nope' is not in the training data"):
        jt.train_transformed(graph, files, files, label="nope", epochs=1)


def test_old_names_are_deprecated_aliases() -> None:
    with pytest.warns(DeprecationWarning, match="use TrainLoop"):
        assert jt.Trainer is jt.TrainLoop
    with pytest.warns(DeprecationWarning, match="use ModelDef"):
        assert jt.Model is jt.ModelDef
    with pytest.warns(DeprecationWarning, match="use FittedTransform"):
        assert tx.TransformGraph is tx.FittedTransform
    with pytest.warns(DeprecationWarning, match="use Op"):
        assert tx.Node is tx.Op
