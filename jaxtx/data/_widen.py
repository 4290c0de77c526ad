"""Column types from the whole input: observe failing values during the pass, then widen.

Types inferred from a sample can be too narrow for the rest of the input: an
integer column with decimals after the sample, a column empty in the sample.
While converting, every batch reports, per column read from text, how many
values it held and how many did not fit the target type, with how many of
those would fit int64, float64 or bool. After the pass, :func:`widen_schema`
widens along ``null -> int64 -> float64 -> string`` (and ``bool -> string``):

* a value that a wider numeric type holds is never quarantined (``300.5`` in an
  int64 column makes it float64);
* a column becomes string only when more than :data:`TYPE_TOLERANCE` of its
  values over the whole input are not numbers (one stray ``"forty"`` among
  ages stays a quarantined row);
* a column empty in the sample is typed by its first real values wherever
  they are (string if it never holds one).

JSON Lines rows are typed by the JSON reader: a rejected line reports a
number with a fraction in an int64 column, or any value in a column without
a type yet, so those widen the same way (with no tolerance: a JSON number is
always a valid number). A key first seen after the sample becomes a column
too (null in the rows before it): the reader types its values in each block
(:data:`NEW_FIELDS`), and the column gets the type that holds them all
(int64 and float64 make float64; a JSON string is a string). Types that do
not unify: the type of most values wins (with those it unifies with), and
rows holding another kind of value are quarantined.

A user-supplied schema is never widened.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from ._common import _LINE, _is_binary

#: A column is kept numeric (or bool) when at most this fraction of its
#: non-empty values over the whole input does not parse: one stray "forty"
#: among ages sends that row to quarantine, not the whole column to strings.
TYPE_TOLERANCE = 0.005
INT_RE = r"^[+-]?[0-9]+$"
FLOAT_RE = r"^[+-]?(([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$"

#: per column: [values, bad, bad values fitting int64, float64, bool]; and under
#: :data:`NEW_FIELDS`, ``{name: {serialized Arrow type: values}}`` of columns
#: outside the schema (JSON Lines keys first seen after the sample).
Observation = dict[str, Any]
NEW_FIELDS = "__new_fields__"
_WIDENABLE = (pa.null(), pa.int64(), pa.float64(), pa.bool_())


def text_kinds(values: pa.Array) -> tuple[int, int, int, int]:
    """Non-empty values, and how many of them parse as int64, float64, bool.

    Args:
      values: text (string or binary) values; nulls and empty texts are ignored.

    Returns:
      ``(n, ints, floats, bools)``.
    """
    values = values.drop_null()
    try:
        values = pc.cast(values, pa.string())
    except pa.ArrowInvalid:
        values = pa.array([v.decode("utf-8", "replace") for v in values.to_pylist()], pa.string())
    values = pc.utf8_trim_whitespace(values)
    values = values.filter(pc.not_equal(values, ""))
    n = len(values)
    if n == 0:
        return 0, 0, 0, 0
    lower = pc.utf8_lower(values)
    ints = pc.sum(pc.match_substring_regex(values, INT_RE)).as_py() or 0
    if ints:
        try:  # digits that overflow int64 are floats
            pc.cast(values.filter(pc.match_substring_regex(values, INT_RE)), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ints = 0
    floats = pc.sum(pc.match_substring_regex(lower, FLOAT_RE)).as_py() or 0
    bools = pc.sum(pc.is_in(lower, pa.array(["true", "false"]))).as_py() or 0
    return n, ints, floats, bools


def observe(
    raw: pa.RecordBatch, schema: pa.Schema, bad_rows: Mapping[str, Sequence[int]]
) -> Observation:
    """What one raw text batch says about the width of each widenable column.

    Args:
      raw: the raw batch (binary columns as read from text).
      schema: the target schema.
      bad_rows: per column, the rows whose value did not fit its type.

    Returns:
      Per column ``[values, bad, bad_int, bad_float, bad_bool]``.
    """
    out: Observation = {}
    names = set(raw.schema.names)
    for f in schema:
        if f.name not in names or f.type not in _WIDENABLE:
            continue
        column = raw.column(f.name)
        if not _is_binary(column.type) and not pa.types.is_string(column.type):
            continue
        values = len(column) - column.null_count
        rows = list(bad_rows.get(f.name, ()))
        if not rows:
            out[f.name] = [values, 0, 0, 0, 0]
            continue
        n, ints, floats, bools = text_kinds(column.take(pa.array(rows, pa.int64())))
        out[f.name] = [values, n, ints, floats, bools]
    new = {
        name: {_type_text(raw.column(name).type): len(raw) - raw.column(name).null_count}
        for name in raw.schema.names
        if name != _LINE and name not in schema.names
    }
    if new:
        out[NEW_FIELDS] = new
    return out


def merge(a: Observation, b: Observation) -> Observation:
    """Sum two observations."""
    out: Observation = {
        k: ({n: dict(t) for n, t in v.items()} if k == NEW_FIELDS else list(v))
        for k, v in a.items()
    }
    for k, v in b.items():
        if k == NEW_FIELDS:
            new = out.setdefault(NEW_FIELDS, {})
            for name, types in v.items():
                counts = new.setdefault(name, {})
                for t, n in types.items():
                    counts[t] = counts.get(t, 0) + n
            continue
        out[k] = [x + y for x, y in zip(out.get(k, [0] * 5), v, strict=True)]
    return out


def _type_text(t: pa.DataType) -> str:
    """An Arrow type as text (JSON-safe), read back by :func:`_text_type`."""
    return base64.b64encode(pa.schema([pa.field("t", t)]).serialize().to_pybytes()).decode()


def _text_type(text: str) -> pa.DataType:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text))).field("t").type


def new_field_type(types: Mapping[str, int]) -> pa.DataType:
    """The type of a column first seen after the sample, from the types read in blocks.

    Args:
      types: values read with each (serialized) type (see :data:`NEW_FIELDS`).

    Returns:
      The type holding every value: int64 + float64 -> float64, a JSON string
      (read as a timestamp when it looks like one) -> string, nulls only ->
      string. Types that do not unify: the type of most values, unified with
      the others that unify with it (by number of values, then by name).
    """
    counts: dict[pa.DataType, int] = {}
    for text, n in types.items():
        t = _as_json_text_type(_text_type(text))
        if t != pa.null():
            counts[t] = counts.get(t, 0) + n
    ordered = sorted(counts, key=lambda t: (-counts[t], str(t)))
    if not ordered:
        return pa.string()
    unified = ordered[0]
    for t in ordered[1:]:
        try:
            unified = (
                pa.unify_schemas(
                    [pa.schema([pa.field("t", unified)]), pa.schema([pa.field("t", t)])],
                    promote_options="permissive",
                )
                .field("t")
                .type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
    return unified


def _as_json_text_type(t: pa.DataType) -> pa.DataType:
    """A type pyarrow inferred from JSON, with timestamps (JSON strings) as strings."""
    return pa.string() if pa.types.is_timestamp(t) else t


def widen_type(current: pa.DataType, counts: Sequence[int]) -> pa.DataType:
    """The type a column needs given what the whole input held (see module doc).

    Args:
      current: the inferred type.
      counts: ``[values, bad, bad_int, bad_float, bad_bool]`` over the input.

    Returns:
      ``current`` or a wider type.
    """
    values, bad, ints, floats, bools = counts
    allowed = int(values * TYPE_TOLERANCE)
    if current == pa.null():
        if bad == 0:
            return pa.string()
        for candidate, fit in ((pa.int64(), ints), (pa.float64(), floats), (pa.bool_(), bools)):
            if bad - fit <= allowed:
                return candidate
        return pa.string()
    if bad == 0:
        return current
    if current == pa.int64():
        if bad - floats > allowed:
            return pa.string()
        return pa.float64() if floats else current
    if bad > allowed and current in (pa.float64(), pa.bool_()):
        return pa.string()
    return current


def widen_schema(schema: pa.Schema, observation: Observation) -> pa.Schema:
    """``schema`` with each observed column widened as needed (and null -> string).

    Args:
      schema: the inferred schema.
      observation: merged observations of the whole input.

    Returns:
      The widened schema (equal to ``schema`` when nothing needs widening),
      with the new fields (JSON Lines) after the others, by name.
    """
    fields = []
    for f in schema:
        counts = observation.get(f.name)
        t = f.type
        if counts is not None:
            t = widen_type(t, counts)
        elif t == pa.null():
            t = pa.string()
        fields.append(pa.field(f.name, t, f.nullable))
    new = observation.get(NEW_FIELDS, {})
    fields += [pa.field(name, new_field_type(new[name])) for name in sorted(new)]
    return pa.schema(fields)


class MergeObservations(beam.CombineFn):
    """Sum per-batch observations into one."""

    def create_accumulator(self) -> Observation:
        return {}

    def add_input(self, accumulator: Observation, element: Observation) -> Observation:
        return merge(accumulator, element)

    def merge_accumulators(self, accumulators: Any) -> Observation:
        out: Observation = {}
        for a in accumulators:
            out = merge(out, a)
        return out

    def extract_output(self, accumulator: Observation) -> Observation:
        return accumulator
