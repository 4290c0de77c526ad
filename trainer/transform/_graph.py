"""The fitted transform graph: nodes, analyzers, JSON, and the three ways to apply it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxtx.core.model_format import StringLookup

from . import _math as tm

__all__ = [
    "FORMAT",
    "GRAPH_FILE",
    "Analyzer",
    "InputColumn",
    "Op",
    "OutputColumn",
    "TransformError",
    "FittedTransform",
]

FORMAT = "jaxtx.transform/1"
GRAPH_FILE = "transform_graph.json"

NUMERIC, STRING, IDS = "numeric", "string", "ids"
ARITH_OPS = ("add", "sub", "mul", "div")
_UNARY_NUMERIC = ("neg", "log1p", "clip", "scale_to_z_score", "scale_to_0_1")
_OPS = frozenset(
    {
        "input",
        *ARITH_OPS,
        *_UNARY_NUMERIC,
        "fill_missing",
        "bucketize",
        "vocabulary",
        "hash_strings",
    }
)
ANALYZER_KINDS = ("mean_std", "min_max", "quantiles", "vocabulary", "most_frequent")
_F32 = np.float32


class TransformError(ValueError):
    """A preprocessing function, its data or a transform graph is not usable; the
    message names the column, output or file at fault and what to do."""


@dataclass(frozen=True)
class InputColumn:
    """A raw column read by the preprocessing function.

    Attributes:
        name: Column name in the data.
        kind: ``"numeric"`` (served as float32, NaN = missing) or ``"string"``.
    """

    name: str
    kind: str


@dataclass(frozen=True)
class OutputColumn:
    """A column produced by the graph.

    Attributes:
        name: Output name (a key of the dict the preprocessing function returns).
        dtype: ``"float32"`` or ``"int32"`` (ids).
        cardinality: For ids, the number of distinct ids (``0 <= id <
            cardinality``), to size an embedding; ``None`` for floats, or before
            the graph is fitted.
        expression: Readable form of the computation, e.g.
            ``scale_to_z_score(fill_missing(age, 'mean'))``.
    """

    name: str
    dtype: str
    cardinality: int | None = None
    expression: str = ""


@dataclass(frozen=True)
class Op:
    """One operation of the graph; its id is its position in `FittedTransform.nodes`.

    Attributes:
        op: Operation name (``input``, ``add``, ``log1p``, ``vocabulary``, ...).
        kind: Kind of the values it produces: ``numeric``, ``string`` or ``ids``.
        args: Ids of the nodes it reads (always smaller than its own id).
        params: Static parameters (JSON values); ``analyzer`` is the id of the
            analyzer whose result the node uses. Read-only.
    """

    op: str
    kind: str
    args: tuple[int, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Analyzer:
    """A statistic of a (possibly derived) column, computed in a full pass over the data.

    Attributes:
        kind: ``mean_std``, ``min_max``, ``quantiles``, ``vocabulary`` or ``most_frequent``.
        input: Id of the node whose values it summarizes.
        params: Parameters (``q`` for quantiles; ``top_k`` and
            ``frequency_threshold`` for a vocabulary).
        stage: Pass over the data that computes it (1 + the largest stage of
            the analyzers its input depends on).
        result: The fitted values (``None`` before fitting). Read-only.
    """

    kind: str
    input: int
    params: Mapping[str, Any]
    stage: int
    result: Mapping[str, Any] | None = None


def _string_ids(arr: pa.Array, lookup: StringLookup) -> np.ndarray:
    """Ids of strings as ``preprocess.json`` defines them (nulls are looked up as "")."""
    arr = pc.fill_null(arr, "")
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int32)
    encoded = arr.dictionary_encode()
    table = lookup.ids(encoded.dictionary.to_pylist()).astype(np.int32)
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


@dataclass(frozen=True, eq=False)
class FittedTransform:
    """A traced preprocessing function and its fitted constants.

    Build one with :func:`jaxtx.trainer.transform.analyze` (:func:`trace`
    alone gives one whose :attr:`is_fitted` is false); apply it with
    :meth:`apply_numpy`, :meth:`apply_table` or, for serving,
    :meth:`string_preprocess` + :meth:`jax_fn`. All three give the same values
    (float32 bits and int32 ids).

    Attributes:
        inputs: Raw columns read, in first-use order.
        nodes: Operations in topological order.
        analyzers: Statistics the operations use.
        outputs: ``(name, node id)`` pairs, in the order the function returned them.
        num_rows: Rows of the data the analyzers saw (``None`` before fitting).

    Example:
        >>> graph = analyze(preprocess, "data/train")  # doctest: +SKIP
        >>> graph.apply_numpy({"age": np.array([39.0, np.nan])})  # doctest: +SKIP
        {'age': array([ 0.03, -0.01], dtype=float32)}
    """

    inputs: tuple[InputColumn, ...]
    nodes: tuple[Op, ...]
    analyzers: tuple[Analyzer, ...]
    outputs: tuple[tuple[str, int], ...]
    num_rows: int | None = None

    # ------------------------------------------------------------------ basics

    def __repr__(self) -> str:
        names = [name for name, _ in self.outputs]
        state = "fitted" if self.is_fitted else "not fitted"
        return (
            f"FittedTransform(inputs={[c.name for c in self.inputs]}, outputs={names}, "
            f"{len(self.nodes)} nodes, {len(self.analyzers)} analyzers, {state})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FittedTransform):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)

    @cached_property
    def _canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @property
    def is_fitted(self) -> bool:
        """Whether every analyzer has a result."""
        return all(a.result is not None for a in self.analyzers)

    @property
    def num_stages(self) -> int:
        """Passes over the data that fitting takes (0 without analyzers)."""
        return max((a.stage for a in self.analyzers), default=0)

    @property
    def input_columns(self) -> tuple[InputColumn, ...]:
        """Raw columns the graph reads, with their kinds."""
        return self.inputs

    @property
    def output_columns(self) -> tuple[OutputColumn, ...]:
        """Output columns: name, dtype (float32 or int32) and, for ids, the cardinality."""
        cols = []
        for name, nid in self.outputs:
            node = self.nodes[nid]
            dtype = "int32" if node.kind == IDS else "float32"
            card = self.cardinality(nid) if node.kind == IDS else None
            cols.append(OutputColumn(name, dtype, card, self.describe(nid)))
        return tuple(cols)

    def cardinality(self, node_id: int) -> int | None:
        """Number of distinct ids an ids node produces (``None`` if not fitted yet).

        Args:
            node_id: Id of a ``vocabulary``, ``hash_strings`` or ``bucketize`` node.

        Returns:
            The cardinality.
        """
        node = self.nodes[node_id]
        p = node.params
        if node.op == "hash_strings":
            return int(p["num_buckets"])
        if node.op == "vocabulary":
            result = self.analyzers[p["analyzer"]].result
            if result is None:
                return None
            return len(result["vocabulary"]) + int(p["num_oov_buckets"])
        if node.op == "bucketize":
            edges = self._bucket_edges(node_id)
            return None if edges is None else len(edges) + 2
        raise TransformError(f"node {node_id} ({node.op}) does not produce ids")

    def describe(self, node_id: int, limit: int = 160) -> str:
        """Readable expression of a node, e.g. ``log1p((age * 2.0))``.

        Args:
            node_id: The node.
            limit: Longest text returned (cut with ``...``).

        Returns:
            The expression.
        """
        text = _describe(self.nodes, self.analyzers, node_id)
        return text if len(text) <= limit else text[: limit - 3] + "..."

    # ------------------------------------------------------------- constants

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise TransformError(
                "the transform graph is not fitted: its analyzers have no results; "
                "build it with analyze(preprocessing_fn, data)"
            )

    def _result(self, node: Op) -> Mapping[str, Any]:
        result = self.analyzers[node.params["analyzer"]].result
        if result is None:
            raise TransformError(
                f"analyzer {node.params['analyzer']} has no result yet; fit the graph first"
            )
        return result

    def _bucket_edges(self, node_id: int) -> np.ndarray | None:
        params = self.nodes[node_id].params
        if "boundaries" in params:
            return np.asarray(params["boundaries"], dtype=np.float32)
        result = self.analyzers[params["analyzer"]].result
        if result is None:
            return None
        return np.unique(np.asarray(result["values"], dtype=np.float32))

    def fill_value(self, node_id: int) -> float | str:
        """The value a ``fill_missing`` node puts in place of missing values.

        Args:
            node_id: Id of a ``fill_missing`` node.

        Returns:
            The constant, or the fitted statistic (mean, median, ...).
        """
        node = self.nodes[node_id]
        p = node.params
        strategy = p["strategy"]
        if strategy == "constant":
            return p["value"]
        result = self._result(node)
        if strategy == "mean":
            return float(result["mean"])
        if strategy == "median":
            return float(result["values"][0])
        if strategy in ("min", "max"):
            return float(result[strategy])
        return result["value"]  # most_frequent

    @cached_property
    def _constants(self) -> dict[int, Any]:
        """Per node, the float32 constants (or lookup tables) its evaluation needs."""
        consts: dict[int, Any] = {}
        for nid, node in enumerate(self.nodes):
            p = node.params
            if node.op in ARITH_OPS and "scalar" in p:
                c = _F32(p["scalar"])
                if node.op == "div" and not p.get("scalar_first", False):
                    c = _F32(1) / c  # division by a scalar = product with its reciprocal
                consts[nid] = c
            elif node.op == "clip":
                consts[nid] = (
                    None if p.get("min") is None else _F32(p["min"]),
                    None if p.get("max") is None else _F32(p["max"]),
                )
        return consts

    def _fitted_constants(self, nid: int) -> Any:
        cache = self._fitted_cache
        if nid in cache:
            return cache[nid]
        node = self.nodes[nid]
        p = node.params
        value: Any
        if node.op == "scale_to_z_score":
            r = self._result(node)
            std = float(r["std"])
            value = (_F32(r["mean"]), _F32(1.0 / std) if std > 0 else _F32(1))
        elif node.op == "scale_to_0_1":
            r = self._result(node)
            lo, hi = _F32(r["min"]), _F32(r["max"])
            span = hi - lo
            value = (lo, _F32(1) / span if span > 0 else _F32(1))
        elif node.op == "fill_missing":
            fill = self.fill_value(nid)
            value = fill if node.kind == STRING else _F32(fill)
        elif node.op == "bucketize":
            edges = self._bucket_edges(nid)
            if edges is None:
                self._require_fitted()
            value = edges
        elif node.op == "vocabulary":
            vocab = tuple(self._result(node)["vocabulary"])
            value = StringLookup(vocab, num_oov_buckets=int(p["num_oov_buckets"]))
        elif node.op == "hash_strings":
            value = StringLookup((), num_oov_buckets=int(p["num_buckets"]), kind="hash")
        else:
            value = None
        cache[nid] = value
        return value

    @cached_property
    def _fitted_cache(self) -> dict[int, Any]:
        return {}

    # ------------------------------------------------------------ evaluation

    def _needed(self, wanted: Iterable[int], stop_at_ids: bool) -> list[int]:
        need: set[int] = set()
        stack = list(wanted)
        while stack:
            nid = stack.pop()
            if nid in need:
                continue
            need.add(nid)
            node = self.nodes[nid]
            if stop_at_ids and node.op in ("vocabulary", "hash_strings"):
                continue
            stack.extend(node.args)
        return sorted(need)

    def evaluate(
        self, columns: Mapping[str, Any], wanted: Iterable[int], backend: tm.Backend = tm.NUMPY
    ) -> dict[int, Any]:
        """Evaluate nodes on prepared columns (used by fitting and the apply paths).

        Args:
            columns: For NumPy: raw numeric columns as float32 arrays and raw
                string columns as ``pa.Array``. For JAX: numeric columns as
                float32 arrays and, under their serving keys, the int32 ids of
                every ``vocabulary``/``hash_strings`` node.
            wanted: Op ids to compute.
            backend: `tm.NUMPY` or `tm.JAX`.

        Returns:
            Op id -> values, for the wanted nodes and everything they read.
        """
        is_jax = backend.name == "jax"
        values: dict[int, Any] = {}
        with np.errstate(all="ignore"):
            for nid in self._needed(wanted, stop_at_ids=is_jax):
                node = self.nodes[nid]
                if is_jax and node.op in ("vocabulary", "hash_strings"):
                    values[nid] = backend.xp.asarray(columns[node.params["key"]]).astype("int32")
                else:
                    args = [values[a] for a in node.args]
                    values[nid] = self._eval_node(nid, node, args, columns, backend)
        return values

    def _eval_node(
        self, nid: int, node: Op, args: list[Any], columns: Mapping[str, Any], b: tm.Backend
    ) -> Any:
        op, p, xp = node.op, node.params, b.xp
        if op == "input":
            return columns[p["name"]]
        if op in ARITH_OPS:
            fn = getattr(b, op)
            if len(args) == 2:
                return fn(args[0], args[1])
            c = self._constants[nid]
            if op == "div" and not p.get("scalar_first", False):
                return b.mul(args[0], c)
            return fn(c, args[0]) if p.get("scalar_first", False) else fn(args[0], c)
        if op == "neg":
            return -args[0]
        if op == "log1p":
            return tm.log1p(args[0], b)
        if op == "clip":
            lo, hi = self._constants[nid]
            x = args[0]
            if lo is not None:
                x = xp.where(x < lo, lo, x)
            if hi is not None:
                x = xp.where(x > hi, hi, x)
            return x
        consts = self._fitted_constants(nid)
        if op == "scale_to_z_score" or op == "scale_to_0_1":
            shift, scale = consts
            return b.mul(b.sub(args[0], shift), scale)
        if op == "fill_missing":
            if node.kind == STRING:
                return pc.fill_null(args[0], consts)
            return xp.where(xp.isnan(args[0]), consts, args[0])
        if op == "bucketize":
            x = args[0]
            ids = b.searchsorted(consts, x)
            return xp.where(xp.isnan(x), np.int32(len(consts) + 1), ids).astype(xp.int32)
        if op in ("vocabulary", "hash_strings"):
            return _string_ids(args[0], consts)
        raise TransformError(f"node {nid}: unknown op {op!r}")

    # --------------------------------------------------------------- serving

    @cached_property
    def _serving(self) -> list[tuple[str, int, str, list[int]]]:
        """``(key, node id, raw column, default)`` of every string-to-ids node."""
        out = []
        for nid, node in enumerate(self.nodes):
            if node.op not in ("vocabulary", "hash_strings"):
                continue
            src = node.args[0]
            fills = []
            while self.nodes[src].op == "fill_missing":
                fills.append(src)
                src = self.nodes[src].args[0]
            out.append((node.params["key"], nid, self.nodes[src].params["name"], fills))
        return out

    def _serving_default(self, fills: list[int]) -> str:
        # After the innermost fill_missing there are no missing values left.
        return "" if not fills else str(self.fill_value(fills[-1]))

    @property
    def jax_inputs(self) -> dict[str, str]:
        """Arguments of :meth:`jax_fn`: raw numeric columns (``float32``) and, for each
        ``preprocess.json`` entry, its ids (``int32``)."""
        args = {c.name: "float32" for c in self.inputs if c.kind == NUMERIC}
        for key, *_ in self._serving:
            args[key] = "int32"
        return args

    @property
    def serving_inputs(self) -> dict[str, str]:
        """Raw features a client sends, ``{name: "float32" | "string"}`` (``signature.json``)."""
        return {c.name: ("string" if c.kind == STRING else "float32") for c in self.inputs}

    def jax_input_specs(self, batch: Any = "b") -> dict[str, Any]:
        """``jax.ShapeDtypeStruct`` of every :meth:`jax_fn` argument, for ``jax.export``.

        Args:
            batch: Batch size: an int, a symbolic dimension, or a name for
                ``jax.export.symbolic_shape``.

        Returns:
            ``{name: ShapeDtypeStruct((batch,), dtype)}``.
        """
        import jax

        if isinstance(batch, str):
            (batch,) = jax.export.symbolic_shape(batch)
        return {
            name: jax.ShapeDtypeStruct((batch,), np.dtype(dtype))
            for name, dtype in self.jax_inputs.items()
        }

    def string_preprocess(self) -> dict[str, dict[str, Any]]:
        """The ``preprocess.json`` entries that map string columns to int32 ids.

        One entry per ``vocabulary`` or ``hash_strings`` node, keyed by the name
        of the :meth:`jax_fn` argument that receives the ids; ``source`` names the
        raw column when it differs from the key (a column feeding two string
        ops). A string ``fill_missing`` becomes the entry's ``default``.

        Returns:
            ``{key: {"kind": "vocabulary", "vocabulary": [...], "num_oov_buckets": n,
            "default": "..."}}`` or ``{"kind": "hash", "num_buckets": n, ...}``.

        Example:
            >>> graph.string_preprocess()  # doctest: +SKIP
            {'workclass': {'kind': 'vocabulary', 'vocabulary': ['Private', ...],
                           'num_oov_buckets': 1, 'default': ''}}
        """
        self._require_fitted()
        entries: dict[str, dict[str, Any]] = {}
        for key, nid, raw, fills in self._serving:
            node = self.nodes[nid]
            entry: dict[str, Any]
            if node.op == "vocabulary":
                entry = {
                    "kind": "vocabulary",
                    "vocabulary": list(self._result(node)["vocabulary"]),
                    "num_oov_buckets": int(node.params["num_oov_buckets"]),
                }
            else:
                entry = {"kind": "hash", "num_buckets": int(node.params["num_buckets"])}
            entry["default"] = self._serving_default(fills)
            if key != raw:
                entry["source"] = raw
            entries[key] = entry
        return entries

    def jax_fn(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The numeric part of the graph as a pure, jittable JAX function.

        Args:
            inputs: ``{name: array[b]}`` for every name in :attr:`jax_inputs`:
                float32 raw numeric columns (NaN = missing) and the int32 ids that
                ``preprocess.json`` (:meth:`string_preprocess`) gives. Extra keys
                are ignored.

        Returns:
            ``{output name: array[b]}``: float32 values and int32 ids, equal to
            what :meth:`apply_numpy` returns for the same raw rows.

        Example:
            >>> fn = jax.jit(graph.jax_fn)  # doctest: +SKIP
            >>> fn({"age": jnp.array([39.0]),
            ...     "workclass": jnp.array([0], jnp.int32)})  # doctest: +SKIP
        """
        import jax.numpy as jnp

        self._require_fitted()
        missing = [n for n in self.jax_inputs if n not in inputs]
        if missing:
            raise TransformError(
                f"jax_fn needs inputs {missing} (it takes {list(self.jax_inputs)}); string "
                "columns are passed as the int32 ids preprocess.json gives"
            )
        cols = {
            name: jnp.asarray(inputs[name], dtype=jnp.float32 if dt == "float32" else jnp.int32)
            for name, dt in self.jax_inputs.items()
        }
        values = self.evaluate(cols, [nid for _, nid in self.outputs], tm.JAX)
        return {name: values[nid] for name, nid in self.outputs}

    # ----------------------------------------------------------------- apply

    def _prepare(self, raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], int]:
        cols: dict[str, Any] = {}
        rows: int | None = None
        first = ""
        for col in self.inputs:
            if col.name not in raw:
                raise TransformError(
                    f"column {col.name!r} is missing from {where}; it has "
                    f"{sorted(map(str, raw))}; the transform reads "
                    f"{[c.name for c in self.inputs]}"
                )
            values = raw[col.name]
            arr = (
                _as_float32(col.name, values)
                if col.kind == NUMERIC
                else _as_strings(col.name, values)
            )
            n = len(arr)
            if rows is None:
                rows, first = n, col.name
            elif n != rows:
                raise TransformError(
                    f"column {col.name!r} has {n} rows but {first!r} has {rows}; "
                    "pass columns of equal length"
                )
            cols[col.name] = arr
        return cols, rows or 0

    def apply_numpy(self, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Transform raw columns with NumPy (training data, transformed examples).

        Args:
            raw: ``{column: values}`` with a NumPy array, list, ``pa.Array`` or
                ``pa.ChunkedArray`` per input column; missing values are null /
                ``None`` (strings and numbers) or NaN (numbers). Extra columns are
                ignored.

        Returns:
            ``{output name: array}``: float32 values or int32 ids, one per row.

        Example:
            >>> graph.apply_numpy({"age": np.array([39.0, np.nan]),
            ...     "workclass": np.array(["Private", None], object)})  # doctest: +SKIP
        """
        self._require_fitted()
        cols, _ = self._prepare(raw, "the input")
        values = self.evaluate(cols, [nid for _, nid in self.outputs], tm.NUMPY)
        out = {}
        for name, nid in self.outputs:
            arr = np.asarray(values[nid])
            out[name] = arr.astype(np.int32 if self.nodes[nid].kind == IDS else np.float32)
        return out

    def apply_table(self, table: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
        """Transform an Arrow table or record batch (vectorized; use it in a Beam ``Map``).

        Args:
            table: Rows with (at least) the input columns.

        Returns:
            Same type as ``table``, one float32 or int32 column per output (NaN
            stays NaN), values equal to :meth:`apply_numpy`.

        Example:
            >>> pcoll | beam.Map(graph.apply_table)  # doctest: +SKIP
        """
        self._require_fitted()
        names = table.schema.names
        raw = {c.name: table.column(c.name) for c in self.inputs if c.name in names}
        if len(raw) < len(self.inputs):
            missing = [c.name for c in self.inputs if c.name not in names]
            raise TransformError(
                f"column {missing[0]!r} is missing from the table; it has {names}; "
                f"the transform reads {[c.name for c in self.inputs]}"
            )
        out = self.apply_numpy(raw)
        arrays = [pa.array(v) for v in out.values()]
        if isinstance(table, pa.RecordBatch):
            return pa.RecordBatch.from_arrays(arrays, names=list(out))
        return pa.Table.from_arrays(arrays, names=list(out))

    # ------------------------------------------------------------------ JSON

    def with_results(
        self, results: Mapping[int, Mapping[str, Any]], num_rows: int | None
    ) -> FittedTransform:
        """Copy of the graph with analyzer results filled in.

        Args:
            results: Analyzer id -> result.
            num_rows: Rows analyzed.

        Returns:
            The new graph.
        """
        analyzers = tuple(
            replace(a, result=dict(results[i])) if i in results else a
            for i, a in enumerate(self.analyzers)
        )
        return replace(self, analyzers=analyzers, num_rows=num_rows)

    def to_json(self) -> dict[str, Any]:
        """The ``transform_graph.json`` document.

        Returns:
            A JSON-ready dict (format ``jaxtx.transform/1``).
        """
        return {
            "format": FORMAT,
            "num_rows": self.num_rows,
            "inputs": [{"name": c.name, "kind": c.kind} for c in self.inputs],
            "outputs": [
                {
                    "name": name,
                    "node": nid,
                    "dtype": col.dtype,
                    "cardinality": col.cardinality,
                    "expression": col.expression,
                }
                for (name, nid), col in zip(self.outputs, self.output_columns, strict=True)
            ],
            "nodes": [
                {
                    "id": i,
                    "op": n.op,
                    "kind": n.kind,
                    "args": list(n.args),
                    "params": dict(n.params),
                }
                for i, n in enumerate(self.nodes)
            ],
            "analyzers": [
                {
                    "id": i,
                    "kind": a.kind,
                    "input": a.input,
                    "stage": a.stage,
                    "params": dict(a.params),
                    "result": None if a.result is None else dict(a.result),
                }
                for i, a in enumerate(self.analyzers)
            ],
        }

    @classmethod
    def from_json(cls, doc: Any, source: str = GRAPH_FILE) -> FittedTransform:
        """Parse a ``transform_graph.json`` document.

        Args:
            doc: The decoded JSON.
            source: File name for error messages.

        Returns:
            The graph.

        Raises:
            TransformError: The document is not ``jaxtx.transform/1``.
        """
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise TransformError(f"{source}: format {found!r} is not {FORMAT!r}")
        try:
            nodes = tuple(
                Op(d["op"], d["kind"], tuple(int(a) for a in d["args"]), dict(d["params"]))
                for d in doc["nodes"]
            )
            analyzers = tuple(
                Analyzer(
                    d["kind"],
                    int(d["input"]),
                    dict(d["params"]),
                    int(d["stage"]),
                    None if d.get("result") is None else dict(d["result"]),
                )
                for d in doc["analyzers"]
            )
            inputs = tuple(InputColumn(d["name"], d["kind"]) for d in doc["inputs"])
            outputs = tuple((str(d["name"]), int(d["node"])) for d in doc["outputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TransformError(f"{source}: malformed ({type(exc).__name__}: {exc})") from exc
        for i, node in enumerate(nodes):
            if node.op not in _OPS or any(not 0 <= a < i for a in node.args):
                raise TransformError(f"{source}: node {i} ({node.op!r}) is not valid")
        for i, a in enumerate(analyzers):
            if a.kind not in ANALYZER_KINDS or not 0 <= a.input < len(nodes):
                raise TransformError(f"{source}: analyzer {i} ({a.kind!r}) is not valid")
        num_rows = doc.get("num_rows")
        return cls(inputs, nodes, analyzers, outputs, None if num_rows is None else int(num_rows))

    def save(self, directory: str | os.PathLike[str]) -> str:
        """Write ``<directory>/transform_graph.json`` (human-readable JSON, no pickle).

        Args:
            directory: Created when missing.

        Returns:
            The file's path.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        target = path / GRAPH_FILE
        tmp = path / f".{GRAPH_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False), encoding="utf-8")
        os.replace(tmp, target)
        return str(target)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> FittedTransform:
        """Read a graph written by :meth:`save`.

        Args:
            directory: The directory (or the JSON file itself).

        Returns:
            The graph.

        Raises:
            TransformError: The file is missing or malformed.
        """
        path = Path(directory)
        if path.is_dir():
            path = path / GRAPH_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TransformError(
                f"{path}: cannot read ({exc}); save the graph with graph.save(dir)"
            ) from exc
        except ValueError as exc:
            raise TransformError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_json(doc, str(path))


# --------------------------------------------------------------------- inputs


def _as_float32(name: str, values: Any) -> np.ndarray:
    """Numeric column -> float32 NumPy array with NaN for missing values."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        t = values.type
        if pa.types.is_dictionary(t):
            values = values.dictionary_decode()
            t = values.type
        if pa.types.is_floating(t):
            arr = values.to_numpy(zero_copy_only=False)
        elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
            arr = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        elif pa.types.is_null(t):
            arr = np.full(len(values), np.nan)
        else:
            raise TransformError(
                f"column {name!r} is numeric in the transform but holds {t} values; "
                "pass numbers (null or NaN for a missing value)"
            )
        return np.asarray(arr, dtype=np.float32)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise TransformError(f"column {name!r}: expected one value per row, got shape {arr.shape}")
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float32)
    if arr.dtype.kind == "O":
        bad = [
            v
            for v in arr
            if v is not None
            and (
                isinstance(v, bool | np.bool_ | str | bytes)
                or not isinstance(v, int | float | np.integer | np.floating)
            )
        ]
        if not bad:
            filled = np.array([np.nan if v is None else v for v in arr], dtype=np.float64)
            return filled.astype(np.float32)
        example = bad[0]
    else:
        example = arr.flat[0] if arr.size else arr.dtype
    raise TransformError(
        f"column {name!r} is numeric in the transform but holds {type(example).__name__} "
        f"values such as {example!r}; pass numbers (None or NaN for a missing value)"
    )


def _as_strings(name: str, values: Any) -> pa.Array:
    """String column -> ``pa.Array`` of strings with nulls for missing values."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        t = values.type
        if pa.types.is_dictionary(t):
            values = values.dictionary_decode()
            t = values.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return values
        if pa.types.is_null(t):
            return pa.nulls(len(values), pa.string())
        raise TransformError(
            f"column {name!r} is a string column in the transform but holds {t} values; "
            "pass strings (null for a missing value)"
        )
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.ndim != 1:
        raise TransformError(f"column {name!r}: expected one value per row, got shape {arr.shape}")
    items = [
        None
        if v is None or (isinstance(v, float) and math.isnan(v))
        else v.decode("utf-8")
        if isinstance(v, bytes | np.bytes_)
        else v
        for v in arr.tolist()
    ]
    bad = next((v for v in items if v is not None and not isinstance(v, str)), None)
    if bad is not None:
        raise TransformError(
            f"column {name!r} is a string column in the transform but holds "
            f"{type(bad).__name__} values such as {bad!r}; pass strings (None for a missing value)"
        )
    return pa.array(items, type=pa.string())


# ---------------------------------------------------------------- describing


def _fmt(value: Any) -> str:
    return repr(value)


def _describe(nodes: tuple[Op, ...], analyzers: tuple[Analyzer, ...], nid: int) -> str:
    node = nodes[nid]
    p = node.params
    sub = [_describe(nodes, analyzers, a) for a in node.args]
    op = node.op
    if op == "input":
        return str(p["name"])
    if op in ARITH_OPS:
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
        if len(sub) == 2:
            return f"({sub[0]} {sym} {sub[1]})"
        if p.get("scalar_first", False):
            return f"({_fmt(p['scalar'])} {sym} {sub[0]})"
        return f"({sub[0]} {sym} {_fmt(p['scalar'])})"
    if op == "neg":
        return f"-{sub[0]}"
    extra = ""
    if op == "clip":
        extra = f", {_fmt(p.get('min'))}, {_fmt(p.get('max'))}"
    elif op == "fill_missing":
        extra = ", " + (
            _fmt(p["value"]) if p["strategy"] == "constant" else _fmt(str(p["strategy"]))
        )
    elif op == "bucketize":
        extra = (
            f", boundaries={p['boundaries']}"
            if "boundaries" in p
            else f", num_buckets={p['num_buckets']}"
        )
    elif op == "vocabulary":
        a = analyzers[p["analyzer"]].params
        extra = (
            f", top_k={a.get('top_k')}, frequency_threshold={a.get('frequency_threshold')}, "
            f"num_oov_buckets={p['num_oov_buckets']}"
        )
    elif op == "hash_strings":
        extra = f", num_buckets={p['num_buckets']}"
    return f"{op}({', '.join(sub)}{extra})"
