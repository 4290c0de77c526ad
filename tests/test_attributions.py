"""feature_attributions(): integrated gradients through the exported function on raw
features, occlusion for string ids, and a cross-check against permutation importance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import spearmanr
from sklearn.inspection import permutation_importance
from sklearn.metrics import log_loss

sys.path.insert(0, str(Path(__file__).parent))

from _toy_model import COLOR_EFFECT, COLORS, NUMERIC, STDS, WEIGHTS, toy_table, write_toy_model

from jaxtx.core.model_format import LoadedModel
from jaxtx.validation.attributions import FORMAT, attribution_matrix, feature_attributions


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> LoadedModel:
    return write_toy_model(tmp_path_factory.mktemp("m") / "binary", "binary_classification")


def test_integrated_gradients_of_a_linear_model_are_exact(tmp_path):
    model = write_toy_model(tmp_path / "reg", "regression")
    table = toy_table(300, seed=1)
    result = attribution_matrix(model, table, task="regression", steps=8)
    assert result.methods == {
        "x1": "integrated_gradients",
        "x2": "integrated_gradients",
        "x3": "integrated_gradients",
        "x4": "integrated_gradients",
        "color": "occlusion",
    }
    for i, name in enumerate(NUMERIC):
        x = table.column(name).to_numpy().astype(np.float64)
        expected = WEIGHTS[i] / STDS[i] * (x - result.baselines[name])
        j = result.names.index(name)
        np.testing.assert_allclose(result.values[:, j], expected, rtol=1e-4, atol=1e-5)
        assert result.baselines[name] == pytest.approx(float(np.median(x)), rel=1e-6)
    # Occlusion of color: effect(color) - effect(most frequent color).
    colors = table.column("color").to_pylist()
    base = result.baselines["color"]
    assert base == max(COLORS, key=colors.count)
    effect = dict(zip(COLORS, COLOR_EFFECT[:3].tolist(), strict=True))
    expected = np.array([effect[c] - effect[base] for c in colors])
    np.testing.assert_allclose(result.values[:, result.names.index("color")], expected, atol=1e-6)
    assert result.completeness_gap is not None and result.completeness_gap < 1e-4


def test_binary_document_slices_missing_values_and_completeness(binary):
    table = toy_table(400, seed=2, missing=True)
    doc = feature_attributions(
        binary,
        table,
        task="binary_classification",
        features={"group": table.column("group").to_numpy(zero_copy_only=False)},
        slicing_specs=[(), ("group",)],
        min_slice_size=30,
        steps=32,
    )
    assert doc["format"] == FORMAT and doc["output"] == "probabilities"
    assert [s["name"] for s in doc["slices"]] == ["overall", "group=a"]
    assert [s["name"] for s in doc["skipped_slices"]] == ["group=b"]
    overall = doc["slices"][0]["mean_abs_attribution"]
    assert set(overall) == {*NUMERIC, "color"}
    assert all(np.isfinite(v) for v in overall.values())
    # Biggest standardized weight first, smallest last.
    assert max(overall, key=overall.get) == "x1" and min(overall, key=overall.get) == "x4"
    assert doc["completeness_gap"] < 2e-3
    json.dumps(doc, allow_nan=False)


def test_agrees_with_permutation_importance(binary):
    table = toy_table(1500, seed=3)
    frame = table.select([*NUMERIC, "color"]).to_pandas()
    rng = np.random.default_rng(4)
    labels = rng.binomial(1, binary.predict(table)["probabilities"])

    class Wrapped:
        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            p = binary.predict(pa.Table.from_pandas(pd.DataFrame(X), preserve_index=False))
            p = np.asarray(p["probabilities"], dtype=np.float64)
            return np.stack([1 - p, p], axis=1)

    def neg_log_loss(estimator, X, y):
        return -log_loss(y, estimator.predict_proba(X)[:, 1])

    perm = permutation_importance(
        Wrapped(), frame, labels, scoring=neg_log_loss, n_repeats=5, random_state=0
    )
    result = attribution_matrix(binary, table, task="binary_classification", max_rows=None)
    ig = np.abs(result.values).mean(axis=0)
    order = [result.names.index(c) for c in frame.columns]
    rho = spearmanr(ig[order], perm.importances_mean).statistic
    print(f"spearman rho={rho:.3f}")
    assert rho >= 0.9, (dict(zip(frame.columns, ig[order], strict=True)), perm.importances_mean)


def test_old_exports_without_vjp_load_and_fall_back_to_occlusion(tmp_path):
    model = write_toy_model(tmp_path / "old", "binary_classification", vjp_order=0)
    assert not model.exported.has_vjp()
    table = toy_table(100, seed=5)
    result = attribution_matrix(model, table, task="binary_classification")
    assert set(result.methods.values()) == {"occlusion"}
    assert result.completeness_gap is None
    new = write_toy_model(tmp_path / "new", "binary_classification")
    assert new.exported.has_vjp()
    size_old = (tmp_path / "old" / "predict.jaxexport").stat().st_size
    size_new = (tmp_path / "new" / "predict.jaxexport").stat().st_size
    assert size_new > size_old
    np.testing.assert_allclose(
        model.predict(table)["probabilities"], new.predict(table)["probabilities"]
    )
