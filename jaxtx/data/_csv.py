"""CSV reading: raw binary columns with exact physical line numbers, and type inference."""

from __future__ import annotations

import codecs
import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    MAX_RECORD_BYTES,
    IngestError,
    _is_binary,
    _sample_batches,
    _with_meta,
)
from ._config import CsvOptions
from ._widen import TYPE_TOLERANCE, text_kinds

_SHOWN_BYTES = 200

#: First block of a read that needs only the first rows (the type sample,
#: whether a file has rows): about 10,000 rows of a typical table.
_SAMPLE_BLOCK_BYTES = 1 << 20


class _RecordTooLarge(Exception):
    """pyarrow met a record longer than its block size."""


class _MalformedRow(Exception):
    """A multi-threaded read met a row with a wrong field count (whose line it cannot tell)."""


class _TypedValueError(Exception):
    """A value of a column parsed straight to its type does not parse."""


@dataclass(frozen=True)
class _Pass:
    """How one pass reads a file: block size, long-line cutting, threads, typed columns."""

    block: int
    cut_long: bool = False
    threads: bool = False
    types: tuple[tuple[str, pa.DataType], ...] = ()


@dataclass(frozen=True)
class _Layout:
    """What reading one CSV file needs besides the options: names and encoding."""

    names: list[str]
    arrow_names: list[str]
    latin1: bool
    header_lines: int

    def first_record(self, options: CsvOptions) -> int:
        """pyarrow's record number of the first data row (physical lines before it + 1)."""
        return options.skip_rows + self.header_lines + 1


def _read_csv(
    path: str,
    options: CsvOptions,
    *,
    latin1: bool | None = None,
    block: int | None = None,
    schema: pa.Schema | None = None,
) -> Iterator[pa.RecordBatch | dict[str, Any]]:
    """Raw batches (binary columns + line numbers) and rejected-row records of a CSV file.

    A whole file (``block`` None) is parsed by pyarrow's threads, ahead of
    the caller's work on the batches before; pyarrow cannot number the rows
    with a wrong field count that way, so a file holding one is read again on
    one thread (rows already produced are not produced twice: every pass cuts
    the same batches). With ``schema``, its int64 and float64 columns are
    parsed straight to their type when no row can be rejected after parsing
    (:func:`_typed_columns`); a value that does not parse makes the rest of
    the file be read as text (binary), whose conversion finds and names the
    rows. A file with records longer than pyarrow's usual block size is read
    again with blocks of :data:`MAX_RECORD_BYTES`, and its physical lines
    longer than that are quarantined.

    Args:
      path: the file.
      options: the dialect.
      latin1: read through latin-1 transcoding (needed when the file holds
        invalid UTF-8, whose malformed rows pyarrow cannot report otherwise);
        None decides by scanning the file. Ignored with a declared encoding.
      block: pyarrow's first block size (default :data:`_CSV_BLOCK_BYTES`);
        a smaller one makes reading only the first rows (a sample, whether
        there are rows) cheaper, on one thread. Any size
        yields the same rows: a record longer than it is read again with
        blocks of :data:`MAX_RECORD_BYTES`.
      schema: the target schema (None: every column binary).

    Yields:
      Record batches, then one dict per rejected row.
    """
    if options.encoding is not None:
        latin1 = False
    elif latin1 is None:
        latin1 = not _is_utf8(path)
    layout = _csv_layout(path, options, latin1=latin1)
    if layout is None:
        return
    produced = 0
    attempt = _Pass(
        block or _CSV_BLOCK_BYTES,
        threads=block is None,
        types=_typed_columns(schema, options, layout) if schema is not None else (),
    )
    while True:
        seen = 0
        try:
            for item in _read_csv_once(path, options, layout, attempt):
                if isinstance(item, dict):
                    yield item
                    continue
                if seen + item.num_rows > produced:
                    yield item.slice(max(produced - seen, 0))
                    produced = seen + item.num_rows
                seen += item.num_rows
            return
        except _MalformedRow:
            attempt = dataclasses.replace(attempt, threads=False)
        except _TypedValueError:
            attempt = dataclasses.replace(attempt, types=())
        except _RecordTooLarge:
            if attempt.cut_long:
                break
            attempt = _Pass(MAX_RECORD_BYTES, cut_long=True)
    raise IngestError(
        f"{path}: a record holds more than {MAX_RECORD_BYTES} bytes (jaxtx.data."
        "MAX_RECORD_BYTES) over several lines (a quoted value with newlines), or a quote "
        "is never closed. Check the quoting."
    )


def _typed_columns(
    schema: pa.Schema, options: CsvOptions, layout: _Layout
) -> tuple[tuple[str, pa.DataType], ...]:
    """The columns pyarrow may parse straight to their type: ``(pyarrow name, type)``.

    Only int64 and float64 columns, and only when no row of the file can be
    rejected after parsing (every column int64, float64 or string, nullable;
    text known to be UTF-8; neither trimming nor latin-1 restoring): a
    rejected row's ``raw`` is then always rebuilt from its original text. pyarrow's CSV parsing of these
    types is the cast's parsing of the same text, so the values are the same.
    """
    declared_utf8 = options.encoding is not None and codecs.lookup(options.encoding).name == "utf-8"
    if layout.latin1 or options.trim_whitespace or declared_utf8:  # (UTF-8 is not checked then)
        return ()
    fields = {f.name: f for f in schema}
    plain = (pa.int64(), pa.float64(), pa.string())
    if any(f.type not in plain or not f.nullable for f in schema):
        return ()
    return tuple(
        (arrow, fields[name].type)
        for name, arrow in zip(layout.names, layout.arrow_names, strict=True)
        if name in fields and fields[name].type != pa.string()
    )


def _read_csv_once(
    path: str, options: CsvOptions, layout: _Layout, attempt: _Pass
) -> Iterator[pa.RecordBatch | dict[str, Any]]:
    """One pass over a CSV file (see :func:`_read_csv`).

    With threads, raises :class:`_MalformedRow` before producing anything
    that depends on a malformed row's line: pyarrow calls the handler while
    parsing a block, so a batch produced before the first call follows only
    good rows. With typed columns, raises :class:`_TypedValueError` at the
    first batch holding a value that does not parse.
    """
    threads = attempt.threads
    invalid: list[tuple[int, str, int]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text, row.actual_columns))
        return "skip"

    stream = _source(path, options, MAX_RECORD_BYTES if attempt.cut_long else None)
    try:
        reader = _open_csv(stream, options, layout, on_invalid, attempt)
    except BaseException:
        stream.close()
        raise
    lines = _CsvLines(first_record=layout.first_record(options))
    try:
        for raw in reader:
            if threads and invalid:
                raise _MalformedRow
            batch = pa.RecordBatch.from_arrays(
                [_clean(c, options, layout.latin1) for c in raw.columns], names=layout.names
            )
            numbers = lines.for_batch(batch, invalid)
            batch, numbers = _drop_blank(batch, numbers)
            if batch.num_rows:
                yield _with_meta(batch, numbers, path, "csv", options.delimiter)
    except pa.ArrowInvalid as e:
        if "straddling" in str(e):
            raise _RecordTooLarge from None
        if attempt.types and "conversion error" in str(e):
            raise _TypedValueError from None
        raise IngestError(
            f"{path}: the CSV cannot be parsed ({e}). Check quoting (an unclosed quote "
            "swallows the rest of the file) and the delimiter."
        ) from e
    finally:
        reader.close()
    if threads and invalid:
        raise _MalformedRow
    yield from _long_line_records(path, stream)
    where = "the header" if options.header and not options.column_names else "column_names"
    for (_, text, actual), line in zip(invalid, lines.rejected_lines(invalid), strict=True):
        raw_text = (
            text.encode("latin-1").decode("utf-8", "backslashreplace") if layout.latin1 else text
        )
        yield {
            "source": path,
            "line": line,
            "reason": f"expected {len(layout.names)} fields (as in {where}), found {actual}",
            "raw": raw_text,
        }


def _long_line_records(path: str, stream: Any) -> Iterator[dict[str, Any]]:
    """Quarantine records of the lines a :class:`_LineFilter` cut out."""
    for line, size, head in getattr(stream, "cut", ()):
        yield {
            "source": path,
            "line": line,
            "reason": (
                f"the record holds {size} bytes, more than the limit of {MAX_RECORD_BYTES} "
                "(jaxtx.data.MAX_RECORD_BYTES)"
            ),
            "raw": head.decode("utf-8", "backslashreplace"),
        }


def _source(path: str, options: CsvOptions, max_line: int | None) -> Any:
    """The file's bytes, with comment lines (and over-long lines) blanked when asked."""
    stream = fs.open_input(path)
    if options.comment_prefix is None and max_line is None:
        return stream
    prefix = (
        options.comment_prefix.encode(options.encoding or "utf-8")
        if options.comment_prefix
        else None
    )
    return _LineFilter(stream, prefix, max_line)


def _encoding(options: CsvOptions, latin1: bool) -> str:
    return options.encoding or ("latin-1" if latin1 else "utf8")


def _parse_options(options: CsvOptions, on_invalid: Callable[[Any], str]) -> pa_csv.ParseOptions:
    return pa_csv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char if options.quote_char is not None else False,
        escape_char=options.escape_char if options.escape_char is not None else False,
        double_quote=options.double_quote,
        newlines_in_values=True,
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid,
    )


def _open_csv(
    stream: Any,
    options: CsvOptions,
    layout: _Layout,
    on_invalid: Callable[[Any], str],
    attempt: _Pass,
) -> pa_csv.CSVStreamingReader:
    """Streaming reader with every column binary but the typed ones (exact row numbers
    without threads)."""
    column_types: dict[str, pa.DataType] = dict.fromkeys(layout.arrow_names, pa.binary())
    column_types.update(attempt.types)
    try:
        return pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(
                use_threads=attempt.threads,  # invalid rows are numbered only without threads
                block_size=attempt.block,
                encoding=_encoding(options, layout.latin1),
                column_names=layout.arrow_names,
                skip_rows=options.skip_rows + layout.header_lines,
            ),
            parse_options=_parse_options(options, on_invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types=column_types,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                null_values=["", *options.null_values],
                check_utf8=False,
            ),
        )
    except pa.ArrowInvalid as e:
        if "straddling" in str(e):
            raise _RecordTooLarge from None
        if attempt.types and "conversion error" in str(e):
            raise _TypedValueError from None
        raise


def _clean(column: pa.Array, options: CsvOptions, latin1: bool) -> pa.Array:
    """Original bytes (latin-1 trick undone), trimmed and null markers applied when asked."""
    if not _is_binary(column.type):  # parsed to its type
        return column
    if latin1:
        column = _restore_latin1(column)
    if not options.trim_whitespace:
        return column
    # Bytes restored from latin-1 may not be UTF-8: trim ASCII spaces only there.
    trim = pc.ascii_trim_whitespace if latin1 else pc.utf8_trim_whitespace
    trimmed = trim(column.view(pa.string())).view(pa.binary())
    if options.null_values:
        markers = pa.array([v.encode() for v in options.null_values], pa.binary())
        trimmed = pc.if_else(pc.is_in(trimmed, value_set=markers), None, trimmed)
    return trimmed


def _csv_header(
    path: str, options: CsvOptions, *, latin1: bool | None = None
) -> tuple[list[str] | None, list[str]]:
    """Column names of a CSV file (None for an empty file) and pyarrow's view of them.

    Args:
      path: the file.
      options: the dialect.
      latin1: as for :func:`_read_csv`; None decides from the first block.

    Returns:
      The names, and the names as pyarrow reports them (differs under latin-1).
    """
    layout = _csv_layout(path, options, latin1=latin1)
    return (None, []) if layout is None else (layout.names, layout.arrow_names)


def _csv_layout(path: str, options: CsvOptions, *, latin1: bool | None = None) -> _Layout | None:
    """Names, encoding and header size of a CSV file; None for a file without lines."""
    if options.encoding is not None:
        latin1 = False
    elif latin1 is None:
        latin1 = not _is_utf8(path, limit=2 * _HEADER_BLOCK_BYTES)
    found = _first_record(path, options, latin1)
    if found is None:
        return None
    arrow_names, header_lines = found
    names = arrow_names
    if latin1 and options.header:
        try:
            names = [n.encode("latin-1").decode("utf-8") for n in arrow_names]
        except UnicodeDecodeError:
            raise IngestError(
                f"{path}: the header line is not valid UTF-8; pass encoding= (e.g. "
                "'latin-1') or re-encode the file as UTF-8."
            ) from None
    if options.column_names is not None:
        names = arrow_names = list(options.column_names)
    elif not options.header:
        names = arrow_names = [f"f{i}" for i in range(len(arrow_names))]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IngestError(f"{path}: duplicate column name(s) in the header: {dupes}.")
    if _LINE in names:
        raise IngestError(f"{path}: the column name {_LINE!r} is reserved.")
    return _Layout(names, arrow_names, latin1, header_lines if options.header else 0)


def _first_record(path: str, options: CsvOptions, latin1: bool) -> tuple[list[str], int] | None:
    """:func:`_first_record_names`, remembered per local file (size, modification time):
    inference, checks and the read ask the same file several times."""
    if not fs.is_local(path):
        return _first_record_names(path, options, latin1)
    local = path.removeprefix("file://")
    try:
        st = os.stat(local)
    except OSError:
        return _first_record_names(path, options, latin1)
    found = _first_record_cached(path, options, latin1, st.st_size, st.st_mtime_ns)
    return None if found is None else (list(found[0]), found[1])


@functools.lru_cache(maxsize=256)
def _first_record_cached(
    path: str, options: CsvOptions, latin1: bool, size: int, mtime_ns: int
) -> tuple[tuple[str, ...], int] | None:
    found = _first_record_names(path, options, latin1)
    return None if found is None else (tuple(found[0]), found[1])


def _first_record_names(
    path: str, options: CsvOptions, latin1: bool
) -> tuple[list[str], int] | None:
    """The fields of the first record (after ``skip_rows`` and blank or comment lines)
    and the physical lines up to its end, counted from ``skip_rows``."""
    blank = _leading_blank_lines(path, options)
    block = 1 << 16  # pyarrow parses (and types) the whole first block: keep it small
    while True:
        try:
            reader = pa_csv.open_csv(
                _source(path, options, None),
                read_options=pa_csv.ReadOptions(
                    use_threads=False,
                    block_size=block,
                    encoding=_encoding(options, latin1),
                    skip_rows=options.skip_rows + blank,
                ),
                parse_options=_parse_options(options, lambda row: "skip"),
                convert_options=pa_csv.ConvertOptions(check_utf8=False),
            )
            break
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return None
            if "straddling" in str(e) and block < MAX_RECORD_BYTES:
                block = _HEADER_BLOCK_BYTES if block < _HEADER_BLOCK_BYTES else MAX_RECORD_BYTES
                continue
            raise IngestError(f"{path}: cannot read the CSV header ({e}).") from e
    fields = list(reader.schema.names)
    reader.close()
    return fields, blank + 1 + sum(n.count("\n") for n in fields)


def _leading_blank_lines(path: str, options: CsvOptions) -> int:
    """Blank (or comment) lines after ``skip_rows`` and before the header."""
    stream = _source(path, options, None)
    try:
        head = stream.read(_HEADER_BLOCK_BYTES)
    finally:
        stream.close()
    lines = head.split(b"\n")[options.skip_rows :]
    count = 0
    for line in lines[:-1]:
        if line.strip():
            break
        count += 1
    return count


class _LineFilter:
    """A binary stream with comment lines and over-long lines emptied (newlines kept).

    Emptied lines become blank lines, which hold no example, so every other
    line keeps its number. ``cut`` lists ``(line, bytes, first bytes)`` of each
    over-long line removed.
    """

    def __init__(self, raw: Any, comment: bytes | None, max_line: int | None) -> None:
        self._raw = raw
        self._comment = re.compile(rb"(?m)^" + re.escape(comment) + rb"[^\n]*") if comment else None
        self._max = max_line
        self._pending = b""
        self._dropping: list[int] | None = None  # [line, size] of a line being cut
        self._line = 1
        self._out = bytearray()
        self._eof = False
        self._head = b""
        self.cut: list[tuple[int, int, bytes]] = []
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._out) < size):
            chunk = self._raw.read(1 << 20)
            if not chunk:
                self._eof = True
                self._finish()
                break
            self._feed(chunk)
        size = len(self._out) if size < 0 else min(size, len(self._out))
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def close(self) -> None:
        self.closed = True
        self._raw.close()

    def _finish(self) -> None:
        """End of input: a last line without a newline."""
        if self._dropping is not None:
            self.cut.append((self._dropping[0], self._dropping[1], self._head))
            self._dropping = None
        elif self._pending:
            self._out += self._filter(self._pending)
            self._pending = b""

    def _feed(self, chunk: bytes) -> None:
        if self._dropping is not None:
            end = chunk.find(b"\n")
            if end < 0:
                self._dropping[1] += len(chunk)
                return
            self._dropping[1] += end
            self.cut.append((self._dropping[0], self._dropping[1], self._head))
            self._dropping = None
            self._out += b"\n"
            self._line += 1
            chunk = chunk[end + 1 :]
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1
        complete, self._pending = data[:cut], data[cut:]
        self._out += self._filter(complete)
        if self._max is not None and len(self._pending) > self._max:
            self._head = self._pending[:_SHOWN_BYTES]
            self._dropping = [self._line, len(self._pending)]
            self._pending = b""

    def _filter(self, data: bytes) -> bytes:
        """Complete lines with comments and over-long lines emptied."""
        first = self._line
        self._line += data.count(b"\n")
        if self._comment is not None:
            data = self._comment.sub(b"", data)
        if self._max is None or len(data) <= self._max:
            return data
        out = []
        for i, line in enumerate(data.split(b"\n")):
            if len(line) > self._max:
                self.cut.append((first + i, len(line), line[:_SHOWN_BYTES]))
                line = b""
            out.append(line)
        return b"\n".join(out)


class _CsvLines:
    """Physical line numbers of CSV records.

    Records are numbered by pyarrow from 1 (skipped lines and the header
    count, one per physical line); a record spans more
    than one physical line when a quoted value holds newlines. Rows with a
    wrong field count are reported (with their record number) by the invalid
    row handler before the batch holding the rows after them is produced.
    """

    def __init__(self, first_record: int) -> None:
        self._first = first_record
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
        # Data records start at the first record; each rejected record before a
        # row shifts its number.
        before = numbers - self._first - np.arange(len(numbers), dtype=np.int64)
        records = self._first + k + np.searchsorted(before, k, side="right")
        lines = records + self._accepted_newlines
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
        lines = numbers + _newlines_before(numbers, newlines, numbers)
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
        if not _is_binary(col.type):
            continue
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
    """Whether the file (or its first ``limit`` bytes) is valid UTF-8.

    A whole local file is scanned once per (size, modification time): schema
    inference and the main read ask about the same file.
    """
    if limit is None and fs.is_local(path):
        local = path.removeprefix("file://")
        try:
            st = os.stat(local)
        except OSError:
            return _scan_utf8(path, None)
        return _is_utf8_cached(local, st.st_size, st.st_mtime_ns)
    return _scan_utf8(path, limit)


@functools.lru_cache(maxsize=256)
def _is_utf8_cached(path: str, size: int, mtime_ns: int) -> bool:
    return _scan_utf8(path, None)


def _scan_utf8(path: str, limit: int | None) -> bool:
    """Decode the file (or its first ``limit`` bytes) as UTF-8."""
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


def _infer_csv(path: str, options: CsvOptions, sample_rows: int) -> pa.Schema:
    """Infer int64/float64/bool/string per column from the first rows of a CSV file."""
    batches = _sample_batches(_read_csv(path, options, block=_SAMPLE_BLOCK_BYTES), sample_rows)
    names, _ = _csv_header(path, options)
    table = pa.Table.from_batches(batches) if batches else None
    fields = []
    for name in names or []:
        column = (
            table.column(name).combine_chunks() if table is not None else pa.array([], pa.binary())
        )
        fields.append(pa.field(name, _infer_text_type(column)))
    return pa.schema(fields)


def _infer_text_type(column: pa.Array) -> pa.DataType:
    """The narrowest of int64, float64, bool, string that fits the values; null when empty.

    "Fits" allows a small fraction (:data:`TYPE_TOLERANCE`) of values that are
    not numbers (or booleans); those rows are quarantined when the column is
    converted. Decimals among integers make the column float64.
    """
    n, ints, floats, bools = text_kinds(column)
    if n == 0:
        return pa.null()
    allowed = int(n * TYPE_TOLERANCE)
    if n - floats <= allowed:
        return pa.int64() if ints == floats else pa.float64()
    if n - bools <= allowed:
        return pa.bool_()
    return pa.string()
