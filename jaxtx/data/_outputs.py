"""Output handling: the files workers write, clearing previous outputs, counting
what was written, Beam counters.

Workers write their files themselves, each under a name fixed by what it
holds (no temporary folders, no finalize step):

* ``data/<split>/part-IIIII-of-NNNNN.parquet``: the rows in that split of
  group ``I`` (of ``N``) of input files (``jaxtx.data._inputs.file_groups``),
  or with ``num_shards`` shard ``I`` of ``N``;
* ``quarantine/rejected-IIIII.jsonl``: the rejected rows of group ``I``
  (only when it has some);
* ``_counts/file-IIIII.json``: what reading group ``I`` counted (rows read,
  the type observation), written last; the driver sums and removes them.

A local file is written under a hidden temporary name and renamed into place
when complete; on an object store a written object appears whole when closed.
A re-run bundle writes the same names again, so retries leave no duplicates.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from jaxtx.core import files as fs

from ._common import (
    METRICS_NAMESPACE,
    IngestError,
)
from ._config import (
    IngestResult,
)
from ._widen import Observation, merge

COUNTS_DIR = "_counts"


def part_path(output_dir: str, split: str, index: int, count: int) -> str:
    """The Parquet file of group or shard ``index`` (of ``count``) of a split."""
    return fs.join(output_dir, "data", split, f"part-{index:05d}-of-{count:05d}.parquet")


def quarantine_path(output_dir: str, index: int) -> str:
    """The quarantine file of group ``index`` of input files."""
    return fs.join(output_dir, "quarantine", f"rejected-{index:05d}.jsonl")


def counts_path(output_dir: str, index: int) -> str:
    """The count file of group ``index`` of input files."""
    return fs.join(output_dir, COUNTS_DIR, f"file-{index:05d}.json")


class AtomicOutput:
    """A new file that appears under its name only once complete.

    Local: written to a hidden temporary name in the same folder and renamed.
    Elsewhere (object stores): a Beam filesystem stream, whose object appears
    when the stream is closed.
    """

    def __init__(self, path: str) -> None:
        """Open the output.

        Args:
          path: the final path (local or URI).
        """
        self.path = path
        self._local: str | None = None
        if fs.is_local(path):
            self._local = path.removeprefix("file://")
            folder, name = os.path.split(self._local)
            os.makedirs(folder, exist_ok=True)
            self._temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
            self.sink: Any = self._temp
        else:
            self.sink = FileSystems.create(path)

    def stream(self) -> Any:
        """A writable binary stream (opens the local temporary file)."""
        if self._local is not None and isinstance(self.sink, str):
            self.sink = open(self._temp, "wb")  # noqa: SIM115 - closed by commit/abort
        return self.sink

    def commit(self) -> None:
        """Close and put the file in place."""
        if not isinstance(self.sink, str):
            self.sink.close()
        if self._local is not None:
            os.replace(self._temp, self._local)

    def abort(self) -> None:
        """Drop what was written (best effort: the run is failing already)."""
        if not isinstance(self.sink, str):
            self.sink.close()
        if self._local is not None:
            if os.path.exists(self._temp):
                os.remove(self._temp)
        else:
            with contextlib.suppress(Exception):
                FileSystems.delete([self.path])


class ParquetPart:
    """One Parquet file written batch by batch (snappy; one row group per batch).

    Columns are dictionary-encoded as by default except those whose first
    batch shows mostly distinct values (:func:`dictionary_columns`): encoding
    those costs time and makes larger files.
    """

    def __init__(self, path: str, schema: pa.Schema) -> None:
        """Prepare the file (opened at the first batch).

        Args:
          path: its final path.
          schema: the Arrow schema of its rows.
        """
        self._out = AtomicOutput(path)
        self._schema = schema
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch (as one row group)."""
        if self._writer is None:
            self._open(batch)
        self._writer.write_batch(batch)  # type: ignore[union-attr]
        self.rows += batch.num_rows

    def commit(self) -> None:
        """Finish the file and put it in place."""
        if self._writer is None:
            self._open(None)
        self._writer.close()  # type: ignore[union-attr]
        self._out.commit()

    def abort(self) -> None:
        """Drop the file."""
        if self._writer is not None:
            self._writer.close()
        self._out.abort()

    def _open(self, first: pa.RecordBatch | None) -> None:
        self._writer = pq.ParquetWriter(
            self._out.sink,
            self._schema,
            compression="snappy",
            use_dictionary=dictionary_columns(first),
        )


#: Below this many values in a column's first batch, its encoding is left
#: to the Parquet default (dictionary) whatever their variety.
_DICTIONARY_SAMPLE = 1024


def dictionary_columns(first: pa.RecordBatch | None) -> bool | list[str]:
    """Which columns to dictionary-encode, judged from a file's first batch.

    Args:
      first: the first batch (None: no rows).

    Returns:
      True (all, the Parquet default) when there is no batch or a nested
      column; else the columns whose first batch holds fewer than
      :data:`_DICTIONARY_SAMPLE` values or at most half as many distinct
      values as values.
    """
    if first is None or any(pa.types.is_nested(f.type) for f in first.schema):
        return True
    chosen = []
    for name, column in zip(first.schema.names, first.columns, strict=True):
        present = len(column) - column.null_count
        if present < _DICTIONARY_SAMPLE or 2 * pc.count_distinct(column).as_py() <= present:
            chosen.append(name)
    return chosen


class SplitParts:
    """The Parquet parts of one group of input files, one per split with rows.

    Batches are encoded and written on one background thread, in order, while
    the caller prepares the next ones (at most :attr:`DEPTH` waiting).
    """

    DEPTH = 4

    def __init__(
        self, output_dir: str, names: Sequence[str], index: int, count: int, schema: pa.Schema
    ) -> None:
        """Configure; a part is created at its split's first batch.

        Args:
          output_dir: the artifact directory.
          names: the split names.
          index: the group's index.
          count: the number of groups.
          schema: the rows' schema.
        """
        self._paths = [part_path(output_dir, n, index, count) for n in names]
        self._schema = schema
        self._parts: dict[int, ParquetPart] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jaxtx-parquet")
        self._pending: collections.deque[Future[None]] = collections.deque()

    def write(self, split: int, batch: pa.RecordBatch) -> None:
        """Queue a batch of split ``split`` (index into the names)."""
        if split not in self._parts:
            self._parts[split] = ParquetPart(self._paths[split], self._schema)
        while len(self._pending) >= self.DEPTH:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._parts[split].write, batch))

    def commit(self) -> None:
        """Wait for every write, then finish the parts and put them in place."""
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        for split in sorted(self._parts):
            self._parts[split].commit()

    def abort(self) -> None:
        """Stop writing and drop the parts."""
        self._pool.shutdown(cancel_futures=True)
        for part in self._parts.values():
            part.abort()


class QuarantineFile:
    """The JSON Lines quarantine file of one group of input files, created at its first record."""

    def __init__(self, path: str) -> None:
        """Remember the path; nothing is created until a record comes.

        Args:
          path: its final path.
        """
        self._path = path
        self._out: AtomicOutput | None = None
        self.rows = 0

    def write(self, record: str) -> None:
        """Append one record (a JSON text without a newline)."""
        if self._out is None:
            self._out = AtomicOutput(self._path)
        self._out.stream().write(record.encode("utf-8") + b"\n")
        self.rows += 1

    def commit(self) -> None:
        """Put the file in place (when it has records)."""
        if self._out is not None:
            self._out.commit()

    def abort(self) -> None:
        """Drop the file."""
        if self._out is not None:
            self._out.abort()


def write_counts(path: str, rows_read: int, observation: Observation) -> None:
    """Write one group's count file (see the module doc)."""
    out = AtomicOutput(path)
    doc = {"rows_read": rows_read, "types": observation}
    out.stream().write(json.dumps(doc, sort_keys=True).encode("utf-8"))
    out.commit()


def read_counts(output_dir: str, groups: Sequence[Sequence[str]]) -> tuple[int, Observation]:
    """Sum the count files of every group of input files, then remove them.

    Args:
      output_dir: the artifact directory.
      groups: the groups of input files, in their index order.

    Returns:
      Rows read over all files and the merged type observation.

    Raises:
      IngestError: a count file is missing: the runner lost part of the work.
    """
    rows_read, observation = 0, Observation()
    found = {os.path.basename(p) for p in _match(fs.join(output_dir, COUNTS_DIR, "file-*.json"))}
    missing = [g for i, g in enumerate(groups) if f"file-{i:05d}.json" not in found]
    if missing:
        raise IngestError(
            f"The pipeline finished without the counts of {len(missing)} of {len(groups)} "
            f"group(s) of input files (first: {', '.join(missing[0][:3])}) under "
            f"{output_dir}: the runner dropped part of the pipeline; outputs are incomplete. "
            "Use another runner (--runner=direct or dask)."
        )
    for i in range(len(groups)):
        with FileSystems.open(counts_path(output_dir, i)) as f:
            doc = json.loads(f.read().decode("utf-8"))
        rows_read += int(doc["rows_read"])
        observation = merge(observation, doc["types"])
    _delete(fs.join(output_dir, COUNTS_DIR))
    return rows_read, observation


def fill_empty_shards(
    output_dir: str, names: Sequence[str], num_shards: int | None, schema: pa.Schema
) -> None:
    """Write empty Parquet files where a split needs one and no worker wrote it.

    With ``num_shards`` every shard of every split exists; without, a split
    without rows gets one empty ``part-00000-of-00001.parquet``.

    Args:
      output_dir: the artifact directory.
      names: the split names.
      num_shards: shards per split, or None (one part per group of files with rows).
      schema: the rows' schema.
    """
    for name in names:
        present = {_normal(p) for p in _match(fs.join(output_dir, "data", name, "part-*.parquet"))}
        if num_shards:
            wanted = [part_path(output_dir, name, i, num_shards) for i in range(num_shards)]
        else:
            wanted = [] if present else [part_path(output_dir, name, 0, 1)]
        for path in wanted:
            if _normal(path) not in present:
                ParquetPart(path, schema).commit()


def _normal(path: str) -> str:
    return path.removeprefix("file://")


def _delete(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def _clear_outputs(output_dir: str) -> None:
    """Remove the ``data``, ``quarantine`` and count folders of a previous run."""
    for sub in ("data", "quarantine", COUNTS_DIR):
        _delete(fs.join(output_dir, sub))


def _collect_result(
    result: Any,
    output_dir: str,
    names: Sequence[str],
    schema: pa.Schema,
    files: Sequence[str],
    *,
    rows_read: int | None = None,
) -> IngestResult:
    """Count what was written and check it against the rows the pipeline read.

    ``rows_read`` is the count the pipeline wrote to files (any runner); the
    ``rows_read`` counter is checked too where the runner reports metrics.
    Neither present means the run lost work: an error, never "empty input".
    """
    split_files = {
        n: tuple(_match(fs.join(output_dir, "data", n, "part-*.parquet"))) for n in names
    }
    split_counts = {
        n: sum(pq.read_metadata(fs.open_input(p, binary=True)).num_rows for p in paths)
        for n, paths in split_files.items()
    }
    quarantine = tuple(_match(fs.join(output_dir, "quarantine", "rejected-*.jsonl")))
    num_rejected = sum(_count_lines(p) for p in quarantine)
    num_written = sum(split_counts.values())
    num_read = num_written + num_rejected
    counted = _counter(result, "rows_read")
    if rows_read is None and counted is None:
        raise IngestError(
            f"The pipeline finished without writing its row count under {output_dir} "
            f"({num_written} rows written, {num_rejected} quarantined) and its runner "
            "reports no metrics: the runner dropped part of the pipeline; outputs are "
            "incomplete. Use another runner (--runner=direct or dask)."
        )
    for source, n in (("read", rows_read), ("counted", counted)):
        if n is not None and n != num_read:
            raise IngestError(
                f"The pipeline {source} {n} rows but {num_written} were written and "
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
