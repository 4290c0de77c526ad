"""BulkInferrer: batch predictions over an Examples artifact with Beam."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxtx.core.beam import pipeline_options

from ._artifacts import Examples, InferenceResult, Model, Output
from ._component import component

__all__ = ["BulkInferrer", "InferenceResult"]


class _ReadBatches(beam.DoFn):
    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows

    def process(self, path: str) -> Iterator[tuple[str, tuple[int, pa.RecordBatch]]]:
        for i, batch in enumerate(pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows)):
            yield path, (i, batch)


class _Predict(beam.DoFn):
    """Loads the exported model once per worker; adds ``<prefix><output>`` columns."""

    def __init__(self, model_dir: str, prefix: str) -> None:
        self.model_dir = model_dir
        self.prefix = prefix
        self._model: Any = None

    def setup(self) -> None:
        from jaxtx.serving.runtime import LoadedModel

        self._model = LoadedModel.load(self.model_dir)

    def process(
        self, item: tuple[str, tuple[int, pa.RecordBatch]]
    ) -> Iterator[tuple[str, tuple[int, pa.RecordBatch]]]:
        path, (index, batch) = item
        names = [s.name for s in self._model.signature.inputs]
        feats = {}
        for n in names:
            col = batch.column(batch.schema.get_field_index(n))
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                feats[n] = np.array(col.to_pylist(), dtype=object)
            else:
                feats[n] = col.to_numpy(zero_copy_only=False).astype(np.float32)
        out = self._model.predict(feats)
        arrays, fields = list(batch.columns), list(batch.schema)
        for k, v in out.items():
            v = np.asarray(v)
            arr = pa.array(v) if v.ndim == 1 else pa.array(list(v), type=pa.list_(pa.float32()))
            arrays.append(arr)
            fields.append(pa.field(f"{self.prefix}{k}", arr.type))
        yield path, (index, pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)))


def _write_group(item: tuple[str, list[tuple[int, pa.RecordBatch]]], out_dir: str) -> int:
    """Write one input file's batches, in their original order, atomically."""
    import os

    path, indexed = item
    table = pa.Table.from_batches([b for _, b in sorted(indexed, key=lambda t: t[0])])
    dest = os.path.join(out_dir, os.path.basename(path))
    tmp = dest + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, dest)
    return table.num_rows


@component
def BulkInferrer(
    model: Model,
    examples: Examples,
    inference_result: Output[InferenceResult],
    *,
    splits: list[str] | None = None,
    prefix: str = "prediction_",
    batch_rows: int = 8192,
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Predict every row of the chosen splits; write Parquet with prediction columns added.

    Args:
      model: the exported model (serving runtime; no training code).
      examples: raw examples holding the model's input features.
      splits: which splits (default: all).
      prefix: prefix of the added columns (``prediction_probabilities``, ...).
      batch_rows: rows per model call.
      beam_options: standard Beam flags.
    """
    chosen = splits or examples.split_names
    counts: dict[str, int] = {}
    model_dir = str(model.model_dir)
    for split in chosen:
        out_dir = inference_result.path / "data" / split
        out_dir.mkdir(parents=True, exist_ok=True)
        with beam.Pipeline(options=pipeline_options(beam_options)) as p:
            _ = (
                p
                | f"Files[{split}]" >> beam.Create(examples.files(split))
                | f"Read[{split}]" >> beam.ParDo(_ReadBatches(batch_rows))
                | f"Predict[{split}]" >> beam.ParDo(_Predict(model_dir, prefix))
                | f"ByFile[{split}]" >> beam.GroupByKey()
                | f"Write[{split}]" >> beam.Map(_write_group, str(out_dir))
            )
        counts[split] = sum(pq.ParquetFile(f).metadata.num_rows for f in out_dir.glob("*.parquet"))
    inference_result.properties.update(
        split_names=list(chosen), split_counts=counts, model=model.uri, prefix=prefix
    )
    return {f"rows.{k}": v for k, v in counts.items()}
