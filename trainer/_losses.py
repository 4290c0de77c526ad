"""Per-example losses and metrics.

A loss is ``loss(outputs, labels) -> float32[b]``: one value per example, so
the trainer can weight examples (padding rows get weight 0) and average. A
metric has the same signature. Built-in losses accept model outputs of shape
``[b, 1]`` with labels of shape ``[b]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "LossFn",
    "binary_accuracy",
    "binary_cross_entropy",
    "categorical_accuracy",
    "mean_absolute_error",
    "mean_squared_error",
    "softmax_cross_entropy",
]

LossFn = Callable[[Any, jax.Array], jax.Array]
"""``loss(outputs, labels) -> float32[b]`` (per-example values)."""


def _squeeze_like(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    if outputs.ndim == labels.ndim + 1 and outputs.shape[-1] == 1:
        return outputs[..., 0]
    return outputs


def _per_example(x: jax.Array) -> jax.Array:
    return x if x.ndim <= 1 else x.reshape(x.shape[0], -1).mean(axis=1)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy from logits.

    Args:
      logits: ``[b]`` or ``[b, 1]`` (or ``[b, k]`` for ``k`` independent labels).
      labels: 0/1 labels of shape ``[b]`` (or ``[b, k]``).

    Returns:
      ``float32[b]``.

    Example:
      >>> binary_cross_entropy(jnp.zeros((2, 1)), jnp.array([0.0, 1.0]))
      Array([0.6931472, 0.6931472], dtype=float32)
    """
    logits = _squeeze_like(logits, labels)
    return _per_example(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy.

    Args:
      logits: ``[b, k]``.
      labels: integer class ids ``[b]``, or probabilities / one-hot ``[b, k]``.

    Returns:
      ``float32[b]``.
    """
    if labels.ndim == logits.ndim:
        return optax.softmax_cross_entropy(logits, labels.astype(logits.dtype))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


def mean_squared_error(predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """Squared error, averaged over trailing dimensions.

    Args:
      predictions: ``[b]``, ``[b, 1]`` or ``[b, k]``.
      labels: ``[b]`` or ``[b, k]``.

    Returns:
      ``float32[b]``.
    """
    predictions = _squeeze_like(predictions, labels)
    return _per_example(jnp.square(predictions - labels.astype(predictions.dtype)))


def mean_absolute_error(predictions: jax.Array, labels: jax.Array) -> jax.Array:
    """Absolute error, averaged over trailing dimensions; returns ``float32[b]``."""
    predictions = _squeeze_like(predictions, labels)
    return _per_example(jnp.abs(predictions - labels.astype(predictions.dtype)))


def binary_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where ``logits > 0`` agrees with ``labels > 0.5``; returns ``float32[b]``."""
    logits = _squeeze_like(logits, labels)
    return _per_example(((logits > 0) == (labels > 0.5)).astype(jnp.float32))


def categorical_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1.0 where ``argmax(logits)`` is the label (ids, or argmax of one-hot labels)."""
    if labels.ndim == logits.ndim:
        labels = jnp.argmax(labels, axis=-1)
    return (jnp.argmax(logits, axis=-1) == labels.astype(jnp.int32)).astype(jnp.float32)


class LossSpec(NamedTuple):
    """A resolved loss: its name, function, default metrics and task."""

    name: str
    fn: LossFn
    metrics: Mapping[str, LossFn]
    task: str


_BCE = LossSpec(
    "binary_crossentropy",
    binary_cross_entropy,
    {"accuracy": binary_accuracy},
    "binary_classification",
)
_SCE = LossSpec(
    "softmax_cross_entropy",
    softmax_cross_entropy,
    {"accuracy": categorical_accuracy},
    "multiclass_classification",
)
_MSE = LossSpec("mse", mean_squared_error, {"mae": mean_absolute_error}, "regression")

_LOSSES: dict[str, LossSpec] = {
    "binary_crossentropy": _BCE,
    "binary_cross_entropy": _BCE,
    "bce": _BCE,
    "softmax_cross_entropy": _SCE,
    "sparse_categorical_crossentropy": _SCE,
    "categorical_crossentropy": _SCE,
    "mse": _MSE,
    "mean_squared_error": _MSE,
}


def resolve_loss(loss: str | LossFn) -> LossSpec:
    """Turn a loss name or function into a :class:`LossSpec`.

    Args:
      loss: ``"binary_crossentropy"`` (``"bce"``), ``"softmax_cross_entropy"``
        (``"sparse_categorical_crossentropy"``), ``"mse"``, or a function
        ``loss(outputs, labels) -> float32[b]``.

    Returns:
      The spec; a user function gets no default metrics and task ``"custom"``.
    """
    if callable(loss):
        return LossSpec(getattr(loss, "__name__", "loss"), loss, {}, "custom")
    try:
        return _LOSSES[loss]
    except KeyError:
        raise ValueError(
            f"unknown loss {loss!r}; use one of {sorted(_LOSSES)} or pass a function "
            "loss(outputs, labels) -> per-example losses [b]"
        ) from None


TASKS: dict[str, LossSpec] = {spec.task: spec for spec in (_BCE, _SCE, _MSE)}
"""The one task -> loss mapping: each built-in task and the loss that trains it."""

_TASK_OUTPUTS: dict[str, dict[str, str]] = {
    "binary_classification": {"probabilities": "float32", "logits": "float32"},
    "multiclass_classification": {"probabilities": "float32", "logits": "float32"},
    "regression": {"predictions": "float32"},
}


def loss_for_task(task: str) -> LossSpec:
    """The loss that trains a task.

    Args:
      task: ``"binary_classification"``, ``"multiclass_classification"`` or ``"regression"``.

    Returns:
      Its :class:`LossSpec` (``spec.name`` can be passed as ``TrainLoop(loss=...)``).

    Raises:
      ValueError: An unknown task, listing the known ones.
    """
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}") from None


def task_outputs(task: str) -> dict[str, str]:
    """The outputs (name -> dtype) that a trainer's ``predict_fn`` gives for a task.

    Args:
      task: A task of :data:`TASKS`.

    Returns:
      E.g. ``{"probabilities": "float32", "logits": "float32"}``.
    """
    loss_for_task(task)
    return dict(_TASK_OUTPUTS[task])
