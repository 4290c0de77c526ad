"""Ingestion behind ExampleGen: CSV / Parquet / JSONL files to split Parquet shards.

One Apache Beam pipeline, ``ListFiles`` -> ``IngestFiles``: one ``DoFn`` call
per group of input files (consecutive files of at least
``jaxtx.data._inputs.GROUP_BYTES``; a large file is a group of its own) reads
them in record batches, casts every column to the target Arrow schema,
assigns each row its split (deterministic hash split, or the split of the
row's file) and writes the group's part of each split, its quarantine and its
counts itself (``jaxtx.data._outputs``), with no per-row Python and no Beam
file sink. With ``num_shards`` the split rows go through a ``GroupByKey`` to
one writer per shard instead.

Output layout (docs/formats.md)::

    <output_dir>/data/<split>/part-IIIII-of-NNNNN.parquet   one Arrow schema everywhere
    <output_dir>/quarantine/rejected-IIIII.jsonl           {"source", "line", "reason", "raw"}

``IIIII`` is the group's position among the ``NNNNN`` groups of the sorted
input files (a part exists when the group has rows in the split), or with
``num_shards`` the shard number. Every split directory holds at least one (possibly empty)
Parquet file. The names and contents depend only on the input, so a re-run
writes byte-identical files.

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
  over the whole input for CSV and JSONL (``jaxtx.data._widen``: no row is
  quarantined for a value a wider type holds; the input is read a second
  time when a type changes). Files must then agree on their columns: a
  CSV/Parquet file with other columns is an error; a JSONL key first seen
  after the sample becomes a column typed by its values (null in the rows
  before; new columns follow the others, by name). With ``schema``, types are
  used as given, other columns/keys are ignored and absent ones are null.
* Splits: a hash of each row's content (or of ``partition_feature``) picks
  its split; with ``{split: files}`` every file's rows go to its split.
* ``num_read == num_written + num_rejected`` always; the counts come from the
  written files and are checked against the rows each group's reader
  counted (and the pipeline's metrics where the runner reports them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics.metric import Metrics

from jaxtx.core import files as fs
from jaxtx.core import progress
from jaxtx.core.beam import BeamOptions, pipeline_options

from ._coders import register_arrow_coders
from ._common import (
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
    file_groups,
)
from ._jsonl import (
    _read_jsonl,
)
from ._outputs import (
    ParquetPart,
    QuarantineFile,
    SplitParts,
    _clear_outputs,
    _collect_result,
    counts_path,
    fill_empty_shards,
    part_path,
    quarantine_path,
    read_counts,
    write_counts,
)
from ._parquet import (
    _read_parquet,
)
from ._widen import Observation, merge, observe, widen_schema

_SHARDS = "shards"


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
        observe=plan.strict,
    )
    pipeline = beam.Pipeline(options=pipeline_options(beam_options))
    _ = pipeline | "IngestExamples" >> transform
    result = pipeline.run()
    result.wait_until_finish()
    rows_read, observed = read_counts(plan.output_dir, transform.groups)
    fill_empty_shards(plan.output_dir, plan.splits.names, plan.num_shards, schema)
    out = _collect_result(
        result, plan.output_dir, plan.splits.names, schema, plan.files, rows_read=rows_read
    )
    return out, observed


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

    One ``DoFn`` call per group of input files (:attr:`groups`, see
    ``jaxtx.data._inputs.file_groups``) reads them, converts their rows,
    splits them and writes the group's part of every split, its quarantine
    file and its count file (see ``jaxtx.data._outputs``); with
    ``num_shards`` the split rows go through a ``GroupByKey`` to one writer
    per shard instead. Returns ``{"counts": ...}``: the count file written
    for each group.
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
        observe: bool = False,
    ) -> None:
        """Configure the transform.

        Args:
          files: input files, sorted (their groups number the output files).
          output_dir: artifact directory.
          formats: format of each file.
          dialects: CSV dialect of each CSV file.
          schema: the target schema.
          splits: split configuration.
          strict_fields: quarantine JSONL rows with keys outside ``schema``
            (with ``observe``: read those keys as new columns instead).
          num_shards: shards per split (None: one per group of input files).
          seed: split hash seed.
          file_splits: fixed splits: the split index of each file (None: hash split).
          observe: record in the count files what text columns held (see
            ``jaxtx.data._widen``).
        """
        super().__init__()
        self.groups = file_groups(files)
        self._num_shards = num_shards or 0
        self._fn = _IngestFilesFn(
            _FileJob(
                output_dir=output_dir,
                num_groups=len(self.groups),
                formats=dict(formats),
                dialects=dict(dialects),
                schema=schema,
                splits=splits,
                strict=strict_fields,
                seed=seed,
                file_splits=dict(file_splits) if file_splits is not None else None,
                observe=observe,
                num_shards=self._num_shards,
            )
        )
        self._output_dir = output_dir
        self._schema = schema
        self._names = splits.names

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        """Build the pipeline.

        Args:
          pbegin: the pipeline root.

        Returns:
          ``{"counts": paths of the count files}``.
        """
        register_arrow_coders()  # shard edges: size estimates without pickling each batch
        self._fn.progress = progress.task(
            "reading"
        )  # None without a board (see jaxtx.core.progress)
        files = pbegin | "ListFiles" >> beam.Create(list(enumerate(self.groups)))
        if not self._num_shards:
            counts = files | "IngestFiles" >> beam.ParDo(self._fn).with_output_types(str)
            return {"counts": counts}
        ingested = files | "IngestFiles" >> beam.ParDo(self._fn).with_outputs(
            _SHARDS, main="counts"
        )
        _ = (
            ingested[_SHARDS]
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards"
            >> beam.ParDo(
                _WriteShardFn(self._output_dir, self._names, self._num_shards, self._schema)
            )
        )
        return {"counts": ingested.counts}


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


@dataclass(frozen=True)
class _FileJob:
    """What ingesting one group of input files needs to know."""

    output_dir: str
    num_groups: int
    formats: Mapping[str, str]
    dialects: Mapping[str, CsvOptions]
    schema: pa.Schema
    splits: SplitConfig
    strict: bool
    seed: str
    file_splits: Mapping[str, int] | None
    observe: bool
    num_shards: int


class _IngestFilesFn(beam.DoFn):
    """Ingest a group of input files: read, convert, split, write (see :class:`IngestExamples`).

    Rows that cannot be parsed or converted go to the group's quarantine file.
    Without shards, each split's rows go straight to the group's Parquet part
    (created at the split's first row, written on a background thread);
    with shards, ``(split, shard), (group, sequence, batch)`` pairs go to the
    ``shards`` output. The count file is written last and its path yielded.
    """

    def __init__(self, job: _FileJob) -> None:
        self._job = job
        self.progress: str | None = None  # a progress step counting the rows read, if any
        self._rows_read = Metrics.counter(METRICS_NAMESPACE, "rows_read")
        self._rows_rejected = Metrics.counter(METRICS_NAMESPACE, "rows_rejected")
        self._written = {
            n: Metrics.counter(METRICS_NAMESPACE, f"rows_written[{n}]") for n in job.splits.names
        }

    def process(self, element: tuple[int, Sequence[str]]) -> Iterator[Any]:
        index, paths = element
        job = self._job
        quarantine = QuarantineFile(quarantine_path(job.output_dir, index))
        parts = SplitParts(job.output_dir, job.splits.names, index, job.num_groups, job.schema)
        sequence = [0] * len(job.splits.names)
        rows_read, observation = 0, Observation()
        try:
            for path, batch, observed in self._all_converted(paths, quarantine):
                observation = merge(observation, observed)
                if batch is None:
                    continue
                rows_read += batch.num_rows
                progress.advance(self.progress, batch.num_rows)
                for split, part in self._split(path, batch):
                    self._written[job.splits.names[split]].inc(part.num_rows)
                    if not job.num_shards:
                        parts.write(split, part)
                        continue
                    shard = (index + sequence[split]) % job.num_shards
                    yield beam.pvalue.TaggedOutput(
                        _SHARDS, ((split, shard), (index, sequence[split], part))
                    )
                    sequence[split] += 1
        except BaseException:
            quarantine.abort()
            parts.abort()
            raise
        quarantine.commit()
        parts.commit()
        counts = counts_path(job.output_dir, index)
        write_counts(counts, rows_read + quarantine.rows, observation)
        yield counts

    def _all_converted(
        self, paths: Sequence[str], quarantine: QuarantineFile
    ) -> Iterator[tuple[str, pa.RecordBatch | None, Observation]]:
        """:meth:`_converted` of each file in turn, with its path."""
        for path in paths:
            for batch, observed in self._converted(path, quarantine):
                yield path, batch, observed

    def _converted(
        self, path: str, quarantine: QuarantineFile
    ) -> Iterator[tuple[pa.RecordBatch | None, Observation]]:
        """Converted batches of a file (None: nothing converted), with type observations.

        Rejected rows are written to ``quarantine`` on the way (and counted
        there: read = converted + quarantined).
        """
        job = self._job
        for item in self._raw(path):
            if isinstance(item, dict):
                self._rows_read.inc()
                self._rows_rejected.inc()
                observed = item.pop(TYPES_KEY, None) or {}
                quarantine.write(_dump(item))
                yield None, observed
                continue
            self._rows_read.inc(item.num_rows)
            converted, reasons, bad_rows = _convert_batch(item, job.schema)
            observed = observe(item, job.schema, bad_rows) if job.observe else {}
            if reasons:
                self._rows_rejected.inc(len(reasons))
                for record in _rejected_records(item, reasons):
                    quarantine.write(_dump(record))
            yield (converted if converted.num_rows else None), observed

    def _raw(self, path: str) -> Iterator[pa.RecordBatch | dict[str, Any]]:
        """The file's raw batches and unparsed-row records, by its format."""
        job = self._job
        fmt = job.formats[path]
        if fmt == "csv":
            return _read_csv(path, job.dialects[path], schema=job.schema)
        if fmt == "jsonl":
            return _read_jsonl(path, job.schema, job.strict, observe=job.observe)
        return _read_parquet(path, job.schema)

    def _split(self, path: str, batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
        """``(split index, rows)`` pairs: by the file (fixed splits) or a content hash."""
        job = self._job
        batch = batch.replace_schema_metadata(None)
        if job.file_splits is not None:
            yield job.file_splits[path], batch
            return
        index = split_indices(batch, job.splits, job.seed)
        for split in range(len(job.splits.names)):
            mask = index == split
            count = int(mask.sum())
            if count:
                yield split, batch if count == batch.num_rows else batch.filter(pa.array(mask))


class _WriteShardFn(beam.DoFn):
    """Write one shard of a split from its grouped batches, in input order."""

    def __init__(self, output_dir: str, names: Sequence[str], count: int, schema: pa.Schema):
        self._output_dir = output_dir
        self._names = tuple(names)
        self._count = count
        self._schema = schema

    def process(self, element: tuple[tuple[int, int], Any]) -> Iterator[str]:
        (split, shard), items = element
        path = part_path(self._output_dir, self._names[split], shard, self._count)
        part = ParquetPart(path, self._schema)
        try:
            for _, _, batch in sorted(items, key=lambda item: (item[0], item[1])):
                part.write(batch)
        except BaseException:
            part.abort()
            raise
        part.commit()
        yield path
