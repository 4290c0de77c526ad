"""Load an exported model directory (``jaxtx.model/1``) and predict on numpy dicts.

Reading goes through :mod:`jaxtx.core.model_format`, the format's one owner,
so this loader maps strings to ids exactly as the serving runtime does
(vocabulary, hash and ``source`` entries of ``preprocess.json``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxtx.core.model_format import LoadedModel

__all__ = ["ExportedModel", "load_exported"]


class ExportedModel:
    """A loaded export: call it with ``{name: array}`` and get ``{name: numpy array}``.

    Attributes:
      signature: the parsed ``signature.json`` (a dict).
      preprocess: the ``preprocess.json`` entries (``{}`` if absent).
      exported: the ``jax.export.Exported``.
      model: the underlying :class:`jaxtx.core.model_format.LoadedModel`.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.model = LoadedModel.load(os.fspath(directory), max_batch_size=sys.maxsize)
        self.signature: dict[str, Any] = self.model.signature.to_json()
        self.preprocess: dict[str, Any] = {k: v.to_json() for k, v in self.model.lookups.items()}
        self.exported = self.model.exported

    @property
    def input_names(self) -> list[str]:
        """Raw input names, as in the signature."""
        return self.model.signature.input_names

    def __call__(self, features: Any) -> dict[str, np.ndarray]:
        """Predict on a batch.

        Args:
          features: ``{name: array[b]}`` with every input of the signature
            (other keys are ignored); string inputs are raw strings, mapped to
            ids as ``preprocess.json`` says. A pyarrow Table, a pandas
            DataFrame or a list of row dicts works too.

        Returns:
          ``{output name: numpy array}``.

        Raises:
          KeyError: an input is missing from the dict.
          jaxtx.core.model_format.InputError: a value does not fit the signature.
        """
        if isinstance(features, Mapping):
            names = self.input_names
            missing = [n for n in names if n not in features]
            if missing:
                raise KeyError(f"missing input feature(s) {missing}; the model needs {names}")
            features = {n: features[n] for n in names}
        return self.model.predict(features)


def load_exported(directory: str | os.PathLike[str]) -> ExportedModel:
    """Load a directory written by :func:`export_model`.

    Args:
      directory: holds ``predict.jaxexport``, ``signature.json`` and optionally
        ``preprocess.json``.

    Returns:
      A callable ``model(features) -> outputs`` over numpy dicts.

    Example:
      >>> model = load_exported("out/model")  # doctest: +SKIP
      >>> model({"age": np.array([39.0], np.float32)})["probabilities"]  # doctest: +SKIP
    """
    return ExportedModel(directory)
