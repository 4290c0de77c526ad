"""Trainer: fit a JAX model on transformed examples and export ``predict(raw features)``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ._artifacts import Examples, Hyperparameters, Model, Output, TransformGraph, load_artifact
from ._component import RunContext, component

__all__ = ["Trainer"]

_TASK_LOSS = {
    "binary_classification": "binary_cross_entropy",
    "multiclass_classification": "softmax_cross_entropy",
    "regression": "mean_squared_error",
}


def _column_info(graph: Any) -> tuple[list[str], dict[str, int]]:
    names, vocab = [], {}
    for col in graph.output_columns:
        names.append(col.name)
        if getattr(col, "dtype", "float32") == "int32" and getattr(col, "cardinality", None):
            vocab[col.name] = int(col.cardinality)
    return names, vocab


def _check_label(examples: Examples, label: str) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for split in ("train", "eval"):
        if split not in examples.split_names:
            raise ValueError(
                f"Trainer: examples {examples.uri} have no {split!r} split (splits: "
                f"{examples.split_names}); ExampleGen's split_names must include train and eval"
            )
        files = examples.files(split)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        if rows == 0:
            raise ValueError(f"Trainer: the {split!r} split of {examples.uri} is empty")
        names = pq.ParquetFile(files[0]).schema_arrow.names
        if label not in names:
            raise ValueError(
                f"Trainer: label {label!r} is not in the {split!r} split of {examples.uri}; "
                f"columns are {names}. Pass it through Transform (passthrough=[{label!r}])."
            )
        for f in files:
            col = pq.read_table(f, columns=[label])[label]
            if col.null_count:
                raise ValueError(
                    f"Trainer: label {label!r} has {col.null_count} missing values in {f}; "
                    "drop or fix those rows before training"
                )
            if str(col.type) in ("float", "double", "halffloat"):
                nans = pc.sum(pc.is_nan(col)).as_py() or 0
                if nans:
                    raise ValueError(
                        f"Trainer: label {label!r} has {nans} NaN values in {f}; "
                        "drop or fix those rows before training"
                    )


@component
def Trainer(
    examples: Examples,
    transform_graph: TransformGraph,
    model: Output[Model],
    ctx: RunContext,
    hyperparameters: Hyperparameters | None = None,
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
    quantize_int8: bool = False,
) -> dict[str, float]:
    """Train on the transformed examples; export the model with the transform fused in.

    Args:
      examples: Transform's ``transformed_examples`` (features + the label).
      transform_graph: Transform's graph; fused into the export so that the
        served model takes raw features.
      hyperparameters: e.g. ``tuner.outputs.best``; its values override
        ``learning_rate``, ``batch_size``, ``epochs``, ``gradient_clip_norm``
        and (default model) ``hidden``/``dropout``.
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
      quantize_int8: also export an int8 weight-only variant to ``model_int8/``
        (a ``jaxtx.model/1`` directory with ``quantization.json``); the
        Evaluator compares it with the float model.
    """
    import dataclasses

    import optax

    from jaxtx import trainer as jt

    if task not in _TASK_LOSS:
        raise ValueError(f"Trainer: task must be one of {sorted(_TASK_LOSS)}, got {task!r}")
    if hyperparameters is not None:
        from .tuner import trainer_settings

        tuned = trainer_settings(
            hyperparameters.values(),
            learning_rate=learning_rate,
            batch_size=batch_size,
            epochs=epochs,
            gradient_clip_norm=gradient_clip_norm,
            model_def=model_def,
        )
        learning_rate, batch_size, epochs = (
            tuned[k] for k in ("learning_rate", "batch_size", "epochs")
        )
        gradient_clip_norm, model_def = tuned["gradient_clip_norm"], tuned["model_def"]
    _check_label(examples, label)
    graph = transform_graph.load()
    features, vocab = _column_info(graph)
    net = model_def if model_def is not None else jt.MLP(hidden=(64, 32))
    if isinstance(net, jt.MLP | jt.WideAndDeep) and net.vocab_sizes is None and vocab:
        net = dataclasses.replace(net, vocab_sizes=vocab)
    tx = optimizer if optimizer is not None else optax.adam(learning_rate)
    if gradient_clip_norm is not None:
        tx = jt.with_gradient_clipping(tx, gradient_clip_norm)
    compute_dtype = None
    if mixed_precision:
        import jax.numpy as jnp

        compute_dtype = jnp.bfloat16
    trainer = jt.Trainer(net, tx, loss=_TASK_LOSS[task], seed=seed, compute_dtype=compute_dtype)
    train = jt.ParquetDataset(
        examples.files("train"), features, label, batch_size, shuffle_seed=seed
    )
    evald = jt.ParquetDataset(examples.files("eval"), features, label, batch_size)
    callbacks: list[Any] = [
        jt.LearningRateLogger(learning_rate),
        jt.MetricsCallback(lambda epoch, m: ctx.log_metrics(m, step=int(epoch))),
        jt.ProgressBar(),
    ]
    if log_every_n_steps:
        callbacks.append(
            jt.MetricsCallback(
                lambda step, m: ctx.log_metrics(
                    {f"step_{k}": v for k, v in m.items()}, step=int(step)
                ),
                every=int(log_every_n_steps),
            )
        )
    if early_stopping_patience is not None:
        callbacks.append(jt.EarlyStopping("val_loss", patience=early_stopping_patience, mode="min"))
    if ctx.work_dir is not None:
        callbacks.append(jt.Checkpoint(str(ctx.work_dir / "checkpoints"), every_n_epochs=1))
    history = trainer.fit(train, evald, epochs=epochs, callbacks=callbacks)

    # Export predict(raw) = model(transform(raw)); strings are mapped to ids first
    # (preprocess.json), the numeric transform runs inside the exported program.
    from jaxtx.trainer.transform import export_transformed_model

    outputs = {
        "binary_classification": {"probabilities": "float32", "logits": "float32"},
        "multiclass_classification": {"probabilities": "float32", "logits": "float32"},
        "regression": {"predictions": "float32"},
    }[task]
    export_transformed_model(
        graph,
        trainer.predict_fn,
        trainer.state.params,
        str(model.path / "model"),
        name=name,
        task=task,
        outputs=outputs,
    )
    if quantize_int8:
        from jaxtx.core.model_format import quantize_predict, write_quantization

        q_fn, q_params, q_info = quantize_predict(trainer.predict_fn, trainer.state.params)
        q_dir = model.path / "model_int8"
        export_transformed_model(
            graph, q_fn, q_params, str(q_dir), name=name, task=task, outputs=outputs
        )
        write_quantization(q_dir, q_info)
    history.save(str(model.path / "model" / "history.json"))
    history.plot(str(model.reports_dir / "training_curves.png"))
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    model.properties.update(
        name=name,
        task=task,
        label=label,
        features=features,
        epochs_run=len(history.history.get("loss", [])),
        quantized_model="model_int8" if quantize_int8 else None,
        final_metrics=final,
        transform_fingerprint=transform_graph.fingerprint,
    )
    (model.path / "training.json").write_text(
        json.dumps({"model_def": repr(net), "batch_size": batch_size, "seed": seed}, indent=2)
    )
    if ctx.tracking_uri and ctx.mlflow_run_id:
        from ._mlflow_model import log_jaxtx_model

        raw_uri = examples.properties.get("raw_examples")
        source = load_artifact(raw_uri, Examples, verify=False) if raw_uri else examples
        raw_example = _raw_example(graph, source.read("eval").slice(0, 5))
        uri = log_jaxtx_model(
            tracking_uri=ctx.tracking_uri,
            run_id=ctx.mlflow_run_id,
            model_dir=model.path / "model",
            input_example=raw_example,
        )
        model.properties["mlflow_model_uri"] = uri
    return {f"final_{k}": v for k, v in final.items() if np.isfinite(v)}


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
