"""BulkInferrer: batch predictions over an Examples artifact with Beam.

A wrapper over :func:`jaxtx.serving.bulk.bulk_predict`, usable on its own.
"""

from __future__ import annotations

from jaxtx.serving.bulk import bulk_predict

from ._artifacts import Examples, InferenceResult, Model, Output
from ._component import component
from ._splits import check_splits, split_list

__all__ = ["BulkInferrer", "InferenceResult"]


@component
def BulkInferrer(
    model: Model,
    examples: Examples,
    inference_result: Output[InferenceResult],
    *,
    splits: list[str] | None = None,
    prefix: str = "prediction_",
    batch_rows: int = 8192,
    beam_options: list[str] | None = None,
) -> dict[str, float]:
    """Predict every row of the chosen splits; write Parquet with prediction columns added.

    Args:
      model: the exported model (serving runtime; no training code).
      examples: raw examples holding the model's input features.
      splits: the names of the splits to predict (default: all); a name the
        examples do not have is an error listing theirs.
      prefix: prefix of the added columns (``prediction_probabilities``, ...).
      batch_rows: rows per model call.
      beam_options: standard Beam flags.
    """
    chosen = split_list(splits, examples.split_names)
    check_splits(examples, chosen, component="BulkInferrer", parameter="splits")
    counts: dict[str, int] = {}
    for split in chosen:
        counts[split] = bulk_predict(
            str(model.model_dir),
            examples.files(split),
            inference_result.path / "data" / split,
            prefix=prefix,
            batch_rows=batch_rows,
            beam_options=beam_options,
        )
    inference_result.properties.update(
        split_names=list(chosen), split_counts=counts, model=model.uri, prefix=prefix
    )
    return {f"rows.{k}": v for k, v in counts.items()}
