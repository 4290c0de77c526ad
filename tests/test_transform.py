"""jaxtx.trainer.transform: analyzers (Beam), the three apply paths, export, errors."""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jaxtx.trainer.transform as tx
from jaxtx.serving.runtime import LoadedModel, ModelLoadError, StringLookup
from jaxtx.validation.statistics import StatsOptions, kll_rank_error

N = 20_000
WORKCLASS = ["Private", "Self-emp", "Local-gov", "State-gov", "Federal-gov"]
OCCUPATIONS = [f"occ-{i}" for i in range(12)]


def _census(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.integers(17, 91, n).astype(np.float64)
    age[rng.random(n) < 0.01] = np.nan  # present NaN
    age_null = rng.random(n) < 0.04  # nulls
    gain = np.where(rng.random(n) < 0.7, 0.0, rng.exponential(2000.0, n))
    wc = rng.choice(WORKCLASS, n, p=[0.6, 0.15, 0.1, 0.1, 0.05]).astype(object)
    wc[:3] = "Without-pay"  # 3 occurrences: below frequency_threshold=5
    wc[rng.random(n) < 0.03] = None
    occ = rng.choice(OCCUPATIONS, n).astype(object)
    occ[rng.random(n) < 0.02] = None
    return pa.table(
        {
            "age": pa.array(age, mask=age_null),
            "hours_per_week": pa.array(rng.uniform(1.0, 99.0, n)),
            "capital_gain": pa.array(gain),
            "workclass": pa.array(wc.tolist(), pa.string()),
            "occupation": pa.array(occ.tolist(), pa.string()),
            "education_num": pa.array(rng.integers(1, 17, n)),
            "unused": pa.array(rng.normal(size=n)),
        }
    )


def preprocess(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
    age = tx.fill_missing(inputs["age"], "mean")
    return {
        "age": tx.scale_to_z_score(age),
        "hours": tx.scale_to_0_1(inputs["hours_per_week"]),
        "gain": tx.log1p(inputs["capital_gain"]),
        "age_bucket": tx.bucketize(inputs["age"], num_buckets=10),
        "hours_bucket": tx.bucketize(inputs["hours_per_week"], num_buckets=8),
        "workclass": tx.vocabulary(
            inputs["workclass"], top_k=20, frequency_threshold=5, num_oov_buckets=1
        ),
        "workclass_hash": tx.hash_strings(inputs["workclass"], num_buckets=8),
        "occupation_hash": tx.hash_strings(inputs["occupation"], num_buckets=16),
        "edu": inputs["education_num"] * 1.0 + 0,
        "mix": (inputs["education_num"] * 3.7 - 11.1) / 2.5 + inputs["hours_per_week"] * 0.1,
        "gain_clipped": tx.clip(tx.log1p(inputs["capital_gain"]) - 1, 0.0, 8.0),
    }


def _float32(values: Any) -> np.ndarray:
    return np.array(
        [np.nan if v is None else v for v in pa.array(values).to_pylist()], np.float64
    ).astype(np.float32)


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)].astype(np.float64)


def _ulp_diff(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 ulps (equal values and NaN-NaN count as 0)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return 0
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int(np.abs(ia - ib)[~same].max())


def assert_same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    """Ids equal; floats bit-identical on CPU, within 1 ulp on other backends."""
    assert set(a) == set(b)
    max_ulp = 0 if jax.default_backend() == "cpu" else 1
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.shape == y.shape, name
        if x.dtype.kind == "i" or y.dtype.kind == "i":
            assert x.dtype == y.dtype == np.int32, name
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x.dtype == y.dtype == np.float32, name
            assert _ulp_diff(x, y) <= max_ulp, name


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _census()


@pytest.fixture(scope="module")
def parquet_dir(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("train")
    bounds = [0, 7000, 14000, N]
    for i in range(3):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        pq.write_table(part, d / f"part-{i:05d}-of-00003.parquet", row_group_size=3000)
    return d


@pytest.fixture(scope="module")
def graph(parquet_dir: Path) -> tx.FittedTransform:
    return tx.analyze(preprocess, parquet_dir)  # Beam, FnApiRunner


def _result(graph: tx.FittedTransform, output: str, kind: str) -> Mapping[str, Any]:
    nid = dict(graph.outputs)[output]
    node = graph.nodes[nid]
    while "analyzer" not in node.params or graph.analyzers[node.params["analyzer"]].kind != kind:
        node = graph.nodes[node.args[0]]
    result = graph.analyzers[node.params["analyzer"]].result
    assert result is not None
    return result


# ------------------------------------------------------------------ the graph


def test_columns_and_stages(graph: tx.FittedTransform, table: pa.Table) -> None:
    assert graph.is_fitted
    assert graph.num_rows == N
    assert {c.name: c.kind for c in graph.input_columns} == {
        "age": "numeric",
        "hours_per_week": "numeric",
        "capital_gain": "numeric",
        "workclass": "string",
        "occupation": "string",
        "education_num": "numeric",
    }
    cols = {c.name: c for c in graph.output_columns}
    assert list(cols) == [
        "age",
        "hours",
        "gain",
        "age_bucket",
        "hours_bucket",
        "workclass",
        "workclass_hash",
        "occupation_hash",
        "edu",
        "mix",
        "gain_clipped",
    ]
    assert cols["age"].dtype == "float32" and cols["age"].cardinality is None
    assert cols["workclass"].dtype == "int32"
    assert cols["workclass"].cardinality == len(WORKCLASS) + 1
    assert cols["occupation_hash"].cardinality == 16
    assert cols["age"].expression == "scale_to_z_score(fill_missing(age, 'mean'))"
    # z-score of a column filled with its mean: the std analyzer runs in a second pass
    assert graph.num_stages == 2
    # one raw string column feeding two string ops gives two serving inputs
    assert graph.jax_inputs == {
        "age": "float32",
        "hours_per_week": "float32",
        "capital_gain": "float32",
        "education_num": "float32",
        "workclass__workclass": "int32",
        "workclass__workclass_hash": "int32",
        "occupation": "int32",
    }


# ------------------------------------------------------------------ analyzers


def test_z_score_sees_filled_values(graph: tx.FittedTransform, table: pa.Table) -> None:
    age = _float32(table["age"])
    z_node = graph.nodes[dict(graph.outputs)["age"]]
    fill_node = graph.nodes[z_node.args[0]]
    assert fill_node.op == "fill_missing"
    fill = graph.analyzers[fill_node.params["analyzer"]].result  # over present, finite ages
    z = graph.analyzers[z_node.params["analyzer"]].result  # over the filled ages
    assert fill is not None and z is not None
    assert fill["count"] == np.isfinite(age).sum()
    np.testing.assert_allclose(fill["mean"], _finite(age).mean(), rtol=1e-13)
    filled = np.where(np.isnan(age), np.float32(fill["mean"]), age)
    assert z["count"] == N
    np.testing.assert_allclose(z["mean"], filled.astype(np.float64).mean(), rtol=1e-13)
    np.testing.assert_allclose(z["std"], filled.astype(np.float64).std(), rtol=1e-12)
    got = graph.apply_numpy({"age": table["age"]} | _other_columns(table))["age"]
    want = (filled - np.float32(z["mean"])) * np.float32(1.0 / z["std"])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got.mean(), 0.0, atol=1e-5)


def _other_columns(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    return {name: table[name] for name in table.column_names}


def test_min_max_exact(graph: tx.FittedTransform, table: pa.Table) -> None:
    hours = _float32(table["hours_per_week"])
    r = _result(graph, "hours", "min_max")
    assert (r["min"], r["max"]) == (float(hours.min()), float(hours.max()))
    out = graph.apply_numpy(_other_columns(table))["hours"]
    lo, hi = np.float32(r["min"]), np.float32(r["max"])
    np.testing.assert_array_equal(out, (hours - lo) * (np.float32(1) / (hi - lo)))
    assert out[hours.argmin()] == 0.0
    assert abs(out[hours.argmax()] - 1.0) <= np.spacing(np.float32(1.0))


@pytest.mark.parametrize(
    ("output", "column", "buckets"),
    [("age_bucket", "age", 10), ("hours_bucket", "hours_per_week", 8)],
)
def test_quantile_edges_within_rank_error(
    graph: tx.FittedTransform, table: pa.Table, output: str, column: str, buckets: int
) -> None:
    values = _float32(table[column])
    finite = np.sort(values[np.isfinite(values)])
    r = _result(graph, output, "quantiles")
    assert r["q"] == pytest.approx([i / buckets for i in range(1, buckets)])
    eps = kll_rank_error(StatsOptions(kll_k=200))
    for q, edge in zip(r["q"], r["values"], strict=True):
        below = np.searchsorted(finite, edge, side="left") / len(finite)  # P(X < edge)
        upto = np.searchsorted(finite, edge, side="right") / len(finite)  # P(X <= edge)
        assert below <= q + eps and upto >= q - eps, (q, edge, below, upto)
    edges = np.unique(np.asarray(r["values"], np.float32))
    ids = graph.apply_numpy(_other_columns(table))[output]
    want = np.where(np.isnan(values), len(edges) + 1, np.searchsorted(edges, values, "right"))
    np.testing.assert_array_equal(ids, want.astype(np.int32))
    card = {c.name: c.cardinality for c in graph.output_columns}[output]
    assert card == len(edges) + 2 and ids.max() < card


def _expected_vocab(values: list[str | None], top_k: int | None, threshold: int) -> list[str]:
    counts = pd.Series([v for v in values if v is not None]).value_counts()
    frame = counts.rename_axis("value").reset_index(name="count")
    frame = frame.sort_values(["count", "value"], ascending=[False, True])
    frame = frame[frame["count"] >= threshold]
    return frame["value"].tolist()[:top_k]


def test_vocabulary_on_census(graph: tx.FittedTransform, table: pa.Table) -> None:
    r = _result(graph, "workclass", "vocabulary")
    values = table["workclass"].to_pylist()
    assert r["vocabulary"] == _expected_vocab(values, 20, 5)
    assert "Without-pay" not in r["vocabulary"]  # 3 < frequency_threshold
    assert r["frequencies"] == [values.count(v) for v in r["vocabulary"]]


def test_vocabulary_ties_top_k_threshold_and_oov() -> None:
    values = ["b"] * 5 + ["a"] * 5 + ["d", "c"] * 3 + ["e"] + ["f"] * 2 + [""] * 2 + [None] * 3
    t = pa.table({"s": pa.array(values, pa.string())})

    def fn(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
        s = inputs["s"]
        return {
            "top": tx.vocabulary(s, top_k=5, frequency_threshold=2, num_oov_buckets=3),
            "all": tx.vocabulary(s),
            "filled": tx.vocabulary(tx.fill_missing(s, value="<missing>")),
        }

    g = tx.analyze(fn, t)
    pre = g.string_preprocess()
    assert pre["s__top"]["vocabulary"] == ["a", "b", "c", "d", ""]
    assert pre["s__top"]["vocabulary"] == _expected_vocab(values, 5, 2)
    assert pre["s__all"]["vocabulary"] == _expected_vocab(values, None, 1)
    assert pre["s__filled"]["vocabulary"][:3] == ["a", "b", "<missing>"]  # sees filled values
    assert pre["s__filled"]["default"] == "<missing>"
    assert pre["s__top"] | {"source": "s"} == pre["s__top"]
    raw = {"s": np.array(["a", "e", "f", "zz", None, ""], dtype=object)}
    ids = g.apply_numpy(raw)["top"]
    oov = [5 + zlib.crc32(v.encode()) % 3 for v in ("e", "f", "zz")]
    np.testing.assert_array_equal(ids, [0, *oov, 4, 4])  # None is looked up as ""
    assert {c.name: c.cardinality for c in g.output_columns}["top"] == 8


def test_fill_missing_strategies() -> None:
    x = [4.0, None, 1.0, float("nan"), 4.0, 2.0, 9.0, None]
    s = ["b", None, "a", "b", None, "a", "c", "a"]
    t = pa.table({"x": pa.array(x), "s": pa.array(s, pa.string())})

    def fn(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
        xs, ss = inputs["x"], inputs["s"]
        out = {k: tx.fill_missing(xs, k) for k in ("mean", "median", "min", "max")}
        out["mode"] = tx.fill_missing(xs, "most_frequent")
        out["const"] = tx.fill_missing(xs, -1)
        out["s_mode"] = tx.vocabulary(tx.fill_missing(ss))
        out["s_const"] = tx.hash_strings(tx.fill_missing(ss, value="?"), num_buckets=1000)
        return out

    g = tx.analyze(fn, t)
    out = g.apply_numpy({"x": t["x"], "s": t["s"]})
    present = np.array([4.0, 1.0, 4.0, 2.0, 9.0], np.float32)
    fills = {
        "mean": np.float32(present.astype(np.float64).mean()),
        "median": np.quantile(present, 0.5, method="inverted_cdf"),
        "min": np.float32(1.0),
        "max": np.float32(9.0),
        "mode": np.float32(4.0),
        "const": np.float32(-1.0),
    }
    missing = np.array([v is None or v != v for v in x])
    for name, fill in fills.items():
        want = np.where(missing, fill, _float32(x))
        np.testing.assert_array_equal(out[name], want, err_msg=name)
    pre = g.string_preprocess()
    assert pre["s__s_mode"]["default"] == "a"  # most frequent (3 of 6)
    assert pre["s__s_mode"]["vocabulary"] == ["a", "b", "c"]  # nulls counted as "a"
    assert pre["s__s_mode"]["vocabulary"] == _expected_vocab([v or "a" for v in s], None, 1)
    np.testing.assert_array_equal(out["s_mode"], [1, 0, 0, 1, 0, 0, 2, 0])
    want = [zlib.crc32((v or "?").encode()) % 1000 for v in s]
    np.testing.assert_array_equal(out["s_const"], want)


def test_beam_and_in_process_fit_agree(graph: tx.FittedTransform, parquet_dir: Path) -> None:
    local = tx.analyze(preprocess, parquet_dir, use_beam=False)
    for a, b in zip(graph.analyzers, local.analyzers, strict=True):
        assert a.kind == b.kind
        assert a.result is not None and b.result is not None
        if a.kind == "quantiles":  # exact below the summary's exact limit: equal
            assert a.result == b.result
        elif a.kind == "mean_std":
            assert a.result["count"] == b.result["count"]
            assert a.result["mean"] == pytest.approx(b.result["mean"], rel=1e-13)
            assert a.result["std"] == pytest.approx(b.result["std"], rel=1e-12)
        else:
            assert a.result == b.result


def test_fit_results_do_not_depend_on_batch_order_or_merge_tree(
    graph: tx.FittedTransform, table: pa.Table
) -> None:
    import pickle

    from jaxtx.trainer.transform._fit import FitAccumulator

    batches = table.to_batches(max_chunksize=1500)
    for stage in range(1, graph.num_stages + 1):
        docs = set()
        for seed in range(5):
            rng = np.random.default_rng(seed)
            accs = [FitAccumulator(graph, stage) for _ in range(int(rng.integers(1, 5)))]
            for i in rng.permutation(len(batches)):
                accs[int(rng.integers(len(accs)))].add_batch(batches[i])
            accs = [pickle.loads(pickle.dumps(a)) for a in accs]
            rng.shuffle(accs)
            while len(accs) > 1:
                accs.append(accs.pop().merge(accs.pop(0)))
            docs.add(json.dumps(accs[0].results(), sort_keys=True))
        assert len(docs) == 1, stage


# ------------------------------------------------------------- apply and serve


RAW: dict[str, list[Any]] = {
    "age": [39.0, None, float("nan"), 17.0, 90.0, 200.0, -3.0, 1e-40, 0.0, 52.5],
    "hours_per_week": [40.0, 99.0, 1.0, None, 0.0, 150.0, -0.0, 37.5, float("inf"), 12.25],
    "capital_gain": [0.0, 14084.0, None, -1.0, -5.0, 1e30, float("inf"), 3e-3, 1e-9, 7.0],
    "workclass": [
        "Private",
        None,
        "Martian",
        "",
        "Self-emp",
        "Without-pay",
        "État",
        "Private",
        "Local-gov",
        None,
    ],
    "occupation": ["occ-1", "occ-11", None, "", "new-job", "occ-3", "occ-3", "x", "occ-0", "occ-5"],
    "education_num": [13, 9, 1, 16, 0, 100, -4, 7, 10, 12],
}


def test_apply_numpy_and_apply_table_agree(graph: tx.FittedTransform, table: pa.Table) -> None:
    raw_table = pa.table({k: pa.array(v) for k, v in RAW.items()})
    out = graph.apply_numpy(RAW)
    t = graph.apply_table(raw_table)
    assert isinstance(t, pa.Table)
    assert t.schema.field("age").type == pa.float32()
    assert t.schema.field("workclass").type == pa.int32()
    assert_same(out, {name: t[name].to_numpy() for name in t.column_names})
    batch = graph.apply_table(raw_table.to_batches()[0])
    assert isinstance(batch, pa.RecordBatch)
    assert_same(out, {name: batch[name].to_numpy() for name in batch.schema.names})
    # and on the training data itself (chunked Arrow columns)
    full = graph.apply_table(table)
    assert_same(graph.apply_numpy(_other_columns(table)), {n: full[n].to_numpy() for n in out})
    empty = graph.apply_table(table.schema.empty_table())
    assert empty.num_rows == 0 and empty.schema == t.schema
    assert not np.isnan(out["age"][1])  # filled with the mean
    assert np.isnan(out["hours"][3])  # no fill: NaN stays NaN
    assert out["workclass"][2] == len(WORKCLASS)  # unseen -> the OOV bucket
    assert (
        out["age_bucket"][2]
        == {c.name: c.cardinality for c in graph.output_columns}["age_bucket"] - 1
    )  # NaN -> the missing bucket


def _linear(params: Mapping[str, Any], f: Mapping[str, Any]) -> dict[str, Any]:
    logit = (
        params["w"][0] * jnp.nan_to_num(f["age"])
        + params["w"][1] * f["hours"]
        + jnp.asarray(params["emb"])[f["workclass"]]
        + jnp.asarray(params["hash"])[f["occupation_hash"]]
    )
    return {"logit": logit, **dict(f)}


@pytest.fixture(scope="module")
def exported(graph: tx.FittedTransform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cards = {c.name: c.cardinality for c in graph.output_columns}
    params = {
        "w": np.array([0.5, -2.0], np.float32),
        "emb": np.linspace(-1, 1, cards["workclass"]).astype(np.float32),
        "hash": np.linspace(0, 1, cards["occupation_hash"]).astype(np.float32),
    }
    out = tmp_path_factory.mktemp("model") / "census" / "1"
    tx.export_transformed_model(
        graph, _linear, params, out, name="census", task="binary_classification"
    )
    return out


def test_no_training_serving_skew(graph: tx.FittedTransform, exported: Path) -> None:
    model = LoadedModel.load(exported)
    assert json.loads((exported / "preprocess.json").read_text()) == graph.string_preprocess()
    # the serving runtime maps strings to ids exactly as preprocess.json says...
    prepared = model.prepare(RAW)
    assert set(prepared) == set(graph.jax_inputs)
    for key, entry in graph.string_preprocess().items():
        lookup = StringLookup.from_json(key, entry)
        source = RAW[entry.get("source", key)]
        want = [lookup.id_of(lookup.default if v is None else v) for v in source]
        np.testing.assert_array_equal(prepared[key], want)
    # ...and jit(jax_fn) on those arrays gives the training-time values
    served = jax.jit(graph.jax_fn)(prepared)
    assert_same(graph.apply_numpy(RAW), {k: np.asarray(v) for k, v in served.items()})


def test_exported_model_matches_numpy(graph: tx.FittedTransform, exported: Path) -> None:
    model = LoadedModel.load(exported)
    model.warmup([1, 16])
    assert [s.dtype for s in model.signature.inputs] == [
        "float32",
        "float32",
        "float32",
        "string",
        "string",
        "float32",
    ]
    got = model.predict(RAW)
    features = graph.apply_numpy(RAW)
    assert_same(features, {k: got[k] for k in features})
    cards = {c.name: c.cardinality for c in graph.output_columns}
    params = {
        "w": np.array([0.5, -2.0], np.float32),
        "emb": np.linspace(-1, 1, cards["workclass"]).astype(np.float32),
        "hash": np.linspace(0, 1, cards["occupation_hash"]).astype(np.float32),
    }
    want = np.asarray(jax.jit(_linear)(params, features)["logit"])
    np.testing.assert_allclose(got["logit"], want, rtol=1e-6, atol=1e-6)
    one = model.predict({k: v[:1] for k, v in RAW.items()})  # other batch sizes
    assert_same({k: features[k][:1] for k in features}, {k: one[k] for k in features})


def test_runtime_rejects_unknown_source(exported: Path, tmp_path: Path) -> None:
    target = tmp_path / "m" / "1"
    shutil.copytree(exported, target)
    pre = json.loads((target / "preprocess.json").read_text())
    pre["workclass__workclass"]["source"] = "wrkclass"
    (target / "preprocess.json").write_text(json.dumps(pre))
    with pytest.raises(ModelLoadError, match="not a string input"):
        LoadedModel.load(target)
    pre["workclass__workclass"] = {"kind": "hash", "num_buckets": 0, "source": "workclass"}
    (target / "preprocess.json").write_text(json.dumps(pre))
    with pytest.raises(ModelLoadError, match="num_buckets"):
        LoadedModel.load(target)


def test_hash_entry_of_the_runtime() -> None:
    lookup = StringLookup.from_json("h", {"kind": "hash", "num_buckets": 16, "default": "x"})
    assert lookup.id_of("occ-3") == zlib.crc32(b"occ-3") % 16
    assert lookup.num_ids == 16 and lookup.kind == "hash"


def test_save_load_round_trip(graph: tx.FittedTransform, tmp_path: Path) -> None:
    path = Path(graph.save(tmp_path / "transform"))
    assert path.name == "transform_graph.json"
    doc = json.loads(path.read_text())  # plain JSON
    assert doc["format"] == "jaxtx.transform/1"
    assert [o["name"] for o in doc["outputs"]] == [n for n, _ in graph.outputs]
    assert doc["outputs"][0]["expression"] == "scale_to_z_score(fill_missing(age, 'mean'))"
    loaded = tx.FittedTransform.load(tmp_path / "transform")
    assert loaded == graph
    assert loaded.output_columns == graph.output_columns
    assert loaded.string_preprocess() == graph.string_preprocess()
    assert_same(loaded.apply_numpy(RAW), graph.apply_numpy(RAW))
    (tmp_path / "bad.json").write_text('{"format": "other/1"}')
    with pytest.raises(tx.TransformError, match="is not 'jaxtx.transform/1'"):
        tx.FittedTransform.load(tmp_path / "bad.json")


def test_trace_without_data_and_fixed_boundaries() -> None:
    def fn(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
        x = inputs["x"]
        return {
            "b": tx.bucketize(x, boundaries=[0, 10]),
            "r": 1 / (x + 1) - 2 * -x,
            "h": tx.hash_strings(inputs["s"], 4),
        }

    g = tx.trace(fn, {"x": "numeric", "s": "string"})
    assert g.is_fitted and g.num_stages == 0  # nothing to fit
    raw = {"x": np.array([-1.0, 0.0, 5.0, 10.0, np.nan]), "s": ["a", None, "b", "c", "d"]}
    out = g.apply_numpy(raw)
    np.testing.assert_array_equal(out["b"], [0, 1, 1, 2, 3])
    x = raw["x"].astype(np.float32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out["r"], np.float32(1) / (x + 1) - np.float32(2) * -x)
    served = jax.jit(g.jax_fn)({"x": x, "s": np.array([zlib.crc32(b"a") % 4] * 5, np.int32)})
    assert_same({k: out[k] for k in ("b", "r")}, {k: np.asarray(served[k]) for k in ("b", "r")})


# -------------------------------------------------------------------- errors


def test_missing_column_names_table_and_columns(table: pa.Table) -> None:
    def fn(inputs: Mapping[str, tx.Column]) -> dict[str, tx.Column]:
        return {"a": tx.scale_to_z_score(inputs["agee"])}

    with pytest.raises(tx.TransformError) as info:
        tx.analyze(fn, table, use_beam=False)
    msg = str(info.value)
    assert "'agee'" in msg and "the table" in msg and "'hours_per_week'" in msg
    assert "did you mean 'age'" in msg


def test_missing_column_in_one_file(table: pa.Table, tmp_path: Path) -> None:
    pq.write_table(table.slice(0, 100), tmp_path / "a.parquet")
    pq.write_table(table.slice(100, 100).drop_columns(["occupation"]), tmp_path / "b.parquet")
    with pytest.raises(tx.TransformError) as info:
        tx.analyze(preprocess, tmp_path)
    msg = str(info.value)
    assert "'occupation'" in msg and "b.parquet" in msg and "'workclass'" in msg


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda i: {"bad": tx.vocabulary(i["age"])}, ["output 'bad'", "vocabulary", "numeric"]),
        (lambda i: {"h": tx.hash_strings(i["age"] + 1, 3)}, ["output 'h'", "hash_strings"]),
        (lambda i: {"g": tx.log1p(i["workclass"])}, ["output 'g'", "log1p", "string column"]),
        (lambda i: {"m": i["workclass"] * 2}, ["output 'm'", "'*' (mul)", "tx.vocabulary"]),
        (
            lambda i: {"z": tx.scale_to_z_score(i["occupation"]) + 1},
            ["output 'z'", "scale_to_z_score"],
        ),
        (lambda i: {"f": tx.fill_missing(i["age"], value="x")}, ["output 'f'", "fill_missing"]),
        (lambda i: {"i": tx.vocabulary(i["workclass"]) + 1}, ["output 'i'", "ids"]),
        (lambda i: {"s": tx.fill_missing(i["workclass"])}, ["output 's'", "string column"]),
        (lambda i: {"ok": i["age"], "x": 1}, ["output 'x'", "Column"]),
    ],
)
def test_kind_errors_name_output_and_op(fn: Any, words: list[str]) -> None:
    schema = _census(10).schema
    with pytest.raises(tx.TransformError) as info:
        tx.trace(fn, schema)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_arguments() -> None:
    schema = {"x": "numeric", "s": "string"}
    cases = [
        (lambda i: {"b": tx.bucketize(i["x"], 0)}, "num_buckets must be an integer >= 1"),
        (lambda i: {"b": tx.bucketize(i["x"])}, "num_buckets or boundaries"),
        (lambda i: {"b": tx.bucketize(i["x"], boundaries=[2, 1])}, "strictly increasing"),
        (lambda i: {"v": tx.vocabulary(i["s"], num_oov_buckets=0)}, "num_oov_buckets"),
        (lambda i: {"f": tx.fill_missing(i["x"], "average")}, "unknown strategy 'average'"),
        (lambda i: {"d": i["x"] / 0}, "by zero"),
        (lambda i: {}, "no outputs"),
    ]
    for fn, message in cases:
        with pytest.raises(tx.TransformError, match=message):
            tx.trace(fn, schema)
    with pytest.raises(TypeError, match="no truth value"):
        tx.trace(lambda i: {"x": i["x"] if i["x"] else i["x"]}, schema)


def test_empty_training_split(table: pa.Table, tmp_path: Path) -> None:
    with pytest.raises(tx.TransformError, match="no rows"):
        tx.analyze(preprocess, table.slice(0, 0))
    with pytest.raises(tx.TransformError, match="no Parquet files"):
        tx.analyze(preprocess, tmp_path)
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(tx.TransformError, match="no rows"):
        tx.analyze(preprocess, tmp_path)


def test_analyzer_without_values() -> None:
    t = pa.table({"x": pa.array([None, None], pa.float64()), "y": pa.array([1.0, 2.0])})
    with pytest.raises(tx.TransformError, match=r"mean_std of x \(needed by outputs \['z'\]\)"):
        tx.analyze(lambda i: {"z": tx.scale_to_z_score(i["x"]), "y": i["y"]}, t, use_beam=False)


def test_apply_errors(graph: tx.FittedTransform) -> None:
    raw = {k: v for k, v in RAW.items() if k != "occupation"}
    with pytest.raises(tx.TransformError, match="'occupation' is missing"):
        graph.apply_numpy(raw)
    with pytest.raises(tx.TransformError, match="'age' is numeric"):
        graph.apply_numpy({**RAW, "age": ["39"] * 10})
    with pytest.raises(tx.TransformError, match="'age' has 3"):
        graph.apply_numpy({**RAW, "age": [1.0, 2.0, 3.0]})
    with pytest.raises(tx.TransformError, match="jax_fn needs inputs"):
        graph.jax_fn({"age": np.zeros(1, np.float32)})


# ------------------------------------------------------------ transform_parquet


def _reference_apply(graph: tx.FittedTransform, path: Path, keep: list[str]) -> pa.Table:
    """What the Transform component wrote before: apply_table per batch + passthrough."""
    parts = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
        out = graph.apply_table(batch)
        cols = {n: out.column(n) for n in out.schema.names}
        cols.update({c: batch.column(batch.schema.get_field_index(c)) for c in keep})
        parts.append(pa.table(cols))
    return pa.concat_tables(parts)


@pytest.mark.parametrize("use_beam", [True, False])
def test_transform_parquet_matches_apply_table(
    graph: tx.FittedTransform, parquet_dir: Path, tmp_path: Path, use_beam: bool
) -> None:
    files = sorted(str(p) for p in parquet_dir.glob("*.parquet"))
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_schema(files[0]).empty_table(), empty)
    splits = {"train": files[:2], "eval": [files[2], str(empty)]}
    keep = ["unused", "occupation"]
    # 7000-row files in 3000-row groups: shards of >= 6000 rows cut them in two
    counts = tx.transform_parquet(
        graph, splits, tmp_path / "out", passthrough=keep, use_beam=use_beam, rows_per_shard=6000
    )
    assert counts == {"train": 14000, "eval": 6000}
    train = sorted(p.name for p in (tmp_path / "out" / "train").iterdir())
    assert train == [f"part-0000{i}-0000{j}.parquet" for i in (0, 1) for j in (0, 1)]
    evals = sorted(p.name for p in (tmp_path / "out" / "eval").iterdir())
    assert evals == ["part-00000.parquet", "part-00001.parquet"]  # 6000 rows: one shard
    assert not [p for p in (tmp_path / "out").iterdir() if p.name not in ("train", "eval")]
    for split, paths in splits.items():
        got = pq.read_table(tmp_path / "out" / split)
        want = pa.concat_tables([_reference_apply(graph, Path(p), keep) for p in paths[:1]])
        got_first = pa.concat_tables(
            pq.read_table(p) for p in sorted((tmp_path / "out" / split).glob("part-00000*"))
        )
        _assert_tables_equal(got_first, want)
        assert got.num_rows == counts[split]
    empty_out = pq.read_table(tmp_path / "out" / "eval" / "part-00001.parquet")
    assert empty_out.num_rows == 0
    assert empty_out.schema.names == [c.name for c in graph.output_columns] + keep


def test_transform_parquet_one_shard_per_small_file(
    graph: tx.FittedTransform, parquet_dir: Path, tmp_path: Path
) -> None:
    files = sorted(str(p) for p in parquet_dir.glob("*.parquet"))
    counts = tx.transform_parquet(graph, {"train": files}, tmp_path / "out", passthrough=["unused"])
    assert counts == {"train": N}
    names = sorted(p.name for p in (tmp_path / "out" / "train").iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for i, f in enumerate(files):
        got = pq.read_table(tmp_path / "out" / "train" / f"part-{i:05d}.parquet")
        _assert_tables_equal(got, _reference_apply(graph, Path(f), ["unused"]))


def test_transform_parquet_errors_leave_nothing(
    graph: tx.FittedTransform, parquet_dir: Path, table: pa.Table, tmp_path: Path
) -> None:
    files = sorted(str(p) for p in parquet_dir.glob("*.parquet"))
    out = tmp_path / "out"
    with pytest.raises(tx.TransformError, match=r"passthrough columns \['label'\] are not in"):
        tx.transform_parquet(graph, {"train": files}, out, passthrough=["label"])
    with pytest.raises(tx.TransformError, match=r"have the names of outputs"):
        tx.transform_parquet(graph, {"train": files}, out, passthrough=["edu"])
    # A file whose column turns out to be unreadable mid-run (strings where numbers are
    # expected): the pipeline fails and no split directory, shard or staging file remains.
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.slice(0, 10).set_column(0, "age", pa.array(["x"] * 10)), bad)
    with pytest.raises(Exception, match="'age' is numeric"):
        tx.transform_parquet(graph, {"train": files, "eval": [str(bad)]}, out)
    assert list(out.iterdir()) == []
    (out / "train").mkdir()
    (out / "train" / "old.parquet").write_bytes(b"")
    with pytest.raises(tx.TransformError, match="is not empty"):
        tx.transform_parquet(graph, {"train": files}, out)


def _assert_tables_equal(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    for name in want.column_names:
        x, y = got[name].to_numpy(zero_copy_only=False), want[name].to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(x, y, err_msg=name)  # NaN equals NaN


def test_transform_batches_in_a_pipeline(graph: tx.FittedTransform, table: pa.Table) -> None:
    import apache_beam as beam
    from apache_beam.testing.util import assert_that

    from jaxtx.core.beam import pipeline_options

    raw = table.slice(0, 500).append_column("row", pa.array(np.arange(500)))
    want = tx.apply_batch(graph, raw, ["row"])

    def check(batches: list[pa.RecordBatch]) -> None:
        assert all(isinstance(b, pa.RecordBatch) for b in batches)
        got = pa.Table.from_batches(batches).sort_by("row")
        _assert_tables_equal(got, want)

    with beam.Pipeline(options=pipeline_options()) as p:
        out = (
            p
            | beam.Create(raw.to_batches(max_chunksize=200))
            | tx.TransformBatches(graph, passthrough=["row"])
        )
        assert_that(out, check)
