"""Ingestion behind ExampleGen: CSV / Parquet / JSONL files to split Parquet shards.

One Apache Beam pipeline whose elements are ``pyarrow.RecordBatch``:

``ListFiles`` -> ``ReadFiles`` (record batches of each file) -> ``ConvertToSchema``
(cast every column to the target Arrow schema) -> ``AssignSplits`` (deterministic
hash split, or the split of the row's file) -> ``WriteSplit[<name>]`` (Parquet
shards) and ``WriteQuarantine``.

Output layout (docs/formats.md)::

    <output_dir>/data/<split>/part-NNNNN-of-MMMMM.parquet   one Arrow schema everywhere
    <output_dir>/quarantine/rejected-NNNNN-of-MMMMM.jsonl   {"source", "line", "reason", "raw"}

Every split directory holds at least one (possibly empty) Parquet file.

Conventions:

* CSV: the first line is the header unless ``CsvOptions(header=False)``
  (then ``column_names`` or ``f0, f1...``); ``CsvOptions`` also sets the
  delimiter, quoting, escaping, extra null markers, trimming, skipped lines,
  comment lines and the encoding. Every value is read as text and cast per
  column, so one bad value quarantines its row only. An unquoted empty field
  (or a null marker) is missing (null) for every type; a quoted empty field
  (``""``) is the empty string in a string column and missing in any other
  column. Numbers may carry surrounding spaces. A line whose fields are all
  empty (a blank line, a comment line, or only delimiters) holds no example:
  it is skipped and not counted. Records up to ``MAX_RECORD_BYTES`` are read;
  longer physical lines are quarantined.
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
  string for text formats; the file's own types for Parquet), then widened
  over the whole input for CSV (``jaxtx.data._widen``: no row is quarantined
  for a value a wider type holds; the input is read a second time when a type
  changes). Files must then agree on their columns: a CSV/Parquet file with
  other columns is an error, a JSONL key outside the sample's keys
  quarantines its row. With ``schema``, types are used as given, other
  columns/keys are ignored and absent ones are null.
* Splits: a hash of each row's content (or of ``partition_feature``) picks
  its split; with ``{split: files}`` every file's rows go to its split.
* ``num_read == num_written + num_rejected`` always; the counts come from the
  written files and are checked against the pipeline's metrics.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics

from jaxtx.core import files as fs
from jaxtx.core import progress
from jaxtx.core.beam import BeamOptions, WriteJson, pipeline_options

from ._coders import register_arrow_coders
from ._common import (
    _META_SOURCE,
    _REJECTED,
    METRICS_NAMESPACE,
    TYPES_KEY,
    IngestError,
    _dump,
)
from ._config import (
    CsvOptions,
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
    _csv_options,
    _dialects,
    _expand_inputs,
    _first_file_with_rows,
    _sample_schema,
    detect_format,
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
from ._widen import MergeObservations, Observation, observe, widen_schema

_TYPES = "types"
_TYPES_FILE = "types.json"
_COUNTS_DIR = "_counts"
_COUNTS_FILE = "counts.json"


def ingest(
    input_files: Sequence[str] | Mapping[str, Sequence[str] | str],
    output_dir: str,
    *,
    input_format: str = "auto",
    splits: SplitConfig = SplitConfig(),
    schema: pa.Schema | None = None,
    csv: CsvOptions | None = None,
    csv_delimiter: str = ",",
    beam_options: BeamOptions = None,
    num_shards: int | None = None,
    seed: str = "",
) -> IngestResult:
    """Read input files, convert them to one schema, split, and write Parquet.

    Args:
      input_files: files, globs or directories (all data files below them),
        hash-split by ``splits``; or a mapping ``{split name: files}`` for
        fixed splits (``{"train": "train.csv", "eval": "test.csv"}``), in
        which case ``splits`` is not used.
      output_dir: artifact directory; its ``data/`` and ``quarantine/``
        subdirectories are replaced.
      input_format: ``auto`` (by extension, per file), ``csv``, ``parquet`` or
        ``jsonl``; an explicit format reads files of any extension.
      splits: split names, ratio and optional partition feature.
      schema: target Arrow schema, used as given; inferred when None (from a
        sample, then widened over the whole input: see ``jaxtx.data._widen``).
      csv: the CSV dialect (header, names, delimiter, quoting, null markers,
        trimming, skipped rows, comments, encoding).
      csv_delimiter: shortcut for ``CsvOptions(delimiter=...)`` when ``csv`` is None.
      beam_options: Beam flags or mapping (see ``jaxtx.core.beam``).
      num_shards: Parquet shards per split; None lets the runner decide.
      seed: mixed into the split hash; another seed gives another split.

    Returns:
      Counts, schema and written files.

    Raises:
      IngestError: a missing path, no rows at all, an unknown format, columns
        that differ between files, or an invalid configuration.
    """
    files, file_splits, splits = _inputs_and_splits(input_files, splits)
    formats = {f: detect_format(f, input_format) for f in files}
    dialects = _dialects(files, formats, _csv_options(csv, csv_delimiter))
    _check_num_shards(num_shards)
    strict = schema is None
    if schema is None:
        schema = _sample_schema(files, formats, dialects)
        _check_same_columns(files, formats, dialects, schema)
    else:
        schema = _check_schema(schema, set(formats.values()))
        _first_file_with_rows(files, formats, dialects)
    if splits.partition_feature is not None and splits.partition_feature not in schema.names:
        raise IngestError(
            f"partition_feature {splits.partition_feature!r} is not a column; "
            f"columns: {', '.join(schema.names)}."
        )
    if fs.is_local(output_dir):
        output_dir = os.path.abspath(output_dir.removeprefix("file://"))
    plan = _Plan(
        files, output_dir, formats, dialects, splits, file_splits, strict, num_shards, seed
    )
    result, observed = _run(plan, schema, beam_options)
    if strict:
        widened = widen_schema(schema, observed)
        if widened != schema:  # some values need a wider type: read again with it
            result, _ = _run(plan, widened, beam_options)
    return result


@dataclass(frozen=True)
class _Plan:
    """Everything of one ingestion but the schema."""

    files: Sequence[str]
    output_dir: str
    formats: Mapping[str, str]
    dialects: Mapping[str, CsvOptions]
    splits: SplitConfig
    file_splits: Mapping[str, int] | None
    strict: bool
    num_shards: int | None
    seed: str


def _run(
    plan: _Plan, schema: pa.Schema, beam_options: BeamOptions
) -> tuple[IngestResult, Observation]:
    """Run the pipeline once with ``schema``; the result and the type observations."""
    _clear_outputs(plan.output_dir)
    observe_dir = fs.join(plan.output_dir, "_types")
    transform = IngestExamples(
        plan.files,
        plan.output_dir,
        formats=plan.formats,
        dialects=plan.dialects,
        schema=schema,
        splits=plan.splits,
        file_splits=plan.file_splits,
        strict_fields=plan.strict,
        num_shards=plan.num_shards,
        seed=plan.seed,
        observe_dir=observe_dir if plan.strict else None,
    )
    pipeline = beam.Pipeline(options=pipeline_options(beam_options))
    _ = pipeline | "IngestExamples" >> transform
    result = pipeline.run()
    result.wait_until_finish()
    observed = _read_observation(observe_dir) if plan.strict else {}
    rows_read = _read_rows_read(fs.join(plan.output_dir, _COUNTS_DIR))
    out = _collect_result(
        result, plan.output_dir, plan.splits.names, schema, plan.files, rows_read=rows_read
    )
    return out, observed


def _read_observation(directory: str) -> Observation:
    """Read and remove the merged type observation written by the pipeline."""
    path = fs.join(directory, _TYPES_FILE)
    with FileSystems.open(path) as f:
        observed: Observation = json.loads(f.read().decode("utf-8"))
    _remove(directory)
    return observed


def _read_rows_read(directory: str) -> int | None:
    """The row count the pipeline wrote (None: the pipeline did not write it); removed."""
    path = fs.join(directory, _COUNTS_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        rows_read = int(json.loads(f.read().decode("utf-8"))["rows_read"])
    _remove(directory)
    return rows_read


def _num_rows(batch: pa.RecordBatch) -> int:
    return batch.num_rows


def _one(_: Any) -> int:
    return 1


def _rows_read_doc(n: int) -> dict[str, int]:
    return {"rows_read": n}


def _inputs_and_splits(
    input_files: Sequence[str] | Mapping[str, Sequence[str] | str], splits: SplitConfig
) -> tuple[list[str], dict[str, int] | None, SplitConfig]:
    """Expanded files, the split of each file for fixed splits, and the split config."""
    if not isinstance(input_files, Mapping):
        return _expand_inputs(input_files), None, splits
    if not input_files:
        raise IngestError("No splits given; map each split name to its files.")
    names = tuple(input_files)
    config = SplitConfig(names=names, buckets=(1,) * len(names))
    file_splits: dict[str, int] = {}
    for index, name in enumerate(names):
        for path in _expand_inputs(input_files[name]):
            if path in file_splits:
                other = names[file_splits[path]]
                raise IngestError(
                    f"{path} is an input of both split {other!r} and split {name!r}; "
                    "give each split its own files."
                )
            file_splits[path] = index
    return sorted(file_splits), file_splits, config


class IngestExamples(beam.PTransform):
    """Read, convert, split and write examples (applied to a pipeline root).

    Returns a dict of PCollections of written file names: ``data/<split>`` for
    each split, ``quarantine`` and, when asked, ``types``.
    """

    def __init__(
        self,
        files: Sequence[str],
        output_dir: str,
        *,
        formats: Mapping[str, str],
        dialects: Mapping[str, CsvOptions],
        schema: pa.Schema,
        splits: SplitConfig,
        strict_fields: bool,
        num_shards: int | None,
        seed: str,
        file_splits: Mapping[str, int] | None = None,
        observe_dir: str | None = None,
    ) -> None:
        """Configure the transform.

        Args:
          files: input files.
          output_dir: artifact directory.
          formats: format of each file.
          dialects: CSV dialect of each CSV file.
          schema: the target schema.
          splits: split configuration.
          strict_fields: quarantine JSONL rows with keys outside ``schema``.
          num_shards: shards per split (None: runner decides).
          seed: split hash seed.
          file_splits: fixed splits: the split index of each file (None: hash split).
          observe_dir: write the type observation of text columns there
            (``types-*.json``, see ``jaxtx.data._widen``); None to skip.
        """
        super().__init__()
        self._files = list(files)
        self._output_dir = output_dir
        self._formats = dict(formats)
        self._dialects = dict(dialects)
        self._schema = schema
        self._splits = splits
        self._file_splits = dict(file_splits) if file_splits is not None else None
        self._strict = strict_fields
        self._num_shards = num_shards or 0
        self._seed = seed
        self._observe_dir = observe_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        """Build the pipeline.

        Args:
          pbegin: the pipeline root.

        Returns:
          Written file names per output.
        """
        register_arrow_coders()  # batch edges: size estimates without pickling each batch
        read = (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ReadFiles"
            >> beam.ParDo(
                _ReadFileFn(
                    self._formats,
                    self._dialects,
                    self._schema,
                    self._strict,
                    observe=self._observe_dir is not None,
                )
            )
            .with_output_types(pa.RecordBatch)
            .with_outputs(_REJECTED, _TYPES, main="batches")
        )
        _ = read.batches | "Progress" >> progress.counting("reading", rows=_num_rows)
        converted = read.batches | "ConvertToSchema" >> beam.ParDo(
            _ConvertFn(self._schema, observe=self._observe_dir is not None)
        ).with_output_types(pa.RecordBatch).with_outputs(_REJECTED, _TYPES, main="examples")
        split = converted.examples | "AssignSplits" >> beam.ParDo(
            _SplitFn(self._splits, self._seed, self._file_splits)
        ).with_outputs(*self._splits.names)
        for name in self._splits.names:
            split[name].element_type = pa.RecordBatch
        outputs = {
            f"data/{name}": split[name] | f"WriteSplit[{name}]" >> self._write_split(name)
            for name in self._splits.names
        }
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
        # Rows read, written as a file: runners without metrics (Dask) are checked too.
        outputs["counts"] = (
            (
                read.batches | "CountParsed" >> beam.Map(_num_rows),
                read[_REJECTED] | "CountUnparsed" >> beam.Map(_one),
            )
            | "FlattenCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(sum)
            | "CountsDoc" >> beam.Map(_rows_read_doc)
            | "WriteCounts"
            >> beam.ParDo(WriteJson(fs.join(self._output_dir, _COUNTS_DIR, _COUNTS_FILE)))
        )
        if self._observe_dir is not None:
            outputs["types"] = (
                (read[_TYPES], converted[_TYPES])
                | "FlattenTypes" >> beam.Flatten()
                | "MergeTypes" >> beam.CombineGlobally(MergeObservations())
                | "WriteTypes" >> beam.ParDo(WriteJson(fs.join(self._observe_dir, _TYPES_FILE)))
            )
        return outputs

    def _write_split(self, name: str) -> beam.PTransform:
        """Batches of one split -> Parquet shards."""
        prefix = fs.join(self._output_dir, "data", name, "part")
        to_table = beam.Map(_to_table).with_output_types(pa.Table)
        return (f"ToTable[{name}]" >> to_table) | beam.io.WriteToParquetBatched(
            prefix,
            schema=self._schema,
            codec="snappy",
            file_name_suffix=".parquet",
            num_shards=self._num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
        )


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
        dialects: Mapping[str, CsvOptions],
        schema: pa.Schema,
        strict_fields: bool,
        *,
        observe: bool = False,
    ) -> None:
        self._formats = dict(formats)
        self._dialects = dict(dialects)
        self._schema = schema
        self._strict = strict_fields
        self._observe = observe
        self._rows_read = Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._rows_rejected = Metrics.counter(METRICS_NAMESPACE, "rows_rejected")

    def process(self, path: str) -> Iterator[Any]:
        fmt = self._formats[path]
        if fmt == "csv":
            items = _read_csv(path, self._dialects[path])
        elif fmt == "jsonl":
            items = _read_jsonl(path, self._schema, self._strict, observe=self._observe)
        else:
            items = _read_parquet(path, self._schema)
        for item in items:
            if isinstance(item, dict):
                self._rows_read.inc()
                self._rows_rejected.inc()
                observation = item.pop(TYPES_KEY, None)
                if observation:
                    yield beam.pvalue.TaggedOutput(_TYPES, observation)
                yield beam.pvalue.TaggedOutput(_REJECTED, _dump(item))
            else:
                self._rows_read.inc(item.num_rows)
                yield item


class _ConvertFn(beam.DoFn):
    """Cast raw batches to the target schema; rows with values that do not fit are rejected.

    With ``observe``, every batch also reports what its text columns held
    (``types`` output, see ``jaxtx.data._widen``).
    """

    def __init__(self, schema: pa.Schema, *, observe: bool = False) -> None:
        self._schema = schema
        self._observe = observe
        self._rows_rejected = Metrics.counter(METRICS_NAMESPACE, "rows_rejected")

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        converted, reasons, bad_rows = _convert_batch(batch, self._schema)
        if self._observe:
            observation = observe(batch, self._schema, bad_rows)
            if observation:
                yield beam.pvalue.TaggedOutput(_TYPES, observation)
        if reasons:
            self._rows_rejected.inc(len(reasons))
            for record in _rejected_records(batch, reasons):
                yield beam.pvalue.TaggedOutput(_REJECTED, _dump(record))
        if converted.num_rows:
            source = batch.schema.metadata[_META_SOURCE]
            yield converted.replace_schema_metadata({_META_SOURCE: source})


class _SplitFn(beam.DoFn):
    """Route each row to its split: by its file (fixed splits) or by a content hash."""

    def __init__(
        self, splits: SplitConfig, seed: str, file_splits: Mapping[str, int] | None = None
    ) -> None:
        self._splits = splits
        self._seed = seed
        self._file_splits = dict(file_splits) if file_splits is not None else None
        self._written = {
            n: Metrics.counter(METRICS_NAMESPACE, f"rows_written[{n}]") for n in splits.names
        }

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        batch_meta = batch.schema.metadata or {}
        batch = batch.replace_schema_metadata(None)
        if self._file_splits is not None:
            name = self._splits.names[self._file_splits[batch_meta[_META_SOURCE].decode()]]
            self._written[name].inc(batch.num_rows)
            yield beam.pvalue.TaggedOutput(name, batch)
            return
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


def _remove(directory: str) -> None:
    if fs.is_local(directory):
        shutil.rmtree(directory, ignore_errors=True)
    elif FileSystems.exists(directory):
        FileSystems.delete([directory])
