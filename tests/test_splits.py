"""Split names through Transform -> Trainer -> Evaluator and BulkInferrer.

A three-split dataset (train / eval / test from their own files, through
ExampleGen ``split_patterns``): the Trainer early-stops on ``eval``, so the
Evaluator scores ``test`` by default and says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jaxtx.components._splits import default_evaluation_split
from jaxtx.components.bulk_inferrer import BulkInferrer
from jaxtx.components.evaluator import Evaluator
from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.trainer import Trainer
from jaxtx.components.transform import Transform
from jaxtx.pipelines.demo import LABEL, preprocess
from jaxtx.pipelines.demo_data import generate_census

ROWS = {"train": 240, "eval": 80, "test": 60}


def _three_split_examples(tmp_path: Path, store) -> object:
    """ExampleGen over train.csv / eval.csv / test.csv as fixed splits."""
    df = generate_census(sum(ROWS.values()), seed=21)
    patterns, start = {}, 0
    for name, n in ROWS.items():
        path = tmp_path / f"{name}.csv"
        df.iloc[start : start + n].to_csv(path, index=False)
        patterns[name] = str(path)
        start += n
    return ExampleGen(split_patterns=patterns, store=store)


def test_named_splits_through_transform_trainer_evaluator_and_bulk_inferrer(
    tmp_path: Path, store, caplog: pytest.LogCaptureFixture
) -> None:
    ex = _three_split_examples(tmp_path, store)
    assert ex.split_names == ["train", "eval", "test"]
    assert ex.properties["split_counts"] == ROWS

    # Fit on train; transform only what the Trainer reads.
    tr = Transform(
        examples=ex,
        preprocessing_fn=preprocess,
        passthrough=[LABEL],
        analyze_split="train",
        transform_splits=["train", "eval"],
        store=store,
    )
    assert tr.transformed_examples.split_names == ["train", "eval"]
    assert tr.transformed_examples.properties["split_counts"] == {"train": 240, "eval": 80}
    assert tr.transform_graph.properties["analyze_splits"] == ["train"]

    model = Trainer(
        examples=tr.transformed_examples,
        transform_graph=tr.transform_graph,
        label=LABEL,
        train_split="train",
        eval_split="eval",
        epochs=2,
        batch_size=64,
        early_stopping_patience=1,
        store=store,
    )
    props = model.properties
    assert (props["train_split"], props["eval_split"], props["early_stopping_split"]) == (
        "train",
        "eval",
        "eval",
    )

    # No split named: the Evaluator scores the split the Trainer never read, and says so.
    with caplog.at_level(logging.INFO, logger="jaxtx.evaluator"):
        ev = Evaluator(model=model, examples=ex, label=LABEL, num_bootstrap=5, store=store)
    evaluation = ev.evaluation
    assert evaluation.properties["split"] == "test"
    assert evaluation.properties["num_examples"] == ROWS["test"]
    assert "did not read it" in evaluation.properties["split_reason"]
    doc = json.loads(Path(evaluation.file("evaluation.json")).read_text())
    assert doc["split"] == "test" and doc["split_reason"] == evaluation.properties["split_reason"]
    html = (Path(evaluation.uri) / "reports" / "evaluation.html").read_text()
    assert "on the test split" in html
    assert any("split 'test'" in r.getMessage() for r in caplog.records)

    # A named split is used as named.
    ev_eval = Evaluator(
        model=model, examples=ex, label=LABEL, split="eval", num_bootstrap=5, store=store
    )
    assert ev_eval.evaluation.properties["split"] == "eval"
    assert ev_eval.evaluation.properties["num_examples"] == ROWS["eval"]

    # Batch inference on one named split.
    inferred = BulkInferrer(model=model, examples=ex, splits=["test"], store=store)
    assert inferred.properties["split_names"] == ["test"]
    table = inferred.read("test")
    assert table.num_rows == ROWS["test"] and "prediction_probabilities" in table.column_names

    # A split that does not exist: an error naming it and the splits there are.
    available = r"\['train', 'eval', 'test'\]"
    with pytest.raises(ValueError, match=rf"analyze_split names split 'training'.*{available}"):
        Transform(examples=ex, preprocessing_fn=preprocess, analyze_split="training", store=store)
    with pytest.raises(ValueError, match=r"transform_splits names split 'holdout'"):
        Transform(
            examples=ex,
            preprocessing_fn=preprocess,
            transform_splits=["train", "holdout"],
            store=store,
        )
    with pytest.raises(ValueError, match=r"eval_split names split 'test'.*\['train', 'eval'\]"):
        Trainer(
            examples=tr.transformed_examples,
            transform_graph=tr.transform_graph,
            label=LABEL,
            eval_split="test",
            store=store,
        )
    with pytest.raises(ValueError, match=rf"Evaluator: split names split 'valid'.*{available}"):
        Evaluator(model=model, examples=ex, label=LABEL, split="valid", store=store)
    with pytest.raises(
        ValueError, match=rf"BulkInferrer: splits names split 'serving'.*{available}"
    ):
        BulkInferrer(model=model, examples=ex, splits=["serving"], store=store)


@pytest.mark.parametrize(
    ("splits", "props", "expected"),
    [
        # Early-stopped on eval: test is held out.
        (["train", "eval", "test"], {"train_split": "train", "eval_split": "eval"}, "test"),
        # A model without recorded splits: the Trainer's old defaults (train / eval).
        (["train", "eval", "test"], {}, "test"),
        # Other names: the first split the Trainer did not read.
        (["fit", "val", "holdout"], {"train_split": "fit", "eval_split": "val"}, "holdout"),
        # No early stopping: the validation split was not used to pick the model.
        (
            ["train", "eval"],
            {"train_split": "train", "eval_split": "eval", "early_stopping_split": None},
            "eval",
        ),
        # Only the early-stopping split is left: used, with a warning in the reason.
        (
            ["train", "eval"],
            {"train_split": "train", "eval_split": "eval", "early_stopping_split": "eval"},
            "eval",
        ),
    ],
)
def test_default_evaluation_split(splits, props, expected) -> None:
    split, reason = default_evaluation_split(splits, props)
    assert split == expected
    if expected == "eval" and props.get("early_stopping_split") == "eval":
        assert "optimistic" in reason


def test_default_evaluation_split_needs_a_held_out_split() -> None:
    with pytest.raises(ValueError, match=r"no split besides the training split 'train'"):
        default_evaluation_split(["train"], {"train_split": "train", "eval_split": "train"})


def test_split_hashes_are_stable() -> None:
    """Hash splits assign the same rows to the same splits as before (values pinned)."""
    import pyarrow as pa

    from jaxtx.data import row_hashes

    batch = pa.RecordBatch.from_pydict(
        {
            "i": pa.array([1, None, -7, 2**40, 0, 3], pa.int64()),
            "f": pa.array([0.5, float("nan"), -0.0, None, 1e300, 0.0], pa.float64()),
            "b": pa.array([True, False, None, True, False, True]),
            "s": pa.array(["a", None, "", "é", "a", "b"]),
        }
    )
    assert row_hashes(batch, seed="s").tolist() == [
        13935278257067222540,
        10361509575852755789,
        17231068892228132698,
        5219236391846981221,
        16982941341319735221,
        6447244060035229247,
    ]
    assert row_hashes(batch.slice(1, 4)).tolist() == [
        4576270267775260981,
        16329615073054930257,
        15469654019751348489,
        6819480421857753193,
    ]


def test_arrow_coder_round_trips_and_sizes_without_encoding(monkeypatch) -> None:
    """Beam's size sampling of ingest batches reads buffer sizes instead of pickling."""
    import pickle

    import pyarrow as pa

    from jaxtx.data._coders import ArrowCoder

    coder = ArrowCoder()
    batch = pa.record_batch({"a": [1, None, 3], "s": ["x", None, "zz"]})
    table = pa.Table.from_batches([batch])
    assert coder.decode(coder.encode(batch)).equals(batch)
    assert coder.decode(coder.encode(table)).equals(table)
    monkeypatch.setattr(pickle, "dumps", None)  # sizing must not encode
    assert coder.estimate_size(batch) == batch.get_total_buffer_size() > 0
