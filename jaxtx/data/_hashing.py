"""Deterministic row hashing for splits (independent of batching, process and platform)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._common import (
    _is_binary,
    _json_text,
)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL_HASH = np.uint64(0x6A09E667F3BCC908)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def row_hashes(
    batch: pa.RecordBatch, columns: Sequence[str] | None = None, seed: str = ""
) -> np.ndarray:
    """Deterministic 64-bit hash of each row's content.

    Depends only on the values (and their Arrow types) of ``columns``, never on
    batch boundaries, file order, process or platform. Vectorized: a few NumPy
    passes per column, in place on one array.

    Args:
      batch: the rows.
      columns: columns to hash (all when None).
      seed: mixed into every hash.

    Returns:
      A ``uint64`` array with one hash per row.
    """
    names = list(batch.schema.names) if columns is None else list(columns)
    seed_value = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little")
    h = np.full(batch.num_rows, seed_value, dtype=np.uint64)
    scratch = np.empty_like(h)
    for name in names:
        h ^= _column_hash(batch.column(name), scratch)
        h *= _M1
        _mix_inplace(h, scratch)
    return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer over a uint64 array (a new array)."""
    out = np.array(x, dtype=np.uint64)
    _mix_inplace(out, np.empty_like(out))
    return out


def _mix_inplace(x: np.ndarray, scratch: np.ndarray) -> None:
    """splitmix64 finalizer, in place; ``scratch`` is a same-sized uint64 work array."""
    x += _GOLDEN
    np.right_shift(x, _S30, out=scratch)
    x ^= scratch
    x *= _M1
    np.right_shift(x, _S27, out=scratch)
    x ^= scratch
    x *= _M2
    np.right_shift(x, _S31, out=scratch)
    x ^= scratch


def _column_hash(column: pa.Array | pa.ChunkedArray, scratch: np.ndarray) -> np.ndarray:
    """Per-row uint64 hash of one column's values (nulls hash to a constant).

    Values under null slots are never read for the result: those rows get
    ``_NULL_HASH`` at the end, so no null filling is needed before hashing.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.dictionary_decode()
        t = column.type
    if pa.types.is_floating(t):
        floats = pc.cast(column, pa.float64()) if t != pa.float64() else column
        values = _fixed_width_values(floats, np.float64) + 0.0  # a copy; -0.0 becomes 0.0
        values[np.isnan(values)] = np.nan  # one NaN bit pattern
        hashed = values.view(np.uint64)
        _mix_inplace(hashed, scratch)
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        hashed = _fixed_width_values(_as_int64(column), np.int64).view(np.uint64).copy()
        _mix_inplace(hashed, scratch)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or _is_binary(t):
        encoded = pc.dictionary_encode(column)
        keys = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
        dictionary_hash = pd.util.hash_array(keys, categorize=False)
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        hashed = dictionary_hash[indices] if len(keys) else np.zeros(len(column), np.uint64)
    else:
        texts = np.array([_json_text({"v": v}) for v in column.to_pylist()], dtype=object)
        hashed = pd.util.hash_array(texts, categorize=True)
    hashed = np.asarray(hashed, dtype=np.uint64)
    if column.null_count:
        if not hashed.flags.writeable:
            hashed = hashed.copy()
        hashed[pc.is_null(column).to_numpy(zero_copy_only=False)] = _NULL_HASH
    return hashed


def _fixed_width_values(array: pa.Array, dtype: type[np.generic]) -> np.ndarray:
    """A read-only NumPy view of a fixed-width array's values (null slots hold anything)."""
    if array.null_count == 0:
        return array.to_numpy(zero_copy_only=True)
    data = array.buffers()[1]
    return np.frombuffer(data, dtype=dtype, count=array.offset + len(array))[array.offset :]


def _as_int64(column: pa.Array) -> pa.Array:
    """Integers, booleans and temporal values as int64 (temporal: their storage)."""
    if column.type == pa.int64():
        return column
    try:
        return pc.cast(column, pa.int64())
    except pa.ArrowNotImplementedError:
        storage = pa.int32() if column.type.bit_width == 32 else pa.int64()
        return pc.cast(column.view(storage), pa.int64())
