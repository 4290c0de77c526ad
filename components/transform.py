"""Transform: fit preprocessing on named split(s) and transform the chosen splits, with Beam.

A wrapper over ``jaxtx.trainer.transform.analyze`` and ``transform_parquet``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._artifacts import Examples, Output, TransformGraph
from ._component import component
from ._splits import check_splits, split_list

__all__ = ["Transform"]


@component
def Transform(
    examples: Examples,
    transform_graph: Output[TransformGraph],
    transformed_examples: Output[Examples],
    *,
    preprocessing_fn: Callable[[Any], Any],
    passthrough: list[str] | None = None,
    analyze_split: str | list[str] = "train",
    transform_splits: list[str] | None = None,
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Fit ``preprocessing_fn``'s analyzers on named split(s); transform the chosen splits.

    Args:
      examples: raw examples.
      preprocessing_fn: ``fn(inputs) -> {name: Column}`` written with
        ``jaxtx.trainer.transform`` (``tx.scale_to_z_score``, ``tx.vocabulary``, ...).
        The cache keys on its source code and the values it closes over.
      passthrough: raw columns copied unchanged into the transformed examples
        (the label, features the Evaluator slices on).
      analyze_split: the split (or list of splits) the analyzers are fitted on.
      transform_splits: the splits to transform (default: all); the
        transformed examples hold these splits only.
      beam_options: standard Beam flags for the analysis and transform pipelines.
    """
    from jaxtx.trainer import transform as tx

    fit_on = split_list(analyze_split, ["train"])
    check_splits(examples, fit_on, component="Transform", parameter="analyze_split")
    chosen = split_list(transform_splits, examples.split_names)
    check_splits(examples, chosen, component="Transform", parameter="transform_splits")
    fit_files = [f for split in fit_on for f in examples.files(split)]
    graph = tx.analyze(preprocessing_fn, fit_files, beam_options=beam_options)
    graph.save(str(transform_graph.path))
    keep = list(passthrough or [])
    counts = tx.transform_parquet(
        graph,
        {split: examples.files(split) for split in chosen},
        transformed_examples.path / "data",
        passthrough=keep,
        beam_options=beam_options,
    )
    (transform_graph.reports_dir / "transform.txt").write_text(
        "\n".join(f"{c.name} ({c.dtype}) = {c.expression}" for c in graph.output_columns) + "\n"
    )
    transform_graph.properties.update(
        inputs=[c.name for c in graph.input_columns],
        outputs={c.name: c.dtype for c in graph.output_columns},
        analyze_split=fit_on[0] if len(fit_on) == 1 else fit_on,
        analyze_splits=fit_on,
    )
    transformed_examples.properties.update(
        split_names=chosen,
        split_counts=counts,
        span=examples.properties.get("span"),
        passthrough=keep,
        raw_examples=examples.uri,
    )
    return {f"rows.{k}": v for k, v in counts.items()}
