"""Validate a data file against a schema without a pipeline (``jaxtx validate``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .anomalies import Anomaly, validate_statistics
from .anomalies_report import render_anomalies_html
from .schema import load_schema
from .statistics import statistics_from_table

__all__ = ["validate_file"]


def validate_file(
    data: str,
    schema_path: str,
    *,
    input_format: str = "auto",
    report_path: str | None = None,
) -> tuple[list[Anomaly], str | None]:
    """Read ``data`` as ExampleGen would, compute statistics, check them against a schema.

    Rows that cannot be read at all (wrong field count, bad encoding) are
    reported as one ``MALFORMED_ROWS`` anomaly (severity fail) naming the first
    few with file and line.

    Args:
      data: a CSV, Parquet or JSON Lines file, a glob or a directory.
      schema_path: a schema YAML/JSON file.
      input_format: ``auto``, ``csv``, ``parquet`` or ``jsonl``.
      report_path: also write an HTML report there.

    Returns:
      The anomalies, and the report's path (or None).
    """
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxtx.data import SplitConfig, ingest
    from jaxtx.data.spans import resolve_input

    schema = load_schema(schema_path)
    files = resolve_input(data).files
    with tempfile.TemporaryDirectory(prefix="jaxtx-validate-") as tmp:
        result = ingest(
            files, tmp, input_format=input_format, splits=SplitConfig(names=("data",), buckets=(1,))
        )
        parts = sorted(Path(tmp, "data", "data").glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
        rejected = []
        for q in sorted(Path(tmp, "quarantine").glob("*.jsonl")):
            rejected += [json.loads(line) for line in q.read_text().splitlines() if line.strip()]
    anomalies: list[Anomaly] = []
    if rejected:
        first = "; ".join(
            f"{r.get('source')}:{r.get('line')}: {r.get('reason')}" for r in rejected[:3]
        )
        anomalies.append(
            Anomaly(
                feature="<rows>",
                type="MALFORMED_ROWS",
                severity="fail",
                description=f"{result.num_rejected} of {result.num_read} rows could not be read: {first}",
                expected="every row parses",
                found=f"{result.num_rejected} malformed rows",
            )
        )
    if table is not None:
        anomalies += validate_statistics(statistics_from_table(table), schema, split=None)
    if report_path:
        Path(report_path).write_text(
            render_anomalies_html(anomalies, title=f"{data} against {schema_path}", schema=schema),
            encoding="utf-8",
        )
    return anomalies, report_path
