"""Applying a fitted graph to Parquet files: one output shard per read task, all or nothing.

:func:`transform_parquet` is the library entry point (used by the Transform
component, usable on its own). Every input file becomes one output shard
``part-{i:05d}.parquet`` (``i``: the file's position in its split), or, when
it has more than ``rows_per_shard`` rows, several shards
``part-{i:05d}-{j:05d}.parquet`` of whole row groups, so that sorted shard
names keep the input order. The shards are written by a Beam pipeline (one
shard per work item, so the apply scales like the analyzers) or in this
process, into a staging directory that replaces the output only when every
shard is written: after an error no output exists.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jaxtx.core.parquet import (
    ReadTask,
    is_remote,
    iter_task_batches,
    parquet_schema,
    row_group_tasks,
)

from ._graph import FittedTransform, TransformError

if TYPE_CHECKING:
    from jaxtx.core.beam import BeamOptions

__all__ = ["ShardSpec", "apply_batch", "plan_shards", "transform_parquet", "write_shard"]


@dataclass(frozen=True)
class ShardSpec:
    """One output shard: the rows of ``task`` written to ``out_dir/name``.

    Attributes:
        split: The split the rows belong to.
        task: ``(input path, row groups)``; no row groups for an empty file.
        out_dir: Directory of the shard.
        name: File name of the shard.
    """

    split: str
    task: ReadTask
    out_dir: str
    name: str


def plan_shards(
    split: str, index: int, path: str, out_dir: str, *, rows_per_shard: int
) -> list[ShardSpec]:
    """The shards of one input file.

    Args:
        split: Its split.
        index: Its position in the split (names the shards).
        path: The input Parquet file.
        out_dir: Where its shards go.
        rows_per_shard: A shard ends at the first row group that brings it to this many rows.

    Returns:
        One shard for a file of at most ``rows_per_shard`` rows (or no rows), else several.
    """
    tasks = row_group_tasks(path, rows_per_shard) or [(path, [])]
    if len(tasks) == 1:
        return [ShardSpec(split, tasks[0], out_dir, f"part-{index:05d}.parquet")]
    return [
        ShardSpec(split, task, out_dir, f"part-{index:05d}-{j:05d}.parquet")
        for j, task in enumerate(tasks)
    ]


def apply_batch(
    graph: FittedTransform,
    batch: pa.RecordBatch | pa.Table,
    passthrough: Sequence[str] = (),
    *,
    where: str = "the batch",
) -> pa.RecordBatch | pa.Table:
    """The graph's outputs for ``batch``, then the ``passthrough`` columns unchanged.

    Args:
        graph: The fitted graph.
        batch: Raw rows.
        passthrough: Raw columns to copy after the outputs.
        where: How an error names the batch.

    Returns:
        Same type as ``batch``.

    Raises:
        TransformError: A passthrough column is missing.
    """
    out = graph.apply_table(batch)
    cols = {name: out.column(name) for name in out.schema.names}
    names = batch.schema.names
    for c in passthrough:
        if c not in names:
            raise TransformError(
                f"passthrough column {c!r} is not in {where} (columns: {names}); "
                "add it to the data or drop it from passthrough"
            )
        cols[c] = batch.column(names.index(c))
    if isinstance(batch, pa.RecordBatch):
        return pa.record_batch(cols)
    return pa.table(cols)


def write_shard(
    graph: FittedTransform, spec: ShardSpec, passthrough: Sequence[str], batch_size: int
) -> int:
    """Transform the rows of one shard and write them (to a temporary name, then renamed).

    Args:
        graph: The fitted graph.
        spec: The shard.
        passthrough: Raw columns to copy after the outputs.
        batch_size: Rows per record batch and per output row group.

    Returns:
        Rows written.
    """
    path = spec.task[0]
    final = _join(spec.out_dir, spec.name)
    tmp = _join(spec.out_dir, f".{spec.name}.{uuid.uuid4().hex}.tmp")
    columns = list(dict.fromkeys([c.name for c in graph.inputs] + list(passthrough)))
    rows = 0
    with _open_output(tmp) as sink:
        writer: pq.ParquetWriter | None = None
        try:
            for batch in iter_task_batches(spec.task, batch_size=batch_size, columns=columns):
                table = apply_batch(graph, pa.Table.from_batches([batch]), passthrough, where=path)
                if writer is None:
                    writer = pq.ParquetWriter(sink, table.schema)
                writer.write_table(table)
                rows += table.num_rows
            if writer is None:  # no rows: still write the schema
                empty = parquet_schema(path).empty_table()
                pq.write_table(apply_batch(graph, empty, passthrough, where=path), sink)
        finally:
            if writer is not None:
                writer.close()
    _rename(tmp, final)
    return rows


def check_inputs(
    graph: FittedTransform, splits: Mapping[str, Sequence[str]], passthrough: Sequence[str]
) -> None:
    """Check every file for the graph's inputs and the passthrough columns (footers only).

    Args:
        graph: The fitted graph.
        splits: Split name -> Parquet files.
        passthrough: Raw columns to copy.

    Raises:
        TransformError: Naming the file, the missing columns and the columns it has.
    """
    clash = sorted(set(passthrough) & {c.name for c in graph.output_columns})
    if clash:
        raise TransformError(
            f"passthrough columns {clash} have the names of outputs of the preprocessing "
            "function; rename the outputs or drop them from passthrough"
        )
    for files in splits.values():
        for f in files:
            names = parquet_schema(f).names
            missing = [c.name for c in graph.inputs if c.name not in names]
            if missing:
                raise TransformError(
                    f"input columns {missing} of the transform are not in {f} (columns: "
                    f"{names}); add them to the data or stop using them"
                )
            missing = [c for c in passthrough if c not in names]
            if missing:
                raise TransformError(
                    f"passthrough columns {missing} are not in {f} (columns: {names}); "
                    "add them to the data or drop them from passthrough"
                )


def transform_parquet(
    graph: FittedTransform,
    splits: Mapping[str, Sequence[str]],
    output_dir: str | os.PathLike[str],
    *,
    passthrough: Sequence[str] = (),
    beam_options: BeamOptions = None,
    use_beam: bool = True,
    batch_size: int = 65536,
    rows_per_shard: int = 1 << 20,
    temp_dir: str | None = None,
) -> dict[str, int]:
    """Apply a fitted graph to the Parquet files of every split; write ``output_dir/<split>/``.

    Args:
        graph: The fitted graph.
        splits: Split name -> Parquet files (local paths or Beam filesystem
            URLs), in the order their shards are numbered.
        output_dir: Directory receiving one directory per split (each must
            not exist yet, or be empty); a local path, which the workers must
            also reach when the runner is not in-process (a shared disk).
        passthrough: Raw columns copied unchanged after the outputs (the
            label, columns to slice on).
        beam_options: Beam flags or mapping; the in-process ``FnApiRunner`` by default.
        use_beam: ``False`` writes the shards in this process instead.
        batch_size: Rows per record batch (and per output row group).
        rows_per_shard: Input files of more rows are cut into several shards.
        temp_dir: Where the pipeline writes its row counts (default: a local
            temporary directory).

    Returns:
        Rows written per split.

    Raises:
        TransformError: A column is missing, a passthrough column has the name
            of an output, or an output directory is not empty. On any error
            nothing is left in ``output_dir``.

    Example:
        >>> transform_parquet(graph, {"train": ["raw/train/a.parquet"]}, "out",
        ...                   passthrough=["label"])  # doctest: +SKIP
        {'train': 1000}
    """
    out = os.fspath(output_dir)
    check_inputs(graph, splits, passthrough)
    for split in splits:
        dest = os.path.join(out, split)
        if os.path.isdir(dest) and os.listdir(dest):
            raise TransformError(
                f"output directory {dest} is not empty; transform into a new directory"
            )
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=out)
    try:
        files: list[Any] = []
        for split, paths in splits.items():
            os.makedirs(os.path.join(staging, split))
            files.extend((split, i, p, os.path.join(staging, split)) for i, p in enumerate(paths))
        counts = _write_shards(
            graph, files, passthrough, beam_options, use_beam, batch_size, rows_per_shard, temp_dir
        )
        for split in splits:
            dest = os.path.join(out, split)
            if os.path.isdir(dest):
                os.rmdir(dest)  # checked empty above
            os.replace(os.path.join(staging, split), dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {split: counts.get(split, 0) for split in splits}


def _write_shards(
    graph: FittedTransform,
    files: list[tuple[str, int, str, str]],
    passthrough: Sequence[str],
    beam_options: BeamOptions,
    use_beam: bool,
    batch_size: int,
    rows_per_shard: int,
    temp_dir: str | None,
) -> dict[str, int]:
    """Write the shards of ``(split, index, path, out_dir)`` files; rows per split."""
    if use_beam:
        from ._beam import run_transform_pipeline

        return run_transform_pipeline(
            graph,
            files,
            passthrough=passthrough,
            batch_size=batch_size,
            rows_per_shard=rows_per_shard,
            beam_options=beam_options,
            temp_dir=temp_dir,
        )
    counts: dict[str, int] = {}
    for f in files:
        for spec in plan_shards(*f, rows_per_shard=rows_per_shard):
            rows = write_shard(graph, spec, passthrough, batch_size)
            counts[spec.split] = counts.get(spec.split, 0) + rows
    return counts


# ------------------------------------------------------------------ files


def _join(directory: str, name: str) -> str:
    if is_remote(directory):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(directory, name)
    return os.path.join(directory, name)


class _open_output:
    """Context manager: a writable binary stream for a local path or a Beam filesystem URL."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stream: Any = None

    def __enter__(self) -> Any:
        if is_remote(self._path):
            from apache_beam.io.filesystems import FileSystems

            self._stream = FileSystems.create(self._path)
        else:
            self._stream = open(self._path, "wb")
        return self._stream

    def __exit__(self, *exc: object) -> None:
        self._stream.close()
        if exc[0] is not None:
            _delete(self._path)


def _rename(src: str, dst: str) -> None:
    if is_remote(src):
        from apache_beam.io.filesystems import FileSystems

        FileSystems.rename([src], [dst])
    else:
        os.replace(src, dst)


def _delete(path: str) -> None:
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        if FileSystems.exists(path):
            FileSystems.delete([path])
    elif os.path.exists(path):
        os.remove(path)
