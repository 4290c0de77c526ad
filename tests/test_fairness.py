"""fairness_indicators(): per-group rates and disparities against fairlearn."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import precision_score

from jaxtx.validation.evaluation import evaluate
from jaxtx.validation.fairness import (
    DISPARITY_METRICS,
    FORMAT,
    GROUP_METRICS,
    attach_fairness,
    fairness_indicators,
)

THRESHOLDS = (0.3, 0.5, 0.7)
RTOL = 1e-9


def _data(n: int = 3000, seed: int = 0):
    """Scores with a real signal; group "F" is scored higher, group "X" is small."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M", "X"], size=n, p=[0.45, 0.45, 0.1])
    age = rng.choice(["young", "old"], size=n)
    labels = rng.binomial(1, 0.4, n)
    logits = 1.5 * labels - 0.7 + rng.normal(0.0, 1.0, n) + 0.6 * (sex == "F")
    return labels, 1.0 / (1.0 + np.exp(-logits)), sex, age


def _frame(labels, predicted, sensitive):
    def precision(y_true, y_pred):
        return precision_score(y_true, y_pred, zero_division=0)

    return flm.MetricFrame(
        metrics={
            "tpr": flm.true_positive_rate,
            "fpr": flm.false_positive_rate,
            "fnr": flm.false_negative_rate,
            "tnr": flm.true_negative_rate,
            "selection_rate": flm.selection_rate,
            "precision": precision,
            "count": flm.count,
        },
        y_true=labels,
        y_pred=predicted,
        sensitive_features=sensitive,
    )


def _disparities(labels, predicted, sensitive) -> dict[str, float]:
    kwargs = {"sensitive_features": sensitive}
    return {
        "demographic_parity_difference": flm.demographic_parity_difference(
            labels, predicted, **kwargs
        ),
        "demographic_parity_ratio": flm.demographic_parity_ratio(labels, predicted, **kwargs),
        "equalized_odds_difference": flm.equalized_odds_difference(labels, predicted, **kwargs),
        "equalized_odds_ratio": flm.equalized_odds_ratio(labels, predicted, **kwargs),
    }


def _assert_matches_fairlearn(result, labels, scores, sensitive, key_of):
    for block in result["by_threshold"]:
        predicted = (scores >= block["threshold"]).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = _frame(labels, predicted, sensitive)
            expected = _disparities(labels, predicted, sensitive)
        by_group = frame.by_group
        assert len(block["by_group"]) == len(by_group)
        for group in block["by_group"]:
            row = by_group.loc[key_of(group["group"])]
            for metric in GROUP_METRICS:
                assert group["metrics"][metric]["value"] == pytest.approx(
                    float(row[metric]), rel=RTOL, abs=0
                ), (group["name"], metric)
        for metric in GROUP_METRICS:
            assert block["overall"][metric]["value"] == pytest.approx(
                float(frame.overall[metric]), rel=RTOL
            )
        for metric, value in expected.items():
            ours = block["disparities"][metric]["value"]
            if math.isnan(value):
                assert ours is None and block["disparities"][metric]["reason"]
            else:
                assert ours == pytest.approx(value, rel=RTOL, abs=0), (block["threshold"], metric)


def test_single_feature_matches_fairlearn():
    labels, scores, sex, _ = _data()
    result = fairness_indicators(labels, scores, {"sex": sex}, thresholds=THRESHOLDS, seed=1)
    assert result["format"] == FORMAT
    assert [g["name"] for g in result["groups"]] == ["sex=F", "sex=M", "sex=X"]
    _assert_matches_fairlearn(result, labels, scores, sex, lambda key: key["sex"])
    # The group difference is real: F is selected more often at every threshold.
    for block in result["by_threshold"]:
        assert block["disparities"]["demographic_parity_difference"]["lower"] > 0.0


def test_bare_array_is_named_sensitive():
    labels, scores, sex, _ = _data(n=500)
    result = fairness_indicators(labels, scores, sex, num_bootstrap=10)
    assert result["sensitive_features"] == ["sensitive"]
    assert result["by_threshold"][0]["by_group"][0]["group"] == {"sensitive": "F"}


def test_intersectional_groups_match_fairlearn():
    labels, scores, sex, age = _data(n=2000, seed=3)
    result = fairness_indicators(
        labels, scores, {"sex": sex, "age": age}, thresholds=(0.5,), num_bootstrap=20
    )
    assert len(result["groups"]) == 6
    sensitive = pd.DataFrame({"sex": sex, "age": age})
    _assert_matches_fairlearn(
        result, labels, scores, sensitive, lambda key: (key["sex"], key["age"])
    )


def test_edge_cases_follow_fairlearn():
    # Group "a" has no positives, group "b" no negatives.
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8])
    group = np.array(["a", "a", "a", "b", "b", "b"])
    result = fairness_indicators(
        labels, scores, group, thresholds=(0.5, 0.95, 0.05, 0.7), num_bootstrap=30
    )
    _assert_matches_fairlearn(result, labels, scores, group, lambda key: key["sensitive"])
    a = result["by_threshold"][0]["by_group"][0]
    assert a["metrics"]["tpr"]["value"] == 0.0
    assert any("no positive labels" in note for note in a["notes"])
    # At 0.95 nobody is selected: the selection-rate and TPR ratios are 0/0.
    nobody = result["by_threshold"][1]["disparities"]
    assert nobody["demographic_parity_ratio"]["value"] is None
    assert "0/0" in nobody["demographic_parity_ratio"]["reason"]
    assert nobody["equalized_odds_ratio"]["value"] is None
    assert nobody["demographic_parity_difference"]["value"] == 0.0
    # At 0.7 no negative is selected: the FPR ratio is 0/0 and fairlearn's
    # min(tpr_ratio, fpr_ratio) keeps the TPR ratio.
    assert result["by_threshold"][3]["disparities"]["equalized_odds_ratio"]["value"] == 0.0
    json.dumps(result, allow_nan=False)


def test_one_group_only():
    labels, scores, _, _ = _data(n=300)
    result = fairness_indicators(labels, scores, np.full(300, "all"), num_bootstrap=20)
    disparities = result["by_threshold"][0]["disparities"]
    assert disparities["demographic_parity_difference"]["value"] == 0.0
    assert disparities["demographic_parity_ratio"]["value"] == 1.0
    assert disparities["equalized_odds_difference"]["value"] == 0.0


def test_intervals_are_deterministic_and_bracket_the_values():
    labels, scores, sex, _ = _data(n=1500, seed=5)
    first = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=100, seed=4)
    again = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=100, seed=4)
    other = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=100, seed=5)
    assert json.dumps(first) == json.dumps(again)
    assert json.dumps(first) != json.dumps(other)
    block = first["by_threshold"][0]
    entries = [g["metrics"][m] for g in block["by_group"] for m in GROUP_METRICS if m != "count"]
    entries += [block["disparities"][m] for m in DISPARITY_METRICS]
    for entry in entries:
        assert entry["lower"] <= entry["value"] <= entry["upper"]
    assert all(e["upper"] - e["lower"] > 0 for e in entries)
    none = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=0)
    assert none["by_threshold"][0]["disparities"]["demographic_parity_difference"]["lower"] is None


def test_true_rates_inside_ci_for_large_n():
    rng = np.random.default_rng(9)
    n = 20000
    group = rng.choice(["p", "q"], size=n)
    labels = rng.binomial(1, 0.5, n)
    # Selected with probability 0.8 (positives) / 0.2 (negatives) in "p",
    # 0.6 / 0.3 in "q": true TPR difference 0.2, FPR difference 0.1.
    rate = np.where(group == "p", np.where(labels == 1, 0.8, 0.2), np.where(labels == 1, 0.6, 0.3))
    scores = (rng.uniform(size=n) < rate).astype(float)
    result = fairness_indicators(labels, scores, group, num_bootstrap=100, seed=2)
    block = result["by_threshold"][0]
    p, q = block["by_group"]
    for group_result, tpr, fpr in ((p, 0.8, 0.2), (q, 0.6, 0.3)):
        metrics = group_result["metrics"]
        assert metrics["tpr"]["lower"] <= tpr <= metrics["tpr"]["upper"]
        assert metrics["fpr"]["lower"] <= fpr <= metrics["fpr"]["upper"]
    eod = block["disparities"]["equalized_odds_difference"]
    assert eod["lower"] <= 0.2 <= eod["upper"]


@pytest.mark.parametrize(
    ("labels", "scores", "sensitive", "expected"),
    [
        ([], [], [], "scores is empty"),
        ([0, 1], [0.1], ["a", "b"], r"\(2,\).*\(1,\)"),
        ([0, 1], [0.1, 0.2], ["a"], r"'sensitive' has shape \(1,\)"),
        ([0, 2], [0.1, 0.2], ["a", "b"], "must be 0 or 1"),
        ([0, 1], [0.1, float("nan")], ["a", "b"], r"1 NaN value\(s\) at row 1"),
        ([0, 1], [0.1, 0.2], {}, "empty mapping"),
    ],
)
def test_invalid_inputs_raise(labels, scores, sensitive, expected):
    with pytest.raises(ValueError, match=expected):
        fairness_indicators(labels, scores, sensitive)


def test_attach_fairness():
    labels, scores, sex, _ = _data(n=300)
    evaluation = evaluate(labels, scores, task="binary_classification", num_bootstrap=5)
    fairness = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=5)
    combined = attach_fairness(evaluation, fairness)
    assert combined["fairness"] is fairness and "fairness" not in evaluation
    with pytest.raises(ValueError, match="fairness_indicators"):
        attach_fairness(evaluation, evaluation)
    with pytest.raises(ValueError, match="evaluate"):
        attach_fairness(fairness, fairness)
