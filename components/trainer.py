"""Trainer: fit a JAX model on transformed examples and export ``predict(raw features)``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ._artifacts import Examples, Model, Output, TransformGraph, load_artifact
from ._component import RunContext, component

__all__ = ["Trainer"]


@component
def Trainer(
    examples: Examples,
    transform_graph: TransformGraph,
    model: Output[Model],
    ctx: RunContext,
    *,
    label: str,
    model_def: Any = None,
    task: str = "binary_classification",
    epochs: int = 5,
    batch_size: int = 256,
    learning_rate: Any = 1e-3,
    optimizer: Any = None,
    gradient_clip_norm: float | None = None,
    mixed_precision: bool = False,
    early_stopping_patience: int | None = 3,
    log_every_n_steps: int | None = None,
    seed: int = 0,
    name: str = "model",
) -> dict[str, float]:
    """Train on the transformed examples; export the model with the transform fused in.

    Args:
      examples: Transform's ``transformed_examples`` (features + the label).
      transform_graph: Transform's graph; fused into the export so that the
        served model takes raw features.
      label: the label column.
      model_def: a ``jaxtx.trainer`` model (``MLP(...)``, ``WideAndDeep(...)``),
        an ``(init, apply)`` pair or a Flax NNX module; default ``MLP((64, 32))``.
        Embedding sizes of integer-id features come from the transform.
      task: ``binary_classification``, ``multiclass_classification`` or ``regression``.
      epochs: passes over the training split (early stopping may end sooner).
      batch_size: examples per step.
      learning_rate: a number or an optax schedule (``step -> lr``) for the
        default optimizer (Adam); logged per epoch as ``learning_rate``.
      optimizer: any optax ``GradientTransformation`` (overrides the default).
      gradient_clip_norm: clip gradients to this global norm first.
      mixed_precision: compute in bfloat16, keep float32 parameters.
      early_stopping_patience: epochs without eval-loss improvement before
        stopping; ``None`` trains all epochs.
      log_every_n_steps: also log batch metrics to MLflow as ``step_<name>``
        every N steps (epoch metrics are always logged).
      seed: the same seed gives bit-identical parameters on the same machine.
      name: the model's name in its signature.
    """
    from jaxtx import trainer as jt

    jt.loss_for_task(task)  # an unknown task fails before any work
    for split in ("train", "eval"):
        if split not in examples.split_names:
            raise ValueError(
                f"Trainer: examples {examples.uri} have no {split!r} split (splits: "
                f"{examples.split_names}); ExampleGen's split_names must include train and eval"
            )
    graph = transform_graph.load()
    loop, history, net, features = jt.train_transformed(
        graph,
        examples.files("train"),
        examples.files("eval"),
        label=label,
        model_def=model_def,
        task=task,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        gradient_clip_norm=gradient_clip_norm,
        mixed_precision=mixed_precision,
        early_stopping_patience=early_stopping_patience,
        seed=seed,
        callbacks=_metric_callbacks(ctx, log_every_n_steps),
        checkpoint_dir=None if ctx.work_dir is None else str(ctx.work_dir / "checkpoints"),
    )

    # Export predict(raw) = model(transform(raw)); strings are mapped to ids first
    # (preprocess.json), the numeric transform runs inside the exported program.
    from jaxtx.trainer.transform import export_transformed_model

    export_transformed_model(
        graph,
        loop.predict_fn,
        loop.state.params,
        str(model.path / "model"),
        name=name,
        task=task,
        outputs=jt.task_outputs(task),
    )
    history.save(str(model.path / "model" / "history.json"))
    history.plot(str(model.reports_dir / "training_curves.png"))
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    model.properties.update(
        name=name,
        task=task,
        label=label,
        features=features,
        epochs_run=len(history.history.get("loss", [])),
        final_metrics=final,
        transform_fingerprint=transform_graph.fingerprint,
        examples_fingerprint=examples.fingerprint,
    )
    (model.path / "training.json").write_text(
        json.dumps({"model_def": repr(net), "batch_size": batch_size, "seed": seed}, indent=2)
    )
    if ctx.tracking_uri and ctx.mlflow_run_id:
        model.properties["mlflow_model_uri"] = _log_mlflow_model(ctx, examples, graph, model)
    return {f"final_{k}": v for k, v in final.items() if np.isfinite(v)}


def _metric_callbacks(ctx: RunContext, log_every_n_steps: int | None) -> list[Any]:
    """Callbacks logging epoch metrics (and every N steps' batch metrics) to the run."""
    from jaxtx import trainer as jt

    cbs: list[Any] = [jt.MetricsCallback(lambda epoch, m: ctx.log_metrics(m, step=int(epoch)))]
    if log_every_n_steps:
        cbs.append(
            jt.MetricsCallback(
                lambda step, m: ctx.log_metrics(
                    {f"step_{k}": v for k, v in m.items()}, step=int(step)
                ),
                every=int(log_every_n_steps),
            )
        )
    return cbs


def _log_mlflow_model(ctx: RunContext, examples: Examples, graph: Any, model: Model) -> str:
    """Log the exported model as an MLflow pyfunc model with a raw input example; its URI."""
    from ._mlflow_model import log_jaxtx_model

    raw_uri = examples.properties.get("raw_examples")
    source = load_artifact(raw_uri, Examples, verify=False) if raw_uri else examples
    assert ctx.tracking_uri and ctx.mlflow_run_id
    return log_jaxtx_model(
        tracking_uri=ctx.tracking_uri,
        run_id=ctx.mlflow_run_id,
        model_dir=model.path / "model",
        input_example=_raw_example(graph, source.read("eval").slice(0, 5)),
    )


def _raw_example(graph: Any, table: Any) -> Any:
    """A small raw-feature DataFrame for MLflow's input example, with the data's own types."""
    import pandas as pd

    cols = {}
    for c in graph.input_columns:
        if c.name in table.column_names:
            cols[c.name] = table[c.name].to_pandas()
        else:
            cols[c.name] = pd.Series(["" if c.kind == "string" else 0.0] * table.num_rows)
    return pd.DataFrame(cols)
