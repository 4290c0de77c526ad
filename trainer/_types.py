"""Shared type aliases and the :class:`Batch` container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeAlias

import jax
import numpy as np

__all__ = ["Array", "Batch", "Features", "PyTree"]

Array: TypeAlias = jax.Array | np.ndarray
"""A JAX or NumPy array."""

PyTree: TypeAlias = Any
"""A nested structure of arrays (dicts, lists, tuples, NamedTuples)."""

Features: TypeAlias = Mapping[str, Array]
"""Model inputs: ``{name: float32[b] | int32[b]}`` (numeric features may also be ``[b, d]``)."""


class Batch(NamedTuple):
    """One training or evaluation batch.

    Attributes:
      features: ``{name: array[b]}``.
      labels: ``array[b]`` (or ``[b, k]`` for multi-output regression).
      weights: optional ``float32[b]`` per-example weights. The trainer pads the
        last, smaller batch of an epoch up to the full batch size and gives the
        padding rows weight 0, so every step compiles once; losses and metrics
        are weighted means.

    Example:
      >>> b = Batch({"x": np.zeros(4, np.float32)}, np.ones(4, np.float32))
      >>> b.weights is None
      True
    """

    features: Features
    labels: Array
    weights: Array | None = None
