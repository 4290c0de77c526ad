"""Reading Parquet files by row groups, on local disks or any Beam filesystem.

One implementation for every library that splits Parquet files into read
tasks (statistics, transform fitting and apply): a *task* is ``(path,
row_group_indices)``, small enough to be one unit of work for a Beam worker.
Every function here closes the files it opens. Paths with ``://`` go through
``apache_beam.io.filesystems.FileSystems`` (``gs://``, ``s3://``, ...), which
is imported only then, so reading local files does not load Beam.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ReadTask",
    "is_remote",
    "iter_task_batches",
    "open_parquet",
    "parquet_num_rows",
    "parquet_schema",
    "row_group_tasks",
]

ReadTask = tuple[str, list[int]]
"""``(path, row group indices)``: one unit of reading work."""


def is_remote(path: str) -> bool:
    """Whether ``path`` is a filesystem URL (``scheme://...``) rather than a local path."""
    return "://" in path


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """Open a Parquet file for reading and close it (and its stream) on exit.

    Args:
        path: A local path or a URL of any Beam filesystem.

    Yields:
        The ``pq.ParquetFile``.
    """
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as stream, pq.ParquetFile(stream) as pf:
            yield pf
    else:
        with pq.ParquetFile(path, memory_map=True) as pf:
            yield pf


def parquet_num_rows(path: str) -> int:
    """Rows of a Parquet file, from its footer.

    Args:
        path: A local path or a URL.

    Returns:
        The number of rows.
    """
    with open_parquet(path) as pf:
        return int(pf.metadata.num_rows)


def parquet_schema(path: str) -> pa.Schema:
    """Arrow schema of a Parquet file, from its footer.

    Args:
        path: A local path or a URL.

    Returns:
        The schema.
    """
    with open_parquet(path) as pf:
        return pf.schema_arrow


def row_group_tasks(path: str, rows_per_task: int) -> list[ReadTask]:
    """Split a Parquet file into tasks of consecutive row groups of about ``rows_per_task`` rows.

    Args:
        path: A local path or a URL.
        rows_per_task: A task ends at the first row group that brings it to
            this many rows (``1``: one row group per task).

    Returns:
        The tasks in file order; none for a file without row groups.
    """
    tasks: list[ReadTask] = []
    with open_parquet(path) as pf:
        meta = pf.metadata
        group: list[int] = []
        rows = 0
        for i in range(meta.num_row_groups):
            group.append(i)
            rows += meta.row_group(i).num_rows
            if rows >= rows_per_task:
                tasks.append((path, group))
                group, rows = [], 0
    if group:
        tasks.append((path, group))
    return tasks


def iter_task_batches(
    task: ReadTask, *, batch_size: int, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Read the row groups of one task as record batches; the file is closed at the end.

    Args:
        task: ``(path, row group indices)`` from :func:`row_group_tasks`.
        batch_size: Rows per record batch (at most).
        columns: Columns to read (default: all).

    Yields:
        Record batches in file order.
    """
    path, groups = task
    if not groups:
        return
    with open_parquet(path) as pf:
        yield from pf.iter_batches(
            batch_size=batch_size,
            row_groups=groups,
            columns=None if columns is None else list(columns),
        )
