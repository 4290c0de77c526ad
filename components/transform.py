"""Transform: fit preprocessing on the train split with Beam; write transformed examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
      beam_options: standard Beam flags for the analysis pipeline.
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
    clash = sorted(set(keep) & {c.name for c in graph.output_columns})
    if clash:
        raise ValueError(
            f"Transform: passthrough columns {clash} have the names of outputs of "
            "preprocessing_fn; rename the outputs or drop them from passthrough"
        )
    counts: dict[str, int] = {}
    for split in examples.split_names:
        out_dir = transformed_examples.path / "data" / split
        out_dir.mkdir(parents=True, exist_ok=True)
        counts[split] = 0
        for i, f in enumerate(examples.files(split)):
            pf = pq.ParquetFile(f)
            missing = [c for c in keep if c not in pf.schema_arrow.names]
            if missing:
                raise ValueError(
                    f"Transform: passthrough columns {missing} are not in {f} "
                    f"(columns: {pf.schema_arrow.names})"
                )
            writer = None
            for batch in pf.iter_batches(batch_size=65536):
                out = graph.apply_table(batch)
                cols = {name: out.column(name) for name in out.schema.names}
                for c in keep:
                    cols[c] = batch.column(batch.schema.get_field_index(c))
                table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(out_dir / f"part-{i:05d}.parquet", table.schema)
                writer.write_table(table)
                counts[split] += table.num_rows
            if writer is None:  # an empty shard: still write the schema
                empty = graph.apply_table(pf.schema_arrow.empty_table())
                cols = {n: empty.column(n) for n in empty.schema.names}
                for c in keep:
                    cols[c] = pa.array([], pf.schema_arrow.field(c).type)
                pq.write_table(pa.table(cols), out_dir / f"part-{i:05d}.parquet")
            else:
                writer.close()
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
