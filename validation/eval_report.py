"""Human-readable views of evaluation, fairness and blessing documents.

* :func:`plot_roc`, :func:`plot_calibration`, :func:`plot_fairness` and
  :func:`plot_attributions` write
  matplotlib PNGs (Agg canvas through :class:`matplotlib.figure.Figure`; no
  pyplot state), e.g. to log as MLflow artifacts.
* :func:`render_evaluation_html` renders one self-contained HTML page: a
  PASS/FAIL banner listing every check's reason, the metrics of every slice
  with their confidence intervals, skipped slices, confusion matrices, the
  fairness indicators, the feature attributions, and the given PNGs embedded
  as base64 data URIs.
"""

from __future__ import annotations

import base64
import html
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from jaxtx.validation.fairness import DISPARITY_METRICS, GROUP_METRICS

from ._format import format_number as _num

__all__ = [
    "plot_attributions",
    "plot_calibration",
    "plot_fairness",
    "plot_roc",
    "render_evaluation_html",
]

_MAX_CURVES = 8
_FAIRNESS_PLOT_METRICS = ("tpr", "fpr", "fnr", "tnr", "selection_rate", "precision")

_CSS = """
:root { --fg:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff;
        --pass:#2e7d32; --fail:#c62828; --none:#616e7c; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.banner { border-radius: 8px; padding: 14px 18px; color: #fff; margin: 12px 0 20px; }
.banner .verdict { font-size: 24px; font-weight: 700; letter-spacing: .05em; }
.banner.pass { background: var(--pass); } .banner.fail { background: var(--fail); }
.banner.none { background: var(--none); }
.banner ul { margin: 8px 0 0; padding-left: 20px; }
.banner li.ok { opacity: .85; }
table { border-collapse: collapse; background: var(--card); font-size: 13px; margin: 4px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-family: ui-monospace, monospace; white-space: nowrap; }
td.name { font-family: ui-monospace, monospace; }
tr.failed td { background: #fdecea; } tr.passed td { background: #e8f5e9; }
.undefined { color: var(--muted); font-style: italic; }
.warning { color: #8a4b00; }
details { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          padding: 8px 12px; margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: stretch; margin: 8px 0; }
figure { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
         padding: 8px; margin: 0; max-width: 100%; display: flex; flex-direction: column; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.notes { color: var(--muted); font-size: 12px; }
"""


# ---------------------------------------------------------------------- helpers


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _mpl(text: str) -> str:
    """Escape matplotlib's mathtext delimiter."""
    return text.replace("$", r"\$")


def _ci(entry: Mapping[str, Any]) -> str:
    lower, upper = entry.get("lower"), entry.get("upper")
    if lower is None or upper is None:
        return "-"
    return f"[{_num(lower)}, {_num(upper)}]"


def _save(fig: Any, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, format="png")
    return path


def _pick_slices(
    evaluation: Mapping[str, Any], names: Sequence[str] | None
) -> list[Mapping[str, Any]]:
    slices = list(evaluation.get("slices", []))
    if names is None:
        return slices[:_MAX_CURVES]
    by_name = {s["name"]: s for s in slices}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"slices {missing} are not in the evaluation; available: {list(by_name)}")
    return [by_name[n] for n in names]


def _require_binary(evaluation: Mapping[str, Any], what: str) -> None:
    if evaluation.get("task") != "binary_classification":
        raise ValueError(
            f"{what} needs a binary_classification evaluation, got task {evaluation.get('task')!r}."
        )


# ------------------------------------------------------------------------ plots

#: Inches of the ROC and the calibration plot: the same, so their report cards align.
_CURVE_FIGSIZE = (5.5, 6.0)


def plot_roc(
    evaluation: Mapping[str, Any], path: str, *, slices: Sequence[str] | None = None
) -> str:
    """Write a PNG of the ROC curves of a binary evaluation, one curve per slice.

    Args:
      evaluation: a binary ``jaxtx.evaluation/1`` document.
      path: destination PNG; parent directories are created.
      slices: slice names to draw (default: the first 8 evaluated slices).

    Returns:
      ``path``.
    """
    from matplotlib.figure import Figure  # rendered by the Agg canvas; pyplot is not used

    _require_binary(evaluation, "plot_roc")
    fig = Figure(figsize=_CURVE_FIGSIZE, dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#9aa5b1", linewidth=1, label="chance")
    for entry in _pick_slices(evaluation, slices):
        roc = entry["curves"].get("roc") or {}
        auc = entry["metrics"].get("auc", {})
        if auc.get("value") is None or not roc.get("fpr"):
            continue
        label = f"{entry['name']} (AUC {_num(auc['value'])} {_ci(auc)})"
        ax.plot(roc["fpr"], roc["tpr"], linewidth=1.5, label=_mpl(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_calibration(
    evaluation: Mapping[str, Any], path: str, *, slices: Sequence[str] | None = None
) -> str:
    """Write a PNG reliability diagram (mean label vs mean prediction per bin) per slice.

    Args:
      evaluation: a binary ``jaxtx.evaluation/1`` document.
      path: destination PNG; parent directories are created.
      slices: slice names to draw (default: the first 8 evaluated slices).

    Returns:
      ``path``.
    """
    from matplotlib.figure import Figure  # rendered by the Agg canvas; pyplot is not used

    _require_binary(evaluation, "plot_calibration")
    chosen = _pick_slices(evaluation, slices)
    fig = Figure(figsize=_CURVE_FIGSIZE, dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="#9aa5b1", linewidth=1, label="perfect")
    for entry in chosen:
        bins = [b for b in entry["curves"].get("reliability", []) if b["count"]]
        calibration = entry["metrics"].get("calibration", {})
        label = f"{entry['name']} (calibration {_num(calibration.get('value'))})"
        top.plot(
            [b["mean_prediction"] for b in bins],
            [b["mean_label"] for b in bins],
            marker="o",
            markersize=3,
            linewidth=1.2,
            label=_mpl(label),
        )
    top.set_ylim(0, 1.01)
    top.set_ylabel("mean label (fraction positive)")
    top.set_title("Calibration (reliability diagram)")
    top.legend(loc="upper left", fontsize=7)
    if chosen:
        bins = chosen[0]["curves"].get("reliability", [])
        bottom.bar(
            [(b["lower"] + b["upper"]) / 2 for b in bins],
            [b["count"] for b in bins],
            width=[b["upper"] - b["lower"] for b in bins],
            color="#3b82f6",
            edgecolor="white",
        )
        bottom.set_ylabel(_mpl(f"count ({chosen[0]['name']})"), fontsize=8)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("mean prediction")
    return _save(fig, path)


def _bar_errors(entries: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[list[float]]]:
    """Bar heights and asymmetric error bars (0 where there is no interval)."""
    heights, below, above = [], [], []
    for entry in entries:
        value = entry.get("value")
        height = float(value) if value is not None else 0.0
        heights.append(height)
        lower, upper = entry.get("lower"), entry.get("upper")
        if value is None or lower is None or upper is None:
            below.append(0.0)
            above.append(0.0)
        else:
            below.append(max(0.0, height - float(lower)))
            above.append(max(0.0, float(upper) - height))
    return heights, [below, above]


def plot_fairness(
    fairness: Mapping[str, Any],
    path: str,
    *,
    metrics: Sequence[str] = _FAIRNESS_PLOT_METRICS,
) -> str:
    """Write a PNG of per-group bar charts with 95% CI error bars, one panel per metric.

    Each panel has one bar per group, grouped by threshold when there are several.

    Args:
      fairness: a ``jaxtx.fairness/2`` document.
      path: destination PNG; parent directories are created.
      metrics: group metrics to draw, one panel each.

    Returns:
      ``path``.
    """
    from matplotlib.figure import Figure  # rendered by the Agg canvas; pyplot is not used

    analyses = list(fairness.get("analyses", []))
    thresholds = list(fairness.get("thresholds", []))
    groups = [g["name"] for a in analyses for g in a["groups"]]
    excluded = [not g["included"] for a in analyses for g in a["groups"]]
    cols = min(3, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / cols) if metrics else 1
    panel_width = min(10.0, max(3.5, 0.3 * len(groups) * max(1, len(thresholds)) + 1.5))
    fig = Figure(figsize=(panel_width * cols, 3.4 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    width = 0.8 / max(1, len(thresholds))
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for i, threshold in enumerate(thresholds):
            entries = [
                g["metrics"][metric]
                for a in analyses
                for g in next(b for b in a["by_threshold"] if b["threshold"] == threshold)[
                    "by_group"
                ]
            ]
            heights, errors = _bar_errors(entries)
            positions = [x - 0.4 + width * (i + 0.5) for x in range(len(entries))]
            bars = ax.bar(
                positions,
                heights,
                width=width * 0.95,
                yerr=errors,
                capsize=3,
                label=f"threshold {threshold:g}",
            )
            for bar, small in zip(bars, excluded, strict=True):
                if small:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_title(metric)
        labels = [
            _mpl(g + (" (excluded)" if x else "")) for g, x in zip(groups, excluded, strict=True)
        ]
        ax.set_xticks(range(len(groups)), labels, rotation=30, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=7)
    if len(thresholds) > 1:  # one legend below the panels, never over the bars
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(thresholds), fontsize=7)
    fig.suptitle("Fairness indicators by group (95% CI; hatched: too small, not gated)")
    return _save(fig, path)


def plot_attributions(attributions: Mapping[str, Any], path: str, *, max_slices: int = 6) -> str:
    """Write a PNG of mean |attribution| per feature: overall and up to ``max_slices`` slices.

    Args:
      attributions: a ``jaxtx.attributions/1`` document.
      path: destination PNG; parent directories are created.
      max_slices: most slices drawn (the overall slice first).

    Returns:
      ``path``.
    """
    from matplotlib.figure import Figure  # rendered by the Agg canvas; pyplot is not used

    slices = list(attributions.get("slices", []))[:max_slices]
    if not slices:
        raise ValueError("the attributions document has no slices to plot")
    overall = slices[0]["mean_abs_attribution"]
    names = sorted(overall, key=lambda f: overall[f])  # largest at the top
    height = 0.8 / len(slices)
    fig = Figure(figsize=(7.0, 1.2 + 0.35 * len(names) * max(1, len(slices) / 2)), dpi=100)
    ax = fig.subplots()
    for i, entry in enumerate(slices):
        values = [entry["mean_abs_attribution"].get(f, 0.0) for f in names]
        positions = [y - 0.4 + height * (i + 0.5) for y in range(len(names))]
        ax.barh(positions, values, height=height * 0.95, label=_mpl(entry["name"]))
    methods = {f["name"]: f["method"] for f in attributions.get("features", [])}
    labels = [
        _mpl(f"{f} ({'IG' if methods.get(f) == 'integrated_gradients' else 'occl.'})")
        for f in names
    ]
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.set_xlabel(_mpl(f"mean |attribution| to {attributions.get('output', 'score')}"))
    if len(slices) > 1:
        ax.legend(fontsize=7)
    fig.suptitle("Feature attributions (IG: integrated gradients; occl.: occlusion)")
    fig.set_layout_engine("constrained")
    return _save(fig, path)


# ------------------------------------------------------------------------- HTML


def _banner(blessing: Mapping[str, Any] | None) -> str:
    if blessing is None:
        return (
            '<div class="banner none"><div class="verdict">NOT CHECKED</div>'
            "<div>No blessing thresholds were evaluated.</div></div>"
        )
    blessed = bool(blessing.get("blessed"))
    checks = list(blessing.get("checks", []))
    ordered = [c for c in checks if not c["passed"]] + [c for c in checks if c["passed"]]
    items = "".join(
        f'<li class="{"ok" if c["passed"] else "bad"}">'
        f"{'PASS' if c['passed'] else 'FAIL'}: {_e(c['reason'])}</li>"
        for c in ordered
    )
    failed = sum(1 for c in checks if not c["passed"])
    summary = (
        f"{len(checks)} check(s), all passed: model blessed"
        if blessed
        else f"{failed} of {len(checks)} check(s) failed: model not blessed"
    )
    cls, verdict = ("pass", "PASS") if blessed else ("fail", "FAIL")
    return (
        f'<div class="banner {cls}"><div class="verdict">{verdict}</div>'
        f"<div>{_e(summary)}</div><ul>{items}</ul></div>"
    )


def _checks_table(blessing: Mapping[str, Any]) -> str:
    rows = []
    for c in blessing.get("checks", []):
        slice_text = ", ".join(f"{k}={v}" for k, v in (c.get("slice") or {}).items()) or "overall"
        rows.append(
            f'<tr class="{"passed" if c["passed"] else "failed"}">'
            f'<td class="name">{_e(c["metric"])}</td><td>{_e(slice_text)}</td>'
            f"<td>{_e(c.get('kind', ''))}</td>"
            f'<td class="num">{_e(_num(c.get("value")))}</td>'
            f'<td class="num">{_e(_num(c.get("baseline")))}</td>'
            f'<td class="num">{_e(_num(c.get("bound")))}</td>'
            f"<td>{'PASS' if c['passed'] else 'FAIL'}</td><td>{_e(c['reason'])}</td></tr>"
        )
    if not rows:
        return "<p>No thresholds were configured.</p>"
    return (
        "<table><tr><th>metric</th><th>slice</th><th>kind</th><th>value</th>"
        "<th>baseline</th><th>bound</th><th>result</th><th>reason</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, entry in metrics.items():
        if entry.get("value") is None:
            value = f'<span class="undefined">undefined: {_e(entry.get("reason"))}</span>'
            rows.append(f'<tr><td class="name">{_e(name)}</td><td colspan="2">{value}</td></tr>')
        else:
            rows.append(
                f'<tr><td class="name">{_e(name)}</td>'
                f'<td class="num">{_e(_num(entry["value"]))}</td>'
                f'<td class="num">{_e(_ci(entry))}</td></tr>'
            )
    return (
        "<table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>" + "".join(rows) + "</table>"
    )


def _binary_confusion(curves: Mapping[str, Any]) -> str:
    parts = []
    for m in curves.get("confusion_matrices", []):
        parts.append(
            f"<table><tr><th>threshold {_e(_num(m['threshold']))}</th>"
            "<th>predicted 0</th><th>predicted 1</th></tr>"
            f'<tr><th>label 0</th><td class="num">{m["tn"]:,}</td>'
            f'<td class="num">{m["fp"]:,}</td></tr>'
            f'<tr><th>label 1</th><td class="num">{m["fn"]:,}</td>'
            f'<td class="num">{m["tp"]:,}</td></tr></table>'
        )
    return "".join(parts)


def _multiclass_confusion(curves: Mapping[str, Any]) -> str:
    matrix = curves.get("confusion_matrix")
    if not matrix:
        return ""
    labels = matrix["labels"]
    head = "".join(f"<th>pred {_e(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><th>true {_e(label)}</th>"
        + "".join(f'<td class="num">{count:,}</td>' for count in row)
        + "</tr>"
        for label, row in zip(labels, matrix["matrix"], strict=True)
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _slice_section(entry: Mapping[str, Any], *, open_: bool) -> str:
    curves = entry.get("curves") or {}
    extra = _binary_confusion(curves) + _multiclass_confusion(curves)
    return (
        f"<details{' open' if open_ else ''}><summary>{_e(entry['name'])} "
        f"({entry['size']:,} examples)</summary>"
        f"{_metrics_table(entry['metrics'])}{extra}</details>"
    )


def _skipped_table(skipped: Sequence[Mapping[str, Any]]) -> str:
    if not skipped:
        return ""
    rows = "".join(
        f'<tr><td>{_e(s["name"])}</td><td class="num">{s["size"]:,}</td>'
        f"<td>{_e(s['reason'])}</td></tr>"
        for s in skipped
    )
    return (
        "<h3>Skipped slices</h3><table><tr><th>slice</th><th>size</th><th>reason</th></tr>"
        f"{rows}</table>"
    )


def _evaluation_section(evaluation: Mapping[str, Any]) -> str:
    slices = evaluation.get("slices", [])
    body = "".join(_slice_section(s, open_=(i == 0)) for i, s in enumerate(slices))
    return (
        "<h2>Metrics</h2>"
        f'<p class="sub">task {_e(evaluation.get("task"))}, '
        f"{_num(evaluation.get('num_examples'))} examples, "
        f"{_num(evaluation.get('num_bootstrap'))} bootstrap resamples (seed "
        f"{_e(evaluation.get('seed'))}), min slice size "
        f"{_num(evaluation.get('min_slice_size'))}</p>"
        f"{body}{_skipped_table(evaluation.get('skipped_slices', []))}"
    )


def _cell(entry: Mapping[str, Any]) -> str:
    if entry.get("value") is None:
        return f'<td class="undefined">{_e(entry.get("reason", "undefined"))}</td>'
    return f'<td class="num">{_e(_num(entry["value"]))} {_e(_ci(entry))}</td>'


def _fairness_block(block: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{_e(m)}</th>" for m in GROUP_METRICS)
    rows = "".join(
        f"<tr><td>{_e(g['name'])}{'' if g.get('included', True) else ' <em>(excluded)</em>'}"
        "</td>" + "".join(_cell(g["metrics"][m]) for m in GROUP_METRICS) + "</tr>"
        for g in block["by_group"]
    )
    overall = (
        "<tr><td><em>all examples</em></td>"
        + "".join(_cell(block["overall"][m]) for m in GROUP_METRICS)
        + "</tr>"
    )
    disparities = "".join(
        f'<tr><td class="name">{_e(m)}</td>{_cell(block["disparities"][m])}'
        f"<td>{_e(block['disparities'][m].get('method') or '')}</td></tr>"
        for m in DISPARITY_METRICS
    )
    return (
        f"<h4>Threshold {_e(_num(block['threshold']))}</h4>"
        f"<table><tr><th>group</th>{head}</tr>{rows}{overall}</table>"
        "<table><tr><th>disparity (included groups)</th><th>value [95% CI]</th>"
        f"<th>interval</th></tr>{disparities}</table>"
    )


def _fairness_section(fairness: Mapping[str, Any]) -> str:
    parts = [
        "<h2>Fairness indicators</h2>",
        f'<p class="sub">sensitive features: {_e(", ".join(fairness.get("sensitive_features", [])))}'
        f"; min group size {_e(_num(fairness.get('min_group_size')))}; value [95% CI]; "
        "intervals: "
        + _e("; ".join(f"{k}: {v}" for k, v in fairness.get("interval_methods", {}).items()))
        + "</p>",
    ]
    for warning in fairness.get("warnings", []):
        parts.append(f'<p class="warning"><strong>Warning:</strong> {_e(warning)}</p>')
    for analysis in fairness.get("analyses", []):
        parts.append(f"<h3>By {_e(analysis['name'])}</h3>")
        parts.extend(_fairness_block(block) for block in analysis["by_threshold"])
    return "".join(parts)


def _attributions_section(attributions: Mapping[str, Any]) -> str:
    slices = list(attributions.get("slices", []))
    if not slices:
        return ""
    overall = slices[0]["mean_abs_attribution"]
    names = sorted(overall, key=lambda f: -overall[f])
    methods = {f["name"]: f for f in attributions.get("features", [])}
    head = "".join(f"<th>{_e(s['name'])} ({_num(s['size'])})</th>" for s in slices)
    rows = "".join(
        f"<tr><td>{_e(f)}</td><td>{_e(methods.get(f, {}).get('method', ''))}</td>"
        f"<td>{_e(methods.get(f, {}).get('baseline'))}</td>"
        + "".join(
            f'<td class="num">{_e(_num(s["mean_abs_attribution"].get(f)))}</td>' for s in slices
        )
        + "</tr>"
        for f in names
    )
    gap = attributions.get("completeness_gap")
    return (
        "<h2>Feature attributions</h2>"
        f'<p class="sub">mean |attribution| to {_e(attributions.get("output"))} over '
        f"{_num(attributions.get('num_rows'))} rows; integrated gradients ("
        f"{_num(attributions.get('steps'))} steps, mean completeness gap "
        f"{_e(_num(gap) if gap is not None else '-')}) for float inputs, occlusion to the "
        "baseline for the others</p>"
        f"<table><tr><th>feature</th><th>method</th><th>baseline</th>{head}</tr>{rows}</table>"
    )


def _quantization_section(report: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><td>{_e(name)}</td><td class="num">{_e(_num(m["float"]))}</td>'
        f'<td class="num">{_e(_num(m["quantized"]))}</td>'
        f'<td class="num">{_e(_num(m["change"]) if m["change"] is not None else "-")}</td></tr>'
        for name, m in report.get("metrics", {}).items()
    )
    sizes = report.get("size_bytes", {})
    return (
        "<h2>Int8 variant</h2>"
        f'<p class="sub">size on disk {_e(_num(sizes.get("float")))} bytes (float) vs '
        f"{_e(_num(sizes.get('quantized')))} bytes (int8); change = int8 - float</p>"
        f"<table><tr><th>metric</th><th>float</th><th>int8</th><th>change</th></tr>{rows}</table>"
    )


def _images_section(images: Mapping[str, str]) -> str:
    figures = []
    for name, path in images.items():
        with open(path, "rb") as handle:
            data = base64.b64encode(handle.read()).decode("ascii")
        figures.append(
            f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(name)}</figcaption></figure>"
        )
    # One row of cards of equal height (ROC and calibration are drawn the same size).
    return f'<h2>Plots</h2><div class="plots">{"".join(figures)}</div>' if figures else ""


def render_evaluation_html(
    evaluation: Mapping[str, Any],
    fairness: Mapping[str, Any] | None = None,
    blessing: Mapping[str, Any] | None = None,
    *,
    title: str,
    images: Mapping[str, str] | None = None,
    attributions: Mapping[str, Any] | None = None,
) -> str:
    """Render a self-contained HTML report of an evaluation.

    Args:
      evaluation: a ``jaxtx.evaluation/1`` document.
      fairness: a ``jaxtx.fairness/2`` document, or None (then
        ``evaluation["fairness"]`` is used when present).
      blessing: the output of :func:`jaxtx.validation.blessing.bless`; its
        verdict and every check's reason appear in the banner.
      title: page title.
      images: caption -> PNG path, embedded as base64 data URIs.
      attributions: a ``jaxtx.attributions/1`` document, shown as a table.

    Returns:
      The HTML page (no external resources; all text escaped).
    """
    if fairness is None:
        fairness = evaluation.get("fairness")
    sections = [
        _banner(blessing),
        _images_section(images or {}),
        _evaluation_section(evaluation),
    ]
    if fairness is not None:
        sections.append(_fairness_section(fairness))
    if attributions is not None:
        sections.append(_attributions_section(attributions))
    if evaluation.get("quantization") is not None:
        sections.append(_quantization_section(evaluation["quantization"]))
    if blessing is not None:
        sections.append("<h2>Blessing checks</h2>" + _checks_table(blessing))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>" + "".join(sections) + "</body></html>\n"
    )
