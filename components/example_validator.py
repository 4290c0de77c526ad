"""ExampleValidator: anomalies against a schema, drift against a baseline, skew against serving data."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from jaxtx.validation.anomalies import (
    EXACT_COUNT_ROWS,
    Anomaly,
    failing,
    malformed_rows,
    save_anomalies,
    validate_statistics,
)
from jaxtx.validation.anomalies_report import render_anomalies_html
from jaxtx.validation.statistics import merge_statistics

from ._artifacts import Anomalies, Artifact, Examples, Output, Schema, Statistics
from ._component import RunContext, component

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


def _quarantine_records(examples: Examples, limit: int = 3) -> list[dict[str, Any]]:
    """The first records of ExampleGen's quarantine by (source, line), whatever order
    the runner wrote them in (at most the first 10,000 lines are read)."""
    out: list[dict[str, Any]] = []
    for rel in sorted(f for f in examples.list_files() if f.startswith("quarantine/")):
        for line in examples.read_text(rel).splitlines():
            if line.strip():
                out.append(json.loads(line))
            if len(out) >= 10_000:
                break
    out.sort(key=lambda r: (str(r.get("source")), int(r.get("line") or 0)))
    return out[:limit]


def _examples_checks(
    examples: Examples | None, parsed: Any, max_malformed_fraction: float
) -> tuple[list[Anomaly], Callable[[str], Callable[[str], Any] | None]]:
    """MALFORMED_ROWS from ExampleGen's counts, and per split a reader of exact values."""
    if examples is None:
        return [], lambda split: None
    props = examples.properties
    found = malformed_rows(
        int(props.get("num_read") or 0),
        int(props.get("num_rejected") or 0),
        _quarantine_records(examples),
        schema=parsed,
        max_fraction=max_malformed_fraction,
    )
    counts = props.get("split_counts") or {}

    def values_of(split: str) -> Callable[[str], Any] | None:
        if split not in examples.split_names or counts.get(split, 0) > EXACT_COUNT_ROWS:
            return None

        def read(name: str) -> Any:
            table = examples.read(split, columns=[name])
            return None if table is None else table.column(name)

        return read

    return ([found] if found is not None else []), values_of


@component(verdict=_verdict)
def ExampleValidator(
    statistics: Statistics,
    schema: Schema,
    anomalies: Output[Anomalies],
    baseline_statistics: Statistics | None = None,
    serving_statistics: Statistics | None = None,
    examples: Examples | None = None,
    *,
    ctx: RunContext,
    splits: list[str] | None = None,
    skew_split: str = "train",
    environment: str | None = None,
    max_malformed_fraction: float = 0.01,
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
      examples: the examples the statistics describe: rows ExampleGen
        quarantined are reported as ``MALFORMED_ROWS``, and out-of-range counts
        are exact (splits up to ``EXACT_COUNT_ROWS`` rows), as ``jaxtx validate``.
      ctx: the run; its pipeline titles the report.
      splits: which splits to check (default: all).
      skew_split: the training split compared with serving data.
      environment: check only the schema's features in this environment
        (e.g. ``SERVING`` for data without the label).
      max_malformed_fraction: up to this fraction of quarantined rows,
        ``MALFORMED_ROWS`` is a warning; above it, it fails.
    """
    parsed = schema.load()
    chosen = splits or statistics.split_names
    found, values_of = _examples_checks(examples, parsed, max_malformed_fraction)
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
            environment=environment,
            values=values_of(split),
        )
    save_anomalies(found, str(anomalies.path / "anomalies.json"))
    title = ctx.title(
        f"Anomalies in {', '.join(chosen)} ({len(failing(found))} failing, {len(found)} in all)"
    )
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
