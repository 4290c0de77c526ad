"""Model evaluation on numpy arrays (the Evaluator's metrics), TFMA style.

:func:`evaluate` computes the metrics of one model on one data set, overall
and per slice, each with a seeded bootstrap confidence interval, and returns a
JSON-serializable document (``jaxtx.evaluation/1``)::

    {
      "format": "jaxtx.evaluation/1",
      "task": "binary_classification",   # | multiclass_classification | regression
      "num_examples": 5000,
      "thresholds": [0.5],               # binary classification only, else []
      "class_names": ["0", "1"],         # classification only, else null
      "confidence_level": 0.95,
      "num_bootstrap": 100, "seed": 0,
      "slicing_specs": [[], ["sex"]],
      "min_slice_size": 1,
      "slices": [
        {"slice": {}, "name": "overall", "spec": [], "size": 5000,
         "metrics": {"auc": {"value": 0.81, "lower": 0.80, "upper": 0.82}, ...,
                     "pr_auc": {"value": null, "lower": null, "upper": null,
                                "reason": "..."}},
         "curves": {...}},
        {"slice": {"sex": "F"}, "name": "sex=F", "spec": ["sex"], "size": 2400, ...}
      ],
      "skipped_slices": [
        {"slice": {"sex": "X"}, "name": "sex=X", "spec": ["sex"], "size": 3,
         "reason": "3 rows, fewer than min_slice_size=30"}
      ]
    }

Metric names (keys of ``"metrics"``; ``@T`` is a decision threshold formatted
with ``%.12g``, e.g. ``precision@0.5``):

* binary classification: ``example_count``, ``label_mean``,
  ``mean_prediction``, ``calibration`` (mean prediction / mean label),
  ``log_loss``, ``auc`` (ROC), ``pr_auc`` (average precision), and per
  threshold ``accuracy@T``, ``precision@T``, ``recall@T``, ``f1@T``. An
  example is predicted positive when its score is ``>= T`` (the convention of
  ROC curves, so the confusion matrix at ``T`` is a point of the ROC curve).
* multiclass classification (predicted class = argmax, first on ties):
  ``example_count``, ``accuracy``, ``log_loss``, ``macro_precision``,
  ``macro_recall``, ``macro_f1``, ``weighted_precision``, ``weighted_recall``,
  ``weighted_f1``, ``macro_auc`` (one-vs-rest). As in scikit-learn, the
  averages run over the classes present in the labels or the predictions of
  the slice, and a class never predicted has precision 0.
* regression: ``example_count``, ``rmse``, ``mae``, ``mean_label``,
  ``mean_prediction``, ``r2``.

A metric that is undefined on a slice (e.g. ``auc`` when the slice holds one
class only) has ``value: null`` and a ``reason``. Every metric agrees with
scikit-learn's function of the same name on the same rows.

``"curves"`` holds, for binary classification, ``roc`` (``fpr``, ``tpr``,
``thresholds``; at most 201 points, the first threshold ``null`` standing for
+inf), ``pr`` (``precision``, ``recall``), ``reliability`` (10 equal-width
bins on [0, 1], binned as ``sklearn.calibration.calibration_curve`` does) and
``confusion_matrices`` (one per threshold); for multiclass classification
``confusion_matrix`` (rows: true class, columns: predicted class) and
``per_class`` (precision, recall, F1, support, one-vs-rest AUC).

Confidence intervals: ``num_bootstrap`` resamples of the slice's rows with
replacement (multinomial weights, all metrics of a resample computed at once).
Each interval says how it was made (``"method"``, a key of
:data:`INTERVAL_METHODS`) and how many resamples defined it (``"resamples"``):
the bias-corrected percentile interval (``"bc"``), or, where that is undefined
or would exclude the estimate, the percentile interval widened to contain it
(see :func:`bootstrap_interval`). Resamples on which a metric is undefined are
left out. The
random stream of each slice is seeded from ``seed`` and the slice's name, so
the same seed always gives the same intervals and adding a slice does not
change the others.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "CONFIDENCE_LEVEL",
    "FORMAT",
    "INTERVAL_METHODS",
    "TASKS",
    "bootstrap_interval",
    "evaluate",
    "format_threshold",
    "slice_name",
]

FORMAT = "jaxtx.evaluation/1"
TASKS = ("binary_classification", "multiclass_classification", "regression")
CONFIDENCE_LEVEL = 0.95

_RELIABILITY_BINS = 10
_MAX_CURVE_POINTS = 201
# Upper bound on the cells of one (resamples x rows) weight block.
_MAX_BLOCK_CELLS = 2_000_000
_EPS = float(np.finfo(np.float64).eps)
INTERVAL_METHODS = {
    "bca": "bias-corrected and accelerated bootstrap (jackknife acceleration)",
    "bc": "bias-corrected percentile bootstrap (BCa with acceleration 0)",
    "percentile": "percentile bootstrap (BCa undefined: all resamples on one side of the value)",
    "percentile_widened": (
        "percentile bootstrap widened to contain the value (BCa undefined or excluding it; "
        "the percentile interval of a min/max statistic can exclude its estimate)"
    ),
}
_NORMAL = NormalDist()

MetricFn = Callable[[np.ndarray], dict[str, np.ndarray]]


# ------------------------------------------------------------------------ naming


def format_threshold(threshold: float) -> str:
    """Format a decision threshold as it appears in metric names (``0.5`` -> ``"0.5"``).

    Args:
      threshold: the threshold.

    Returns:
      ``"%.12g"`` of the threshold.
    """
    return f"{float(threshold):.12g}"


def slice_name(slice_key: Mapping[str, Any]) -> str:
    """Display name of a slice: ``"overall"`` or ``"sex=F, race=x"``.

    Args:
      slice_key: feature name -> value; empty for the overall slice.

    Returns:
      The name.
    """
    if not slice_key:
        return "overall"
    return ", ".join(f"{k}={v}" for k, v in slice_key.items())


# -------------------------------------------------------------------- validation


def _describe_positions(mask: np.ndarray, limit: int = 5) -> str:
    """``"rows 3, 17 and 2 more"`` for the True rows of a boolean mask."""
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) != 1 else ''} {shown}{more}"


def _check_not_empty(name: str, values: np.ndarray) -> None:
    if values.ndim == 0:
        raise ValueError(f"{name} is a scalar; pass an array with one entry per example.")
    if values.size == 0 or values.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {values.shape}); pass at least one example.")


def _check_finite(name: str, values: np.ndarray) -> None:
    """Raise if a float array holds NaN (or infinite) values, saying how many and where."""
    if values.dtype.kind != "f":
        return
    nan = np.isnan(values)
    if nan.any():
        raise ValueError(
            f"{name} contains {int(nan.sum())} NaN value(s) at {_describe_positions(nan)}; "
            "drop or impute these rows before evaluating."
        )
    inf = np.isinf(values)
    if inf.any():
        raise ValueError(
            f"{name} contains {int(inf.sum())} infinite value(s) at {_describe_positions(inf)}; "
            "drop or clip these rows before evaluating."
        )


def _check_same_rows(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; "
            "they must have the same number of rows (one per example)."
        )


def _as_float_array(name: str, values: Any) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    return array


def _binary_labels(name: str, labels: Any) -> np.ndarray:
    """0/1 (or boolean) labels -> int8 array, validated."""
    raw = np.asarray(labels)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {raw.shape}.")
    _check_not_empty(name, raw)
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be 0/1 numbers or booleans, got dtype {raw.dtype}.")
    values = raw.astype(np.float64)
    _check_finite(name, values)
    bad = (values != 0) & (values != 1)
    if bad.any():
        found = np.unique(values[bad])[:5].tolist()
        raise ValueError(
            f"{name} must be 0 or 1 for binary classification; found {found} at "
            f"{_describe_positions(bad)}. Encode the positive class as 1."
        )
    return values.astype(np.int8)


def _scores(name: str, predictions: Any, *, probabilities: bool) -> np.ndarray:
    """One score per example (1-D float array), validated."""
    scores = _as_float_array(name, predictions)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 2 and scores.shape[1] == 2 and probabilities:
        raise ValueError(
            f"{name} has shape {scores.shape}; binary classification expects the "
            f"probability of class 1 per example: pass {name}[:, 1]."
        )
    if scores.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {scores.shape}.")
    _check_not_empty(name, scores)
    _check_finite(name, scores)
    if probabilities:
        bad = (scores < 0) | (scores > 1)
        if bad.any():
            raise ValueError(
                f"{name} must be probabilities in [0, 1]; {int(bad.sum())} value(s) outside at "
                f"{_describe_positions(bad)}. Apply a sigmoid to logits first."
            )
    return scores


def _multiclass_inputs(
    labels: Any, predictions: Any, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate multiclass labels ([n] ints or class names) and probabilities ([n, k])."""
    probs = _as_float_array("predictions", predictions)
    raw = np.asarray(labels)
    _check_not_empty("predictions", probs)
    _check_not_empty("labels", raw)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(
            f"predictions has shape {probs.shape}; multiclass classification expects "
            "[n, k] class probabilities with k >= 2."
        )
    if raw.ndim != 1:
        raise ValueError(f"labels must be one-dimensional class ids, got shape {raw.shape}.")
    _check_same_rows("labels", raw, "predictions", probs)
    _check_finite("predictions", probs)
    k = probs.shape[1]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise ValueError(
            f"class_names has {len(names)} entries but predictions has {k} columns; "
            "pass one name per column."
        )
    if raw.dtype.kind in "USO" and class_names is not None:
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted({str(v) for v in raw.tolist()} - index.keys())
        if unknown:
            raise ValueError(f"labels hold values {unknown[:5]} that are not in class_names.")
        y = np.fromiter((index[str(v)] for v in raw.tolist()), dtype=np.int64, count=raw.shape[0])
    else:
        if raw.dtype.kind not in "biuf":
            raise ValueError(
                f"labels must be integer class ids (or class names with class_names), "
                f"got dtype {raw.dtype}."
            )
        values = raw.astype(np.float64)
        _check_finite("labels", values)
        bad = (values != np.round(values)) | (values < 0) | (values >= k)
        if bad.any():
            raise ValueError(
                f"labels must be integers in [0, {k}) (one per predictions column); "
                f"found {np.unique(values[bad])[:5].tolist()} at {_describe_positions(bad)}."
            )
        y = values.astype(np.int64)
    if (probs < 0).any() or (probs > 1).any():
        raise ValueError("predictions must be probabilities in [0, 1]; apply a softmax first.")
    sums = probs.sum(axis=1)
    off = ~np.isclose(sums, 1.0)
    if off.any():
        raise ValueError(
            f"predictions rows must sum to 1; {int(off.sum())} row(s) do not, at "
            f"{_describe_positions(off)}. Apply a softmax to logits first."
        )
    return y, probs, names


def _thresholds(thresholds: Iterable[float]) -> list[float]:
    out: list[float] = []
    for t in thresholds:
        value = float(t)
        if not math.isfinite(value):
            raise ValueError(f"thresholds must be finite numbers, got {t!r}.")
        if value not in out:
            out.append(value)
    if not out:
        raise ValueError("thresholds is empty; pass at least one threshold, e.g. (0.5,).")
    return out


# ----------------------------------------------------------------------- slicing


def _python_value(value: Any) -> Any:
    """A JSON-friendly Python scalar (None for missing values)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _sort_key(value: Any) -> tuple[bool, bool, Any]:
    if value is None:
        return (True, True, "")
    if isinstance(value, int | float):
        return (False, False, float(value))
    return (False, True, str(value))


def _feature_codes(name: str, values: Any, n: int) -> tuple[list[Any], np.ndarray]:
    """Distinct values of one feature (sorted, missing last) and each row's code."""
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(
            f"features[{name!r}] has shape {array.shape} but there are {n} examples; "
            "pass one value per example."
        )
    if array.dtype.kind in "biuUS":
        uniques, codes = np.unique(array, return_inverse=True)
        return [_python_value(v) for v in uniques.tolist()], codes.reshape(-1)
    if array.dtype.kind == "f":
        uniques, codes = np.unique(array, return_inverse=True)  # NaNs collapse, sort last
        return [_python_value(v) for v in uniques.tolist()], codes.reshape(-1)
    index: dict[Any, int] = {}
    raw_codes = np.fromiter(
        (index.setdefault(_python_value(v), len(index)) for v in array.tolist()),
        dtype=np.int64,
        count=n,
    )
    order = sorted(index, key=_sort_key)
    remap = np.empty(len(order), dtype=np.int64)
    for new, value in enumerate(order):
        remap[index[value]] = new
    return order, remap[raw_codes]


def _normalize_specs(slicing_specs: Iterable[Any]) -> list[tuple[str, ...]]:
    specs: list[tuple[str, ...]] = []
    for spec in slicing_specs:
        key = (spec,) if isinstance(spec, str) else tuple(str(s) for s in spec)
        if len(set(key)) != len(key):
            raise ValueError(f"slicing spec {key} names a feature twice.")
        if key not in specs:
            specs.append(key)
    if not specs:
        raise ValueError("slicing_specs is empty; pass ((),) for the overall slice.")
    return specs


def _slices(
    specs: Sequence[tuple[str, ...]], features: Mapping[str, Any] | None, n: int
) -> Iterator[tuple[tuple[str, ...], dict[str, Any], np.ndarray]]:
    """Yield (spec, slice key, row indices) for every observed slice of every spec."""
    available = dict(features or {})
    codes_cache: dict[str, tuple[list[Any], np.ndarray]] = {}
    for spec in specs:
        if not spec:
            yield spec, {}, np.arange(n)
            continue
        missing = [f for f in spec if f not in available]
        if missing:
            raise ValueError(
                f"slicing spec {list(spec)} names feature(s) {missing} that are not in "
                f"features (available: {sorted(available)}); pass them in features=."
            )
        for feature in spec:
            if feature not in codes_cache:
                codes_cache[feature] = _feature_codes(feature, available[feature], n)
        stacked = np.stack([codes_cache[f][1] for f in spec], axis=1)
        combos, inverse = np.unique(stacked, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(combos) + 1))
        for i, combo in enumerate(combos):
            key = {f: codes_cache[f][0][int(c)] for f, c in zip(spec, combo, strict=True)}
            yield spec, key, np.sort(order[bounds[i] : bounds[i + 1]])


# --------------------------------------------------------------------- bootstrap


def _weight_blocks(n: int, num: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Multinomial resampling weights, (resamples, n) float blocks, ``num`` rows in all."""
    block = max(1, min(num, _MAX_BLOCK_CELLS // max(n, 1)))
    done = 0
    while done < num:
        b = min(block, num - done)
        draws = rng.integers(0, n, size=(b, n))
        draws += (np.arange(b, dtype=draws.dtype) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _bootstrap(metric_fn: MetricFn, n: int, num: int, rng: np.random.Generator):
    """Resampled values of every metric: name -> array of ``num`` values (NaN: undefined)."""
    parts: dict[str, list[np.ndarray]] = {}
    for weights in _weight_blocks(n, num, rng):
        for name, values in metric_fn(weights).items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _summary(value: float, resampled: np.ndarray | None, reason: str | None) -> dict[str, Any]:
    """``{"value", "lower", "upper", "method", "resamples"}`` (or null with a ``"reason"``)."""
    if not math.isfinite(value):
        return {"value": None, "lower": None, "upper": None, "reason": reason or "undefined"}
    out: dict[str, Any] = {"value": float(value), "lower": None, "upper": None}
    if resampled is not None:
        out.update(bootstrap_interval(float(value), resampled))
    return out


def _acceleration(jack: np.ndarray, weights: np.ndarray) -> float:
    """BCa acceleration from (weighted) jackknife values; 0 when degenerate."""
    ok = np.isfinite(jack)
    if ok.sum() < 2:
        return 0.0
    values, w = jack[ok], weights[ok]
    diff = np.average(values, weights=w) - values
    den = 6.0 * float(np.sum(w * diff**2)) ** 1.5
    return float(np.sum(w * diff**3)) / den if den > 0 else 0.0


def _bca(point: float, valid: np.ndarray, accel: float) -> tuple[float, float] | None:
    """The BCa interval, or None where it is undefined."""
    below = np.count_nonzero(valid < point) + 0.5 * np.count_nonzero(valid == point)
    share = below / valid.size
    if not 0.0 < share < 1.0:
        return None
    z0 = _NORMAL.inv_cdf(share)
    tail = (1.0 - CONFIDENCE_LEVEL) / 2.0
    quantiles = []
    for z in (_NORMAL.inv_cdf(tail), _NORMAL.inv_cdf(1.0 - tail)):
        den = 1.0 - accel * (z0 + z)
        if den <= 0:
            return None
        quantiles.append(_NORMAL.cdf(z0 + (z0 + z) / den))
    lower, upper = np.quantile(valid, quantiles)
    return float(lower), float(upper)


def bootstrap_interval(
    point: float,
    resampled: np.ndarray,
    jackknife: np.ndarray | None = None,
    jackknife_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """A confidence interval that contains its estimate, and how it was made.

    Args:
      point: the estimate (finite).
      resampled: the statistic on each bootstrap resample (NaN: undefined there).
      jackknife: the statistic with one observation left out, for the BCa
        acceleration (None: acceleration 0, the bias-corrected interval ``"bc"``).
      jackknife_weights: how many observations each jackknife value stands for.

    Returns:
      ``{"lower", "upper", "method", "resamples"}``; ``method`` is a key of
      :data:`INTERVAL_METHODS`, or None (bounds None) with fewer than 2
      defined resamples.
    """
    valid = resampled[np.isfinite(resampled)]
    out: dict[str, Any] = {"lower": None, "upper": None, "method": None}
    out["resamples"] = int(valid.size)
    if valid.size < 2:
        return out
    accel, bca_name = 0.0, "bc"
    if jackknife is not None:
        bca_name = "bca"
        w = np.ones(jackknife.shape) if jackknife_weights is None else jackknife_weights
        accel = _acceleration(jackknife, w)
    bca = _bca(point, valid, accel)
    if bca is not None and bca[0] <= point <= bca[1]:
        out.update(lower=bca[0], upper=bca[1], method=bca_name)
        return out
    tail = 100.0 * (1.0 - CONFIDENCE_LEVEL) / 2.0
    lower, upper = (float(v) for v in np.percentile(valid, [tail, 100.0 - tail]))
    method = "percentile" if lower <= point <= upper else "percentile_widened"
    out.update(lower=min(lower, point), upper=max(upper, point), method=method)
    return out


def _summarize_all(
    metric_fn: MetricFn,
    n: int,
    num_bootstrap: int,
    rng: np.random.Generator,
    reasons: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    point = metric_fn(np.ones((1, n)))
    resampled = _bootstrap(metric_fn, n, num_bootstrap, rng) if num_bootstrap > 0 else {}
    return {
        name: _summary(float(values[0]), resampled.get(name), reasons.get(name))
        for name, values in point.items()
    }


def _slice_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _divide(num: np.ndarray, den: np.ndarray, *, zero: float = np.nan) -> np.ndarray:
    """``num / den`` with ``zero`` where ``den == 0``."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), den)
    out = np.full(num.shape, zero, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---------------------------------------------------------------------- ranking


def _ranking(
    y: np.ndarray, score: np.ndarray, weights: np.ndarray, *, with_ap: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """ROC AUC and average precision per weight row, ties grouped as scikit-learn does.

    Rows with a single class present get NaN.
    """
    order = np.argsort(score, kind="stable")[::-1]
    sorted_scores = score[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    w = weights[:, order]
    pos = y[order].astype(np.float64)
    tps = np.cumsum(w * pos, axis=1)[:, ends]
    fps = np.cumsum(w * (1.0 - pos), axis=1)[:, ends]
    total_pos, total_neg = tps[:, -1:], fps[:, -1:]
    defined = (total_pos[:, 0] > 0) & (total_neg[:, 0] > 0)
    zeros = np.zeros((w.shape[0], 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.hstack([zeros, tps / total_pos])
        fpr = np.hstack([zeros, fps / total_neg])
        auc = np.trapezoid(tpr, fpr, axis=1)
        auc = np.where(defined, auc, np.nan)
        ap = None
        if with_ap:
            precision = _divide(tps, tps + fps, zero=0.0)
            gained = np.diff(np.hstack([zeros, tps]), axis=1)
            ap = np.where(defined, (gained * precision).sum(axis=1) / total_pos[:, 0], np.nan)
    return auc, ap


def _roc_curve(y: np.ndarray, score: np.ndarray) -> dict[str, list[Any]]:
    """ROC points as ``sklearn.metrics.roc_curve`` (drop_intermediate) returns them."""
    order = np.argsort(score, kind="stable")[::-1]
    s, pos = score[order], y[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(pos)[ends]
    fps = 1.0 + ends - tps
    thresholds = s[ends]
    if fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    idx = _subsample(tps.size)
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    thr: list[Any] = [None, *(float(t) for t in thresholds)]
    return {
        "fpr": [_json_float(v) for v in fpr[idx]],
        "tpr": [_json_float(v) for v in tpr[idx]],
        "thresholds": [thr[i] for i in idx],
    }


def _pr_curve(y: np.ndarray, score: np.ndarray) -> dict[str, list[Any]]:
    """Precision/recall points (recall decreasing), as ``precision_recall_curve``."""
    order = np.argsort(score, kind="stable")[::-1]
    s, pos = score[order], y[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(pos)[ends]
    fps = 1.0 + ends - tps
    precision = _divide(tps, tps + fps, zero=0.0)
    recall = tps / tps[-1] if tps[-1] > 0 else np.ones_like(tps)
    precision = np.r_[precision[::-1], 1.0]
    recall = np.r_[recall[::-1], 0.0]
    thresholds = [float(t) for t in s[ends][::-1]] + [None]
    idx = _subsample(precision.size)
    return {
        "precision": [float(precision[i]) for i in idx],
        "recall": [float(recall[i]) for i in idx],
        "thresholds": [thresholds[i] for i in idx],
    }


def _subsample(size: int) -> list[int]:
    if size <= _MAX_CURVE_POINTS:
        return list(range(size))
    return sorted({int(round(i)) for i in np.linspace(0, size - 1, _MAX_CURVE_POINTS)})


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ------------------------------------------------------------------------ binary


def _binary_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-example log loss, probabilities clipped to [eps, 1 - eps] as scikit-learn does."""
    p1 = np.clip(p, _EPS, 1.0 - _EPS)
    p0 = np.clip(1.0 - p, _EPS, 1.0 - _EPS)
    return -np.where(y == 1, np.log(p1), np.log(p0))


def _binary_metric_fn(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float]) -> MetricFn:
    """All binary metrics as a function of (resamples, n) example weights."""
    yf = y.astype(np.float64)
    columns = [yf, p, _binary_log_loss(y, p)]
    for t in thresholds:
        predicted = (p >= t).astype(np.float64)
        columns += [predicted, predicted * yf]
    design = np.stack(columns, axis=1)

    def metric_fn(weights: np.ndarray) -> dict[str, np.ndarray]:
        sums = weights @ design
        count = weights.sum(axis=1)
        pos, score_sum, loss_sum = sums[:, 0], sums[:, 1], sums[:, 2]
        neg = count - pos
        auc, ap = _ranking(y, p, weights)
        out = {
            "example_count": count,
            "label_mean": pos / count,
            "mean_prediction": score_sum / count,
            "calibration": _divide(score_sum, pos),
            "log_loss": loss_sum / count,
            "auc": auc,
            "pr_auc": ap,
        }
        for i, t in enumerate(thresholds):
            predicted_pos, tp = sums[:, 3 + 2 * i], sums[:, 4 + 2 * i]
            tn = neg - (predicted_pos - tp)
            name = format_threshold(t)
            out[f"accuracy@{name}"] = (tp + tn) / count
            out[f"precision@{name}"] = _divide(tp, predicted_pos)
            out[f"recall@{name}"] = _divide(tp, pos)
            out[f"f1@{name}"] = _divide(2.0 * tp, pos + predicted_pos)
        return out

    return metric_fn


def _binary_reasons(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float]) -> dict[str, str]:
    """Why each binary metric may be undefined on these rows."""
    pos = int(y.sum())
    neg = int(y.size - pos)
    one_class = (
        f"only one class in this slice ({pos} positive, {neg} negative labels); "
        "ranking metrics need both"
    )
    reasons = {
        "auc": one_class,
        "pr_auc": one_class,
        "calibration": "no positive labels in this slice (mean label is 0)",
    }
    for t in thresholds:
        name = format_threshold(t)
        reasons[f"precision@{name}"] = f"no example scored >= {name} in this slice"
        reasons[f"recall@{name}"] = "no positive labels in this slice"
        reasons[f"f1@{name}"] = f"no positive labels and no example scored >= {name}"
    return reasons


def _binary_curves(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float]) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, _RELIABILITY_BINS + 1)
    bin_ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(bin_ids, minlength=_RELIABILITY_BINS)
    score_sums = np.bincount(bin_ids, weights=p, minlength=_RELIABILITY_BINS)
    label_sums = np.bincount(bin_ids, weights=y.astype(np.float64), minlength=_RELIABILITY_BINS)
    reliability = [
        {
            "lower": float(edges[i]),
            "upper": float(edges[i + 1]),
            "count": int(counts[i]),
            "mean_prediction": float(score_sums[i] / counts[i]) if counts[i] else None,
            "mean_label": float(label_sums[i] / counts[i]) if counts[i] else None,
        }
        for i in range(_RELIABILITY_BINS)
    ]
    matrices = []
    for t in thresholds:
        predicted = p >= t
        tp = int(np.sum(predicted & (y == 1)))
        fp = int(np.sum(predicted & (y == 0)))
        fn = int(np.sum(~predicted & (y == 1)))
        tn = int(np.sum(~predicted & (y == 0)))
        matrices.append({"threshold": float(t), "tp": tp, "fp": fp, "tn": tn, "fn": fn})
    return {
        "roc": _roc_curve(y, p),
        "pr": _pr_curve(y, p),
        "reliability": reliability,
        "confusion_matrices": matrices,
    }


# -------------------------------------------------------------------- multiclass


def _confusion(codes: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """(resamples, k, k) weighted confusion matrices from ``true * k + predicted`` codes."""
    flat = np.stack([np.bincount(codes, weights=row, minlength=k * k) for row in weights])
    return flat.reshape(weights.shape[0], k, k)


def _class_scores(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision/recall/F1 (0 when undefined, as scikit-learn) and supports."""
    tp = np.diagonal(matrices, axis1=1, axis2=2)
    support = matrices.sum(axis=2)
    predicted = matrices.sum(axis=1)
    return {
        "precision": _divide(tp, predicted, zero=0.0),
        "recall": _divide(tp, support, zero=0.0),
        "f1": _divide(2.0 * tp, support + predicted, zero=0.0),
        "support": support,
        "present": (support + predicted) > 0,
    }


def _multiclass_metric_fn(y: np.ndarray, probs: np.ndarray) -> MetricFn:
    k = probs.shape[1]
    codes = y * k + probs.argmax(axis=1)
    loss = -np.log(np.clip(probs[np.arange(y.size), y], _EPS, 1.0 - _EPS))
    onehot = [(y == c).astype(np.int8) for c in range(k)]

    def metric_fn(weights: np.ndarray) -> dict[str, np.ndarray]:
        count = weights.sum(axis=1)
        matrices = _confusion(codes, k, weights)
        scores = _class_scores(matrices)
        present, support = scores["present"], scores["support"]
        n_present = present.sum(axis=1)
        out = {
            "example_count": count,
            "accuracy": np.trace(matrices, axis1=1, axis2=2) / count,
            "log_loss": (weights @ loss) / count,
        }
        for metric in ("precision", "recall", "f1"):
            values = scores[metric]
            out[f"macro_{metric}"] = np.where(present, values, 0.0).sum(axis=1) / n_present
            out[f"weighted_{metric}"] = _divide((values * support).sum(axis=1), count)
        aucs = np.stack(
            [_ranking(onehot[c], probs[:, c], weights, with_ap=False)[0] for c in range(k)], axis=1
        )
        out["macro_auc"] = aucs.mean(axis=1)
        return out

    return metric_fn


def _multiclass_reasons(y: np.ndarray, names: Sequence[str]) -> dict[str, str]:
    counts = np.bincount(y, minlength=len(names))
    absent = [names[c] for c in range(len(names)) if counts[c] == 0]
    only = [names[c] for c in range(len(names)) if counts[c] == y.size]
    if absent:
        why = f"class(es) {absent} have no examples in this slice"
    elif only:
        why = f"every example in this slice is of class {only[0]}"
    else:
        why = "undefined on this slice"
    return {"macro_auc": f"one-vs-rest AUC needs every class present and absent: {why}"}


def _multiclass_curves(y: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    k = probs.shape[1]
    codes = y * k + probs.argmax(axis=1)
    matrix = _confusion(codes, k, np.ones((1, y.size)))
    scores = _class_scores(matrix)
    per_class = {}
    for c, name in enumerate(names):
        auc = _ranking((y == c).astype(np.int8), probs[:, c], np.ones((1, y.size)), with_ap=False)[
            0
        ]
        per_class[name] = {
            "precision": float(scores["precision"][0, c]),
            "recall": float(scores["recall"][0, c]),
            "f1": float(scores["f1"][0, c]),
            "support": int(scores["support"][0, c]),
            "auc": _json_float(float(auc[0])),
        }
    return {
        "confusion_matrix": {
            "labels": list(names),
            "matrix": matrix[0].astype(np.int64).tolist(),
        },
        "per_class": per_class,
    }


# -------------------------------------------------------------------- regression


def _regression_metric_fn(y: np.ndarray, p: np.ndarray) -> MetricFn:
    centered = y - y.mean()
    errors = p - y
    design = np.stack([y, p, errors**2, np.abs(errors), centered, centered**2], axis=1)

    def metric_fn(weights: np.ndarray) -> dict[str, np.ndarray]:
        count = weights.sum(axis=1)
        s = weights @ design
        mse = s[:, 2] / count
        total = s[:, 5] - s[:, 4] ** 2 / count
        # A total sum of squares at rounding level means constant labels: R2 undefined.
        total = np.where(total > 1e-12 * s[:, 5], total, 0.0)
        return {
            "example_count": count,
            "rmse": np.sqrt(mse),
            "mae": s[:, 3] / count,
            "mean_label": s[:, 0] / count,
            "mean_prediction": s[:, 1] / count,
            "r2": 1.0 - _divide(s[:, 2], total),
        }

    return metric_fn


def _regression_reasons(y: np.ndarray) -> dict[str, str]:
    return {"r2": f"labels are constant ({y[0]:g}) in this slice, so R2 is undefined"}


# --------------------------------------------------------------------- evaluate


Analysis = tuple[MetricFn, dict[str, str], dict[str, Any]]


@dataclass(frozen=True)
class _Prepared:
    """Validated inputs of one task and how to analyze a subset of their rows."""

    num_examples: int
    thresholds: list[float]
    class_names: list[str] | None
    # rows -> (metric function of example weights, reasons for undefined metrics, curves)
    analyze: Callable[[np.ndarray], Analysis]


def _paired(labels: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    raw_labels, raw_predictions = np.asarray(labels), np.asarray(predictions)
    _check_not_empty("predictions", raw_predictions)
    _check_not_empty("labels", raw_labels)
    _check_same_rows("labels", raw_labels, "predictions", raw_predictions)
    return raw_labels, raw_predictions


def _prepare_binary(
    labels: Any, predictions: Any, thresholds: Iterable[float], class_names: Sequence[str] | None
) -> _Prepared:
    raw_labels, raw_predictions = _paired(labels, predictions)
    y = _binary_labels("labels", raw_labels)
    scores = _scores("predictions", raw_predictions, probabilities=True)
    threshold_list = _thresholds(thresholds)
    names = [str(c) for c in (class_names if class_names is not None else (0, 1))]
    if len(names) != 2:
        raise ValueError(f"class_names must have 2 entries for binary classification: {names}")

    def analyze(rows: np.ndarray) -> Analysis:
        ys, ps = y[rows], scores[rows]
        return (
            _binary_metric_fn(ys, ps, threshold_list),
            _binary_reasons(ys, ps, threshold_list),
            _binary_curves(ys, ps, threshold_list),
        )

    return _Prepared(int(y.size), threshold_list, names, analyze)


def _prepare_multiclass(
    labels: Any, predictions: Any, class_names: Sequence[str] | None
) -> _Prepared:
    y, probs, names = _multiclass_inputs(labels, predictions, class_names)

    def analyze(rows: np.ndarray) -> Analysis:
        ys, ps = y[rows], probs[rows]
        return (
            _multiclass_metric_fn(ys, ps),
            _multiclass_reasons(ys, names),
            _multiclass_curves(ys, ps, names),
        )

    return _Prepared(int(y.size), [], names, analyze)


def _prepare_regression(labels: Any, predictions: Any) -> _Prepared:
    raw_labels, raw_predictions = _paired(labels, predictions)
    y = _scores("labels", raw_labels, probabilities=False)
    scores = _scores("predictions", raw_predictions, probabilities=False)

    def analyze(rows: np.ndarray) -> Analysis:
        ys, ps = y[rows], scores[rows]
        return _regression_metric_fn(ys, ps), _regression_reasons(ys), {}

    return _Prepared(int(y.size), [], None, analyze)


def evaluate(
    labels: Any,
    predictions: Any,
    *,
    task: str,
    features: Mapping[str, Any] | None = None,
    slicing_specs: Iterable[Sequence[str] | str] = ((),),
    min_slice_size: int = 1,
    thresholds: Iterable[float] = (0.5,),
    num_bootstrap: int = 100,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate predictions against labels, overall and per slice, with bootstrap CIs.

    Args:
      labels: ``[n]`` labels: 0/1 for binary classification, class ids (or
        class names, with ``class_names``) for multiclass, numbers for regression.
      predictions: ``[n]`` probability of class 1 (binary), ``[n, k]`` class
        probabilities (multiclass, rows summing to 1), or ``[n]`` numbers (regression).
      task: ``"binary_classification"``, ``"multiclass_classification"`` or ``"regression"``.
      features: feature name -> ``[n]`` values (strings or numbers) used for slicing.
      slicing_specs: one tuple of feature names per slicing: ``()`` is the
        overall slice, ``("sex",)`` one slice per value, ``("sex", "race")``
        one per observed combination.
      min_slice_size: slices with fewer rows are listed under
        ``"skipped_slices"`` (with their size) instead of being evaluated.
      thresholds: decision thresholds of the threshold metrics (binary only).
      num_bootstrap: resamples for the confidence intervals (0: no intervals).
      seed: seed of the resampling.
      class_names: names of the classes (classification), one per class.

    Returns:
      A ``jaxtx.evaluation/1`` document (see the module docstring).

    Raises:
      ValueError: on an unknown task, empty inputs, NaN or infinite values,
        mismatched shapes, labels or predictions out of range, or a slicing spec
        naming a feature that is not in ``features``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}.")
    if int(num_bootstrap) < 0:
        raise ValueError(f"num_bootstrap must be >= 0, got {num_bootstrap}.")
    if int(min_slice_size) < 1:
        raise ValueError(f"min_slice_size must be >= 1, got {min_slice_size}.")
    num_bootstrap, min_slice_size, seed = int(num_bootstrap), int(min_slice_size), int(seed)
    specs = _normalize_specs(slicing_specs)

    if task == "binary_classification":
        prepared = _prepare_binary(labels, predictions, thresholds, class_names)
    elif task == "multiclass_classification":
        prepared = _prepare_multiclass(labels, predictions, class_names)
    else:
        prepared = _prepare_regression(labels, predictions)

    n = prepared.num_examples
    evaluated: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for spec, key, rows in _slices(specs, features, n):
            name = slice_name(key)
            entry: dict[str, Any] = {"slice": key, "name": name, "spec": list(spec)}
            entry["size"] = int(rows.size)
            if rows.size < min_slice_size:
                entry["reason"] = f"{rows.size} rows, fewer than min_slice_size={min_slice_size}"
                skipped.append(entry)
                continue
            metric_fn, reasons, curves = prepared.analyze(rows)
            rng = _slice_rng(seed, name)
            entry["metrics"] = _summarize_all(
                metric_fn, int(rows.size), num_bootstrap, rng, reasons
            )
            entry["curves"] = curves
            evaluated.append(entry)

    return {
        "format": FORMAT,
        "task": task,
        "num_examples": n,
        "thresholds": prepared.thresholds,
        "class_names": prepared.class_names,
        "confidence_level": CONFIDENCE_LEVEL,
        "num_bootstrap": num_bootstrap,
        "seed": seed,
        "slicing_specs": [list(s) for s in specs],
        "min_slice_size": min_slice_size,
        "slices": evaluated,
        "skipped_slices": skipped,
    }
