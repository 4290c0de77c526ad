"""fairness_indicators(): per-group rates and disparities against fairlearn, small groups,
undefined rates and intervals that contain their estimate."""

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
    INTERVAL_METHODS,
    attach_fairness,
    bootstrap_interval,
    fairness_indicators,
)
from jaxtx.validation.model_scoring import evaluate_predictions

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


def _tiny_groups(n: int = 2000, seed: int = 0):
    """Race with two large groups, tiny groups of 8 and 11 rows, and one of 5 without positives."""
    rng = np.random.default_rng(seed)
    race = np.array(["a"] * (n - 24) + ["b"] * 8 + ["c"] * 11 + ["d"] * 5, dtype=object)
    race[: n - 24] = rng.choice(["a", "e"], size=n - 24)
    labels = rng.binomial(1, 0.4, n)
    labels[race == "d"] = 0
    logits = 1.5 * labels - 0.7 + rng.normal(0.0, 1.0, n)
    logits[race == "b"] += 3.0  # the tiny groups are scored very differently
    logits[race == "c"] -= 3.0
    sex = rng.choice(["F", "M"], size=n)
    return labels, 1.0 / (1.0 + np.exp(-logits)), race.astype(str), sex


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


def _fairlearn_disparities(labels, predicted, sensitive) -> dict[str, float]:
    kwargs = {"sensitive_features": sensitive}
    return {
        "demographic_parity_difference": flm.demographic_parity_difference(
            labels, predicted, **kwargs
        ),
        "demographic_parity_ratio": flm.demographic_parity_ratio(labels, predicted, **kwargs),
        "equalized_odds_difference": flm.equalized_odds_difference(labels, predicted, **kwargs),
        "equalized_odds_ratio": flm.equalized_odds_ratio(labels, predicted, **kwargs),
    }


def _assert_group_rates(block, labels, predicted, sensitive, key_of):
    frame = _frame(labels, predicted, sensitive)
    by_group = frame.by_group
    assert len(block["by_group"]) == len(by_group)
    for group in block["by_group"]:
        row = by_group.loc[key_of(group["group"])]
        for metric in GROUP_METRICS:
            entry = group["metrics"][metric]
            if entry["value"] is None:
                # Undefined: fairlearn reports 0 by convention; we say why instead.
                assert float(row[metric]) == 0.0 and "0/0" in entry["reason"]
            else:
                assert entry["value"] == pytest.approx(float(row[metric]), rel=RTOL, abs=0)
    for metric in GROUP_METRICS:
        if block["overall"][metric]["value"] is not None:
            assert block["overall"][metric]["value"] == pytest.approx(
                float(frame.overall[metric]), rel=RTOL
            )


def _assert_matches_fairlearn(analysis, labels, scores, sensitive, key_of):
    """Group rates equal fairlearn where defined; disparities equal fairlearn's on the
    rows of the included groups (per rate, the groups where that rate is defined)."""
    included = {g["name"] for g in analysis["groups"] if g["included"]}
    keys = [key_of(g["group"]) for g in analysis["groups"] if g["included"]]
    sens = sensitive if isinstance(sensitive, pd.DataFrame) else pd.Series(sensitive)
    index = pd.MultiIndex.from_frame(sens) if isinstance(sens, pd.DataFrame) else pd.Index(sens)
    rows = np.asarray(index.isin(keys))
    assert included
    for block in analysis["by_threshold"]:
        predicted = (scores >= block["threshold"]).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _assert_group_rates(block, labels, predicted, sensitive, key_of)
            sub = sens[rows] if isinstance(sens, pd.DataFrame) else np.asarray(sensitive)[rows]
            expected = _fairlearn_disparities(labels[rows], predicted[rows], sub)
            both = all(
                g["metrics"]["tpr"]["value"] is not None
                and g["metrics"]["fpr"]["value"] is not None
                for g in block["by_group"]
                if g["included"]
            )
        ours = block["disparities"]
        for metric in ("demographic_parity_difference", "demographic_parity_ratio"):
            if math.isnan(expected[metric]):
                assert ours[metric]["value"] is None and ours[metric]["reason"]
            else:
                assert ours[metric]["value"] == pytest.approx(expected[metric], rel=RTOL, abs=0)
        if both:
            for metric in ("equalized_odds_difference", "equalized_odds_ratio"):
                if not math.isnan(expected[metric]):
                    assert ours[metric]["value"] == pytest.approx(
                        expected[metric], rel=RTOL, abs=0
                    ), (analysis["name"], block["threshold"], metric)


def _entries(result):
    for analysis in result["analyses"]:
        for block in analysis["by_threshold"]:
            for group in block["by_group"]:
                yield from group["metrics"].values()
            yield from block["overall"].values()
            yield from block["disparities"].values()


def test_single_feature_matches_fairlearn():
    labels, scores, sex, _ = _data()
    result = fairness_indicators(labels, scores, {"sex": sex}, thresholds=THRESHOLDS, seed=1)
    assert result["format"] == FORMAT
    (analysis,) = result["analyses"]
    assert [g["name"] for g in analysis["groups"]] == ["sex=F", "sex=M", "sex=X"]
    assert result["warnings"] == [] and analysis["excluded_groups"] == []
    _assert_matches_fairlearn(analysis, labels, scores, sex, lambda key: key["sex"])
    # The group difference is real: F is selected more often at every threshold.
    for block in analysis["by_threshold"]:
        assert block["disparities"]["demographic_parity_difference"]["lower"] > 0.0


def test_bare_array_is_named_sensitive():
    labels, scores, sex, _ = _data(n=500)
    result = fairness_indicators(labels, scores, sex, num_bootstrap=10)
    assert result["sensitive_features"] == ["sensitive"]
    assert result["analyses"][0]["by_threshold"][0]["by_group"][0]["group"] == {"sensitive": "F"}


def test_per_feature_by_default_intersections_as_an_option():
    labels, scores, sex, age = _data(n=2000, seed=3)
    sensitive = {"sex": sex, "age": age}
    result = fairness_indicators(labels, scores, sensitive, thresholds=(0.5,), num_bootstrap=20)
    assert [a["name"] for a in result["analyses"]] == ["sex", "age"]
    assert result["intersections"] is False
    _assert_matches_fairlearn(result["analyses"][0], labels, scores, sex, lambda k: k["sex"])
    _assert_matches_fairlearn(result["analyses"][1], labels, scores, age, lambda k: k["age"])

    both = fairness_indicators(
        labels, scores, sensitive, thresholds=(0.5,), num_bootstrap=20, intersections=True
    )
    assert [a["name"] for a in both["analyses"]] == ["sex", "age", "sex, age"]
    cross = both["analyses"][2]
    assert len(cross["groups"]) == 6
    frame = pd.DataFrame({"sex": sex, "age": age})
    _assert_matches_fairlearn(cross, labels, scores, frame, lambda k: (k["sex"], k["age"]))


def test_tiny_groups_are_reported_but_do_not_decide_disparities():
    labels, scores, race, _ = _tiny_groups()
    result = fairness_indicators(
        labels, scores, {"race": race}, thresholds=(0.5,), min_group_size=30, seed=2
    )
    (analysis,) = result["analyses"]
    assert analysis["excluded_groups"] == ["race=b", "race=c", "race=d"]
    (warning,) = result["warnings"]
    for text in ("race=b (8 rows)", "race=c (11 rows)", "race=d (5 rows)", "min_group_size=30"):
        assert text in warning
    block = analysis["by_threshold"][0]
    small = {g["name"]: g for g in block["by_group"] if not g["included"]}
    # Reported with counts and intervals ...
    assert small["race=b"]["metrics"]["count"]["value"] == 8
    sel = small["race=c"]["metrics"]["selection_rate"]
    assert sel["lower"] is not None and sel["lower"] <= sel["value"] <= sel["upper"]
    _assert_matches_fairlearn(analysis, labels, scores, race, lambda key: key["race"])
    # ... while with them the worst case would be set by 8 and 11 rows.
    everyone = fairness_indicators(labels, scores, {"race": race}, thresholds=(0.5,), seed=2)
    assert everyone["warnings"] == []
    with_tiny = everyone["analyses"][0]["by_threshold"][0]["disparities"]
    gated = block["disparities"]
    assert (
        with_tiny["demographic_parity_difference"]["value"]
        > gated["demographic_parity_difference"]["value"] + 0.3
    )
    predicted = (scores >= 0.5).astype(int)
    large = np.isin(race, ["a", "e"])
    assert gated["demographic_parity_difference"]["value"] == pytest.approx(
        flm.demographic_parity_difference(
            labels[large], predicted[large], sensitive_features=race[large]
        ),
        rel=RTOL,
    )


def test_min_group_size_defaults_to_min_slice_size_in_scoring():
    labels, scores, race, sex = _tiny_groups(n=600)
    doc, fairness = evaluate_predictions(
        labels.astype(float),
        scores,
        task="binary_classification",
        features={"race": race, "sex": sex},
        slicing_specs=[(), ("race",)],
        min_slice_size=30,
        sensitive_features=["race", "sex"],
        num_bootstrap=20,
    )
    assert fairness is not None and fairness["min_group_size"] == 30
    skipped = {s["name"] for s in doc["skipped_slices"]}
    assert skipped == set(fairness["analyses"][0]["excluded_groups"])
    assert [a["name"] for a in fairness["analyses"]] == ["race", "sex"]
    _, explicit = evaluate_predictions(
        labels.astype(float),
        scores,
        task="binary_classification",
        features={"race": race},
        min_slice_size=30,
        sensitive_features=["race"],
        min_group_size=6,
        num_bootstrap=0,
    )
    assert explicit is not None and explicit["analyses"][0]["excluded_groups"] == ["race=d"]


def test_one_row_intersection_cannot_set_equalized_odds():
    labels, scores, race, sex = _tiny_groups(n=1500, seed=4)
    race = race.copy()
    race[0] = "z"  # a 1-row group
    result = fairness_indicators(
        labels,
        scores,
        {"race": race, "sex": sex},
        min_group_size=30,
        intersections=True,
        num_bootstrap=50,
    )
    cross = result["analyses"][2]
    assert any(name.startswith("race=z") for name in cross["excluded_groups"])
    eod = cross["by_threshold"][0]["disparities"]["equalized_odds_difference"]
    assert eod["value"] < 0.5 and eod["lower"] < eod["upper"]


def test_undefined_rates_are_null_with_a_reason_everywhere():
    # Group "a" has no positives, group "b" no negatives.
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8])
    group = np.array(["a", "a", "a", "b", "b", "b"])
    result = fairness_indicators(
        labels, scores, group, thresholds=(0.5, 0.95, 0.05, 0.7), num_bootstrap=30
    )
    (analysis,) = result["analyses"]
    _assert_matches_fairlearn(analysis, labels, scores, group, lambda key: key["sensitive"])
    a, b = analysis["by_threshold"][0]["by_group"]
    for metric in ("tpr", "fnr"):
        assert a["metrics"][metric]["value"] is None
        assert "no positive labels" in a["metrics"][metric]["reason"]
    assert b["metrics"]["fpr"]["value"] is None and "no negative" in b["metrics"]["fpr"]["reason"]
    # Disparities use the groups where a rate is defined: TPR from "b", FPR from "a".
    eod = analysis["by_threshold"][0]["disparities"]["equalized_odds_difference"]
    assert eod["value"] == 0.0
    # At 0.95 nobody is selected: precision is undefined and the ratios are 0/0.
    nobody = analysis["by_threshold"][1]
    assert nobody["by_group"][1]["metrics"]["precision"]["value"] is None
    assert nobody["overall"]["precision"]["value"] is None
    assert "no example scored >= 0.95" in nobody["overall"]["precision"]["reason"]
    assert nobody["disparities"]["demographic_parity_ratio"]["value"] is None
    assert "0/0" in nobody["disparities"]["demographic_parity_ratio"]["reason"]
    assert nobody["disparities"]["demographic_parity_difference"]["value"] == 0.0
    json.dumps(result, allow_nan=False)


def test_precision_with_nothing_predicted_agrees_between_documents():
    labels, scores, sex, _ = _data(n=400)
    doc, fairness = evaluate_predictions(
        labels.astype(float),
        scores,
        task="binary_classification",
        features={"sex": sex},
        thresholds=(0.5, 1.5),
        sensitive_features=["sex"],
        min_slice_size=1,
        num_bootstrap=10,
    )
    assert fairness is not None
    evaluation_entry = doc["slices"][0]["metrics"]["precision@1.5"]
    fairness_entry = fairness["analyses"][0]["by_threshold"][1]["overall"]["precision"]
    for entry in (evaluation_entry, fairness_entry):
        assert entry["value"] is None and entry["lower"] is None and entry["upper"] is None
        assert "no example scored >= 1.5" in entry["reason"]
    for group in fairness["analyses"][0]["by_threshold"][1]["by_group"]:
        assert group["metrics"]["precision"]["value"] is None


def test_resamples_of_a_tiny_group_without_positives_are_undefined_not_zero():
    # Group "t": 6 rows, 2 positives, both selected -> TPR 1. Resamples without
    # a positive have no TPR; they must not pull the interval to 0.
    rng = np.random.default_rng(1)
    n = 400
    group = np.array(["big"] * (n - 6) + ["t"] * 6)
    labels = rng.binomial(1, 0.5, n)
    labels[-6:] = [1, 1, 0, 0, 0, 0]
    scores = rng.uniform(size=n)
    scores[-6:] = [0.9, 0.8, 0.1, 0.2, 0.3, 0.7]
    result = fairness_indicators(labels, scores, group, num_bootstrap=200, seed=3)
    tpr = result["analyses"][0]["by_threshold"][0]["by_group"][1]["metrics"]["tpr"]
    assert tpr["value"] == 1.0
    assert tpr["lower"] == 1.0 and tpr["upper"] == 1.0
    assert 150 < tpr["resamples"] < 200  # (4/6)^6 ~ 9% of resamples have no positive


@pytest.mark.parametrize("seed", range(6))
def test_every_interval_contains_its_estimate_and_states_its_method(seed):
    labels, scores, race, sex = _tiny_groups(n=800, seed=seed)
    result = fairness_indicators(
        labels,
        scores,
        {"race": race, "sex": sex},
        thresholds=THRESHOLDS,
        min_group_size=10,
        intersections=True,
        num_bootstrap=60,
        seed=seed,
    )
    methods = []
    for entry in _entries(result):
        if entry["value"] is None:
            assert entry["reason"] and entry["lower"] is None
            continue
        if entry["lower"] is None:
            continue
        assert entry["method"] in INTERVAL_METHODS
        assert entry["lower"] - 1e-12 <= entry["value"] <= entry["upper"] + 1e-12, entry
        methods.append(entry["method"])
    assert methods.count("bca") > 0.7 * len(methods)
    json.dumps(result, allow_nan=False)


def test_percentile_interval_of_a_min_statistic_is_replaced():
    # A ratio min/max whose resamples all fall below the estimate, as for an
    # equalized odds ratio: the percentile interval excludes the estimate.
    resampled = np.linspace(0.0, 0.1314, 100)
    interval = bootstrap_interval(0.13307, resampled)
    assert interval["method"] == "percentile_widened"
    assert interval["lower"] <= 0.13307 <= interval["upper"]
    smooth = bootstrap_interval(0.5, np.random.default_rng(0).normal(0.5, 0.1, 500))
    assert smooth["method"] == "bc" and smooth["lower"] < 0.5 < smooth["upper"]
    assert bootstrap_interval(0.5, np.array([np.nan, 0.4]))["method"] is None


def test_one_group_only():
    labels, scores, _, _ = _data(n=300)
    result = fairness_indicators(labels, scores, np.full(300, "all"), num_bootstrap=20)
    disparities = result["analyses"][0]["by_threshold"][0]["disparities"]
    assert disparities["demographic_parity_difference"]["value"] == 0.0
    assert disparities["demographic_parity_ratio"]["value"] == 1.0
    assert disparities["equalized_odds_difference"]["value"] == 0.0


def test_no_group_large_enough():
    labels, scores, sex, _ = _data(n=100)
    result = fairness_indicators(labels, scores, sex, min_group_size=1000, num_bootstrap=5)
    for entry in result["analyses"][0]["by_threshold"][0]["disparities"].values():
        assert entry["value"] is None and "min_group_size" in entry["reason"]


def test_intervals_are_deterministic_and_bracket_the_values():
    labels, scores, sex, _ = _data(n=1500, seed=5)
    first = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=100, seed=4)
    again = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=100, seed=4)
    other = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=100, seed=5)
    assert json.dumps(first) == json.dumps(again)
    assert json.dumps(first) != json.dumps(other)
    block = first["analyses"][0]["by_threshold"][0]
    entries = [g["metrics"][m] for g in block["by_group"] for m in GROUP_METRICS if m != "count"]
    entries += [block["disparities"][m] for m in DISPARITY_METRICS]
    for entry in entries:
        assert entry["lower"] <= entry["value"] <= entry["upper"]
    assert all(e["upper"] - e["lower"] > 0 for e in entries)
    none = fairness_indicators(labels, scores, {"sex": sex}, num_bootstrap=0)
    disparity = none["analyses"][0]["by_threshold"][0]["disparities"]
    assert disparity["demographic_parity_difference"]["lower"] is None


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
    block = result["analyses"][0]["by_threshold"][0]
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
    with pytest.raises(ValueError, match="min_group_size"):
        fairness_indicators([0, 1], [0.1, 0.2], ["a", "b"], min_group_size=0)


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
