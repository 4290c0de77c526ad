"""ExampleValidator: anomalies against a schema, drift against a baseline, skew against serving data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxtx.validation.anomalies import Anomaly, failing, save_anomalies, validate_statistics
from jaxtx.validation.anomalies_report import render_anomalies_html
from jaxtx.validation.statistics import merge_statistics

from ._artifacts import Anomalies, Artifact, Output, Schema, Statistics
from ._component import component

__all__ = ["ExampleValidator"]


def _verdict(outputs: Mapping[str, Artifact]) -> str | None:
    art = outputs["anomalies"]
    found = [a for a in art.read_json("anomalies.json") if a["severity"] == "fail"]
    if not found:
        return None
    listed = "; ".join(
        f"feature {a['feature']!r} ({a.get('split') or 'all splits'}): {a['type']}: {a['description']}"
        for a in found[:5]
    )
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    report = art.file("reports/anomalies.html")
    return (
        f"{len(found)} failing anomal{'y' if len(found) == 1 else 'ies'}: {listed}{more}. "
        f"Report: {report}. Fix the data, or curate the schema if the change is intended "
        "(severity 'warn' lets a run continue)."
    )


def _merged(stats: Statistics) -> dict[str, Any]:
    docs = [stats.split(s) for s in stats.split_names]
    return docs[0] if len(docs) == 1 else merge_statistics(docs)


@component(verdict=_verdict)
def ExampleValidator(
    statistics: Statistics,
    schema: Schema,
    anomalies: Output[Anomalies],
    baseline_statistics: Statistics | None = None,
    serving_statistics: Statistics | None = None,
    *,
    splits: list[str] | None = None,
    skew_split: str = "train",
) -> dict[str, float]:
    """Check statistics against a schema and report typed anomalies.

    A ``fail`` anomaly stops a pipeline after the report is written; the error
    names the feature, the anomaly and the report's path.

    Args:
      statistics: statistics of the examples to check.
      schema: the expected schema.
      baseline_statistics: statistics of the previous span: drift is checked
        for features whose schema sets ``drift_comparator`` (same split name
        when the baseline has it, else all its splits merged).
      serving_statistics: statistics of serving data: skew of ``skew_split``
        against it (all serving splits merged) for features with
        ``skew_comparator``.
      splits: which splits to check (default: all).
      skew_split: the training split compared with serving data.
    """
    parsed = schema.load()
    chosen = splits or statistics.split_names
    found: list[Anomaly] = []
    baseline_all = _merged(baseline_statistics) if baseline_statistics else None
    serving_all = _merged(serving_statistics) if serving_statistics else None
    for split in chosen:
        previous = None
        if baseline_statistics is not None:
            previous = (
                baseline_statistics.split(split)
                if split in baseline_statistics.split_names
                else baseline_all
            )
        found += validate_statistics(
            statistics.split(split),
            parsed,
            split=split,
            previous_stats=previous,
            serving_stats=serving_all if split == skew_split else None,
        )
    save_anomalies(found, str(anomalies.path / "anomalies.json"))
    title = f"Anomalies in {', '.join(chosen)} ({len(failing(found))} failing, {len(found)} in all)"
    (anomalies.reports_dir / "anomalies.html").write_text(
        render_anomalies_html(found, title=title, schema=parsed), encoding="utf-8"
    )
    n_fail = len(failing(found))
    anomalies.properties.update(
        splits=list(chosen),
        num_anomalies=len(found),
        num_failing=n_fail,
        num_warnings=len(found) - n_fail,
        types=sorted({a.type for a in found}),
    )
    return {"anomalies": len(found), "failing": n_fail}
