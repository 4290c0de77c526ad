"""Check statistics against a schema (ExampleValidator), TFDV style.

:func:`validate_statistics` compares one split's statistics
(``jaxtx.statistics/1``, see ``docs/formats.md``) with a
:class:`~jaxtx.validation.schema.SchemaSpec` and returns a list of
:class:`Anomaly`, each with TFDV's anomaly type name:

=========================================  =======  ==========================================
type                                       default  fires when
=========================================  =======  ==========================================
SCHEMA_MISSING_COLUMN                      fail     a schema feature is not in the statistics
SCHEMA_NEW_COLUMN                          warn     a column is not in the schema
UNEXPECTED_DATA_TYPE                       fail     e.g. STRING data where INT is expected
FEATURE_TYPE_LOW_FRACTION_PRESENT          warn     fill rate below ``presence.min_fraction``
FEATURE_TYPE_LOW_NUMBER_PRESENT            fail     fewer values than ``presence.min_count``
ENUM_TYPE_UNEXPECTED_STRING_VALUES         fail     strings outside ``domain.values``
FLOAT_TYPE_HAS_NAN / FLOAT_TYPE_HAS_INF    fail     NaN / +-inf where not allowed
INT_TYPE_BIG_INT / INT_TYPE_SMALL_INT      fail     INT values above / below the domain
FLOAT_TYPE_BIG_FLOAT / ..._SMALL_FLOAT     fail     FLOAT values above / below the domain
COMPARATOR_L_INFTY_HIGH                    warn     categorical drift or skew over threshold
COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH  warn     numeric drift or skew over threshold
MALFORMED_ROWS                             fail     rows ExampleGen quarantined (jaxtx's own
                                                    type; ``warn`` up to a threshold fraction)
=========================================  =======  ==========================================

Every type but ``MALFORMED_ROWS`` is a TFDV ``AnomalyInfo.Type`` name.
``SCHEMA_NEW_COLUMN`` covers columns of every type (lists and structs too).
With an ``environment`` (e.g. ``SERVING``) only the schema's features in that
environment are checked (see :func:`jaxtx.validation.schema.feature_in_environment`).
Out-of-range counts are exact when the values are given (``values=``, as
ExampleValidator and ``jaxtx validate`` do for splits up to
:data:`EXACT_COUNT_ROWS` rows), otherwise estimated from the KLL sketch.

Severities resolve, most specific first: the comparator's own ``severity``
(drift/skew only), the feature's ``severity`` overrides, the schema's
``default_severities``, then :data:`~jaxtx.validation.schema.DEFAULT_SEVERITIES`.

Distances. Categorical features (STRING, BYTES, BOOL) are compared with the
L-infinity distance between the normalized value frequencies: exact from
``value_counts`` when both sides are complete, otherwise estimated from the
frequent-items sketch (or ``top_k``) over the values it tracks. Numeric
features (INT, FLOAT) are compared with the Jensen-Shannon divergence in
base 2 (0 for identical data, 1 for disjoint data) between the two KLL
sketches, both binned on common boundaries: the 21 quantiles (0%, 5%, ...,
100%) of the pooled data (the two sketches merged), so about 20 bins of
equal joint mass; point masses (e.g. small integers) keep their own bins.
For two samples of 1000 values from the same normal distribution the
estimate is about 0.01; shifting the mean by one standard deviation gives
about 0.15. Without sketches, piecewise-linear CDFs interpolated in the two
``quantiles`` lists are binned on the union of their values (coarser).
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jaxtx.core.sketches import QuantileSketch
from jaxtx.validation.schema import (
    ANOMALY_TYPES,
    CATEGORICAL_TYPES,
    DEFAULT_SEVERITIES,
    FEATURE_TYPES,
    NUMERIC_TYPES,
    SEVERITIES,
    Comparator,
    FeatureSchema,
    SchemaSpec,
    feature_in_environment,
)

__all__ = [
    "ANOMALY_TYPES",
    "DEFAULT_SEVERITIES",
    "Anomaly",
    "EXACT_COUNT_ROWS",
    "MALFORMED_ROWS",
    "failing",
    "jensen_shannon_divergence",
    "l_infinity_distance",
    "load_anomalies",
    "malformed_rows",
    "save_anomalies",
    "validate_statistics",
]

# Which statistics types each schema type accepts.
_ACCEPTS: Mapping[str, frozenset[str]] = {
    "INT": frozenset({"INT", "BOOL"}),
    "FLOAT": frozenset({"FLOAT", "INT", "BOOL"}),
    "STRING": frozenset({"STRING"}),
    "BYTES": frozenset({"BYTES", "STRING"}),
    "BOOL": frozenset({"BOOL"}),
}
_JSD_BINS = 20
_JSD_RANKS = np.linspace(0.0, 1.0, _JSD_BINS + 1)
_MAX_LISTED = 10
_ANOMALY_KEYS = ("split", "feature", "type", "severity", "description", "expected", "found")
#: Splits with at most this many rows get exact out-of-range counts (their values are read).
EXACT_COUNT_ROWS = 10_000_000
MALFORMED_ROWS = "MALFORMED_ROWS"
#: Feature name of dataset-level anomalies (MALFORMED_ROWS).
ROWS_FEATURE = "<rows>"

#: Values of one feature for exact counts: ``name -> pyarrow array`` (or None if unknown).
ValuesFn = Callable[[str], Any]


@dataclass(frozen=True)
class Anomaly:
    """One way a split's data departs from the schema.

    Attributes:
        feature: Feature (column) name.
        type: TFDV anomaly type name, one of ``ANOMALY_TYPES``.
        severity: ``"warn"`` or ``"fail"``.
        description: Human-readable sentence naming the feature, the split,
            what was expected and what was found, with numbers.
        expected: Short statement of the expectation.
        found: Short statement of the observation.
        split: Split name, or None.
    """

    feature: str
    type: str
    severity: str
    description: str
    expected: str
    found: str
    split: str | None = None


# --------------------------------------------------------------------------- formatting


def _num(value: float | int | None) -> str:
    """Format a number compactly (integers without a decimal point)."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _plural(count: int, noun: str) -> str:
    """``"1 value"``, ``"3 values"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _pct(count: float, total: float) -> str:
    """Format ``count / total`` as a percentage."""
    if not total:
        return "n/a"
    pct = 100.0 * count / total
    return f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"{pct:.2g}%"


def _values_list(items: Iterable[tuple[str, float]], limit: int = _MAX_LISTED) -> str:
    """Format ``(value, count)`` pairs, the first ``limit`` of them."""
    pairs = list(items)
    shown = ", ".join(f"{v!r} ({_num(c)})" for v, c in pairs[:limit])
    return shown + (f", ... ({len(pairs) - limit} more)" if len(pairs) > limit else "")


def _enum_list(values: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def _subject(feature: str, split: str | None) -> str:
    return f"Feature {feature!r}" + (f" in split {split!r}" if split is not None else "")


class _Reporter:
    """Creates anomalies for one split with resolved severities."""

    def __init__(self, schema: SchemaSpec, split: str | None, values: ValuesFn | None = None) -> None:
        self.schema = schema
        self.split = split
        self.values = values

    def __call__(
        self,
        feature: str,
        type_: str,
        detail: str,
        expected: str,
        found: str,
        comparator: Comparator | None = None,
    ) -> Anomaly:
        if comparator is not None and comparator.severity is not None:
            severity = comparator.severity
        else:
            severity = self.schema.severity(type_, feature)
        return Anomaly(
            feature=feature,
            type=type_,
            severity=severity,
            description=f"{_subject(feature, self.split)}: {detail}",
            expected=expected,
            found=found,
            split=self.split,
        )


# --------------------------------------------------------------------------- sketches


def _sketch_bytes(feature_stats: Mapping[str, Any], name: str) -> bytes | None:
    encoded = (feature_stats.get("sketches") or {}).get(name)
    return base64.b64decode(encoded) if isinstance(encoded, str) and encoded else None


def _kll(feature_stats: Mapping[str, Any]) -> QuantileSketch | None:
    """The feature's quantile summary, or None when absent or empty.

    Reads the deterministic summary (``sketches.quantiles``) and, from older
    statistics, a DataSketches KLL blob (``sketches.kll``).
    """
    doc = (feature_stats.get("sketches") or {}).get("quantiles")
    if isinstance(doc, Mapping):
        sketch = QuantileSketch.from_json(doc)
        return sketch if sketch.n else None
    raw = _sketch_bytes(feature_stats, "kll")
    if raw is None:
        return None
    import datasketches

    kll = datasketches.kll_doubles_sketch.deserialize(raw)
    if kll.is_empty():
        return None
    error = kll.normalized_rank_error(False) * kll.n if kll.is_estimation_mode() else 0
    return QuantileSketch.from_weighted(list(kll), error=math.ceil(error))


def _frequent(feature_stats: Mapping[str, Any]) -> Any | None:
    """The feature's frequent-strings sketch, or None when absent or empty."""
    import datasketches

    raw = _sketch_bytes(feature_stats, "frequent")
    if raw is None:
        return None
    sketch = datasketches.frequent_strings_sketch.deserialize(raw)
    return None if sketch.is_empty() else sketch


def _hll_lower_bound(feature_stats: Mapping[str, Any]) -> float | None:
    """A lower bound (3 standard deviations) on the distinct count, from the HLL sketch."""
    import datasketches

    doc = (feature_stats.get("sketches") or {}).get("hll")
    if isinstance(doc, Mapping):
        from jaxtx.validation.statistics import distinct_count_estimate

        estimate, rse = distinct_count_estimate(doc)
        return max(0.0, estimate * (1.0 - 3.0 * rse))
    raw = _sketch_bytes(feature_stats, "hll")
    if raw is None:
        return None
    return float(datasketches.hll_sketch.deserialize(raw).get_lower_bound(3))


# --------------------------------------------------------------------------- checks


def _check_type(report: _Reporter, fs: FeatureSchema, stats: Mapping[str, Any]) -> list[Anomaly]:
    found_type = stats.get("type")
    if found_type in _ACCEPTS[fs.type]:
        return []
    arrow = stats.get("arrow_type")
    found = f"{found_type}" + (f" (arrow type {arrow})" if arrow else "")
    detail = f"expected {fs.type} values, found {found} values"
    return [report(fs.name, "UNEXPECTED_DATA_TYPE", detail, fs.type, found)]


def _check_presence(
    report: _Reporter, fs: FeatureSchema, stats: Mapping[str, Any], num_rows: int
) -> list[Anomaly]:
    present = int(stats.get("num_present") or 0)
    out = []
    if num_rows > 0 and present / num_rows < fs.presence.min_fraction:
        frac = present / num_rows
        detail = (
            f"{present} of {num_rows} rows ({_pct(present, num_rows)}) have a value, below the "
            f"minimum fraction {_num(fs.presence.min_fraction)} "
            f"({_pct(fs.presence.min_fraction, 1)}); {num_rows - present} rows are missing it"
        )
        out.append(
            report(
                fs.name,
                "FEATURE_TYPE_LOW_FRACTION_PRESENT",
                detail,
                f"min_fraction {_num(fs.presence.min_fraction)}",
                f"fraction {frac:.4g} ({present} of {num_rows})",
            )
        )
    if present < fs.presence.min_count:
        detail = (
            f"{present} of {num_rows} rows have a value, fewer than the minimum count "
            f"{fs.presence.min_count}"
        )
        out.append(
            report(
                fs.name,
                "FEATURE_TYPE_LOW_NUMBER_PRESENT",
                detail,
                f"min_count {fs.presence.min_count}",
                f"{present} values",
            )
        )
    return out


def _check_non_finite(
    report: _Reporter, fs: FeatureSchema, num: Mapping[str, Any], present: int
) -> list[Anomaly]:
    out = []
    nan = int(num.get("num_nan") or 0)
    if nan and not fs.allow_nan:
        detail = f"{nan} of {present} values ({_pct(nan, present)}) are NaN; NaN is not allowed"
        out.append(report(fs.name, "FLOAT_TYPE_HAS_NAN", detail, "no NaN", f"{nan} NaN"))
    pos, neg = int(num.get("num_pos_inf") or 0), int(num.get("num_neg_inf") or 0)
    if pos + neg and not fs.allow_inf:
        detail = (
            f"{pos + neg} of {present} values ({_pct(pos + neg, present)}) are infinite "
            f"({pos} +inf, {neg} -inf); infinite values are not allowed"
        )
        found = f"{pos} +inf, {neg} -inf"
        out.append(report(fs.name, "FLOAT_TYPE_HAS_INF", detail, "no +-inf", found))
    return out


def _count_beyond(
    stats: Mapping[str, Any], bound: float, above: bool, values: Any = None
) -> tuple[int, int, int]:
    """Count values above (or below) ``bound``: exactly from ``values``, else from the KLL sketch.

    Returns:
        ``(count, total, error)``: the (estimated) count of finite values
        beyond ``bound``, the number of finite values, and the sketch's
        absolute rank error (99% confidence; 0 while the sketch is exact).
        ``total`` is 0 without a sketch.
    """
    if values is not None:
        return _exact_beyond(values, bound, above)
    sketch = _kll(stats)
    if sketch is None:
        return 0, 0, 0
    n = int(sketch.n)
    if above:
        fraction = 1.0 - sketch.cdf([float(bound)], inclusive=True)[0]
    else:
        fraction = sketch.cdf([float(bound)], inclusive=False)[0]
    error = math.ceil(sketch.rank_error() * n)
    return max(1, round(fraction * n)), n, error


def _exact_beyond(values: Any, bound: float, above: bool) -> tuple[int, int, int]:
    """``(count, finite values, 0)`` of values above (or below) ``bound``, counted exactly."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.cast(values, pa.float64())
    finite = pc.is_finite(column)
    beyond = pc.greater(column, bound) if above else pc.less(column, bound)
    count = pc.sum(pc.and_(beyond, finite)).as_py() or 0
    return int(count), int(pc.sum(finite).as_py() or 0), 0


def _range_anomaly(
    report: _Reporter,
    fs: FeatureSchema,
    stats: Mapping[str, Any],
    bound: float,
    extreme: float,
    above: bool,
) -> Anomaly:
    kind = "INT" if fs.type == "INT" else "FLOAT"
    type_ = f"{kind}_TYPE_{'BIG' if above else 'SMALL'}_{kind}"
    word, limit, ext = ("above", "maximum", "max") if above else ("below", "minimum", "min")
    values = report.values(fs.name) if report.values is not None else None
    count, total, error = _count_beyond(stats, bound, above, values)
    about = "about " if error else ""
    if total:
        margin = f", sketch error +-{error}" if error else ""
        head = (
            f"{about}{count} of {total} values ({_pct(count, total)}{margin}) {word} the "
            f"{limit} {_num(bound)}"
        )
    else:
        head = f"values {word} the {limit} {_num(bound)}"
    detail = f"{head}: {ext} found {_num(extreme)}"
    expected = f"{ext} {_num(bound)}"
    found = f"{ext} {_num(extreme)}" + (
        f", {about}{_plural(count, 'value')} {word}" if total else ""
    )
    return report(fs.name, type_, detail, expected, found)


def _check_range(report: _Reporter, fs: FeatureSchema, stats: Mapping[str, Any]) -> list[Anomaly]:
    num = stats.get("num") or {}
    domain = fs.domain
    if domain is None or not domain.is_range or fs.type not in NUMERIC_TYPES:
        return []
    out = []
    low, high = num.get("min"), num.get("max")
    if domain.max is not None and high is not None and high > domain.max:
        out.append(_range_anomaly(report, fs, stats, domain.max, high, above=True))
    if domain.min is not None and low is not None and low < domain.min:
        out.append(_range_anomaly(report, fs, stats, domain.min, low, above=False))
    return out


def _observed_strings(str_stats: Mapping[str, Any], stats: Mapping[str, Any]) -> dict[str, float]:
    """Values known to occur, with (lower-bound) counts, for an incomplete value list."""
    counts: dict[str, float] = {}
    for entry in list(str_stats.get("value_counts") or []) + list(str_stats.get("top_k") or []):
        value = str(entry["value"])
        counts[value] = max(counts.get(value, 0.0), float(entry["count"]))
    sketch = _frequent(stats)
    if sketch is not None:
        import datasketches

        no_false_negatives = datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES
        for value, _, lower, _ in sketch.get_frequent_items(no_false_negatives, 0):
            counts[value] = max(counts.get(value, 0.0), float(max(lower, 1)))
    return counts


def _distinct_lower_bound(str_stats: Mapping[str, Any], stats: Mapping[str, Any]) -> float:
    """A lower bound on the number of distinct values."""
    if str_stats.get("num_unique_is_exact") and str_stats.get("num_unique") is not None:
        return float(str_stats["num_unique"])
    return _hll_lower_bound(stats) or 0.0


def _check_enum(report: _Reporter, fs: FeatureSchema, stats: Mapping[str, Any]) -> list[Anomaly]:
    str_stats = stats.get("str")
    if fs.domain is None or fs.domain.values is None or not str_stats:
        return []
    allowed = set(fs.domain.values)
    complete = bool(str_stats.get("value_counts_complete"))
    if complete:
        observed = {str(e["value"]): float(e["count"]) for e in str_stats.get("value_counts") or []}
    else:
        observed = _observed_strings(str_stats, stats)
    unexpected = sorted(
        ((v, c) for v, c in observed.items() if v not in allowed), key=lambda vc: (-vc[1], vc[0])
    )
    distinct = _distinct_lower_bound(str_stats, stats)
    # More distinct values than the domain has means some are outside it.
    pigeonhole = int(math.floor(distinct)) - len(allowed)
    if not unexpected and (complete or pigeonhole <= 0):
        return []
    present = int(stats.get("num_present") or 0)
    expected = f"one of {len(allowed)} values: {_enum_list(fs.domain.values)}"
    if complete:
        total = sum(c for _, c in unexpected)
        detail = (
            f"{_plural(len(unexpected), 'distinct value')} outside the domain of "
            f"{len(allowed)} values, in "
            f"{_num(total)} of {present} values ({_pct(total, present)}): {_values_list(unexpected)}"
        )
        return [
            report(
                fs.name,
                "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
                detail,
                expected,
                _values_list(unexpected),
            )
        ]
    at_least = max(len(unexpected), pigeonhole)
    partial = (
        f"partial check: the value counts are incomplete, so only the {len(observed)} most "
        f"frequent values could be compared"
    )
    if unexpected:
        total = sum(c for _, c in unexpected)
        detail = (
            f"at least {_plural(at_least, 'distinct value')} outside the domain of "
            f"{len(allowed)} values, in "
            f"at least {_num(total)} of {present} values ({_pct(total, present)}): "
            f"{_values_list(unexpected)} ({partial})"
        )
        found = _values_list(unexpected)
    else:
        detail = (
            f"at least {_plural(at_least, 'distinct value')} outside the domain of "
            f"{len(allowed)} values: "
            f"at least {_num(distinct)} distinct values found, none of them among the most "
            f"frequent ({partial})"
        )
        found = f"at least {_num(distinct)} distinct values"
    return [report(fs.name, "ENUM_TYPE_UNEXPECTED_STRING_VALUES", detail, expected, found)]


def _check_feature(
    report: _Reporter, fs: FeatureSchema, stats: Mapping[str, Any], num_rows: int
) -> list[Anomaly]:
    type_anomalies = _check_type(report, fs, stats)
    out = type_anomalies + _check_presence(report, fs, stats, num_rows)
    if type_anomalies:
        return out
    num = stats.get("num")
    if num and fs.type in NUMERIC_TYPES:
        out += _check_non_finite(report, fs, num, int(stats.get("num_present") or 0))
        out += _check_range(report, fs, stats)
    out += _check_enum(report, fs, stats)
    return out


# --------------------------------------------------------------------------- distances


def l_infinity_distance(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[float, str | None]:
    """L-infinity distance between two value distributions.

    Args:
        p: Normalized frequency by value (values absent count as 0).
        q: Likewise.

    Returns:
        ``(distance, value)``: the largest absolute difference in frequency,
        and the value where it occurs (None when both are empty).
    """
    best, where = 0.0, None
    for value in sorted(set(p) | set(q)):
        diff = abs(p.get(value, 0.0) - q.get(value, 0.0))
        if diff > best or where is None:
            best, where = diff, value
    return best, where


def jensen_shannon_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence, base 2, of two histograms on the same bins.

    Args:
        p: Non-negative bin masses (normalized here).
        q: Likewise, same length.

    Returns:
        The divergence, in ``[0, 1]``: 0 for identical, 1 for disjoint histograms.
    """
    a, b = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    a, b = np.clip(a, 0.0, None), np.clip(b, 0.0, None)
    if a.sum() <= 0 or b.sum() <= 0:
        return 0.0
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return float(min(1.0, max(0.0, (kl(a) + kl(b)) / 2)))


def _frequencies(stats: Mapping[str, Any]) -> Callable[[set[str]], dict[str, float]] | None:
    """A function giving normalized frequencies for values, or None without data.

    The returned function maps a set of extra values to query to the
    frequency of every value tracked plus those values.
    """
    if stats.get("type") == "BOOL":
        mean = (stats.get("num") or {}).get("mean")
        if mean is None:
            return None
        return lambda _: {"true": float(mean), "false": 1.0 - float(mean)}
    str_stats = stats.get("str")
    if not str_stats:
        return None
    if str_stats.get("value_counts_complete"):
        counts = {str(e["value"]): float(e["count"]) for e in str_stats.get("value_counts") or []}
        total = sum(counts.values())
        return (lambda _: {v: c / total for v, c in counts.items()}) if total else None
    sketch = _frequent(stats)
    if sketch is not None:
        import datasketches

        total = float(sketch.total_weight)
        error_type = datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES
        tracked = {str(item[0]) for item in sketch.get_frequent_items(error_type, 0)}
        return lambda extra: {v: sketch.get_estimate(v) / total for v in tracked | extra}
    top = {str(e["value"]): float(e["count"]) for e in str_stats.get("top_k") or []}
    total = float(stats.get("num_present") or 0)
    return (lambda _: {v: c / total for v, c in top.items()}) if total else None


def _categorical_distance(
    a: Mapping[str, Any], b: Mapping[str, Any]
) -> tuple[float, str | None, float, float] | None:
    """L-infinity distance between two features' value frequencies.

    Returns:
        ``(distance, value, freq_a, freq_b)`` or None when either has no data.
    """
    fa, fb = _frequencies(a), _frequencies(b)
    if fa is None or fb is None:
        return None
    pa0, pb0 = fa(set()), fb(set())
    pa, pb = fa(set(pb0)), fb(set(pa0))
    distance, value = l_infinity_distance(pa, pb)
    if value is None:
        return None
    return distance, value, pa.get(value, 0.0), pb.get(value, 0.0)


def _quantile_cdf(stats: Mapping[str, Any], points: np.ndarray) -> np.ndarray | None:
    """Fraction of values ``<= points``, interpolated linearly in the ``quantiles`` list."""
    quantiles = (stats.get("num") or {}).get("quantiles") or []
    pairs = sorted(
        (float(e["value"]), float(e["q"])) for e in quantiles if e.get("value") is not None
    )
    if not pairs:
        return None
    values = np.array([v for v, _ in pairs])
    ranks = np.maximum.accumulate(np.array([q for _, q in pairs]))
    ranks[-1] = 1.0
    # Last quantile at or below each point (ties: the highest rank), then interpolate.
    i = np.searchsorted(values, points, side="right") - 1
    cdf = np.zeros(len(points))
    inside = (i >= 0) & (i < len(values) - 1)
    lo, hi = i[inside], i[inside] + 1
    span = values[hi] - values[lo]
    t = np.where(span > 0, (points[inside] - values[lo]) / np.where(span > 0, span, 1.0), 0.0)
    cdf[inside] = ranks[lo] + t * (ranks[hi] - ranks[lo])
    cdf[i >= len(values) - 1] = 1.0
    return cdf


def _quantile_points(stats: Mapping[str, Any]) -> set[float]:
    quantiles = (stats.get("num") or {}).get("quantiles") or []
    return {float(e["value"]) for e in quantiles if e.get("value") is not None}


def _kll_pmfs(a: QuantileSketch, b: QuantileSketch) -> tuple[list[float], list[float]]:
    """Masses of two quantile summaries on equal-mass bins of their pooled distribution."""
    pooled = QuantileSketch(a.k)
    pooled.merge(a)
    pooled.merge(b)
    points = sorted({float(x) for x in pooled.quantiles(_JSD_RANKS.tolist())})

    def pmf(sketch: QuantileSketch) -> list[float]:
        return np.diff(np.concatenate([[0.0], sketch.cdf(points), [1.0]])).tolist()

    return pmf(a), pmf(b)


def _numeric_divergence(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """Jensen-Shannon divergence (base 2) of two numeric features, or None without data."""
    ka, kb = _kll(a), _kll(b)
    if ka is not None and kb is not None:
        return jensen_shannon_divergence(*_kll_pmfs(ka, kb))
    points = np.array(sorted(_quantile_points(a) | _quantile_points(b)))
    if points.size == 0:
        return None
    ca, cb = _quantile_cdf(a, points), _quantile_cdf(b, points)
    if ca is None or cb is None:
        return None
    # Bins (-inf, p0], (p0, p1], ..., (p_last, inf).
    pa = np.diff(np.concatenate([[0.0], ca, [1.0]]))
    pb = np.diff(np.concatenate([[0.0], cb, [1.0]]))
    return jensen_shannon_divergence(pa.tolist(), pb.tolist())


def _compare(
    report: _Reporter,
    fs: FeatureSchema,
    stats: Mapping[str, Any],
    other: Mapping[str, Any],
    comparator: Comparator,
    against: str,
    other_label: str,
) -> list[Anomaly]:
    """Run one drift or skew comparison; ``stats`` is this split, ``other`` the reference."""
    threshold = comparator.threshold
    if fs.type in CATEGORICAL_TYPES:
        result = _categorical_distance(other, stats)
        if result is None or result[0] <= threshold:
            return []
        distance, value, before, after = result
        detail = (
            f"{against}: L-infinity distance {distance:.4g} between the value distributions "
            f"exceeds the threshold {_num(threshold)}; largest change for {value!r}: "
            f"{_pct(before, 1)} in {other_label}, {_pct(after, 1)} here"
        )
        type_ = "COMPARATOR_L_INFTY_HIGH"
        found = (
            f"L-infinity distance {distance:.4g} ({value!r}: {_pct(before, 1)} -> {_pct(after, 1)})"
        )
    else:
        divergence = _numeric_divergence(other, stats)
        if divergence is None or divergence <= threshold:
            return []
        n_here = (stats.get("num") or {}).get("mean")
        n_there = (other.get("num") or {}).get("mean")
        means = f"; mean {_num(n_there)} in {other_label}, {_num(n_here)} here"
        detail = (
            f"{against}: Jensen-Shannon divergence {divergence:.4g} (base 2) between the value "
            f"distributions exceeds the threshold {_num(threshold)}{means}"
        )
        type_ = "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"
        found = f"Jensen-Shannon divergence {divergence:.4g}"
    expected = f"distance <= {_num(threshold)} ({against})"
    return [report(fs.name, type_, detail, expected, found, comparator)]


def _comparisons(
    report: _Reporter,
    fs: FeatureSchema,
    stats: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    serving: Mapping[str, Any] | None,
) -> list[Anomaly]:
    out = []
    checks = (
        (fs.drift_comparator, previous, "drift against the previous span", "the previous span"),
        (fs.skew_comparator, serving, "skew against serving data", "serving data"),
    )
    for comparator, reference, against, label in checks:
        if comparator is None or reference is None:
            continue
        other = (reference.get("features") or {}).get(fs.name)
        if other is None or other.get("type") not in _ACCEPTS[fs.type]:
            continue
        out += _compare(report, fs, stats, other, comparator, against, label)
    return out


# --------------------------------------------------------------------------- entry points


def validate_statistics(
    stats: Mapping[str, Any],
    schema: SchemaSpec,
    *,
    split: str | None = None,
    previous_stats: Mapping[str, Any] | None = None,
    serving_stats: Mapping[str, Any] | None = None,
    environment: str | None = None,
    values: ValuesFn | None = None,
) -> list[Anomaly]:
    """Check one split's statistics against a schema.

    Args:
        stats: A ``jaxtx.statistics/1`` document.
        schema: The expected schema.
        split: Split name, recorded on each anomaly and in its description.
        previous_stats: Statistics of the previous span: features with a
            ``drift_comparator`` are compared with it.
        serving_stats: Statistics of serving data: features with a
            ``skew_comparator`` are compared with it (``stats`` being training data).
        environment: Check only the schema's features in this environment
            (e.g. ``SERVING``); None checks every feature.
        values: The values of a feature by name (a pyarrow array), for exact
            out-of-range counts; None estimates them from the sketches.

    Returns:
        The anomalies, schema features first (in schema order), then new
        columns (of every type, lists and structs included).
    """
    report = _Reporter(schema, split, values)
    features = stats.get("features") or {}
    num_rows = int(stats.get("num_rows") or 0)
    out: list[Anomaly] = []
    for fs in schema.features:
        if not feature_in_environment(schema, fs, environment):
            continue
        feature_stats = features.get(fs.name)
        if feature_stats is None:
            detail = f"column is missing; the schema expects a {fs.type} column"
            out.append(
                report(fs.name, "SCHEMA_MISSING_COLUMN", detail, f"{fs.type} column", "no column")
            )
            continue
        feature_anomalies = _check_feature(report, fs, feature_stats, num_rows)
        out += feature_anomalies
        if any(a.type == "UNEXPECTED_DATA_TYPE" for a in feature_anomalies):
            continue
        out += _comparisons(report, fs, feature_stats, previous_stats, serving_stats)
    for name, feature_stats in features.items():
        if name not in schema:
            out.append(_new_column(report, name, feature_stats))
    return out


def _new_column(report: _Reporter, name: str, feature_stats: Mapping[str, Any]) -> Anomaly:
    """SCHEMA_NEW_COLUMN for a column of any type (OTHER: named by its Arrow type)."""
    found_type = str(feature_stats.get("type"))
    if found_type not in FEATURE_TYPES and feature_stats.get("arrow_type"):
        found_type = f"{found_type} ({feature_stats['arrow_type']})"
    present = feature_stats.get("num_present", 0)
    detail = f"new {found_type} column not in the schema ({present} values)"
    return report(name, "SCHEMA_NEW_COLUMN", detail, "no such column", f"{found_type} column")


def _first_rows(rejected: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The first ``n`` records by (source, line): the same sample whatever order the
    runner wrote them in."""
    return sorted(rejected, key=lambda r: (str(r.get("source")), int(r.get("line") or 0)))[:n]


def malformed_rows(
    num_read: int,
    num_rejected: int,
    rejected: Sequence[Mapping[str, Any]] = (),
    *,
    schema: SchemaSpec | None = None,
    max_fraction: float = 0.01,
) -> Anomaly | None:
    """The ``MALFORMED_ROWS`` anomaly of rows that could not be read (None if none).

    Args:
        num_read: rows read (``num_written + num_rejected``).
        num_rejected: rows quarantined.
        rejected: some quarantine records (``source``, ``line``, ``reason``), named
            in the description (the first three).
        schema: for a severity override (``default_severities``); the default is fail.
        max_fraction: up to this fraction of malformed rows the severity is ``warn``.

    Returns:
        The anomaly, or None when no row was rejected.
    """
    if num_rejected <= 0:
        return None
    fraction = num_rejected / num_read if num_read else 1.0
    severity = "warn"
    if fraction > max_fraction:
        severity = schema.severity(MALFORMED_ROWS) if schema is not None else "fail"
    first = "; ".join(
        f"{r.get('source')}:{r.get('line')}: {r.get('reason')}" for r in _first_rows(rejected, 3)
    )
    return Anomaly(
        feature=ROWS_FEATURE,
        type=MALFORMED_ROWS,
        severity=severity,
        description=(
            f"{num_rejected} of {num_read} rows ({_pct(num_rejected, num_read)}) could not be "
            f"read (threshold {_pct(max_fraction, 1)})" + (f": {first}" if first else "")
        ),
        expected=f"at most {_pct(max_fraction, 1)} malformed rows",
        found=f"{num_rejected} malformed rows",
    )


def failing(anomalies: Iterable[Anomaly]) -> list[Anomaly]:
    """Anomalies of severity ``"fail"``.

    Args:
        anomalies: Any anomalies.

    Returns:
        Those whose severity is ``"fail"``, in order.
    """
    return [a for a in anomalies if a.severity == "fail"]


def _anomaly_to_dict(anomaly: Anomaly) -> dict[str, Any]:
    data = asdict(anomaly)
    return {key: data[key] for key in _ANOMALY_KEYS}


def _anomaly_from_dict(data: Any, path: str, index: int) -> Anomaly:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: entry {index}: expected an object, found {data!r}")
    keys = set(data)
    if keys != set(_ANOMALY_KEYS):
        raise ValueError(
            f"{path}: entry {index}: expected keys {list(_ANOMALY_KEYS)}, found {sorted(keys)}"
        )
    if data["severity"] not in SEVERITIES:
        raise ValueError(
            f"{path}: entry {index}: field 'severity': expected one of {list(SEVERITIES)}, "
            f"found {data['severity']!r}"
        )
    return Anomaly(**{key: data[key] for key in _ANOMALY_KEYS})


def save_anomalies(anomalies: Iterable[Anomaly], path: str | os.PathLike[str]) -> None:
    """Write anomalies as a JSON list (see ``docs/formats.md``).

    Args:
        anomalies: The anomalies.
        path: Destination file (``anomalies.json``); its directory must exist.
    """
    data = [_anomaly_to_dict(a) for a in anomalies]
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def load_anomalies(path: str | os.PathLike[str]) -> list[Anomaly]:
    """Read anomalies written by :func:`save_anomalies`.

    Args:
        path: The JSON file.

    Returns:
        The anomalies, in file order.

    Raises:
        ValueError: The file is not a list of anomaly objects.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of anomalies, found {type(data).__name__}")
    return [_anomaly_from_dict(item, path, i) for i, item in enumerate(data)]
