"""jaxtx data: reading users' files (CSV, JSON Lines, Parquet) into Arrow and
writing split Parquet shards with a quarantine for rows that cannot be read.

A library: it imports only ``jaxtx.core``.
"""

from ._ingest import (
    BATCH_ROWS,
    FORMATS,
    SAMPLE_ROWS,
    IngestError,
    IngestExamples,
    IngestResult,
    SplitConfig,
    detect_format,
    infer_schema,
    ingest,
    row_hashes,
    split_indices,
)
from .spans import (
    InputNotFoundError,
    ResolvedInput,
    SpanNotFoundError,
    available_spans,
    list_data_files,
    resolve_input,
    resolve_span,
)

__all__ = [
    "BATCH_ROWS",
    "FORMATS",
    "SAMPLE_ROWS",
    "IngestError",
    "IngestExamples",
    "IngestResult",
    "InputNotFoundError",
    "ResolvedInput",
    "SpanNotFoundError",
    "SplitConfig",
    "available_spans",
    "detect_format",
    "infer_schema",
    "ingest",
    "list_data_files",
    "resolve_input",
    "resolve_span",
    "row_hashes",
    "split_indices",
]
