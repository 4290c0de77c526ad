"""Determinism of the data components: the same files give the same artifacts.

Real Beam (the in-process ``FnApiRunner`` and ``multi_processing`` with two
workers), eager component calls, so nothing is served from a cache: every call
executes. Plus the order independence of the summaries behind them.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest

import jaxtx.trainer.transform as tx
from jaxtx.components.example_gen import ExampleGen
from jaxtx.components.schema_gen import SchemaGen
from jaxtx.components.statistics_gen import StatisticsGen
from jaxtx.components.transform import Transform
from jaxtx.core.numerics import ExactMoments
from jaxtx.core.sketches import QuantileSketch, quantile_rank_error
from jaxtx.pipelines.demo_data import generate_census

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def preprocess(inputs: dict[str, tx.Column]) -> dict[str, tx.Column]:
    return {
        "age_z": tx.scale_to_z_score(tx.fill_missing(inputs["age"], "mean")),
        "hours_bucket": tx.bucketize(inputs["hours_per_week"], num_buckets=8),
        "workclass": tx.vocabulary(inputs["workclass"], top_k=10, num_oov_buckets=1),
        "gain": tx.scale_to_0_1(inputs["capital_gain"]),
    }


def _fingerprints(csv: str, store: Any, beam_options: list[str] | None) -> dict[str, str]:
    """One execution of every data component; their artifacts' fingerprints."""
    ex = ExampleGen(input_pattern=csv, beam_options=beam_options, store=store)
    stats = StatisticsGen(examples=ex, beam_options=beam_options, store=store)
    schema = SchemaGen(statistics=stats, store=store)
    graph, transformed = Transform(
        examples=ex, preprocessing_fn=preprocess, beam_options=beam_options, store=store
    )
    return {
        "ExampleGen": ex.fingerprint,
        "StatisticsGen": stats.fingerprint,
        "SchemaGen": schema.fingerprint,
        "Transform.transform_graph": graph.fingerprint,
        "Transform.transformed_examples": transformed.fingerprint,
    }


@pytest.fixture(scope="module")
def census_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "census.csv"
    generate_census(6000, seed=3).to_csv(path, index=False)
    return str(path)


def test_five_executions_give_identical_artifacts(census_csv: str, store: Any) -> None:
    runs = [_fingerprints(census_csv, store, None) for _ in range(5)]
    assert all(r == runs[0] for r in runs), runs


def test_multi_processing_gives_the_same_artifacts_as_in_process(
    census_csv: str, store: Any
) -> None:
    # One execution only: two worker processes start per pipeline (slow on 2 cores).
    assert _fingerprints(census_csv, store, MULTI) == _fingerprints(census_csv, store, None)


# ------------------------------------------------------------- the summaries


def _random_tree(parts: list[np.ndarray], make: Any, seed: int) -> Any:
    """Add ``parts`` to random accumulators in random order; merge in a random tree."""
    rng = np.random.default_rng(seed)
    accs = [make() for _ in range(int(rng.integers(1, 6)))]
    for i in rng.permutation(len(parts)):
        accs[int(rng.integers(len(accs)))].update(parts[i])
    accs = [pickle.loads(pickle.dumps(a)) for a in accs]
    while len(accs) > 1:
        rng.shuffle(accs)
        a, b = accs.pop(), accs.pop()
        a.merge(b)
        accs.append(a)
    return accs[0]


class _Moments(ExactMoments):
    update = ExactMoments.add


@pytest.mark.parametrize("exact_limit", [0, 1 << 16])
def test_quantile_sketch_is_order_independent_and_within_its_bound(exact_limit: int) -> None:
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.lognormal(0, 2, 40_000), np.zeros(5000), rng.normal(3, 1, 5000)])
    rng.shuffle(data)
    parts = np.array_split(data, 23)
    k = 64
    docs = set()
    for seed in range(5):
        sketch = _random_tree(parts, lambda: QuantileSketch(k, exact_limit), seed)
        docs.add(json.dumps(sketch.to_json()))
    assert len(docs) == 1
    eps = sketch.rank_error()
    assert (eps == 0.0) == (exact_limit > len(data))
    assert eps < quantile_rank_error(k)
    s = np.sort(data)
    qs = np.linspace(0, 1, 101)
    for q, v in zip(qs, sketch.quantiles(qs), strict=True):
        lo = np.searchsorted(s, v, "left") / len(s)
        hi = np.searchsorted(s, v, "right") / len(s)
        assert lo - eps - 1e-12 <= q <= hi + eps + 1e-12, (q, v, lo, hi, eps)
    points = np.quantile(data, np.linspace(0.05, 0.95, 19))
    exact_cdf = np.searchsorted(s, points, "left") / len(s)
    assert np.all(np.abs(np.asarray(sketch.cdf(points)) - exact_cdf) <= eps)
    # The stored form merges back, with its (larger) reported bound.
    again = QuantileSketch.from_json(sketch.to_json())
    assert again.n == len(data) and again.rank_error() >= eps


def test_exact_moments_are_order_independent_and_exact() -> None:
    rng = np.random.default_rng(1)
    floats = np.concatenate([rng.normal(1e9, 1.0, 30_000), rng.normal(-5, 1e-3, 3000)])
    parts = np.array_split(floats, 17)
    results = {(m.mean(), m.std()) for m in (_random_tree(parts, _Moments, s) for s in range(5))}
    assert len(results) == 1
    mean, std = results.pop()
    from fractions import Fraction

    exact_mean = sum(map(Fraction, floats)) / len(floats)
    assert abs(mean - float(exact_mean)) <= 2 * np.spacing(abs(mean))
    assert std == pytest.approx(np.std(floats), rel=1e-9)
    ints = rng.integers(-(10**6), 10**6, 20_000)
    m = _random_tree(np.array_split(ints, 7), _Moments, 0)
    assert m.mean() == float(Fraction(int(ints.sum()), len(ints)))
    var = (
        Fraction(int((ints.astype(object) ** 2).sum()), len(ints))
        - Fraction(int(ints.sum()), len(ints)) ** 2
    )
    assert m.std() == pytest.approx(float(var) ** 0.5, rel=1e-15)
