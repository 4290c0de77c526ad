"""jaxtx.validation: data statistics, schemas, anomalies, model evaluation and blessing.

A library usable without pipelines::

    from jaxtx.validation import compute_split_statistics, infer_schema, validate_statistics

Names are imported on first use (statistics needs Beam; the schema does not).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_EXPORTS = {
    # schema
    "ANOMALY_TYPES": "jaxtx.validation.schema",
    "DEFAULT_SEVERITIES": "jaxtx.validation.schema",
    "Comparator": "jaxtx.validation.schema",
    "Domain": "jaxtx.validation.schema",
    "FeatureSchema": "jaxtx.validation.schema",
    "Presence": "jaxtx.validation.schema",
    "SchemaError": "jaxtx.validation.schema",
    "SchemaSpec": "jaxtx.validation.schema",
    "infer_schema": "jaxtx.validation.schema",
    "load_schema": "jaxtx.validation.schema",
    "save_schema": "jaxtx.validation.schema",
    "schema_from_dict": "jaxtx.validation.schema",
    "schema_to_dict": "jaxtx.validation.schema",
    # statistics
    "GenerateStatistics": "jaxtx.validation.statistics",
    "StatisticsFormatError": "jaxtx.validation.statistics",
    "StatsOptions": "jaxtx.validation.statistics",
    "compute_split_statistics": "jaxtx.validation.statistics",
    "load_statistics": "jaxtx.validation.statistics",
    "merge_statistics": "jaxtx.validation.statistics",
    "save_statistics": "jaxtx.validation.statistics",
    "statistics_from_table": "jaxtx.validation.statistics",
    # anomalies
    "Anomaly": "jaxtx.validation.anomalies",
    "failing": "jaxtx.validation.anomalies",
    "load_anomalies": "jaxtx.validation.anomalies",
    "save_anomalies": "jaxtx.validation.anomalies",
    "validate_statistics": "jaxtx.validation.anomalies",
    "validate_file": "jaxtx.validation.validate_file",
    # model evaluation, fairness, blessing
    "evaluate": "jaxtx.validation.evaluation",
    "attach_fairness": "jaxtx.validation.fairness",
    "fairness_indicators": "jaxtx.validation.fairness",
    "ChangeThreshold": "jaxtx.validation.blessing",
    "MetricThreshold": "jaxtx.validation.blessing",
    "bless": "jaxtx.validation.blessing",
    "lookup_metric": "jaxtx.validation.blessing",
    # reports
    "render_statistics_html": "jaxtx.validation.stats_report",
    "render_anomalies_html": "jaxtx.validation.anomalies_report",
    "render_evaluation_html": "jaxtx.validation.eval_report",
}

__all__ = [
    "ANOMALY_TYPES",
    "DEFAULT_SEVERITIES",
    "Anomaly",
    "ChangeThreshold",
    "Comparator",
    "Domain",
    "FeatureSchema",
    "GenerateStatistics",
    "MetricThreshold",
    "Presence",
    "SchemaError",
    "SchemaSpec",
    "StatisticsFormatError",
    "StatsOptions",
    "attach_fairness",
    "bless",
    "compute_split_statistics",
    "evaluate",
    "failing",
    "fairness_indicators",
    "infer_schema",
    "load_anomalies",
    "load_schema",
    "load_statistics",
    "lookup_metric",
    "merge_statistics",
    "render_anomalies_html",
    "render_evaluation_html",
    "render_statistics_html",
    "save_anomalies",
    "save_schema",
    "save_statistics",
    "schema_from_dict",
    "schema_to_dict",
    "statistics_from_table",
    "validate_file",
    "validate_statistics",
]

if TYPE_CHECKING:
    from .anomalies import (
        Anomaly,
        failing,
        load_anomalies,
        save_anomalies,
        validate_statistics,
    )
    from .anomalies_report import render_anomalies_html
    from .blessing import ChangeThreshold, MetricThreshold, bless, lookup_metric
    from .eval_report import render_evaluation_html
    from .evaluation import evaluate
    from .fairness import attach_fairness, fairness_indicators
    from .schema import (
        ANOMALY_TYPES,
        DEFAULT_SEVERITIES,
        Comparator,
        Domain,
        FeatureSchema,
        Presence,
        SchemaError,
        SchemaSpec,
        infer_schema,
        load_schema,
        save_schema,
        schema_from_dict,
        schema_to_dict,
    )
    from .statistics import (
        GenerateStatistics,
        StatisticsFormatError,
        StatsOptions,
        compute_split_statistics,
        load_statistics,
        merge_statistics,
        save_statistics,
        statistics_from_table,
    )
    from .stats_report import render_statistics_html
    from .validate_file import validate_file


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxtx.validation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
