"""Parquet reading: the schema's columns with row numbers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxtx.core import files as fs

from ._common import (
    BATCH_ROWS,
    _with_meta,
)


def _read_parquet(path: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches of the schema's columns of a Parquet file, with row numbers."""
    parquet = pq.ParquetFile(fs.open_input(path, binary=True))
    present = set(parquet.schema_arrow.names)
    columns = [n for n in schema.names if n in present]
    row = 1
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        numbers = np.arange(row, row + batch.num_rows, dtype=np.int64)
        row += batch.num_rows
        yield _with_meta(batch, numbers, path, "parquet")


def _parquet_schema(path: str) -> pa.Schema:
    """A Parquet file's schema without pandas index columns, dictionaries decoded."""
    schema = pq.read_schema(fs.open_input(path, binary=True))
    fields = []
    for f in schema:
        if f.name.startswith("__index_level_"):
            continue
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        fields.append(pa.field(f.name, t))
    return pa.schema(fields)
