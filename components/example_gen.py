"""ExampleGen: ingest CSV, Parquet or JSON Lines into Parquet splits with Beam."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from jaxtx.data import CsvOptions, ResolvedInput, SplitConfig, ingest
from jaxtx.data.spans import resolve_span

from ._artifacts import Examples, Output
from ._component import component

__all__ = ["ExampleGen"]


def _input_fingerprint(params: Mapping[str, Any]) -> str:
    """Fingerprint the files the parameters resolve to (path, size, mtime), as TFX does."""
    h = hashlib.sha256()
    try:
        resolved = _resolve(
            params.get("input_pattern"), params.get("split_patterns"), params.get("span")
        )
    except (OSError, ValueError) as e:  # the run itself will report it properly
        return f"unresolved:{e}"
    for f in sorted({f for r in resolved.values() for f in r.files}):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if params.get("schema_file"):
        with open(params["schema_file"], "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _resolve(
    input_pattern: str | None, split_patterns: Mapping[str, str] | None, span: int | str | None
) -> dict[str | None, ResolvedInput]:
    """Resolve the input pattern (key None) or each split's pattern, with one span for all."""
    if (input_pattern is None) == (not split_patterns):
        raise ValueError(
            "ExampleGen: give either input_pattern (hash splits) or split_patterns "
            "({split name: pattern}, fixed splits), not both or neither."
        )
    if not split_patterns:
        return {None: resolve_span(input_pattern, span)}
    resolved = {name: resolve_span(pattern, span) for name, pattern in split_patterns.items()}
    spans = {name: r.spans for name, r in resolved.items() if r.spans}
    if len(set(spans.values())) > 1:
        raise ValueError(
            f"ExampleGen: the split patterns resolve different spans {spans}; give each "
            "split the same spans (or pass span=)."
        )
    return resolved


def _csv_options(
    header: bool,
    column_names: list[str] | None,
    delimiter: str,
    quote_char: str | None,
    escape_char: str | None,
    null_values: list[str] | None,
    trim_whitespace: bool,
    skip_rows: int,
    comment_prefix: str | None,
    encoding: str | None,
) -> CsvOptions:
    """The library's CSV dialect from the component's flat parameters."""
    return CsvOptions(
        header=header,
        column_names=tuple(column_names) if column_names else None,
        delimiter=delimiter,
        quote_char=quote_char,
        escape_char=escape_char,
        null_values=tuple(null_values or ()),
        trim_whitespace=trim_whitespace,
        skip_rows=skip_rows,
        comment_prefix=comment_prefix,
        encoding=encoding,
    )


def _with_span(inputs: Mapping[str | None, ResolvedInput]) -> ResolvedInput:
    """The span/version of fixed splits: those of the patterns that have spans."""
    with_spans = [r for r in inputs.values() if r.spans] or list(inputs.values())
    return with_spans[0]


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
    input_pattern: str | None = None,
    split_patterns: dict[str, str] | None = None,
    span: int | str = "latest",
    input_format: str = "auto",
    split_names: list[str] | None = None,
    split_ratios: list[int] | None = None,
    partition_feature: str | None = None,
    schema_file: str | None = None,
    csv_delimiter: str = ",",
    csv_header: bool = True,
    column_names: list[str] | None = None,
    csv_quote_char: str | None = '"',
    csv_escape_char: str | None = None,
    null_values: list[str] | None = None,
    trim_whitespace: bool = False,
    skip_rows: int = 0,
    comment_prefix: str | None = None,
    encoding: str | None = None,
    num_shards: int | None = None,
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Read raw data into Parquet shards per split, quarantining malformed rows.

    Args:
      input_pattern: a file, glob or directory, hash-split into ``split_names``;
        may carry ``{SPAN}``, ``{YYYY}{MM}{DD}`` and ``{VERSION}`` placeholders.
      split_patterns: fixed splits instead: split name -> pattern (as
        ``input_pattern``), e.g. ``{"train": "data/train-*.csv", "eval":
        "data/test.csv"}``; every pattern with a span must resolve the same spans.
      span: ``"latest"``, ``"latest-1"`` (the span before), an int, or ``"A:B"``.
      input_format: ``auto`` (by extension), ``csv``, ``parquet`` or ``jsonl``;
        set it to read files of any other extension (``.data``, ``.txt``).
      split_names: hash splits, default ``["train", "eval"]``.
      split_ratios: hash buckets per split, default ``[2, 1]``.
      partition_feature: rows with equal values of this column share a split.
      schema_file: read columns with the types of this schema (else inferred).
      csv_delimiter: CSV field separator.
      csv_header: whether the first CSV line holds the column names.
      column_names: CSV column names (for headerless files;
        with a header they replace its names; default ``f0, f1...``).
      csv_quote_char: quoting character, or None for no quoting.
      csv_escape_char: escaping character inside values, or None.
      null_values: texts meaning "missing" besides the empty field
        (e.g. ``["?", "NA", "NULL"]``).
      trim_whitespace: remove spaces around values (``" Private"``).
      skip_rows: lines to skip before the header (or the data).
      comment_prefix: skip lines starting with this text (e.g. ``"#"``).
      encoding: the files' text encoding (e.g. ``"latin-1"``); default UTF-8.
      num_shards: Parquet files per split (default: one per group of input files
        of 64 MiB or more, written where the group is read).
      beam_options: standard Beam flags, e.g. ``["--runner=SparkRunner", ...]``.
    """
    inputs = _resolve(input_pattern, split_patterns, span)
    splits = SplitConfig(
        names=tuple(split_names or ("train", "eval")),
        buckets=tuple(split_ratios or (2, 1)),
        partition_feature=partition_feature,
    )
    csv = _csv_options(
        csv_header,
        column_names,
        csv_delimiter,
        csv_quote_char,
        csv_escape_char,
        null_values,
        trim_whitespace,
        skip_rows,
        comment_prefix,
        encoding,
    )
    arrow_schema = _arrow_schema_from_file(schema_file) if schema_file else None
    files = inputs[None].files if None in inputs else {n: r.files for n, r in inputs.items()}
    result = ingest(
        files,
        str(examples.path),
        input_format=input_format,
        splits=splits,
        schema=arrow_schema,
        csv=csv,
        beam_options=beam_options,
        num_shards=num_shards,
    )
    resolved = list(inputs.values())[-1] if None in inputs else _with_span(inputs)
    examples.properties.update(
        split_names=list(result.split_counts),
        split_counts=dict(result.split_counts),
        num_read=result.num_read,
        num_written=result.num_written,
        num_rejected=result.num_rejected,
        span=resolved.span,
        spans=list(resolved.spans),
        version=resolved.version,
        input_files=list(result.input_files),
        arrow_schema={f.name: str(f.type) for f in result.schema},
    )
    metrics = {
        "num_read": result.num_read,
        "num_written": result.num_written,
        "num_rejected": result.num_rejected,
    }
    metrics.update({f"rows.{k}": v for k, v in result.split_counts.items()})
    return metrics
