"""Output handling: clearing previous outputs, counting what was written, Beam counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
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


def _clear_outputs(output_dir: str) -> None:
    """Remove the ``data`` and ``quarantine`` subdirectories of a previous run."""
    for sub in ("data", "quarantine"):
        path = fs.join(output_dir, sub)
        if FileSystems.exists(path):
            FileSystems.delete([path])


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

    ``rows_read`` is the count the pipeline wrote to a file (any runner); the
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
