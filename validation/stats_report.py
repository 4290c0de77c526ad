"""Human-readable views of ``jaxtx.statistics/1`` documents.

* :func:`render_statistics_html`: a self-contained HTML page (inline CSS and
  SVG, no external resources) with one section per split and one card per
  feature: a summary table and a histogram (numeric features) or a top-values
  bar chart (string features).
* :func:`plot_feature_histograms_png`: a matplotlib PNG grid of the same
  charts for one split, e.g. to log as an MLflow artifact.
"""

from __future__ import annotations

import html
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ._format import format_number as _fmt

__all__ = ["plot_feature_histograms_png", "render_statistics_html"]

_NUMERIC = frozenset({"INT", "FLOAT", "BOOL"})
_STRINGS = frozenset({"STRING", "BYTES"})
_TOP_BARS = 10
_LABEL_CHARS = 28

_CSS = """
:root { --fg:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff;
        --num:#3b82f6; --str:#10b981; --warn:#b45309; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 4px; padding-top: 8px; border-top: 2px solid var(--line); }
.sub { color: var(--muted); margin: 0 0 16px; }
nav a { margin-right: 12px; color: var(--num); text-decoration: none; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 12px 14px; overflow: hidden; }
.card h3 { font-size: 15px; margin: 0 0 6px; word-break: break-all; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 6px;
         border-radius: 4px; margin-left: 6px; color: #fff; background: var(--muted);
         vertical-align: middle; }
.badge.num { background: var(--num); } .badge.str { background: var(--str); }
.arrow { color: var(--muted); font-size: 12px; font-family: ui-monospace, monospace; }
table.kv { border-collapse: collapse; width: 100%; margin: 6px 0 8px; font-size: 13px; }
table.kv td { padding: 2px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
table.kv td:first-child { color: var(--muted); width: 38%; white-space: nowrap; }
table.kv td.warn { color: var(--warn); font-weight: 600; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 10px system-ui, sans-serif; fill: var(--muted); }
.empty { color: var(--muted); font-style: italic; }
"""


# ------------------------------------------------------------------------ formatting


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _mpl(text: str) -> str:
    """Escape matplotlib's mathtext delimiter."""
    return text.replace("$", r"\$")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ----------------------------------------------------------------------------- SVG


def _svg_histogram(buckets: Sequence[Mapping[str, float]]) -> str:
    """Inline SVG column chart of histogram buckets."""
    if not buckets:
        return '<p class="empty">no finite values</p>'
    width, height, pad_l, pad_b, pad_t = 360, 140, 40, 22, 8
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    peak = max(float(b["count"]) for b in buckets) or 1.0
    bar_w = plot_w / len(buckets)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" '
        'stroke="#cbd2d9"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{_e(_fmt(peak))}</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0</text>',
    ]
    for i, b in enumerate(buckets):
        count = float(b["count"])
        h = plot_h * count / peak
        x = pad_l + i * bar_w
        tip = f"[{_fmt(b['low'])}, {_fmt(b['high'])}]: {_fmt(count)}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{pad_t + plot_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="#3b82f6"><title>{_e(tip)}</title></rect>'
        )
    y_lab = pad_t + plot_h + 14
    parts.append(f'<text x="{pad_l}" y="{y_lab}">{_e(_fmt(buckets[0]["low"]))}</text>')
    parts.append(
        f'<text x="{pad_l + plot_w}" y="{y_lab}" text-anchor="end">'
        f"{_e(_fmt(buckets[-1]['high']))}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _svg_top_values(top: Sequence[Mapping[str, Any]], total: int) -> str:
    """Inline SVG horizontal bar chart of the most frequent values."""
    top = list(top)[:_TOP_BARS]
    if not top:
        return '<p class="empty">no values</p>'
    row_h, label_w, width = 18, 150, 360
    peak = max(int(t["count"]) for t in top) or 1
    values = [
        _fmt(int(t["count"])) + (f" ({_pct(int(t['count']), total)})" if total else "") for t in top
    ]
    # Room right of the longest bar for its value label (10px text: ~6px per
    # character), so the longest bars' labels stay inside the fixed viewBox.
    text_w = 6 * max(len(v) for v in values) + 8
    bar_max = width - label_w - text_w
    height = row_h * len(top) + 4
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img">']
    for i, (t, shown) in enumerate(zip(top, values, strict=True)):
        y = 2 + i * row_h
        value = str(t["value"])
        full = value if value else "(empty string)"
        label = _short(value) if value else "(empty)"
        count = int(t["count"])
        w = max(bar_max * count / peak, 1.0)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{_e(label)}'
            f"<title>{_e(full)}</title></text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" '
            f'fill="#10b981"><title>{_e(full)}: {count:,}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{_e(shown)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------- cards


def _rows(pairs: Sequence[tuple[str, str, bool]]) -> str:
    cells = []
    for key, value, warn in pairs:
        cls = ' class="warn"' if warn else ""
        cells.append(f"<tr><td>{_e(key)}</td><td{cls}>{_e(value)}</td></tr>")
    return '<table class="kv">' + "".join(cells) + "</table>"


def _median(num: Mapping[str, Any]) -> float | None:
    for q in num.get("quantiles") or []:
        if abs(float(q["q"]) - 0.5) < 1e-9:
            return float(q["value"])
    return None


def _rank_error_text(eps: float | None) -> str:
    """How exact the quantiles and histogram counts are (``num.rank_error``)."""
    if eps is None:
        return "-"
    if eps == 0:
        return "exact"
    return f"rank error \u2264 {100 * eps:.2g}% of the count (deterministic bound)"


def _numeric_card(feature: Mapping[str, Any], num_rows: int) -> str:
    num = feature.get("num") or {}
    present, missing = int(feature["num_present"]), int(feature["num_missing"])
    nan, pinf, ninf = num.get("num_nan", 0), num.get("num_pos_inf", 0), num.get("num_neg_inf", 0)
    rows = [
        ("count", _fmt(present), False),
        ("missing", f"{_fmt(missing)} ({_pct(missing, num_rows)})", missing > 0),
        ("mean", _fmt(num.get("mean")), False),
        ("std", _fmt(num.get("std")), False),
        ("min", _fmt(num.get("min")), False),
        ("median", _fmt(_median(num)), False),
        ("max", _fmt(num.get("max")), False),
        (
            "zeros",
            f"{_fmt(num.get('num_zeros', 0))} ({_pct(num.get('num_zeros', 0), present)})",
            False,
        ),
        (
            "NaN / +inf / -inf",
            f"{_fmt(nan)} / {_fmt(pinf)} / {_fmt(ninf)}",
            bool(nan or pinf or ninf),
        ),
        ("quantiles, histogram", _rank_error_text(num.get("rank_error")), False),
    ]
    chart = _svg_histogram((num.get("histogram") or {}).get("buckets") or [])
    return _rows(rows) + chart


def _string_card(feature: Mapping[str, Any], num_rows: int) -> str:
    block = feature.get("str") or {}
    present, missing = int(feature["num_present"]), int(feature["num_missing"])
    unique = _fmt(block.get("num_unique"))
    if not block.get("num_unique_is_exact", True):
        lg_k = ((feature.get("sketches") or {}).get("hll") or {}).get("lg_k")
        spread = f" (\u00b1{104 / 2 ** (lg_k / 2):.2g}% std. error)" if lg_k else ""
        unique = "\u2248" + unique + spread
    top = block.get("top_k") or []
    top_text = ", ".join(
        f"{_short(str(t['value']), 20) or '(empty)'} ({_fmt(t['count'])})" for t in top[:3]
    )
    empty = int(block.get("num_empty", 0))
    rows = [
        ("count", _fmt(present), False),
        ("missing", f"{_fmt(missing)} ({_pct(missing, num_rows)})", missing > 0),
        ("unique", unique, False),
        ("avg length", _fmt(block.get("avg_length")), False),
        ("empty", f"{_fmt(empty)} ({_pct(empty, present)})", empty > 0),
        ("top values", top_text or "-", False),
        (
            "value counts",
            "exact"
            if block.get("value_counts_complete", True)
            else "frequent values, counts are lower bounds",
            False,
        ),
    ]
    return _rows(rows) + _svg_top_values(top, present)


def _other_card(feature: Mapping[str, Any], num_rows: int) -> str:
    missing = int(feature["num_missing"])
    return _rows(
        [
            ("count", _fmt(int(feature["num_present"])), False),
            ("missing", f"{_fmt(missing)} ({_pct(missing, num_rows)})", missing > 0),
        ]
    )


def _feature_card(name: str, feature: Mapping[str, Any], num_rows: int) -> str:
    kind = str(feature.get("type", "OTHER"))
    if kind in _NUMERIC and feature.get("num") is not None:
        body, badge = _numeric_card(feature, num_rows), "num"
    elif kind in _STRINGS and feature.get("str") is not None:
        body, badge = _string_card(feature, num_rows), "str"
    else:
        body, badge = _other_card(feature, num_rows), ""
    return (
        f'<div class="card"><h3>{_e(name)}<span class="badge {badge}">{_e(kind)}</span></h3>'
        f'<div class="arrow">{_e(feature.get("arrow_type", ""))}</div>{body}</div>'
    )


def _split_section(index: int, split: str, stats: Mapping[str, Any]) -> str:
    features = stats.get("features") or {}
    num_rows = int(stats.get("num_rows", 0))
    cards = "".join(_feature_card(n, f, num_rows) for n, f in features.items())
    if not cards:
        cards = '<p class="empty">no features</p>'
    return (
        f'<section id="split-{index}"><h2>Split: {_e(split)}</h2>'
        f'<p class="sub">{_fmt(num_rows)} rows, {len(features)} features</p>'
        f'<div class="grid">{cards}</div></section>'
    )


def render_statistics_html(stats_by_split: Mapping[str, Mapping[str, Any]], *, title: str) -> str:
    """Render statistics of one or more splits as a self-contained HTML page.

    Args:
      stats_by_split: split name -> ``jaxtx.statistics/1`` document.
      title: page title.

    Returns:
      The HTML document (inline CSS and SVG; no external resources).  Every
      feature name and value is HTML-escaped.
    """
    nav = " ".join(
        f'<a href="#split-{i}">{_e(split)}</a>' for i, split in enumerate(stats_by_split)
    )
    sections = "".join(
        _split_section(i, split, stats) for i, (split, stats) in enumerate(stats_by_split.items())
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><p class="sub">{len(stats_by_split)} split(s)</p>'
        f"<nav>{nav}</nav>{sections}</body></html>\n"
    )


# ---------------------------------------------------------------------------- PNG


def plot_feature_histograms_png(
    stats: Mapping[str, Any], path: str, *, max_features: int = 48, columns: int = 4
) -> str:
    """Write a PNG grid with one chart per feature of one split.

    Numeric features get their equi-width histogram, string features a
    horizontal bar chart of their top values; other features are skipped.

    Args:
      stats: a ``jaxtx.statistics/1`` document.
      path: destination PNG file; parent directories are created.
      max_features: at most this many features are drawn (in document order).
      columns: panels per row.

    Returns:
      ``path``.
    """
    from matplotlib.figure import Figure  # rendered by the Agg canvas; pyplot is not used

    features = [
        (name, f)
        for name, f in (stats.get("features") or {}).items()
        if (f.get("type") in _NUMERIC and f.get("num"))
        or (f.get("type") in _STRINGS and f.get("str"))
    ][:max_features]
    n = max(len(features), 1)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    width, height = 4.0 * cols, 2.8 * rows
    fig = Figure(figsize=(width, height), dpi=100)
    # Fixed margins in inches (room for an 18-character top-value label and a
    # title per panel) rather than a constrained layout, which measures every
    # tick label of every panel and took most of the rendering time.
    fig.subplots_adjust(
        left=1.0 / width,
        right=1 - 0.15 / width,
        bottom=0.35 / height,
        top=1 - 0.3 / height,
        wspace=0.32,
        hspace=0.35 * 2.8 / 2.45,
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (name, feature) in zip(axes.flat, features, strict=False):
        ax.set_visible(True)
        ax.set_title(_mpl(_short(name, 40)), fontsize=9)
        ax.tick_params(labelsize=7)
        if feature["type"] in _NUMERIC:
            buckets = (feature["num"].get("histogram") or {}).get("buckets") or []
            if buckets:
                lows = [float(b["low"]) for b in buckets]
                widths = [float(b["high"]) - float(b["low"]) for b in buckets]
                if all(w == 0 for w in widths):
                    widths = [1.0] * len(widths)
                    lows = [lo - 0.5 for lo in lows]
                counts = [float(b["count"]) for b in buckets]
                ax.bar(lows, counts, width=widths, align="edge", color="#3b82f6", edgecolor="white")
            else:
                ax.text(
                    0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes
                )
        else:
            top = (feature["str"].get("top_k") or [])[:_TOP_BARS]
            labels = [_mpl(_short(str(t["value"]), 18)) or "(empty)" for t in top][::-1]
            counts = [float(t["count"]) for t in top][::-1]
            ax.barh(range(len(counts)), counts, color="#10b981")
            ax.set_yticks(range(len(counts)), labels)
    if not features:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "no numeric or string features", ha="center", va="center")
        axes.flat[0].set_axis_off()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, format="png")
    return path
