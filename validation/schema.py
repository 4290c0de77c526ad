"""Data schema: what every feature is expected to look like (SchemaGen).

A :class:`SchemaSpec` is inferred from statistics (``jaxtx.statistics/1``, see
``docs/formats.md``) by :func:`infer_schema`, saved as a human-editable YAML
file (or JSON) by :func:`save_schema`, curated by hand, and loaded back with
:func:`load_schema`. :func:`jaxtx.validation.anomalies.validate_statistics`
checks new statistics against it.

The file format (``jaxtx.schema/1``)::

    format: jaxtx.schema/1
    default_severities: {}          # schema-wide overrides, e.g. {SCHEMA_NEW_COLUMN: fail}
    default_environment: []         # e.g. [TRAINING, SERVING]; [] = every environment
    features:
      age:
        type: INT                   # INT | FLOAT | STRING | BYTES | BOOL
        description: ''
        presence:
          min_fraction: 0.99        # fraction of rows with a (non-null) value
          min_count: 1              # number of rows with a value
        domain:                     # numeric range, a string enum, or null
          min: 17
          max: 90
        allow_nan: false            # INT/FLOAT only (omitted elsewhere unless true)
        allow_inf: false
        drift_comparator: null      # or {threshold: 0.1, severity: warn}
        skew_comparator: null
        severity: {}                # per anomaly type, e.g. {INT_TYPE_BIG_INT: warn}
        not_in_environment: []      # e.g. [SERVING] for the label (also in_environment)
      workclass:
        type: STRING
        ...
        domain:
          values: [Private, Self-emp, ...]

Comparators: for categorical features (STRING, BYTES, BOOL) the threshold
bounds the L-infinity distance between the normalized value distributions;
for numeric features (INT, FLOAT) it bounds the Jensen-Shannon divergence
(base 2, between 0 and 1) of the value distributions.

Environments (as in TFDV): data checked "in" an environment (``SERVING``,
``TRAINING``...) checks only the features in it: a feature listing the
environment in ``in_environment`` is in it, one listing it in
``not_in_environment`` is not, otherwise it is when the environment is in
``default_environment`` (an empty ``default_environment`` holds every
environment). Checked without an environment, every feature is in. See
:func:`feature_in_environment`.

Missing keys take their defaults (presence 0 / 0, no domain, NaN and inf not
allowed, comparators off, no overrides, no environments), so a minimal file
only needs ``features: {age: {type: INT}}``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "ANOMALY_TYPES",
    "CATEGORICAL_TYPES",
    "DEFAULT_SEVERITIES",
    "FEATURE_TYPES",
    "NUMERIC_TYPES",
    "SCHEMA_FORMAT",
    "SEVERITIES",
    "Comparator",
    "Domain",
    "FeatureSchema",
    "Presence",
    "SchemaSpec",
    "SchemaError",
    "feature_in_environment",
    "infer_schema",
    "load_schema",
    "save_schema",
    "schema_from_dict",
    "schema_to_dict",
]

SCHEMA_FORMAT = "jaxtx.schema/1"
FEATURE_TYPES: tuple[str, ...] = ("INT", "FLOAT", "STRING", "BYTES", "BOOL")
NUMERIC_TYPES: frozenset[str] = frozenset({"INT", "FLOAT"})
CATEGORICAL_TYPES: frozenset[str] = frozenset({"STRING", "BYTES", "BOOL"})
SEVERITIES: tuple[str, ...] = ("warn", "fail")

# Built-in severity of every anomaly type. "fail" marks data that breaks the
# contract the training and serving code rely on (a column is gone, has the
# wrong type, holds NaN/inf, values outside the declared domain, or no values
# at all); "warn" marks changes worth a look that do not break that code (a
# new column, a lower fill rate, drift or skew over the comparator threshold).
DEFAULT_SEVERITIES: Mapping[str, str] = MappingProxyType(
    {
        "SCHEMA_MISSING_COLUMN": "fail",
        "SCHEMA_NEW_COLUMN": "warn",
        "UNEXPECTED_DATA_TYPE": "fail",
        "FEATURE_TYPE_LOW_FRACTION_PRESENT": "warn",
        "FEATURE_TYPE_LOW_NUMBER_PRESENT": "fail",
        "ENUM_TYPE_UNEXPECTED_STRING_VALUES": "fail",
        "FLOAT_TYPE_HAS_NAN": "fail",
        "FLOAT_TYPE_HAS_INF": "fail",
        "INT_TYPE_BIG_INT": "fail",
        "INT_TYPE_SMALL_INT": "fail",
        "FLOAT_TYPE_BIG_FLOAT": "fail",
        "FLOAT_TYPE_SMALL_FLOAT": "fail",
        "COMPARATOR_L_INFTY_HIGH": "warn",
        "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH": "warn",
        # jaxtx's own: rows ExampleGen quarantined, above the validator's threshold.
        "MALFORMED_ROWS": "fail",
    }
)
ANOMALY_TYPES: tuple[str, ...] = tuple(DEFAULT_SEVERITIES)

_HEADER = """\
# jaxtx data schema ({format}), written by SchemaGen. Curate it by hand:
#
# features.<name>:
#   type:              INT | FLOAT | STRING | BYTES | BOOL. INT and BOOL data are
#                      accepted where FLOAT is expected, BOOL where INT is, and STRING
#                      where BYTES is.
#   presence:          min_fraction (0..1 of rows with a non-null value) and
#                      min_count (rows with a value); lower them for optional features.
#   domain:            null, a numeric range {{min: .., max: ..}} (INT, FLOAT; either
#                      bound may be omitted), or a string enum {{values: [..]}}
#                      (STRING, BYTES). Widen ranges and add values that are legitimate.
#   allow_nan / allow_inf: whether NaN / +-inf values are acceptable (FLOAT).
#   drift_comparator:  null (off) or {{threshold: T, severity: warn|fail}}: compares
#                      a split with the previous span. skew_comparator compares
#                      training data with serving data. The distance is the
#                      L-infinity distance of the value frequencies for STRING, BYTES
#                      and BOOL, and the Jensen-Shannon divergence (base 2, 0..1) for
#                      INT and FLOAT. Example: drift_comparator: {{threshold: 0.1}}
#   severity:          per-feature overrides, {{ANOMALY_TYPE: warn|fail}}.
#   description:       free text.
#   in_environment / not_in_environment: environments (e.g. [SERVING]) the feature
#                      is / is not part of, e.g. not_in_environment: [SERVING] for a
#                      label; validate with `jaxtx validate --environment SERVING`.
#
# default_environment: environments every other feature is in ([] = all).
#
# default_severities: schema-wide overrides, {{ANOMALY_TYPE: warn|fail}}. Built-in:
{defaults}
#
# Unknown keys, wrong types, unknown severities and min > max are rejected on load.
"""

_TOP_KEYS = frozenset({"format", "default_severities", "default_environment", "features"})
_FEATURE_KEYS = frozenset(
    {
        "type",
        "description",
        "presence",
        "domain",
        "allow_nan",
        "allow_inf",
        "drift_comparator",
        "skew_comparator",
        "severity",
        "in_environment",
        "not_in_environment",
    }
)
_PRESENCE_KEYS = frozenset({"min_fraction", "min_count"})
_DOMAIN_KEYS = frozenset({"values", "min", "max"})
_COMPARATOR_KEYS = frozenset({"threshold", "severity"})


class SchemaError(ValueError):
    """A schema file or dict does not follow the ``jaxtx.schema/1`` format."""


def _check_severity_map(severities: Mapping[str, str], where: str) -> None:
    """Raise ValueError unless ``severities`` maps anomaly types to severities."""
    for anomaly_type, severity in severities.items():
        if anomaly_type not in DEFAULT_SEVERITIES or severity not in SEVERITIES:
            raise ValueError(
                f"{where}: expected {{anomaly type: warn|fail}}, found {anomaly_type!r}: {severity!r}"
            )


@dataclass(frozen=True)
class Presence:
    """How often a feature must have a value.

    Attributes:
        min_fraction: Least fraction of rows (0..1) with a non-null value.
        min_count: Least number of rows with a non-null value.
    """

    min_fraction: float = 0.0
    min_count: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_fraction <= 1.0:
            raise ValueError(f"presence min_fraction must be in [0, 1], not {self.min_fraction}")
        if self.min_count < 0:
            raise ValueError(f"presence min_count must be >= 0, not {self.min_count}")


@dataclass(frozen=True)
class Domain:
    """The values a feature may take: a string enum or a numeric range.

    Attributes:
        values: Allowed strings (STRING, BYTES features), or None.
        min: Smallest allowed value (INT, FLOAT features), or None for no bound.
        max: Largest allowed value (INT, FLOAT features), or None for no bound.
    """

    values: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.values is not None and (self.min is not None or self.max is not None):
            raise ValueError("a domain is either 'values' or a 'min'/'max' range, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"domain min {self.min} > max {self.max}")

    @property
    def is_enum(self) -> bool:
        """Whether this domain is a string enum."""
        return self.values is not None

    @property
    def is_range(self) -> bool:
        """Whether this domain bounds numeric values."""
        return self.min is not None or self.max is not None


@dataclass(frozen=True)
class Comparator:
    """A distribution comparison (drift or skew) and its threshold.

    Attributes:
        threshold: Largest acceptable distance: L-infinity for categorical
            features, Jensen-Shannon divergence (base 2) for numeric ones.
        severity: Severity of the anomaly when the threshold is exceeded, or
            None for the feature's/schema's severity of that anomaly type.
    """

    threshold: float
    severity: str | None = None

    def __post_init__(self) -> None:
        if self.severity is not None and self.severity not in SEVERITIES:
            raise ValueError(
                f"comparator severity must be one of {SEVERITIES}, not {self.severity!r}"
            )


@dataclass(frozen=True)
class FeatureSchema:
    """What one feature is expected to look like.

    Attributes:
        name: Column name.
        type: One of ``FEATURE_TYPES``.
        presence: Required fill rate.
        domain: Allowed values, or None for any value of the type.
        allow_nan: Whether NaN values are acceptable.
        allow_inf: Whether +-inf values are acceptable.
        drift_comparator: Drift check against the previous span, or None (off).
        skew_comparator: Skew check of training against serving data, or None.
        severity: Per anomaly type severity overrides for this feature.
        description: Free text.
        in_environment: Environments this feature is in (besides the defaults).
        not_in_environment: Environments this feature is not in.
    """

    name: str
    type: str
    presence: Presence = Presence()
    domain: Domain | None = None
    allow_nan: bool = False
    allow_inf: bool = False
    drift_comparator: Comparator | None = None
    skew_comparator: Comparator | None = None
    severity: Mapping[str, str] = field(default_factory=dict, hash=False)
    description: str = ""
    in_environment: tuple[str, ...] = ()
    not_in_environment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise ValueError(f"feature {self.name!r}: type must be one of {FEATURE_TYPES}")
        _check_severity_map(self.severity, f"feature {self.name!r}")


@dataclass(frozen=True)
class SchemaSpec:
    """The expected shape of a data set.

    Attributes:
        features: Every expected feature, in file order.
        default_severities: Schema-wide severity overrides by anomaly type
            (on top of ``DEFAULT_SEVERITIES``).
        default_environment: Environments every feature is in unless it says
            otherwise; empty for every environment.
    """

    features: tuple[FeatureSchema, ...] = ()
    default_severities: Mapping[str, str] = field(default_factory=dict, hash=False)
    default_environment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        _check_severity_map(self.default_severities, "default_severities")

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in order."""
        return tuple(f.name for f in self.features)

    def get(self, name: str) -> FeatureSchema | None:
        """Return the feature called ``name``, or None.

        Args:
            name: Feature name.

        Returns:
            The feature's schema or None.
        """
        for feature in self.features:
            if feature.name == name:
                return feature
        return None

    def feature(self, name: str) -> FeatureSchema:
        """Return the feature called ``name``.

        Args:
            name: Feature name.

        Returns:
            The feature's schema.

        Raises:
            KeyError: No such feature.
        """
        found = self.get(name)
        if found is None:
            raise KeyError(f"feature {name!r} is not in the schema (features: {list(self.names)})")
        return found

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.features)

    def severity(self, anomaly_type: str, feature: str | None = None) -> str:
        """Resolve the severity of an anomaly type for a feature.

        Per-feature overrides win over schema-wide ones, which win over
        ``DEFAULT_SEVERITIES``.

        Args:
            anomaly_type: One of ``ANOMALY_TYPES``.
            feature: Feature name, or None for schema-wide resolution.

        Returns:
            ``"warn"`` or ``"fail"``.
        """
        feature_schema = self.get(feature) if feature is not None else None
        if feature_schema is not None and anomaly_type in feature_schema.severity:
            return feature_schema.severity[anomaly_type]
        if anomaly_type in self.default_severities:
            return self.default_severities[anomaly_type]
        return DEFAULT_SEVERITIES.get(anomaly_type, "fail")


def feature_in_environment(schema: SchemaSpec, feature: FeatureSchema, environment: str | None) -> bool:
    """Whether ``feature`` is checked in ``environment`` (TFDV's rule, see module doc).

    Args:
        schema: The schema (for its ``default_environment``).
        feature: One of its features.
        environment: The environment, or None (every feature is in).

    Returns:
        True when the feature is part of the environment.
    """
    if environment is None or environment in feature.in_environment:
        return True
    if environment in feature.not_in_environment:
        return False
    return not schema.default_environment or environment in schema.default_environment


# --------------------------------------------------------------------------- inference


def _is_single_statistics(stats: Mapping[str, Any]) -> bool:
    features = stats.get("features")
    return isinstance(features, Mapping) and "num_rows" in stats


def _splits(stats_by_split: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    if _is_single_statistics(stats_by_split):
        return [("", stats_by_split)]
    return list(stats_by_split.items())


def _merge_type(types: list[str]) -> str:
    """Pick one schema type for a feature seen with ``types`` across splits."""
    distinct = set(types)
    if len(distinct) == 1:
        return types[0]
    if distinct <= {"INT", "FLOAT", "BOOL"} and "FLOAT" in distinct:
        return "FLOAT"
    if distinct <= {"INT", "BOOL"}:
        return "INT"
    if distinct <= {"STRING", "BYTES"}:
        return "BYTES"
    return types[0]


def _floor2(fraction: float) -> float:
    """Round a fraction down to two decimals (tolerating float noise)."""
    return round(math.floor(fraction * 100 + 1e-9) / 100, 2)


def _infer_presence(
    observations: list[Mapping[str, Any]], num_rows: list[int], observed_fraction: bool = False
) -> Presence:
    present = sum(int(o.get("num_present") or 0) for o in observations)
    missing = sum(int(o.get("num_missing") or 0) for o in observations)
    if present == 0:
        return Presence(min_fraction=0.0, min_count=0)
    if missing == 0:
        return Presence(min_fraction=1.0, min_count=1)
    if not observed_fraction:  # TFDV: an optional feature needs one value, no fraction
        return Presence(min_fraction=0.0, min_count=1)
    fractions = [
        int(o.get("num_present") or 0) / n for o, n in zip(observations, num_rows, strict=True) if n
    ]
    return Presence(min_fraction=_floor2(min(fractions)) if fractions else 0.0, min_count=1)


def _infer_enum(observations: list[Mapping[str, Any]], max_domain_size: int) -> Domain | None:
    values: set[str] = set()
    for obs in observations:
        string_stats = obs.get("str")
        if not string_stats or not string_stats.get("value_counts_complete"):
            return None
        values.update(str(vc["value"]) for vc in string_stats.get("value_counts") or ())
        if len(values) > max_domain_size:
            return None
    if not values:
        return None
    return Domain(values=tuple(sorted(values)))


def _infer_range(observations: list[Mapping[str, Any]], type_: str) -> Domain | None:
    lows: list[float] = []
    highs: list[float] = []
    for obs in observations:
        num = obs.get("num") or {}
        low, high = num.get("min"), num.get("max")
        if isinstance(low, int | float) and math.isfinite(low):
            lows.append(float(low))
        if isinstance(high, int | float) and math.isfinite(high):
            highs.append(float(high))
    if not lows or not highs:
        return None
    if type_ == "INT":
        return Domain(min=int(math.floor(min(lows))), max=int(math.ceil(max(highs))))
    return Domain(min=min(lows), max=max(highs))


def infer_schema(
    stats_by_split: Mapping[str, Any],
    *,
    max_domain_size: int = 100,
    infer_ranges: bool = False,
    infer_min_fraction: bool = False,
) -> SchemaSpec:
    """Infer a schema from statistics of one or more splits, with TFDV's defaults.

    Types come from the statistics (INT and FLOAT across splits give FLOAT).
    ``presence.min_fraction`` is 1.0 for a feature never missing, otherwise 0
    (or, with ``infer_min_fraction``, the lowest observed fraction across
    splits rounded down to two decimals); ``min_count`` is 1 for a feature
    that has values. STRING and BYTES features get an enum domain when every
    split lists all their values (``value_counts_complete``) and there are at
    most ``max_domain_size`` of them (TFDV's ``max_string_domain_size``, 100);
    INT and FLOAT features get the observed ``[min, max]`` range only when
    ``infer_ranges``. NaN and inf are allowed where they were observed.
    The defaults raise no alarm on a later span whose values merely extend
    the observed ones; the stricter options do.
    Drift and skew comparators are left off: switch them on per feature by
    setting e.g. ``drift_comparator: {threshold: 0.1}`` in the saved file.
    Features of type OTHER (nested or unsupported Arrow types) are left out.

    Args:
        stats_by_split: A ``jaxtx.statistics/1`` document, or a mapping of
            split name to such documents.
        max_domain_size: Largest number of distinct strings turned into an enum.
        infer_ranges: Whether to infer numeric min/max domains (off in TFDV).
        infer_min_fraction: Whether optional features get their observed fill
            rate as ``min_fraction`` (off in TFDV: ``min_count: 1`` only).

    Returns:
        The inferred schema, features in first-seen order.
    """
    splits = _splits(stats_by_split)
    order: list[str] = []
    seen: dict[str, list[Mapping[str, Any]]] = {}
    rows: dict[str, list[int]] = {}
    for _, stats in splits:
        num_rows = int(stats.get("num_rows") or 0)
        for name, feature_stats in (stats.get("features") or {}).items():
            if feature_stats.get("type") not in FEATURE_TYPES:
                continue
            if name not in seen:
                order.append(name)
                seen[name], rows[name] = [], []
            seen[name].append(feature_stats)
            rows[name].append(num_rows)
    features = []
    for name in order:
        observations = seen[name]
        type_ = _merge_type([o["type"] for o in observations])
        domain: Domain | None = None
        if type_ in ("STRING", "BYTES"):
            domain = _infer_enum(observations, max_domain_size)
        elif type_ in NUMERIC_TYPES and infer_ranges:
            domain = _infer_range(observations, type_)
        nums = [o.get("num") or {} for o in observations]
        features.append(
            FeatureSchema(
                name=name,
                type=type_,
                presence=_infer_presence(observations, rows[name], infer_min_fraction),
                domain=domain,
                allow_nan=any((n.get("num_nan") or 0) > 0 for n in nums),
                allow_inf=any(
                    (n.get("num_pos_inf") or 0) + (n.get("num_neg_inf") or 0) > 0 for n in nums
                ),
            )
        )
    return SchemaSpec(features=tuple(features))


# --------------------------------------------------------------------------- dict form


def _comparator_to_dict(comparator: Comparator | None) -> dict[str, Any] | None:
    if comparator is None:
        return None
    out: dict[str, Any] = {"threshold": comparator.threshold}
    if comparator.severity is not None:
        out["severity"] = comparator.severity
    return out


def _domain_to_dict(domain: Domain | None) -> dict[str, Any] | None:
    if domain is None:
        return None
    if domain.values is not None:
        return {"values": list(domain.values)}
    out: dict[str, Any] = {}
    if domain.min is not None:
        out["min"] = domain.min
    if domain.max is not None:
        out["max"] = domain.max
    return out


def _feature_to_dict(feature: FeatureSchema) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": feature.type,
        "description": feature.description,
        "presence": {
            "min_fraction": feature.presence.min_fraction,
            "min_count": feature.presence.min_count,
        },
        "domain": _domain_to_dict(feature.domain),
    }
    # NaN/inf flags only matter for numeric features; written there or when set.
    if feature.type in NUMERIC_TYPES or feature.allow_nan:
        out["allow_nan"] = feature.allow_nan
    if feature.type in NUMERIC_TYPES or feature.allow_inf:
        out["allow_inf"] = feature.allow_inf
    out["drift_comparator"] = _comparator_to_dict(feature.drift_comparator)
    out["skew_comparator"] = _comparator_to_dict(feature.skew_comparator)
    out["severity"] = dict(feature.severity)
    if feature.in_environment:
        out["in_environment"] = list(feature.in_environment)
    if feature.not_in_environment:
        out["not_in_environment"] = list(feature.not_in_environment)
    return out


def schema_to_dict(schema: SchemaSpec) -> dict[str, Any]:
    """Convert a schema to its plain ``jaxtx.schema/1`` dict form.

    Args:
        schema: The schema.

    Returns:
        A dict of plain JSON/YAML types; features keyed by name, in order.
    """
    return {
        "format": SCHEMA_FORMAT,
        "default_severities": dict(schema.default_severities),
        "default_environment": list(schema.default_environment),
        "features": {f.name: _feature_to_dict(f) for f in schema.features},
    }


class _Where:
    """Builds error messages naming the source, the feature and the field."""

    def __init__(self, source: str, feature: str | None = None) -> None:
        self.source = source
        self.feature = feature

    def error(self, field_name: str, expected: str, found: Any) -> SchemaError:
        where = f"feature {self.feature!r}, " if self.feature is not None else ""
        shown = f"{found!r} ({type(found).__name__})" if found is not _ABSENT else "nothing"
        return SchemaError(
            f"{self.source}: {where}field {field_name!r}: expected {expected}, found {shown}"
        )


_ABSENT = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_keys(where: _Where, prefix: str, data: Mapping[str, Any], allowed: frozenset) -> None:
    for key in data:
        if key not in allowed:
            name = f"{prefix}{key}"
            raise where.error(name, f"one of the keys {sorted(allowed)}", key)


def _parse_mapping(where: _Where, name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(name, "a mapping", value)
    return value


def _parse_severities(where: _Where, name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    data = _parse_mapping(where, name, value)
    out: dict[str, str] = {}
    for key, severity in data.items():
        if key not in DEFAULT_SEVERITIES:
            raise where.error(
                f"{name}.{key}", f"an anomaly type, one of {list(ANOMALY_TYPES)}", key
            )
        if severity not in SEVERITIES:
            raise where.error(f"{name}.{key}", f"a severity, one of {list(SEVERITIES)}", severity)
        out[str(key)] = str(severity)
    return out


def _parse_presence(where: _Where, value: Any) -> Presence:
    if value is None:
        return Presence()
    data = _parse_mapping(where, "presence", value)
    _check_keys(where, "presence.", data, _PRESENCE_KEYS)
    fraction = data.get("min_fraction", 0.0)
    if not _is_number(fraction) or not 0.0 <= fraction <= 1.0:
        raise where.error("presence.min_fraction", "a number between 0 and 1", fraction)
    count = data.get("min_count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise where.error("presence.min_count", "a non-negative integer", count)
    return Presence(min_fraction=float(fraction), min_count=count)


def _parse_domain(where: _Where, type_: str, value: Any) -> Domain | None:
    if value is None:
        return None
    data = _parse_mapping(where, "domain", value)
    _check_keys(where, "domain.", data, _DOMAIN_KEYS)
    if "values" in data:
        if "min" in data or "max" in data:
            raise where.error("domain", "either 'values' or 'min'/'max', not both", dict(data))
        if type_ not in ("STRING", "BYTES"):
            raise where.error("domain.values", "no enum for a non-STRING/BYTES feature", type_)
        values = data["values"]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise where.error("domain.values", "a list of strings", values)
        if len(set(values)) != len(values):
            duplicates = sorted({v for v in values if values.count(v) > 1})
            raise where.error("domain.values", "distinct values", duplicates)
        return Domain(values=tuple(values))
    if not data:
        return None
    if type_ not in NUMERIC_TYPES:
        raise where.error("domain", f"a 'values' enum for a {type_} feature", dict(data))
    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        bound = data.get(key)
        if bound is not None and (not _is_number(bound) or math.isnan(bound)):
            raise where.error(f"domain.{key}", "a number", bound)
        bounds[key] = bound
    low, high = bounds["min"], bounds["max"]
    if low is not None and high is not None and low > high:
        raise where.error("domain", "min <= max", {"min": low, "max": high})
    return Domain(min=low, max=high)


def _parse_comparator(where: _Where, name: str, value: Any) -> Comparator | None:
    if value is None:
        return None
    if _is_number(value):
        value = {"threshold": value}
    data = _parse_mapping(where, name, value)
    _check_keys(where, f"{name}.", data, _COMPARATOR_KEYS)
    threshold = data.get("threshold", _ABSENT)
    if not _is_number(threshold) or not threshold >= 0:
        raise where.error(f"{name}.threshold", "a non-negative number", threshold)
    severity = data.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise where.error(f"{name}.severity", f"a severity, one of {list(SEVERITIES)}", severity)
    return Comparator(threshold=float(threshold), severity=severity)


def _parse_environments(where: _Where, name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.error(name, "a list of environment names, e.g. [SERVING]", value)
    return tuple(value)


def _parse_bool(where: _Where, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise where.error(name, "true or false", value)
    return value


def _parse_feature(source: str, name: Any, value: Any) -> FeatureSchema:
    if not isinstance(name, str) or not name:
        raise _Where(source).error("features", "non-empty string feature names", name)
    where = _Where(source, name)
    if not isinstance(value, Mapping):
        raise where.error("(feature)", "a mapping of feature fields", value)
    _check_keys(where, "", value, _FEATURE_KEYS)
    type_ = value.get("type", _ABSENT)
    if type_ not in FEATURE_TYPES:
        raise where.error("type", f"one of {list(FEATURE_TYPES)}", type_)
    description = value.get("description") or ""
    if not isinstance(description, str):
        raise where.error("description", "a string", description)
    return FeatureSchema(
        name=name,
        type=type_,
        presence=_parse_presence(where, value.get("presence")),
        domain=_parse_domain(where, type_, value.get("domain")),
        allow_nan=_parse_bool(where, "allow_nan", value.get("allow_nan", False)),
        allow_inf=_parse_bool(where, "allow_inf", value.get("allow_inf", False)),
        drift_comparator=_parse_comparator(
            where, "drift_comparator", value.get("drift_comparator")
        ),
        skew_comparator=_parse_comparator(where, "skew_comparator", value.get("skew_comparator")),
        severity=_parse_severities(where, "severity", value.get("severity")),
        description=description,
        in_environment=_parse_environments(where, "in_environment", value.get("in_environment")),
        not_in_environment=_parse_environments(
            where, "not_in_environment", value.get("not_in_environment")
        ),
    )


def schema_from_dict(data: Any, *, source: str = "<schema>") -> SchemaSpec:
    """Build a schema from its ``jaxtx.schema/1`` dict form, validating it.

    Args:
        data: The dict, as produced by :func:`schema_to_dict` or parsed from a file.
        source: Name used in error messages (the file path).

    Returns:
        The schema.

    Raises:
        SchemaError: Unknown key, wrong type, unknown severity, min > max...;
            the message names ``source``, the feature and the field.
    """
    where = _Where(source)
    data = _parse_mapping(where, "(document)", data)
    _check_keys(where, "", data, _TOP_KEYS)
    fmt = data.get("format", SCHEMA_FORMAT)
    if fmt != SCHEMA_FORMAT:
        raise where.error("format", repr(SCHEMA_FORMAT), fmt)
    features_data = data.get("features")
    features_data = {} if features_data is None else features_data
    features_data = _parse_mapping(where, "features", features_data)
    return SchemaSpec(
        features=tuple(_parse_feature(source, k, v) for k, v in features_data.items()),
        default_severities=_parse_severities(
            where, "default_severities", data.get("default_severities")
        ),
        default_environment=_parse_environments(
            where, "default_environment", data.get("default_environment")
        ),
    )


# --------------------------------------------------------------------------- files


class _Dumper(yaml.SafeDumper):
    """YAML dumper that indents list items under their key (easier to edit)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _header() -> str:
    width = max(len(k) for k in DEFAULT_SEVERITIES)
    defaults = "\n".join(f"#   {k.ljust(width)}  {v}" for k, v in DEFAULT_SEVERITIES.items())
    return _HEADER.format(format=SCHEMA_FORMAT, defaults=defaults)


def save_schema(schema: SchemaSpec, path: str | os.PathLike[str]) -> None:
    """Write a schema as commented YAML, or as JSON if ``path`` ends with ``.json``.

    Args:
        schema: The schema.
        path: Destination file; its parent directory must exist.
    """
    path = os.fspath(path)
    data = schema_to_dict(schema)
    if path.endswith(".json"):
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        body = yaml.dump(
            data,
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=100,
        )
        text = _header() + "\n" + body
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def load_schema(path: str | os.PathLike[str]) -> SchemaSpec:
    """Read a schema written by :func:`save_schema` (YAML or JSON), possibly hand-edited.

    Args:
        path: The schema file (``.json`` is read as JSON, anything else as YAML).

    Returns:
        The schema.

    Raises:
        SchemaError: The file cannot be parsed or is malformed; the message
            names the file, the feature and the field.
        FileNotFoundError: No such file.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SchemaError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}"
        ) from exc
    return schema_from_dict(data, source=path)
