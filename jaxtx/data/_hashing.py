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


def row_hashes(
    batch: pa.RecordBatch, columns: Sequence[str] | None = None, seed: str = ""
) -> np.ndarray:
    """Deterministic 64-bit hash of each row's content.

    Depends only on the values (and their Arrow types) of ``columns``, never on
    batch boundaries, file order, process or platform.

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
    for name in names:
        h = _mix((h ^ _column_hash(batch.column(name))) * _M1)
    return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer over a uint64 array."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _column_hash(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per-row uint64 hash of one column's values (nulls hash to a constant)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.dictionary_decode()
        t = column.type
    if pa.types.is_floating(t):
        values = pc.cast(column, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0
        values[np.isnan(values)] = np.nan
        hashed = _mix(values.view(np.uint64))
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        values = _as_int64(column).fill_null(0).to_numpy(zero_copy_only=False)
        hashed = _mix(values.astype(np.int64).view(np.uint64))
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
        hashed = np.where(pc.is_null(column).to_numpy(zero_copy_only=False), _NULL_HASH, hashed)
    return hashed


def _as_int64(column: pa.Array) -> pa.Array:
    """Integers, booleans and temporal values as int64 (temporal: their storage)."""
    try:
        return pc.cast(column, pa.int64())
    except pa.ArrowNotImplementedError:
        storage = pa.int32() if column.type.bit_width == 32 else pa.int64()
        return pc.cast(column.view(storage), pa.int64())
