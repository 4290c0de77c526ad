"""Load an exported model directory (``jaxtx.model/1``) and predict on numpy dicts.

This module imports only the standard library, numpy and jax, so it can be
copied next to a serving process that has none of the training code.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["ExportedModel", "load_exported"]

_PREDICT = "predict.jaxexport"
_SIGNATURE = "signature.json"
_PREPROCESS = "preprocess.json"


def _vocab_ids(values: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    vocab = list(spec.get("vocabulary", []))
    index = {v: i for i, v in enumerate(vocab)}
    buckets = int(spec.get("num_oov_buckets", 0))
    default = spec.get("default", "")
    out = np.empty(values.shape, np.int32)
    for i, v in enumerate(values.reshape(-1)):
        if v is None or (isinstance(v, float) and v != v):
            v = default
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        v = str(v)
        if v in index:
            out.flat[i] = index[v]
        elif buckets > 0:
            out.flat[i] = len(vocab) + zlib.crc32(v.encode("utf-8")) % buckets
        else:
            out.flat[i] = len(vocab)
    return out


class ExportedModel:
    """A loaded export: call it with ``{name: array}`` and get ``{name: numpy array}``.

    Attributes:
      signature: the parsed ``signature.json``.
      preprocess: the parsed ``preprocess.json`` (``{}`` if absent).
      exported: the ``jax.export.Exported``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        d = os.fspath(directory)
        with open(os.path.join(d, _SIGNATURE), encoding="utf-8") as f:
            self.signature: dict[str, Any] = json.load(f)
        pre_path = os.path.join(d, _PREPROCESS)
        self.preprocess: dict[str, Any] = {}
        if os.path.exists(pre_path):
            with open(pre_path, encoding="utf-8") as f:
                self.preprocess = json.load(f)
        with open(os.path.join(d, _PREDICT), "rb") as f:
            self.exported = jax.export.deserialize(bytearray(f.read()))
        args, _ = jax.tree.unflatten(self.exported.in_tree, self.exported.in_avals)
        self._avals: dict[str, Any] = dict(args[0])
        self._call = jax.jit(self.exported.call)

    @property
    def input_names(self) -> list[str]:
        """Raw input names, as in the signature."""
        return [i["name"] for i in self.signature.get("inputs", [])] or sorted(self._avals)

    def __call__(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Predict on a batch.

        Args:
          features: ``{name: array[b]}`` with every input of the signature;
            string inputs are raw strings, mapped to ids as ``preprocess.json``
            says.

        Returns:
          ``{output name: numpy array}``.
        """
        missing = [n for n in self._avals if n not in features]
        if missing:
            raise KeyError(
                f"missing input feature(s) {missing}; the model needs {sorted(self._avals)}"
            )
        args = {}
        for name, aval in self._avals.items():
            v = np.asarray(features[name])
            if name in self.preprocess:
                v = _vocab_ids(v.astype(object), self.preprocess[name])
            args[name] = v.astype(aval.dtype, copy=False)
        out = self._call(args)
        return {k: np.asarray(v) for k, v in out.items()}


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
