"""Supervised training on a table: checking the label column, features from a transform."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import pyarrow.compute as pc

from jaxtx.core.parquet import open_parquet, parquet_num_rows, parquet_schema

from ._callbacks import Callback, Checkpoint, EarlyStopping, LearningRateLogger, ProgressBar
from ._data import DataError, ParquetDataset
from ._history import History
from ._losses import loss_for_task
from ._models import MLP, WideAndDeep
from ._step import with_gradient_clipping
from ._trainer import TrainLoop

__all__ = ["TrainResult", "check_label", "train_transformed", "transform_features"]


def check_label(files: Sequence[str], label: str, *, what: str = "the data") -> int:
    """Check that Parquet files have rows and a ``label`` column without missing or NaN values.

    Args:
      files: Parquet files (local paths or Beam filesystem URLs).
      label: The label column.
      what: How messages name the data, e.g. ``"the 'train' split of ..."``.

    Returns:
      The number of rows.

    Raises:
      DataError: No rows, no such column (listing the columns), or missing or
        NaN labels (naming the file and how many).
    """
    rows = sum(parquet_num_rows(f) for f in files)
    if rows == 0:
        raise DataError(f"{what} has no rows ({len(files)} files); train on data with rows")
    names = parquet_schema(files[0]).names
    if label not in names:
        raise DataError(
            f"label {label!r} is not in {what} (file {files[0]}); columns are {names}. Add it "
            "to the data "
            f"(with the Transform component: passthrough=[{label!r}])."
        )
    for f in files:
        with open_parquet(f) as pf:
            col = pf.read(columns=[label])[label]
        if col.null_count:
            raise DataError(
                f"label {label!r} has {col.null_count} missing values in {f}; "
                "drop or fix those rows before training"
            )
        if str(col.type) in ("float", "double", "halffloat"):
            nans = pc.sum(pc.is_nan(col)).as_py() or 0
            if nans:
                raise DataError(
                    f"label {label!r} has {nans} NaN values in {f}; "
                    "drop or fix those rows before training"
                )
    return rows


def transform_features(graph: Any) -> tuple[list[str], dict[str, int]]:
    """The model's features from a fitted transform.

    Args:
      graph: A fitted ``jaxtx.trainer.transform`` graph.

    Returns:
      ``(feature names, {id feature: vocabulary size})``: every output column,
      and the embedding sizes of its int32 id outputs.
    """
    names, vocab = [], {}
    for col in graph.output_columns:
        names.append(col.name)
        if getattr(col, "dtype", "float32") == "int32" and getattr(col, "cardinality", None):
            vocab[col.name] = int(col.cardinality)
    return names, vocab


class TrainResult(NamedTuple):
    """What :func:`train_transformed` trained.

    Attributes:
      loop: The training loop (``loop.state.params``, ``loop.predict_fn``).
      history: Per-epoch metrics.
      model_def: The model definition, with the transform's vocabulary sizes.
      features: The feature columns, in the transform's output order.
    """

    loop: TrainLoop
    history: History
    model_def: Any
    features: list[str]


def train_transformed(
    graph: Any,
    train_files: Sequence[str],
    eval_files: Sequence[str],
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
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | None = None,
    split_names: tuple[str, str] | None = None,
) -> TrainResult:
    """Train a model on the output of a fitted transform (Parquet files with a label column).

    Args:
      graph: The fitted ``jaxtx.trainer.transform`` graph; its outputs are the features.
      train_files: Training Parquet files (transformed examples plus the label).
      eval_files: Evaluation Parquet files, evaluated after every epoch.
      label: The label column (checked for missing and NaN values first).
      model_def: A model (``MLP(...)``, ``WideAndDeep(...)``, an ``(init,
        apply)`` pair or a Flax NNX module); default ``MLP((64, 32))``. An MLP
        or WideAndDeep without ``vocab_sizes`` gets the transform's.
      task: A key of :data:`TASKS`; picks the loss (:func:`loss_for_task`).
      epochs: Passes over the training data (early stopping may end sooner).
      batch_size: Examples per step.
      learning_rate: A number or an optax schedule for the default Adam optimizer.
      optimizer: Any optax ``GradientTransformation`` (overrides the default).
      gradient_clip_norm: Clip gradients to this global norm first.
      mixed_precision: Compute in bfloat16, keep float32 parameters.
      early_stopping_patience: Epochs without ``val_loss`` improvement before
        stopping; ``None`` trains all epochs.
      seed: The same seed gives bit-identical parameters on the same machine.
      callbacks: More callbacks (e.g. :class:`MetricsCallback` to log metrics).
      checkpoint_dir: Checkpoint every epoch there (and resume from it).
      split_names: ``(training split, evaluation split)``, named in data
        errors (e.g. ``("train", "eval")``); None names them generically.

    Returns:
      The :class:`TrainResult`.

    Raises:
      ValueError: An unknown task.
      DataError: No rows, no label column, or missing or NaN labels.
    """
    import optax

    loss = loss_for_task(task).name
    train_what, eval_what = (
        ("the training data", "the evaluation data")
        if split_names is None
        else tuple(f"the {s!r} split" for s in split_names)
    )
    check_label(train_files, label, what=train_what)
    check_label(eval_files, label, what=eval_what)
    features, vocab = transform_features(graph)
    net = model_def if model_def is not None else MLP(hidden=(64, 32))
    if isinstance(net, MLP | WideAndDeep) and net.vocab_sizes is None and vocab:
        net = dataclasses.replace(net, vocab_sizes=vocab)
    tx = optimizer if optimizer is not None else optax.adam(learning_rate)
    if gradient_clip_norm is not None:
        tx = with_gradient_clipping(tx, gradient_clip_norm)
    compute_dtype = None
    if mixed_precision:
        import jax.numpy as jnp

        compute_dtype = jnp.bfloat16
    trainer = TrainLoop(net, tx, loss=loss, seed=seed, compute_dtype=compute_dtype)
    train = ParquetDataset(list(train_files), features, label, batch_size, shuffle_seed=seed)
    evald = ParquetDataset(list(eval_files), features, label, batch_size)
    cbs: list[Callback] = [LearningRateLogger(learning_rate), *callbacks, ProgressBar()]
    if early_stopping_patience is not None:
        cbs.append(EarlyStopping("val_loss", patience=early_stopping_patience, mode="min"))
    if checkpoint_dir is not None:
        cbs.append(Checkpoint(checkpoint_dir, every_n_epochs=1))
    history = trainer.fit(train, evald, epochs=epochs, callbacks=cbs)
    return TrainResult(trainer, history, net, features)
