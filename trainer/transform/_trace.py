"""Symbolic columns and the operations a preprocessing function is written with."""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ._graph import (
    IDS,
    NUMERIC,
    STRING,
    Analyzer,
    FittedTransform,
    InputColumn,
    Op,
    TransformError,
    _describe,
)

__all__ = [
    "Column",
    "bucketize",
    "clip",
    "column_kind",
    "fill_missing",
    "hash_strings",
    "log1p",
    "scale_to_0_1",
    "scale_to_z_score",
    "trace",
    "vocabulary",
]

_NUMERIC_STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "mean": ("mean_std", {}),
    "median": ("quantiles", {"q": [0.5]}),
    "min": ("min_max", {}),
    "max": ("min_max", {}),
    "most_frequent": ("most_frequent", {}),
}
_STRING_STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "most_frequent": ("most_frequent", {}),
}
_KIND_WORDS = {NUMERIC: "numeric", STRING: "a string column", IDS: "integer ids"}


def column_kind(arrow_type: pa.DataType) -> str | None:
    """Kind of an Arrow column in a transform.

    Args:
        arrow_type: The column's type.

    Returns:
        ``"numeric"`` (integers, floats, booleans, decimals), ``"string"``
        (string, large string, dictionary of strings), or ``None`` when the
        transform cannot read it.
    """
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    ):
        return NUMERIC
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return STRING
    return None


def _call_site() -> str:
    """``file:line`` of the innermost frame outside this library's transform modules."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        name = os.path.basename(path)
        if not (os.path.dirname(path) == here and "transform" in name):
            return f"{os.path.basename(path)}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


class _Trace:
    """The graph being built while a preprocessing function runs."""

    def __init__(self, kinds: Mapping[str, str | None], types: Mapping[str, str], source: str):
        self.kinds = dict(kinds)
        self.types = dict(types)
        self.source = source
        self.nodes: list[Op] = []
        self.stages: list[int] = []
        self.index: dict[str, int] = {}
        self.analyzers: list[Analyzer] = []
        self.analyzer_index: dict[str, int] = {}
        self.inputs: dict[str, Column] = {}
        self.errors: list[Column] = []

    def node(self, op: str, kind: str, args: Sequence[int], params: Mapping[str, Any]) -> Column:
        key = json.dumps([op, kind, list(args), params], sort_keys=True)
        nid = self.index.get(key)
        if nid is None:
            nid = len(self.nodes)
            stage = max((self.stages[a] for a in args), default=0)
            if "analyzer" in params:
                stage = max(stage, self.analyzers[params["analyzer"]].stage)
            self.nodes.append(Op(op, kind, tuple(args), dict(params)))
            self.stages.append(stage)
            self.index[key] = nid
        return Column(self, nid, kind)

    def analyzer(self, kind: str, input_id: int, params: Mapping[str, Any]) -> int:
        key = json.dumps([kind, input_id, params], sort_keys=True)
        aid = self.analyzer_index.get(key)
        if aid is None:
            aid = len(self.analyzers)
            self.analyzers.append(Analyzer(kind, input_id, dict(params), self.stages[input_id] + 1))
            self.analyzer_index[key] = aid
        return aid

    def describe(self, col: Column) -> str:
        text = _describe(tuple(self.nodes), tuple(self.analyzers), col._node)
        return text if len(text) <= 80 else text[:77] + "..."

    def invalid(self, message: str) -> Column:
        col = Column(self, -1, "invalid", f"{message} (at {_call_site()})")
        self.errors.append(col)
        return col

    def input(self, name: str) -> Column:
        if name in self.inputs:
            return self.inputs[name]
        if name not in self.kinds:
            names = list(self.kinds)
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TransformError(
                f"column {name!r} is not in {self.source}; available columns: {names}. "
                f"{hint}Fix the name in the preprocessing function or add the column to the data"
            )
        kind = self.kinds[name]
        if kind is None:
            raise TransformError(
                f"column {name!r} of {self.source} has type {self.types.get(name, '?')}; "
                "transforms read numeric or string columns only: cast it in the data"
            )
        col = self.node("input", kind, (), {"name": name})
        self.inputs[name] = col
        return col


class Column:
    """A symbolic column inside a preprocessing function.

    Columns support ``+ - * /`` with numbers and other numeric columns, unary
    ``-``, and the functions of this module. They hold no data: the function
    runs once, to record the operations.

    Attributes:
        kind: ``"numeric"`` (float32, NaN = missing), ``"string"`` or ``"ids"``
            (int32 outputs of `vocabulary`, `hash_strings`, `bucketize`).

    Example:
        >>> def preprocess(inputs):
        ...     return {"hours": inputs["hours_per_week"] / 40.0 - 1}
    """

    __slots__ = ("_error", "_kind", "_node", "_trace")
    __array_ufunc__ = None  # numpy scalars on the left defer to Column's operators

    def __init__(self, trace: _Trace, node: int, kind: str, error: str = "") -> None:
        self._trace = trace
        self._node = node
        self._kind = kind
        self._error = error

    @property
    def kind(self) -> str:
        """``numeric``, ``string`` or ``ids``."""
        return self._kind

    def __repr__(self) -> str:
        if self._error:
            return f"Column(<error: {self._error}>)"
        return f"Column({self._trace.describe(self)}, kind={self._kind})"

    def __bool__(self) -> bool:
        raise TypeError(
            "a Column is symbolic and has no truth value; use tx.clip, tx.fill_missing or "
            "arithmetic instead of Python conditions on columns"
        )

    def __add__(self, other: Any) -> Column:
        return _arith("add", self, other)

    def __radd__(self, other: Any) -> Column:
        return _arith("add", self, other)

    def __sub__(self, other: Any) -> Column:
        return _arith("sub", self, other)

    def __rsub__(self, other: Any) -> Column:
        return _arith("sub", self, other, reverse=True)

    def __mul__(self, other: Any) -> Column:
        return _arith("mul", self, other)

    def __rmul__(self, other: Any) -> Column:
        return _arith("mul", self, other)

    def __truediv__(self, other: Any) -> Column:
        return _arith("div", self, other)

    def __rtruediv__(self, other: Any) -> Column:
        return _arith("div", self, other, reverse=True)

    def __neg__(self) -> Column:
        bad = _expect("neg", self, (NUMERIC,))
        if bad is not None:
            return bad
        return self._trace.node("neg", NUMERIC, (self._node,), {})

    def __pos__(self) -> Column:
        return self


_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _column(op: str, x: Any) -> Column:
    if not isinstance(x, Column):
        raise TypeError(
            f"{op} expects a Column (inputs[name] or the result of another transform), "
            f"got {type(x).__name__} {x!r:.40}"
        )
    return x


def _expect(op: str, col: Column, kinds: tuple[str, ...]) -> Column | None:
    """``None`` when ``col`` has one of ``kinds``, else an invalid column saying why."""
    if col._error:
        return col
    if col._kind in kinds:
        return None
    t = col._trace
    what = f"{t.describe(col)} is {_KIND_WORDS[col._kind]}"
    if NUMERIC in kinds and col._kind == STRING:
        hint = "map strings to ids with tx.vocabulary(...) or tx.hash_strings(...)"
    elif col._kind == IDS:
        hint = "ids are final outputs: return them as they are"
    else:
        hint = "use tx.bucketize(...) to turn numbers into ids"
    want = " or ".join("a string column" if k == STRING else "a numeric column" for k in kinds)
    return t.invalid(f"{op} expects {want}, but {what}; {hint}")


def _scalar(op: str, value: Any) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise TypeError(f"{op}: expected a number, got {type(value).__name__} {value!r:.40}")
    out = float(value)
    if not math.isfinite(out):
        raise TransformError(f"{op}: the number must be finite, got {out}")
    return out


def _arith(op: str, a: Column, b: Any, reverse: bool = False) -> Column:
    name = f"'{_SYMBOLS[op]}' ({op})"
    if isinstance(b, Column):
        if b._trace is not a._trace:
            raise TransformError(f"{name}: the columns come from different traces")
        x, y = (b, a) if reverse else (a, b)
        for col in (x, y):
            bad = _expect(name, col, (NUMERIC,))
            if bad is not None:
                return bad
        return a._trace.node(op, NUMERIC, (x._node, y._node), {})
    if isinstance(b, bool | np.bool_) or not isinstance(b, int | float | np.integer | np.floating):
        return NotImplemented
    bad = _expect(name, a, (NUMERIC,))
    if bad is not None:
        return bad
    c = _scalar(name, b)
    if reverse and op in ("add", "mul"):
        reverse = False
    if not reverse and (
        (op in ("add", "sub") and c == 0.0 and math.copysign(1.0, c) > 0)
        or (op in ("mul", "div") and c == 1.0)
    ):
        return a
    if op == "div" and not reverse and c == 0.0:
        raise TransformError(f"{name}: division of {a._trace.describe(a)} by zero")
    params: dict[str, Any] = {"scalar": c}
    if reverse:
        params["scalar_first"] = True
    return a._trace.node(op, NUMERIC, (a._node,), params)


def _positive_int(op: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise TransformError(f"{op}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def scale_to_z_score(x: Column) -> Column:
    """``(x - mean) / std`` with the mean and (population) std of ``x`` over the data.

    The division is a multiplication by the float32 reciprocal of the std; a
    zero std divides by 1. Missing values (NaN) stay NaN; the statistics
    ignore them.

    Args:
        x: Numeric column.

    Returns:
        Numeric column.

    Example:
        >>> tx.scale_to_z_score(tx.fill_missing(inputs["age"], "mean"))  # doctest: +SKIP
    """
    col = _column("scale_to_z_score", x)
    bad = _expect("scale_to_z_score", col, (NUMERIC,))
    if bad is not None:
        return bad
    aid = col._trace.analyzer("mean_std", col._node, {})
    return col._trace.node("scale_to_z_score", NUMERIC, (col._node,), {"analyzer": aid})


def scale_to_0_1(x: Column) -> Column:
    """``(x - min) / (max - min)`` with the min and max of ``x`` over the data.

    The division is a multiplication by the float32 reciprocal of ``max -
    min`` (so the max maps to 1 within 1 ulp; a zero range divides by 1).
    Values outside the range seen in training fall outside [0, 1]; add
    :func:`clip` to bound them.

    Args:
        x: Numeric column.

    Returns:
        Numeric column.

    Example:
        >>> tx.scale_to_0_1(inputs["hours_per_week"])  # doctest: +SKIP
    """
    col = _column("scale_to_0_1", x)
    bad = _expect("scale_to_0_1", col, (NUMERIC,))
    if bad is not None:
        return bad
    aid = col._trace.analyzer("min_max", col._node, {})
    return col._trace.node("scale_to_0_1", NUMERIC, (col._node,), {"analyzer": aid})


def log1p(x: Column) -> Column:
    """``log(1 + x)``, NaN below -1 (within 1 ulp; the same bits in NumPy and JAX).

    Args:
        x: Numeric column.

    Returns:
        Numeric column.

    Example:
        >>> tx.log1p(inputs["capital_gain"])  # doctest: +SKIP
    """
    col = _column("log1p", x)
    bad = _expect("log1p", col, (NUMERIC,))
    if bad is not None:
        return bad
    return col._trace.node("log1p", NUMERIC, (col._node,), {})


def clip(x: Column, min_value: float | None = None, max_value: float | None = None) -> Column:
    """Bound values to ``[min_value, max_value]`` (NaN stays NaN).

    Args:
        x: Numeric column.
        min_value: Lower bound (``None``: none).
        max_value: Upper bound (``None``: none).

    Returns:
        Numeric column.

    Example:
        >>> tx.clip(inputs["hours_per_week"], 0, 80)  # doctest: +SKIP
    """
    col = _column("clip", x)
    if min_value is None and max_value is None:
        raise TransformError("clip: give min_value, max_value or both")
    lo = None if min_value is None else _scalar("clip", min_value)
    hi = None if max_value is None else _scalar("clip", max_value)
    if lo is not None and hi is not None and lo > hi:
        raise TransformError(f"clip: min_value {lo} is larger than max_value {hi}")
    bad = _expect("clip", col, (NUMERIC,))
    if bad is not None:
        return bad
    return col._trace.node("clip", NUMERIC, (col._node,), {"min": lo, "max": hi})


def fill_missing(
    x: Column, strategy: str | float | None = None, *, value: float | str | None = None
) -> Column:
    """Replace missing values (null, or NaN for numbers).

    Args:
        x: Numeric or string column.
        strategy: For numbers ``"mean"`` (default), ``"median"`` (from the
            quantile sketch), ``"min"``, ``"max"`` or ``"most_frequent"``; for
            strings ``"most_frequent"`` (default; ties go to the smallest
            value). A number here is taken as ``value``.
        value: A constant instead of a statistic (a number for numeric
            columns, a string for string columns).

    Returns:
        A column of the same kind without missing values. For strings, the
        fill becomes the ``default`` of the ``preprocess.json`` entry.

    Example:
        >>> tx.fill_missing(inputs["age"], "mean")  # doctest: +SKIP
        >>> tx.fill_missing(inputs["workclass"], value="<missing>")  # doctest: +SKIP
    """
    col = _column("fill_missing", x)
    bad = _expect("fill_missing", col, (NUMERIC, STRING))
    if bad is not None:
        return bad
    t = col._trace
    if (
        value is None
        and not isinstance(strategy, str | bool | type(None))
        and isinstance(strategy, int | float | np.integer | np.floating)
    ):
        strategy, value = None, strategy
    if value is not None:
        if strategy is not None:
            raise TransformError("fill_missing: pass either a strategy or value=..., not both")
        if col._kind == NUMERIC:
            if isinstance(value, str):
                return t.invalid(
                    f"fill_missing with the string {value!r} expects a string column, but "
                    f"{t.describe(col)} is numeric; fill numbers with a number"
                )
            params = {"strategy": "constant", "value": _scalar("fill_missing", value)}
        else:
            if not isinstance(value, str):
                return t.invalid(
                    f"fill_missing with the number {value!r} expects a numeric column, but "
                    f"{t.describe(col)} is a string column; fill strings with a string"
                )
            params = {"strategy": "constant", "value": value}
        return t.node("fill_missing", col._kind, (col._node,), params)
    table = _NUMERIC_STRATEGIES if col._kind == NUMERIC else _STRING_STRATEGIES
    if strategy is None:
        strategy = "mean" if col._kind == NUMERIC else "most_frequent"
    if strategy not in table:
        extra = " or value='...' for a constant" if col._kind == STRING else ""
        raise TransformError(
            f"fill_missing: unknown strategy {strategy!r} for {_KIND_WORDS[col._kind]} "
            f"{t.describe(col)}; use one of {sorted(table)}{extra}"
        )
    kind, aparams = table[str(strategy)]
    aid = t.analyzer(kind, col._node, aparams)
    return t.node("fill_missing", col._kind, (col._node,), {"strategy": strategy, "analyzer": aid})


def bucketize(
    x: Column, num_buckets: int | None = None, *, boundaries: Sequence[float] | None = None
) -> Column:
    """Bucket ids of numbers: quantile buckets of the data, or fixed boundaries.

    id = number of boundaries ``<= x`` (so ``0 .. len(boundaries)``); missing
    values (NaN) get their own id ``len(boundaries) + 1``; the cardinality is
    ``len(boundaries) + 2``. Quantile boundaries are the KLL sketch's
    quantiles at ``1/n, 2/n, ... (n-1)/n`` (rank error about 1.3% at the
    default sketch size), repeated values removed, so there may be fewer than
    ``num_buckets`` buckets.

    Args:
        x: Numeric column.
        num_buckets: Number of quantile buckets to aim for.
        boundaries: Fixed, strictly increasing boundaries instead.

    Returns:
        An ids column (int32).

    Example:
        >>> tx.bucketize(inputs["age"], num_buckets=10)  # doctest: +SKIP
    """
    col = _column("bucketize", x)
    if (num_buckets is None) == (boundaries is None):
        raise TransformError("bucketize: give num_buckets or boundaries=[...], one of the two")
    params: dict[str, Any]
    if boundaries is not None:
        edges = [_scalar("bucketize", b) for b in boundaries]
        as32 = np.asarray(edges, dtype=np.float32)
        if len(edges) and not np.all(np.diff(as32) > 0):
            raise TransformError(
                f"bucketize: boundaries {edges} must be strictly increasing (as float32)"
            )
        params = {"boundaries": [float(v) for v in as32]}
    else:
        n = _positive_int("bucketize", "num_buckets", num_buckets)
        params = {"num_buckets": n}
    bad = _expect("bucketize", col, (NUMERIC,))
    if bad is not None:
        return bad
    if "num_buckets" in params:
        n = params["num_buckets"]
        q = [i / n for i in range(1, n)]
        params["analyzer"] = col._trace.analyzer("quantiles", col._node, {"q": q})
    return col._trace.node("bucketize", IDS, (col._node,), params)


def vocabulary(
    x: Column,
    top_k: int | None = None,
    *,
    frequency_threshold: int = 1,
    num_oov_buckets: int = 1,
) -> Column:
    """Ids of strings from a vocabulary computed over the data.

    The vocabulary holds the values seen at least ``frequency_threshold``
    times, most frequent first (ties: smaller value first), at most ``top_k``
    of them. id = position in it; other values get ``len(vocabulary) +
    crc32(utf-8) % num_oov_buckets``. Missing values count as nothing in the
    vocabulary and are looked up as ``""`` (use :func:`fill_missing` to give
    them a token of their own).

    Args:
        x: String column.
        top_k: Largest vocabulary size (``None``: no limit).
        frequency_threshold: Fewest occurrences a value needs.
        num_oov_buckets: Ids for values outside the vocabulary (at least 1).

    Returns:
        An ids column (int32) of cardinality ``len(vocabulary) + num_oov_buckets``.

    Example:
        >>> tx.vocabulary(inputs["workclass"], top_k=20, frequency_threshold=5)  # doctest: +SKIP
    """
    col = _column("vocabulary", x)
    k = None if top_k is None else _positive_int("vocabulary", "top_k", top_k)
    ft = _positive_int("vocabulary", "frequency_threshold", frequency_threshold)
    oov = _positive_int("vocabulary", "num_oov_buckets", num_oov_buckets)
    bad = _expect("vocabulary", col, (STRING,))
    if bad is not None:
        return bad
    aid = col._trace.analyzer("vocabulary", col._node, {"top_k": k, "frequency_threshold": ft})
    return col._trace.node(
        "vocabulary", IDS, (col._node,), {"analyzer": aid, "num_oov_buckets": oov}
    )


def hash_strings(x: Column, num_buckets: int) -> Column:
    """Ids of strings by hashing: ``zlib.crc32(utf-8) % num_buckets`` (missing: ``""``).

    Args:
        x: String column.
        num_buckets: Number of ids.

    Returns:
        An ids column (int32) of cardinality ``num_buckets``.

    Example:
        >>> tx.hash_strings(inputs["occupation"], num_buckets=16)  # doctest: +SKIP
    """
    col = _column("hash_strings", x)
    n = _positive_int("hash_strings", "num_buckets", num_buckets)
    bad = _expect("hash_strings", col, (STRING,))
    if bad is not None:
        return bad
    return col._trace.node("hash_strings", IDS, (col._node,), {"num_buckets": n})


# ---------------------------------------------------------------------- trace


class _Inputs(Mapping[str, Column]):
    """The ``inputs`` mapping a preprocessing function receives."""

    def __init__(self, trace: _Trace) -> None:
        self._t = trace

    def __getitem__(self, name: str) -> Column:
        return self._t.input(name)

    def __contains__(self, name: object) -> bool:
        return name in self._t.kinds

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._t.input(name) if name in self._t.kinds else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._t.kinds)

    def __len__(self) -> int:
        return len(self._t.kinds)


def _schema_kinds(schema: pa.Schema | Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    if isinstance(schema, pa.Schema):
        kinds = {f.name: column_kind(f.type) for f in schema}
        return kinds, {f.name: str(f.type) for f in schema}
    kinds = {}
    for name, kind in schema.items():
        if kind not in (NUMERIC, STRING):
            raise TransformError(f"column {name!r}: kind {kind!r} is not 'numeric' or 'string'")
        kinds[name] = kind
    return kinds, {k: str(v) for k, v in kinds.items()}


def trace(
    preprocessing_fn: Callable[[Mapping[str, Column]], Mapping[str, Column]],
    schema: pa.Schema | Mapping[str, str],
    *,
    source: str = "the data",
) -> FittedTransform:
    """Run ``preprocessing_fn`` once on symbolic columns and record its graph (not fitted).

    Args:
        preprocessing_fn: ``fn(inputs) -> {output name: Column}``.
        schema: The raw columns: an Arrow schema, or ``{name: "numeric" | "string"}``.
        source: How to name the data in error messages (a file, "the table").

    Returns:
        The unfitted graph, pruned to what the outputs need; fit it with
        :func:`jaxtx.trainer.transform.analyze`.

    Raises:
        TransformError: A column is unknown, an operation gets the wrong kind
            of column (the message names the output and the operation), or an
            output is not a numeric or ids column.

    Example:
        >>> graph = trace(preprocess, {"age": "numeric", "workclass": "string"})  # doctest: +SKIP
        >>> graph.num_stages  # doctest: +SKIP
        1
    """
    kinds, types = _schema_kinds(schema)
    t = _Trace(kinds, types, source)
    result = preprocessing_fn(_Inputs(t))
    if not isinstance(result, Mapping):
        raise TransformError(
            f"the preprocessing function must return a dict {{name: Column}}, "
            f"got {type(result).__name__}"
        )
    if not result:
        raise TransformError("the preprocessing function returned no outputs")
    outputs: list[tuple[str, Column]] = []
    for name, col in result.items():
        if not isinstance(name, str) or not name:
            raise TransformError(f"output names must be non-empty strings, got {name!r}")
        if not isinstance(col, Column):
            raise TransformError(
                f"output {name!r}: expected a Column, got {type(col).__name__} {col!r:.40}; "
                "return transformed columns (inputs[...] and tx.* functions)"
            )
        if col._trace is not t:
            raise TransformError(f"output {name!r}: the column comes from another trace")
        if col._error:
            raise TransformError(f"output {name!r}: {col._error}")
        outputs.append((name, col))
    if t.errors:
        raise TransformError(f"a column no output returns: {t.errors[0]._error}")
    for name, col in outputs:
        if col._kind == STRING:
            raise TransformError(
                f"output {name!r} is a string column ({t.describe(col)}); models take numbers: "
                "map it to ids with tx.vocabulary(...) or tx.hash_strings(...)"
            )
    return _finish(t, outputs)


def _finish(t: _Trace, outputs: list[tuple[str, Column]]) -> FittedTransform:
    """Prune to the nodes the outputs need, renumber, and name the serving inputs."""
    keep: set[int] = set()
    stack = [col._node for _, col in outputs]
    while stack:
        nid = stack.pop()
        if nid in keep:
            continue
        keep.add(nid)
        node = t.nodes[nid]
        stack.extend(node.args)
        if "analyzer" in node.params:
            stack.append(t.analyzers[node.params["analyzer"]].input)
    order = sorted(keep)
    new_id = {old: i for i, old in enumerate(order)}
    used_analyzers = sorted(
        {t.nodes[n].params["analyzer"] for n in order if "analyzer" in t.nodes[n].params}
    )
    new_aid = {old: i for i, old in enumerate(used_analyzers)}
    analyzers = tuple(
        Analyzer(a.kind, new_id[a.input], a.params, a.stage)
        for a in (t.analyzers[i] for i in used_analyzers)
    )
    out_ids = [(name, new_id[col._node]) for name, col in outputs]
    nodes: list[Op] = []
    for old in order:
        node = t.nodes[old]
        params = dict(node.params)
        if "analyzer" in params:
            params["analyzer"] = new_aid[params["analyzer"]]
        nodes.append(Op(node.op, node.kind, tuple(new_id[a] for a in node.args), params))
    inputs = tuple(InputColumn(n.params["name"], n.kind) for n in nodes if n.op == "input")
    _assign_keys(nodes, inputs, out_ids)
    return FittedTransform(inputs, tuple(nodes), analyzers, tuple(out_ids))


def _assign_keys(
    nodes: list[Op], inputs: tuple[InputColumn, ...], outputs: list[tuple[str, int]]
) -> None:
    """Name the ``jax_fn`` argument (``preprocess.json`` key) of each string-to-ids node.

    A raw string column feeding one such node keeps its name; one feeding
    several gives ``<column>__<first output using the node>``.
    """
    raw_of: dict[int, str] = {}
    for nid, node in enumerate(nodes):
        if node.op in ("vocabulary", "hash_strings"):
            src = node.args[0]
            while nodes[src].op == "fill_missing":
                src = nodes[src].args[0]
            raw_of[nid] = nodes[src].params["name"]
    per_raw: dict[str, list[int]] = {}
    for nid, raw in raw_of.items():
        per_raw.setdefault(raw, []).append(nid)
    first_output: dict[Any, Any] = {}
    for name, nid in outputs:
        first_output.setdefault(nid, name)
    taken = {c.name for c in inputs}
    for raw, nids in per_raw.items():
        for nid in nids:
            if len(nids) == 1:
                key = raw
            else:
                base = f"{raw}__{first_output.get(nid, nodes[nid].op)}"
                key, i = base, 2
                while key in taken:
                    key, i = f"{base}_{i}", i + 1
                taken.add(key)
            params = dict(nodes[nid].params)
            params["key"] = key
            nodes[nid] = Op(nodes[nid].op, nodes[nid].kind, nodes[nid].args, params)
