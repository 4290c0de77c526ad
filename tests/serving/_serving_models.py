"""Small exported models (format ``jaxtx.model/1``) built for the serving tests."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

__all__ = ["VOCAB", "expected_outputs", "write_logistic_model", "write_vector_model"]

VOCAB = ["red", "green", "blue"]
NUM_OOV = 2
_W = np.array([0.5, -0.25], dtype=np.float32)
_EMB = np.array([0.1, -0.2, 0.3, 0.05, -0.05], dtype=np.float32)


def _bias(version: int) -> float:
    return 0.5 * version


def _color_id(value: str | None) -> int:
    import zlib

    value = "" if value is None else value
    if value in VOCAB:
        return VOCAB.index(value)
    return len(VOCAB) + zlib.crc32(value.encode("utf-8")) % NUM_OOV


def expected_outputs(
    x1: list[float], x2: list[float], color: list[str | None], version: int
) -> dict[str, np.ndarray]:
    """Reference outputs of `write_logistic_model`'s model, computed with numpy.

    Args:
        x1: First float feature, one value per row.
        x2: Second float feature.
        color: String feature.
        version: Model version (each version has its own bias).

    Returns:
        ``{"probabilities": ..., "logits": ...}``.
    """
    ids = np.array([_color_id(c) for c in color])
    logits = (
        _W[0] * np.asarray(x1, np.float32)
        + _W[1] * np.asarray(x2, np.float32)
        + _EMB[ids]
        + np.float32(_bias(version))
    ).astype(np.float32)
    return {"probabilities": 1.0 / (1.0 + np.exp(-logits)), "logits": logits}


def _export(version: int) -> bytes:
    bias = _bias(version)
    w = jnp.asarray(_W)
    emb = jnp.asarray(_EMB)

    def predict(features: dict[str, jax.Array]) -> dict[str, jax.Array]:
        logits = w[0] * features["x1"] + w[1] * features["x2"] + emb[features["color"]] + bias
        return {"probabilities": jax.nn.sigmoid(logits), "logits": logits}

    (b,) = export.symbolic_shape("b")
    specs = {
        "x1": jax.ShapeDtypeStruct((b,), jnp.float32),
        "x2": jax.ShapeDtypeStruct((b,), jnp.float32),
        "color": jax.ShapeDtypeStruct((b,), jnp.int32),
    }
    return bytes(export.export(jax.jit(predict))(specs).serialize())


_CACHE: dict[int, bytes] = {}

SIGNATURE = {
    "format": "jaxtx.model/1",
    "name": "logistic",
    "task": "binary_classification",
    "inputs": [
        {"name": "x1", "dtype": "float32", "shape": [None]},
        {"name": "x2", "dtype": "float32", "shape": [None]},
        {"name": "color", "dtype": "string", "shape": [None]},
    ],
    "outputs": [
        {"name": "probabilities", "dtype": "float32", "shape": [None]},
        {"name": "logits", "dtype": "float32", "shape": [None]},
    ],
}
PREPROCESS = {
    "color": {"kind": "vocabulary", "vocabulary": VOCAB, "num_oov_buckets": NUM_OOV, "default": ""}
}


def write_logistic_model(model_dir: Path, version: int, *, atomic: bool = True) -> Path:
    """Write version ``version`` of the logistic test model under ``model_dir``.

    Args:
        model_dir: ``<base>/<model>`` directory (created when missing).
        version: Version number; also sets the model's bias, so versions differ.
        atomic: Write into a hidden temporary directory and rename it into place.

    Returns:
        The version directory.
    """
    if version not in _CACHE:
        _CACHE[version] = _export(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    target = model_dir / f".tmp-{uuid.uuid4().hex}" if atomic else final
    target.mkdir(parents=True, exist_ok=False)
    (target / "signature.json").write_text(json.dumps(SIGNATURE))
    (target / "preprocess.json").write_text(json.dumps(PREPROCESS))
    (target / "predict.jaxexport").write_bytes(_CACHE[version])
    if atomic:
        if final.exists():
            shutil.rmtree(final)
        os.replace(target, final)
    return final


def write_vector_model(model_dir: Path, version: int = 1) -> Path:
    """Write a model with an int32, a bool and a fixed-width float32 ``[null, 3]`` input.

    ``total = n + sum(vec) + flag`` (float32), no string features.

    Args:
        model_dir: ``<base>/<model>`` directory.
        version: Version number.

    Returns:
        The version directory.
    """

    def predict(features: dict[str, jax.Array]) -> dict[str, jax.Array]:
        total = (
            features["n"].astype(jnp.float32)
            + features["vec"].sum(axis=1)
            + features["flag"].astype(jnp.float32)
        )
        return {"total": total}

    (b,) = export.symbolic_shape("b")
    specs = {
        "n": jax.ShapeDtypeStruct((b,), jnp.int32),
        "vec": jax.ShapeDtypeStruct((b, 3), jnp.float32),
        "flag": jax.ShapeDtypeStruct((b,), jnp.bool_),
    }
    blob = bytes(export.export(jax.jit(predict))(specs).serialize())
    signature = {
        "format": "jaxtx.model/1",
        "name": "vector",
        "task": "regression",
        "inputs": [
            {"name": "n", "dtype": "int32", "shape": [None]},
            {"name": "vec", "dtype": "float32", "shape": [None, 3]},
            {"name": "flag", "dtype": "bool", "shape": [None]},
        ],
        "outputs": [{"name": "total", "dtype": "float32", "shape": [None]}],
    }
    final = model_dir / str(version)
    final.mkdir(parents=True)
    (final / "signature.json").write_text(json.dumps(signature))
    (final / "predict.jaxexport").write_bytes(blob)
    return final
