"""bless() threshold checks, and the evaluation report (plots and HTML)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from jaxtx.validation.blessing import (
    NO_BASELINE,
    ChangeThreshold,
    MetricThreshold,
    bless,
    lookup_metric,
)
from jaxtx.validation.eval_report import (
    plot_calibration,
    plot_fairness,
    plot_roc,
    render_evaluation_html,
)
from jaxtx.validation.evaluation import evaluate
from jaxtx.validation.fairness import attach_fairness, fairness_indicators

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(n: int, signal: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    group = rng.choice(["F", "M", "<X&Y>"], size=n, p=[0.45, 0.45, 0.1])
    labels = rng.binomial(1, 0.4, n)
    logits = signal * labels - 0.5 * signal + rng.normal(0.0, 1.0, n) + 0.5 * (group == "F")
    return labels, 1.0 / (1.0 + np.exp(-logits)), group


def _model(signal: float, seed: int = 0, n: int = 1500) -> dict:
    labels, scores, group = _data(n, signal, seed)
    evaluation = evaluate(
        labels,
        scores,
        task="binary_classification",
        features={"group": group},
        slicing_specs=[(), ("group",)],
        min_slice_size=200,
        num_bootstrap=30,
    )
    fairness = fairness_indicators(labels, scores, {"group": group}, num_bootstrap=30)
    return attach_fairness(evaluation, fairness)


@pytest.fixture(scope="module")
def good() -> dict:
    return _model(signal=2.0)


@pytest.fixture(scope="module")
def weak() -> dict:
    return _model(signal=0.8)


def _value(doc: dict, metric: str, slice_key: dict | None = None) -> float:
    entry, reason = lookup_metric(doc, metric, slice_key)
    assert entry is not None, reason
    return entry["value"]


# ----------------------------------------------------------------- value thresholds


def test_lower_and_upper_bounds(good):
    auc = _value(good, "auc")
    result = bless(
        good,
        [
            MetricThreshold("auc", lower=auc - 0.05),
            MetricThreshold("log_loss", upper=1.0),
            MetricThreshold("auc", slice={"group": "F"}, lower=0.5, upper=1.0),
        ],
    )
    assert result["blessed"] is True
    assert [c["kind"] for c in result["checks"]] == ["lower", "upper", "lower", "upper"]
    assert all(c["passed"] for c in result["checks"])
    assert result["checks"][0]["value"] == auc and result["checks"][0]["bound"] == auc - 0.05

    failed = bless(good, [MetricThreshold("auc", lower=auc + 0.01)])
    assert failed["blessed"] is False
    check = failed["checks"][0]
    assert check["passed"] is False and "below the lower bound" in check["reason"]
    assert check["metric"] == "auc" and check["slice"] == {}
    assert set(check) >= {"metric", "slice", "value", "baseline", "bound", "passed", "reason"}
    json.dumps(failed, allow_nan=False)


def test_slice_and_fairness_metrics(good):
    f_auc = _value(good, "auc", {"group": "F"})
    dpd = _value(good, "fairness.demographic_parity_difference@0.5")
    assert (
        dpd
        == good["fairness"]["analyses"][0]["by_threshold"][0]["disparities"][
            "demographic_parity_difference"
        ]["value"]
    )
    result = bless(
        good,
        [
            MetricThreshold("auc", slice={"group": "F"}, lower=f_auc),
            MetricThreshold("fairness.demographic_parity_difference@0.5", upper=dpd / 2),
            MetricThreshold("fairness.tpr@0.5", slice={"group": "M"}, lower=0.1),
            MetricThreshold("fairness.selection_rate@0.5", lower=0.0),
            MetricThreshold("precision@0.50", lower=0.0),
        ],
    )
    passed = [c["passed"] for c in result["checks"]]
    assert passed == [True, False, True, True, True]
    assert "fairness.demographic_parity_difference@0.5" in result["checks"][1]["reason"]
    # A bare fairness document can be checked too.
    alone = bless(good["fairness"], [MetricThreshold("fairness.equalized_odds_ratio@0.5", lower=0)])
    assert alone["blessed"] is True


def test_missing_metrics_slices_and_groups_fail_naming_what_exists(good):
    result = bless(
        good,
        [
            MetricThreshold("acuracy@0.5", lower=0.5),
            MetricThreshold("auc", slice={"group": "nobody"}, lower=0.5),
            MetricThreshold("auc", slice={"group": "<X&Y>"}, lower=0.5),
            MetricThreshold("fairness.tpr@0.9", lower=0.5),
            MetricThreshold("fairness.tpr@0.5", slice={"group": "nobody"}, lower=0.5),
        ],
    )
    assert result["blessed"] is False
    reasons = [c["reason"] for c in result["checks"]]
    assert "'acuracy@0.5'" in reasons[0] and "'accuracy@0.5'" in reasons[0]
    assert "available slices" in reasons[1] and "'group=F'" in reasons[1]
    assert "not evaluated" in reasons[2] and "min_slice_size=200" in reasons[2]
    assert "fairness.tpr@0.5" in reasons[3]
    assert "available groups" in reasons[4]
    assert not any(c["passed"] for c in result["checks"])

    evaluation_only = {k: v for k, v in good.items() if k != "fairness"}
    no_fairness = bless(evaluation_only, [MetricThreshold("fairness.tpr@0.5", lower=0.5)])
    assert "attach_fairness" in no_fairness["checks"][0]["reason"]


def test_undefined_metric_fails_with_its_reason():
    evaluation = evaluate(
        [1, 1, 0, 1], [0.9, 0.4, 0.2, 0.7], task="binary_classification",
        features={"g": ["a", "a", "b", "b"]}, slicing_specs=[("g",)], num_bootstrap=5,
    )  # fmt: skip
    result = bless(evaluation, [MetricThreshold("auc", slice={"g": "a"}, lower=0.5)])
    check = result["checks"][0]
    assert check["passed"] is False and check["value"] is None
    assert "undefined" in check["reason"] and "one class" in check["reason"]


# ---------------------------------------------------------------- change thresholds


def test_change_thresholds_against_a_baseline(good, weak):
    auc_up = MetricThreshold("auc", change=ChangeThreshold("higher_is_better", absolute=0.0))
    loss_down = MetricThreshold(
        "log_loss", change=ChangeThreshold("lower_is_better", relative=0.01)
    )
    better = bless(good, [auc_up, loss_down], baseline_eval=weak)
    assert better["blessed"] is True
    check = better["checks"][0]
    assert check["kind"] == "change_absolute"
    assert check["baseline"] == _value(weak, "auc")
    assert check["bound"] == _value(weak, "auc")

    worse = bless(weak, [auc_up, loss_down], baseline_eval=good)
    assert worse["blessed"] is False
    assert [c["passed"] for c in worse["checks"]] == [False, False]
    assert "worse by" in worse["checks"][0]["reason"]
    expected_bound = _value(good, "log_loss") * 1.01
    assert worse["checks"][1]["bound"] == pytest.approx(expected_bound, rel=1e-12)

    # A tolerance wide enough lets the weaker model through.
    gap = _value(good, "auc") - _value(weak, "auc")
    tolerant = MetricThreshold("auc", change=ChangeThreshold(absolute=gap + 0.01))
    assert bless(weak, [tolerant], baseline_eval=good)["blessed"] is True
    # Both amounts give two checks, both must pass.
    both = MetricThreshold("auc", change=ChangeThreshold(absolute=gap + 0.01, relative=0.0))
    result = bless(weak, [both], baseline_eval=good)
    assert [c["kind"] for c in result["checks"]] == ["change_absolute", "change_relative"]
    assert [c["passed"] for c in result["checks"]] == [True, False]
    # Same model as its own baseline: no change, passes.
    assert bless(good, [auc_up, loss_down], baseline_eval=good)["blessed"] is True


def test_no_baseline_passes_change_checks(weak):
    result = bless(
        weak,
        [
            MetricThreshold("auc", change=ChangeThreshold(absolute=0.0)),
            MetricThreshold("auc", lower=0.99, change=ChangeThreshold(relative=0.0)),
        ],
    )
    change_checks = [c for c in result["checks"] if c["kind"].startswith("change")]
    assert all(c["passed"] and c["reason"] == NO_BASELINE for c in change_checks)
    assert all(c["baseline"] is None and c["bound"] is None for c in change_checks)
    assert result["blessed"] is False  # the lower bound still applies


def test_metric_missing_from_the_baseline_fails(good):
    baseline = evaluate(
        [0, 1, 0, 1], [0.2, 0.8, 0.4, 0.6], task="binary_classification", thresholds=(0.3,)
    )
    result = bless(
        good,
        [MetricThreshold("precision@0.5", change=ChangeThreshold(absolute=0.1))],
        baseline_eval=baseline,
    )
    check = result["checks"][0]
    assert check["passed"] is False and check["reason"].startswith("baseline evaluation:")
    assert "precision@0.3" in check["reason"]


# ----------------------------------------------------------------- configuration


def test_threshold_validation_and_from_dict(good):
    with pytest.raises(ValueError, match="sets no bound"):
        MetricThreshold("auc")
    with pytest.raises(ValueError, match="lower=0.9 > upper=0.1"):
        MetricThreshold("auc", lower=0.9, upper=0.1)
    with pytest.raises(ValueError, match="direction"):
        ChangeThreshold("up", absolute=0.1)
    with pytest.raises(ValueError, match="absolute=, relative="):
        ChangeThreshold()
    with pytest.raises(ValueError, match="unknown MetricThreshold keys"):
        MetricThreshold.from_dict({"metric": "auc", "lowr": 0.5})
    parsed = MetricThreshold.from_dict(
        {
            "metric": "auc",
            "slice": {"group": "F"},
            "lower": 0.5,
            "change": {"direction": "higher_is_better", "absolute": 0.01},
        }
    )
    assert parsed.change == ChangeThreshold("higher_is_better", absolute=0.01)
    result = bless(good, [{"metric": "auc", "lower": 0.5}])
    assert result["blessed"] is True
    assert bless(good, [])["blessed"] is True
    with pytest.raises(ValueError, match="format"):
        bless({"format": "something/1"}, [])


# ------------------------------------------------------------------------ report


def test_plots_write_pngs(tmp_path: Path, good):
    for path in (
        plot_roc(good, str(tmp_path / "a" / "roc.png")),
        plot_calibration(good, str(tmp_path / "cal.png"), slices=["overall", "group=F"]),
        plot_fairness(good["fairness"], str(tmp_path / "fair.png")),
    ):
        data = Path(path).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    with pytest.raises(ValueError, match="not in the evaluation"):
        plot_roc(good, str(tmp_path / "x.png"), slices=["nobody"])
    regression = evaluate([1.0, 2.0, 3.0], [1.0, 2.5, 2.0], task="regression")
    with pytest.raises(ValueError, match="binary_classification"):
        plot_roc(regression, str(tmp_path / "x.png"))


def test_report_has_banner_reasons_escaped_names_and_images(tmp_path: Path, good, weak):
    blessing = bless(
        good,
        [
            MetricThreshold("auc", lower=0.5),
            MetricThreshold("fairness.demographic_parity_difference@0.5", upper=0.0),
            MetricThreshold("auc", change=ChangeThreshold(absolute=0.0)),
        ],
        baseline_eval=weak,
    )
    assert blessing["blessed"] is False
    roc = plot_roc(good, str(tmp_path / "roc.png"))
    html = render_evaluation_html(
        good,
        blessing=blessing,
        title="Model <v2> & friends",
        images={"ROC <curve>": roc},
    )
    assert '<div class="banner fail"><div class="verdict">FAIL</div>' in html
    assert "1 of 3 check(s) failed" in html
    for check in blessing["checks"]:
        assert _escaped(check["reason"]) in html
    assert "<title>Model &lt;v2&gt; &amp; friends</title>" in html
    assert "group=&lt;X&amp;Y&gt;" in html and "<X&Y>" not in html
    assert 'alt="ROC &lt;curve&gt;"' in html
    encoded = base64.b64encode(Path(roc).read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{encoded}"' in html
    assert "Fairness indicators" in html and "equalized_odds_ratio" in html
    assert "http://" not in html and "https://" not in html

    passing = bless(good, [MetricThreshold("auc", lower=0.5)])
    html = render_evaluation_html(good, good["fairness"], passing, title="ok")
    assert '<div class="banner pass"><div class="verdict">PASS</div>' in html
    assert _escaped(passing["checks"][0]["reason"]) in html
    unchecked = render_evaluation_html(good, title="no checks")
    assert "NOT CHECKED" in unchecked


def test_report_for_multiclass_and_regression():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    evaluation = evaluate(
        labels, probs, task="multiclass_classification", class_names=["a<", "b", "c"]
    )
    html = render_evaluation_html(evaluation, title="multi")
    assert "pred a&lt;" in html and "macro_auc" in html
    regression = evaluate([1.0, 2.0, 2.0], [1.0, 2.5, 2.0], task="regression")
    assert "rmse" in render_evaluation_html(regression, title="reg")


def _escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_fairness_gate_is_the_worst_analysis_and_ignores_tiny_groups():
    rng = np.random.default_rng(5)
    n = 1200
    sex = rng.choice(["F", "M"], size=n)
    race = rng.choice(["a", "b"], size=n).astype(object)
    race[:6] = "tiny"
    labels = rng.binomial(1, 0.4, n)
    logits = 1.5 * labels - 0.7 + rng.normal(0.0, 1.0, n) + 0.8 * (sex == "F")
    logits[:6] = 5.0  # the tiny group is always selected
    scores = 1.0 / (1.0 + np.exp(-logits))
    race = race.astype(str)
    fairness = fairness_indicators(
        labels, scores, {"sex": sex, "race": race}, min_group_size=30, num_bootstrap=20
    )
    by_name = {
        a["name"]: a["by_threshold"][0]["disparities"]["demographic_parity_difference"]["value"]
        for a in fairness["analyses"]
    }
    worst, _ = lookup_metric(fairness, "fairness.demographic_parity_difference@0.5")
    assert worst is not None
    assert worst["value"] == max(by_name.values()) == by_name["sex"]
    assert worst["analysis"] == "sex"
    race_only, _ = lookup_metric(fairness, "fairness.demographic_parity_difference[race]@0.5")
    assert race_only is not None and race_only["value"] == by_name["race"] < 0.1
    missing, why = lookup_metric(fairness, "fairness.demographic_parity_difference[age]@0.5")
    assert missing is None and "available analyses" in (why or "")
    # The tiny group is still looked up by its key, and reported as excluded.
    tiny, _ = lookup_metric(fairness, "fairness.selection_rate@0.5", {"race": "tiny"})
    assert tiny is not None and tiny["value"] == 1.0
    result = bless(
        fairness, [MetricThreshold("fairness.demographic_parity_difference[race]@0.5", upper=0.1)]
    )
    assert result["blessed"] is True
