"""Descriptive statistics over Arrow data (``jaxtx.statistics/1``).

The statistics of a split are computed in one pass over its record batches by
a mergeable accumulator (:class:`StatisticsAccumulator`): exact counts, mean
and variance from exact integer sums (:class:`jaxtx.core.numerics.ExactMoments`),
a deterministic quantile summary (:class:`jaxtx.core.sketches.QuantileSketch`:
exact up to ``StatsOptions.exact_quantiles_limit`` values, then rank error below
``1 / kll_k``), frequent-value candidates and a HyperLogLog register array.

Deterministic: the document depends only on the data's record batches (which
the Parquet readers cut the same way every time), never on their order, on
how a Beam runner spreads them over workers or on its merge tree: every part
of the accumulator merges exactly (integer sums, unions, register maxima), so
the same files give byte-identical statistics on every runner.  The same
accumulator backs three entry points:

* :class:`GenerateStatistics`: a Beam ``PTransform`` over record batches;
* :func:`compute_split_statistics`: one Beam pipeline over Parquet splits;
* :func:`statistics_from_table`: in-process, without Beam.

The finished statistics are plain JSON (see ``docs/formats.md``) and carry the
serialized sketches, so :func:`merge_statistics` can combine statistics
computed separately (shards, workers, spans).
"""

from __future__ import annotations

import base64
import json
import math
import os
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxtx.core import progress
from jaxtx.core.beam import BatchCombineFn, BeamOptions, run_and_read_json
from jaxtx.core.files import expand_paths
from jaxtx.core.numerics import ExactMoments
from jaxtx.core.parquet import ReadTask, iter_task_batches, row_group_tasks
from jaxtx.core.sketches import DEFAULT_EXACT_LIMIT, QuantileSketch, quantile_rank_error

__all__ = [
    "FORMAT",
    "FEATURE_TYPES",
    "GenerateStatistics",
    "StatisticsAccumulator",
    "StatisticsCombineFn",
    "StatisticsFormatError",
    "StatsOptions",
    "compute_split_statistics",
    "distinct_count_estimate",
    "feature_type",
    "kll_rank_error",
    "load_statistics",
    "merge_statistics",
    "save_statistics",
    "statistics_from_table",
]

FORMAT = "jaxtx.statistics/1"
FEATURE_TYPES = ("INT", "FLOAT", "STRING", "BYTES", "BOOL", "OTHER")
_NUMERIC_TYPES = frozenset({"INT", "FLOAT", "BOOL"})
_STRING_TYPES = frozenset({"STRING", "BYTES"})


class StatisticsFormatError(ValueError):
    """A statistics document is not ``jaxtx.statistics/1``."""


@dataclass(frozen=True)
class StatsOptions:
    """Options of the statistics computation.

    Attributes:
      num_quantiles: number of quantile intervals; quantiles are reported at
        ``q = 0, 1/num_quantiles, ..., 1`` and the equi-depth histogram has
        ``num_quantiles`` buckets.
      num_histogram_buckets: buckets of the equi-width histogram.
      top_k: length of ``top_k`` of string features.
      max_value_counts: string features with at most this many distinct values
        get exact ``value_counts`` (``value_counts_complete``); beyond it
        ``value_counts`` lists at most this many frequent-value candidates:
        every value above ``1 / max(max_value_counts, 4 * top_k, 16)`` of a
        record batch, plus each batch's ``4 * top_k`` most frequent values,
        with counts summed over the batches that list them (lower bounds, short
        by at most that fraction of the rows; any value above that fraction
        of all rows is listed).
      kll_k: size parameter of the quantile summary: past
        ``exact_quantiles_limit`` values every record batch keeps at most
        ``kll_k + 1`` of its values, and every rank (quantiles, CDF and so the
        cumulative histogram counts) is off by less than ``1 / kll_k`` of the
        count (0.5% for the default 200), deterministically; each feature's
        ``num.rank_error`` gives the bound of its data.  See
        :func:`kll_rank_error`.
      exact_quantiles_limit: up to this many finite values per feature the
        quantiles and histograms are exact.
      hll_lg_k: log2 of the HyperLogLog register count; relative standard
        error about ``1.04 / sqrt(2**hll_lg_k)`` (0.8% for 14).
      batch_size: rows per record batch when reading Parquet or splitting a
        table.
    """

    num_quantiles: int = 10
    num_histogram_buckets: int = 10
    top_k: int = 20
    max_value_counts: int = 1000
    kll_k: int = 200
    exact_quantiles_limit: int = DEFAULT_EXACT_LIMIT
    hll_lg_k: int = 14
    batch_size: int = 131072

    def __post_init__(self) -> None:
        if self.num_quantiles < 1 or self.num_histogram_buckets < 1:
            raise ValueError("num_quantiles and num_histogram_buckets must be >= 1")
        if self.top_k < 0 or self.max_value_counts < 0:
            raise ValueError("top_k and max_value_counts must be >= 0")
        if not 8 <= self.kll_k <= 65535:
            raise ValueError(f"kll_k must be in [8, 65535], got {self.kll_k}")
        if self.exact_quantiles_limit < 0:
            raise ValueError("exact_quantiles_limit must be >= 0")
        if not 7 <= self.hll_lg_k <= 21:
            raise ValueError(f"hll_lg_k must be in [7, 21], got {self.hll_lg_k}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


def kll_rank_error(options: StatsOptions = StatsOptions(), *, pmf: bool = False) -> float:
    """Return the bound of the normalized rank error of the quantile summary.

    Args:
      options: statistics options.
      pmf: the bound of a histogram bucket's mass (a difference of two ranks)
        instead of a single rank (a quantile, a cumulative count).

    Returns:
      ``1 / kll_k`` (0.005 for 200), twice that with ``pmf``; a deterministic
      bound, not a confidence level.
    """
    eps = quantile_rank_error(options.kll_k)
    return 2 * eps if pmf else eps


# --------------------------------------------------------------------------- types


def feature_type(arrow_type: pa.DataType) -> str:
    """Map an Arrow type to a jaxtx feature type.

    Args:
      arrow_type: the column type; dictionary types map by their value type.

    Returns:
      One of ``INT``, ``FLOAT``, ``BOOL``, ``STRING``, ``BYTES``, ``OTHER``.
    """
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_integer(t):
        return "INT"
    if pa.types.is_floating(t):
        return "FLOAT"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "STRING"
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    ):
        return "BYTES"
    return "OTHER"


def _promote(a: str, b: str) -> str:
    """Return the feature type of a merge of features typed ``a`` and ``b``."""
    if a == b:
        return a
    if a in _NUMERIC_TYPES and b in _NUMERIC_TYPES:
        return "FLOAT" if "FLOAT" in (a, b) else "INT"
    if a in _STRING_TYPES and b in _STRING_TYPES:
        return "BYTES"
    return "OTHER"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _bytes_key(value: bytes) -> str:
    """Represent a BYTES value as text: UTF-8 when valid, else ``b64:<base64>``."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + _b64(value)


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ------------------------------------------------------------------ numeric features


class _NumericAcc:
    """Mergeable summary of an INT, FLOAT or BOOL column (present values only)."""

    __slots__ = (
        "max",
        "min",
        "moments",
        "num_nan",
        "num_neg_inf",
        "num_pos_inf",
        "num_zeros",
        "quantiles",
    )

    def __init__(self, options: StatsOptions) -> None:
        self.moments = ExactMoments()
        self.min: float | int | None = None
        self.max: float | int | None = None
        self.num_zeros = 0
        self.num_nan = 0
        self.num_pos_inf = 0
        self.num_neg_inf = 0
        self.quantiles = QuantileSketch(options.kll_k, options.exact_quantiles_limit)

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def n_finite(self) -> int:
        return self.moments.n

    def add(self, arr: pa.Array, kind: str) -> None:
        """Add the non-null values of ``arr`` (nulls already dropped)."""
        if len(arr) == 0:
            return
        if kind == "FLOAT":
            x = arr.to_numpy(zero_copy_only=False)
            if x.dtype != np.float64:
                x = x.astype(np.float64)
            finite = np.isfinite(x)
            n_finite = int(np.count_nonzero(finite))
            if n_finite != len(x):
                self.num_nan += int(np.count_nonzero(np.isnan(x)))
                self.num_pos_inf += int(np.count_nonzero(x == np.inf))
                self.num_neg_inf += int(np.count_nonzero(x == -np.inf))
                x = x[finite]
            if n_finite == 0:
                return
            lo, hi = float(x.min()) + 0.0, float(x.max()) + 0.0  # never -0.0
            raw = xf = x
        else:
            raw = arr.to_numpy(zero_copy_only=False)
            if kind == "BOOL":
                raw = raw.view(np.uint8) if raw.dtype == np.bool_ else raw.astype(np.uint8)
            n_finite = len(raw)
            lo, hi = int(raw.min()), int(raw.max())
            xf = raw.astype(np.float64)
        self.num_zeros += n_finite - int(np.count_nonzero(raw))
        self.moments.add(raw)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.quantiles.update(xf)

    def merge(self, other: _NumericAcc) -> None:
        """Merge ``other`` into this accumulator."""
        self.moments.merge(other.moments)
        for name in ("min", "max"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                pick = min if name == "min" else max
                setattr(self, name, theirs if mine is None else pick(mine, theirs))
        self.num_zeros += other.num_zeros
        self.num_nan += other.num_nan
        self.num_pos_inf += other.num_pos_inf
        self.num_neg_inf += other.num_neg_inf
        self.quantiles.merge(other.quantiles)

    def to_dict(self, kind: str, options: StatsOptions) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return the ``num`` block and the sketches of the feature."""
        n = self.n_finite
        cast = float if kind == "FLOAT" else int
        lo = None if self.min is None else cast(self.min)
        hi = None if self.max is None else cast(self.max)
        num: dict[str, Any] = {
            "mean": _finite_or_none(self.moments.mean()),
            "std": _finite_or_none(self.moments.std()),
            "min": lo,
            "max": hi,
            "num_zeros": self.num_zeros,
            "num_nan": self.num_nan,
            "num_pos_inf": self.num_pos_inf,
            "num_neg_inf": self.num_neg_inf,
            "quantiles": [],
            "histogram": {"buckets": []},
            "quantile_histogram": {"buckets": []},
            "rank_error": self.quantiles.rank_error(),
        }
        if n and lo is not None and hi is not None:
            qs = _quantiles(self.quantiles, float(lo), float(hi), options.num_quantiles)
            num["quantiles"] = qs
            num["histogram"] = {
                "buckets": _equi_width(self.quantiles, float(lo), float(hi), n, options)
            }
            num["quantile_histogram"] = {"buckets": _equi_depth(qs, n)}
        sketches = {"quantiles": self.quantiles.to_json(), "moments": self.moments.to_json()}
        return num, sketches

    @classmethod
    def from_dict(
        cls, num: Mapping[str, Any], sketches: Mapping[str, Any], options: StatsOptions
    ) -> _NumericAcc:
        """Rebuild an accumulator from a feature's ``num`` block and sketches."""
        acc = cls(options)
        acc.quantiles = QuantileSketch.from_json(
            sketches["quantiles"], k=options.kll_k, exact_limit=options.exact_quantiles_limit
        )
        acc.moments = ExactMoments.from_json(sketches["moments"])
        acc.num_zeros = int(num["num_zeros"])
        acc.num_nan = int(num["num_nan"])
        acc.num_pos_inf = int(num["num_pos_inf"])
        acc.num_neg_inf = int(num["num_neg_inf"])
        acc.min, acc.max = num.get("min"), num.get("max")
        return acc


def _quantiles(
    sketch: QuantileSketch, lo: float, hi: float, num_quantiles: int
) -> list[dict[str, float]]:
    """Quantiles at ``q = i / num_quantiles`` (inverted-CDF definition), exact ends."""
    ranks = [i / num_quantiles for i in range(num_quantiles + 1)]
    values = sketch.quantiles(ranks)
    values[0], values[-1] = lo, hi
    return [{"q": q, "value": float(v)} for q, v in zip(ranks, values, strict=True)]


def _equi_width(
    sketch: QuantileSketch, lo: float, hi: float, n: int, options: StatsOptions
) -> list[dict[str, float]]:
    """Equi-width buckets over ``[lo, hi]``; counts are rounded to sum exactly to ``n``.

    Buckets are ``[low, high)`` except the last, which includes ``hi``.  A
    constant column (``lo == hi``) yields a single zero-width bucket.
    """
    if not hi > lo:
        return [{"low": lo, "high": hi, "count": float(n)}]
    edges = np.linspace(lo, hi, options.num_histogram_buckets + 1)
    edges[0], edges[-1] = lo, hi
    inner = np.unique(edges[1:-1])
    cdf = np.asarray(sketch.cdf(inner.tolist()), dtype=np.float64)
    cum = np.concatenate([[0.0], np.round(cdf * n), [float(n)]])
    counts = np.diff(np.maximum.accumulate(np.minimum(cum, n)))
    bounds = np.concatenate([[lo], inner, [hi]])
    return [
        {"low": float(bounds[i]), "high": float(bounds[i + 1]), "count": float(counts[i])}
        for i in range(len(counts))
    ]


def _equi_depth(quantiles: Sequence[Mapping[str, float]], n: int) -> list[dict[str, float]]:
    """Equi-depth buckets between consecutive quantiles, each ``n / buckets`` deep."""
    num = len(quantiles) - 1
    return [
        {
            "low": quantiles[i]["value"],
            "high": quantiles[i + 1]["value"],
            "count": n / num,
        }
        for i in range(num)
    ]


# ------------------------------------------------------------------- string features


def _candidate_fraction(options: StatsOptions) -> int:
    """``d``: values above ``1/d`` of a batch become frequent-value candidates."""
    return max(options.max_value_counts, 4 * options.top_k, 16)


def _hash_keys(keys: list[str]) -> np.ndarray:
    """Stable 64-bit hashes of strings (SipHash with pandas' fixed key)."""
    from pandas.util import hash_array

    return hash_array(np.asarray(keys, dtype=object))


class _Hll:
    """HyperLogLog registers: the maximum rank of the hashes per register.

    Registers are maxima, so the sketch depends only on the set of values
    added, never on their order or on how partial sketches were merged.

    Args:
      lg_k: log2 of the register count.
    """

    __slots__ = ("lg_k", "registers")

    def __init__(self, lg_k: int) -> None:
        self.lg_k = lg_k
        self.registers = np.zeros(1 << lg_k, dtype=np.uint8)

    def __getstate__(self) -> tuple[int, bytes]:
        return self.lg_k, self.registers.tobytes()

    def __setstate__(self, state: tuple[int, bytes]) -> None:
        self.lg_k = state[0]
        self.registers = np.frombuffer(state[1], dtype=np.uint8).copy()

    def update(self, hashes: np.ndarray) -> None:
        """Add 64-bit hashes."""
        p = self.lg_k
        idx = (hashes >> np.uint64(64 - p)).astype(np.intp)
        w = (hashes << np.uint64(p)) | np.uint64(1 << (p - 1))  # bounds the rank
        hi = (w >> np.uint64(32)).astype(np.float64)
        lo = (w & np.uint64(0xFFFFFFFF)).astype(np.float64)
        lead = np.where(
            hi > 0, 31 - np.floor(np.log2(np.maximum(hi, 1))), 63 - np.floor(np.log2(lo))
        )
        np.maximum.at(self.registers, idx, (lead + 1).astype(np.uint8))

    def merge(self, other: _Hll) -> None:
        """Union with ``other`` (the result has the smaller register count)."""
        a, b = (self, other) if self.lg_k <= other.lg_k else (other, self)
        folded = b._folded(a.lg_k)
        self.lg_k = a.lg_k
        self.registers = np.maximum(a.registers, folded)

    def _folded(self, lg_k: int) -> np.ndarray:
        """These registers as a sketch of ``2**lg_k`` registers (exact)."""
        d = self.lg_k - lg_k
        if d == 0:
            return self.registers
        j = np.arange(len(self.registers))
        low = j & ((1 << d) - 1)  # index bits that become rank bits
        rank = np.where(
            low > 0,
            d - np.floor(np.log2(np.maximum(low, 1))).astype(np.int64),
            self.registers.astype(np.int64) + d,
        )
        rank = np.where(self.registers > 0, rank, 0).astype(np.uint8)
        out = np.zeros(1 << lg_k, dtype=np.uint8)
        np.maximum.at(out, j >> d, rank)
        return out

    def estimate(self) -> float:
        """The distinct-count estimate (linear counting for small counts)."""
        m = float(len(self.registers))
        alpha = 0.7213 / (1.0 + 1.079 / m)
        e = alpha * m * m / float(np.sum(np.ldexp(1.0, -self.registers.astype(np.int64))))
        zeros = int(np.count_nonzero(self.registers == 0))
        if e <= 2.5 * m and zeros:
            return m * math.log(m / zeros)
        return e

    def to_json(self) -> dict[str, Any]:
        return {"lg_k": self.lg_k, "registers": _b64(zlib.compress(self.registers.tobytes(), 6))}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> _Hll:
        hll = cls(int(doc["lg_k"]))
        regs = np.frombuffer(zlib.decompress(_unb64(doc["registers"])), dtype=np.uint8)
        if len(regs) != len(hll.registers):
            raise ValueError("HyperLogLog: register count does not match lg_k")
        hll.registers = regs.copy()
        return hll


class _StringAcc:
    """Mergeable summary of a STRING or BYTES column (present values only)."""

    __slots__ = ("candidates", "exact", "hll", "num_empty", "total_length")

    def __init__(self, options: StatsOptions) -> None:
        self.total_length = 0
        self.num_empty = 0
        self.exact: dict[str, int] | None = {}
        self.candidates: dict[str, int] = {}
        self.hll = _Hll(options.hll_lg_k)

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def add(self, arr: pa.Array, kind: str, options: StatsOptions) -> None:
        """Add the non-null values of ``arr`` (nulls already dropped)."""
        if len(arr) == 0:
            return
        vc = pc.value_counts(arr)
        values = vc.field("values")
        counts = vc.field("counts").to_numpy()
        length = pc.utf8_length if kind == "STRING" else pc.binary_length
        lengths = length(values).to_numpy(zero_copy_only=False)
        self.total_length += int(np.dot(lengths.astype(np.int64), counts))
        self.num_empty += int(counts[lengths == 0].sum())
        keys = values.to_pylist()
        if kind != "STRING":
            keys = [_bytes_key(k) for k in keys]
        # Candidates: the batch's values above 1/d of it and its 4 top_k most
        # frequent ones (count desc, then value): a function of the batch alone.
        top = 4 * options.top_k
        if len(keys) > top:
            d = _candidate_fraction(options)
            order = pc.select_k_unstable(
                pa.table({"c": vc.field("counts"), "v": values}),
                top,
                [("c", "descending"), ("v", "ascending")],
            ).to_numpy()
            picked = np.union1d(
                order.astype(np.int64), np.flatnonzero(counts * d > int(counts.sum()))
            )
        else:
            picked = np.arange(len(keys))
        self._add_counts(keys, counts, picked, options)

    def _add_counts(
        self, keys: list[str], counts: np.ndarray, picked: np.ndarray, options: StatsOptions
    ) -> None:
        """Feed one batch's distinct values, their counts and its candidates."""
        self.hll.update(_hash_keys(keys))
        cand = self.candidates
        for i, c in zip(picked.tolist(), counts[picked].tolist(), strict=True):
            cand[keys[i]] = cand.get(keys[i], 0) + c
        exact = self.exact
        if exact is not None:
            if len(keys) > options.max_value_counts:
                self.exact = None
                return
            for key, weight in zip(keys, counts.tolist(), strict=True):
                exact[key] = exact.get(key, 0) + weight
            if len(exact) > options.max_value_counts:
                self.exact = None

    def merge(self, other: _StringAcc, options: StatsOptions) -> None:
        """Merge ``other`` into this accumulator."""
        self.total_length += other.total_length
        self.num_empty += other.num_empty
        self.hll.merge(other.hll)
        for key, weight in other.candidates.items():
            self.candidates[key] = self.candidates.get(key, 0) + weight
        if self.exact is None or other.exact is None:
            self.exact = None
            return
        for key, weight in other.exact.items():
            self.exact[key] = self.exact.get(key, 0) + weight
        if len(self.exact) > options.max_value_counts:
            self.exact = None

    def to_dict(self, num_present: int, options: StatsOptions) -> tuple[dict, dict[str, Any]]:
        """Return the ``str`` block and the sketches of the feature."""
        if self.exact is not None:
            items = sorted(self.exact.items(), key=lambda kv: (-kv[1], kv[0]))
            num_unique, exact = len(items), True
        else:
            items = sorted(self.candidates.items(), key=lambda kv: (-kv[1], kv[0]))
            num_unique = max(int(round(self.hll.estimate())), len(items))
            exact = False
        listed = [{"value": v, "count": c} for v, c in items]
        block = {
            "num_unique": num_unique,
            "num_unique_is_exact": exact,
            "avg_length": self.total_length / num_present if num_present else None,
            "num_empty": self.num_empty,
            "top_k": listed[: options.top_k],
            "value_counts": listed[: options.max_value_counts],
            "value_counts_complete": exact,
        }
        sketches = {"hll": self.hll.to_json(), "total_length": self.total_length}
        return block, sketches

    @classmethod
    def from_dict(
        cls,
        block: Mapping[str, Any],
        sketches: Mapping[str, Any],
        options: StatsOptions,
    ) -> _StringAcc:
        """Rebuild an accumulator from a feature's ``str`` block and sketches."""
        acc = cls(options)
        acc.hll = _Hll.from_json(sketches["hll"])
        acc.num_empty = int(block["num_empty"])
        acc.total_length = int(sketches["total_length"])
        acc.candidates = {vc["value"]: int(vc["count"]) for vc in block["value_counts"]}
        if block.get("value_counts_complete"):
            acc.exact = dict(acc.candidates)
            if len(acc.exact) > options.max_value_counts:
                acc.exact = None
        else:
            acc.exact = None
        return acc


# ------------------------------------------------------------------------ features


def _plain(arr: pa.Array) -> pa.Array:
    """Decode dictionaries and cast view/fixed-size layouts to their plain counterparts."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_string_view(t):
        return arr.cast(pa.large_string())
    if pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t):
        return arr.cast(pa.large_binary())
    return arr


class _FeatureAcc:
    """Per-feature accumulator: type, presence counts and the typed summary."""

    __slots__ = ("arrow_type", "kind", "num_present", "summary")

    def __init__(self, kind: str, arrow_type: str, options: StatsOptions) -> None:
        self.kind = kind
        self.arrow_type = arrow_type
        self.num_present = 0
        self.summary: _NumericAcc | _StringAcc | None
        if kind in _NUMERIC_TYPES:
            self.summary = _NumericAcc(options)
        elif kind in _STRING_TYPES:
            self.summary = _StringAcc(options)
        else:
            self.summary = None

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def add(self, arr: pa.Array, options: StatsOptions) -> None:
        """Add one column chunk."""
        present = len(arr) - arr.null_count
        self.num_present += present
        if self.summary is None or present == 0:
            return
        arr = _plain(arr)
        if arr.null_count:
            arr = arr.drop_null()
        if isinstance(self.summary, _NumericAcc):
            self.summary.add(arr, self.kind)
        else:
            self.summary.add(arr, self.kind, options)

    def merge(self, other: _FeatureAcc, options: StatsOptions) -> None:
        """Merge ``other`` into this accumulator, promoting types that differ.

        A side without present values takes the other's type; INT/BOOL with
        FLOAT becomes FLOAT, BOOL with INT becomes INT, STRING with BYTES
        becomes BYTES, and any other mix becomes OTHER (counts only).
        """
        if self.kind != other.kind:
            mine, theirs = (self.kind, self.arrow_type), (other.kind, other.arrow_type)
            if other.num_present == 0 and (self.num_present or mine <= theirs):
                return  # (two sides without values: the smaller type, in any order)
            if self.num_present == 0:
                self.kind, self.arrow_type = other.kind, other.arrow_type
                self.num_present, self.summary = other.num_present, other.summary
                return
            kind = _promote(self.kind, other.kind)
            if kind == "OTHER":
                self.summary = None
            elif kind != self.kind:
                self.arrow_type = other.arrow_type
            self.kind = kind
        self.num_present += other.num_present
        if isinstance(self.summary, _NumericAcc) and isinstance(other.summary, _NumericAcc):
            self.summary.merge(other.summary)
        elif isinstance(self.summary, _StringAcc) and isinstance(other.summary, _StringAcc):
            self.summary.merge(other.summary, options)

    def to_dict(self, num_rows: int, options: StatsOptions) -> dict[str, Any]:
        """Return the feature's entry of ``features``."""
        out: dict[str, Any] = {
            "type": self.kind,
            "arrow_type": self.arrow_type,
            "num_present": self.num_present,
            "num_missing": num_rows - self.num_present,
            "num": None,
            "str": None,
            "sketches": {},
        }
        if isinstance(self.summary, _NumericAcc):
            out["num"], out["sketches"] = self.summary.to_dict(self.kind, options)
        elif isinstance(self.summary, _StringAcc):
            out["str"], out["sketches"] = self.summary.to_dict(self.num_present, options)
        return out

    @classmethod
    def from_dict(cls, feature: Mapping[str, Any], options: StatsOptions) -> _FeatureAcc:
        """Rebuild a feature accumulator from its statistics entry."""
        kind = feature["type"]
        acc = cls(kind, feature["arrow_type"], options)
        acc.num_present = int(feature["num_present"])
        sketches = feature.get("sketches") or {}
        if "kll" in sketches or "frequent" in sketches:
            raise StatisticsFormatError(
                "written by an older jaxtx (randomized DataSketches sketches), which cannot "
                "be merged with deterministic statistics; re-run StatisticsGen on the data"
            )
        if kind in _NUMERIC_TYPES:
            if feature.get("num") is None or not {"quantiles", "moments"} <= sketches.keys():
                raise StatisticsFormatError(
                    "numeric feature without 'num' block or 'quantiles'/'moments' sketches"
                )
            acc.summary = _NumericAcc.from_dict(feature["num"], sketches, options)
        elif kind in _STRING_TYPES:
            if feature.get("str") is None or not {"hll", "total_length"} <= sketches.keys():
                raise StatisticsFormatError("string feature without 'str' block or sketches")
            acc.summary = _StringAcc.from_dict(feature["str"], sketches, options)
        return acc


class StatisticsAccumulator:
    """Mergeable, picklable accumulator of the statistics of one split.

    Args:
      options: statistics options.
    """

    __slots__ = ("features", "num_rows", "options")

    def __init__(self, options: StatsOptions = StatsOptions()) -> None:
        self.options = options
        self.num_rows = 0
        self.features: dict[str, _FeatureAcc] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "num_rows": self.num_rows, "features": self.features}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self.num_rows = state["num_rows"]
        self.features = state["features"]

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> StatisticsAccumulator:
        """Add a record batch (or every batch of a table).

        Args:
          batch: the rows to add.

        Returns:
          ``self``.
        """
        if isinstance(batch, pa.Table):
            for b in batch.to_batches(max_chunksize=self.options.batch_size):
                self.add_batch(b)
            return self
        self.num_rows += batch.num_rows
        for field, column in zip(batch.schema, batch.columns, strict=True):
            kind = feature_type(field.type)
            feat = self.features.get(field.name)
            if feat is None:
                feat = _FeatureAcc(kind, str(field.type), self.options)
                self.features[field.name] = feat
            elif kind != feat.kind:  # e.g. an all-null ``null`` column in one file
                part = _FeatureAcc(kind, str(field.type), self.options)
                part.add(column, self.options)
                feat.merge(part, self.options)
                continue
            feat.add(column, self.options)
        return self

    def merge(self, other: StatisticsAccumulator) -> StatisticsAccumulator:
        """Merge ``other`` into this accumulator.

        Args:
          other: an accumulator over other rows.

        Returns:
          ``self``.
        """
        self.num_rows += other.num_rows
        for name, feat in other.features.items():
            mine = self.features.get(name)
            if mine is None:
                self.features[name] = feat
            else:
                mine.merge(feat, self.options)
        return self

    def to_statistics(self) -> dict[str, Any]:
        """Return the ``jaxtx.statistics/1`` document.

        Returns:
          A JSON-serializable dict.
        """
        return {
            "format": FORMAT,
            "num_rows": self.num_rows,
            "features": {
                name: feat.to_dict(self.num_rows, self.options)
                for name, feat in self.features.items()
            },
        }

    @classmethod
    def from_statistics(
        cls, stats: Mapping[str, Any], options: StatsOptions = StatsOptions()
    ) -> StatisticsAccumulator:
        """Rebuild an accumulator from a statistics document (via its sketches).

        Args:
          stats: a ``jaxtx.statistics/1`` document.
          options: statistics options of the merged result.

        Returns:
          The accumulator.

        Raises:
          StatisticsFormatError: ``stats`` is not a ``jaxtx.statistics/1`` document.
        """
        _check_format(stats, "statistics")
        acc = cls(options)
        acc.num_rows = int(stats["num_rows"])
        for name, feature in stats["features"].items():
            try:
                acc.features[name] = _FeatureAcc.from_dict(feature, options)
            except (KeyError, TypeError, ValueError) as err:
                raise StatisticsFormatError(f"feature {name!r}: {err}") from err
        return acc


def _check_format(stats: Any, source: str) -> None:
    if not isinstance(stats, Mapping):
        raise StatisticsFormatError(f"{source}: expected a JSON object, got {type(stats).__name__}")
    fmt = stats.get("format")
    if fmt != FORMAT:
        raise StatisticsFormatError(f"{source}: format is {fmt!r}, expected {FORMAT!r}")
    if not isinstance(stats.get("features"), Mapping) or "num_rows" not in stats:
        raise StatisticsFormatError(f"{source}: missing 'num_rows' or 'features'")


# ------------------------------------------------------------------------------ API


def statistics_from_table(
    table: pa.Table | pa.RecordBatch, options: StatsOptions = StatsOptions()
) -> dict[str, Any]:
    """Compute statistics in-process (no Beam).

    Args:
      table: the data.
      options: statistics options.

    Returns:
      The ``jaxtx.statistics/1`` document; equal to the Beam path's result when
      the record batches are the same, else up to the last bits of means and
      standard deviations and, past the exact limit, the quantile rank error.
    """
    return StatisticsAccumulator(options).add_batch(table).to_statistics()


def merge_statistics(
    stats: Sequence[Mapping[str, Any]], options: StatsOptions = StatsOptions()
) -> dict[str, Any]:
    """Merge statistics of disjoint data (shards, spans) through their sketches.

    Counts, means, standard deviations, minima and maxima are exact; quantiles,
    histograms and distinct counts carry the sketches' errors (each feature's
    ``num.rank_error`` grows by the reduction of the stored quantile summary).
    The result does not depend on the order of ``stats``.  Exact value
    counts survive while the union has at most ``options.max_value_counts``
    distinct values.  A feature absent from some inputs counts as missing there.

    Args:
      stats: ``jaxtx.statistics/1`` documents.
      options: options of the result.

    Returns:
      The merged document.
    """
    acc = StatisticsAccumulator(options)
    for i, s in enumerate(stats):
        _check_format(s, f"statistics[{i}]")
        acc.merge(StatisticsAccumulator.from_statistics(s, options))
    return acc.to_statistics()


def distinct_count_estimate(hll: Mapping[str, Any]) -> tuple[float, float]:
    """The distinct-count estimate of a string feature's ``sketches.hll``.

    Args:
      hll: the ``{"lg_k", "registers"}`` document.

    Returns:
      ``(estimate, relative standard error)``.
    """
    sketch = _Hll.from_json(hll)
    return sketch.estimate(), 1.04 / math.sqrt(len(sketch.registers))


def save_statistics(stats: Mapping[str, Any], path: str) -> None:
    """Write statistics as JSON.

    Args:
      stats: a ``jaxtx.statistics/1`` document.
      path: destination file; parent directories are created.
    """
    _check_format(stats, "save_statistics")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(stats, f, ensure_ascii=False, allow_nan=False)
    os.replace(tmp, path)


def load_statistics(path: str) -> dict[str, Any]:
    """Read statistics written by :func:`save_statistics`.

    Args:
      path: the JSON file.

    Returns:
      The document.

    Raises:
      StatisticsFormatError: the file is not valid JSON or not ``jaxtx.statistics/1``;
        the message names the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except json.JSONDecodeError as err:
        raise StatisticsFormatError(f"{path}: not valid JSON: {err}") from err
    _check_format(stats, path)
    return stats


# ----------------------------------------------------------------------------- Beam


class StatisticsCombineFn(BatchCombineFn):
    """``CombineFn`` from record batches (or tables) to a statistics document.

    Args:
      options: statistics options.
    """

    def __init__(self, options: StatsOptions = StatsOptions()) -> None:
        super().__init__()
        self._options = options

    def create_accumulator(self) -> StatisticsAccumulator:
        return StatisticsAccumulator(self._options)

    def extract_output(self, accumulator: StatisticsAccumulator) -> dict[str, Any]:
        return accumulator.to_statistics()


class GenerateStatistics(beam.PTransform):
    """``PCollection[pa.RecordBatch]`` -> ``PCollection[dict]`` with one statistics document.

    Args:
      options: statistics options.
    """

    def __init__(self, options: StatsOptions = StatsOptions()) -> None:
        super().__init__()
        self._options = options

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "CombineStatistics" >> beam.CombineGlobally(
            StatisticsCombineFn(self._options)
        )


def _parquet_files(entries: Sequence[str]) -> list[str]:
    """Parquet files of paths, directories or globs (local or Beam filesystem URIs)."""
    if not entries:
        return []
    return expand_paths(entries, accept=lambda p: p.endswith(".parquet"), what="Parquet file")


def _num_rows(batch: pa.RecordBatch) -> int:
    return batch.num_rows


class _ReadRowGroups(beam.DoFn):
    """Read ``(path, row_groups)`` tasks as record batches."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self._batch_size = batch_size

    def process(self, task: ReadTask) -> Iterator[pa.RecordBatch]:
        yield from iter_task_batches(task, batch_size=self._batch_size)


def compute_split_statistics(
    split_files: Mapping[str, Sequence[str]],
    *,
    options: StatsOptions = StatsOptions(),
    beam_options: BeamOptions = None,
    temp_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Compute the statistics of every split in one Beam pipeline over Parquet files.

    Args:
      split_files: split name -> Parquet files, directories or globs (local paths
        or any Beam filesystem URL).
      options: statistics options.
      beam_options: Beam flags or mapping (see ``jaxtx.core.beam.pipeline_options``).
      temp_dir: where the pipeline writes its results; must be reachable by the
        workers and this process (a local temporary directory by default).

    Returns:
      Split name -> ``jaxtx.statistics/1`` document.
    """
    if not split_files:
        return {}
    rows_per_task = max(options.batch_size, 1 << 20)

    def build(p: beam.Pipeline) -> dict[str, beam.PCollection]:
        out = {}
        for split, files in split_files.items():
            batches = (
                p
                | f"Files[{split}]" >> beam.Create(_parquet_files(files))
                | f"Plan[{split}]" >> beam.FlatMap(row_group_tasks, rows_per_task=rows_per_task)
                | f"Read[{split}]" >> beam.ParDo(_ReadRowGroups(options.batch_size))
            )
            _ = batches | f"Progress[{split}]" >> progress.counting(split, rows=_num_rows)
            out[split] = batches | f"Stats[{split}]" >> GenerateStatistics(options)
        return out

    return run_and_read_json(
        build, beam_options=beam_options, temp_dir=temp_dir, prefix="jaxtx-stats"
    )
