"""evaluate(): metrics against scikit-learn, bootstrap CIs, slicing, degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from jaxtx.validation.evaluation import FORMAT, evaluate, format_threshold

RTOL = 1e-9


def _binary_data(n: int = 3000, seed: int = 0, decimals: int | None = 2):
    """Labels with a real signal, a group that scores higher, and tied (rounded) scores."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.4, 0.1])
    region = rng.choice([1, 2], size=n)
    labels = rng.binomial(1, np.where(group == "a", 0.45, 0.3))
    logits = 1.6 * labels - 0.8 + rng.normal(0.0, 1.0, n) + 0.4 * (group == "b")
    scores = 1.0 / (1.0 + np.exp(-logits))
    if decimals is not None:
        scores = np.round(scores, decimals)
    return labels, scores, {"group": group, "region": region}


def _metrics(evaluation: dict, name: str = "overall") -> dict:
    return next(s for s in evaluation["slices"] if s["name"] == name)["metrics"]


def _value(evaluation: dict, metric: str, name: str = "overall") -> float:
    return _metrics(evaluation, name)[metric]["value"]


# ----------------------------------------------------------------- binary vs sklearn


@pytest.fixture(scope="module")
def binary():
    labels, scores, features = _binary_data()
    evaluation = evaluate(
        labels,
        scores,
        task="binary_classification",
        features=features,
        slicing_specs=[(), ("group",), ("group", "region")],
        thresholds=(0.3, 0.5, 0.7),
        num_bootstrap=200,
        seed=7,
    )
    return labels, scores, features, evaluation


def test_binary_metrics_equal_sklearn(binary):
    labels, scores, _, evaluation = binary
    assert evaluation["format"] == FORMAT
    close = {
        "auc": skm.roc_auc_score(labels, scores),
        "pr_auc": skm.average_precision_score(labels, scores),
        "log_loss": skm.log_loss(labels, scores),
        "label_mean": labels.mean(),
        "mean_prediction": scores.mean(),
        "calibration": scores.mean() / labels.mean(),
        "example_count": labels.size,
    }
    for t in (0.3, 0.5, 0.7):
        predicted = (scores >= t).astype(int)
        close[f"accuracy@{t}"] = skm.accuracy_score(labels, predicted)
        close[f"precision@{t}"] = skm.precision_score(labels, predicted)
        close[f"recall@{t}"] = skm.recall_score(labels, predicted)
        close[f"f1@{t}"] = skm.f1_score(labels, predicted)
    for name, expected in close.items():
        assert _value(evaluation, name) == pytest.approx(expected, rel=RTOL, abs=0), name


def test_binary_slice_metrics_equal_sklearn_on_the_slice_rows(binary):
    labels, scores, features, evaluation = binary
    for value in ("a", "b", "c"):
        rows = features["group"] == value
        y, p = labels[rows], scores[rows]
        name = f"group={value}"
        assert _value(evaluation, "auc", name) == pytest.approx(skm.roc_auc_score(y, p), rel=RTOL)
        assert _value(evaluation, "pr_auc", name) == pytest.approx(
            skm.average_precision_score(y, p), rel=RTOL
        )
        assert _value(evaluation, "f1@0.5", name) == pytest.approx(
            skm.f1_score(y, (p >= 0.5).astype(int)), rel=RTOL
        )
    rows = (features["group"] == "b") & (features["region"] == 2)
    assert _value(evaluation, "log_loss", "group=b, region=2") == pytest.approx(
        skm.log_loss(labels[rows], scores[rows]), rel=RTOL
    )


def test_binary_curves_equal_sklearn(binary):
    labels, scores, _, evaluation = binary
    curves = evaluation["slices"][0]["curves"]
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    assert len(fpr) <= 201  # rounded scores: the curve is stored whole
    np.testing.assert_allclose(curves["roc"]["fpr"], fpr, rtol=RTOL)
    np.testing.assert_allclose(curves["roc"]["tpr"], tpr, rtol=RTOL)
    assert curves["roc"]["thresholds"][0] is None and math.isinf(thresholds[0])
    np.testing.assert_allclose(curves["roc"]["thresholds"][1:], thresholds[1:], rtol=RTOL)

    precision, recall, _ = skm.precision_recall_curve(labels, scores)
    np.testing.assert_allclose(curves["pr"]["precision"], precision, rtol=RTOL)
    np.testing.assert_allclose(curves["pr"]["recall"], recall, rtol=RTOL)

    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10)
    bins = [b for b in curves["reliability"] if b["count"]]
    assert len(curves["reliability"]) == 10
    np.testing.assert_allclose([b["mean_label"] for b in bins], prob_true, rtol=RTOL)
    np.testing.assert_allclose([b["mean_prediction"] for b in bins], prob_pred, rtol=RTOL)
    assert sum(b["count"] for b in curves["reliability"]) == labels.size

    for matrix in curves["confusion_matrices"]:
        predicted = (scores >= matrix["threshold"]).astype(int)
        tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
        assert (matrix["tn"], matrix["fp"], matrix["fn"], matrix["tp"]) == (tn, fp, fn, tp)


def test_auc_handles_ties_like_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.binomial(1, 0.4, 500)
    scores = np.round(rng.uniform(0, 1, 500) * 0.5 + 0.3 * labels, 1)  # ~9 distinct values
    evaluation = evaluate(labels, scores, task="binary_classification", num_bootstrap=0)
    assert _value(evaluation, "auc") == pytest.approx(skm.roc_auc_score(labels, scores), rel=RTOL)
    assert _value(evaluation, "pr_auc") == pytest.approx(
        skm.average_precision_score(labels, scores), rel=RTOL
    )
    constant = np.full(500, 0.5)
    evaluation = evaluate(labels, constant, task="binary_classification", num_bootstrap=0)
    assert _value(evaluation, "auc") == pytest.approx(0.5, rel=RTOL)
    assert _value(evaluation, "pr_auc") == pytest.approx(
        skm.average_precision_score(labels, constant), rel=RTOL
    )


def test_long_roc_curves_are_subsampled_but_auc_is_exact():
    labels, scores, _ = _binary_data(n=2000, seed=5, decimals=None)
    evaluation = evaluate(labels, scores, task="binary_classification", num_bootstrap=0)
    roc = evaluation["slices"][0]["curves"]["roc"]
    assert len(roc["fpr"]) <= 201
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert _value(evaluation, "auc") == pytest.approx(skm.roc_auc_score(labels, scores), rel=RTOL)


# -------------------------------------------------------------- multiclass, regression


def _multiclass_data(n: int = 2000, k: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), labels] += 1.2
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return labels, probs


def test_multiclass_metrics_equal_sklearn():
    labels, probs = _multiclass_data()
    names = ["cat", "dog", "bird", "fish"]
    evaluation = evaluate(
        labels, probs, task="multiclass_classification", class_names=names, num_bootstrap=50
    )
    predicted = probs.argmax(axis=1)
    expected = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "log_loss": skm.log_loss(labels, probs),
        "macro_auc": skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"),
        "example_count": labels.size,
    }
    for average in ("macro", "weighted"):
        expected[f"{average}_precision"] = skm.precision_score(labels, predicted, average=average)
        expected[f"{average}_recall"] = skm.recall_score(labels, predicted, average=average)
        expected[f"{average}_f1"] = skm.f1_score(labels, predicted, average=average)
    for name, value in expected.items():
        assert _value(evaluation, name) == pytest.approx(value, rel=RTOL), name
    curves = evaluation["slices"][0]["curves"]
    assert curves["confusion_matrix"]["labels"] == names
    assert curves["confusion_matrix"]["matrix"] == skm.confusion_matrix(labels, predicted).tolist()
    per_class = skm.precision_recall_fscore_support(labels, predicted)
    for c, name in enumerate(names):
        assert curves["per_class"][name]["precision"] == pytest.approx(per_class[0][c], rel=RTOL)
        assert curves["per_class"][name]["support"] == per_class[3][c]

    by_name = evaluate(
        np.array(names)[labels], probs, task="multiclass_classification", class_names=names
    )
    assert _value(by_name, "macro_f1") == _value(evaluation, "macro_f1")


def test_multiclass_averages_skip_absent_classes_like_sklearn():
    labels, probs = _multiclass_data(n=300, k=4, seed=2)
    keep = labels != 3
    labels, probs = labels[keep], probs[keep]
    probs[:, 3] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    evaluation = evaluate(labels, probs, task="multiclass_classification", num_bootstrap=0)
    predicted = probs.argmax(axis=1)
    assert _value(evaluation, "macro_precision") == pytest.approx(
        skm.precision_score(labels, predicted, average="macro", zero_division=0), rel=RTOL
    )
    assert _value(evaluation, "log_loss") == pytest.approx(
        skm.log_loss(labels, probs, labels=[0, 1, 2, 3]), rel=RTOL
    )
    auc = _metrics(evaluation)["macro_auc"]
    assert auc["value"] is None and "'3'" in auc["reason"]


def test_regression_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    labels = rng.normal(50.0, 10.0, 2000)
    predictions = labels + rng.normal(0.0, 4.0, 2000)
    evaluation = evaluate(labels, predictions, task="regression", num_bootstrap=50)
    expected = {
        "rmse": skm.root_mean_squared_error(labels, predictions),
        "mae": skm.mean_absolute_error(labels, predictions),
        "r2": skm.r2_score(labels, predictions),
        "mean_label": labels.mean(),
        "mean_prediction": predictions.mean(),
        "example_count": 2000,
    }
    for name, value in expected.items():
        assert _value(evaluation, name) == pytest.approx(value, rel=RTOL), name
    assert evaluation["thresholds"] == [] and evaluation["class_names"] is None


# ------------------------------------------------------------------------ bootstrap


def test_same_seed_gives_identical_intervals_and_other_seeds_differ():
    labels, scores, features = _binary_data(n=800)
    kwargs = {"task": "binary_classification", "features": features, "num_bootstrap": 60}
    first = evaluate(labels, scores, seed=11, **kwargs)
    again = evaluate(labels, scores, seed=11, **kwargs)
    other = evaluate(labels, scores, seed=12, **kwargs)
    assert json.dumps(first) == json.dumps(again)
    assert _metrics(first)["auc"] != _metrics(other)["auc"]
    assert _value(first, "auc") == _value(other, "auc")


def test_intervals_bracket_the_value_and_do_not_depend_on_other_slices(binary):
    labels, scores, features, evaluation = binary
    for entry in evaluation["slices"]:
        for name, metric in entry["metrics"].items():
            if metric["value"] is None:
                continue
            assert metric["lower"] <= metric["upper"], (entry["name"], name)
            # Percentile intervals of a smooth statistic contain the estimate.
            if name not in ("example_count",):
                assert metric["lower"] - 1e-12 <= metric["value"] <= metric["upper"] + 1e-12
    alone = evaluate(
        labels,
        scores,
        task="binary_classification",
        thresholds=(0.3, 0.5, 0.7),
        num_bootstrap=200,
        seed=7,
    )
    assert _metrics(alone) == _metrics(evaluation)
    count = _metrics(evaluation)["example_count"]
    assert count["lower"] == count["upper"] == labels.size


def test_true_auc_and_base_rate_inside_ci_for_large_n():
    # Positives score N(1, 1), negatives N(0, 1): the true AUC is Phi(1/sqrt(2)).
    rng = np.random.default_rng(21)
    n, rate = 20000, 0.3
    labels = rng.binomial(1, rate, n)
    scores = 1.0 / (1.0 + np.exp(-(labels + rng.normal(0.0, 1.0, n))))
    evaluation = evaluate(labels, scores, task="binary_classification", num_bootstrap=100, seed=3)
    true_auc = 0.5 * (1.0 + math.erf(0.5))
    auc, base_rate = _metrics(evaluation)["auc"], _metrics(evaluation)["label_mean"]
    assert auc["lower"] <= true_auc <= auc["upper"]
    assert auc["upper"] - auc["lower"] < 0.03
    assert base_rate["lower"] <= rate <= base_rate["upper"]


def test_interval_coverage_is_close_to_nominal():
    rng = np.random.default_rng(8)
    true_auc = 0.5 * (1.0 + math.erf(0.5))
    covered = 0
    runs = 40
    for seed in range(runs):
        labels = rng.binomial(1, 0.5, 400)
        scores = 1.0 / (1.0 + np.exp(-(labels + rng.normal(0.0, 1.0, 400))))
        evaluation = evaluate(
            labels, scores, task="binary_classification", num_bootstrap=200, seed=seed
        )
        auc = _metrics(evaluation)["auc"]
        covered += auc["lower"] <= true_auc <= auc["upper"]
    assert covered / runs >= 0.85


def test_no_bootstrap_gives_values_without_intervals():
    labels, scores, _ = _binary_data(n=200)
    evaluation = evaluate(labels, scores, task="binary_classification", num_bootstrap=0)
    auc = _metrics(evaluation)["auc"]
    assert auc["value"] is not None and auc["lower"] is None and auc["upper"] is None


# -------------------------------------------------------------------------- slicing


def test_slices_crosses_and_min_slice_size():
    labels, scores, features = _binary_data(n=1000)
    evaluation = evaluate(
        labels,
        scores,
        task="binary_classification",
        features=features,
        slicing_specs=[(), ("group",), ("group", "region")],
        min_slice_size=80,
        num_bootstrap=10,
    )
    sizes = {s["name"]: s["size"] for s in evaluation["slices"]}
    skipped = {s["name"]: s for s in evaluation["skipped_slices"]}
    group_counts = {v: int((features["group"] == v).sum()) for v in ("a", "b", "c")}
    for value, count in group_counts.items():
        name = f"group={value}"
        assert (sizes.get(name) or skipped[name]["size"]) == count
    cross = {}
    for value in ("a", "b", "c"):
        for region in (1, 2):
            rows = (features["group"] == value) & (features["region"] == region)
            cross[f"group={value}, region={region}"] = int(rows.sum())
    for name, count in cross.items():
        if count >= 80:
            assert sizes[name] == count
        else:
            assert skipped[name]["size"] == count
            assert "min_slice_size=80" in skipped[name]["reason"]
    assert "group=c, region=1" in skipped  # about 50 rows
    assert sizes["overall"] == 1000
    entry = next(s for s in evaluation["slices"] if s["name"] == "group=a, region=2")
    assert entry["slice"] == {"group": "a", "region": 2} and entry["spec"] == ["group", "region"]
    json.dumps(evaluation, allow_nan=False)


def test_feature_values_of_any_type_slice_and_serialize():
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.9, 0.4, 0.6, 0.8, 0.3])
    features = {
        "mixed": np.array(["x", None, "x", 3, None, "y"], dtype=object),
        "score_bucket": np.array([0.5, np.nan, 0.5, 1.5, 1.5, np.nan]),
    }
    evaluation = evaluate(
        labels,
        scores,
        task="binary_classification",
        features=features,
        slicing_specs=["mixed", ("score_bucket",)],
        num_bootstrap=5,
    )
    keys = [s["slice"] for s in evaluation["slices"]]
    assert keys == [
        {"mixed": 3},
        {"mixed": "x"},
        {"mixed": "y"},
        {"mixed": None},
        {"score_bucket": 0.5},
        {"score_bucket": 1.5},
        {"score_bucket": None},
    ]
    json.dumps(evaluation, allow_nan=False)


# ------------------------------------------------------------------- degenerate input


def test_single_class_slice_reports_null_auc_with_reason():
    labels = np.array([1, 1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.6])
    group = np.array(["only_pos", "only_pos", "only_pos", "mixed", "mixed", "mixed"])
    evaluation = evaluate(
        labels,
        scores,
        task="binary_classification",
        features={"g": group},
        slicing_specs=[(), ("g",)],
        num_bootstrap=30,
    )
    metrics = _metrics(evaluation, "g=only_pos")
    for name in ("auc", "pr_auc"):
        assert metrics[name]["value"] is None
        assert "one class" in metrics[name]["reason"]
    assert metrics["recall@0.5"]["value"] == pytest.approx(2.0 / 3.0)
    assert metrics["log_loss"]["value"] is not None
    assert _metrics(evaluation, "g=mixed")["auc"]["value"] is not None
    json.dumps(evaluation, allow_nan=False)

    no_positives = evaluate([0, 0, 0], [0.1, 0.2, 0.3], task="binary_classification")
    metrics = _metrics(no_positives)
    assert metrics["calibration"]["value"] is None and metrics["recall@0.5"]["value"] is None
    assert "no example scored >= 0.5" in metrics["precision@0.5"]["reason"]


def test_constant_regression_labels_leave_r2_undefined():
    evaluation = evaluate([2.0, 2.0, 2.0], [1.0, 2.0, 3.0], task="regression", num_bootstrap=10)
    metrics = _metrics(evaluation)
    assert metrics["r2"]["value"] is None and "constant" in metrics["r2"]["reason"]
    assert metrics["rmse"]["value"] == pytest.approx(math.sqrt(2.0 / 3.0), rel=RTOL)


@pytest.mark.parametrize(
    ("labels", "predictions", "task", "expected"),
    [
        ([], [], "binary_classification", "predictions is empty"),
        ([0, 1], [], "binary_classification", "predictions is empty"),
        ([], [], "regression", "predictions is empty"),
        ([0, 1, 1], [0.1, 0.2], "binary_classification", r"\(3,\).*\(2,\)"),
        ([0, 1], [[0.5, 0.5]] * 3, "multiclass_classification", r"\(2,\).*\(3, 2\)"),
        ([1.0, 2.0], [1.0], "regression", r"\(2,\).*\(1,\)"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "binary_classification", "must be 0 or 1"),
        ([0, 1], [0.1, 1.2], "binary_classification", r"\[0, 1\]"),
        ([0, 1], [[0.2, 0.8], [0.3, 0.7]], "binary_classification", r"predictions\[:, 1\]"),
        ([0, 1], [[0.2, 0.7], [0.3, 0.7]], "multiclass_classification", "sum to 1"),
        ([0, 5], [[0.2, 0.8], [0.3, 0.7]], "multiclass_classification", r"\[0, 2\)"),
        ([0, 1], [0.1, 0.2], "ranking", "task must be one of"),
    ],
)
def test_invalid_inputs_raise_clear_errors(labels, predictions, task, expected):
    with pytest.raises(ValueError, match=expected):
        evaluate(labels, predictions, task=task)


def test_nan_errors_say_how_many_and_where():
    scores = np.array([0.1, np.nan, 0.3, np.nan, 0.5])
    with pytest.raises(ValueError, match=r"predictions contains 2 NaN value\(s\) at rows 1, 3"):
        evaluate([0, 1, 0, 1, 0], scores, task="binary_classification")
    with pytest.raises(ValueError, match=r"labels contains 1 NaN value\(s\) at row 2"):
        evaluate([0.0, 1.0, np.nan], [0.1, 0.2, 0.3], task="regression")
    probs = np.full((3, 2), 0.5)
    probs[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"predictions contains 1 NaN value\(s\) at row 2"):
        evaluate([0, 1, 1], probs, task="multiclass_classification")


def test_slicing_errors_name_the_feature():
    with pytest.raises(ValueError, match=r"\['sex'\].*available: \['age'\]"):
        evaluate(
            [0, 1],
            [0.2, 0.8],
            task="binary_classification",
            features={"age": [1, 2]},
            slicing_specs=[("sex",)],
        )
    with pytest.raises(ValueError, match=r"features\['age'\] has shape \(3,\)"):
        evaluate(
            [0, 1],
            [0.2, 0.8],
            task="binary_classification",
            features={"age": [1, 2, 3]},
            slicing_specs=[("age",)],
        )


def test_threshold_names():
    assert format_threshold(0.5) == "0.5"
    assert format_threshold(1) == "1"
    assert format_threshold(0.123456789) == "0.123456789"
