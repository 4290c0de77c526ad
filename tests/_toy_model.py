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
