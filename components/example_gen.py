"""ExampleGen: ingest CSV, Parquet or JSON Lines into Parquet splits with Beam."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from jaxtx.data import SplitConfig, ingest
from jaxtx.data.spans import resolve_span

from ._artifacts import Examples, Output
from ._component import component

__all__ = ["ExampleGen"]


def _input_fingerprint(params: Mapping[str, Any]) -> str:
    """Fingerprint the files the parameters resolve to (path, size, mtime), as TFX does."""
    h = hashlib.sha256()
    try:
        resolved = resolve_span(params["input_pattern"], params.get("span"))
    except (OSError, ValueError) as e:  # the run itself will report it properly
        return f"unresolved:{e}"
    for f in resolved.files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if params.get("schema_file"):
        with open(params["schema_file"], "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _arrow_schema_from_file(path: str) -> pa.Schema:
    """A schema file (jaxtx YAML/JSON from SchemaGen) -> the Arrow types to read with."""
    from jaxtx.validation.schema import load_schema

    types = {
        "INT": pa.int64(),
        "FLOAT": pa.float64(),
        "STRING": pa.string(),
        "BYTES": pa.binary(),
        "BOOL": pa.bool_(),
    }
    schema = load_schema(path)
    return pa.schema([pa.field(f.name, types[f.type]) for f in schema.features])


@component(external_fingerprint=_input_fingerprint)
def ExampleGen(
    examples: Output[Examples],
    *,
    input_pattern: str,
    span: int | str = "latest",
    input_format: str = "auto",
    split_names: list[str] | None = None,
    split_ratios: list[int] | None = None,
    partition_feature: str | None = None,
    schema_file: str | None = None,
    csv_delimiter: str = ",",
    num_shards: int | None = None,
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Read raw data into Parquet shards per split, quarantining malformed rows.

    Args:
      input_pattern: a file, glob or directory; may carry ``{SPAN}``,
        ``{YYYY}{MM}{DD}`` and ``{VERSION}`` placeholders.
      span: ``"latest"``, ``"latest-1"`` (the span before), an int, or ``"A:B"``.
      input_format: ``auto`` (by extension), ``csv``, ``parquet`` or ``jsonl``.
      split_names: default ``["train", "eval"]``.
      split_ratios: hash buckets per split, default ``[2, 1]``.
      partition_feature: rows with equal values of this column share a split.
      schema_file: read columns with the types of this schema (else inferred).
      csv_delimiter: CSV field separator.
      num_shards: Parquet files per split (default: by size).
      beam_options: standard Beam flags, e.g. ``["--runner=SparkRunner", ...]``.
    """
    resolved = resolve_span(input_pattern, span)
    splits = SplitConfig(
        names=tuple(split_names or ("train", "eval")),
        buckets=tuple(split_ratios or (2, 1)),
        partition_feature=partition_feature,
    )
    arrow_schema = _arrow_schema_from_file(schema_file) if schema_file else None
    result = ingest(
        resolved.files,
        str(examples.path),
        input_format=input_format,
        splits=splits,
        schema=arrow_schema,
        csv_delimiter=csv_delimiter,
        beam_options=beam_options,
        num_shards=num_shards,
    )
    examples.properties.update(
        split_names=list(splits.names),
        split_counts=dict(result.split_counts),
        num_read=result.num_read,
        num_written=result.num_written,
        num_rejected=result.num_rejected,
        span=resolved.span,
        spans=list(resolved.spans),
        version=resolved.version,
        input_files=list(resolved.files),
        arrow_schema={f.name: str(f.type) for f in result.schema},
    )
    metrics = {
        "num_read": result.num_read,
        "num_written": result.num_written,
        "num_rejected": result.num_rejected,
    }
    metrics.update({f"rows.{k}": v for k, v in result.split_counts.items()})
    return metrics
