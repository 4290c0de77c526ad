"""Evaluator: sliced metrics, fairness indicators, baseline comparison -> blessing.

A wrapper over :mod:`jaxtx.validation.model_scoring` (scoring, metrics and
fairness) and :mod:`jaxtx.validation.blessing`; the baseline comes from the
MLflow registry (:func:`jaxtx.components._registry.resolve_baseline`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._artifacts import Examples, Model, ModelBlessing, ModelEvaluation, Output
from ._component import RunContext, component
from ._registry import resolve_baseline
from ._splits import check_splits, default_evaluation_split

__all__ = ["Evaluator", "resolve_baseline"]

_log = logging.getLogger("jaxtx.evaluator")


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
    split: str | None = None,
    slicing_specs: list[list[str]] | None = None,
    min_slice_size: int = 30,
    sensitive_features: list[str] | None = None,
    min_group_size: int | None = None,
    fairness_intersections: bool = False,
    fairness_thresholds: list[float] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    registered_model_name: str | None = None,
    baseline_alias: str = "champion",
    num_bootstrap: int = 100,
    seed: int = 0,
    feature_attributions: bool = False,
    attribution_rows: int = 1000,
    evaluate_quantized: bool = True,
) -> dict[str, float]:
    """Evaluate a candidate (and its baseline) on raw examples; bless or not.

    Args:
      model: the candidate (an export taking raw features).
      examples: raw examples with the label and the slicing features.
      baseline_model: an explicit baseline; otherwise ``registered_model_name``'s
        ``baseline_alias`` in the MLflow registry (none: first model).
      label: the label column.
      split: the split to evaluate on; default: one the Trainer did not use
        (``test`` when it trained on ``train`` and early-stopped on
        ``eval``), else its validation split (see
        ``components._splits.default_evaluation_split``). The split used and
        why are in the evaluation's properties, ``evaluation.json`` and the report.
      slicing_specs: ``[[]]`` (overall), ``[["sex"]]``, ``[["sex", "race"]]``, ...
      min_slice_size: smaller slices are reported as skipped.
      sensitive_features: fairness indicators per group of each of these features.
      min_group_size: smaller fairness groups are reported but not gated on
        (a warning names them); None: ``min_slice_size``.
      fairness_intersections: also analyze the combinations of the sensitive features.
      fairness_thresholds: decision thresholds for fairness and threshold metrics.
      thresholds: blessing checks, e.g. ``{"metric": "auc", "lower": 0.7}``,
        ``{"metric": "auc", "change": {"direction": "higher_is_better", "absolute": 0.01}}``,
        ``{"metric": "fairness.demographic_parity_difference@0.5", "upper": 0.2}``.
      num_bootstrap: bootstrap resamples for confidence intervals.
      seed: makes the intervals reproducible.
      feature_attributions: explain the candidate's scores per raw feature
        (integrated gradients / occlusion, overall and per slice):
        ``attributions.json``, ``reports/attributions.png`` and a table in the report.
      attribution_rows: rows explained (a seeded sample of the split).
      evaluate_quantized: when the model has an int8 variant, evaluate it too;
        ``quantization.<metric>`` (int8 minus float) can then be gated.
    """
    from jaxtx.validation.blessing import MetricThreshold, bless
    from jaxtx.validation.model_scoring import evaluate_predictions, score_table

    task = str(model.properties.get("task", "binary_classification"))
    if split is None:
        split, split_reason = default_evaluation_split(examples.split_names, model.properties)
    else:
        check_splits(examples, [split], component="Evaluator", parameter="split")
        split_reason = "named by the split parameter"
    used = model.properties
    seen = (used.get("early_stopping_split", "eval"), used.get("train_split", "train"))
    level = logging.WARNING if split in seen else logging.INFO  # metrics of a split it was fit on
    _log.log(level, "Evaluator: evaluating %s on split %r (%s)", model.uri, split, split_reason)
    table, labels = _read_split(examples, split, label)
    specs = [tuple(s) for s in (slicing_specs or [[]])]
    slice_cols = sorted({c for s in specs for c in s} | set(sensitive_features or []))
    feats = {c: np.array(table[c].to_pylist(), dtype=object) for c in slice_cols}

    def run_eval(m: Model, loaded: Any = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return evaluate_predictions(
            labels,
            score_table((loaded or m.load()).predict, table, task),
            task=task,
            features=feats,
            slicing_specs=specs,
            min_slice_size=min_slice_size,
            thresholds=tuple(fairness_thresholds or [0.5]),
            sensitive_features=sensitive_features,
            min_group_size=min_group_size,
            intersections=fairness_intersections,
            num_bootstrap=num_bootstrap,
            seed=seed,
        )

    cand, fairness = run_eval(model)
    if evaluate_quantized and model.quantized_model_dir is not None:
        cand["quantization"] = _compare_quantized(model, cand, run_eval)
    for warning in (fairness or {}).get("warnings", []):
        _log.warning("Evaluator fairness: %s", warning)
    baseline, why = (baseline_model, "given baseline_model")
    if baseline is None:
        baseline, why = resolve_baseline(registered_model_name, baseline_alias, ctx.tracking_uri)
    base_doc = run_eval(baseline)[0] if baseline is not None else None
    checks = [MetricThreshold.from_dict(t) for t in (thresholds or [])]
    verdict = bless(cand, checks, baseline_eval=base_doc)
    verdict["baseline"] = {"model": baseline.uri if baseline is not None else None, "why": why}
    verdict["split"] = split
    cand = {**cand, "split": split, "split_reason": split_reason}
    attributions = None
    if feature_attributions:
        from jaxtx.validation.attributions import feature_attributions as explain

        attributions = explain(
            model.load(), table, task=task, features=feats, slicing_specs=specs,
            min_slice_size=min_slice_size, max_rows=attribution_rows, seed=seed,
        )  # fmt: skip
    source = model.producer.get("node") or "candidate"
    title = ctx.title(f"{ctx.node_id}: {source} model on the {split} split ({split_reason})")
    _write_reports(evaluation, model, task, cand, base_doc, fairness, verdict, title, attributions)
    _write_blessing(blessing, model, verdict)
    overall = _overall(cand)
    evaluation.properties.update(
        task=task,
        split=split,
        split_reason=split_reason,
        num_examples=int(len(labels)),
        metrics=overall,
        fairness_warnings=list((fairness or {}).get("warnings", [])),
    )
    metrics = {k: v for k, v in overall.items() if v is not None and math.isfinite(v)}
    for name, entry in cand.get("quantization", {}).get("metrics", {}).items():
        if entry["change"] is not None and math.isfinite(entry["change"]):
            metrics[f"int8_change_{name}"] = float(entry["change"])
    metrics["blessed"] = float(verdict["blessed"])
    return metrics


def _compare_quantized(model: Model, cand: dict[str, Any], run_eval: Any) -> dict[str, Any]:
    """Evaluate the model's int8 variant the same way; its metric changes and sizes."""
    from jaxtx.core.model_format import LoadedModel
    from jaxtx.validation.model_scoring import compare_quantized

    q_dir = model.quantized_model_dir
    q_doc = run_eval(model, LoadedModel.load(q_dir))[0]
    return compare_quantized(cand, q_doc, float_dir=model.model_dir, quantized_dir=q_dir)


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
    attributions: dict[str, Any] | None = None,
) -> None:
    """evaluation.json, baseline_evaluation.json, fairness.json, plots and the HTML report."""
    from jaxtx.validation.eval_report import (
        plot_attributions,
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
    if attributions is not None:
        (evaluation.path / "attributions.json").write_text(
            json.dumps(attributions, indent=2, default=_json)
        )
        images["Feature attributions"] = plot_attributions(
            attributions, str(evaluation.reports_dir / "attributions.png")
        )
    html = render_evaluation_html(
        cand, fairness, verdict, title=title, images=images, attributions=attributions
    )
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
