"""Bulk inference: predict every row of Parquet files with Beam.

A library transform usable without the pipeline machinery::

    from jaxtx.serving.bulk import bulk_predict

    rows = bulk_predict("model/1", ["data/eval/part-0.parquet"], "out/eval")

Each input file becomes one output file of the same name holding its columns
plus ``<prefix><output>`` prediction columns, rows in their original order.
Inputs are converted by :func:`jaxtx.core.model_format.to_model_inputs`: a
missing input column is an error naming it (never another column).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxtx.core import progress
from jaxtx.core.beam import BeamOptions, pipeline_options
from jaxtx.core.model_format import LoadedModel

__all__ = ["BulkPredict", "add_predictions", "bulk_predict"]


def add_predictions(model: LoadedModel, batch: pa.RecordBatch, prefix: str) -> pa.RecordBatch:
    """Predict one batch and append the outputs as columns.

    Args:
        model: The loaded model (its ``max_batch_size`` must cover the batch).
        batch: Rows holding the model's inputs (other columns are kept as they are).
        prefix: Prefix of the added columns (``prediction_probabilities``, ...).

    Returns:
        ``batch`` with one column per model output added.

    Raises:
        jaxtx.core.model_format.InputError: An input column is missing or invalid.
    """
    out = model.predict(batch)
    arrays, fields = list(batch.columns), list(batch.schema)
    for name, value in out.items():
        v = np.asarray(value)
        arr = pa.array(v) if v.ndim == 1 else pa.array(list(v), type=pa.list_(pa.float32()))
        arrays.append(arr)
        fields.append(pa.field(f"{prefix}{name}", arr.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class _ReadBatches(beam.DoFn):
    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows

    def process(self, path: str) -> Iterator[tuple[str, tuple[int, pa.RecordBatch]]]:
        with pq.ParquetFile(path) as f:
            for i, batch in enumerate(f.iter_batches(batch_size=self.batch_rows)):
                yield path, (i, batch)


class _Predict(beam.DoFn):
    """Loads the exported model once per worker."""

    def __init__(self, model_dir: str, prefix: str, batch_rows: int) -> None:
        self.model_dir = model_dir
        self.prefix = prefix
        self.batch_rows = batch_rows
        self._model: Any = None

    def setup(self) -> None:
        self._model = LoadedModel.load(self.model_dir, max_batch_size=self.batch_rows)

    def process(
        self, item: tuple[str, tuple[int, pa.RecordBatch]]
    ) -> Iterator[tuple[str, tuple[int, pa.RecordBatch]]]:
        path, (index, batch) = item
        yield path, (index, add_predictions(self._model, batch, self.prefix))


def _write_group(item: tuple[str, Iterable[tuple[int, pa.RecordBatch]]], out_dir: str) -> int:
    """Write one input file's batches, in their original order, atomically."""
    path, indexed = item
    table = pa.Table.from_batches([b for _, b in sorted(indexed, key=lambda t: t[0])])
    dest = os.path.join(out_dir, os.path.basename(path))
    tmp = dest + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, dest)
    return table.num_rows


class BulkPredict(beam.PTransform):
    """Beam transform: Parquet file paths in, written output file row counts out.

    Args:
        model_dir: The exported model directory.
        out_dir: Where to write one Parquet file per input file (must exist).
        prefix: Prefix of the prediction columns.
        batch_rows: Rows per model call.
        total_rows: The rows of all files, if known (shown as a progress bar's total).
    """

    def __init__(
        self,
        model_dir: str,
        out_dir: str,
        *,
        prefix: str = "prediction_",
        batch_rows: int = 8192,
        total_rows: int | None = None,
    ) -> None:
        super().__init__()
        self.model_dir, self.out_dir = str(model_dir), str(out_dir)
        self.prefix, self.batch_rows = prefix, int(batch_rows)
        self.total_rows = total_rows

    def expand(self, files: Any) -> Any:
        predicted = (
            files
            | "Read" >> beam.ParDo(_ReadBatches(self.batch_rows))
            | "Predict" >> beam.ParDo(_Predict(self.model_dir, self.prefix, self.batch_rows))
        )
        _ = predicted | "Progress" >> progress.counting(
            "scoring", rows=_scored_rows, total=self.total_rows
        )
        return (
            predicted
            | "ByFile" >> beam.GroupByKey()
            | "Write" >> beam.Map(_write_group, self.out_dir)
        )


def _scored_rows(item: tuple[str, tuple[int, pa.RecordBatch]]) -> int:
    return item[1][1].num_rows


def _rows_in(files: Sequence[str | os.PathLike[str]]) -> int:
    """Rows of Parquet files, from their footers."""
    total = 0
    for f in files:
        with pq.ParquetFile(os.fspath(f)) as pf:
            total += pf.metadata.num_rows
    return total


def bulk_predict(
    model_dir: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    prefix: str = "prediction_",
    batch_rows: int = 8192,
    beam_options: BeamOptions = None,
) -> int:
    """Predict every row of ``files`` in one Beam pipeline.

    Args:
        model_dir: The exported model directory.
        files: Parquet files holding the model's inputs.
        out_dir: Output directory (created when missing); one file per input.
        prefix: Prefix of the added prediction columns.
        batch_rows: Rows per model call.
        beam_options: Standard Beam flags or a mapping (default: the in-process runner).

    Returns:
        The number of rows written.
    """
    os.makedirs(out_dir, exist_ok=True)
    with beam.Pipeline(options=pipeline_options(beam_options)) as p:
        _ = (
            p
            | "Files" >> beam.Create([os.fspath(f) for f in files])
            | "BulkPredict"
            >> BulkPredict(
                os.fspath(model_dir),
                os.fspath(out_dir),
                prefix=prefix,
                batch_rows=batch_rows,
                total_rows=_rows_in(files),
            )
        )
    total = 0
    for f in files:
        with pq.ParquetFile(os.path.join(out_dir, os.path.basename(os.fspath(f)))) as pf:
            total += pf.metadata.num_rows
    return total
