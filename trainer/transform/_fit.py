"""Fitting the analyzers of a transform graph: one full pass over the data per stage.

Every analyzer of a stage is computed in the same pass by one mergeable
accumulator (:class:`FitAccumulator`), either in a Beam pipeline
(``CombineGlobally`` over record batches) or in-process.

The results are deterministic: every summary merges exactly (exact integer
moment sums, a deterministic quantile summary, exact counts, minima and
maxima), so they depend only on the record batches, never on their order, on
how a runner spreads them over workers or on its merge tree. An analyzer whose
input depends on another analyzer's result (e.g. ``scale_to_z_score`` of a
column filled with its mean) belongs to a later stage: stage ``k`` runs after
stages ``1..k-1`` are fitted, on values computed with their results.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jaxtx.core.numerics import ExactMoments
from jaxtx.core.parquet import (
    is_remote,
    iter_task_batches,
    parquet_num_rows,
    parquet_schema,
    row_group_tasks,
)
from jaxtx.core.sketches import QuantileSketch

from ._graph import NUMERIC, Analyzer, FittedTransform, TransformError
from ._trace import column_kind

if TYPE_CHECKING:
    from jaxtx.core.beam import BeamOptions

__all__ = [
    "DataLike",
    "DataSource",
    "FitAccumulator",
    "check_columns",
    "fit",
    "open_source",
]

DataLike: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pa.Table | pa.RecordBatch


# ----------------------------------------------------------------- summaries


class _MeanStd:
    """Count, mean and standard deviation of finite values (exact, order-independent sums)."""

    def __init__(self) -> None:
        self.moments = ExactMoments()

    def add(self, x: np.ndarray) -> None:
        self.moments.add(x[np.isfinite(x)])

    def merge(self, other: _MeanStd) -> None:
        self.moments.merge(other.moments)

    def result(self) -> dict[str, Any]:
        m = self.moments
        return {"count": m.n, "mean": m.mean(), "std": m.std()}


class _MinMax:
    def __init__(self) -> None:
        self.n = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        if len(x):
            self.n += len(x)
            self.min = min(self.min, float(x.min()) + 0.0)  # never -0.0
            self.max = max(self.max, float(x.max()) + 0.0)

    def merge(self, other: _MinMax) -> None:
        self.n += other.n
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def result(self) -> dict[str, Any]:
        if not self.n:
            return {"count": 0, "min": None, "max": None}
        return {"count": self.n, "min": self.min, "max": self.max}


class _Quantiles:
    """Deterministic quantile summary of the finite values (rank error below ``1 / k``)."""

    def __init__(self, q: Sequence[float], k: int) -> None:
        self.q = list(q)
        self.sketch = QuantileSketch(k)

    def add(self, x: np.ndarray) -> None:
        self.sketch.update(x[np.isfinite(x)].astype(np.float64))

    def merge(self, other: _Quantiles) -> None:
        self.sketch.merge(other.sketch)

    def result(self) -> dict[str, Any]:
        n = self.sketch.n
        values = self.sketch.quantiles(self.q) if n and self.q else []
        return {"count": n, "q": self.q, "values": values}


class _Counts:
    """Exact value counts (strings, or finite numbers) for vocabularies and modes."""

    def __init__(self, kind: str, params: Mapping[str, Any]) -> None:
        self.kind = kind
        self.top_k = params.get("top_k")
        self.threshold = int(params.get("frequency_threshold", 1))
        self.counts: Counter[Any] = Counter()

    def add(self, x: Any) -> None:
        if isinstance(x, pa.ChunkedArray | pa.Array):
            vc = pc.value_counts(x.drop_null())
            if len(vc):
                values = vc.field("values").to_pylist()
                counts = vc.field("counts").to_pylist()
                self.counts.update(dict(zip(values, counts, strict=True)))
            return
        x = x[np.isfinite(x)] + 0.0  # -0.0 -> 0.0
        if len(x):
            values, counts = np.unique(x, return_counts=True)
            self.counts.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))

    def merge(self, other: _Counts) -> None:
        self.counts.update(other.counts)

    def result(self) -> dict[str, Any]:
        total = int(sum(self.counts.values()))
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if self.kind == "most_frequent":
            if not ranked:
                return {"count": 0, "value": None, "frequency": 0}
            value, freq = ranked[0]
            return {"count": total, "value": value, "frequency": int(freq)}
        kept = [(v, c) for v, c in ranked if c >= self.threshold]
        if self.top_k is not None:
            kept = kept[: self.top_k]
        return {
            "count": total,
            "num_unique": len(ranked),
            "vocabulary": [v for v, _ in kept],
            "frequencies": [int(c) for _, c in kept],
        }


def _summary(analyzer: Analyzer, kll_k: int) -> Any:
    if analyzer.kind == "mean_std":
        return _MeanStd()
    if analyzer.kind == "min_max":
        return _MinMax()
    if analyzer.kind == "quantiles":
        return _Quantiles(analyzer.params["q"], kll_k)
    return _Counts(analyzer.kind, analyzer.params)


class FitAccumulator:
    """Mergeable summaries of the analyzers of one stage.

    Args:
        graph: The graph, with the results of earlier stages filled in.
        stage: The stage to fit.
        kll_k: Size of the quantile sketches.
    """

    def __init__(self, graph: FittedTransform, stage: int, kll_k: int = 200) -> None:
        self.graph = graph
        self.ids = [i for i, a in enumerate(graph.analyzers) if a.stage == stage]
        self.summaries = [_summary(graph.analyzers[i], kll_k) for i in self.ids]
        self.num_rows = 0

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> FitAccumulator:
        """Add the rows of a batch.

        Args:
            batch: Rows holding (at least) the graph's input columns.

        Returns:
            ``self``.
        """
        g = self.graph
        cols, rows = g._prepare({c.name: batch.column(c.name) for c in g.inputs}, "the batch")
        self.num_rows += rows
        wanted = [g.analyzers[i].input for i in self.ids]
        values = g.evaluate(cols, wanted)
        for i, summary in zip(self.ids, self.summaries, strict=True):
            summary.add(values[g.analyzers[i].input])
        return self

    def merge(self, other: FitAccumulator) -> FitAccumulator:
        """Merge another accumulator of the same stage into this one.

        Args:
            other: The accumulator.

        Returns:
            ``self``.
        """
        self.num_rows += other.num_rows
        for mine, theirs in zip(self.summaries, other.summaries, strict=True):
            mine.merge(theirs)
        return self

    def results(self) -> dict[str, Any]:
        """Results (JSON values): ``{"num_rows": n, "results": {analyzer id: result}}``."""
        return {
            "num_rows": self.num_rows,
            "results": {str(i): s.result() for i, s in zip(self.ids, self.summaries, strict=True)},
        }


# --------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSource:
    """Training data to analyze: Parquet files or an in-memory table.

    Attributes:
        description: How error messages name it.
        schema: Schema of the first file (or of the table).
        files: Parquet files, or ``None`` for a table.
        table: The table, or ``None`` for files.
        num_rows: Rows in all.
    """

    description: str
    schema: pa.Schema
    files: tuple[str, ...] | None = None
    table: pa.Table | None = None
    num_rows: int = 0


def _expand(data: Any) -> list[str]:
    items = [data] if isinstance(data, str | os.PathLike) else list(data)
    files: list[str] = []
    for item in items:
        path = os.fspath(item)
        if is_remote(path):
            from apache_beam.io.filesystems import FileSystems

            files.extend(m.path for r in FileSystems.match([path]) for m in r.metadata_list)
        elif any(ch in path for ch in "*?["):
            files.extend(sorted(glob.glob(path, recursive=True)))
        elif os.path.isdir(path):
            files.extend(str(p) for p in sorted(Path(path).rglob("*.parquet")))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise TransformError(f"training data {path!r} does not exist; pass Parquet files")
    return files


def open_source(data: DataLike) -> DataSource:
    """Describe the training data (schema, files, rows) without reading the rows.

    Args:
        data: A ``pa.Table``/``pa.RecordBatch``, a Parquet file, a directory
            (every ``*.parquet`` under it), a glob pattern, or a list of them.

    Returns:
        The source.

    Raises:
        TransformError: No files match, or the data has no rows.
    """
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        if data.num_rows == 0:
            raise TransformError(
                "the training table has no rows; the analyzers need data: check the split"
            )
        return DataSource("the table", data.schema, table=data, num_rows=data.num_rows)
    files = _expand(data)
    if not files:
        raise TransformError(
            f"no Parquet files in {data!r}: the training split is empty; pass the files of a "
            "non-empty split"
        )
    rows = 0
    for path in files:
        try:
            rows += parquet_num_rows(path)
        except (OSError, pa.ArrowException) as exc:
            raise TransformError(f"{path}: not a readable Parquet file ({exc})") from exc
    if rows == 0:
        raise TransformError(
            f"the training data ({len(files)} file(s), first {files[0]!r}) has no rows; "
            "the analyzers need data: check the split"
        )
    schema = parquet_schema(files[0])
    more = f" (and {len(files) - 1} more files)" if len(files) > 1 else ""
    return DataSource(f"file {files[0]!r}{more}", schema, files=tuple(files), num_rows=rows)


def check_columns(graph: FittedTransform, source: DataSource) -> None:
    """Check that every file (or the table) has the graph's inputs with the right kinds.

    Args:
        graph: The traced graph.
        source: The data.

    Raises:
        TransformError: Naming the column, the file and the columns it has.
    """
    schemas = (
        [(source.description, source.schema)]
        if source.files is None
        else [(f"file {f!r}", parquet_schema(f)) for f in source.files]
    )
    for where, schema in schemas:
        for col in graph.inputs:
            idx = schema.get_field_index(col.name)
            if idx < 0:
                raise TransformError(
                    f"column {col.name!r} is missing from {where}; it has {schema.names}; "
                    "add the column or stop using it in the preprocessing function"
                )
            kind = column_kind(schema.field(idx).type)
            if kind != col.kind:
                raise TransformError(
                    f"column {col.name!r} of {where} is {schema.field(idx).type}, but the "
                    f"transform reads it as {col.kind} (from the first file); make the "
                    "files agree"
                )


def _batches(source: DataSource, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    if source.table is not None:
        yield from source.table.select(columns).to_batches(max_chunksize=batch_size)
        return
    assert source.files is not None
    for path in source.files:
        for task in row_group_tasks(path, 1):
            yield from iter_task_batches(task, batch_size=batch_size, columns=columns)


def _fit_stage_local(
    graph: FittedTransform, stage: int, source: DataSource, batch_size: int, kll_k: int
) -> dict[str, Any]:
    acc = FitAccumulator(graph, stage, kll_k)
    for batch in _batches(source, [c.name for c in graph.inputs], batch_size):
        acc.add_batch(batch)
    return acc.results()


def _check_result(graph: FittedTransform, aid: int, result: Mapping[str, Any]) -> None:
    if result.get("count", 0) > 0:
        return
    analyzer = graph.analyzers[aid]
    users = [
        name
        for name, nid in graph.outputs
        if aid in _analyzers_under(graph, nid)  # outputs that need it
    ]
    kind = graph.nodes[analyzer.input].kind
    what = "finite values" if kind == NUMERIC else "values"
    raise TransformError(
        f"analyzer {analyzer.kind} of {graph.describe(analyzer.input)} (needed by outputs "
        f"{users}) saw no {what} in the training data; fill the column "
        "(tx.fill_missing(..., value=...)) or stop using it"
    )


def _analyzers_under(graph: FittedTransform, nid: int) -> set[int]:
    found: set[int] = set()
    stack = [nid]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        node = graph.nodes[n]
        if "analyzer" in node.params:
            aid = node.params["analyzer"]
            found.add(aid)
            stack.append(graph.analyzers[aid].input)
        stack.extend(node.args)
    return found


def fit(
    graph: FittedTransform,
    source: DataSource,
    *,
    beam_options: BeamOptions = None,
    use_beam: bool = True,
    batch_size: int = 65536,
    kll_k: int = 200,
    temp_dir: str | None = None,
) -> FittedTransform:
    """Fit every analyzer of a traced graph, one full pass over the data per stage.

    Args:
        graph: The traced graph.
        source: The data (see :func:`open_source`).
        beam_options: Beam flags or mapping (see ``jaxtx.core.beam.pipeline_options``).
        use_beam: Run each pass as a Beam pipeline (else in this process).
        batch_size: Rows per record batch.
        kll_k: Size of the quantile summaries: exact up to 65536 values, then
            a deterministic rank error below ``1 / kll_k``.
        temp_dir: Where a pipeline writes its result (reachable by the workers
            and this process); a local temporary directory by default.

    Returns:
        The fitted graph.

    Raises:
        TransformError: A column is missing or of the wrong kind in some file,
            or an analyzer saw no values.
    """
    check_columns(graph, source)
    if graph.num_stages == 0:
        return graph.with_results({}, source.num_rows)
    with contextlib.ExitStack() as cleanup:
        if use_beam and source.table is not None:
            # A table embedded in the pipeline would be pickled (and compressed)
            # into it; Parquet files are read by the workers instead.
            source = _spill(source, [c.name for c in graph.inputs], batch_size, temp_dir, cleanup)
        return _fit_stages(graph, source, beam_options, use_beam, batch_size, kll_k, temp_dir)


def _spill(
    source: DataSource,
    columns: list[str],
    batch_size: int,
    temp_dir: str | None,
    cleanup: contextlib.ExitStack,
) -> DataSource:
    """Write an in-memory table to a temporary Parquet file for a Beam pipeline."""
    assert source.table is not None
    if temp_dir is None:
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="jaxtx-transform-"))
        path = os.path.join(tmp, "table.parquet")
    else:
        from apache_beam.io.filesystems import FileSystems

        path = FileSystems.join(temp_dir, f"table-{uuid.uuid4().hex}.parquet")
        cleanup.callback(lambda: FileSystems.delete([path]) if FileSystems.exists(path) else None)
    table = source.table.select(columns)
    if is_remote(path):
        with FileSystems.create(path) as f:
            pq.write_table(table, f, row_group_size=batch_size)
    else:
        pq.write_table(table, path, row_group_size=batch_size)
    return DataSource(source.description, source.schema, files=(path,), num_rows=source.num_rows)


def _fit_stages(
    graph: FittedTransform,
    source: DataSource,
    beam_options: BeamOptions,
    use_beam: bool,
    batch_size: int,
    kll_k: int,
    temp_dir: str | None,
) -> FittedTransform:
    num_rows = source.num_rows
    for stage in range(1, graph.num_stages + 1):
        if use_beam:
            from ._beam import fit_stage_beam

            doc = fit_stage_beam(graph, stage, source, beam_options, batch_size, kll_k, temp_dir)
        else:
            doc = _fit_stage_local(graph, stage, source, batch_size, kll_k)
        num_rows = int(doc["num_rows"])
        if num_rows == 0:
            raise TransformError(f"{source.description} gave no rows; the training split is empty")
        results = {int(k): v for k, v in doc["results"].items()}
        for aid, result in results.items():
            _check_result(graph, aid, result)
        graph = graph.with_results(results, num_rows)
    return graph
