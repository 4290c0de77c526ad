"""A small exported model with its transform inside, and raw tables for it (tests only)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
from jax import export

from jaxtx.core.model_format import LoadedModel, export_function, make_signature, write_model

NUMERIC = ("x1", "x2", "x3", "x4")
WEIGHTS = np.array([2.0, -1.2, 0.6, 0.15], dtype=np.float32)
COLORS = ["red", "green", "blue"]
COLOR_EFFECT = np.array([0.9, -0.9, 0.0, 0.0], dtype=np.float32)  # last: out of vocabulary
MEANS = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
STDS = np.array([2.0, 1.0, 0.5, 4.0], dtype=np.float32)


def write_toy_model(directory: Path, task: str, *, vjp_order: int = 1) -> LoadedModel:
    """A model with its transform inside: z-score (NaN -> mean) of raw x, color ids."""
    w, emb = jnp.asarray(WEIGHTS), jnp.asarray(COLOR_EFFECT)
    means, stds = jnp.asarray(MEANS), jnp.asarray(STDS)

    def predict(features):
        z = 0.0
        for i, name in enumerate(NUMERIC):
            x = features[name]
            x = jnp.where(jnp.isnan(x), means[i], x)
            z = z + w[i] * (x - means[i]) / stds[i]
        z = z + emb[features["color"]]
        if task == "regression":
            return {"predictions": z}
        return {"probabilities": jax.nn.sigmoid(z), "logits": z}

    (b,) = export.symbolic_shape("b")
    specs = {n: jax.ShapeDtypeStruct((b,), jnp.float32) for n in NUMERIC}
    specs["color"] = jax.ShapeDtypeStruct((b,), jnp.int32)
    outputs = (
        {"predictions": "float32"}
        if task == "regression"
        else {
            "probabilities": "float32",
            "logits": "float32",
        }
    )
    sig = make_signature(
        "toy", task, {**{n: "float32" for n in NUMERIC}, "color": "string"}, outputs
    )
    pre = {"color": {"kind": "vocabulary", "vocabulary": COLORS, "num_oov_buckets": 1}}
    write_model(directory, export_function(predict, specs, ("cpu",)), sig, pre, vjp_order=vjp_order)
    return LoadedModel.load(directory)


def toy_table(n: int, seed: int = 0, *, missing: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {
        name: (MEANS[i] + STDS[i] * rng.normal(size=n)).astype(np.float32)
        for i, name in enumerate(NUMERIC)
    }
    if missing:
        cols["x1"][::7] = np.nan
    cols["color"] = rng.choice(COLORS, size=n)
    cols["group"] = rng.choice(["a", "b"], size=n, p=[0.97, 0.03])
    return pa.table(cols)


def toy_mlp_params(seed: int = 0, hidden: int = 64) -> dict[str, np.ndarray]:
    """Parameters of a small MLP over the toy features (4 numbers + a color embedding)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0.0, 0.7, (len(NUMERIC), hidden)).astype(np.float32),
        "b1": rng.normal(0.0, 0.1, hidden).astype(np.float32),
        "emb": rng.normal(0.0, 0.5, (len(COLORS) + 1, hidden)).astype(np.float32),
        "w2": rng.normal(0.0, 0.3, (hidden, 1)).astype(np.float32),
        "b2": np.zeros(1, np.float32),
    }


def toy_mlp_predict(params, features):
    """``predict_fn(params, features)`` of the toy MLP (z-scored numbers, NaN -> mean)."""
    cols = [
        (jnp.where(jnp.isnan(features[n]), MEANS[i], features[n]) - MEANS[i]) / STDS[i]
        for i, n in enumerate(NUMERIC)
    ]
    x = jnp.stack(cols, axis=1)
    emb = jnp.take(jnp.asarray(params["emb"]), features["color"], axis=0)
    h = jax.nn.relu(x @ params["w1"] + params["b1"] + emb)
    logits = (h @ params["w2"] + params["b2"])[:, 0]
    return {"probabilities": jax.nn.sigmoid(logits), "logits": logits}


def write_toy_mlp(directory: Path, params, predict_fn=toy_mlp_predict) -> LoadedModel:
    """Export ``predict_fn`` with ``params`` baked in as a binary-classification model."""
    (b,) = export.symbolic_shape("b")
    specs = {n: jax.ShapeDtypeStruct((b,), jnp.float32) for n in NUMERIC}
    specs["color"] = jax.ShapeDtypeStruct((b,), jnp.int32)
    host = jax.tree.map(np.asarray, params)
    sig = make_signature(
        "toy_mlp",
        "binary_classification",
        {**{n: "float32" for n in NUMERIC}, "color": "string"},
        {"probabilities": "float32", "logits": "float32"},
    )
    pre = {"color": {"kind": "vocabulary", "vocabulary": COLORS, "num_oov_buckets": 1}}
    exported = export_function(lambda f: predict_fn(host, f), specs, ("cpu",))
    write_model(directory, exported, sig, pre)
    return LoadedModel.load(directory)
