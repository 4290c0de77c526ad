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

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics.metric import Metrics

from jaxtx.core import files as fs
from jaxtx.core.beam import BeamOptions, pipeline_options

from ._common import (
    _REJECTED,
    METRICS_NAMESPACE,
    IngestError,
    _dump,
)
from ._config import (
    IngestResult,
    SplitConfig,
)
from ._convert import (
    _convert_batch,
    _rejected_records,
)
from ._csv import (
    _read_csv,
)
from ._hashing import (
    row_hashes,
)
from ._inputs import (
    _check_num_shards,
    _check_same_columns,
    _check_schema,
    _delimiter_for,
    _expand_inputs,
    _first_file_with_rows,
    detect_format,
    infer_schema,
)
from ._jsonl import (
    _read_jsonl,
)
from ._outputs import (
    _clear_outputs,
    _collect_result,
)
from ._parquet import (
    _read_parquet,
)


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

    if fs.is_local(output_dir):
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
            prefix = fs.join(self._output_dir, "data", name, "part")
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
                fs.join(self._output_dir, "quarantine", "rejected"),
                file_name_suffix=".jsonl",
                shard_name_template="-SSSSS-of-NNNNN",
            )
        )
        return outputs


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
