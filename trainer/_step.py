"""Pure train and eval steps built from a model, a loss and an optax optimizer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ._losses import LossFn, resolve_loss
from ._models import as_model
from ._state import TrainState
from ._types import Batch, PyTree

__all__ = [
    "EvalStep",
    "TrainStep",
    "make_eval_step",
    "make_train_step",
    "with_gradient_clipping",
]

TrainStep = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
"""``train_step(state, batch) -> (new_state, metrics)``; metrics are batch means."""

EvalStep = Callable[[PyTree, Batch], dict[str, jax.Array]]
"""``eval_step(params, batch) -> metrics`` (batch means)."""

SumStep = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


def with_gradient_clipping(
    optimizer: optax.GradientTransformation, max_norm: float
) -> optax.GradientTransformation:
    """Clip gradients to a global norm before ``optimizer``.

    Args:
      optimizer: any optax transformation.
      max_norm: the largest global L2 norm of the gradients.

    Returns:
      ``optax.chain(optax.clip_by_global_norm(max_norm), optimizer)``.

    Example:
      >>> tx = with_gradient_clipping(optax.adam(1e-3), max_norm=1.0)
    """
    return optax.chain(optax.clip_by_global_norm(max_norm), optimizer)


def _as_batch(batch: Any) -> Batch:
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, tuple | list) and len(batch) in (2, 3):
        return Batch(*batch)
    if isinstance(batch, Mapping) and "features" in batch and "labels" in batch:
        return Batch(batch["features"], batch["labels"], batch.get("weights"))
    raise TypeError(
        "a batch must be Batch(features, labels[, weights]) or a tuple (features, labels[, weights])"
    )


def _cast_floats(tree: PyTree, dtype: Any) -> PyTree:
    def cast(x: Any) -> Any:
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def _weights(batch: Batch) -> jax.Array:
    n = jnp.shape(batch.labels)[0]
    if batch.weights is None:
        return jnp.ones((n,), jnp.float32)
    return jnp.asarray(batch.weights, jnp.float32)


def _check_per_example(name: str, values: jax.Array, n: int) -> jax.Array:
    if values.ndim == 0:
        raise ValueError(
            f"{name} returned a scalar; it must return one value per example (shape [{n}]) "
            "so that padded rows can be weighted out: drop the final mean()"
        )
    if values.shape[0] != n:
        raise ValueError(
            f"{name} returned shape {values.shape}, expected [{n}] (one value per example)"
        )
    if values.ndim > 1:
        values = values.reshape(n, -1).mean(axis=1)
    return values.astype(jnp.float32)


def _make_objective(
    model: Any,
    loss: str | LossFn,
    metrics: Mapping[str, LossFn] | None,
    compute_dtype: Any,
) -> Callable[[PyTree, Batch, jax.Array | None, bool], tuple[jax.Array, dict[str, jax.Array]]]:
    apply = as_model(model).apply
    spec = resolve_loss(loss)
    metric_fns = dict(spec.metrics if metrics is None else metrics)

    def objective(
        params: PyTree, batch: Batch, key: jax.Array | None, train: bool
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        features = batch.features
        if compute_dtype is not None:
            params = _cast_floats(params, compute_dtype)
            features = _cast_floats(features, compute_dtype)
        outputs = apply(params, features, train=train, key=key)
        if compute_dtype is not None:
            outputs = _cast_floats(outputs, jnp.float32)
        labels = jnp.asarray(batch.labels)
        n = labels.shape[0]
        w = _weights(batch)
        count = w.sum()
        per_ex = _check_per_example("the loss", spec.fn(outputs, labels), n)
        loss_sum = jnp.sum(per_ex * w)
        sums = {"loss": loss_sum}
        for name, fn in metric_fns.items():
            sums[name] = jnp.sum(_check_per_example(f"metric {name!r}", fn(outputs, labels), n) * w)
        sums["count"] = count
        return loss_sum / jnp.maximum(count, 1.0), sums

    return objective


def _means(sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    count = jnp.maximum(sums["count"], 1.0)
    return {k: v / count for k, v in sums.items() if k != "count"}


def make_sum_step(
    model: Any,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: Any = None,
) -> SumStep:
    """Like :func:`make_train_step` (unjitted) but returns weighted sums plus ``count``."""
    objective = _make_objective(model, loss, metrics, compute_dtype)

    def step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        batch = _as_batch(batch)
        key = jax.random.fold_in(state.rng, state.step)
        grads, sums = jax.grad(objective, has_aux=True)(state.params, batch, key, True)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1, state.rng), sums

    return step


def user_step_to_sum_step(train_step: TrainStep) -> SumStep:
    """Wrap a user train step (returning batch means) so it returns weighted sums."""

    def step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        batch = _as_batch(batch)
        count = _weights(batch).sum()
        state, metrics = train_step(state, batch)
        sums = {k: jnp.asarray(v, jnp.float32) * count for k, v in dict(metrics).items()}
        sums["count"] = count
        return state, sums

    return step


def make_eval_sums(
    model: Any,
    loss: str | LossFn,
    *,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: Any = None,
) -> Callable[[PyTree, Any], dict[str, jax.Array]]:
    """Unjitted ``eval(params, batch) -> weighted sums`` (with ``count``)."""
    objective = _make_objective(model, loss, metrics, compute_dtype)

    def evaluate(params: PyTree, batch: Any) -> dict[str, jax.Array]:
        return objective(params, _as_batch(batch), None, False)[1]

    return evaluate


def make_train_step(
    model: Any,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: Any = None,
    jit: bool = True,
) -> TrainStep:
    """Build ``train_step(state, batch) -> (state, metrics)``.

    The step is pure: it computes the weighted mean loss of the batch, its
    gradient, applies ``optimizer`` and returns a new state; the PRNG key for
    dropout is ``fold_in(state.rng, state.step)``.

    Args:
      model: any model accepted by :func:`as_model`.
      loss: a built-in loss name or ``loss(outputs, labels) -> float32[b]``.
      optimizer: any optax ``GradientTransformation``.
      metrics: ``{name: fn(outputs, labels) -> float32[b]}``; default: the
        loss's own (``accuracy`` for classification, ``mae`` for ``mse``).
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision: params and
        float features are cast to it for the forward and backward pass while
        params, gradients and optimizer state stay float32.
      jit: wrap in ``jax.jit``.

    Returns:
      The step; its metrics are ``{"loss": ..., **metrics}`` batch means.

    Example:
      >>> model = MLP(hidden=(16,))
      >>> tx = optax.adam(1e-2)
      >>> state = init_train_state(model, tx, {"x": np.zeros(8, np.float32)})
      >>> step = make_train_step(model, "bce", tx)
      >>> state, m = step(state, ({"x": np.ones(8, np.float32)}, np.ones(8, np.float32)))
    """
    sum_step = make_sum_step(model, loss, optimizer, metrics=metrics, compute_dtype=compute_dtype)

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        state, sums = sum_step(state, batch)
        return state, _means(sums)

    return jax.jit(train_step) if jit else train_step


def make_eval_step(
    model: Any,
    loss: str | LossFn,
    *,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: Any = None,
    jit: bool = True,
) -> EvalStep:
    """Build ``eval_step(params, batch) -> metrics`` (weighted batch means, no dropout).

    Args:
      model: any model accepted by :func:`as_model`.
      loss: a built-in loss name or a per-example loss function.
      metrics: as in :func:`make_train_step`.
      compute_dtype: as in :func:`make_train_step`.
      jit: wrap in ``jax.jit``.

    Returns:
      The eval step.
    """
    sums_fn = make_eval_sums(model, loss, metrics=metrics, compute_dtype=compute_dtype)

    def eval_step(params: PyTree, batch: Any) -> dict[str, jax.Array]:
        return _means(sums_fn(params, batch))

    return jax.jit(eval_step) if jit else eval_step
