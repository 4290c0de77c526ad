"""jaxtx.core.parquet (row-group tasks, reading that closes its files) and core.beam's harness."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtx.core.beam import run_and_read_json
from jaxtx.core.parquet import (
    iter_task_batches,
    open_parquet,
    parquet_num_rows,
    parquet_schema,
    row_group_tasks,
)


@pytest.fixture
def parquet(tmp_path: Path) -> str:
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"a": list(range(10)), "b": [str(i) for i in range(10)]}), path, row_group_size=3
    )  # row groups of 3, 3, 3, 1
    return str(path)


def test_row_group_tasks_cover_the_file_in_order(parquet: str, tmp_path: Path) -> None:
    assert row_group_tasks(parquet, 1) == [
        (parquet, [0]),
        (parquet, [1]),
        (parquet, [2]),
        (parquet, [3]),
    ]
    assert row_group_tasks(parquet, 5) == [(parquet, [0, 1]), (parquet, [2, 3])]
    assert row_group_tasks(parquet, 100) == [(parquet, [0, 1, 2, 3])]
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), empty)
    assert parquet_num_rows(str(empty)) == 0
    for task in row_group_tasks(str(empty), 1):
        assert sum(b.num_rows for b in iter_task_batches(task, batch_size=4)) == 0
    assert list(iter_task_batches((str(empty), []), batch_size=4)) == []


def test_iter_task_batches_reads_columns_and_closes(parquet: str) -> None:
    batches = list(iter_task_batches((parquet, [1, 3]), batch_size=2, columns=["a"]))
    assert [b.num_rows for b in batches] == [2, 2]
    assert pa.Table.from_batches(batches).column("a").to_pylist() == [3, 4, 5, 9]
    assert parquet_schema(parquet).names == ["a", "b"]
    with open_parquet(parquet) as pf:
        assert pf.metadata.num_rows == 10
    assert pf.closed


def test_run_and_read_json_returns_each_document_and_cleans_up(tmp_path: Path) -> None:
    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        nums = p | beam.Create([1, 2, 3, 4])
        return {
            "sum": nums | "Sum" >> beam.CombineGlobally(sum) | "S" >> beam.Map(lambda s: {"s": s}),
            "n": nums
            | "Count" >> beam.combiners.Count.Globally()
            | "N" >> beam.Map(lambda n: {"n": n}),
        }

    assert run_and_read_json(build, temp_dir=str(tmp_path)) == {"sum": {"s": 10}, "n": {"n": 4}}
    assert list(tmp_path.iterdir()) == []

    def failing(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        def boom(x: int) -> dict[str, int]:
            raise ValueError("bad element")

        return {"x": p | beam.Create([1]) | beam.Map(boom)}

    with pytest.raises(Exception, match="bad element"):
        run_and_read_json(failing, temp_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
