"""Fairness indicators: per-group rates and disparities that can gate a release.

:func:`fairness_indicators` thresholds binary scores and reports, for each
*analysis* (one per sensitive feature by default; the intersection of all of
them as an option), per group and per threshold, the rates of the confusion
matrix and the disparities between groups, each with a seeded bootstrap
confidence interval. The document (``jaxtx.fairness/2``)::

    {
      "format": "jaxtx.fairness/2",
      "sensitive_features": ["sex", "race"],
      "intersections": false,
      "min_group_size": 30,
      "num_examples": 5000,
      "thresholds": [0.5],
      "confidence_level": 0.95, "num_bootstrap": 100, "seed": 0,
      "interval_methods": {"bca": "...", "percentile": "...", ...},
      "warnings": ["race: groups race=c (8 rows) have fewer than min_group_size=30 ..."],
      "analyses": [
        {"features": ["sex"], "name": "sex",
         "groups": [{"group": {"sex": "F"}, "name": "sex=F", "count": 2400,
                     "positives": 900, "negatives": 1500, "included": true}, ...],
         "excluded_groups": [],
         "by_threshold": [
           {"threshold": 0.5,
            "overall": {"tpr": {"value": 0.7, "lower": 0.68, "upper": 0.72,
                                "method": "bca", "resamples": 100}, ...},
            "by_group": [
              {"group": {"sex": "F"}, "name": "sex=F", "included": true,
               "metrics": {"tpr": {...}, "fpr": {...}, "fnr": {...}, "tnr": {...},
                           "selection_rate": {...}, "precision": {...}, "count": {...}}},
              ...],
            "disparities": {"demographic_parity_difference": {...}, ...}}]},
        {"features": ["race"], "name": "race", ...}
      ]
    }

Definitions
-----------
An example is selected (predicted positive) when its score is ``>= threshold``.
Rates follow ``fairlearn.metrics`` (``true_positive_rate`` etc.) wherever they
are defined. **One rule for undefined metrics**, shared with
:func:`jaxtx.validation.evaluation.evaluate`: a rate whose denominator is empty
(the TPR and FNR of a group without positive labels, the FPR and TNR of a group
without negative labels, the precision of a group with no selected example) is
``{"value": null, "reason": "..."}``, never 0.

Disparities (fairlearn's ``method="between_groups"``, ``agg="worst_case"``)
run over the *included* groups on which the rate is defined:

* ``*_difference`` is the largest minus the smallest group value; the
  equalized odds difference is the larger of the TPR and FPR differences;
* ``*_ratio`` is the smallest over the largest group value, null (with a
  reason) when the largest is 0; the equalized odds ratio is the smaller of
  the TPR and FPR ratios that are defined.

So wherever every group's rate is defined, every value equals fairlearn's on
the rows of the included groups.

Small groups
------------
A group with fewer than ``min_group_size`` rows is reported (counts, rates and
intervals) with ``"included": false`` but takes no part in the disparities, so
a handful of rows cannot decide a fairness gate. Every excluded group is named
in ``"warnings"`` and in its analysis's ``"excluded_groups"``.

Intervals
---------
Resampling is stratified by group (each group's rows are resampled with
replacement within the group, so every group keeps its size). As the metrics
depend only on each group's confusion counts, a resample of a group is a
multinomial draw over its four cells. A statistic that is undefined on a
resample (a group without positives in that resample, a ratio 0/0) is left
out; ``"resamples"`` says on how many it was defined. A disparity is undefined
on a resample when a group rate it uses at the estimate is undefined there.

The interval is **BCa** (bias-corrected and accelerated; acceleration from the
exact jackknife over the confusion cells), ``"method": "bca"``. When BCa is
undefined (every resample on one side of the estimate) or its interval would
not contain the estimate, the fallback is the percentile interval, widened to
the estimate if it excludes it (``"percentile"`` / ``"percentile_widened"``):
the percentile interval alone can exclude the estimate of a min/max statistic
such as a disparity. Fewer than 2 defined resamples give no interval.

:func:`attach_fairness` stores the document in an evaluation document so that
:func:`jaxtx.validation.blessing.bless` can check fairness metrics.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxtx.validation.evaluation import (
    CONFIDENCE_LEVEL,
    INTERVAL_METHODS,
    _binary_labels,
    _check_not_empty,
    _check_same_rows,
    _divide,
    _feature_codes,
    _scores,
    _thresholds,
    bootstrap_interval,
    format_threshold,
    slice_name,
)

__all__ = [
    "DISPARITY_METRICS",
    "FORMAT",
    "GROUP_METRICS",
    "INTERVAL_METHODS",
    "attach_fairness",
    "bootstrap_interval",
    "fairness_indicators",
]

FORMAT = "jaxtx.fairness/2"
GROUP_METRICS = ("tpr", "fpr", "fnr", "tnr", "selection_rate", "precision", "count")
DISPARITY_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
)
DEFAULT_SENSITIVE_NAME = "sensitive"

# Cell index of an example in its group's confusion counts: 2 * label + selected.
_TN, _FP, _FN, _TP = 0, 1, 2, 3


# ---------------------------------------------------------------------- groups


def _analyses(
    sensitive: Any, n: int, intersections: bool
) -> list[tuple[list[str], list[dict[str, Any]], np.ndarray]]:
    """Per analysis: its feature names, observed group keys and each row's group code."""
    features = (
        dict(sensitive) if isinstance(sensitive, Mapping) else {DEFAULT_SENSITIVE_NAME: sensitive}
    )
    if not features:
        raise ValueError("sensitive is an empty mapping; pass at least one sensitive feature.")
    decoded: dict[str, tuple[list[Any], np.ndarray]] = {}
    for name, values in features.items():
        array = np.asarray(values)
        if array.ndim != 1 or array.shape[0] != n:
            raise ValueError(
                f"sensitive feature {name!r} has shape {array.shape} but labels has {n} rows; "
                "pass one value per example."
            )
        decoded[str(name)] = _feature_codes(str(name), array, n)
    names = list(decoded)
    sets = [[name] for name in names]
    if intersections and len(names) > 1:
        sets.append(names)
    out = []
    for feature_set in sets:
        stacked = np.stack([decoded[f][1] for f in feature_set], axis=1)
        combos, inverse = np.unique(stacked, axis=0, return_inverse=True)
        keys = [
            {f: decoded[f][0][int(c)] for f, c in zip(feature_set, combo, strict=True)}
            for combo in combos
        ]
        out.append((feature_set, keys, inverse.reshape(-1)))
    return out


def _counts(cells: np.ndarray, num_groups: int) -> np.ndarray:
    """(groups, 4) counts of tn, fp, fn, tp per group."""
    return np.bincount(cells, minlength=num_groups * 4).reshape(num_groups, 4).astype(np.float64)


def _rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates from (..., 4) counts; NaN where a rate's denominator is 0."""
    tn, fp, fn, tp = (counts[..., i] for i in (_TN, _FP, _FN, _TP))
    positives, negatives = tp + fn, tn + fp
    count = positives + negatives
    selected = tp + fp
    return {
        "tpr": _divide(tp, positives),
        "fpr": _divide(fp, negatives),
        "fnr": _divide(fn, positives),
        "tnr": _divide(tn, negatives),
        "selection_rate": _divide(selected, count),
        "precision": _divide(tp, selected),
        "count": count.astype(np.float64),
    }


def _rate_reasons(threshold: float, where: str) -> dict[str, str]:
    t = format_threshold(threshold)
    return {
        "tpr": f"no positive labels in {where}: tpr = tp / (tp + fn) is 0/0",
        "fnr": f"no positive labels in {where}: fnr = fn / (tp + fn) is 0/0",
        "fpr": f"no negative labels in {where}: fpr = fp / (fp + tn) is 0/0",
        "tnr": f"no negative labels in {where}: tnr = tn / (fp + tn) is 0/0",
        "precision": f"no example scored >= {t} in {where}: precision = tp / (tp + fp) is 0/0",
        "selection_rate": f"no examples in {where}",
        "count": "undefined",
    }


# ------------------------------------------------------------------ disparities


def _spread(values: np.ndarray, uses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max - min, min / max, undefined) over the groups in ``uses``, per row of (R, G)."""
    rows = values.shape[0]
    if not uses.any():
        nan = np.full(rows, np.nan)
        return nan, nan, np.zeros(rows, dtype=bool)
    used = values[:, uses]
    bad = np.isnan(used).any(axis=1)
    high, low = np.max(used, axis=1), np.min(used, axis=1)
    diff = np.where(bad, np.nan, high - low)
    return diff, np.where(bad, np.nan, _divide(low, high)), bad


def _disparities(rates: Mapping[str, np.ndarray], uses: Mapping[str, np.ndarray]):
    """Disparities per row of (R, G) rates, over the groups each rate ``uses``."""
    dp_diff, dp_ratio, _ = _spread(rates["selection_rate"], uses["selection_rate"])
    tpr_diff, tpr_ratio, tpr_bad = _spread(rates["tpr"], uses["tpr"])
    fpr_diff, fpr_ratio, fpr_bad = _spread(rates["fpr"], uses["fpr"])
    bad = tpr_bad | fpr_bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "demographic_parity_difference": dp_diff,
            "demographic_parity_ratio": dp_ratio,
            "equalized_odds_difference": np.where(bad, np.nan, np.fmax(tpr_diff, fpr_diff)),
            "equalized_odds_ratio": np.where(bad, np.nan, np.fmin(tpr_ratio, fpr_ratio)),
        }


def _uses(counts: np.ndarray, included: np.ndarray) -> dict[str, np.ndarray]:
    """Which groups each disparity's rate runs over: included and defined at the estimate."""
    positives = counts[:, _TP] + counts[:, _FN]
    negatives = counts[:, _TN] + counts[:, _FP]
    return {
        "selection_rate": included & (positives + negatives > 0),
        "tpr": included & (positives > 0),
        "fpr": included & (negatives > 0),
    }


def _disparity_reasons(threshold: float, uses: Mapping[str, np.ndarray]) -> dict[str, str]:
    t = format_threshold(threshold)
    if not uses["selection_rate"].any():
        none = "no group has at least min_group_size rows, so there is nothing to compare"
        return dict.fromkeys(DISPARITY_METRICS, none)
    if not (uses["tpr"].any() or uses["fpr"].any()):
        eo = "no included group has both labels"
    else:
        eo = "every included group's true and false positive rates are 0, so both ratios are 0/0"
    return {
        "demographic_parity_difference": "undefined",
        "demographic_parity_ratio": (
            f"every included group's selection rate is 0 (no example scored >= {t}), "
            "so the ratio is 0/0"
        ),
        "equalized_odds_difference": eo,
        "equalized_odds_ratio": eo,
    }


# -------------------------------------------------------------------- resampling


def _resample(counts: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """(num, groups, 4) stratified bootstrap counts: a multinomial draw per group."""
    out = np.zeros((num, *counts.shape))
    for g, row in enumerate(counts):
        size = int(row.sum())
        if size:
            out[:, g] = rng.multinomial(size, row / size, size=num)
    return out


def _jackknife(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out counts (one per non-empty cell) and how many rows each stands for."""
    cells = np.argwhere(counts > 0)
    loo = np.repeat(counts[None], len(cells), axis=0)
    loo[np.arange(len(cells)), cells[:, 0], cells[:, 1]] -= 1.0
    return loo, counts[cells[:, 0], cells[:, 1]]


def _statistics(counts: np.ndarray, uses: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Group rates (R, G), overall rates (R,) and disparities (R,) of (R, G, 4) counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rates = _rates(counts)
        return {
            "groups": rates,
            "overall": _rates(counts.sum(axis=1)),
            "disparities": _disparities(rates, uses),
        }


def _entry(point: float, boot: np.ndarray | None, jack, jack_w, reason: str) -> dict[str, Any]:
    """``{"value", "lower", "upper", "method", "resamples"}``, or null with a reason."""
    if not math.isfinite(point):
        return {"value": None, "lower": None, "upper": None, "method": None, "reason": reason}
    out: dict[str, Any] = {"value": float(point)}
    if boot is None:
        out.update(lower=None, upper=None, method=None)
        return out
    out.update(bootstrap_interval(float(point), boot, jack, jack_w))
    return out


def _threshold_block(
    counts: np.ndarray,
    included: np.ndarray,
    threshold: float,
    names: Sequence[str],
    keys: Sequence[Mapping[str, Any]],
    boot_counts: np.ndarray | None,
) -> dict[str, Any]:
    """One threshold of one analysis: group rates, overall rates, disparities."""
    uses = _uses(counts, included)
    point = _statistics(counts[None], uses)
    boot = _statistics(boot_counts, uses) if boot_counts is not None else None
    loo, loo_w = _jackknife(counts)
    jack = _statistics(loo, uses)
    group_reasons = _rate_reasons(threshold, "this group")

    def pick(section: str, metric: str, g: int | None, reason: str) -> dict[str, Any]:
        def column(stats):
            values = stats[section][metric]
            return values[:, g] if g is not None else values

        return _entry(
            float(column(point)[0]),
            column(boot) if boot is not None else None,
            column(jack),
            loo_w,
            reason,
        )

    by_group = [
        {
            "group": dict(keys[g]),
            "name": names[g],
            "included": bool(included[g]),
            "metrics": {m: pick("groups", m, g, group_reasons[m]) for m in GROUP_METRICS},
        }
        for g in range(len(names))
    ]
    overall_reasons = _rate_reasons(threshold, "the data")
    disparity_reasons = _disparity_reasons(threshold, uses)
    return {
        "threshold": threshold,
        "overall": {m: pick("overall", m, None, overall_reasons[m]) for m in GROUP_METRICS},
        "by_group": by_group,
        "disparities": {
            m: pick("disparities", m, None, disparity_reasons[m]) for m in DISPARITY_METRICS
        },
    }


def _analysis(
    feature_set: list[str],
    keys: list[dict[str, Any]],
    codes: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    thresholds: list[float],
    settings: Mapping[str, int],
) -> dict[str, Any]:
    """The groups, excluded groups and per-threshold indicators of one analysis."""
    num_groups = len(keys)
    names = [slice_name(k) for k in keys]
    sizes = np.bincount(codes, minlength=num_groups)
    positives = np.bincount(codes, weights=y, minlength=num_groups).astype(np.int64)
    included = sizes >= settings["min_group_size"]
    name = ", ".join(feature_set)
    by_threshold = []
    for i, t in enumerate(thresholds):
        counts = _counts(codes * 4 + y * 2 + (s >= t), num_groups)
        boot_counts = None
        if settings["num_bootstrap"] > 0:
            rng = np.random.default_rng([settings["seed"], zlib.crc32(name.encode("utf-8")), i])
            boot_counts = _resample(counts, settings["num_bootstrap"], rng)
        by_threshold.append(_threshold_block(counts, included, t, names, keys, boot_counts))
    groups = [
        {
            "group": keys[g],
            "name": names[g],
            "count": int(sizes[g]),
            "positives": int(positives[g]),
            "negatives": int(sizes[g] - positives[g]),
            "included": bool(included[g]),
        }
        for g in range(num_groups)
    ]
    for group in groups:
        if not group["included"]:
            group["reason"] = (
                f"{group['count']} rows, fewer than min_group_size={settings['min_group_size']}: "
                "reported but excluded from the disparities"
            )
    return {
        "features": list(feature_set),
        "name": name,
        "groups": groups,
        "excluded_groups": [g["name"] for g in groups if not g["included"]],
        "by_threshold": by_threshold,
    }


def _warnings(analyses: Sequence[Mapping[str, Any]], min_group_size: int) -> list[str]:
    out = []
    for analysis in analyses:
        small = [g for g in analysis["groups"] if not g["included"]]
        if small:
            listed = ", ".join(f"{g['name']} ({g['count']} rows)" for g in small)
            out.append(
                f"{analysis['name']}: group(s) {listed} have fewer than "
                f"min_group_size={min_group_size} rows; they are reported with their intervals "
                "but excluded from the disparities"
            )
    return out


def fairness_indicators(
    labels: Any,
    scores: Any,
    sensitive: Any,
    *,
    thresholds: Iterable[float] = (0.5,),
    min_group_size: int = 1,
    intersections: bool = False,
    num_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-group rates and between-group disparities of thresholded scores.

    Args:
      labels: ``[n]`` 0/1 labels.
      scores: ``[n]`` scores (e.g. probability of class 1); an example is
        selected when its score is ``>=`` the threshold.
      sensitive: ``[n]`` group values (strings or numbers), or a mapping
        feature name -> ``[n]`` values. A bare array is named ``"sensitive"``.
      thresholds: decision thresholds.
      min_group_size: groups with fewer rows are reported but excluded from
        the disparities (and named in ``"warnings"``).
      intersections: also analyze the observed combinations of all sensitive
        features (the per-feature analyses are always there).
      num_bootstrap: resamples for the confidence intervals (0: no intervals).
      seed: seed of the resampling.

    Returns:
      A ``jaxtx.fairness/2`` document (see the module docstring).

    Raises:
      ValueError: on empty inputs, NaN or infinite values, labels other than 0/1,
        arrays of different lengths, or ``min_group_size < 1``.
    """
    if int(num_bootstrap) < 0:
        raise ValueError(f"num_bootstrap must be >= 0, got {num_bootstrap}.")
    if int(min_group_size) < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}.")
    settings = {
        "num_bootstrap": int(num_bootstrap),
        "seed": int(seed),
        "min_group_size": int(min_group_size),
    }
    raw_labels, raw_scores = np.asarray(labels), np.asarray(scores)
    _check_not_empty("scores", raw_scores)
    _check_not_empty("labels", raw_labels)
    _check_same_rows("labels", raw_labels, "scores", raw_scores)
    y = _binary_labels("labels", raw_labels).astype(np.int64)
    s = _scores("scores", raw_scores, probabilities=False)
    threshold_list = _thresholds(thresholds)
    n = int(y.size)
    analyses = [
        _analysis(feature_set, keys, codes, y, s, threshold_list, settings)
        for feature_set, keys, codes in _analyses(sensitive, n, bool(intersections))
    ]
    return {
        "format": FORMAT,
        "sensitive_features": _feature_names(analyses),
        "intersections": bool(intersections),
        "min_group_size": settings["min_group_size"],
        "num_examples": n,
        "thresholds": threshold_list,
        "confidence_level": CONFIDENCE_LEVEL,
        "num_bootstrap": settings["num_bootstrap"],
        "seed": settings["seed"],
        "interval_methods": dict(INTERVAL_METHODS),
        "warnings": _warnings(analyses, settings["min_group_size"]),
        "analyses": analyses,
    }


def _feature_names(analyses: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for analysis in analyses:
        names.extend(f for f in analysis["features"] if f not in names)
    return names


def attach_fairness(evaluation: Mapping[str, Any], fairness: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an evaluation document with a fairness document under ``"fairness"``.

    Args:
      evaluation: a ``jaxtx.evaluation/1`` document.
      fairness: a ``jaxtx.fairness/2`` document.

    Returns:
      A shallow copy of ``evaluation`` with ``"fairness": fairness``.

    Raises:
      ValueError: if either document has the wrong format.
    """
    if evaluation.get("format") != "jaxtx.evaluation/1":
        raise ValueError(
            f"evaluation has format {evaluation.get('format')!r}; pass the output of evaluate()."
        )
    if fairness.get("format") != FORMAT:
        raise ValueError(
            f"fairness has format {fairness.get('format')!r}; "
            "pass the output of fairness_indicators()."
        )
    combined = dict(evaluation)
    combined["fairness"] = fairness
    return combined
