"""Evaluator: sliced metrics, fairness indicators, baseline comparison -> blessing."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._artifacts import (
    Examples,
    Model,
    ModelBlessing,
    ModelEvaluation,
    Output,
    default_home,
    load_artifact,
)
from ._component import RunContext, component

__all__ = ["Evaluator", "resolve_baseline"]


def _features_for(model: Any, table: Any) -> dict[str, Any]:
    out = {}
    for spec in model.signature.inputs:
        if spec.name not in table.column_names:
            raise ValueError(
                f"Evaluator: the examples lack the model input {spec.name!r}; "
                f"columns are {table.column_names}"
            )
        col = table[spec.name]
        if str(col.type) in ("string", "large_string"):
            out[spec.name] = np.array(col.to_pylist(), dtype=object)
        else:
            out[spec.name] = col.to_numpy().astype(np.float32)
    return out


def _scores(model: Any, table: Any, task: str) -> np.ndarray:
    feats = _features_for(model, table)
    n = table.num_rows
    parts = []
    for start in range(0, n, 8192):
        chunk = {k: v[start : start + 8192] for k, v in feats.items()}
        out = model.predict(chunk)
        key = "predictions" if task == "regression" else "probabilities"
        if key not in out:
            key = next(iter(out))
        parts.append(np.asarray(out[key], dtype=np.float64))
    return np.concatenate(parts) if parts else np.zeros(0)


def resolve_baseline(
    registered_model_name: str | None, alias: str, tracking_uri: str | None
) -> tuple[Model | None, str]:
    """The Model artifact behind ``models:/<name>@<alias>``, or ``(None, why)``."""
    if not registered_model_name:
        return None, "no registered model name given"
    from mlflow import MlflowClient

    from jaxtx.core.settings import default_tracking_uri

    uri = (
        tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or default_tracking_uri(default_home())
    )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(registered_model_name, alias)
    except Exception:
        return None, f"no {registered_model_name}@{alias} in the registry yet (first model)"
    art_uri = mv.tags.get("jaxtx.model_uri")
    if not art_uri:
        return None, f"{registered_model_name} version {mv.version} has no jaxtx.model_uri tag"
    return load_artifact(art_uri, Model), f"{registered_model_name}@{alias} = version {mv.version}"


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
    from jaxtx.validation.eval_report import (
        plot_calibration,
        plot_fairness,
        plot_roc,
        render_evaluation_html,
    )
    from jaxtx.validation.evaluation import evaluate
    from jaxtx.validation.fairness import attach_fairness, fairness_indicators

    task = str(model.properties.get("task", "binary_classification"))
    table = examples.read(split)
    if table is None or table.num_rows == 0:
        raise ValueError(f"Evaluator: split {split!r} of {examples.uri} is empty")
    if label not in table.column_names:
        raise ValueError(f"Evaluator: label {label!r} not in {examples.uri} ({table.column_names})")
    labels = table[label].to_numpy(zero_copy_only=False).astype(np.float64)
    specs = [tuple(s) for s in (slicing_specs or [[]])]
    slice_cols = sorted({c for s in specs for c in s} | set(sensitive_features or []))
    feats = {c: np.array(table[c].to_pylist(), dtype=object) for c in slice_cols}
    cuts = tuple(fairness_thresholds or [0.5])

    def run_eval(m: Model) -> tuple[dict[str, Any], np.ndarray]:
        scores = _scores(m.load(), table, task)
        doc = evaluate(
            labels,
            scores,
            task=task,
            features=feats,
            slicing_specs=specs,
            min_slice_size=min_slice_size,
            thresholds=cuts,
            num_bootstrap=num_bootstrap,
            seed=seed,
        )
        return doc, scores

    cand, scores = run_eval(model)
    fairness = None
    if sensitive_features and task == "binary_classification":
        fairness = fairness_indicators(
            labels,
            scores,
            {c: feats[c] for c in sensitive_features},
            thresholds=cuts,
            num_bootstrap=num_bootstrap,
            seed=seed,
        )
        cand = attach_fairness(cand, fairness)
    baseline, why = (
        (baseline_model, "given baseline_model")
        if baseline_model
        else resolve_baseline(registered_model_name, baseline_alias, ctx.tracking_uri)
    )
    base_doc = None
    if baseline is not None:
        base_doc, base_scores = run_eval(baseline)
        if sensitive_features and task == "binary_classification":
            base_doc = attach_fairness(
                base_doc,
                fairness_indicators(
                    labels,
                    base_scores,
                    {c: feats[c] for c in sensitive_features},
                    thresholds=cuts,
                    num_bootstrap=num_bootstrap,
                    seed=seed,
                ),
            )
    checks = [MetricThreshold.from_dict(t) for t in (thresholds or [])]
    verdict = bless(cand, checks, baseline_eval=base_doc)
    verdict["baseline"] = {"model": baseline.uri if baseline is not None else None, "why": why}

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
    html = render_evaluation_html(
        cand, fairness, verdict, title=f"Evaluation of {model.uri}", images=images
    )
    (evaluation.reports_dir / "evaluation.html").write_text(html, encoding="utf-8")
    (blessing.path / "blessing.json").write_text(json.dumps(verdict, indent=2, default=_json))
    blessing.properties.update(
        blessed=bool(verdict["blessed"]),
        model=model.uri,
        baseline=verdict["baseline"]["model"],
        failed=[c["reason"] for c in verdict["checks"] if not c["passed"]],
    )
    overall = _overall(cand)
    evaluation.properties.update(
        task=task, split=split, num_examples=int(len(labels)), metrics=overall
    )
    metrics = {k: v for k, v in overall.items() if v is not None and math.isfinite(v)}
    metrics["blessed"] = float(verdict["blessed"])
    return metrics


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
