"""Self-contained HTML report of anomalies (``reports/anomalies.html``)."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable

from jaxtx.validation.anomalies import Anomaly
from jaxtx.validation.schema import FeatureSchema, SchemaSpec

__all__ = ["render_anomalies_html"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; }
.summary { margin: 1rem 0; }
.badge { display: inline-block; padding: .15rem .5rem; border-radius: .3rem; font-weight: 600; }
.badge.fail { background: #c62828; color: #fff; }
.badge.warn { background: #f9a825; color: #222; }
.badge.ok { background: #2e7d32; color: #fff; }
.badge.zero { background: #eceff1; color: #546e7a; font-weight: 400; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.fail td { background: #fdecea; }
tr.fail td.severity { color: #b71c1c; font-weight: 700; }
tr.warn td { background: #fff8e1; }
tr.warn td.severity { color: #8d6e00; font-weight: 600; }
td.type, td.feature { font-family: ui-monospace, monospace; white-space: nowrap; }
.none { padding: 1rem; background: #e8f5e9; border: 1px solid #a5d6a7; border-radius: .3rem; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _schema_summary(feature: FeatureSchema | None) -> str:
    """One line describing a schema feature: type, presence and domain."""
    if feature is None:
        return "not in schema"
    parts = [feature.type, f"min_fraction {feature.presence.min_fraction:g}"]
    domain = feature.domain
    if domain is not None and domain.values is not None:
        shown = ", ".join(domain.values[:8]) + (", ..." if len(domain.values) > 8 else "")
        parts.append(f"values [{shown}]")
    elif domain is not None and domain.is_range:
        low = "-inf" if domain.min is None else f"{domain.min:g}"
        high = "+inf" if domain.max is None else f"{domain.max:g}"
        parts.append(f"range [{low}, {high}]")
    return "; ".join(parts)


def _sort_key(anomaly: Anomaly) -> tuple[int, str, str, str]:
    return (
        0 if anomaly.severity == "fail" else 1,
        anomaly.split or "",
        anomaly.feature,
        anomaly.type,
    )


def _row(anomaly: Anomaly, schema: SchemaSpec | None) -> str:
    severity = anomaly.severity if anomaly.severity in ("warn", "fail") else "warn"
    cells = [
        f'<td class="severity">{_e(anomaly.severity.upper())}</td>',
        f"<td>{_e(anomaly.split or '')}</td>",
        f'<td class="feature">{_e(anomaly.feature)}</td>',
        f'<td class="type">{_e(anomaly.type)}</td>',
        f"<td>{_e(anomaly.description)}</td>",
        f"<td>{_e(anomaly.expected)}</td>",
        f"<td>{_e(anomaly.found)}</td>",
    ]
    if schema is not None:
        cells.append(f"<td>{_e(_schema_summary(schema.get(anomaly.feature)))}</td>")
    return f'<tr class="{severity}">' + "".join(cells) + "</tr>"


def render_anomalies_html(
    anomalies: Iterable[Anomaly], *, title: str, schema: SchemaSpec | None = None
) -> str:
    """Render anomalies as a self-contained HTML page.

    Failing anomalies come first and are highlighted; every string is
    HTML-escaped. With no anomalies the page says so plainly.

    Args:
        anomalies: The anomalies to show.
        title: Page title and heading.
        schema: When given, a column summarizes each feature's schema entry.

    Returns:
        The HTML document.
    """
    items = sorted(anomalies, key=_sort_key)
    counts = Counter(a.severity for a in items)
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n"
    )
    if not items:
        body = (
            '<div class="summary"><span class="badge ok">OK</span></div>\n'
            '<p class="none">No anomalies: the data matches the schema.</p>\n'
        )
        return head + body + "</body>\n</html>\n"
    badges = " ".join(
        # A zero count is neutral grey: red/amber only when there is something to see.
        f'<span class="badge {sev if counts.get(sev) else "zero"}">{counts.get(sev, 0)} {sev}</span>'
        for sev in ("fail", "warn")
    )
    summary = (
        f'<div class="summary">{badges} '
        f"{len(items)} anomalies in {len({a.feature for a in items})} features</div>\n"
    )
    headers = ["Severity", "Split", "Feature", "Type", "Description", "Expected", "Found"]
    if schema is not None:
        headers.append("Schema")
    table = (
        "<table>\n<thead><tr>"
        + "".join(f"<th>{_e(h)}</th>" for h in headers)
        + "</tr></thead>\n<tbody>\n"
        + "\n".join(_row(a, schema) for a in items)
        + "\n</tbody>\n</table>\n"
    )
    return head + summary + table + "</body>\n</html>\n"
