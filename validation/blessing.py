"""Blessing: check an evaluation against metric thresholds, TFMA style.

A :class:`MetricThreshold` bounds one metric on one slice: ``lower`` and
``upper`` are absolute bounds (value thresholds), ``change`` bounds the
difference to a baseline model (as TFMA's ``GenericChangeThreshold``: the
candidate may not be worse than the baseline by more than ``absolute``, or by
more than ``relative`` times the baseline's magnitude; a negative amount
demands an improvement). :func:`bless` runs every check; the model is blessed
when all pass. Without a baseline (the first model) change checks pass with
reason ``"no baseline (first model)"``.

Metric naming scheme
--------------------
``metric`` and ``slice`` address one value:

* **Evaluation metrics** (from :func:`jaxtx.validation.evaluation.evaluate`):
  the metric's key, e.g. ``"auc"``, ``"pr_auc"``, ``"log_loss"``,
  ``"calibration"``, ``"macro_f1"``, ``"rmse"``; threshold metrics end in
  ``@T``, e.g. ``"precision@0.5"`` (``"precision@0.50"`` works too: ``T`` is
  compared as a number). ``slice=None`` (or ``{}``) is the overall slice;
  ``slice={"sex": "F"}`` or ``{"sex": "F", "race": "x"}`` a slice of a
  ``("sex",)`` or ``("sex", "race")`` slicing spec.
* **Fairness metrics** (from
  :func:`jaxtx.validation.fairness.fairness_indicators`): ``"fairness."`` +
  name + ``"@T"``. Disparities, with ``slice=None``:
  ``fairness.demographic_parity_difference@T``,
  ``fairness.demographic_parity_ratio@T``,
  ``fairness.equalized_odds_difference@T``,
  ``fairness.equalized_odds_ratio@T``: the worst value (largest difference,
  smallest ratio) over the analyses (one per sensitive feature, plus their
  intersection when asked for); ``fairness.demographic_parity_difference[sex]@T``
  or ``[sex,race]`` for one analysis. Groups smaller than the fairness
  document's ``min_group_size`` take no part in disparities. Group rates
  ``fairness.tpr@T``, ``fpr``, ``fnr``, ``tnr``, ``selection_rate``,
  ``precision``, ``count``: with ``slice={"sex": "F"}`` (the group's sensitive
  feature values) for one group, with ``slice=None`` over all examples.

* **Quantization** (:func:`jaxtx.validation.model_scoring.compare_quantized`,
  stored under ``"quantization"`` of an evaluation document):
  ``"quantization." + metric`` is the overall metric of the int8 variant minus
  that of the float model, e.g. ``{"metric": "quantization.auc", "lower": -0.01}``.

The document checked is an evaluation document, a fairness document, or an
evaluation document carrying a fairness document under ``"fairness"`` (see
:func:`jaxtx.validation.fairness.attach_fairness`). A metric, slice or group
that is not in the document fails its check with a reason naming it and the
available names; so does a metric that is undefined on its slice.

The result (``jaxtx.blessing/1``)::

    {"format": "jaxtx.blessing/1", "blessed": false,
     "checks": [{"metric": "auc", "slice": {}, "kind": "lower", "value": 0.68,
                 "baseline": null, "bound": 0.7, "passed": false,
                 "reason": "auc = 0.68 is below the lower bound 0.7"}, ...]}

``kind`` is ``"lower"``, ``"upper"``, ``"change_absolute"`` or
``"change_relative"``; ``bound`` is the number the value was compared with
(for change checks, derived from the baseline; null without one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jaxtx.validation.evaluation import FORMAT as EVALUATION_FORMAT
from jaxtx.validation.evaluation import format_threshold, slice_name
from jaxtx.validation.fairness import DISPARITY_METRICS, GROUP_METRICS
from jaxtx.validation.fairness import FORMAT as FAIRNESS_FORMAT

__all__ = [
    "DIRECTIONS",
    "FORMAT",
    "NO_BASELINE",
    "ChangeThreshold",
    "MetricThreshold",
    "bless",
    "lookup_metric",
]

FORMAT = "jaxtx.blessing/1"
DIRECTIONS = ("higher_is_better", "lower_is_better")
NO_BASELINE = "no baseline (first model)"
FAIRNESS_PREFIX = "fairness."
QUANTIZATION_PREFIX = "quantization."


@dataclass(frozen=True)
class ChangeThreshold:
    """How much worse than the baseline the candidate may be.

    Attributes:
      direction: ``"higher_is_better"`` (e.g. AUC) or ``"lower_is_better"`` (e.g. log loss).
      absolute: allowed degradation in metric units (``value >= baseline - absolute``
        when higher is better, ``value <= baseline + absolute`` otherwise).
      relative: allowed degradation as a fraction of ``|baseline|``.
    """

    direction: str = "higher_is_better"
    absolute: float | None = None
    relative: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"ChangeThreshold.direction must be one of {list(DIRECTIONS)}, "
                f"got {self.direction!r}."
            )
        if self.absolute is None and self.relative is None:
            raise ValueError("ChangeThreshold needs absolute=, relative= or both.")
        for name in ("absolute", "relative"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"ChangeThreshold.{name} must be a finite number, got {value!r}.")


@dataclass(frozen=True)
class MetricThreshold:
    """Bounds on one metric of one slice.

    Attributes:
      metric: metric name (see the module docstring for the naming scheme).
      slice: feature name -> value of the slice (or fairness group); None: overall.
      lower: the value must be ``>= lower``.
      upper: the value must be ``<= upper``.
      change: bound relative to the baseline model's value.
    """

    metric: str
    slice: dict[str, Any] | None = None
    lower: float | None = None
    upper: float | None = None
    change: ChangeThreshold | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"MetricThreshold.metric must be a metric name, got {self.metric!r}.")
        if self.lower is None and self.upper is None and self.change is None:
            raise ValueError(
                f"MetricThreshold for {self.metric!r} sets no bound; pass lower=, upper= or change=."
            )
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(
                f"MetricThreshold for {self.metric!r}: lower={self.lower} > upper={self.upper}."
            )

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> MetricThreshold:
        """Build from a plain mapping (e.g. parsed YAML); ``change`` may be a mapping.

        Args:
          spec: ``{"metric": ..., "slice": ..., "lower": ..., "upper": ..., "change": {...}}``.

        Returns:
          The threshold.
        """
        known = {"metric", "slice", "lower", "upper", "change"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"unknown MetricThreshold keys {unknown}; expected {sorted(known)}.")
        change = spec.get("change")
        if isinstance(change, Mapping):
            change = ChangeThreshold(**change)
        return cls(
            metric=spec["metric"],
            slice=dict(spec["slice"]) if spec.get("slice") else None,
            lower=spec.get("lower"),
            upper=spec.get("upper"),
            change=change,
        )


# ------------------------------------------------------------------------ lookup


def _same_value(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)


def _same_slice(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return set(a) == set(b) and all(_same_value(a[k], b[k]) for k in a)


def _split_threshold(name: str) -> tuple[str, float | None]:
    base, sep, tail = name.rpartition("@")
    if not sep:
        return name, None
    try:
        return base, float(tail)
    except ValueError:
        return name, None


def _find_in(metrics: Mapping[str, Any], name: str) -> Any | None:
    """A metric entry by exact name, else by numeric threshold (``auc@0.50`` == ``auc@0.5``)."""
    if name in metrics:
        return metrics[name]
    base, threshold = _split_threshold(name)
    if threshold is not None:
        return metrics.get(f"{base}@{format_threshold(threshold)}")
    return None


def _documents(doc: Mapping[str, Any]) -> tuple[Mapping | None, Mapping | None]:
    """(evaluation, fairness) documents held by ``doc``."""
    fmt = doc.get("format")
    if fmt == FAIRNESS_FORMAT:
        return None, doc
    if fmt == EVALUATION_FORMAT:
        return doc, doc.get("fairness")
    raise ValueError(
        f"expected a {EVALUATION_FORMAT} or {FAIRNESS_FORMAT} document, got format {fmt!r}."
    )


def _label(metric: str, slice_key: Mapping[str, Any] | None) -> str:
    return f"{metric}[{slice_name(slice_key)}]" if slice_key else metric


def _evaluation_entry(
    evaluation: Mapping[str, Any] | None, metric: str, slice_key: Mapping[str, Any]
) -> tuple[dict | None, str | None]:
    if evaluation is None:
        return None, (
            f"metric {metric!r} is an evaluation metric but the document holds no evaluation; "
            "pass the output of evaluate()."
        )
    for entry in evaluation.get("slices", []):
        if _same_slice(entry["slice"], slice_key):
            found = _find_in(entry["metrics"], metric)
            if found is None:
                return None, (
                    f"metric {metric!r} is not in the evaluation of slice "
                    f"{slice_name(slice_key)!r}; available metrics: {sorted(entry['metrics'])}"
                )
            return found, None
    for entry in evaluation.get("skipped_slices", []):
        if _same_slice(entry["slice"], slice_key):
            return None, f"slice {entry['name']!r} was not evaluated: {entry['reason']}"
    available = [entry["name"] for entry in evaluation.get("slices", [])]
    return None, (
        f"slice {slice_name(slice_key)!r} is not in the evaluation; available slices: {available}"
    )


def _fairness_names(fairness: Mapping[str, Any]) -> list[str]:
    return [
        f"{FAIRNESS_PREFIX}{m}@{format_threshold(t)}"
        for t in fairness.get("thresholds", [])
        for m in (*DISPARITY_METRICS, *GROUP_METRICS)
    ]


def _split_analysis(base: str) -> tuple[str, list[str] | None]:
    """``"demographic_parity_difference[sex,race]"`` -> (metric, ["sex", "race"])."""
    if base.endswith("]") and "[" in base:
        head, _, inner = base[:-1].partition("[")
        return head, [f.strip() for f in inner.split(",") if f.strip()]
    return base, None


def _block(analysis: Mapping[str, Any], threshold: float) -> Mapping[str, Any]:
    return next(b for b in analysis["by_threshold"] if b["threshold"] == threshold)


def _worst_disparity(
    fairness: Mapping[str, Any], base: str, threshold: float, features: list[str] | None
) -> tuple[dict | None, str | None]:
    """The disparity of one analysis, or the worst over all analyses (features None)."""
    analyses = list(fairness.get("analyses", []))
    if features is not None:
        chosen = [a for a in analyses if set(a["features"]) == set(features)]
        if not chosen:
            names = [a["name"] for a in analyses]
            return None, f"no fairness analysis of {features}; available analyses: {names}"
        analyses = chosen
    entries = [(a["name"], _block(a, threshold)["disparities"][base]) for a in analyses]
    defined = [(name, e) for name, e in entries if e.get("value") is not None]
    if not defined:
        reasons = "; ".join(f"{name}: {e.get('reason', 'undefined')}" for name, e in entries)
        return {"value": None, "lower": None, "upper": None, "reason": reasons}, None
    pick = max if base.endswith("_difference") else min
    name, entry = pick(defined, key=lambda item: float(item[1]["value"]))
    return {**entry, "analysis": name}, None


def _fairness_entry(
    fairness: Mapping[str, Any] | None, metric: str, slice_key: Mapping[str, Any]
) -> tuple[dict | None, str | None]:
    if fairness is None:
        return None, (
            f"metric {metric!r} is a fairness metric but the document holds no fairness "
            "indicators; attach them with attach_fairness(evaluation, fairness_indicators(...))."
        )
    qualified, threshold = _split_threshold(metric[len(FAIRNESS_PREFIX) :])
    base, features = _split_analysis(qualified)
    known = threshold is not None and threshold in fairness.get("thresholds", [])
    if not known or base not in (*DISPARITY_METRICS, *GROUP_METRICS):
        return None, (
            f"metric {metric!r} is not in the fairness indicators; available metrics: "
            f"{_fairness_names(fairness)}"
        )
    assert threshold is not None
    if base in DISPARITY_METRICS:
        if slice_key:
            return None, (
                f"{base} compares all groups; use slice=None, not {slice_name(slice_key)!r}"
            )
        return _worst_disparity(fairness, base, threshold, features)
    analyses = fairness.get("analyses", [])
    if not slice_key:
        return _block(analyses[0], threshold)["overall"][base], None
    available = []
    for analysis in analyses:
        for group in _block(analysis, threshold)["by_group"]:
            if _same_slice(group["group"], slice_key):
                return group["metrics"][base], None
            available.append(group["name"])
    return None, (
        f"group {slice_name(slice_key)!r} is not in the fairness indicators; "
        f"available groups: {available}"
    )


def _quantization_entry(
    evaluation: Mapping[str, Any] | None, metric: str, slice_key: Mapping[str, Any]
) -> tuple[dict | None, str | None]:
    report = (evaluation or {}).get("quantization")
    if report is None:
        return None, (
            f"metric {metric!r} compares a quantized model but the evaluation holds no "
            "quantization comparison; export one with Trainer(quantize_int8=True)"
        )
    if slice_key:
        return None, f"{metric} is an overall comparison; use slice=None"
    name = metric[len(QUANTIZATION_PREFIX) :]
    entry = _find_in(report["metrics"], name)
    if entry is None:
        return None, (
            f"metric {name!r} is not in the quantization comparison; available: "
            f"{sorted(report['metrics'])}"
        )
    if entry["change"] is None:
        return {"value": None, "reason": f"{name} is undefined for one of the models"}, None
    return {"value": entry["change"], "lower": None, "upper": None}, None


def lookup_metric(
    doc: Mapping[str, Any], metric: str, slice: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Find one metric entry (``{"value", "lower", "upper"[, "reason"]}``) in a document.

    Args:
      doc: an evaluation document, a fairness document, or an evaluation with
        a fairness document under ``"fairness"``.
      metric: metric name (see the module docstring).
      slice: slice or group key; None for overall.

    Returns:
      ``(entry, None)`` when found, else ``(None, reason)`` naming what is available.
    """
    evaluation, fairness = _documents(doc)
    slice_key = dict(slice or {})
    if metric.startswith(QUANTIZATION_PREFIX):
        return _quantization_entry(evaluation, metric, slice_key)
    if metric.startswith(FAIRNESS_PREFIX):
        return _fairness_entry(fairness, metric, slice_key)
    return _evaluation_entry(evaluation, metric, slice_key)


# ------------------------------------------------------------------------ checks


def _fmt(value: float | None) -> str:
    return "null" if value is None else f"{value:.6g}"


def _check(
    threshold: MetricThreshold,
    kind: str,
    value: float | None,
    baseline: float | None,
    bound: float | None,
    passed: bool,
    reason: str,
) -> dict[str, Any]:
    return {
        "metric": threshold.metric,
        "slice": dict(threshold.slice or {}),
        "kind": kind,
        "value": value,
        "baseline": baseline,
        "bound": bound,
        "passed": bool(passed),
        "reason": reason,
    }


def _kinds(threshold: MetricThreshold) -> list[str]:
    kinds = []
    if threshold.lower is not None:
        kinds.append("lower")
    if threshold.upper is not None:
        kinds.append("upper")
    if threshold.change is not None:
        if threshold.change.absolute is not None:
            kinds.append("change_absolute")
        if threshold.change.relative is not None:
            kinds.append("change_relative")
    return kinds


def _value_check(threshold: MetricThreshold, kind: str, value: float) -> dict[str, Any]:
    label = _label(threshold.metric, threshold.slice)
    limit = threshold.lower if kind == "lower" else threshold.upper
    assert limit is not None
    bound = float(limit)
    if kind == "lower":
        passed = value >= bound
        reason = (
            f"{label} = {_fmt(value)} >= lower bound {_fmt(bound)}"
            if passed
            else f"{label} = {_fmt(value)} is below the lower bound {_fmt(bound)}"
        )
    else:
        passed = value <= bound
        reason = (
            f"{label} = {_fmt(value)} <= upper bound {_fmt(bound)}"
            if passed
            else f"{label} = {_fmt(value)} is above the upper bound {_fmt(bound)}"
        )
    return _check(threshold, kind, value, None, bound, passed, reason)


def _change_check(
    threshold: MetricThreshold, kind: str, value: float, baseline: float
) -> dict[str, Any]:
    change = threshold.change
    assert change is not None
    label = _label(threshold.metric, threshold.slice)
    higher = change.direction == "higher_is_better"
    amount = change.absolute if kind == "change_absolute" else change.relative
    assert amount is not None
    if kind == "change_absolute":
        allowed = float(amount)
        allowed_text = f"{_fmt(allowed)} (absolute)"
    else:
        allowed = float(amount) * abs(baseline)
        allowed_text = f"{_fmt(100.0 * float(amount))}% of |baseline| ({_fmt(allowed)})"
    bound = baseline - allowed if higher else baseline + allowed
    passed = value >= bound if higher else value <= bound
    worse = (baseline - value) if higher else (value - baseline)
    head = f"{label} = {_fmt(value)} vs baseline {_fmt(baseline)} ({change.direction})"
    if passed:
        reason = f"{head}: within the allowed degradation {allowed_text}, bound {_fmt(bound)}"
    else:
        reason = (
            f"{head}: worse by {_fmt(worse)}, more than the allowed {allowed_text}; "
            f"bound {_fmt(bound)}"
        )
    return _check(threshold, kind, value, baseline, bound, passed, reason)


def _checks_for(
    threshold: MetricThreshold,
    candidate: Mapping[str, Any],
    baseline_doc: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    label = _label(threshold.metric, threshold.slice)
    kinds = _kinds(threshold)
    entry, missing = lookup_metric(candidate, threshold.metric, threshold.slice)
    if entry is None:
        return [_check(threshold, k, None, None, None, False, missing or "") for k in kinds]
    value = entry.get("value")
    if value is None:
        why = entry.get("reason", "undefined")
        reason = f"{label} is undefined in the candidate evaluation: {why}"
        return [_check(threshold, k, None, None, None, False, reason) for k in kinds]
    value = float(value)

    base_value: float | None = None
    base_problem: str | None = None
    if baseline_doc is not None and threshold.change is not None:
        base_entry, base_missing = lookup_metric(baseline_doc, threshold.metric, threshold.slice)
        if base_entry is None:
            base_problem = f"baseline evaluation: {base_missing}"
        elif base_entry.get("value") is None:
            base_problem = (
                f"{label} is undefined in the baseline evaluation: "
                f"{base_entry.get('reason', 'undefined')}"
            )
        else:
            base_value = float(base_entry["value"])

    checks = []
    for kind in kinds:
        if kind in ("lower", "upper"):
            checks.append(_value_check(threshold, kind, value))
        elif baseline_doc is None:
            checks.append(_check(threshold, kind, value, None, None, True, NO_BASELINE))
        elif base_value is None:
            checks.append(_check(threshold, kind, value, None, None, False, base_problem or ""))
        else:
            checks.append(_change_check(threshold, kind, value, base_value))
    return checks


def bless(
    candidate_eval: Mapping[str, Any],
    thresholds: Iterable[MetricThreshold | Mapping[str, Any]],
    *,
    baseline_eval: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a candidate model's evaluation against thresholds.

    Args:
      candidate_eval: the candidate's evaluation document (optionally with
        fairness attached), or a fairness document.
      thresholds: :class:`MetricThreshold` objects (or mappings accepted by
        :meth:`MetricThreshold.from_dict`).
      baseline_eval: the baseline model's document, for change thresholds;
        None for the first model.

    Returns:
      ``{"format": "jaxtx.blessing/1", "blessed": bool, "checks": [...]}``;
      blessed when every check passed (also when there are no thresholds).
    """
    _documents(candidate_eval)
    if baseline_eval is not None:
        _documents(baseline_eval)
    checks: list[dict[str, Any]] = []
    for threshold in thresholds:
        parsed = (
            threshold
            if isinstance(threshold, MetricThreshold)
            else MetricThreshold.from_dict(threshold)
        )
        checks.extend(_checks_for(parsed, candidate_eval, baseline_eval))
    return {
        "format": FORMAT,
        "blessed": all(c["passed"] for c in checks),
        "checks": checks,
    }
