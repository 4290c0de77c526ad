"""Ingestion behind ExampleGen: CSV / Parquet / JSONL files to split Parquet shards.

One Apache Beam pipeline whose elements are ``pyarrow.RecordBatch``:

``ListFiles`` -> ``ReadFiles`` (record batches of each file) -> ``ConvertToSchema``
(cast every column to the target Arrow schema) -> ``AssignSplits`` (deterministic
hash split) -> ``WriteSplit[<name>]`` (Parquet shards) and ``WriteQuarantine``.

Output layout (docs/formats.md)::

    <output_dir>/data/<split>/part-NNNNN-of-MMMMM.parquet   one Arrow schema everywhere
    <output_dir>/quarantine/rejected-NNNNN-of-MMMMM.jsonl   {"source", "line", "reason", "raw"}

Every split directory holds at least one (possibly empty) Parquet file.

Conventions:

* CSV: the first line is the header. Every value is read as text and cast per
  column, so one bad value quarantines its row only. An unquoted empty field
  is missing (null) for every type; a quoted empty field (``""``) is the empty
  string in a string column and missing in any other column. Only empty fields
  are missing (``NA``, ``null``... are ordinary text). Numbers may carry
  surrounding spaces. A line whose fields are all empty (a blank line, or only
  delimiters) holds no example: it is skipped and not counted.
* JSONL: one JSON object per line; blank lines are skipped; ``null`` or an
  absent key is missing. A line that is not JSON, not an object, or holds a
  value of the wrong type is quarantined.
* Parquet: columns are matched by name and cast (safely) to the schema; a
  value that does not fit quarantines its row.
* ``line`` in the quarantine is the 1-based physical line of the row's first
  line (CSV, counting the header line and blank lines), the 1-based line
  (JSONL), or the 1-based row number, i.e. row index + 1 (Parquet).
* Without ``schema`` the column types are inferred from the first
  ``SAMPLE_ROWS`` rows of the first non-empty file (int64, float64, bool or
  string for text formats; the file's own types for Parquet). Files must then
  agree on their columns: a CSV/Parquet file with other columns is an error, a
  JSONL key outside the sample's keys quarantines its row. With ``schema``,
  other columns/keys are ignored and absent ones are null.
* ``num_read == num_written + num_rejected`` always; the counts come from the
  written files and are checked against the pipeline's metrics.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter

from jaxtx.core.beam import BeamOptions, pipeline_options

from .spans import InputNotFoundError, list_data_files

__all__ = [
    "BATCH_ROWS",
    "FORMATS",
    "SAMPLE_ROWS",
    "IngestError",
    "IngestExamples",
    "IngestResult",
    "SplitConfig",
    "detect_format",
    "infer_schema",
    "ingest",
    "row_hashes",
    "split_indices",
]

FORMATS = ("csv", "parquet", "jsonl")
#: Rows per record batch (Parquet, JSONL); CSV batches hold ``_CSV_BLOCK_BYTES`` of text.
BATCH_ROWS = 65_536
#: Rows of the first non-empty file used to infer the schema.
SAMPLE_ROWS = 10_000

METRICS_NAMESPACE = "jaxtx.ingest"
_CSV_BLOCK_BYTES = 6 << 20
_HEADER_BLOCK_BYTES = 1 << 20
_JSON_CHUNK_BYTES = 8 << 20
_JSON_BLOCK_BYTES = 1 << 20
_LINE = "__jaxtx_line__"
_META_SOURCE = b"jaxtx.source"
_META_FORMAT = b"jaxtx.format"
_META_DELIMITER = b"jaxtx.delimiter"
_REJECTED = "rejected"
_MAX_SHOWN = 200
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".zst", ".lz4")


class IngestError(ValueError):
    """Input that cannot be ingested: missing, empty, or inconsistent."""


@dataclass(frozen=True)
class SplitConfig:
    """How examples are divided into splits.

    Attributes:
      names: split names (also directory names), unique.
      buckets: relative size of each split, e.g. ``(2, 1)`` for 2:1; positive ints.
      partition_feature: if set, the split of a row depends only on this
        column's value, so all rows sharing a value land in one split.
    """

    names: tuple[str, ...] = ("train", "eval")
    buckets: tuple[int, ...] = (2, 1)
    partition_feature: str | None = None

    def __post_init__(self) -> None:
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        buckets = tuple(self.buckets)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "buckets", buckets)
        if not names:
            raise IngestError("SplitConfig.names is empty; give at least one split name.")
        bad = [n for n in names if not isinstance(n, str) or not _SPLIT_NAME.fullmatch(n)]
        if bad:
            raise IngestError(
                f"Invalid split name(s) {bad!r}: use letters, digits, '_', '-' or '.', "
                "starting with a letter or digit."
            )
        if len(set(names)) != len(names):
            raise IngestError(f"Split names must be unique, got {list(names)!r}.")
        if len(buckets) != len(names):
            raise IngestError(
                f"SplitConfig has {len(names)} names {list(names)!r} but {len(buckets)} "
                f"buckets {list(buckets)!r}; give one bucket count per split."
            )
        if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in buckets):
            raise IngestError(
                f"Split buckets must be positive integers (a ratio such as (2, 1)), "
                f"got {list(buckets)!r}."
            )
        if self.partition_feature is not None and (
            not isinstance(self.partition_feature, str) or not self.partition_feature
        ):
            raise IngestError(
                f"partition_feature must be a column name or None, got {self.partition_feature!r}."
            )


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` wrote.

    Attributes:
      split_counts: rows written per split (from the Parquet footers).
      num_read: rows read; always ``num_written + num_rejected``.
      num_written: rows written over all splits.
      num_rejected: rows in the quarantine files.
      schema: the Arrow schema of every written shard.
      input_files: the files read, sorted.
      quarantine_files: the quarantine JSONL files (possibly empty files).
      split_files: the Parquet shards of each split.
    """

    split_counts: dict[str, int]
    num_read: int
    num_written: int
    num_rejected: int
    schema: pa.Schema
    input_files: tuple[str, ...]
    quarantine_files: tuple[str, ...]
    split_files: dict[str, tuple[str, ...]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- API


def ingest(
    input_files: Sequence[str],
    output_dir: str,
    *,
    input_format: str = "auto",
    splits: SplitConfig = SplitConfig(),
    schema: pa.Schema | None = None,
    csv_delimiter: str = ",",
    beam_options: BeamOptions = None,
    num_shards: int | None = None,
    seed: str = "",
) -> IngestResult:
    """Read input files, convert them to one schema, split, and write Parquet.

    Args:
      input_files: files, globs or directories (all data files below them).
      output_dir: artifact directory; its ``data/`` and ``quarantine/``
        subdirectories are replaced.
      input_format: ``auto`` (by extension, per file), ``csv``, ``parquet`` or ``jsonl``.
      splits: split names, ratio and optional partition feature.
      schema: target Arrow schema; inferred from a sample when None.
      csv_delimiter: CSV field delimiter (``.tsv`` files use a tab when this is ``,``).
      beam_options: Beam flags or mapping (see ``jaxtx.components._beam``).
      num_shards: Parquet shards per split; None lets the runner decide.
      seed: mixed into the split hash; another seed gives another split.

    Returns:
      Counts, schema and written files.

    Raises:
      IngestError: a missing path, no rows at all, an unknown format, columns
        that differ between files, or an invalid configuration.
    """
    files = _expand_inputs(input_files)
    formats = {f: detect_format(f, input_format) for f in files}
    delimiters = {f: _delimiter_for(f, csv_delimiter) for f in files if formats[f] == "csv"}
    _check_num_shards(num_shards)
    strict = schema is None
    if schema is None:
        schema = infer_schema(files, input_format=input_format, csv_delimiter=csv_delimiter)
        _check_same_columns(files, formats, delimiters, schema)
    else:
        schema = _check_schema(schema, set(formats.values()))
        _first_file_with_rows(files, formats, delimiters)
    if splits.partition_feature is not None and splits.partition_feature not in schema.names:
        raise IngestError(
            f"partition_feature {splits.partition_feature!r} is not a column; "
            f"columns: {', '.join(schema.names)}."
        )

    if _is_local(output_dir):
        output_dir = os.path.abspath(output_dir.removeprefix("file://"))
    _clear_outputs(output_dir)
    transform = IngestExamples(
        files,
        output_dir,
        formats=formats,
        delimiters=delimiters,
        schema=schema,
        splits=splits,
        strict_fields=strict,
        num_shards=num_shards,
        seed=seed,
    )
    pipeline = beam.Pipeline(options=pipeline_options(beam_options))
    _ = pipeline | "IngestExamples" >> transform
    result = pipeline.run()
    result.wait_until_finish()
    return _collect_result(result, output_dir, splits.names, schema, files)


class IngestExamples(beam.PTransform):
    """Read, convert, split and write examples (applied to a pipeline root).

    Returns a dict of PCollections of written file names: ``data/<split>`` for
    each split and ``quarantine``.
    """

    def __init__(
        self,
        files: Sequence[str],
        output_dir: str,
        *,
        formats: Mapping[str, str],
        delimiters: Mapping[str, str],
        schema: pa.Schema,
        splits: SplitConfig,
        strict_fields: bool,
        num_shards: int | None,
        seed: str,
    ) -> None:
        """Configure the transform.

        Args:
          files: input files.
          output_dir: artifact directory.
          formats: format of each file.
          delimiters: CSV delimiter of each CSV file.
          schema: the target schema.
          splits: split configuration.
          strict_fields: quarantine JSONL rows with keys outside ``schema``.
          num_shards: shards per split (None: runner decides).
          seed: split hash seed.
        """
        super().__init__()
        self._files = list(files)
        self._output_dir = output_dir
        self._formats = dict(formats)
        self._delimiters = dict(delimiters)
        self._schema = schema
        self._splits = splits
        self._strict = strict_fields
        self._num_shards = num_shards or 0
        self._seed = seed

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        """Build the pipeline.

        Args:
          pbegin: the pipeline root.

        Returns:
          Written file names per output.
        """
        read = (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ReadFiles"
            >> beam.ParDo(
                _ReadFileFn(self._formats, self._delimiters, self._schema, self._strict)
            ).with_outputs(_REJECTED, main="batches")
        )
        converted = read.batches | "ConvertToSchema" >> beam.ParDo(
            _ConvertFn(self._schema)
        ).with_outputs(_REJECTED, main="examples")
        split = converted.examples | "AssignSplits" >> beam.ParDo(
            _SplitFn(self._splits, self._seed)
        ).with_outputs(*self._splits.names)

        outputs: dict[str, beam.PCollection] = {}
        for name in self._splits.names:
            prefix = _join(self._output_dir, "data", name, "part")
            outputs[f"data/{name}"] = (
                split[name]
                | f"ToTable[{name}]" >> beam.Map(_to_table)
                | f"WriteSplit[{name}]"
                >> beam.io.WriteToParquetBatched(
                    prefix,
                    schema=self._schema,
                    codec="snappy",
                    file_name_suffix=".parquet",
                    num_shards=self._num_shards,
                    shard_name_template="-SSSSS-of-NNNNN",
                )
            )
        outputs["quarantine"] = (
            (read[_REJECTED], converted[_REJECTED])
            | "MergeRejected" >> beam.Flatten()
            | "WriteQuarantine"
            >> beam.io.WriteToText(
                _join(self._output_dir, "quarantine", "rejected"),
                file_name_suffix=".jsonl",
                shard_name_template="-SSSSS-of-NNNNN",
            )
        )
        return outputs


def detect_format(path: str, input_format: str = "auto") -> str:
    """The format of one input file.

    Args:
      path: the file.
      input_format: ``auto`` to decide by extension, or a format to force.

    Returns:
      ``csv``, ``parquet`` or ``jsonl``.

    Raises:
      IngestError: unknown format name or extension.
    """
    if input_format != "auto":
        if input_format not in FORMATS:
            raise IngestError(
                f"Unknown input_format {input_format!r}; use auto, {', '.join(FORMATS)}."
            )
        return input_format
    name = _strip_compression(os.path.basename(path).lower())
    fmt = _EXTENSIONS.get(os.path.splitext(name)[1])
    if fmt is None:
        raise IngestError(
            f"Cannot tell the format of {path!r} from its extension; pass input_format= "
            f"({', '.join(FORMATS)}) or name files {', '.join(sorted(_EXTENSIONS))}."
        )
    return fmt


def infer_schema(
    files: Sequence[str],
    *,
    input_format: str = "auto",
    csv_delimiter: str = ",",
    sample_rows: int = SAMPLE_ROWS,
) -> pa.Schema:
    """Infer the target schema from the first rows of the first non-empty file.

    Args:
      files: input files (not globs), in order.
      input_format: as for :func:`ingest`.
      csv_delimiter: as for :func:`ingest`.
      sample_rows: rows to look at.

    Returns:
      CSV/JSONL: int64, float64, bool or string per column (nested JSON values
      keep the type pyarrow infers); Parquet: the file's types (dictionaries
      decoded).

    Raises:
      IngestError: no file has a row, or a JSONL column mixes kinds of values.
    """
    formats = {f: detect_format(f, input_format) for f in files}
    delimiters = {f: _delimiter_for(f, csv_delimiter) for f in files if formats[f] == "csv"}
    path = _first_file_with_rows(files, formats, delimiters)
    fmt = formats[path]
    if fmt == "parquet":
        return _parquet_schema(path)
    if fmt == "csv":
        return _infer_csv(path, delimiters[path], sample_rows)
    return _infer_jsonl(path, sample_rows)


def row_hashes(
    batch: pa.RecordBatch, columns: Sequence[str] | None = None, seed: str = ""
) -> np.ndarray:
    """Deterministic 64-bit hash of each row's content.

    Depends only on the values (and their Arrow types) of ``columns``, never on
    batch boundaries, file order, process or platform.

    Args:
      batch: the rows.
      columns: columns to hash (all when None).
      seed: mixed into every hash.

    Returns:
      A ``uint64`` array with one hash per row.
    """
    names = list(batch.schema.names) if columns is None else list(columns)
    seed_value = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little")
    h = np.full(batch.num_rows, seed_value, dtype=np.uint64)
    for name in names:
        h = _mix((h ^ _column_hash(batch.column(name))) * _M1)
    return h


def split_indices(batch: pa.RecordBatch, splits: SplitConfig, seed: str = "") -> np.ndarray:
    """Split index (into ``splits.names``) of each row.

    Args:
      batch: rows with the target schema.
      splits: the split configuration.
      seed: split hash seed.

    Returns:
      An int array, ``bucket = hash % sum(buckets)`` mapped onto the ratio.
    """
    columns = None if splits.partition_feature is None else [splits.partition_feature]
    buckets = row_hashes(batch, columns, seed) % np.uint64(sum(splits.buckets))
    bounds = np.cumsum(splits.buckets).astype(np.uint64)
    return np.searchsorted(bounds, buckets, side="right")


# ----------------------------------------------------------------------- Beam DoFns


class _ReadFileFn(beam.DoFn):
    """Read one file into raw record batches; rows that cannot be parsed are rejected."""

    def __init__(
        self,
        formats: Mapping[str, str],
        delimiters: Mapping[str, str],
        schema: pa.Schema,
        strict_fields: bool,
    ) -> None:
        self._formats = dict(formats)
        self._delimiters = dict(delimiters)
        self._schema = schema
        self._strict = strict_fields
        self._rows_read = Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._rows_rejected = Metrics.counter(METRICS_NAMESPACE, "rows_rejected")

    def process(self, path: str) -> Iterator[Any]:
        fmt = self._formats[path]
        if fmt == "csv":
            items = _read_csv(path, self._delimiters[path])
        elif fmt == "jsonl":
            items = _read_jsonl(path, self._schema, self._strict)
        else:
            items = _read_parquet(path, self._schema)
        for item in items:
            if isinstance(item, dict):
                self._rows_read.inc()
                self._rows_rejected.inc()
                yield beam.pvalue.TaggedOutput(_REJECTED, _dump(item))
            else:
                self._rows_read.inc(item.num_rows)
                yield item


class _ConvertFn(beam.DoFn):
    """Cast raw batches to the target schema; rows with values that do not fit are rejected."""

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema
        self._rows_rejected = Metrics.counter(METRICS_NAMESPACE, "rows_rejected")

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        converted, reasons = _convert_batch(batch, self._schema)
        if reasons:
            self._rows_rejected.inc(len(reasons))
            for record in _rejected_records(batch, reasons):
                yield beam.pvalue.TaggedOutput(_REJECTED, _dump(record))
        if converted.num_rows:
            yield converted


class _SplitFn(beam.DoFn):
    """Route each row to its split by a content hash."""

    def __init__(self, splits: SplitConfig, seed: str) -> None:
        self._splits = splits
        self._seed = seed
        self._written = {
            n: Metrics.counter(METRICS_NAMESPACE, f"rows_written[{n}]") for n in splits.names
        }

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        index = split_indices(batch, self._splits, self._seed)
        for i, name in enumerate(self._splits.names):
            mask = index == i
            count = int(mask.sum())
            if not count:
                continue
            self._written[name].inc(count)
            part = batch if count == batch.num_rows else batch.filter(pa.array(mask))
            yield beam.pvalue.TaggedOutput(name, part)


def _to_table(batch: pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([batch])


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


# ----------------------------------------------------------------------------- CSV


def _read_csv(
    path: str, delimiter: str, *, latin1: bool | None = None
) -> Iterator[pa.RecordBatch | dict[str, Any]]:
    """Raw batches (binary columns + line numbers) and rejected-row records of a CSV file.

    Args:
      path: the file.
      delimiter: field delimiter.
      latin1: read through latin-1 transcoding (needed when the file holds
        invalid UTF-8, whose malformed rows pyarrow cannot report otherwise);
        None decides by scanning the file.

    Yields:
      Record batches, then one dict per row with a wrong field count.
    """
    if latin1 is None:
        latin1 = not _is_utf8(path)
    names, arrow_names = _csv_header(path, delimiter, latin1=latin1)
    if names is None:
        return
    invalid: list[tuple[int, str, int]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text, row.actual_columns))
        return "skip"

    reader = _open_csv(path, delimiter, arrow_names, on_invalid, latin1=latin1)
    lines = _CsvLines(header_newlines=sum(n.count("\n") for n in names))
    try:
        for raw in reader:
            batch = pa.RecordBatch.from_arrays(
                [_restore_latin1(c) if latin1 else c for c in raw.columns], names=names
            )
            numbers = lines.for_batch(batch, invalid)
            batch, numbers = _drop_blank(batch, numbers)
            if batch.num_rows:
                yield _with_meta(batch, numbers, path, "csv", delimiter)
    except pa.ArrowInvalid as e:
        raise IngestError(
            f"{path}: the CSV cannot be parsed ({e}). Check quoting (an unclosed quote "
            "swallows the rest of the file) and the delimiter."
        ) from e
    finally:
        reader.close()
    for (_, text, actual), line in zip(invalid, lines.rejected_lines(invalid), strict=True):
        raw_text = text.encode("latin-1").decode("utf-8", "backslashreplace") if latin1 else text
        yield {
            "source": path,
            "line": line,
            "reason": f"expected {len(names)} fields (as in the header), found {actual}",
            "raw": raw_text,
        }


def _open_csv(
    path: str,
    delimiter: str,
    arrow_names: list[str],
    on_invalid: Callable[[Any], str],
    *,
    latin1: bool,
) -> pa_csv.CSVStreamingReader:
    """Streaming reader with every column as binary and exact row numbers."""
    return pa_csv.open_csv(
        _open_input(path),
        read_options=pa_csv.ReadOptions(
            use_threads=False,  # row numbers of invalid rows are only known single-threaded
            block_size=_CSV_BLOCK_BYTES,
            encoding="latin-1" if latin1 else "utf8",
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter=delimiter,
            newlines_in_values=True,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(arrow_names, pa.binary()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            check_utf8=False,
        ),
    )


def _csv_header(
    path: str, delimiter: str, *, latin1: bool | None = None
) -> tuple[list[str] | None, list[str]]:
    """Column names of a CSV file (None for a zero-byte file) and pyarrow's view of them.

    Args:
      path: the file.
      delimiter: field delimiter.
      latin1: as for :func:`_read_csv`; None decides from the first block.

    Returns:
      The names, and the names as pyarrow reports them (differs under latin-1).
    """
    if latin1 is None:
        latin1 = not _is_utf8(path, limit=2 * _HEADER_BLOCK_BYTES)
    try:
        reader = pa_csv.open_csv(
            _open_input(path),
            read_options=pa_csv.ReadOptions(
                use_threads=False,
                block_size=_HEADER_BLOCK_BYTES,
                encoding="latin-1" if latin1 else "utf8",
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                newlines_in_values=True,
                invalid_row_handler=lambda row: "skip",
            ),
            convert_options=pa_csv.ConvertOptions(check_utf8=False),
        )
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return None, []
        raise IngestError(f"{path}: cannot read the CSV header ({e}).") from e
    arrow_names = list(reader.schema.names)
    reader.close()
    names = arrow_names
    if latin1:
        try:
            names = [n.encode("latin-1").decode("utf-8") for n in arrow_names]
        except UnicodeDecodeError:
            raise IngestError(
                f"{path}: the header line is not valid UTF-8; re-encode the file as UTF-8."
            ) from None
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IngestError(f"{path}: duplicate column name(s) in the header: {dupes}.")
    if _LINE in names:
        raise IngestError(f"{path}: the column name {_LINE!r} is reserved.")
    return names, arrow_names


class _CsvLines:
    """Physical line numbers of CSV records.

    Records are numbered by pyarrow from 1 (the header); a record spans more
    than one physical line when a quoted value holds newlines. Rows with a
    wrong field count are reported (with their record number) by the invalid
    row handler before the batch holding the rows after them is produced.
    """

    def __init__(self, header_newlines: int) -> None:
        self._header_newlines = header_newlines
        self._accepted = 0
        self._accepted_newlines = 0
        self._events_records: list[np.ndarray] = []
        self._events_newlines: list[np.ndarray] = []
        self._rejected_numbers = np.zeros(0, dtype=np.int64)
        self._rejected_newlines = np.zeros(0, dtype=np.int64)

    def for_batch(self, batch: pa.RecordBatch, invalid: list[tuple[int, str, int]]) -> np.ndarray:
        """1-based physical line of each row of the next batch.

        Args:
          batch: the next batch read.
          invalid: ``(record number, text, field count)`` of the rejected rows so far.

        Returns:
          The line of each row of ``batch``.
        """
        numbers, newlines = self._rejected(invalid)
        k = self._accepted + np.arange(batch.num_rows, dtype=np.int64)
        # Data records start at 2; each rejected record before a row shifts its number.
        before = numbers - 2 - np.arange(len(numbers), dtype=np.int64)
        records = 2 + k + np.searchsorted(before, k, side="right")
        lines = records + self._header_newlines + self._accepted_newlines
        lines += _newlines_before(numbers, newlines, records)
        per_row = _newlines_per_row(batch)
        if per_row is not None:
            lines += np.cumsum(per_row) - per_row
            has = per_row > 0
            self._events_records.append(records[has])
            self._events_newlines.append(per_row[has])
            self._accepted_newlines += int(per_row.sum())
        self._accepted += batch.num_rows
        return lines

    def rejected_lines(self, invalid: list[tuple[int, str, int]]) -> list[int]:
        """1-based physical line of each rejected record (after all batches).

        Args:
          invalid: every rejected row of the file.

        Returns:
          The line of each, in order.
        """
        numbers, newlines = self._rejected(invalid)
        lines = numbers + self._header_newlines + _newlines_before(numbers, newlines, numbers)
        if self._events_records:
            records = np.concatenate(self._events_records)
            accepted = np.concatenate([[0], np.cumsum(np.concatenate(self._events_newlines))])
            lines += accepted[np.searchsorted(records, numbers, side="left")]
        return [int(x) for x in lines]

    def _rejected(self, invalid: list[tuple[int, str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Record numbers and newline counts of the rejected rows (cached)."""
        new = invalid[len(self._rejected_numbers) :]
        if new:
            numbers = np.fromiter((r[0] for r in new), np.int64, len(new))
            newlines = np.fromiter((r[1].count("\n") for r in new), np.int64, len(new))
            self._rejected_numbers = np.concatenate([self._rejected_numbers, numbers])
            self._rejected_newlines = np.concatenate([self._rejected_newlines, newlines])
        return self._rejected_numbers, self._rejected_newlines


def _newlines_before(numbers: np.ndarray, newlines: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Newlines inside the rejected records numbered below each of ``records``."""
    if not newlines.any():
        return np.zeros(len(records), dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(newlines)])
    return cumulative[np.searchsorted(numbers, records, side="left")]


def _newlines_per_row(batch: pa.RecordBatch) -> np.ndarray | None:
    """Newlines inside each row's values, or None when there are none."""
    total = None
    for col in batch.columns:
        data = col.buffers()[2] if col.null_count < len(col) else None
        if data is None or data.size == 0 or b"\n" not in data.to_pybytes():
            continue
        counts = pc.count_substring(col, "\n").fill_null(0).to_numpy().astype(np.int64)
        total = counts if total is None else total + counts
    return total


def _drop_blank(batch: pa.RecordBatch, lines: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """Remove rows whose fields are all empty (blank lines)."""
    if batch.num_columns == 0 or any(c.null_count == 0 for c in batch.columns):
        return batch, lines
    blank = pc.is_null(batch.column(0))
    for col in batch.columns[1:]:
        blank = pc.and_(blank, pc.is_null(col))
    keep = pc.invert(blank)
    if pc.all(keep).as_py():
        return batch, lines
    return batch.filter(keep), lines[keep.to_numpy(zero_copy_only=False)]


def _restore_latin1(col: pa.Array) -> pa.Array:
    """Undo the latin-1 -> UTF-8 transcoding of a binary column (original bytes)."""
    data = col.buffers()[2] if col.null_count < len(col) else None
    if data is None or data.to_pybytes().isascii():
        return col
    return pa.array(
        [None if v is None else v.decode("utf-8").encode("latin-1") for v in col.to_pylist()],
        pa.binary(),
    )


def _is_utf8(path: str, limit: int | None = None) -> bool:
    """Whether the file (or its first ``limit`` bytes) is valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    remaining = limit
    with _open_input(path) as stream:
        while chunk := stream.read(16 << 20 if remaining is None else min(16 << 20, remaining)):
            if remaining is not None:
                remaining -= len(chunk)
            if not (chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    return False
            if remaining == 0:
                return True
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _infer_csv(path: str, delimiter: str, sample_rows: int) -> pa.Schema:
    """Infer int64/float64/bool/string per column from the first rows of a CSV file."""
    batches = _sample_batches(_read_csv(path, delimiter), sample_rows)
    names, _ = _csv_header(path, delimiter)
    table = pa.Table.from_batches(batches) if batches else None
    fields = []
    for name in names or []:
        column = (
            table.column(name).combine_chunks() if table is not None else pa.array([], pa.binary())
        )
        fields.append(pa.field(name, _infer_text_type(column)))
    return pa.schema(fields)


#: A sampled column is typed numeric (or bool) when at most this fraction of its
#: non-empty values does not parse: one stray "forty" among ages must send that
#: row to quarantine, not turn the whole column into strings.
_TYPE_TOLERANCE = 0.005
_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?(([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$"


def _infer_text_type(column: pa.Array) -> pa.DataType:
    """The narrowest of int64, float64, bool, string that fits the values.

    "Fits" allows a small fraction (:data:`_TYPE_TOLERANCE`) of values that do
    not parse; those rows are quarantined when the column is converted.
    """
    values = column.drop_null()
    try:
        values = pc.cast(values, pa.string())
    except pa.ArrowInvalid:
        return pa.string()
    values = pc.utf8_trim_whitespace(values.filter(pc.not_equal(values, "")))
    n = len(values)
    if n == 0:
        return pa.string()
    allowed = int(n * _TYPE_TOLERANCE)
    lower = pc.utf8_lower(values)
    checks = (
        (pa.int64(), pc.match_substring_regex(values, _INT_RE)),
        (pa.float64(), pc.match_substring_regex(lower, _FLOAT_RE)),
        (pa.bool_(), pc.is_in(lower, pa.array(["true", "false"]))),
    )
    for candidate, ok in checks:
        bad = n - pc.sum(ok).as_py() if n else 0
        if bad <= allowed:
            if candidate == pa.int64() and bad == 0:
                try:  # digits that overflow int64 are floats
                    pc.cast(values, candidate)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
            return candidate
    return pa.string()


# ---------------------------------------------------------------------------- JSONL


def _read_jsonl(
    path: str, schema: pa.Schema, strict_fields: bool
) -> Iterator[pa.RecordBatch | dict[str, Any]]:
    """Typed batches (+ line numbers) and rejected-line records of a JSONL file.

    Args:
      path: the file.
      schema: the target schema (pyarrow parses straight into it).
      strict_fields: reject lines with keys outside ``schema``.

    Yields:
      Record batches and one dict per rejected line.
    """
    parser = _JsonLines(schema, strict_fields)
    first_line = 1
    for chunk in _line_chunks(path):
        starts, ends = _line_bounds(chunk)
        nonblank = _nonblank(chunk, starts, ends)
        lines = [chunk[starts[i] : ends[i]] for i in nonblank] if len(nonblank) else []
        numbers = first_line + nonblank
        table, good, bad = parser.parse(chunk[starts[nonblank[0]] :] if lines else b"", lines)
        for offset in range(0, table.num_rows if table is not None else 0, BATCH_ROWS):
            for batch in table.slice(offset, BATCH_ROWS).to_batches():
                rows = numbers[good[offset : offset + batch.num_rows]]
                yield _with_meta(batch, rows, path, "jsonl")
        for index, reason in bad:
            yield {
                "source": path,
                "line": int(numbers[index]),
                "reason": reason,
                "raw": lines[index].decode("utf-8", "backslashreplace").rstrip("\r"),
            }
        first_line += len(starts)


class _JsonLines:
    """Parse non-blank JSONL lines into the schema, isolating the lines that fail."""

    def __init__(self, schema: pa.Schema, strict_fields: bool) -> None:
        self._schema = schema
        self._strict = strict_fields
        self._options = pa_json.ParseOptions(
            explicit_schema=schema,
            unexpected_field_behavior="error" if strict_fields else "ignore",
        )

    def parse(
        self, data: bytes, lines: list[bytes]
    ) -> tuple[pa.Table | None, np.ndarray, list[tuple[int, str]]]:
        """Parse ``lines`` (``data`` holds them, joined, maybe with blank lines between).

        Returns:
          The table of good rows (None if none), the index of each of its rows
          in ``lines``, and ``(index, reason)`` for each rejected line.
        """
        if not lines:
            return None, np.zeros(0, np.int64), []
        table, _ = self._read(data, len(lines))
        if table is not None:
            return table, np.arange(len(lines)), []
        # Slow path: diagnose each line in Python, then let pyarrow read the rest.
        bad: list[tuple[int, str]] = []
        candidates: list[int] = []
        for i, raw in enumerate(lines):
            reason = _json_problem(raw, self._schema, self._strict)
            if reason is None:
                candidates.append(i)
            else:
                bad.append((i, reason))
        tables: list[pa.Table] = []
        good: list[int] = []
        self._bisect(lines, candidates, tables, good, bad)
        table = pa.concat_tables(tables).combine_chunks() if tables else None
        return table, np.array(good, dtype=np.int64), sorted(bad)

    def _bisect(
        self,
        lines: list[bytes],
        candidates: list[int],
        tables: list[pa.Table],
        good: list[int],
        bad: list[tuple[int, str]],
    ) -> None:
        """Read ``candidates`` together, splitting the set until failures are single lines."""
        if not candidates:
            return
        table, error = self._read(b"\n".join(lines[i] for i in candidates), len(candidates))
        if table is not None:
            tables.append(table)
            good.extend(candidates)
        elif len(candidates) == 1:
            bad.append((candidates[0], f"rejected by the JSON reader: {error}"))
        else:
            half = len(candidates) // 2
            self._bisect(lines, candidates[:half], tables, good, bad)
            self._bisect(lines, candidates[half:], tables, good, bad)

    def _read(self, data: bytes, expected_rows: int) -> tuple[pa.Table | None, str]:
        """pyarrow's reading of ``data``, or None and the error."""
        block = _JSON_BLOCK_BYTES if expected_rows > 1 else max(_JSON_BLOCK_BYTES, len(data) + 1)
        try:
            table = pa_json.read_json(
                io.BytesIO(data),
                read_options=pa_json.ReadOptions(block_size=block),
                parse_options=self._options,
            )
        except (pa.ArrowException, ValueError) as e:
            return None, str(e)
        if table.num_rows != expected_rows:
            return None, "more than one JSON value on a line"
        return table, ""


def _json_problem(raw: bytes, schema: pa.Schema, strict_fields: bool) -> str | None:
    """Why a JSONL line cannot be read into ``schema`` (None if it looks fine)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 (byte {raw[e.start : e.start + 1]!r} at offset {e.start})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON: {e.msg} (column {e.colno})"
    if not isinstance(value, dict):
        return f"expected a JSON object, found {_json_kind(value)}"
    if strict_fields:
        extra = [k for k in value if k not in schema.names]
        if extra:
            return (
                f"field {extra[0]!r} is not in the schema inferred from the first rows "
                f"(columns: {', '.join(schema.names)}); pass schema= to read or ignore it"
            )
    for f in schema:
        v = value.get(f.name)
        if v is not None and not _json_fits(v, f.type):
            return f"column {f.name!r}: expected {f.type}, found {_show(v)}"
    return None


def _json_fits(value: Any, arrow_type: pa.DataType) -> bool:
    """Whether a parsed JSON value fits an Arrow type (conservatively)."""
    if pa.types.is_boolean(arrow_type):
        return isinstance(value, bool)
    if pa.types.is_integer(arrow_type):
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        bits = arrow_type.bit_width
        if pa.types.is_signed_integer(arrow_type):
            return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)
        return 0 <= value < 2**bits
    if pa.types.is_floating(arrow_type):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return isinstance(value, str)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return isinstance(value, list)
    if pa.types.is_struct(arrow_type):
        return isinstance(value, dict)
    return True


def _json_kind(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
    }
    return f"{kinds.get(type(value), type(value).__name__)} {_show(value)}"


def _infer_jsonl(path: str, sample_rows: int) -> pa.Schema:
    """Infer a schema from the first JSON objects of a JSONL file."""
    values: dict[str, list[Any]] = {}
    seen = 0
    with _open_input(path) as stream:
        for line in _iter_lines(stream):
            if seen >= sample_rows:
                break
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            seen += 1
            for key, v in obj.items():
                values.setdefault(key, []).append(v)
    if _LINE in values:
        raise IngestError(f"{path}: the field name {_LINE!r} is reserved.")
    return pa.schema([pa.field(k, _infer_json_type(path, k, vs)) for k, vs in values.items()])


def _infer_json_type(path: str, key: str, values: list[Any]) -> pa.DataType:
    """Arrow type of one JSON field from sample values."""
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    if not kinds:
        return pa.string()
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64() if all(-(2**63) <= v < 2**63 for v in present) else pa.float64()
    if kinds <= {"int", "float"}:
        return pa.float64()
    if kinds == {"str"}:
        return pa.string()
    if len(kinds) == 1:
        try:
            return pa.array(present).type
        except (pa.ArrowException, ValueError, TypeError):
            pass
    raise IngestError(
        f"{path}: field {key!r} holds {' and '.join(sorted(kinds))} values in the first rows; "
        "one column needs one type. Pass schema= to say which (rows that do not fit are "
        "quarantined)."
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "object"


def _line_chunks(path: str, size: int = _JSON_CHUNK_BYTES) -> Iterator[bytes]:
    """The file in chunks of whole lines."""
    rest = b""
    with _open_input(path) as stream:
        while block := stream.read(size):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            rest = data[cut:]
    if rest:
        yield rest


def _iter_lines(stream: Any) -> Iterator[bytes]:
    rest = b""
    while block := stream.read(1 << 20):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _line_bounds(chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the newline) offsets of each line."""
    newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(chunk)]])
    if chunk.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    return starts.astype(np.int64), ends.astype(np.int64)


def _nonblank(chunk: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices of the lines holding something other than whitespace."""
    buf = np.frombuffer(chunk, np.uint8)
    solid = ~np.isin(buf, np.array([9, 10, 13, 32], np.uint8))
    cumulative = np.concatenate([[0], np.cumsum(solid)])
    return np.flatnonzero(cumulative[ends] - cumulative[starts] > 0)


# -------------------------------------------------------------------------- Parquet


def _read_parquet(path: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches of the schema's columns of a Parquet file, with row numbers."""
    parquet = pq.ParquetFile(_open_input(path, binary=True))
    present = set(parquet.schema_arrow.names)
    columns = [n for n in schema.names if n in present]
    row = 1
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        numbers = np.arange(row, row + batch.num_rows, dtype=np.int64)
        row += batch.num_rows
        yield _with_meta(batch, numbers, path, "parquet")


def _parquet_schema(path: str) -> pa.Schema:
    """A Parquet file's schema without pandas index columns, dictionaries decoded."""
    schema = pq.read_schema(_open_input(path, binary=True))
    fields = []
    for f in schema:
        if f.name.startswith("__index_level_"):
            continue
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        fields.append(pa.field(f.name, t))
    return pa.schema(fields)


# ----------------------------------------------------------------------- conversion


def _with_meta(
    batch: pa.RecordBatch, lines: np.ndarray, path: str, fmt: str, delimiter: str = ""
) -> pa.RecordBatch:
    """Attach line numbers (a column) and the source (schema metadata) to a raw batch."""
    batch = batch.append_column(_LINE, pa.array(lines, pa.int64()))
    return batch.replace_schema_metadata(
        {
            _META_SOURCE: path.encode(),
            _META_FORMAT: fmt.encode(),
            _META_DELIMITER: delimiter.encode(),
        }
    )


def _convert_batch(
    batch: pa.RecordBatch, schema: pa.Schema
) -> tuple[pa.RecordBatch, dict[int, list[str]]]:
    """Cast a raw batch to ``schema``.

    Returns:
      The converted rows that fit, and the reasons of each row that does not.
    """
    is_csv = batch.schema.metadata.get(_META_FORMAT) == b"csv"
    names = set(batch.schema.names)
    reasons: dict[int, list[str]] = {}
    arrays = []
    for f in schema:
        if f.name in names:
            array, bad = _convert_column(batch.column(f.name), f, is_csv=is_csv)
        else:
            array, bad = pa.nulls(batch.num_rows, f.type), {}
        if not f.nullable:
            bad.update(_missing_required(array, f, bad))
        for row, reason in bad.items():
            reasons.setdefault(row, []).append(reason)
        arrays.append(array)
    converted = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if reasons:
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[list(reasons)] = False
        converted = converted.filter(pa.array(keep))
    return converted, reasons


def _convert_column(
    column: pa.Array, f: pa.Field, *, is_csv: bool
) -> tuple[pa.Array, dict[int, str]]:
    """Cast one column; values that do not fit become null and are reported by row."""
    target = f.type
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if column.type == target:
        return column, {}
    bad: dict[int, str] = {}
    if _is_binary(column.type) and not _is_binary(target):
        column, bad = _cast(column, pa.string(), f.name, "UTF-8 text")
        if column.type == target:
            return column, bad
    prepare = _prepare_text if is_csv and pa.types.is_string(column.type) else None
    converted, more = _cast(column, target, f.name, str(target), prepare=prepare)
    bad.update(more)
    return converted, bad


def _cast(
    column: pa.Array,
    target: pa.DataType,
    name: str,
    expected: str,
    *,
    prepare: Callable[[pa.Array], pa.Array] | None = None,
) -> tuple[pa.Array, dict[int, str]]:
    """Safe cast; on failure, find the failing values by bisection and null them.

    Args:
      column: the values.
      target: the type to cast to.
      name: column name, for the reasons.
      expected: what a value should be, for the reasons.
      prepare: applied before a second attempt when the first cast fails.

    Returns:
      The cast column (failing values null) and a reason per failing row.
    """
    try:
        return pc.cast(column, target), {}
    except pa.ArrowNotImplementedError as e:
        raise IngestError(
            f"Column {name!r}: {column.type} values cannot be converted to {target} ({e}); "
            "change the column's type in the schema."
        ) from e
    except pa.ArrowInvalid:
        pass
    original = column
    if prepare is not None:
        column = prepare(column)
        try:
            return pc.cast(column, target), {}
        except pa.ArrowInvalid:
            pass
    failing = _failing_rows(column, target)
    bad = {
        i: f"column {name!r}: expected {expected}, found {_show(original[i].as_py())}"
        for i in failing
    }
    mask = np.zeros(len(column), dtype=bool)
    mask[failing] = True
    cleaned = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
    return pc.cast(cleaned, target), bad


def _failing_rows(column: pa.Array, target: pa.DataType) -> list[int]:
    """Indices of the values that do not cast (bisection over slices)."""
    failing: list[int] = []

    def visit(offset: int, length: int) -> None:
        try:
            pc.cast(column.slice(offset, length), target)
            return
        except pa.ArrowInvalid:
            pass
        if length == 1:
            failing.append(offset)
            return
        half = length // 2
        visit(offset, half)
        visit(offset + half, length - half)

    visit(0, len(column))
    return failing


def _prepare_text(column: pa.Array) -> pa.Array:
    """CSV text for a non-string column: ``""`` is missing, surrounding spaces dropped."""
    column = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _missing_required(array: pa.Array, f: pa.Field, bad: dict[int, str]) -> dict[int, str]:
    """Rows with no value for a non-nullable field."""
    if array.null_count == 0:
        return {}
    rows = np.flatnonzero(pc.is_null(array).to_numpy(zero_copy_only=False))
    return {
        int(i): f"column {f.name!r}: expected a {f.type} value (not nullable), found none"
        for i in rows
        if int(i) not in bad
    }


def _rejected_records(
    batch: pa.RecordBatch, reasons: dict[int, list[str]]
) -> Iterator[dict[str, Any]]:
    """Quarantine records for rejected rows of a raw batch."""
    meta = batch.schema.metadata
    source = meta[_META_SOURCE].decode()
    is_csv = meta.get(_META_FORMAT) == b"csv"
    delimiter = meta.get(_META_DELIMITER, b",").decode() or ","
    lines = batch.column(_LINE)
    values = batch.drop_columns([_LINE])
    for row in sorted(reasons):
        record = values.slice(row, 1).to_pylist()[0]
        yield {
            "source": source,
            "line": lines[row].as_py(),
            "reason": "; ".join(reasons[row]),
            "raw": _csv_text(record, delimiter) if is_csv else _json_text(record),
        }


def _csv_text(record: dict[str, Any], delimiter: str) -> str:
    """A CSV row rebuilt from its raw field values."""
    out = io.StringIO()
    fields = ["" if v is None else v.decode("utf-8", "backslashreplace") for v in record.values()]
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(fields)
    return out.getvalue()


def _json_text(record: dict[str, Any]) -> str:
    def default(v: Any) -> Any:
        return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)

    return json.dumps(record, ensure_ascii=False, default=default)


def _show(value: Any) -> str:
    """A value for an error message (repr, shortened)."""
    text = repr(value)
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            text = f"invalid bytes {text}"
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


# -------------------------------------------------------------------------- hashing

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL_HASH = np.uint64(0x6A09E667F3BCC908)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer over a uint64 array."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _column_hash(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per-row uint64 hash of one column's values (nulls hash to a constant)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.dictionary_decode()
        t = column.type
    if pa.types.is_floating(t):
        values = pc.cast(column, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0
        values[np.isnan(values)] = np.nan
        hashed = _mix(values.view(np.uint64))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        values = _as_int64(column).fill_null(0).to_numpy(zero_copy_only=False)
        hashed = _mix(values.astype(np.int64).view(np.uint64))
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or _is_binary(t):
        encoded = pc.dictionary_encode(column)
        keys = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
        dictionary_hash = pd.util.hash_array(keys, categorize=False)
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        hashed = dictionary_hash[indices] if len(keys) else np.zeros(len(column), np.uint64)
    else:
        texts = np.array([_json_text({"v": v}) for v in column.to_pylist()], dtype=object)
        hashed = pd.util.hash_array(texts, categorize=True)
    hashed = np.asarray(hashed, dtype=np.uint64)
    if column.null_count:
        hashed = np.where(pc.is_null(column).to_numpy(zero_copy_only=False), _NULL_HASH, hashed)
    return hashed


def _as_int64(column: pa.Array) -> pa.Array:
    """Integers, booleans and temporal values as int64 (temporal: their storage)."""
    try:
        return pc.cast(column, pa.int64())
    except pa.ArrowNotImplementedError:
        storage = pa.int32() if column.type.bit_width == 32 else pa.int64()
        return pc.cast(column.view(storage), pa.int64())


# -------------------------------------------------------------------- input helpers


def _expand_inputs(input_files: Sequence[str]) -> list[str]:
    """Expand globs and directories; every entry must exist."""
    if isinstance(input_files, str):
        input_files = [input_files]
    if not input_files:
        raise IngestError("No input files given; pass at least one file, glob or directory.")
    files: list[str] = []
    for entry in input_files:
        try:
            files.extend(list_data_files(entry))
        except InputNotFoundError as e:
            raise IngestError(str(e)) from None
    return sorted(set(files))


def _delimiter_for(path: str, delimiter: str) -> str:
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise IngestError(
            f"csv_delimiter must be one character other than a quote or newline, got {delimiter!r}."
        )
    name = _strip_compression(os.path.basename(path).lower())
    return "\t" if delimiter == "," and name.endswith(".tsv") else delimiter


def _strip_compression(name: str) -> str:
    for ext in _COMPRESSION_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _check_num_shards(num_shards: int | None) -> None:
    if num_shards is not None and (
        isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1
    ):
        raise IngestError(f"num_shards must be a positive integer or None, got {num_shards!r}.")


def _check_schema(schema: pa.Schema, formats: set[str]) -> pa.Schema:
    """Validate a caller's schema (unique names, types the inputs can be cast to)."""
    if not isinstance(schema, pa.Schema):
        raise IngestError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}.")
    names = schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or not names or _LINE in names:
        raise IngestError(
            f"schema needs distinct column names (and not {_LINE!r}); duplicates: {dupes}."
        )
    if "csv" in formats:
        for f in schema:
            if _is_binary(f.type) or pa.types.is_string(f.type):
                continue
            try:
                pc.cast(pa.array([], pa.string()), f.type)
            except pa.ArrowNotImplementedError:
                raise IngestError(
                    f"schema column {f.name!r} has type {f.type}, which CSV text cannot be "
                    "converted to; use a scalar type (int, float, bool, string, date, timestamp)."
                ) from None
    return schema.remove_metadata()


def _first_file_with_rows(
    files: Sequence[str], formats: Mapping[str, str], delimiters: Mapping[str, str]
) -> str:
    """The first file holding at least one row (or malformed row)."""
    for path in files:
        if _has_rows(path, formats[path], delimiters.get(path, ",")):
            return path
    shown = ", ".join(files[:5]) + (f" (and {len(files) - 5} more)" if len(files) > 5 else "")
    raise IngestError(
        f"No rows to ingest in {shown}: the input is empty (a CSV with only a header "
        "counts as empty). Point ExampleGen at files that hold data."
    )


def _has_rows(path: str, fmt: str, delimiter: str) -> bool:
    if fmt == "parquet":
        try:
            return pq.read_metadata(_open_input(path, binary=True)).num_rows > 0
        except pa.ArrowInvalid as e:
            raise IngestError(f"{path}: not a readable Parquet file ({e}).") from e
    if fmt == "jsonl":
        with _open_input(path) as stream:
            return any(line.strip() for line in _iter_lines(stream))
    for _ in _read_csv(path, delimiter):
        return True
    return False


def _check_same_columns(
    files: Sequence[str],
    formats: Mapping[str, str],
    delimiters: Mapping[str, str],
    schema: pa.Schema,
) -> None:
    """With an inferred schema, every CSV/Parquet file must have the same columns."""
    expected = set(schema.names)
    for path in files:
        if formats[path] == "csv":
            found = _csv_header(path, delimiters[path])[0]
        elif formats[path] == "parquet":
            found = _parquet_schema(path).names
        else:
            continue
        if found is None or set(found) == expected:
            continue
        missing = sorted(expected - set(found))
        extra = sorted(set(found) - expected)
        raise IngestError(
            f"{path}: columns differ from the inferred schema (missing {missing}, extra "
            f"{extra}). Make the files agree, or pass schema= (columns outside it are "
            "ignored, absent ones are null)."
        )


def _sample_batches(items: Iterator[Any], rows: int) -> list[pa.RecordBatch]:
    """The first ``rows`` rows of a reader's batches (rejected rows skipped)."""
    out: list[pa.RecordBatch] = []
    count = 0
    for item in items:
        if isinstance(item, dict):
            continue
        out.append(item.slice(0, rows - count))
        count += out[-1].num_rows
        if count >= rows:
            break
    return out


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _open_input(path: str, *, binary: bool = False) -> Any:
    """A path or file object pyarrow can read (decompressed by extension unless ``binary``)."""
    if _is_local(path):
        return (
            path.removeprefix("file://")
            if binary
            else pa.input_stream(path.removeprefix("file://"))
        )
    compression = CompressionTypes.UNCOMPRESSED if binary else CompressionTypes.AUTO
    return FileSystems.open(path, compression_type=compression)


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


# ------------------------------------------------------------------------ outputs


def _clear_outputs(output_dir: str) -> None:
    """Remove the ``data`` and ``quarantine`` subdirectories of a previous run."""
    for sub in ("data", "quarantine"):
        path = _join(output_dir, sub)
        if FileSystems.exists(path):
            FileSystems.delete([path])


def _collect_result(
    result: Any,
    output_dir: str,
    names: Sequence[str],
    schema: pa.Schema,
    files: Sequence[str],
) -> IngestResult:
    """Count what was written and check it against the pipeline metrics."""
    split_files = {n: tuple(_match(_join(output_dir, "data", n, "part-*.parquet"))) for n in names}
    split_counts = {
        n: sum(pq.read_metadata(_open_input(p, binary=True)).num_rows for p in paths)
        for n, paths in split_files.items()
    }
    quarantine = tuple(_match(_join(output_dir, "quarantine", "rejected-*.jsonl")))
    num_rejected = sum(_count_lines(p) for p in quarantine)
    num_written = sum(split_counts.values())
    num_read = num_written + num_rejected
    counted = _counter(result, "rows_read")
    if counted is not None and counted != num_read:
        raise IngestError(
            f"The pipeline read {counted} rows but {num_written} were written and "
            f"{num_rejected} quarantined under {output_dir}; outputs are incomplete. "
            "Re-run into an empty directory."
        )
    if num_read == 0:
        raise IngestError(
            f"No rows to ingest in {', '.join(files[:5])}: the input is empty. "
            "Point ExampleGen at files that hold data."
        )
    return IngestResult(
        split_counts=split_counts,
        num_read=num_read,
        num_written=num_written,
        num_rejected=num_rejected,
        schema=schema,
        input_files=tuple(files),
        quarantine_files=quarantine,
        split_files=split_files,
    )


def _match(pattern: str) -> list[str]:
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matches)


def _count_lines(path: str) -> int:
    count = 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def _counter(result: Any, name: str) -> int | None:
    """A Beam counter's committed value, or None when the runner reports none.

    Attempted values are not used: they may count retried bundles twice.
    """
    try:
        counters = result.metrics().query(
            MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
        )["counters"]
    except Exception:  # runners without metrics support
        return None
    if not counters or any(c.committed is None for c in counters):
        return None
    return sum(int(c.committed) for c in counters)
