"""What the HTML/PNG reports look like: labels inside their charts, neutral
zero counts, epochs numbered as on the console."""

from __future__ import annotations

import re
from pathlib import Path

from jaxtx.validation.anomalies import Anomaly
from jaxtx.validation.anomalies_report import render_anomalies_html
from jaxtx.validation.stats_report import _svg_top_values


def test_top_value_labels_stay_inside_the_chart() -> None:
    top = [{"value": "Private", "count": 123_456}, {"value": "Self-emp", "count": 99_000}]
    svg = _svg_top_values(top, total=250_000)
    width = float(re.search(r'viewBox="0 0 (\d+)', svg).group(1))
    for x, text in re.findall(r'<text x="([\d.]+)" y="[\d.]+">([^<]+)</text>', svg):
        assert float(x) + 6 * len(text) <= width, text  # ~6 px per character of 10 px text


def test_zero_counts_are_neutral_badges() -> None:
    warn = Anomaly(
        feature="age",
        type="COMPARATOR_L_INFTY_HIGH",
        severity="warn",
        description="drift",
        expected="<= 0.1",
        found="0.3",
        split="train",
    )
    page = render_anomalies_html([warn], title="ExampleValidator: anomalies in train")
    assert '<span class="badge zero">0 fail</span>' in page
    assert '<span class="badge warn">1 warn</span>' in page


def test_training_curves_count_epochs_from_one(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.axes import Axes

    from jaxtx.trainer import History

    drawn: dict[str, list[float]] = {}
    real_plot = Axes.plot

    def spy(self, xs, ys, *a, **k):  # record what each panel draws
        drawn[k.get("label", "?") + str(len(drawn))] = list(xs)
        return real_plot(self, xs, ys, *a, **k)

    monkeypatch.setattr(Axes, "plot", spy)
    recs = [{"epoch": i, "loss": 1.0 / (i + 1), "learning_rate": 0.003} for i in range(3)]
    History(recs).plot(tmp_path / "c.png")
    assert list(drawn.values()) == [[1, 2, 3]]  # loss only: the constant rate gets no panel
    assert (tmp_path / "c.png").stat().st_size > 0
