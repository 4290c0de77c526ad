"""Validate a data file against a schema without a pipeline (``jaxtx validate``).

The verdict is the pipeline's: the file is read as ExampleGen reads it, the
statistics are StatisticsGen's, and the checks are ExampleValidator's
(:func:`jaxtx.validation.anomalies.validate_statistics` with exact counts,
and ``MALFORMED_ROWS`` for the rows that could not be read).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jaxtx.core.beam import BeamOptions
from jaxtx.data import CsvOptions, SplitConfig, ingest
from jaxtx.data.spans import resolve_input

from .anomalies import EXACT_COUNT_ROWS, Anomaly, malformed_rows, validate_statistics
from .anomalies_report import render_anomalies_html
from .schema import load_schema
from .statistics import statistics_from_table

__all__ = ["validate_file"]

#: Quarantine records read to name the first malformed rows.
_SHOWN_REJECTED = 3


def validate_file(
    data: str,
    schema_path: str,
    *,
    input_format: str = "auto",
    report_path: str | None = None,
    environment: str | None = None,
    csv: CsvOptions | None = None,
    max_malformed_fraction: float = 0.01,
    beam_options: BeamOptions = None,
) -> tuple[list[Anomaly], str | None]:
    """Read ``data`` as ExampleGen would, compute statistics, check them against a schema.

    Rows that cannot be read at all (wrong field count, bad encoding) are
    reported as one ``MALFORMED_ROWS`` anomaly naming the first few with file
    and line: ``fail`` above ``max_malformed_fraction`` of the rows, else ``warn``.

    Args:
      data: a CSV, Parquet or JSON Lines file, a glob or a directory.
      schema_path: a schema YAML/JSON file.
      input_format: ``auto``, ``csv``, ``parquet`` or ``jsonl``.
      report_path: also write an HTML report there.
      environment: check only the schema's features in this environment
        (e.g. ``SERVING`` for data without the label).
      csv: the CSV dialect (as for ExampleGen).
      max_malformed_fraction: fraction of malformed rows tolerated as a warning.
      beam_options: Beam flags or mapping for the read (``["--runner=dask",
        "--dask_client_address=..."]``; see ``jaxtx.core.beam``).

    Returns:
      The anomalies, and the report's path (or None).
    """
    schema = load_schema(schema_path)
    files = resolve_input(data).files
    with tempfile.TemporaryDirectory(prefix="jaxtx-validate-") as tmp:
        result = ingest(
            files,
            tmp,
            input_format=input_format,
            splits=SplitConfig(names=("data",), buckets=(1,)),
            csv=csv,
            beam_options=beam_options,
        )
        parts = sorted(Path(tmp, "data", "data").glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
        rejected = _first_rejected(sorted(Path(tmp, "quarantine").glob("*.jsonl")))
    anomalies: list[Anomaly] = []
    bad_rows = malformed_rows(
        result.num_read,
        result.num_rejected,
        rejected,
        schema=schema,
        max_fraction=max_malformed_fraction,
    )
    if bad_rows is not None:
        anomalies.append(bad_rows)
    if table is not None:
        exact = table.num_rows <= EXACT_COUNT_ROWS
        anomalies += validate_statistics(
            statistics_from_table(table),
            schema,
            split=None,
            environment=environment,
            values=(lambda name: table.column(name)) if exact else None,
        )
    if report_path:
        Path(report_path).write_text(
            render_anomalies_html(anomalies, title=f"{data} against {schema_path}", schema=schema),
            encoding="utf-8",
        )
    return anomalies, report_path


def _first_rejected(paths: list[Path], read: int = 10_000) -> list[dict[str, Any]]:
    """The first quarantine records by (source, line), whatever order they were written
    in, as ExampleValidator picks them (at most the first ``read`` lines are read)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
                if len(out) >= read:
                    break
    out.sort(key=lambda r: (str(r.get("source")), int(r.get("line") or 0)))
    return out[:_SHOWN_REJECTED]
