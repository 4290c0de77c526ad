"""Training state: parameters, optimizer state, step counter and PRNG key."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._models import as_model
from ._types import Features, PyTree

__all__ = ["TrainState", "init_train_state"]


class TrainState(NamedTuple):
    """Everything that changes during training, as a pytree of arrays.

    The model's ``apply`` and the optimizer are not part of the state (they are
    closed over by the step function), so a ``TrainState`` can be checkpointed,
    sharded and passed through ``jax.jit`` as it is.

    Attributes:
      params: model parameters (float32).
      opt_state: the optax optimizer state.
      step: ``int32`` scalar, the number of optimizer steps taken.
      rng: base PRNG key; step ``s`` uses ``jax.random.fold_in(rng, s)``, so the
        randomness of a step does not depend on how training got there (resumed
        or not).
    """

    params: PyTree
    opt_state: PyTree
    step: jax.Array
    rng: jax.Array

    @classmethod
    def create(
        cls, params: PyTree, optimizer: optax.GradientTransformation, rng: jax.Array
    ) -> TrainState:
        """Build the state at step 0.

        Args:
          params: initial parameters.
          optimizer: the optax transformation whose state to initialise.
          rng: a PRNG key (``jax.random.key(seed)``).

        Returns:
          A new ``TrainState``.

        Example:
          >>> params = {"w": jnp.zeros(3)}
          >>> s = TrainState.create(params, optax.sgd(0.1), jax.random.key(0))
          >>> int(s.step)
          0
        """
        return cls(params, optimizer.init(params), jnp.zeros((), jnp.int32), rng)


def init_train_state(
    model: Any,
    optimizer: optax.GradientTransformation,
    example_features: Features,
    *,
    seed: int = 0,
    key: jax.Array | None = None,
) -> TrainState:
    """Initialise a model and its optimizer from a seed.

    The same seed (or key) gives bit-identical parameters on the same machine.

    Args:
      model: any model accepted by :func:`as_model`.
      optimizer: an optax ``GradientTransformation``.
      example_features: a batch of features (only shapes and dtypes matter).
      seed: integer seed, used when ``key`` is not given.
      key: a PRNG key; overrides ``seed``.

    Returns:
      The :class:`TrainState` at step 0.

    Example:
      >>> state = init_train_state(MLP(hidden=(8,)), optax.adam(1e-3), {"x": np.zeros(4, np.float32)})
    """
    model = as_model(model)
    key = jax.random.key(seed) if key is None else key
    feats = {k: np.asarray(v) for k, v in example_features.items()}

    def create(key: jax.Array, feats: Features) -> TrainState:
        init_key, rng = jax.random.split(key)
        params = jax.tree.map(jnp.asarray, model.init(init_key, feats))
        return TrainState.create(params, optimizer, rng)

    # one compiled program instead of one per eager op
    return jax.jit(create)(key, feats)
