"""Export a prediction function with ``jax.export`` (the ``jaxtx.model/1`` format).

``export_model`` closes ``predict_fn`` over the trained parameters (they are
baked into the program as constants), traces it with a symbolic batch
dimension ``b`` and writes:

* ``predict.jaxexport``: ``exported.serialize()``, callable for any batch size;
* ``signature.json``: inputs and outputs (see ``docs/formats.md``);
* ``preprocess.json``: string features -> integer ids (optional);
* ``history.json``: training history (optional).

The exported function takes ``{name: array[b]}`` in which each ``string``
input of the signature has already been mapped to ``int32`` ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtx.core.model_format import (
    EXPORT_DTYPES,
    MODEL_FORMAT,
    export_function,
    make_signature,
    output_avals,
    write_model,
)

from ._history import History
from ._types import PyTree

__all__ = ["FORMAT", "export_model", "make_signature"]

FORMAT = MODEL_FORMAT


def _input_specs(
    signature: Mapping[str, Any], preprocess: Mapping[str, Any], b: Any
) -> dict[str, jax.ShapeDtypeStruct]:
    inputs = signature.get("inputs")
    if not inputs:
        raise ValueError("signature has no 'inputs'; see make_signature()")
    specs = {}
    for item in inputs:
        name, dtype = item["name"], str(item.get("dtype", "float32"))
        if dtype not in EXPORT_DTYPES:
            raise ValueError(
                f"input {name!r} has dtype {dtype!r}; use one of {sorted(EXPORT_DTYPES)}"
            )
        if dtype == "string" and name not in preprocess:
            raise ValueError(
                f"input {name!r} is a string but preprocess has no entry for it; pass "
                f"preprocess={{{name!r}: {{'kind': 'vocabulary', 'vocabulary': [...], "
                "'num_oov_buckets': 1}}"
            )
        shape = list(item.get("shape", [None]))
        if not shape or shape[0] is not None:
            raise ValueError(f"input {name!r}: shape must start with null (the batch), got {shape}")
        if any(s is None for s in shape[1:]):
            raise ValueError(f"input {name!r}: only the first dimension may be null, got {shape}")
        specs[name] = jax.ShapeDtypeStruct((b, *shape[1:]), jnp.dtype(EXPORT_DTYPES[dtype]))
    return specs


def export_model(
    predict_fn: Callable[[PyTree, Mapping[str, jax.Array]], Mapping[str, jax.Array]],
    params: PyTree,
    signature: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    preprocess: Mapping[str, Any] | None = None,
    *,
    history: History | None = None,
    platforms: Sequence[str] | None = None,
) -> str:
    """Serialize ``predict_fn(params, features)`` for any batch size.

    Args:
      predict_fn: ``predict(params, features) -> {output: array[b, ...]}``
        (e.g. :attr:`Trainer.predict_fn`); must work for a symbolic batch size.
      params: trained parameters, baked into the export as constants.
      signature: the ``signature.json`` document (see :func:`make_signature`);
        its output names must match the keys ``predict_fn`` returns.
      out_dir: directory to write (created if needed).
      preprocess: ``preprocess.json`` contents: ``{feature: {"kind":
        "vocabulary", "vocabulary": [...], "num_oov_buckets": n, "default": ""}}``.
      history: written as ``history.json`` when given.
      platforms: lowering platforms; default ``("cpu",)`` plus the current
        backend when that is not the CPU.

    Returns:
      ``out_dir``.

    Example:
      >>> export_model(trainer.predict_fn, trainer.state.params, sig, "out/model")  # doctest: +SKIP
    """
    out = os.fspath(out_dir)
    preprocess = dict(preprocess or {})
    sig = {"format": FORMAT, **dict(signature)}
    (b,) = jax.export.symbolic_shape("b")
    specs = _input_specs(sig, preprocess, b)
    host_params = jax.tree.map(np.asarray, jax.device_get(params))

    def predict(features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return dict(predict_fn(host_params, features))

    exported = export_function(predict, specs, platforms)
    out_avals = output_avals(exported)
    declared = [o["name"] for o in sig.get("outputs", [])]
    if declared:
        missing = [n for n in declared if n not in out_avals]
        if missing:
            raise ValueError(
                f"signature outputs {missing} are not returned by predict_fn "
                f"(it returns {sorted(out_avals)}); fix the signature or the function"
            )
    else:
        sig["outputs"] = [
            {"name": k, "dtype": str(v.dtype), "shape": [None, *v.shape[1:]]}
            for k, v in out_avals.items()
        ]
    write_model(out, exported, sig, preprocess)
    if history is not None:
        history.save(os.path.join(out, "history.json"))
    return out
