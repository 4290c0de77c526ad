"""Weight-only int8 quantization of an export: int8 weights, per-channel scales.

:func:`quantize_predict` turns ``predict_fn(params, features)`` and its
parameters into a function of quantized parameters that dequantizes them
inside the exported program: every float parameter with at least two
dimensions and ``min_size`` entries (dense kernels, embedding tables) is
stored as int8 values plus one float32 scale per output channel (its last
axis; symmetric, ``scale = max|w| / 127``); other parameters (biases, norms)
stay as they are. Exported through the usual writer, the result is a normal
``jaxtx.model/1`` directory (about a quarter of the float size for the
weights), served and loaded like any other. :func:`write_quantization` adds
the sidecar ``quantization.json``::

    {"format": "jaxtx.quantization/1", "scheme": "int8_weight_only_per_channel",
     "num_quantized": 3, "num_kept": 3, "quantized_bytes": 12544, "float_bytes": 49408,
     "max_abs_error": 0.0021,
     "parameters": [{"path": "layers/0/w", "shape": [13, 64], "dtype": "float32"}, ...]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "QUANTIZATION_FILE",
    "QuantizedArray",
    "dequantize",
    "quantize_predict",
    "read_quantization",
    "write_quantization",
]

QUANTIZATION_FILE = "quantization.json"
QUANTIZATION_FORMAT = "jaxtx.quantization/1"
SCHEME = "int8_weight_only_per_channel"


class QuantizedArray(NamedTuple):
    """int8 values and float32 scales per output channel (the last axis)."""

    values: Any
    scale: Any


def _is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedArray)


def _quantize(w: np.ndarray) -> QuantizedArray:
    axes = tuple(range(w.ndim - 1))
    peak = np.max(np.abs(w), axis=axes, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return QuantizedArray(q, scale)


def dequantize(params: Any) -> Any:
    """Float parameters from quantized ones (inside a traced function: jnp ops).

    Args:
      params: a parameter tree whose quantized leaves are :class:`QuantizedArray`.

    Returns:
      The tree with every quantized leaf as ``values * scale`` (float32).
    """
    import jax
    import jax.numpy as jnp

    def restore(x: Any) -> Any:
        if not _is_quantized(x):
            return x
        # jnp (not numpy) operations, so that they are staged into the exported
        # program and the int8 values, not their float product, are its constants.
        return jnp.asarray(x.values).astype(jnp.float32) * jnp.asarray(x.scale)

    return jax.tree.map(restore, params, is_leaf=_is_quantized)


def quantize_predict(
    predict_fn: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]],
    params: Any,
    *,
    min_size: int = 256,
) -> tuple[Callable[[Any, Mapping[str, Any]], Mapping[str, Any]], Any, dict[str, Any]]:
    """An int8 weight-only variant of a prediction function and its parameters.

    Args:
      predict_fn: ``predict_fn(params, features) -> {output: array}``.
      params: its float parameters (a pytree of arrays).
      min_size: smaller parameters are kept in float.

    Returns:
      ``(quantized_predict_fn, quantized_params, info)``: export the first with
      the second baked in (e.g. through ``export_transformed_model``); ``info``
      is the ``quantization.json`` document.
    """
    import jax

    host = jax.tree.map(np.asarray, jax.device_get(params))
    leaves, _ = jax.tree_util.tree_flatten_with_path(host)
    described, quantized_bytes, float_bytes, error = [], 0, 0, 0.0

    def convert(path: Any, w: np.ndarray) -> Any:
        nonlocal quantized_bytes, float_bytes, error
        float_bytes += w.nbytes
        if w.dtype.kind != "f" or w.ndim < 2 or w.size < min_size:
            quantized_bytes += w.nbytes
            return w
        q = _quantize(w.astype(np.float32))
        quantized_bytes += q.values.nbytes + q.scale.nbytes
        error = max(error, float(np.max(np.abs(q.values * q.scale - w))))
        described.append(
            {"path": jax.tree_util.keystr(path), "shape": list(w.shape), "dtype": str(w.dtype)}
        )
        return q

    qparams = jax.tree_util.tree_map_with_path(convert, host)
    info = {
        "format": QUANTIZATION_FORMAT,
        "scheme": SCHEME,
        "num_quantized": len(described),
        "num_kept": len(leaves) - len(described),
        "quantized_bytes": int(quantized_bytes),
        "float_bytes": int(float_bytes),
        "max_abs_error": error,
        "parameters": described,
    }

    def quantized_predict_fn(qp: Any, features: Mapping[str, Any]) -> Mapping[str, Any]:
        return predict_fn(dequantize(qp), features)

    return quantized_predict_fn, qparams, info


def write_quantization(model_dir: str | os.PathLike[str], info: Mapping[str, Any]) -> None:
    """Write ``quantization.json`` (the output of :func:`quantize_predict`) into a model dir."""
    path = Path(model_dir) / QUANTIZATION_FILE
    path.write_text(json.dumps(dict(info), indent=2), encoding="utf-8")


def read_quantization(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``quantization.json`` of a model directory, or None for a float model."""
    path = Path(model_dir) / QUANTIZATION_FILE
    if not path.exists():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))
