"""Tests of jaxtx.validation.statistics and stats_report against exact numpy/pandas results."""

from __future__ import annotations

import base64
import json
import math
import pickle
import warnings
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that

from jaxtx.core.beam import pipeline_options
from jaxtx.validation.statistics import (
    FORMAT,
    GenerateStatistics,
    StatisticsAccumulator,
    StatisticsFormatError,
    StatsOptions,
    compute_split_statistics,
    feature_type,
    kll_rank_error,
    load_statistics,
    merge_statistics,
    save_statistics,
    statistics_from_table,
)
from jaxtx.validation.stats_report import plot_feature_histograms_png, render_statistics_html

N = 3000
SMALL_BATCHES = StatsOptions(batch_size=700)


def _edge_table(n: int = N, seed: int = 0) -> pa.Table:
    """A table exercising nulls, NaN, infinities, constants, bools, unicode and bytes."""
    rng = np.random.default_rng(seed)
    f = rng.normal(3.0, 2.0, n)
    f[rng.random(n) < 0.05] = 0.0
    f[rng.random(n) < 0.03] = np.nan
    f[rng.random(n) < 0.01] = np.inf
    f[rng.random(n) < 0.01] = -np.inf
    null = rng.random(n) < 0.1
    ints = rng.integers(-5, 50, n)
    words = np.array(
        ["alpha", "", "\u00e9t\u00e9", "\u65e5\u672c\u8a9e", "z", "beta gamma"], dtype=object
    )
    s = words[rng.integers(0, len(words), n)]
    s_null = rng.random(n) < 0.07
    high_card = np.array([f"id-{i}" for i in rng.integers(0, 5000, n)], dtype=object)
    high_card[: n // 3] = "hot"
    raw = np.array([b"\x00\xff", b"abc", b"", b"\xe2\x82\xac"], dtype=object)
    return pa.table(
        {
            "f": pa.array(f, mask=null),
            "f32": pa.array(rng.normal(size=n).astype(np.float32)),
            "offset": pa.array(1e9 + rng.normal(0.0, 1.0, n)),
            "i": pa.array(ints, mask=rng.random(n) < 0.2),
            "u8": pa.array(rng.integers(0, 255, n).astype(np.uint8)),
            "const": pa.array(np.full(n, 7, dtype=np.int32)),
            "const_f": pa.array(np.full(n, -1.5), mask=null),
            "all_null": pa.nulls(n, pa.float64()),
            "b": pa.array(rng.random(n) < 0.3, mask=rng.random(n) < 0.1),
            "s": pa.array(s, type=pa.string(), mask=s_null),
            "ls": pa.array(s, type=pa.large_string()),
            "cat": pa.array(s, type=pa.string()).dictionary_encode(),
            "bin": pa.array(raw[rng.integers(0, len(raw), n)], type=pa.binary()),
            "hc": pa.array(high_card, type=pa.string()),
            "ts": pa.array(np.arange(n), type=pa.timestamp("s")),
        }
    )


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _edge_table()


@pytest.fixture(scope="module")
def stats(table: pa.Table) -> dict:
    return statistics_from_table(table, SMALL_BATCHES)


def _present(col: pa.ChunkedArray) -> np.ndarray:
    return col.drop_null().to_numpy(zero_copy_only=False)


def _finite(col: pa.ChunkedArray) -> np.ndarray:
    x = _present(col).astype(np.float64)
    return x[np.isfinite(x)]


def _exact_ranks(data: np.ndarray, value: float) -> tuple[float, float]:
    """Fractions of ``data`` strictly below and at most ``value``."""
    lo = np.searchsorted(data, value, side="left") / len(data)
    hi = np.searchsorted(data, value, side="right") / len(data)
    return lo, hi


def _assert_quantiles_within(num: dict, finite: np.ndarray, eps: float) -> None:
    data = np.sort(finite)
    for q in num["quantiles"]:
        lo, hi = _exact_ranks(data, q["value"])
        assert lo - eps <= q["q"] <= hi + eps, (q, lo, hi, eps)


def _without_sketches(stats: dict) -> dict:
    return {
        **stats,
        "features": {
            n: {k: v for k, v in f.items() if k != "sketches"} for n, f in stats["features"].items()
        },
    }


def _assert_close(a: object, b: object, path: str = "") -> None:
    """Recursive equality with rtol 1e-9 for floats."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, int | float), path
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (path, a, b)
    else:
        assert a == b, (path, a, b)


# ----------------------------------------------------------------------------- types


def test_feature_type_mapping() -> None:
    assert feature_type(pa.int8()) == "INT"
    assert feature_type(pa.uint64()) == "INT"
    assert feature_type(pa.float16()) == "FLOAT"
    assert feature_type(pa.float64()) == "FLOAT"
    assert feature_type(pa.bool_()) == "BOOL"
    assert feature_type(pa.string()) == "STRING"
    assert feature_type(pa.large_string()) == "STRING"
    assert feature_type(pa.binary()) == "BYTES"
    assert feature_type(pa.dictionary(pa.int32(), pa.string())) == "STRING"
    assert feature_type(pa.timestamp("s")) == "OTHER"
    assert feature_type(pa.list_(pa.int64())) == "OTHER"


def test_document_shape(stats: dict, table: pa.Table) -> None:
    assert stats["format"] == FORMAT
    assert stats["num_rows"] == table.num_rows
    assert list(stats["features"]) == table.column_names
    json.dumps(stats, allow_nan=False)  # strict JSON: no NaN/inf anywhere
    types = {n: f["type"] for n, f in stats["features"].items()}
    assert types == {
        "f": "FLOAT",
        "f32": "FLOAT",
        "offset": "FLOAT",
        "i": "INT",
        "u8": "INT",
        "const": "INT",
        "const_f": "FLOAT",
        "all_null": "FLOAT",
        "b": "BOOL",
        "s": "STRING",
        "ls": "STRING",
        "cat": "STRING",
        "bin": "BYTES",
        "hc": "STRING",
        "ts": "OTHER",
    }
    assert stats["features"]["i"]["arrow_type"] == "int64"
    ts = stats["features"]["ts"]
    assert ts["num"] is None and ts["str"] is None and ts["num_present"] == N


# ------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("name", ["f", "f32", "offset", "i", "u8", "const", "const_f", "b"])
def test_numeric_matches_numpy(stats: dict, table: pa.Table, name: str) -> None:
    col = table[name]
    feat = stats["features"][name]
    num = feat["num"]
    present = _present(col).astype(np.float64)
    finite = present[np.isfinite(present)]
    assert feat["num_present"] == len(col) - col.null_count
    assert feat["num_missing"] == col.null_count
    assert num["num_nan"] == int(np.isnan(present).sum())
    assert num["num_pos_inf"] == int(np.isposinf(present).sum())
    assert num["num_neg_inf"] == int(np.isneginf(present).sum())
    assert num["num_zeros"] == int((finite == 0).sum())
    assert num["mean"] == pytest.approx(finite.mean(), rel=1e-9)
    assert num["std"] == pytest.approx(finite.std(), rel=1e-9, abs=1e-12)
    assert num["min"] == finite.min()
    assert num["max"] == finite.max()
    if feat["type"] == "FLOAT":
        assert isinstance(num["min"], float)
    else:
        assert isinstance(num["min"], int) and isinstance(num["max"], int)
    assert [q["q"] for q in num["quantiles"]] == pytest.approx(np.linspace(0, 1, 11))
    assert num["quantiles"][0]["value"] == finite.min()
    assert num["quantiles"][-1]["value"] == finite.max()
    _assert_quantiles_within(num, finite, kll_rank_error())
    buckets = num["histogram"]["buckets"]
    assert sum(b["count"] for b in buckets) == len(finite)
    assert buckets[0]["low"] == finite.min() and buckets[-1]["high"] == finite.max()
    depth = num["quantile_histogram"]["buckets"]
    assert len(depth) == 10
    assert sum(b["count"] for b in depth) == pytest.approx(len(finite))
    assert [b["low"] for b in depth] == [q["value"] for q in num["quantiles"][:-1]]


def test_pandas_agrees_on_float_column(stats: dict, table: pa.Table) -> None:
    series = table["f"].to_pandas().replace([np.inf, -np.inf], np.nan).dropna()
    num = stats["features"]["f"]["num"]
    assert num["mean"] == pytest.approx(series.mean(), rel=1e-9)
    assert num["std"] == pytest.approx(series.std(ddof=0), rel=1e-9)


def test_equi_width_histogram_is_exact_while_the_sketch_is(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=150)  # fewer than k: the sketch is exact
    stats = statistics_from_table(pa.table({"x": values}))
    buckets = stats["features"]["x"]["num"]["histogram"]["buckets"]
    counts, edges = np.histogram(values, bins=10)
    assert [b["count"] for b in buckets] == counts.tolist()
    np.testing.assert_allclose([b["low"] for b in buckets], edges[:-1], rtol=1e-12)
    np.testing.assert_allclose([b["high"] for b in buckets], edges[1:], rtol=1e-12)


def test_constant_column_has_one_zero_width_bucket(stats: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = statistics_from_table(pa.table({"c": pa.array([3.0] * 50 + [None])}))
    num = out["features"]["c"]["num"]
    assert num["std"] == 0.0 and num["min"] == num["max"] == 3.0
    assert num["histogram"]["buckets"] == [{"low": 3.0, "high": 3.0, "count": 50.0}]
    assert {q["value"] for q in num["quantiles"]} == {3.0}
    const = stats["features"]["const"]["num"]
    assert const["histogram"]["buckets"] == [{"low": 7.0, "high": 7.0, "count": float(N)}]


def test_all_null_and_all_nan_columns() -> None:
    out = statistics_from_table(
        pa.table({"n": pa.nulls(3, pa.float64()), "nan": pa.array([np.nan, np.inf, None])})
    )
    n = out["features"]["n"]
    assert n["num_present"] == 0 and n["num_missing"] == 3
    nan = out["features"]["nan"]
    assert nan["num_present"] == 2 and nan["num_missing"] == 1
    assert nan["num"]["num_nan"] == 1 and nan["num"]["num_pos_inf"] == 1
    for feat in (n, nan):
        num = feat["num"]
        assert num["mean"] is None and num["std"] is None
        assert num["min"] is None and num["max"] is None
        assert num["quantiles"] == [] and num["histogram"]["buckets"] == []
        assert num["quantile_histogram"]["buckets"] == []


def test_bool_column(stats: dict, table: pa.Table) -> None:
    values = _present(table["b"])
    num = stats["features"]["b"]["num"]
    assert num["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert num["num_zeros"] == int((~values).sum())
    assert (num["min"], num["max"]) == (0, 1)


def test_quantiles_within_rank_error_on_100k_values() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.lognormal(0.0, 1.5, 90_000), np.round(rng.normal(5, 1, 10_000))])
    rng.shuffle(values)
    opts = StatsOptions(batch_size=8192, exact_quantiles_limit=10_000)
    out = statistics_from_table(pa.table({"x": values}), opts)
    num = out["features"]["x"]["num"]
    eps = kll_rank_error(opts)
    assert eps == 1 / opts.kll_k
    # Past the exact limit: the bound of the data at hand is reported, below 1/k.
    assert 0 < num["rank_error"] < eps
    _assert_quantiles_within(num, values, num["rank_error"])
    # Histogram counts: every cumulative count is within the rank error (plus rounding).
    buckets = num["histogram"]["buckets"]
    edges = [b["high"] for b in buckets[:-1]]
    exact = np.searchsorted(np.sort(values), edges, side="left")
    approx = np.cumsum([b["count"] for b in buckets[:-1]])
    assert np.all(np.abs(approx - exact) <= num["rank_error"] * len(values) + 0.5)
    assert sum(b["count"] for b in buckets) == len(values)
    # Below the exact limit the quantiles are the exact inverted-CDF quantiles.
    small = statistics_from_table(pa.table({"x": values[:5000]}), opts)["features"]["x"]["num"]
    assert small["rank_error"] == 0.0
    want = np.quantile(values[:5000], [q["q"] for q in small["quantiles"]], method="inverted_cdf")
    assert [q["value"] for q in small["quantiles"]] == want.tolist()


# -------------------------------------------------------------------------- strings


@pytest.mark.parametrize("name", ["s", "ls", "cat"])
def test_string_counts_match_pandas(stats: dict, table: pa.Table, name: str) -> None:
    series = table[name].to_pandas().dropna().astype(str)
    block = stats["features"][name]["str"]
    counts = series.value_counts()
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert block["value_counts_complete"] is True
    assert block["num_unique_is_exact"] is True
    assert block["num_unique"] == series.nunique()
    assert [(v["value"], v["count"]) for v in block["value_counts"]] == expected
    assert [(v["value"], v["count"]) for v in block["top_k"]] == expected[:20]
    assert block["num_empty"] == int((series == "").sum())
    assert block["avg_length"] == pytest.approx(series.str.len().mean(), rel=1e-12)
    assert stats["features"][name]["num_missing"] == table[name].null_count


def test_bytes_column(stats: dict, table: pa.Table) -> None:
    values = _present(table["bin"])
    block = stats["features"]["bin"]["str"]
    assert block["avg_length"] == pytest.approx(np.mean([len(v) for v in values]))
    assert block["num_empty"] == sum(v == b"" for v in values)
    got = {v["value"]: v["count"] for v in block["value_counts"]}
    assert got["abc"] == sum(v == b"abc" for v in values)
    assert got["\u20ac"] == sum(v == b"\xe2\x82\xac" for v in values)
    assert got["b64:" + base64.b64encode(b"\x00\xff").decode()] == sum(
        v == b"\x00\xff" for v in values
    )


def test_high_cardinality_strings_fall_back_to_sketches(stats: dict, table: pa.Table) -> None:
    series = table["hc"].to_pandas()
    block = stats["features"]["hc"]["str"]
    true_unique = series.nunique()
    assert true_unique > 1000
    assert block["value_counts_complete"] is False and block["num_unique_is_exact"] is False
    assert block["num_unique"] == pytest.approx(true_unique, rel=0.05)
    assert len(block["value_counts"]) <= 1000 and len(block["top_k"]) == 20
    assert block["top_k"][0]["value"] == "hot"
    assert block["top_k"][0]["count"] == pytest.approx((series == "hot").sum(), rel=0.01)
    counts = [v["count"] for v in block["top_k"]]
    assert counts == sorted(counts, reverse=True)


def test_low_cap_marks_value_counts_incomplete(table: pa.Table) -> None:
    out = statistics_from_table(table.select(["s"]), StatsOptions(max_value_counts=3, top_k=2))
    block = out["features"]["s"]["str"]
    assert block["value_counts_complete"] is False
    assert len(block["value_counts"]) <= 3 and len(block["top_k"]) == 2


# ----------------------------------------------------------------------------- merge


def test_merge_of_halves_equals_whole(table: pa.Table, stats: dict) -> None:
    half = table.num_rows // 2
    parts = [
        statistics_from_table(table.slice(0, half), SMALL_BATCHES),
        statistics_from_table(table.slice(half), SMALL_BATCHES),
    ]
    merged = merge_statistics(json.loads(json.dumps(parts)), SMALL_BATCHES)
    assert merged["num_rows"] == stats["num_rows"]
    for name, whole in stats["features"].items():
        got = merged["features"][name]
        for key in ("type", "arrow_type", "num_present", "num_missing"):
            assert got[key] == whole[key], (name, key)
        if whole["num"] is not None:
            a, b = got["num"], whole["num"]
            for key in ("min", "max", "num_zeros", "num_nan", "num_pos_inf", "num_neg_inf"):
                assert a[key] == b[key], (name, key)
            for key in ("mean", "std"):
                if b[key] is None:
                    assert a[key] is None
                else:
                    assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (name, key)
            if b["quantiles"]:
                _assert_quantiles_within(a, _finite(table[name]), kll_rank_error())
            assert sum(x["count"] for x in a["histogram"]["buckets"]) == sum(
                x["count"] for x in b["histogram"]["buckets"]
            )
        if whole["str"] is not None:
            a, b = got["str"], whole["str"]
            for key in ("num_empty", "value_counts_complete", "num_unique_is_exact"):
                assert a[key] == b[key], (name, key)
            assert a["avg_length"] == pytest.approx(b["avg_length"], rel=1e-12)
            if b["value_counts_complete"]:
                assert a["value_counts"] == b["value_counts"] and a["num_unique"] == b["num_unique"]
            else:
                assert a["num_unique"] == pytest.approx(b["num_unique"], rel=0.05)


def test_merge_with_feature_absent_from_one_input() -> None:
    a = statistics_from_table(pa.table({"x": [1, 2, 3], "s": ["a", "b", "a"]}))
    b = statistics_from_table(pa.table({"x": [4, None]}))
    merged = merge_statistics([a, b])
    assert merged["num_rows"] == 5
    x = merged["features"]["x"]
    assert (x["num_present"], x["num_missing"]) == (4, 1)
    assert x["num"]["mean"] == pytest.approx(2.5) and x["num"]["max"] == 4
    s = merged["features"]["s"]
    assert (s["num_present"], s["num_missing"]) == (3, 2)
    assert s["str"]["value_counts"] == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]


def test_merge_promotes_int_and_float() -> None:
    a = statistics_from_table(pa.table({"x": [1, 2]}))
    b = statistics_from_table(pa.table({"x": [0.5]}))
    x = merge_statistics([a, b])["features"]["x"]
    assert x["type"] == "FLOAT" and x["num"]["min"] == 0.5 and x["num"]["max"] == 2.0


def test_accumulator_pickles(table: pa.Table) -> None:
    acc = StatisticsAccumulator(SMALL_BATCHES).add_batch(table)
    clone = pickle.loads(pickle.dumps(acc))
    _assert_close(_without_sketches(clone.to_statistics()), _without_sketches(acc.to_statistics()))


# ---------------------------------------------------------------------- determinism


def _combine_in_random_tree(batches: list, options: StatsOptions, seed: int) -> str:
    """Statistics of ``batches`` added to random accumulators merged in a random tree."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(batches))
    accs = [StatisticsAccumulator(options) for _ in range(int(rng.integers(1, 6)))]
    for i in order:
        accs[int(rng.integers(len(accs)))].add_batch(batches[i])
    accs = [pickle.loads(pickle.dumps(a)) for a in accs]  # as between Beam workers
    while len(accs) > 1:
        i, j = sorted(rng.choice(len(accs), 2, replace=False).tolist())
        merged = accs[j].merge(accs.pop(i)) if rng.random() < 0.5 else accs[i].merge(accs.pop(j))
        accs.append(accs.pop(accs.index(merged)))
    return json.dumps(accs[0].to_statistics(), sort_keys=True)


def test_statistics_do_not_depend_on_batch_order_or_merge_tree(table: pa.Table) -> None:
    # Exact regime and sampled regime (a low exact limit) for the quantiles; a
    # high-cardinality string column past its exact value counts.
    for options in (
        StatsOptions(batch_size=250),
        StatsOptions(batch_size=250, exact_quantiles_limit=500, kll_k=16),
    ):
        batches = table.to_batches(max_chunksize=options.batch_size)
        docs = {_combine_in_random_tree(batches, options, seed) for seed in range(6)}
        assert len(docs) == 1
    doc = json.loads(docs.pop())
    assert doc["features"]["f"]["num"]["rank_error"] > 0
    assert doc["features"]["hc"]["str"]["value_counts_complete"] is False


def test_merge_statistics_does_not_depend_on_the_order_of_its_inputs(table: pa.Table) -> None:
    parts = [statistics_from_table(table.slice(i, 1000), SMALL_BATCHES) for i in range(0, N, 1000)]
    first = json.dumps(merge_statistics(parts, SMALL_BATCHES))
    assert json.dumps(merge_statistics(parts[::-1], SMALL_BATCHES)) == first
    assert json.dumps(merge_statistics(parts[1:] + parts[:1], SMALL_BATCHES)) == first


def test_merge_refuses_statistics_with_randomized_sketches(stats: dict) -> None:
    old = json.loads(json.dumps(stats))
    old["features"]["f"]["sketches"] = {"kll": "AAAA"}
    with pytest.raises(StatisticsFormatError, match="re-run StatisticsGen"):
        merge_statistics([old, stats])


# ------------------------------------------------------------------------------ Beam


def test_generate_statistics_transform_equals_in_process() -> None:
    table = _edge_table(n=180, seed=3)  # < kll_k values per column: sketches stay exact
    expected = _without_sketches(statistics_from_table(table))

    def check(outputs: list[dict]) -> None:
        assert len(outputs) == 1
        _assert_close(_without_sketches(outputs[0]), expected)

    with beam.Pipeline(options=pipeline_options()) as p:
        result = p | beam.Create(table.to_batches(max_chunksize=50)) | GenerateStatistics()
        assert_that(result, check)


def test_compute_split_statistics_over_parquet(tmp_path: Path, table: pa.Table) -> None:
    small = _edge_table(n=190, seed=5)
    files = {"train": [], "eval": [], "empty": []}
    for i, start in enumerate(range(0, table.num_rows, 1000)):
        path = tmp_path / f"train-{i}.parquet"
        pq.write_table(table.slice(start, 1000), path, row_group_size=400)
        files["train"].append(str(path))
    pq.write_table(small, tmp_path / "eval.parquet", row_group_size=64)
    files["eval"].append(str(tmp_path / "eval.parquet"))

    out = compute_split_statistics(files, options=StatsOptions(batch_size=300))
    assert set(out) == {"train", "eval", "empty"}
    assert out["empty"] == {"format": FORMAT, "num_rows": 0, "features": {}}
    # Small split: sketches are exact, so the Beam path equals the in-process path.
    # (Compared with the table as read back: Parquet stores timestamp[s] as timestamp[ms].)
    small = pq.read_table(files["eval"][0])
    _assert_close(_without_sketches(out["eval"]), _without_sketches(statistics_from_table(small)))
    # Larger split: exact fields equal, quantiles within the rank error.
    whole = statistics_from_table(pa.concat_tables(pq.read_table(f) for f in files["train"]))
    for name, feat in whole["features"].items():
        got = out["train"]["features"][name]
        if feat["num"] is not None:
            for key in ("mean", "std", "min", "max", "num_zeros", "num_nan", "num_pos_inf"):
                _assert_close(got["num"][key], feat["num"][key], f"{name}.{key}")
            if feat["num"]["quantiles"]:
                _assert_quantiles_within(got["num"], _finite(table[name]), kll_rank_error())
        elif feat["str"] is not None and feat["str"]["value_counts_complete"]:
            _assert_close(got["str"], feat["str"], name)
        assert got["num_present"] == feat["num_present"]
        assert got["num_missing"] == feat["num_missing"]


# ------------------------------------------------------------------------- save/load


def test_save_and_load_round_trip(tmp_path: Path, stats: dict) -> None:
    path = tmp_path / "train" / "statistics.json"
    save_statistics(stats, str(path))
    assert load_statistics(str(path)) == stats


def test_load_rejects_wrong_format_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"format": "tfdv/1", "num_rows": 0, "features": {}}))
    with pytest.raises(StatisticsFormatError, match="other.json"):
        load_statistics(str(bad))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(StatisticsFormatError, match="broken.json"):
        load_statistics(str(broken))


# ---------------------------------------------------------------------------- report


def test_html_report_lists_every_feature_and_escapes(stats: dict) -> None:
    evil = statistics_from_table(
        pa.table({"<script>alert(1)</script>": ["<script>x</script>", "&amp"], "v": [1.0, 2.0]})
    )
    page = render_statistics_html({"train": stats, "eval<>": evil}, title="Stats & <co>")
    assert page.startswith("<!DOCTYPE html>")
    for name in stats["features"]:
        assert f">{name}<" in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "Stats &amp; &lt;co&gt;" in page and "eval&lt;&gt;" in page
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") >= sum(
        1 for f in stats["features"].values() if f["num"] is not None or f["str"] is not None
    )


def test_histogram_png(tmp_path: Path, stats: dict) -> None:
    path = tmp_path / "plots" / "histograms.png"
    assert plot_feature_histograms_png(stats, str(path)) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batches_with_a_null_typed_column_promote() -> None:
    acc = StatisticsAccumulator()
    acc.add_batch(pa.table({"x": pa.nulls(2)}))
    acc.add_batch(pa.table({"x": pa.array([1, 2, 3])}))
    x = acc.to_statistics()["features"]["x"]
    assert x["type"] == "INT" and x["arrow_type"] == "int64"
    assert (x["num_present"], x["num_missing"]) == (3, 2)
    assert x["num"]["mean"] == pytest.approx(2.0)


def test_html_report_shows_the_error_bounds(table: pa.Table, stats: dict) -> None:
    html = render_statistics_html({"train": stats}, title="t")
    assert "exact" in html  # 3000 values: exact quantiles
    sampled = statistics_from_table(table, StatsOptions(batch_size=250, exact_quantiles_limit=100))
    eps = sampled["features"]["f"]["num"]["rank_error"]
    html = render_statistics_html({"train": sampled}, title="t")
    assert f"rank error \u2264 {100 * eps:.2g}% of the count" in html
    assert "\u00b10.81% std. error" in html  # HyperLogLog of the high-cardinality column
    assert "counts are lower bounds" in html
