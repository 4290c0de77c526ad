"""What each node of a run came to: one :class:`Outcome` per node, and the run summary.

An outcome is a short status, a one-line reason and headline metrics, made
from the node's committed outputs (their properties and small JSON files) and
returned metrics, so a cached result gives the same outcome as the execution
that made it. A component may supply its own with ``@component(summary=...)``
(a callable ``(outputs, metrics) -> Outcome``); otherwise the outcome is made
from the output types below.

==================  ========================================================
status              meaning
==================  ========================================================
``ok``              nothing to say beyond the line
``warn``            finished, with something to look at (rejected rows, warnings)
``stopped``         the component's verdict stopped the pipeline
``not blessed``     the model failed a check (the line names it)
``not pushed``      nothing was pushed (the line says why)
==================  ========================================================

MLflow tags set from outcomes, on the node's run and on the parent run:
``jaxtx.status`` (the node's run only), ``jaxtx.blessed`` (``true``/``false``),
``jaxtx.blessing_reason``, ``jaxtx.pushed_version`` (a version number or
``none``), ``jaxtx.push_reason`` and ``jaxtx.stop_reason``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jaxtx.components import Artifact, ExecutionResult, Outcome

__all__ = ["Outcome", "format_summary", "outcome_of"]

#: Headline evaluation metrics shown (in this order) when present.
_HEADLINE_EVAL = ("auc", "accuracy", "log_loss", "rmse", "mae", "pr_auc")


def outcome_of(component: Any, result: ExecutionResult) -> Outcome:
    """The outcome of one node's result: the component's own ``summary`` hook if it
    has one, else one made from its output types; a verdict makes it ``stopped``."""
    hook = getattr(component, "summary", None)
    out = hook(result.outputs, result.metrics) if callable(hook) else None
    if out is None:
        out = _from_outputs(result.outputs, result.metrics)
    if result.verdict:
        return Outcome(
            "stopped",
            f"stopped: {result.verdict}",
            {**out.tags, "jaxtx.stop_reason": result.verdict},
            out.headline,
        )
    return out


def _from_outputs(outputs: Mapping[str, Artifact], metrics: Mapping[str, float]) -> Outcome:
    parts: list[Outcome] = []
    for art in outputs.values():
        fn = _BY_TYPE.get(art.TYPE_NAME)
        if fn is not None:
            parts.append(fn(art))
    if not parts:
        shown = ", ".join(f"{k}={_num(v)}" for k, v in list(metrics.items())[:4])
        return Outcome("ok", shown or "done", {}, {})
    status = next((p.status for p in parts if p.status != "ok"), "ok")
    tags: dict[str, str] = {}
    headline: dict[str, float] = {}
    for p in parts:
        tags.update(p.tags)
        headline.update(p.headline)
    return Outcome(status, "; ".join(p.line for p in parts if p.line), tags, headline)


def _num(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def _examples(a: Artifact) -> Outcome:
    p = a.properties
    counts = p.get("split_counts") or {}
    splits = ", ".join(f"{k} {v}" for k, v in counts.items())
    if "num_read" in p:
        rejected = int(p.get("num_rejected") or 0)
        line = f"{p['num_read']} rows read, {p.get('num_written')} written, {rejected} rejected"
        line += f" ({splits})" if splits else ""
        if p.get("span") is not None:
            line += f", span {p['span']}"
        return Outcome("warn" if rejected else "ok", line, {}, {})
    return Outcome("ok", f"rows {splits}" if splits else "", {}, {})


def _statistics(a: Artifact) -> Outcome:
    rows = a.properties.get("num_rows") or {}
    return Outcome("ok", "statistics of " + ", ".join(f"{k} {v}" for k, v in rows.items()), {}, {})


def _schema(a: Artifact) -> Outcome:
    return Outcome("ok", f"{len(a.properties.get('features') or [])} features", {}, {})


def _anomalies(a: Artifact) -> Outcome:
    p = a.properties
    n_fail, n_warn = int(p.get("num_failing") or 0), int(p.get("num_warnings") or 0)
    if not (n_fail or n_warn):
        return Outcome("ok", "no anomalies", {}, {"anomalies": 0.0})
    top = []
    try:
        found = a.read_json("anomalies.json")
        found = sorted(found, key=lambda x: x.get("severity") != "fail")
        top = [f"{x.get('feature')}: {x.get('type')}" for x in found[:3]]
    except Exception:  # the counts alone still say enough
        top = list(p.get("types") or [])[:3]
    line = f"{n_fail} failing, {n_warn} warnings" + (f" (top: {'; '.join(top)})" if top else "")
    return Outcome(
        "warn", line, {}, {"anomalies_failing": float(n_fail), "anomalies_warnings": float(n_warn)}
    )


def _model(a: Artifact) -> Outcome:
    final = a.properties.get("final_metrics") or {}
    shown = {k: v for k, v in final.items() if k in ("loss", "eval_loss", "auc", "eval_auc")}
    shown = shown or dict(list(final.items())[:3])
    line = f"trained {a.properties.get('epochs_run', '?')} epochs: " + ", ".join(
        f"{k} {_num(v)}" for k, v in shown.items()
    )
    return Outcome("ok", line, {}, {})


def _evaluation(a: Artifact) -> Outcome:
    metrics = a.properties.get("metrics") or {}
    cis: dict[str, Any] = {}
    try:
        for s in a.read_json("evaluation.json").get("slices", []):
            if not s.get("spec"):
                cis = s.get("metrics", {})
                break
    except Exception:  # no CIs to show: values only
        cis = {}
    shown = []
    headline: dict[str, float] = {}
    for k in _HEADLINE_EVAL:
        v = metrics.get(k)
        if not isinstance(v, int | float) or not math.isfinite(v):
            continue
        headline[k] = float(v)
        ci = cis.get(k) if isinstance(cis.get(k), Mapping) else {}
        lo, hi = ci.get("lower"), ci.get("upper")
        shown.append(f"{k} {_num(v)}" + (f" [{_num(lo)}, {_num(hi)}]" if lo is not None else ""))
    return Outcome("ok", ", ".join(shown[:3]), {}, headline)


def _blessing(a: Artifact) -> Outcome:
    blessed = bool(a.properties.get("blessed"))
    failed = list(a.properties.get("failed") or [])
    reason = "all checks passed" if blessed else (failed[0] if failed else "a check failed")
    tags = {"jaxtx.blessed": str(blessed).lower(), "jaxtx.blessing_reason": reason}
    line = f"blessed ({reason})" if blessed else f"NOT blessed: {reason}"
    return Outcome("ok" if blessed else "not blessed", line, tags, {"blessed": float(blessed)})


def _infra(a: Artifact) -> Outcome:
    blessed = bool(a.properties.get("blessed"))
    return Outcome(
        "ok" if blessed else "not blessed",
        "serves correctly" if blessed else "NOT infra-blessed: the model did not serve",
        {},
        {},
    )


def _pushed(a: Artifact) -> Outcome:
    p = a.properties
    if p.get("pushed"):
        v = p.get("version")
        line = f"pushed {p.get('name')} version {v}" + (
            f" (was {p['previous_version']})" if p.get("previous_version") else ""
        )
        return Outcome(
            "ok", line, {"jaxtx.pushed_version": str(v)}, {"pushed_version": float(v or 0)}
        )
    reason = str(p.get("reason") or "unknown reason")
    return Outcome(
        "not pushed",
        f"not pushed: {reason}",
        {"jaxtx.pushed_version": "none", "jaxtx.push_reason": reason},
        {},
    )


_BY_TYPE = {
    "Examples": _examples,
    "InferenceResult": _examples,
    "Statistics": _statistics,
    "Schema": _schema,
    "Anomalies": _anomalies,
    "Model": _model,
    "ModelEvaluation": _evaluation,
    "ModelBlessing": _blessing,
    "InfraBlessing": _infra,
    "PushedModel": _pushed,
}

_MARK = {"ok": "✓", "warn": "!", "stopped": "✗", "not blessed": "✗", "not pushed": "–"}


def format_summary(
    pipeline: str,
    rows: list[tuple[str, bool, Outcome | None, str | None]],
    *,
    duration_s: float,
    where: list[str],
) -> str:
    """The run summary: one line per node, then where to look.

    Args:
      pipeline: the pipeline's name.
      rows: ``(node id, cached, outcome, error)`` in run order; ``outcome`` is
        ``None`` for a node that did not finish (``error`` says why, or it was
        skipped).
      duration_s: the run's wall time.
      where: lines naming UIs and reports.
    """
    width = max([len(r[0]) for r in rows] + [8])
    lines = [f"Summary of {pipeline} ({duration_s:.1f} s)"]
    for node_id, cached, out, error in rows:
        if out is None:
            mark, text = ("✗", f"failed: {error}") if error else ("·", "not run")
        else:
            mark, text = _MARK.get(out.status, "•"), out.line or out.status
        how = " (cached)" if cached else ""
        lines.append(f"  {mark} {node_id:<{width}} {text}{how}")
    lines += [f"  {w}" for w in where]
    return "\n".join(lines)
