"""StatisticsGen: TFDV-style statistics of every split, with an HTML report."""

from __future__ import annotations

from jaxtx.validation.statistics import StatsOptions, compute_split_statistics, save_statistics
from jaxtx.validation.stats_report import plot_feature_histograms_png, render_statistics_html

from ._artifacts import Examples, Output, Statistics
from ._component import RunContext, component

__all__ = ["StatisticsGen"]


@component
def StatisticsGen(
    examples: Examples,
    statistics: Output[Statistics],
    ctx: RunContext,
    *,
    top_k: int = 20,
    num_quantiles: int = 10,
    num_histogram_buckets: int = 10,
    histogram_png: bool = True,
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Compute per-split, per-feature statistics in one Beam pipeline.

    Writes ``<split>/statistics.json`` (format ``jaxtx.statistics/1``, with
    mergeable sketches) and ``reports/statistics.html`` (tables and SVG
    histograms / top-value charts for every feature of every split).

    Args:
      examples: the examples to describe.
      ctx: the run; its node id titles the report.
      top_k: most frequent values kept per string feature.
      num_quantiles: quantile resolution (q = 0, 1/n, ..., 1).
      num_histogram_buckets: buckets of the equi-width histograms.
      histogram_png: also write ``reports/histograms-<split>.png`` (matplotlib;
        about a second per split; ``False`` skips them).
      beam_options: standard Beam flags, e.g. ``["--runner=FlinkRunner", ...]``.
    """
    options = StatsOptions(
        num_quantiles=num_quantiles, num_histogram_buckets=num_histogram_buckets, top_k=top_k
    )
    split_files = {s: examples.files(s) for s in examples.split_names}
    stats = compute_split_statistics(split_files, options=options, beam_options=beam_options)
    metrics: dict[str, float] = {}
    for split, doc in stats.items():
        save_statistics(doc, str(statistics.path / split / "statistics.json"))
        if histogram_png:
            plot_feature_histograms_png(
                doc, str(statistics.reports_dir / f"histograms-{split}.png")
            )
        metrics[f"{split}.num_rows"] = doc["num_rows"]
        metrics[f"{split}.num_features"] = len(doc["features"])
    (statistics.reports_dir / "statistics.html").write_text(
        render_statistics_html(stats, title=ctx.title(_title(ctx.node_id, examples, list(stats)))),
        encoding="utf-8",
    )
    statistics.properties.update(
        split_names=list(stats),
        num_rows={s: d["num_rows"] for s, d in stats.items()},
        span=examples.properties.get("span"),
        spans=examples.properties.get("spans"),
        examples_fingerprint=examples.fingerprint,
    )
    return metrics


def _title(node_id: str, examples: Examples, splits: list[str]) -> str:
    """``StatisticsGen: ExampleGen examples, span 2 (train, eval)``: what was
    described, named by component and split rather than by path."""
    source = examples.producer.get("node") or examples.producer.get("component") or "examples"
    span = examples.properties.get("span")
    where = f", span {span}" if span is not None else ""
    return f"{node_id}: statistics of {source} examples{where} ({', '.join(splits)})"
