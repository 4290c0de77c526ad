"""jaxtx data: reading users' files (CSV, JSON Lines, Parquet) into Arrow and
writing split Parquet shards with a quarantine for rows that cannot be read.

Modules, one per concern: ``_pipeline`` (the Beam pipeline and :func:`ingest`),
``_csv``, ``_jsonl``, ``_parquet`` (one reader per format), ``_convert``
(casting to the target schema), ``_hashing`` (split hashes), ``_inputs`` and
``_outputs`` (checks, counting), ``spans`` (input patterns with spans).

A library: it imports only ``jaxtx.core``.
"""

from ._common import BATCH_ROWS, FORMATS, MAX_RECORD_BYTES, SAMPLE_ROWS, IngestError
from ._config import (
    CsvOptions,
    IngestResult,
    SplitConfig,
    add_csv_arguments,
    csv_options_from_args,
)
from ._hashing import row_hashes
from ._inputs import detect_format, infer_schema
from ._pipeline import IngestExamples, ingest, split_indices
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
    "MAX_RECORD_BYTES",
    "FORMATS",
    "CsvOptions",
    "SAMPLE_ROWS",
    "IngestError",
    "IngestExamples",
    "IngestResult",
    "InputNotFoundError",
    "ResolvedInput",
    "SpanNotFoundError",
    "SplitConfig",
    "add_csv_arguments",
    "available_spans",
    "csv_options_from_args",
    "detect_format",
    "infer_schema",
    "ingest",
    "list_data_files",
    "resolve_input",
    "resolve_span",
    "row_hashes",
    "split_indices",
]
