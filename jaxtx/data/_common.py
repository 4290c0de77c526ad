"""Shared pieces of ingestion: constants, the error type, raw-batch metadata, messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

FORMATS = ("csv", "parquet", "jsonl")
#: Rows per record batch (Parquet, JSONL); CSV batches hold ``_CSV_BLOCK_BYTES`` of text.
BATCH_ROWS = 65_536
#: Rows of the first non-empty file used to infer the schema.
SAMPLE_ROWS = 10_000

#: The largest record read (bytes). CSV: pyarrow parses blocks of at most this
#: size and a record must fit in one; a physical line over it is quarantined
#: with its line number (a longer record made of shorter lines, i.e. a quoted
#: value holding newlines, stops the ingest with a clear error). JSONL: a
#: longer line is quarantined.
MAX_RECORD_BYTES = 64 << 20

METRICS_NAMESPACE = "jaxtx.ingest"
_CSV_BLOCK_BYTES = 6 << 20
_HEADER_BLOCK_BYTES = 1 << 20
_JSON_CHUNK_BYTES = 8 << 20
_JSON_BLOCK_BYTES = 1 << 20
_LINE = "__jaxtx_line__"
_META_SOURCE = b"jaxtx.source"
_META_FORMAT = b"jaxtx.format"
_META_DELIMITER = b"jaxtx.delimiter"
_REJECTED = "rejected"
#: Key of a rejected record's type observation (removed before the record is written).
TYPES_KEY = "__jaxtx_types__"
_MAX_SHOWN = 200
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSION_EXTENSIONS = (".gz", ".bz2", ".zst", ".lz4")


class IngestError(ValueError):
    """Input that cannot be ingested: missing, empty, or inconsistent."""


def _with_meta(
    batch: pa.RecordBatch, lines: np.ndarray, path: str, fmt: str, delimiter: str = ""
) -> pa.RecordBatch:
    """Attach line numbers (a column) and the source (schema metadata) to a raw batch."""
    batch = batch.append_column(_LINE, pa.array(lines, pa.int64()))
    return batch.replace_schema_metadata(
        {
            _META_SOURCE: path.encode(),
            _META_FORMAT: fmt.encode(),
            _META_DELIMITER: delimiter.encode(),
        }
    )


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def _json_text(record: dict[str, Any]) -> str:
    def default(v: Any) -> Any:
        return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)

    return json.dumps(record, ensure_ascii=False, default=default)


def _show(value: Any) -> str:
    """A value for an error message (repr, shortened)."""
    text = repr(value)
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            text = f"invalid bytes {text}"
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _sample_batches(items: Iterator[Any], rows: int) -> list[pa.RecordBatch]:
    """The first ``rows`` rows of a reader's batches (rejected rows skipped)."""
    out: list[pa.RecordBatch] = []
    count = 0
    for item in items:
        if isinstance(item, dict):
            continue
        out.append(item.slice(0, rows - count))
        count += out[-1].num_rows
        if count >= rows:
            break
    return out
