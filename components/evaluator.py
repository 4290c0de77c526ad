"""Evaluator: sliced metrics, fairness indicators, baseline comparison -> blessing.

A wrapper over :mod:`jaxtx.validation.model_scoring` (scoring, metrics and
fairness) and :mod:`jaxtx.validation.blessing`; the baseline comes from the
MLflow registry (:func:`jaxtx.components._registry.resolve_baseline`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._artifacts import Examples, Model, ModelBlessing, ModelEvaluation, Output
from ._component import RunContext, component
from ._registry import resolve_baseline

__all__ = ["Evaluator", "resolve_baseline"]


@component
def Evaluator(
    model: Model,
    examples: Examples,
    evaluation: Output[ModelEvaluation],
    blessing: Output[ModelBlessing],
    ctx: RunContext,
    baseline_model: Model | None = None,
    *,
    label: str,
    split: str = "eval",
    slicing_specs: list[list[str]] | None = None,
    min_slice_size: int = 30,
    sensitive_features: list[str] | None = None,
    fairness_thresholds: list[float] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    registered_model_name: str | None = None,
    baseline_alias: str = "champion",
    num_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Evaluate a candidate (and its baseline) on raw examples; bless or not.

    Args:
      model: the candidate (an export taking raw features).
      examples: raw examples with the label and the slicing features.
      baseline_model: an explicit baseline; otherwise ``registered_model_name``'s
        ``baseline_alias`` in the MLflow registry (none: first model).
      label: the label column.
      split: the split to evaluate on.
      slicing_specs: ``[[]]`` (overall), ``[["sex"]]``, ``[["sex", "race"]]``, ...
      min_slice_size: smaller slices are reported as skipped.
      sensitive_features: fairness indicators per group of these features.
      fairness_thresholds: decision thresholds for fairness and threshold metrics.
      thresholds: blessing checks, e.g. ``{"metric": "auc", "lower": 0.7}``,
        ``{"metric": "auc", "change": {"direction": "higher_is_better", "absolute": 0.01}}``,
        ``{"metric": "fairness.demographic_parity_difference@0.5", "upper": 0.2}``.
      num_bootstrap: bootstrap resamples for confidence intervals.
      seed: makes the intervals reproducible.
    """
    from jaxtx.validation.blessing import MetricThreshold, bless
    from jaxtx.validation.model_scoring import evaluate_predictions, score_table

    task = str(model.properties.get("task", "binary_classification"))
    table, labels = _read_split(examples, split, label)
    specs = [tuple(s) for s in (slicing_specs or [[]])]
    slice_cols = sorted({c for s in specs for c in s} | set(sensitive_features or []))
    feats = {c: np.array(table[c].to_pylist(), dtype=object) for c in slice_cols}

    def run_eval(m: Model) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return evaluate_predictions(
            labels,
            score_table(m.load().predict, table, task),
            task=task,
            features=feats,
            slicing_specs=specs,
            min_slice_size=min_slice_size,
            thresholds=tuple(fairness_thresholds or [0.5]),
            sensitive_features=sensitive_features,
            num_bootstrap=num_bootstrap,
            seed=seed,
        )

    cand, fairness = run_eval(model)
    baseline, why = (baseline_model, "given baseline_model")
    if baseline is None:
        baseline, why = resolve_baseline(registered_model_name, baseline_alias, ctx.tracking_uri)
    base_doc = run_eval(baseline)[0] if baseline is not None else None
    checks = [MetricThreshold.from_dict(t) for t in (thresholds or [])]
    verdict = bless(cand, checks, baseline_eval=base_doc)
    verdict["baseline"] = {"model": baseline.uri if baseline is not None else None, "why": why}
    source = model.producer.get("node") or "candidate"
    title = f"{ctx.node_id}: {source} model on the {split} split"
    _write_reports(evaluation, model, task, cand, base_doc, fairness, verdict, title)
    _write_blessing(blessing, model, verdict)
    overall = _overall(cand)
    evaluation.properties.update(
        task=task, split=split, num_examples=int(len(labels)), metrics=overall
    )
    metrics = {k: v for k, v in overall.items() if v is not None and math.isfinite(v)}
    metrics["blessed"] = float(verdict["blessed"])
    return metrics


def _read_split(examples: Examples, split: str, label: str) -> tuple[Any, np.ndarray]:
    """The split as a pyarrow Table, and its labels as float64."""
    table = examples.read(split)
    if table is None or table.num_rows == 0:
        raise ValueError(f"Evaluator: split {split!r} of {examples.uri} is empty")
    if label not in table.column_names:
        raise ValueError(f"Evaluator: label {label!r} not in {examples.uri} ({table.column_names})")
    return table, table[label].to_numpy(zero_copy_only=False).astype(np.float64)


def _write_blessing(blessing: Output[ModelBlessing], model: Model, verdict: dict[str, Any]) -> None:
    """blessing.json and the blessing's properties."""
    (blessing.path / "blessing.json").write_text(json.dumps(verdict, indent=2, default=_json))
    blessing.properties.update(
        blessed=bool(verdict["blessed"]),
        model=model.uri,
        baseline=verdict["baseline"]["model"],
        failed=[c["reason"] for c in verdict["checks"] if not c["passed"]],
    )


def _write_reports(
    evaluation: Output[ModelEvaluation],
    model: Model,
    task: str,
    cand: dict[str, Any],
    base_doc: dict[str, Any] | None,
    fairness: dict[str, Any] | None,
    verdict: dict[str, Any],
    title: str,
) -> None:
    """evaluation.json, baseline_evaluation.json, fairness.json, plots and the HTML report."""
    from jaxtx.validation.eval_report import (
        plot_calibration,
        plot_fairness,
        plot_roc,
        render_evaluation_html,
    )

    (evaluation.path / "evaluation.json").write_text(json.dumps(cand, indent=2, default=_json))
    if base_doc is not None:
        (evaluation.path / "baseline_evaluation.json").write_text(
            json.dumps(base_doc, default=_json)
        )
    images = {}
    if task == "binary_classification":
        images["ROC"] = plot_roc(cand, str(evaluation.reports_dir / "roc.png"))
        images["Calibration"] = plot_calibration(
            cand, str(evaluation.reports_dir / "calibration.png")
        )
    if fairness is not None:
        (evaluation.path / "fairness.json").write_text(
            json.dumps(fairness, indent=2, default=_json)
        )
        images["Fairness"] = plot_fairness(fairness, str(evaluation.reports_dir / "fairness.png"))
    html = render_evaluation_html(cand, fairness, verdict, title=title, images=images)
    (evaluation.reports_dir / "evaluation.html").write_text(html, encoding="utf-8")


def _overall(doc: Mapping[str, Any]) -> dict[str, float | None]:
    for s in doc.get("slices", []):
        if not s.get("spec"):
            out = {}
            for name, entry in s.get("metrics", {}).items():
                value = entry.get("value") if isinstance(entry, Mapping) else entry
                if isinstance(value, int | float):
                    out[name] = float(value)
            return out
    return {}


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Sequence):
        return list(o)
    raise TypeError(type(o).__name__)
