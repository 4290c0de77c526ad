"""Trainer: fit a JAX model on transformed examples and export ``predict(raw features)``."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from ._artifacts import Examples, Hyperparameters, Model, Output, TransformGraph, load_artifact
from ._component import RunContext, component
from ._splits import check_splits

__all__ = ["Trainer"]

_log = logging.getLogger("jaxtx.trainer")


@component
def Trainer(
    examples: Examples,
    transform_graph: TransformGraph,
    model: Output[Model],
    ctx: RunContext,
    hyperparameters: Hyperparameters | None = None,
    *,
    label: str,
    train_split: str = "train",
    eval_split: str = "eval",
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
    processes: int = 1,
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
      train_split: the split trained on.
      eval_split: the validation split, evaluated after every epoch and the
        one early stopping watches. The Model records both (``train_split``,
        ``eval_split``, ``early_stopping_split``) so that the Evaluator can
        default to a split the model was not selected on.
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
      processes: train in this many JAX processes on this machine
        (``jaxtx.trainer.distributed.launch``: CPU collectives over
        127.0.0.1, each process feeding its rows of every batch); the
        parameters equal the one-process run's up to float summation order.
        A failed process stops the others and fails the component naming it;
        running the component again resumes from the last checkpoint.
        ``log_every_n_steps`` is not available then (epoch metrics are logged).
    """
    from jaxtx import trainer as jt

    jt.loss_for_task(task)  # an unknown task fails before any work
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"Trainer: processes must be a positive int, got {processes!r}")
    check_splits(examples, [train_split], component="Trainer", parameter="train_split")
    check_splits(examples, [eval_split], component="Trainer", parameter="eval_split")
    if hyperparameters is not None:
        learning_rate, batch_size, epochs, gradient_clip_norm, model_def = _tuned(
            hyperparameters, learning_rate, batch_size, epochs, gradient_clip_norm, model_def
        )
    graph = transform_graph.load()
    settings = dict(
        label=label,
        split_names=(train_split, eval_split),
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
        checkpoint_dir=None if ctx.work_dir is None else str(ctx.work_dir / "checkpoints"),
    )
    train_files, eval_files = examples.files(train_split), examples.files(eval_split)
    if processes == 1:
        loop, history, net, features = jt.train_transformed(
            graph,
            train_files,
            eval_files,
            callbacks=_metric_callbacks(ctx, log_every_n_steps),
            **settings,
        )
        predict_fn, params = loop.predict_fn, loop.state.params
    else:
        if log_every_n_steps:
            _log.warning(
                "Trainer: log_every_n_steps is ignored with processes=%d (epoch metrics are "
                "logged); use processes=1 for per-step metrics",
                processes,
            )
        predict_fn, params, history, net, features = _train_in_processes(
            processes, str(transform_graph.path), train_files, eval_files, settings
        )
        _log_epochs(ctx, history)

    _export(graph, predict_fn, params, model, name=name, task=task, quantize_int8=quantize_int8)
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
        train_split=train_split,
        eval_split=eval_split,
        early_stopping_split=eval_split if early_stopping_patience is not None else None,
        examples_fingerprint=examples.fingerprint,
    )
    (model.path / "training.json").write_text(
        json.dumps({"model_def": repr(net), "batch_size": batch_size, "seed": seed}, indent=2)
    )
    if ctx.tracking_uri and ctx.mlflow_run_id:
        model.properties["mlflow_model_uri"] = _log_mlflow_model(
            ctx, examples, graph, model, eval_split
        )
    return {f"final_{k}": v for k, v in final.items() if np.isfinite(v)}


def _tuned(
    hyperparameters: Hyperparameters,
    learning_rate: Any,
    batch_size: int,
    epochs: int,
    gradient_clip_norm: float | None,
    model_def: Any,
) -> tuple[Any, int, int, float | None, Any]:
    """The Trainer settings with the tuned values applied."""
    from .tuner import trainer_settings

    tuned = trainer_settings(
        hyperparameters.values(),
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        gradient_clip_norm=gradient_clip_norm,
        model_def=model_def,
    )
    keys = ("learning_rate", "batch_size", "epochs", "gradient_clip_norm", "model_def")
    return tuple(tuned[k] for k in keys)  # type: ignore[return-value]


def _train_in_processes(
    processes: int, graph_path: str, train_files: list[str], eval_files: list[str], settings: dict
) -> tuple[Any, Any, Any, Any, list[str]]:
    """``train_transformed`` in ``processes`` JAX processes on this machine.

    Returns:
      ``(predict_fn, params, history, net, features)``, params from process 0.
    """
    from jaxtx import trainer as jt
    from jaxtx.trainer import distributed

    out = distributed.launch(
        "jaxtx.components.trainer:_train_worker",
        dict(graph_path=graph_path, train_files=train_files, eval_files=eval_files, **settings),
        processes=processes,
        timeout_s=None,
    )
    import optax

    # a loop only for its predict function (the trained parameters come from process 0)
    loop = jt.TrainLoop(out["net"], optax.identity(), loss=jt.loss_for_task(settings["task"]).name)
    history = jt.History.from_dict(out["history"])
    return loop.predict_fn, out["params"], history, out["net"], out["features"]


def _log_epochs(ctx: RunContext, history: Any) -> None:
    """Log each epoch's metrics to the run, as the epoch MetricsCallback does in one process."""
    for record in history.epochs:
        metrics = {
            k: float(v) for k, v in record.items() if isinstance(v, int | float) and k != "epoch"
        }
        ctx.log_metrics(metrics, step=int(record["epoch"]))


def _train_worker(
    graph_path: str, train_files: list[str], eval_files: list[str], **settings: Any
) -> dict[str, Any]:
    """One training process of ``Trainer(processes=N)`` (run by ``jaxtx.trainer.worker``)."""
    from jaxtx import trainer as jt
    from jaxtx.trainer.transform import FittedTransform

    graph = FittedTransform.load(graph_path)
    loop, history, net, features = jt.train_transformed(graph, train_files, eval_files, **settings)
    return {
        "params": loop.state.params,
        "history": history.to_dict(),
        "net": net,
        "features": features,
    }


def _export(
    graph: Any,
    predict_fn: Any,
    params: Any,
    model: Model,
    *,
    name: str,
    task: str,
    quantize_int8: bool,
) -> None:
    """Export predict(raw) = model(transform(raw)) to ``model/`` (and int8 to ``model_int8/``).

    Strings are mapped to ids first (preprocess.json); the numeric transform runs
    inside the exported program.
    """
    from jaxtx import trainer as jt
    from jaxtx.trainer.transform import export_transformed_model

    outputs = jt.task_outputs(task)
    export_transformed_model(
        graph,
        predict_fn,
        params,
        str(model.path / "model"),
        name=name,
        task=task,
        outputs=outputs,
    )
    if quantize_int8:
        from jaxtx.core.model_format import quantize_predict, write_quantization

        q_fn, q_params, q_info = quantize_predict(predict_fn, params)
        q_dir = model.path / "model_int8"
        export_transformed_model(
            graph, q_fn, q_params, str(q_dir), name=name, task=task, outputs=outputs
        )
        write_quantization(q_dir, q_info)


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


def _log_mlflow_model(
    ctx: RunContext, examples: Examples, graph: Any, model: Model, split: str
) -> str:
    """Log the exported model as an MLflow pyfunc model with a raw input example; its URI."""
    from ._mlflow_model import log_jaxtx_model

    raw_uri = examples.properties.get("raw_examples")
    source = load_artifact(raw_uri, Examples, verify=False) if raw_uri else examples
    assert ctx.tracking_uri and ctx.mlflow_run_id
    if split not in source.split_names:
        split = source.split_names[0]
    return log_jaxtx_model(
        tracking_uri=ctx.tracking_uri,
        run_id=ctx.mlflow_run_id,
        model_dir=model.path / "model",
        input_example=_raw_example(graph, source.read(split).slice(0, 5)),
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
