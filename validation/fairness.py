"""Fairness indicators: per-group rates and disparities, Fairness Indicators style.

:func:`fairness_indicators` thresholds binary scores and reports, per group of
the sensitive feature(s) and per threshold, the rates of the confusion matrix
and the disparities between groups, each with a seeded bootstrap confidence
interval. The document (``jaxtx.fairness/1``)::

    {
      "format": "jaxtx.fairness/1",
      "sensitive_features": ["sex"],
      "num_examples": 5000,
      "thresholds": [0.5],
      "confidence_level": 0.95, "num_bootstrap": 100, "seed": 0,
      "groups": [{"group": {"sex": "F"}, "name": "sex=F", "count": 2400}, ...],
      "by_threshold": [
        {"threshold": 0.5,
         "overall": {"tpr": {"value": 0.7, "lower": 0.68, "upper": 0.72}, ...},
         "by_group": [
           {"group": {"sex": "F"}, "name": "sex=F",
            "metrics": {"tpr": {...}, "fpr": {...}, "fnr": {...}, "tnr": {...},
                        "selection_rate": {...}, "precision": {...}, "count": {...}},
            "notes": ["no positive labels: tpr and fnr are reported as 0 ..."]},
           ...],
         "disparities": {"demographic_parity_difference": {...},
                         "demographic_parity_ratio": {...},
                         "equalized_odds_difference": {...},
                         "equalized_odds_ratio": {...}}}
      ]
    }

An example is selected (predicted positive) when its score is ``>= threshold``.
Definitions follow ``fairlearn.metrics`` (``MetricFrame`` with
``true_positive_rate`` etc., and the disparity functions with their default
``method="between_groups"``, ``agg="worst_case"``):

* a rate whose denominator is empty is 0, not undefined (e.g. the TPR and FNR of
  a group without positive labels, the precision of a group with no selected
  example); such cases are listed in the group's ``"notes"``;
* ``*_difference`` is the largest minus the smallest group value; the
  equalized odds difference is the larger of the TPR and FPR differences;
* ``*_ratio`` is the smallest over the largest group value, undefined (null,
  with a reason) when the largest is 0; the equalized odds ratio is the TPR
  ratio, or the FPR ratio when that is smaller (so it is undefined when the
  TPR ratio is).

Groups are the observed values of ``sensitive``, or the observed combinations
of several sensitive features. In a bootstrap resample a group may be absent:
it is then left out of that resample's group values and disparities.
:func:`attach_fairness` stores the document in an evaluation document so that
:func:`jaxtx.validation.blessing.bless` can check fairness metrics.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxtx.validation.evaluation import (
    CONFIDENCE_LEVEL,
    _binary_labels,
    _check_not_empty,
    _check_same_rows,
    _divide,
    _feature_codes,
    _scores,
    _summary,
    _thresholds,
    _weight_blocks,
    format_threshold,
    slice_name,
)

__all__ = [
    "DISPARITY_METRICS",
    "FORMAT",
    "GROUP_METRICS",
    "attach_fairness",
    "fairness_indicators",
]

FORMAT = "jaxtx.fairness/1"
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


def _groups(sensitive: Any, n: int) -> tuple[list[str], list[dict[str, Any]], np.ndarray]:
    """Sensitive feature names, the observed group keys and each row's group code."""
    features = (
        dict(sensitive) if isinstance(sensitive, Mapping) else {DEFAULT_SENSITIVE_NAME: sensitive}
    )
    if not features:
        raise ValueError("sensitive is an empty mapping; pass at least one sensitive feature.")
    names = [str(k) for k in features]
    decoded = []
    for name, values in features.items():
        array = np.asarray(values)
        if array.ndim != 1 or array.shape[0] != n:
            raise ValueError(
                f"sensitive feature {name!r} has shape {array.shape} but labels has {n} rows; "
                "pass one value per example."
            )
        decoded.append(_feature_codes(str(name), array, n))
    stacked = np.stack([codes for _, codes in decoded], axis=1)
    combos, inverse = np.unique(stacked, axis=0, return_inverse=True)
    keys = [
        {name: decoded[j][0][int(c)] for j, (name, c) in enumerate(zip(names, combo, strict=True))}
        for combo in combos
    ]
    return names, keys, inverse.reshape(-1)


def _cell_counts(cells: np.ndarray, num_groups: int, weights: np.ndarray) -> np.ndarray:
    """(resamples, groups, 4) weighted counts of tn, fp, fn, tp per group."""
    size = num_groups * 4
    flat = np.stack([np.bincount(cells, weights=row, minlength=size) for row in weights])
    return flat.reshape(weights.shape[0], num_groups, 4)


def _rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Fairlearn's per-group rates from (..., 4) counts; NaN where a group has no rows."""
    tn, fp, fn, tp = (counts[..., i] for i in (_TN, _FP, _FN, _TP))
    positives, negatives = tp + fn, tn + fp
    count = positives + negatives
    selected = tp + fp
    absent = count == 0
    rates = {
        "tpr": _divide(tp, positives, zero=0.0),
        "fpr": _divide(fp, negatives, zero=0.0),
        "fnr": _divide(fn, positives, zero=0.0),
        "tnr": _divide(tn, negatives, zero=0.0),
        "selection_rate": _divide(selected, count, zero=0.0),
        "precision": _divide(tp, selected, zero=0.0),
    }
    rates = {k: np.where(absent, np.nan, v) for k, v in rates.items()}
    rates["count"] = count.astype(np.float64)
    return rates


def _spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max - min, min / max) over the groups present (non-NaN) in each resample."""
    high = np.nanmax(values, axis=-1)
    low = np.nanmin(values, axis=-1)
    return high - low, _divide(low, high)


def _disparities(rates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fairlearn's between-groups disparities from (resamples, groups) rates."""
    dp_diff, dp_ratio = _spread(rates["selection_rate"])
    tpr_diff, tpr_ratio = _spread(rates["tpr"])
    fpr_diff, fpr_ratio = _spread(rates["fpr"])
    return {
        "demographic_parity_difference": dp_diff,
        "demographic_parity_ratio": dp_ratio,
        # max()/min() of Python over (tpr, fpr), NaN comparisons included.
        "equalized_odds_difference": np.where(fpr_diff > tpr_diff, fpr_diff, tpr_diff),
        "equalized_odds_ratio": np.where(fpr_ratio < tpr_ratio, fpr_ratio, tpr_ratio),
    }


def _all_metrics(
    cells: list[np.ndarray], num_groups: int, weights: np.ndarray
) -> list[dict[str, Any]]:
    """Per threshold: group rates (resamples, groups), overall rates and disparities."""
    out = []
    for threshold_cells in cells:
        counts = _cell_counts(threshold_cells, num_groups, weights)
        rates = _rates(counts)
        out.append(
            {
                "groups": rates,
                "overall": _rates(counts.sum(axis=1)),
                "disparities": _disparities(rates),
            }
        )
    return out


def _concat(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Join the per-block results of :func:`_all_metrics` along the resample axis."""
    joined = []
    for i in range(len(parts[0])):
        entry: dict[str, Any] = {}
        for section in ("groups", "overall", "disparities"):
            entry[section] = {
                name: np.concatenate([block[i][section][name] for block in parts])
                for name in parts[0][i][section]
            }
        joined.append(entry)
    return joined


def _notes(counts: np.ndarray, threshold: float) -> list[str]:
    tn, fp, fn, tp = (float(counts[i]) for i in (_TN, _FP, _FN, _TP))
    notes = []
    if tp + fn == 0:
        notes.append("no positive labels: tpr and fnr are reported as 0 (fairlearn's convention)")
    if tn + fp == 0:
        notes.append("no negative labels: fpr and tnr are reported as 0 (fairlearn's convention)")
    if tp + fp == 0:
        notes.append(
            f"no example scored >= {format_threshold(threshold)}: precision is reported as 0"
        )
    return notes


def _disparity_reasons(threshold: float) -> dict[str, str]:
    t = format_threshold(threshold)
    return {
        "demographic_parity_ratio": (
            f"every group's selection rate is 0 (no example scored >= {t}), so the ratio is 0/0"
        ),
        "equalized_odds_ratio": "every group's true positive rate is 0, so the TPR ratio is 0/0",
    }


def _entry(
    point: Mapping[str, Any],
    resampled: Mapping[str, Any] | None,
    section: str,
    name: str,
    group: int | None,
    reason: str | None,
) -> dict[str, Any]:
    """Summary (value and CI) of one metric of one threshold, for one group or overall."""
    value = point[section][name][0]
    values = resampled[section][name] if resampled is not None else None
    if group is not None:
        value = value[group]
        values = values[:, group] if values is not None else None
    return _summary(float(value), values, reason)


def fairness_indicators(
    labels: Any,
    scores: Any,
    sensitive: Any,
    *,
    thresholds: Iterable[float] = (0.5,),
    num_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-group rates and between-group disparities of thresholded scores.

    Args:
      labels: ``[n]`` 0/1 labels.
      scores: ``[n]`` scores (e.g. probability of class 1); an example is
        selected when its score is ``>=`` the threshold.
      sensitive: ``[n]`` group values (strings or numbers), or a mapping
        feature name -> ``[n]`` values whose observed combinations are the
        groups. A bare array is named ``"sensitive"``.
      thresholds: decision thresholds.
      num_bootstrap: resamples for the confidence intervals (0: no intervals).
      seed: seed of the resampling.

    Returns:
      A ``jaxtx.fairness/1`` document (see the module docstring).

    Raises:
      ValueError: on empty inputs, NaN or infinite values, labels other than 0/1,
        or arrays of different lengths.
    """
    if int(num_bootstrap) < 0:
        raise ValueError(f"num_bootstrap must be >= 0, got {num_bootstrap}.")
    num_bootstrap, seed = int(num_bootstrap), int(seed)
    raw_labels, raw_scores = np.asarray(labels), np.asarray(scores)
    _check_not_empty("scores", raw_scores)
    _check_not_empty("labels", raw_labels)
    _check_same_rows("labels", raw_labels, "scores", raw_scores)
    y = _binary_labels("labels", raw_labels)
    s = _scores("scores", raw_scores, probabilities=False)
    threshold_list = _thresholds(thresholds)
    n = int(y.size)
    feature_names, keys, group_codes = _groups(sensitive, n)
    num_groups = len(keys)
    cells = [group_codes * 4 + y * 2 + (s >= t) for t in threshold_list]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point_counts = [_cell_counts(c, num_groups, np.ones((1, n)))[0] for c in cells]
        point = _all_metrics(cells, num_groups, np.ones((1, n)))
        resampled = None
        if num_bootstrap > 0:
            rng = np.random.default_rng(seed)
            blocks = [
                _all_metrics(cells, num_groups, w) for w in _weight_blocks(n, num_bootstrap, rng)
            ]
            resampled = _concat(blocks)

    names = [slice_name(k) for k in keys]
    by_threshold = []
    for i, t in enumerate(threshold_list):
        boot = resampled[i] if resampled is not None else None
        reasons = _disparity_reasons(t)
        by_group = [
            {
                "group": keys[g],
                "name": names[g],
                "metrics": {m: _entry(point[i], boot, "groups", m, g, None) for m in GROUP_METRICS},
                "notes": _notes(point_counts[i][g], t),
            }
            for g in range(num_groups)
        ]
        by_threshold.append(
            {
                "threshold": t,
                "overall": {
                    m: _entry(point[i], boot, "overall", m, None, None) for m in GROUP_METRICS
                },
                "by_group": by_group,
                "disparities": {
                    m: _entry(point[i], boot, "disparities", m, None, reasons.get(m))
                    for m in DISPARITY_METRICS
                },
            }
        )

    group_sizes = np.bincount(group_codes, minlength=num_groups)
    return {
        "format": FORMAT,
        "sensitive_features": feature_names,
        "num_examples": n,
        "thresholds": threshold_list,
        "confidence_level": CONFIDENCE_LEVEL,
        "num_bootstrap": num_bootstrap,
        "seed": seed,
        "groups": [
            {"group": keys[g], "name": names[g], "count": int(group_sizes[g])}
            for g in range(num_groups)
        ],
        "by_threshold": by_threshold,
    }


def attach_fairness(evaluation: Mapping[str, Any], fairness: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an evaluation document with a fairness document under ``"fairness"``.

    Args:
      evaluation: a ``jaxtx.evaluation/1`` document.
      fairness: a ``jaxtx.fairness/1`` document.

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
