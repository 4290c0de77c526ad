"""Statistics documents (``jaxtx.statistics/1``) built by hand, with real sketches, for tests."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import datasketches
import numpy as np


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def num_feature(values: Sequence[float], *, type_: str = "INT", missing: int = 0) -> dict[str, Any]:
    """Statistics of a numeric feature (``jaxtx.statistics/1``) with a real KLL sketch."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    kll = datasketches.kll_doubles_sketch(200)
    if finite.size:
        kll.update(finite.copy())
    cast = float if type_ == "FLOAT" else int
    has = bool(finite.size)
    num = {
        "mean": float(finite.mean()) if has else None,
        "std": float(finite.std()) if has else None,
        "min": cast(finite.min()) if has else None,
        "max": cast(finite.max()) if has else None,
        "num_zeros": int(np.count_nonzero(finite == 0)),
        "num_nan": int(np.count_nonzero(np.isnan(x))),
        "num_pos_inf": int(np.count_nonzero(x == np.inf)),
        "num_neg_inf": int(np.count_nonzero(x == -np.inf)),
        "quantiles": [
            {"q": float(q), "value": float(np.quantile(finite, q, method="inverted_cdf"))}
            for q in np.linspace(0, 1, 11)
        ]
        if has
        else [],
        "histogram": {"buckets": []},
        "quantile_histogram": {"buckets": []},
    }
    arrow = {"INT": "int64", "FLOAT": "double", "BOOL": "bool"}[type_]
    return {
        "type": type_,
        "arrow_type": arrow,
        "num_present": int(x.size),
        "num_missing": missing,
        "num": num,
        "str": None,
        "sketches": {"kll": _b64(kll.serialize())},
    }


def str_feature(
    values: Sequence[str],
    *,
    missing: int = 0,
    max_value_counts: int = 1000,
    top_k: int = 20,
    frequent_lg_size: int = 10,
) -> dict[str, Any]:
    """Statistics of a STRING feature with real frequent-items and HLL sketches.

    With more than ``max_value_counts`` distinct values the value counts are
    incomplete and come from the frequent-items sketch, as in the real format.
    """
    uniq, counts = np.unique(np.asarray(values, dtype=object).astype(str), return_counts=True)
    pairs = sorted(zip(uniq.tolist(), counts.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
    frequent = datasketches.frequent_strings_sketch(frequent_lg_size)
    hll = datasketches.hll_sketch(12)
    for value, count in pairs:
        frequent.update(value, count)
        hll.update(value)
    complete = len(pairs) <= max_value_counts
    if not complete:
        error_type = datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES
        found = frequent.get_frequent_items(error_type)
        pairs = sorted(((v, int(e)) for v, e, _, _ in found), key=lambda p: (-p[1], p[0]))
    listed = [{"value": v, "count": c} for v, c in pairs[:max_value_counts]]
    return {
        "type": "STRING",
        "arrow_type": "string",
        "num_present": len(values),
        "num_missing": missing,
        "num": None,
        "str": {
            "num_unique": len(uniq) if complete else round(hll.get_estimate()),
            "num_unique_is_exact": complete,
            "avg_length": float(np.mean([len(v) for v in values])) if len(values) else None,
            "num_empty": sum(1 for v in values if v == ""),
            "top_k": listed[:top_k],
            "value_counts": listed,
            "value_counts_complete": complete,
        },
        "sketches": {"frequent": _b64(frequent.serialize()), "hll": _b64(hll.serialize_compact())},
    }


def make_stats(**features: dict[str, Any]) -> dict[str, Any]:
    """A statistics document; all features must describe the same number of rows."""
    rows = {f["num_present"] + f["num_missing"] for f in features.values()}
    assert len(rows) == 1, rows
    return {"format": "jaxtx.statistics/1", "num_rows": rows.pop(), "features": features}
