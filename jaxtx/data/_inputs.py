"""Input checks: file expansion, formats, delimiters, schemas, sameness of columns."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jaxtx.core import files as fs

from ._common import (
    _COMPRESSION_EXTENSIONS,
    _EXTENSIONS,
    _LINE,
    FORMATS,
    SAMPLE_ROWS,
    IngestError,
    _is_binary,
)
from ._config import CsvOptions
from ._csv import (
    _SAMPLE_BLOCK_BYTES,
    _csv_header,
    _infer_csv,
    _read_csv,
)
from ._jsonl import (
    _infer_jsonl,
    _iter_lines,
)
from ._parquet import (
    _parquet_schema,
)
from .spans import InputNotFoundError, list_data_files


def detect_format(path: str, input_format: str = "auto") -> str:
    """The format of one input file.

    Args:
      path: the file.
      input_format: ``auto`` to decide by extension, or a format to force.

    Returns:
      ``csv``, ``parquet`` or ``jsonl``.

    Raises:
      IngestError: unknown format name or extension.
    """
    if input_format != "auto":
        if input_format not in FORMATS:
            raise IngestError(
                f"Unknown input_format {input_format!r}; use auto, {', '.join(FORMATS)}."
            )
        return input_format
    name = _strip_compression(os.path.basename(path).lower())
    fmt = _EXTENSIONS.get(os.path.splitext(name)[1])
    if fmt is None:
        raise IngestError(
            f"Cannot tell the format of {path!r} from its extension; pass input_format= "
            f"({', '.join(FORMATS)}) or name files {', '.join(sorted(_EXTENSIONS))}."
        )
    return fmt


def infer_schema(
    files: Sequence[str],
    *,
    input_format: str = "auto",
    csv: CsvOptions | None = None,
    csv_delimiter: str = ",",
    sample_rows: int = SAMPLE_ROWS,
) -> pa.Schema:
    """Infer the target schema from the first rows of the first non-empty file.

    :func:`ingest` widens these types over the whole input afterwards (see
    its documentation); this function looks at the sample only.

    Args:
      files: input files (not globs), in order.
      input_format: as for :func:`ingest`.
      csv: CSV dialect, as for :func:`ingest`.
      csv_delimiter: as for :func:`ingest` (used when ``csv`` is None).
      sample_rows: rows to look at.

    Returns:
      CSV/JSONL: int64, float64, bool or string per column (nested JSON values
      keep the type pyarrow infers); Parquet: the file's types (dictionaries
      decoded).

    Raises:
      IngestError: no file has a row, or a JSONL column mixes kinds of values.
    """
    formats = {f: detect_format(f, input_format) for f in files}
    dialects = _dialects(files, formats, _csv_options(csv, csv_delimiter))
    schema = _sample_schema(files, formats, dialects, sample_rows)
    return pa.schema([f.with_type(pa.string()) if f.type == pa.null() else f for f in schema])


def _sample_schema(
    files: Sequence[str],
    formats: Mapping[str, str],
    dialects: Mapping[str, CsvOptions],
    sample_rows: int = SAMPLE_ROWS,
) -> pa.Schema:
    """:func:`infer_schema`, with ``null`` for text columns empty in the sample."""
    path = _first_file_with_rows(files, formats, dialects)
    fmt = formats[path]
    if fmt == "parquet":
        return _parquet_schema(path)
    if fmt == "csv":
        return _infer_csv(path, dialects[path], sample_rows)
    return _infer_jsonl(path, sample_rows)


#: Input files are read in groups of consecutive files (in sorted order)
#: holding at least this many bytes (but the last group): one task and one
#: Parquet part per split for a group, however many small files it holds.
GROUP_BYTES = 64 << 20


def file_groups(files: Sequence[str]) -> list[tuple[str, ...]]:
    """Consecutive input files grouped to at least :data:`GROUP_BYTES` each (see there).

    Args:
      files: the input files, sorted.

    Returns:
      The groups, in order; a file of that size or more ends its group.
    """
    sizes = _sizes(files)
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    total = 0
    for path in files:
        current.append(path)
        total += sizes[path]
        if total >= GROUP_BYTES:
            groups.append(tuple(current))
            current, total = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def _sizes(files: Sequence[str]) -> dict[str, int]:
    """Stored size of each file (local: a stat; elsewhere: one listing call)."""
    out = {f: os.stat(f.removeprefix("file://")).st_size for f in files if fs.is_local(f)}
    remote = [f for f in files if f not in out]
    if remote:
        from apache_beam.io.filesystems import FileSystems

        for path, match in zip(remote, FileSystems.match(remote), strict=True):
            out[path] = sum(m.size_in_bytes for m in match.metadata_list)
    return out


def _expand_inputs(input_files: Sequence[str]) -> list[str]:
    """Expand globs and directories; every entry must exist."""
    if isinstance(input_files, str):
        input_files = [input_files]
    if not input_files:
        raise IngestError("No input files given; pass at least one file, glob or directory.")
    files: list[str] = []
    for entry in input_files:
        try:
            files.extend(list_data_files(entry))
        except InputNotFoundError as e:
            raise IngestError(str(e)) from None
    return sorted(set(files))


def _csv_options(csv: CsvOptions | None, csv_delimiter: str) -> CsvOptions:
    """The dialect from ``csv`` or, without it, from the ``csv_delimiter`` shortcut."""
    if csv is not None:
        if not isinstance(csv, CsvOptions):
            raise IngestError(f"csv must be a CsvOptions, got {type(csv).__name__}.")
        return csv
    if not isinstance(csv_delimiter, str) or len(csv_delimiter) != 1 or csv_delimiter in '"\r\n':
        raise IngestError(
            "csv_delimiter must be one character other than a quote or newline, "
            f"got {csv_delimiter!r}."
        )
    return CsvOptions(delimiter=csv_delimiter)


def _dialects(
    files: Sequence[str], formats: Mapping[str, str], options: CsvOptions
) -> dict[str, CsvOptions]:
    """The dialect of each CSV file: ``.tsv`` files use a tab when the delimiter is ``,``."""
    out = {}
    for path in files:
        if formats[path] != "csv":
            continue
        name = _strip_compression(os.path.basename(path).lower())
        tab = options.delimiter == "," and name.endswith(".tsv")
        out[path] = dataclasses.replace(options, delimiter="\t") if tab else options
    return out


def _strip_compression(name: str) -> str:
    for ext in _COMPRESSION_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _check_num_shards(num_shards: int | None) -> None:
    if num_shards is not None and (
        isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1
    ):
        raise IngestError(f"num_shards must be a positive integer or None, got {num_shards!r}.")


def _check_schema(schema: pa.Schema, formats: set[str]) -> pa.Schema:
    """Validate a caller's schema (unique names, types the inputs can be cast to)."""
    if not isinstance(schema, pa.Schema):
        raise IngestError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}.")
    names = schema.names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or not names or _LINE in names:
        raise IngestError(
            f"schema needs distinct column names (and not {_LINE!r}); duplicates: {dupes}."
        )
    if "csv" in formats:
        for f in schema:
            if _is_binary(f.type) or pa.types.is_string(f.type):
                continue
            try:
                pc.cast(pa.array([], pa.string()), f.type)
            except pa.ArrowNotImplementedError:
                raise IngestError(
                    f"schema column {f.name!r} has type {f.type}, which CSV text cannot be "
                    "converted to; use a scalar type (int, float, bool, string, date, timestamp)."
                ) from None
    return schema.remove_metadata()


def _first_file_with_rows(
    files: Sequence[str], formats: Mapping[str, str], dialects: Mapping[str, CsvOptions]
) -> str:
    """The first file holding at least one row (or malformed row)."""
    for path in files:
        if _has_rows(path, formats[path], dialects.get(path)):
            return path
    shown = ", ".join(files[:5]) + (f" (and {len(files) - 5} more)" if len(files) > 5 else "")
    raise IngestError(
        f"No rows to ingest in {shown}: the input is empty (a CSV with only a header "
        "counts as empty). Point ExampleGen at files that hold data."
    )


def _has_rows(path: str, fmt: str, dialect: CsvOptions | None) -> bool:
    if fmt == "parquet":
        try:
            return pq.read_metadata(fs.open_input(path, binary=True)).num_rows > 0
        except pa.ArrowInvalid as e:
            raise IngestError(f"{path}: not a readable Parquet file ({e}).") from e
    if fmt == "jsonl":
        with fs.open_input(path) as stream:
            return any(line.strip() for line in _iter_lines(stream))
    # Read as latin-1 (byte-exact): whether a row exists needs no UTF-8 scan.
    for _ in _read_csv(path, dialect or CsvOptions(), latin1=True, block=_SAMPLE_BLOCK_BYTES):
        return True
    return False


def _check_same_columns(
    files: Sequence[str],
    formats: Mapping[str, str],
    dialects: Mapping[str, CsvOptions],
    schema: pa.Schema,
) -> None:
    """With an inferred schema, every CSV/Parquet file must have the same columns."""
    expected = set(schema.names)
    for path in files:
        if formats[path] == "csv":
            found = _csv_header(path, dialects[path])[0]
        elif formats[path] == "parquet":
            found = _parquet_schema(path).names
        else:
            continue
        if found is None or set(found) == expected:
            continue
        missing = sorted(expected - set(found))
        extra = sorted(set(found) - expected)
        raise IngestError(
            f"{path}: columns differ from the inferred schema (missing {missing}, extra "
            f"{extra}). Make the files agree, or pass schema= (columns outside it are "
            "ignored, absent ones are null)."
        )
