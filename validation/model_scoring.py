"""Score a model on a table and evaluate it, fairness included, in one call.

The library half of the Evaluator component, usable on its own::

    from jaxtx.core.model_format import LoadedModel
    from jaxtx.validation.model_scoring import evaluate_predictions, score_table

    model = LoadedModel.load("model/1")
    scores = score_table(model.predict, table, task="binary_classification")
    doc, fairness = evaluate_predictions(labels, scores, task="binary_classification",
                                         features={"sex": sex}, sensitive_features=["sex"])

Scoring converts the table with :func:`jaxtx.core.model_format.to_model_inputs`
(through ``predict``), so a missing input column is an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .evaluation import evaluate
from .fairness import attach_fairness, fairness_indicators

__all__ = ["compare_quantized", "evaluate_predictions", "score_table", "score_key"]

QUANTIZATION_PREFIX = "quantization."

#: ``predict(rows) -> {output name: array}``, e.g. ``LoadedModel.predict``.
PredictFn = Callable[[Any], Mapping[str, Any]]


def score_key(outputs: Sequence[str], task: str) -> str:
    """The output that holds the scores evaluation reads.

    Args:
        outputs: The model's output names.
        task: ``regression`` reads ``predictions``; classification ``probabilities``.

    Returns:
        That name when the model has it, else its first output.
    """
    key = "predictions" if task == "regression" else "probabilities"
    return key if key in outputs else outputs[0]


def score_table(predict: PredictFn, table: Any, task: str, *, chunk_rows: int = 8192) -> np.ndarray:
    """Predict every row of a table, ``chunk_rows`` at a time.

    Args:
        predict: ``predict(rows) -> {output: array}`` taking a slice of
            ``table`` (``LoadedModel.predict`` takes a pyarrow Table).
        table: A ``pyarrow.Table`` holding the model's inputs.
        task: Picks the score output (see :func:`score_key`).
        chunk_rows: Rows per call.

    Returns:
        ``float64`` scores, one row per table row.
    """
    parts = []
    for start in range(0, table.num_rows, chunk_rows):
        out = predict(table.slice(start, chunk_rows))
        key = score_key(list(out), task)
        parts.append(np.asarray(out[key], dtype=np.float64))
    return np.concatenate(parts) if parts else np.zeros(0)


def evaluate_predictions(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    task: str,
    features: Mapping[str, np.ndarray] | None = None,
    slicing_specs: Sequence[Sequence[str]] = ((),),
    min_slice_size: int = 30,
    thresholds: Sequence[float] = (0.5,),
    sensitive_features: Sequence[str] | None = None,
    min_group_size: int | None = None,
    intersections: bool = False,
    num_bootstrap: int = 100,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Sliced metrics plus, for binary classification, fairness indicators.

    Args:
        labels: One label per row.
        scores: One score (or score vector) per row.
        task: ``binary_classification``, ``multiclass_classification`` or ``regression``.
        features: Slicing and sensitive feature values, one per row.
        slicing_specs: ``[()]`` (overall), ``[("sex",)]``, ...
        min_slice_size: Smaller slices are reported as skipped.
        thresholds: Decision thresholds for threshold and fairness metrics.
        sensitive_features: Fairness indicators per group of these features
            (binary classification only), one analysis per feature.
        min_group_size: Fairness groups with fewer rows are reported but kept
            out of the disparities; None: ``min_slice_size``.
        intersections: Also analyze the combinations of the sensitive features.
        num_bootstrap: Bootstrap resamples for confidence intervals.
        seed: Makes the intervals reproducible.

    Returns:
        ``(evaluation document with fairness attached, fairness document or None)``.
    """
    feats = dict(features or {})
    cuts = tuple(thresholds)
    doc = evaluate(
        labels,
        scores,
        task=task,
        features=feats,
        slicing_specs=[tuple(s) for s in slicing_specs],
        min_slice_size=min_slice_size,
        thresholds=cuts,
        num_bootstrap=num_bootstrap,
        seed=seed,
    )
    if not sensitive_features or task != "binary_classification":
        return doc, None
    fairness = fairness_indicators(
        labels,
        scores,
        {c: feats[c] for c in sensitive_features},
        thresholds=cuts,
        min_group_size=min_slice_size if min_group_size is None else min_group_size,
        intersections=intersections,
        num_bootstrap=num_bootstrap,
        seed=seed,
    )
    return attach_fairness(doc, fairness), fairness


def _overall_values(doc: Mapping[str, Any]) -> dict[str, float | None]:
    for entry in doc.get("slices", []):
        if not entry.get("spec"):
            return {k: v.get("value") for k, v in entry.get("metrics", {}).items()}
    return {}


def _dir_bytes(directory: Any) -> int | None:
    if directory is None:
        return None
    from pathlib import Path

    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())


def compare_quantized(
    float_doc: Mapping[str, Any],
    quantized_doc: Mapping[str, Any],
    *,
    float_dir: Any = None,
    quantized_dir: Any = None,
) -> dict[str, Any]:
    """How much the overall metrics change from a float model to its quantized variant.

    Args:
        float_doc: The float model's evaluation document.
        quantized_doc: The quantized model's, on the same rows.
        float_dir: The float model directory (for its size on disk).
        quantized_dir: The quantized model directory (size, ``quantization.json``).

    Returns:
        ``{"metrics": {name: {"float", "quantized", "change"}}, "size_bytes":
        {"float", "quantized"}, "quantization": quantization.json or None}``;
        ``change`` is quantized minus float (null where either is undefined).
        Blessing reads ``quantization.<metric>`` as that change.
    """
    from jaxtx.core.model_format import read_quantization

    base, quant = _overall_values(float_doc), _overall_values(quantized_doc)
    metrics = {}
    for name, value in base.items():
        other = quant.get(name)
        change = None if value is None or other is None else float(other) - float(value)
        metrics[name] = {"float": value, "quantized": other, "change": change}
    return {
        "metrics": metrics,
        "size_bytes": {"float": _dir_bytes(float_dir), "quantized": _dir_bytes(quantized_dir)},
        "quantization": read_quantization(quantized_dir) if quantized_dir is not None else None,
    }
