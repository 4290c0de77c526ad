"""CSV reading: raw binary columns with exact physical line numbers, and type inference."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from jaxtx.core import files as fs

from ._common import (
    _CSV_BLOCK_BYTES,
    _HEADER_BLOCK_BYTES,
    _LINE,
    IngestError,
    _sample_batches,
    _with_meta,
)

#: A sampled column is typed numeric (or bool) when at most this fraction of its
#: non-empty values does not parse: one stray "forty" among ages must send that
#: row to quarantine, not turn the whole column into strings.
_TYPE_TOLERANCE = 0.005
_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?(([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$"


def _read_csv(
    path: str, delimiter: str, *, latin1: bool | None = None
) -> Iterator[pa.RecordBatch | dict[str, Any]]:
    """Raw batches (binary columns + line numbers) and rejected-row records of a CSV file.

    Args:
      path: the file.
      delimiter: field delimiter.
      latin1: read through latin-1 transcoding (needed when the file holds
        invalid UTF-8, whose malformed rows pyarrow cannot report otherwise);
        None decides by scanning the file.

    Yields:
      Record batches, then one dict per row with a wrong field count.
    """
    if latin1 is None:
        latin1 = not _is_utf8(path)
    names, arrow_names = _csv_header(path, delimiter, latin1=latin1)
    if names is None:
        return
    invalid: list[tuple[int, str, int]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text, row.actual_columns))
        return "skip"

    reader = _open_csv(path, delimiter, arrow_names, on_invalid, latin1=latin1)
    lines = _CsvLines(header_newlines=sum(n.count("\n") for n in names))
    try:
        for raw in reader:
            batch = pa.RecordBatch.from_arrays(
                [_restore_latin1(c) if latin1 else c for c in raw.columns], names=names
            )
            numbers = lines.for_batch(batch, invalid)
            batch, numbers = _drop_blank(batch, numbers)
            if batch.num_rows:
                yield _with_meta(batch, numbers, path, "csv", delimiter)
    except pa.ArrowInvalid as e:
        raise IngestError(
            f"{path}: the CSV cannot be parsed ({e}). Check quoting (an unclosed quote "
            "swallows the rest of the file) and the delimiter."
        ) from e
    finally:
        reader.close()
    for (_, text, actual), line in zip(invalid, lines.rejected_lines(invalid), strict=True):
        raw_text = text.encode("latin-1").decode("utf-8", "backslashreplace") if latin1 else text
        yield {
            "source": path,
            "line": line,
            "reason": f"expected {len(names)} fields (as in the header), found {actual}",
            "raw": raw_text,
        }


def _open_csv(
    path: str,
    delimiter: str,
    arrow_names: list[str],
    on_invalid: Callable[[Any], str],
    *,
    latin1: bool,
) -> pa_csv.CSVStreamingReader:
    """Streaming reader with every column as binary and exact row numbers."""
    return pa_csv.open_csv(
        fs.open_input(path),
        read_options=pa_csv.ReadOptions(
            use_threads=False,  # row numbers of invalid rows are only known single-threaded
            block_size=_CSV_BLOCK_BYTES,
            encoding="latin-1" if latin1 else "utf8",
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter=delimiter,
            newlines_in_values=True,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(arrow_names, pa.binary()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            check_utf8=False,
        ),
    )


def _csv_header(
    path: str, delimiter: str, *, latin1: bool | None = None
) -> tuple[list[str] | None, list[str]]:
    """Column names of a CSV file (None for a zero-byte file) and pyarrow's view of them.

    Args:
      path: the file.
      delimiter: field delimiter.
      latin1: as for :func:`_read_csv`; None decides from the first block.

    Returns:
      The names, and the names as pyarrow reports them (differs under latin-1).
    """
    if latin1 is None:
        latin1 = not _is_utf8(path, limit=2 * _HEADER_BLOCK_BYTES)
    try:
        reader = pa_csv.open_csv(
            fs.open_input(path),
            read_options=pa_csv.ReadOptions(
                use_threads=False,
                block_size=_HEADER_BLOCK_BYTES,
                encoding="latin-1" if latin1 else "utf8",
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                newlines_in_values=True,
                invalid_row_handler=lambda row: "skip",
            ),
            convert_options=pa_csv.ConvertOptions(check_utf8=False),
        )
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return None, []
        raise IngestError(f"{path}: cannot read the CSV header ({e}).") from e
    arrow_names = list(reader.schema.names)
    reader.close()
    names = arrow_names
    if latin1:
        try:
            names = [n.encode("latin-1").decode("utf-8") for n in arrow_names]
        except UnicodeDecodeError:
            raise IngestError(
                f"{path}: the header line is not valid UTF-8; re-encode the file as UTF-8."
            ) from None
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IngestError(f"{path}: duplicate column name(s) in the header: {dupes}.")
    if _LINE in names:
        raise IngestError(f"{path}: the column name {_LINE!r} is reserved.")
    return names, arrow_names


class _CsvLines:
    """Physical line numbers of CSV records.

    Records are numbered by pyarrow from 1 (the header); a record spans more
    than one physical line when a quoted value holds newlines. Rows with a
    wrong field count are reported (with their record number) by the invalid
    row handler before the batch holding the rows after them is produced.
    """

    def __init__(self, header_newlines: int) -> None:
        self._header_newlines = header_newlines
        self._accepted = 0
        self._accepted_newlines = 0
        self._events_records: list[np.ndarray] = []
        self._events_newlines: list[np.ndarray] = []
        self._rejected_numbers = np.zeros(0, dtype=np.int64)
        self._rejected_newlines = np.zeros(0, dtype=np.int64)

    def for_batch(self, batch: pa.RecordBatch, invalid: list[tuple[int, str, int]]) -> np.ndarray:
        """1-based physical line of each row of the next batch.

        Args:
          batch: the next batch read.
          invalid: ``(record number, text, field count)`` of the rejected rows so far.

        Returns:
          The line of each row of ``batch``.
        """
        numbers, newlines = self._rejected(invalid)
        k = self._accepted + np.arange(batch.num_rows, dtype=np.int64)
        # Data records start at 2; each rejected record before a row shifts its number.
        before = numbers - 2 - np.arange(len(numbers), dtype=np.int64)
        records = 2 + k + np.searchsorted(before, k, side="right")
        lines = records + self._header_newlines + self._accepted_newlines
        lines += _newlines_before(numbers, newlines, records)
        per_row = _newlines_per_row(batch)
        if per_row is not None:
            lines += np.cumsum(per_row) - per_row
            has = per_row > 0
            self._events_records.append(records[has])
            self._events_newlines.append(per_row[has])
            self._accepted_newlines += int(per_row.sum())
        self._accepted += batch.num_rows
        return lines

    def rejected_lines(self, invalid: list[tuple[int, str, int]]) -> list[int]:
        """1-based physical line of each rejected record (after all batches).

        Args:
          invalid: every rejected row of the file.

        Returns:
          The line of each, in order.
        """
        numbers, newlines = self._rejected(invalid)
        lines = numbers + self._header_newlines + _newlines_before(numbers, newlines, numbers)
        if self._events_records:
            records = np.concatenate(self._events_records)
            accepted = np.concatenate([[0], np.cumsum(np.concatenate(self._events_newlines))])
            lines += accepted[np.searchsorted(records, numbers, side="left")]
        return [int(x) for x in lines]

    def _rejected(self, invalid: list[tuple[int, str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Record numbers and newline counts of the rejected rows (cached)."""
        new = invalid[len(self._rejected_numbers) :]
        if new:
            numbers = np.fromiter((r[0] for r in new), np.int64, len(new))
            newlines = np.fromiter((r[1].count("\n") for r in new), np.int64, len(new))
            self._rejected_numbers = np.concatenate([self._rejected_numbers, numbers])
            self._rejected_newlines = np.concatenate([self._rejected_newlines, newlines])
        return self._rejected_numbers, self._rejected_newlines


def _newlines_before(numbers: np.ndarray, newlines: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Newlines inside the rejected records numbered below each of ``records``."""
    if not newlines.any():
        return np.zeros(len(records), dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(newlines)])
    return cumulative[np.searchsorted(numbers, records, side="left")]


def _newlines_per_row(batch: pa.RecordBatch) -> np.ndarray | None:
    """Newlines inside each row's values, or None when there are none."""
    total = None
    for col in batch.columns:
        data = col.buffers()[2] if col.null_count < len(col) else None
        if data is None or data.size == 0 or b"\n" not in data.to_pybytes():
            continue
        counts = pc.count_substring(col, "\n").fill_null(0).to_numpy().astype(np.int64)
        total = counts if total is None else total + counts
    return total


def _drop_blank(batch: pa.RecordBatch, lines: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """Remove rows whose fields are all empty (blank lines)."""
    if batch.num_columns == 0 or any(c.null_count == 0 for c in batch.columns):
        return batch, lines
    blank = pc.is_null(batch.column(0))
    for col in batch.columns[1:]:
        blank = pc.and_(blank, pc.is_null(col))
    keep = pc.invert(blank)
    if pc.all(keep).as_py():
        return batch, lines
    return batch.filter(keep), lines[keep.to_numpy(zero_copy_only=False)]


def _restore_latin1(col: pa.Array) -> pa.Array:
    """Undo the latin-1 -> UTF-8 transcoding of a binary column (original bytes)."""
    data = col.buffers()[2] if col.null_count < len(col) else None
    if data is None or data.to_pybytes().isascii():
        return col
    return pa.array(
        [None if v is None else v.decode("utf-8").encode("latin-1") for v in col.to_pylist()],
        pa.binary(),
    )


def _is_utf8(path: str, limit: int | None = None) -> bool:
    """Whether the file (or its first ``limit`` bytes) is valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    remaining = limit
    with fs.open_input(path) as stream:
        while chunk := stream.read(16 << 20 if remaining is None else min(16 << 20, remaining)):
            if remaining is not None:
                remaining -= len(chunk)
            if not (chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    return False
            if remaining == 0:
                return True
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _infer_csv(path: str, delimiter: str, sample_rows: int) -> pa.Schema:
    """Infer int64/float64/bool/string per column from the first rows of a CSV file."""
    batches = _sample_batches(_read_csv(path, delimiter), sample_rows)
    names, _ = _csv_header(path, delimiter)
    table = pa.Table.from_batches(batches) if batches else None
    fields = []
    for name in names or []:
        column = (
            table.column(name).combine_chunks() if table is not None else pa.array([], pa.binary())
        )
        fields.append(pa.field(name, _infer_text_type(column)))
    return pa.schema(fields)


def _infer_text_type(column: pa.Array) -> pa.DataType:
    """The narrowest of int64, float64, bool, string that fits the values.

    "Fits" allows a small fraction (:data:`_TYPE_TOLERANCE`) of values that do
    not parse; those rows are quarantined when the column is converted.
    """
    values = column.drop_null()
    try:
        values = pc.cast(values, pa.string())
    except pa.ArrowInvalid:
        return pa.string()
    values = pc.utf8_trim_whitespace(values.filter(pc.not_equal(values, "")))
    n = len(values)
    if n == 0:
        return pa.string()
    allowed = int(n * _TYPE_TOLERANCE)
    lower = pc.utf8_lower(values)
    checks = (
        (pa.int64(), pc.match_substring_regex(values, _INT_RE)),
        (pa.float64(), pc.match_substring_regex(lower, _FLOAT_RE)),
        (pa.bool_(), pc.is_in(lower, pa.array(["true", "false"]))),
    )
    for candidate, ok in checks:
        bad = n - pc.sum(ok).as_py() if n else 0
        if bad <= allowed:
            if candidate == pa.int64() and bad == 0:
                try:  # digits that overflow int64 are floats
                    pc.cast(values, candidate)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
            return candidate
    return pa.string()
