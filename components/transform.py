"""Transform: fit preprocessing on one split and transform every split, both with Beam.

A wrapper over ``jaxtx.trainer.transform.analyze`` and ``transform_parquet``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._artifacts import Examples, Output, TransformGraph
from ._component import component

__all__ = ["Transform"]


@component
def Transform(
    examples: Examples,
    transform_graph: Output[TransformGraph],
    transformed_examples: Output[Examples],
    *,
    preprocessing_fn: Callable[[Any], Any],
    passthrough: list[str] | None = None,
    analyze_split: str = "train",
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Fit ``preprocessing_fn``'s analyzers on one split; transform every split.

    Args:
      examples: raw examples.
      preprocessing_fn: ``fn(inputs) -> {name: Column}`` written with
        ``jaxtx.trainer.transform`` (``tx.scale_to_z_score``, ``tx.vocabulary``, ...).
        The cache keys on its source code and the values it closes over.
      passthrough: raw columns copied unchanged into the transformed examples
        (the label, features the Evaluator slices on).
      analyze_split: the split the analyzers are fitted on.
      beam_options: standard Beam flags for the analysis and transform pipelines.
    """
    from jaxtx.trainer import transform as tx

    if analyze_split not in examples.split_names:
        raise ValueError(
            f"Transform: analyze_split {analyze_split!r} is not a split of {examples.uri} "
            f"({examples.split_names})"
        )
    graph = tx.analyze(preprocessing_fn, examples.files(analyze_split), beam_options=beam_options)
    graph.save(str(transform_graph.path))
    keep = list(passthrough or [])
    counts = tx.transform_parquet(
        graph,
        {split: examples.files(split) for split in examples.split_names},
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
        analyze_split=analyze_split,
    )
    transformed_examples.properties.update(
        split_names=list(examples.split_names),
        split_counts=counts,
        span=examples.properties.get("span"),
        passthrough=keep,
        raw_examples=examples.uri,
    )
    return {f"rows.{k}": v for k, v in counts.items()}
