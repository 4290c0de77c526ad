"""The Beam side of the transform library: fitting a stage and applying a graph.

Imported only when a pipeline runs, so that ``import jaxtx.trainer.transform``
(writing a preprocessing function) does not load Beam.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam

from jaxtx.core.beam import BatchCombineFn, BeamOptions, run_and_read_json
from jaxtx.core.parquet import iter_task_batches, row_group_tasks

from ._apply import ShardSpec, apply_batch, plan_shards, write_shard
from ._fit import DataSource, FitAccumulator
from ._graph import FittedTransform

__all__ = ["FitCombineFn", "TransformBatches", "fit_stage_beam", "run_transform_pipeline"]


class FitCombineFn(BatchCombineFn):
    """``CombineFn`` from record batches to the results of one stage's analyzers.

    Args:
        graph: The graph, with the results of earlier stages filled in.
        stage: The stage to fit.
        kll_k: Size of the quantile sketches.
    """

    def __init__(self, graph: FittedTransform, stage: int, kll_k: int = 200) -> None:
        super().__init__()
        self._graph = graph
        self._stage = stage
        self._kll_k = kll_k

    def create_accumulator(self) -> FitAccumulator:
        return FitAccumulator(self._graph, self._stage, self._kll_k)

    def extract_output(self, accumulator: FitAccumulator) -> dict[str, Any]:
        return accumulator.results()


def fit_stage_beam(
    graph: FittedTransform,
    stage: int,
    source: DataSource,
    beam_options: BeamOptions,
    batch_size: int,
    kll_k: int,
    temp_dir: str | None,
) -> dict[str, Any]:
    """Fit the analyzers of one stage in a Beam pipeline over Parquet files.

    Args:
        graph: The graph, with the results of earlier stages filled in.
        stage: The stage to fit.
        source: Parquet files (an in-memory table is spilled to a file first).
        beam_options: Beam flags or mapping.
        batch_size: Rows per record batch.
        kll_k: Size of the quantile sketches.
        temp_dir: Where the pipeline writes its result (default: a local
            temporary directory).

    Returns:
        ``{"num_rows": n, "results": {analyzer id: result}}``.
    """
    assert source.files is not None
    columns = [c.name for c in graph.inputs]
    rows_per_task = max(batch_size, 1 << 20)

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        return {
            "stage": (
                p
                | "Files" >> beam.Create(list(source.files or ()))
                | "Plan" >> beam.FlatMap(row_group_tasks, rows_per_task=rows_per_task)
                | "Read" >> beam.FlatMap(iter_task_batches, batch_size=batch_size, columns=columns)
                | "Analyze" >> beam.CombineGlobally(FitCombineFn(graph, stage, kll_k))
            )
        }

    return run_and_read_json(
        build, beam_options=beam_options, temp_dir=temp_dir, prefix="jaxtx-transform"
    )["stage"]


class TransformBatches(beam.PTransform):
    """``PCollection[pa.RecordBatch]`` -> ``PCollection[pa.RecordBatch]`` of transformed rows.

    Each batch goes through :meth:`FittedTransform.apply_table` (NumPy, the
    same code as every other apply path); ``passthrough`` columns are copied
    after the outputs.

    Args:
        graph: The fitted graph.
        passthrough: Raw columns copied unchanged.
    """

    def __init__(self, graph: FittedTransform, passthrough: Sequence[str] = ()) -> None:
        super().__init__()
        self._graph = graph
        self._passthrough = tuple(passthrough)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        graph, keep = self._graph, self._passthrough
        return pcoll | "ApplyTransform" >> beam.Map(
            lambda batch: apply_batch(graph, batch, keep, where="a record batch")
        )


class _WriteShard(beam.DoFn):
    """Write one output shard; yields ``(split, rows written)``."""

    def __init__(self, graph: FittedTransform, passthrough: Sequence[str], batch_size: int) -> None:
        super().__init__()
        self._graph = graph
        self._passthrough = tuple(passthrough)
        self._batch_size = batch_size

    def process(self, spec: ShardSpec) -> Iterator[tuple[str, int]]:
        yield spec.split, write_shard(self._graph, spec, self._passthrough, self._batch_size)


def run_transform_pipeline(
    graph: FittedTransform,
    files: Sequence[tuple[str, int, str, str]],
    *,
    passthrough: Sequence[str],
    batch_size: int,
    rows_per_shard: int,
    beam_options: BeamOptions,
    temp_dir: str | None,
) -> dict[str, int]:
    """Transform Parquet files into shards in one Beam pipeline.

    Args:
        graph: The fitted graph.
        files: ``(split, file index, input path, output directory)`` per input file.
        passthrough: Raw columns copied unchanged.
        batch_size: Rows per record batch (and per output row group).
        rows_per_shard: An input file of more rows is cut into several shards.
        beam_options: Beam flags or mapping.
        temp_dir: Where the row counts are written (default: a local temporary directory).

    Returns:
        Rows written per split (splits without files are absent).
    """

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        return {
            "counts": (
                p
                | "Files" >> beam.Create(list(files))
                | "Plan" >> beam.FlatMap(lambda f: plan_shards(*f, rows_per_shard=rows_per_shard))
                | "Spread" >> beam.Reshuffle()
                | "Write" >> beam.ParDo(_WriteShard(graph, passthrough, batch_size))
                | "Sum" >> beam.CombinePerKey(sum)
                | "Counts" >> beam.combiners.ToDict()
            )
        }

    doc = run_and_read_json(
        build, beam_options=beam_options, temp_dir=temp_dir, prefix="jaxtx-transform"
    )
    return {str(k): int(v) for k, v in doc["counts"].items()}
