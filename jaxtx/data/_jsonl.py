"""JSON Lines reading: typed batches with line numbers, failing lines isolated; type inference."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from jaxtx.core import files as fs

from ._common import (
    _JSON_BLOCK_BYTES,
    _JSON_CHUNK_BYTES,
    _LINE,
    _MAX_SHOWN,
    BATCH_ROWS,
    MAX_RECORD_BYTES,
    TYPES_KEY,
    IngestError,
    _show,
    _with_meta,
)


def _read_jsonl(
    path: str, schema: pa.Schema, strict_fields: bool, *, observe: bool = False
) -> Iterator[pa.RecordBatch | dict[str, Any]]:
    """Typed batches (+ line numbers) and rejected-line records of a JSONL file.

    Args:
      path: the file.
      schema: the target schema (pyarrow parses straight into it).
      strict_fields: reject lines with keys outside ``schema``.
      observe: add to each rejected record, under ``TYPES_KEY``, what a wider
        type would hold (``jaxtx.data._widen``): a number with a fraction in
        an int64 column, any value in a column still without a type. Keys
        outside ``schema`` are then read as extra columns of pyarrow's types
        (observed by the caller), not rejected.

    Yields:
      Record batches and one dict per rejected line.
    """
    parser = _JsonLines(schema, strict_fields, new_fields=observe)
    first_line = 1
    for chunk in _line_chunks(path):
        starts, ends = _line_bounds(chunk)
        nonblank = _nonblank(chunk, starts, ends)
        long = (ends - starts)[nonblank] > MAX_RECORD_BYTES
        if long.any():
            for i in nonblank[long]:
                yield _too_long(path, int(first_line + i), chunk[starts[i] : ends[i]])
            nonblank = nonblank[~long]
        lines = [chunk[starts[i] : ends[i]] for i in nonblank] if len(nonblank) else []
        numbers = first_line + nonblank
        data = chunk[starts[nonblank[0]] :] if lines else b""
        tables, good, bad = parser.parse(b"\n".join(lines) if long.any() else data, lines)
        offset = 0
        for table in tables:
            for batch in table.to_batches(max_chunksize=BATCH_ROWS):
                rows = numbers[good[offset : offset + batch.num_rows]]
                offset += batch.num_rows
                yield _with_meta(batch, rows, path, "jsonl")
        for index, reason in bad:
            record = {
                "source": path,
                "line": int(numbers[index]),
                "reason": reason,
                "raw": lines[index].decode("utf-8", "backslashreplace").rstrip("\r"),
            }
            if observe:
                record[TYPES_KEY] = _json_widening(lines[index], schema)
            yield record
        first_line += len(starts)


def _json_widening(raw: bytes, schema: pa.Schema) -> dict[str, list[int]]:
    """The observation (see ``jaxtx.data._widen``) of one rejected JSONL line."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    out: dict[str, list[int]] = {}
    for f in schema:
        v = value.get(f.name)
        if v is None:
            continue
        if f.type == pa.int64() and isinstance(v, float):
            out[f.name] = [0, 1, 0, 1, 0]
        elif f.type == pa.null():
            kind = _kind(v)
            out[f.name] = [
                0,
                1,
                int(kind == "int"),
                int(kind in ("int", "float")),
                int(kind == "bool"),
            ]
    return out


def _too_long(path: str, line: int, raw: bytes) -> dict[str, Any]:
    """The quarantine record of a line over :data:`MAX_RECORD_BYTES`."""
    return {
        "source": path,
        "line": line,
        "reason": (
            f"the record holds {len(raw)} bytes, more than the limit of {MAX_RECORD_BYTES} "
            "(jaxtx.data.MAX_RECORD_BYTES)"
        ),
        "raw": raw[:_MAX_SHOWN].decode("utf-8", "backslashreplace"),
    }


class _JsonLines:
    """Parse non-blank JSONL lines into the schema, isolating the lines that fail."""

    def __init__(self, schema: pa.Schema, strict_fields: bool, *, new_fields: bool = False) -> None:
        """Configure the parser.

        Args:
          schema: the target schema.
          strict_fields: reject lines with keys outside ``schema``.
          new_fields: read keys outside ``schema`` as extra (inferred) columns instead.
        """
        self._schema = schema
        self._strict = strict_fields and not new_fields
        behaviour = "infer" if new_fields else ("error" if strict_fields else "ignore")
        self._options = pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior=behaviour
        )

    def parse(
        self, data: bytes, lines: list[bytes]
    ) -> tuple[list[pa.Table], np.ndarray, list[tuple[int, str]]]:
        """Parse ``lines`` (``data`` holds them, joined, maybe with blank lines between).

        Returns:
          The tables of good rows, in order (one, unless extra columns read
          with different types in different lines cannot share a table), the
          index of each of their rows in ``lines``, and ``(index, reason)``
          for each rejected line.
        """
        if not lines:
            return [], np.zeros(0, np.int64), []
        table, _ = self._read(data, len(lines))
        if table is not None:
            return [table], np.arange(len(lines)), []
        # Slow path: diagnose each line in Python, then let pyarrow read the rest.
        bad: list[tuple[int, str]] = []
        candidates: list[int] = []
        for i, raw in enumerate(lines):
            reason = _json_problem(raw, self._schema, self._strict)
            if reason is None:
                candidates.append(i)
            else:
                bad.append((i, reason))
        tables: list[pa.Table] = []
        good: list[int] = []
        self._bisect(lines, candidates, tables, good, bad)
        # Extra columns read with different types cannot share a table: kept apart.
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError):
            tables = [pa.concat_tables(tables, promote_options="permissive").combine_chunks()]
        return tables, np.array(good, dtype=np.int64), sorted(bad)

    def _bisect(
        self,
        lines: list[bytes],
        candidates: list[int],
        tables: list[pa.Table],
        good: list[int],
        bad: list[tuple[int, str]],
    ) -> None:
        """Read ``candidates`` together, splitting the set until failures are single lines."""
        if not candidates:
            return
        table, error = self._read(b"\n".join(lines[i] for i in candidates), len(candidates))
        if table is not None:
            tables.append(table)
            good.extend(candidates)
        elif len(candidates) == 1:
            bad.append((candidates[0], f"rejected by the JSON reader: {error}"))
        else:
            half = len(candidates) // 2
            self._bisect(lines, candidates[:half], tables, good, bad)
            self._bisect(lines, candidates[half:], tables, good, bad)

    def _read(self, data: bytes, expected_rows: int) -> tuple[pa.Table | None, str]:
        """pyarrow's reading of ``data``, or None and the error."""
        block = _JSON_BLOCK_BYTES if expected_rows > 1 else max(_JSON_BLOCK_BYTES, len(data) + 1)
        try:
            table = pa_json.read_json(
                io.BytesIO(data),
                read_options=pa_json.ReadOptions(block_size=block),
                parse_options=self._options,
            )
        except (pa.ArrowException, ValueError) as e:
            return None, str(e)
        if table.num_rows != expected_rows:
            return None, "more than one JSON value on a line"
        return table, ""


def _json_problem(raw: bytes, schema: pa.Schema, strict_fields: bool) -> str | None:
    """Why a JSONL line cannot be read into ``schema`` (None if it looks fine)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 (byte {raw[e.start : e.start + 1]!r} at offset {e.start})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON: {e.msg} (column {e.colno})"
    if not isinstance(value, dict):
        return f"expected a JSON object, found {_json_kind(value)}"
    if strict_fields:
        extra = [k for k in value if k not in schema.names]
        if extra:
            return (
                f"field {extra[0]!r} is not in the schema inferred from the first rows "
                f"(columns: {', '.join(schema.names)}); pass schema= to read or ignore it"
            )
    for f in schema:
        v = value.get(f.name)
        if v is not None and not _json_fits(v, f.type):
            return f"column {f.name!r}: expected {f.type}, found {_show(v)}"
    return None


def _json_fits(value: Any, arrow_type: pa.DataType) -> bool:
    """Whether a parsed JSON value fits an Arrow type (conservatively)."""
    if pa.types.is_boolean(arrow_type):
        return isinstance(value, bool)
    if pa.types.is_integer(arrow_type):
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        bits = arrow_type.bit_width
        if pa.types.is_signed_integer(arrow_type):
            return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)
        return 0 <= value < 2**bits
    if pa.types.is_floating(arrow_type):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return isinstance(value, str)
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return isinstance(value, list)
    if pa.types.is_struct(arrow_type):
        return isinstance(value, dict)
    return True


def _json_kind(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
    }
    return f"{kinds.get(type(value), type(value).__name__)} {_show(value)}"


def _infer_jsonl(path: str, sample_rows: int) -> pa.Schema:
    """Infer a schema from the first JSON objects of a JSONL file."""
    values: dict[str, list[Any]] = {}
    seen = 0
    with fs.open_input(path) as stream:
        for line in _iter_lines(stream):
            if seen >= sample_rows:
                break
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            seen += 1
            for key, v in obj.items():
                values.setdefault(key, []).append(v)
    if _LINE in values:
        raise IngestError(f"{path}: the field name {_LINE!r} is reserved.")
    return pa.schema([pa.field(k, _infer_json_type(path, k, vs)) for k, vs in values.items()])


def _infer_json_type(path: str, key: str, values: list[Any]) -> pa.DataType:
    """Arrow type of one JSON field from sample values."""
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    if not kinds:
        return pa.null()  # typed by its first values (ingest), string otherwise
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64() if all(-(2**63) <= v < 2**63 for v in present) else pa.float64()
    if kinds <= {"int", "float"}:
        return pa.float64()
    if kinds == {"str"}:
        return pa.string()
    if len(kinds) == 1:
        try:
            return pa.array(present).type
        except (pa.ArrowException, ValueError, TypeError):
            pass
    raise IngestError(
        f"{path}: field {key!r} holds {' and '.join(sorted(kinds))} values in the first rows; "
        "one column needs one type. Pass schema= to say which (rows that do not fit are "
        "quarantined)."
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "object"


def _line_chunks(path: str, size: int = _JSON_CHUNK_BYTES) -> Iterator[bytes]:
    """The file in chunks of whole lines."""
    rest = b""
    with fs.open_input(path) as stream:
        while block := stream.read(size):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            rest = data[cut:]
    if rest:
        yield rest


def _iter_lines(stream: Any) -> Iterator[bytes]:
    rest = b""
    while block := stream.read(1 << 20):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _line_bounds(chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the newline) offsets of each line."""
    newlines = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(chunk)]])
    if chunk.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    return starts.astype(np.int64), ends.astype(np.int64)


def _nonblank(chunk: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices of the lines holding something other than whitespace."""
    buf = np.frombuffer(chunk, np.uint8)
    solid = ~np.isin(buf, np.array([9, 10, 13, 32], np.uint8))
    cumulative = np.concatenate([[0], np.cumsum(solid)])
    return np.flatnonzero(cumulative[ends] - cumulative[starts] > 0)
