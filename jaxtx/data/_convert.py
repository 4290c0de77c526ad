"""Conversion of raw batches to the target schema; rows that do not fit become quarantine records."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._common import (
    _LINE,
    _META_DELIMITER,
    _META_FORMAT,
    _META_SOURCE,
    IngestError,
    _is_binary,
    _json_text,
    _show,
)
from ._widen import FLOAT_RE, INT_RE


def _convert_batch(
    batch: pa.RecordBatch, schema: pa.Schema
) -> tuple[pa.RecordBatch, dict[int, list[str]], dict[str, list[int]]]:
    """Cast a raw batch to ``schema``.

    Returns:
      The converted rows that fit, the reasons of each row that does not, and
      per column the rows whose value does not fit its type.
    """
    is_csv = batch.schema.metadata.get(_META_FORMAT) == b"csv"
    names = set(batch.schema.names)
    reasons: dict[int, list[str]] = {}
    bad_rows: dict[str, list[int]] = {}
    arrays = []
    for f in schema:
        if f.name in names:
            array, bad = _convert_column(batch.column(f.name), f, is_csv=is_csv)
        else:
            array, bad = pa.nulls(batch.num_rows, f.type), {}
        if bad:
            bad_rows[f.name] = sorted(bad)
        if not f.nullable:
            bad.update(_missing_required(array, f, bad))
        for row, reason in bad.items():
            reasons.setdefault(row, []).append(reason)
        arrays.append(array)
    converted = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if reasons:
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[list(reasons)] = False
        converted = converted.filter(pa.array(keep))
    return converted, reasons, bad_rows


def _convert_column(
    column: pa.Array, f: pa.Field, *, is_csv: bool
) -> tuple[pa.Array, dict[int, str]]:
    """Cast one column; values that do not fit become null and are reported by row."""
    target = f.type
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if column.type == target:
        return column, {}
    if target == pa.null():  # a column without a type yet (empty in the sample)
        rows = pc.is_valid(column).to_numpy(zero_copy_only=False).nonzero()[0]
        reason = f"column {f.name!r}: no type yet (empty in the sample)"
        return pa.nulls(len(column)), {int(i): reason for i in rows}
    bad: dict[int, str] = {}
    if _is_binary(column.type) and not _is_binary(target):
        if _parses_bytes(target):
            # Fast path: every value parses as a number or boolean straight
            # from its bytes (so it is ASCII, hence UTF-8). Otherwise the text
            # path below finds and names the rows that do not fit.
            try:
                return pc.cast(column, target), {}
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        column, bad = _cast(column, pa.string(), f.name, "UTF-8 text")
        if column.type == target:
            return column, bad
    prepare = _prepare_text if is_csv and pa.types.is_string(column.type) else None
    converted, more = _cast(column, target, f.name, str(target), prepare=prepare)
    bad.update(more)
    return converted, bad


def _parses_bytes(target: pa.DataType) -> bool:
    """Whether a binary -> ``target`` cast parses the bytes as the text cast would."""
    return pa.types.is_integer(target) or pa.types.is_floating(target)


def _cast(
    column: pa.Array,
    target: pa.DataType,
    name: str,
    expected: str,
    *,
    prepare: Callable[[pa.Array], pa.Array] | None = None,
) -> tuple[pa.Array, dict[int, str]]:
    """Safe cast; on failure, find the failing values by bisection and null them.

    Args:
      column: the values.
      target: the type to cast to.
      name: column name, for the reasons.
      expected: what a value should be, for the reasons.
      prepare: applied before a second attempt when the first cast fails.

    Returns:
      The cast column (failing values null) and a reason per failing row.
    """
    try:
        return pc.cast(column, target), {}
    except pa.ArrowNotImplementedError as e:
        raise IngestError(
            f"Column {name!r}: {column.type} values cannot be converted to {target} ({e}); "
            "change the column's type in the schema."
        ) from e
    except pa.ArrowInvalid:
        pass
    original = column
    if prepare is not None:
        column = prepare(column)
        try:
            return pc.cast(column, target), {}
        except pa.ArrowInvalid:
            pass
    failing = _failing_rows(column, target)
    bad = {
        i: f"column {name!r}: expected {expected}, found {_show(original[i].as_py())}"
        for i in failing
    }
    mask = np.zeros(len(column), dtype=bool)
    mask[failing] = True
    cleaned = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
    return pc.cast(cleaned, target), bad


#: Beyond this many values that cannot be numbers, failing rows are found by
#: pattern (vectorized) instead of one bisection per failing value.
_DENSE_FAILURES = 64


def _failing_rows(column: pa.Array, target: pa.DataType) -> list[int]:
    """Indices of the values that do not cast.

    Bisection over slices, which is exact and fast while failures are few;
    when many text values cannot be numbers (a numeric column that turns to
    text), those are found by pattern first and bisection checks the rest.
    """
    dense = _failing_by_pattern(column, target)
    if dense is not None:
        return dense
    return _bisect_failing(column, target)


def _bisect_failing(column: pa.Array, target: pa.DataType) -> list[int]:
    """Indices of the values that do not cast, by bisection."""
    failing: list[int] = []

    def visit(offset: int, length: int) -> None:
        try:
            pc.cast(column.slice(offset, length), target)
            return
        except pa.ArrowInvalid:
            pass
        if length == 1:
            failing.append(offset)
            return
        half = length // 2
        visit(offset, half)
        visit(offset + half, length - half)

    visit(0, len(column))
    return failing


def _failing_by_pattern(column: pa.Array, target: pa.DataType) -> list[int] | None:
    """Failing rows of a text -> number cast when they are many, else None."""
    numeric = pa.types.is_integer(target) or pa.types.is_floating(target)
    if not numeric or not pa.types.is_string(column.type):
        return None
    trimmed = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    pattern = INT_RE if pa.types.is_integer(target) else FLOAT_RE
    fits = pc.fill_null(pc.match_substring_regex(trimmed, pattern), True)
    fits_np = fits.to_numpy(zero_copy_only=False)
    if int((~fits_np).sum()) <= _DENSE_FAILURES:
        return None
    rest = np.flatnonzero(fits_np)
    more = _bisect_failing(column.take(pa.array(rest, pa.int64())), target) if len(rest) else []
    failing = np.concatenate([np.flatnonzero(~fits_np), rest[more]]).astype(np.int64)
    return sorted(int(i) for i in failing)


def _prepare_text(column: pa.Array) -> pa.Array:
    """CSV text for a non-string column: ``""`` is missing, surrounding spaces dropped."""
    column = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _missing_required(array: pa.Array, f: pa.Field, bad: dict[int, str]) -> dict[int, str]:
    """Rows with no value for a non-nullable field."""
    if array.null_count == 0:
        return {}
    rows = np.flatnonzero(pc.is_null(array).to_numpy(zero_copy_only=False))
    return {
        int(i): f"column {f.name!r}: expected a {f.type} value (not nullable), found none"
        for i in rows
        if int(i) not in bad
    }


def _rejected_records(
    batch: pa.RecordBatch, reasons: dict[int, list[str]]
) -> Iterator[dict[str, Any]]:
    """Quarantine records for rejected rows of a raw batch."""
    meta = batch.schema.metadata
    source = meta[_META_SOURCE].decode()
    is_csv = meta.get(_META_FORMAT) == b"csv"
    delimiter = meta.get(_META_DELIMITER, b",").decode() or ","
    lines = batch.column(_LINE)
    values = batch.drop_columns([_LINE])
    for row in sorted(reasons):
        record = values.slice(row, 1).to_pylist()[0]
        yield {
            "source": source,
            "line": lines[row].as_py(),
            "reason": "; ".join(reasons[row]),
            "raw": _csv_text(record, delimiter) if is_csv else _json_text(record),
        }


def _csv_text(record: dict[str, Any], delimiter: str) -> str:
    """A CSV row rebuilt from its raw field values."""
    out = io.StringIO()
    fields = ["" if v is None else v.decode("utf-8", "backslashreplace") for v in record.values()]
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(fields)
    return out.getvalue()
