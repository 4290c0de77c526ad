"""Write a ``jaxtx.model/1`` directory: the one writer every exporter calls."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._loaded import _check_exported
from ._spec import (
    EXPORT_FILE,
    PREPROCESS_FILE,
    SIGNATURE_FILE,
    ModelLoadError,
    Signature,
    StringLookup,
)

__all__ = ["export_function", "output_avals", "write_model"]


def export_function(
    predict: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    input_specs: Mapping[str, Any],
    platforms: Sequence[str] | None = None,
) -> Any:
    """``jax.export`` a prediction function for the platforms a model is served on.

    Args:
        predict: ``predict({name: array[b, ...]}) -> {output: array[b, ...]}``
            with every constant (parameters, transform values) closed over.
        input_specs: ``{name: jax.ShapeDtypeStruct}`` with a symbolic batch
            dimension first (``jax.export.symbolic_shape("b")``).
        platforms: Lowering platforms; default ``("cpu",)`` plus the current
            backend when that is not the CPU.

    Returns:
        The ``jax.export.Exported``.

    Raises:
        TypeError: ``predict`` does not return a dict.
    """
    import jax

    if platforms is None:
        backend = jax.default_backend()
        platforms = ("cpu",) if backend == "cpu" else (backend, "cpu")
    exported = jax.export.export(jax.jit(predict), platforms=tuple(platforms))(dict(input_specs))
    if not isinstance(jax.tree.unflatten(exported.out_tree, exported.out_avals), Mapping):
        raise TypeError("predict_fn must return a dict {output name: array}")
    return exported


def output_avals(exported: Any) -> dict[str, Any]:
    """``{output name: abstract value}`` of an exported function returning a dict.

    Args:
        exported: A ``jax.export.Exported`` from :func:`export_function`.

    Returns:
        The output avals by name.
    """
    import jax

    return dict(jax.tree.unflatten(exported.out_tree, exported.out_avals))


def write_model(
    directory: str | os.PathLike[str],
    exported: Any,
    signature: Signature | Mapping[str, Any],
    preprocess: Mapping[str, StringLookup | Mapping[str, Any]] | None = None,
    *,
    vjp_order: int = 1,
) -> str:
    """Write ``predict.jaxexport``, ``signature.json`` and ``preprocess.json``.

    The documents are checked the way a reader checks them (and the function
    against them), so whatever this writes loads with :class:`LoadedModel`.

    Args:
        directory: The model directory (created when missing).
        exported: The ``jax.export.Exported`` (see :func:`export_function`).
        signature: A :class:`Signature` or a ``signature.json`` document.
        preprocess: ``{entry key: StringLookup or preprocess.json entry}``;
            written only when non-empty.
        vjp_order: Orders of derivatives serialized with the function (1: the
            loaded function is differentiable once, which feature attributions
            need; 0: smaller file). A function whose VJP cannot be exported is
            written with 0.

    Returns:
        ``directory`` as a string.

    Raises:
        ModelLoadError: The signature, the entries and the function disagree.
    """
    sig = signature if isinstance(signature, Signature) else Signature.from_json(dict(signature))
    lookups = {
        key: v if isinstance(v, StringLookup) else StringLookup.from_json(key, dict(v))
        for key, v in (preprocess or {}).items()
    }
    sources = {lookup.source or key for key, lookup in lookups.items()}
    missing = [s.name for s in sig.inputs if s.dtype == "string" and s.name not in sources]
    if missing:
        raise ModelLoadError(
            f"{PREPROCESS_FILE}: string inputs {missing} have no vocabulary entry; pass "
            f"preprocess={{{missing[0]!r}: {{'kind': 'vocabulary', 'vocabulary': [...], "
            "'num_oov_buckets': 1}}"
        )
    _check_exported(exported, sig, lookups)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_FILE).write_bytes(_serialize(exported, vjp_order))
    (out / SIGNATURE_FILE).write_text(json.dumps(sig.to_json(), indent=2), encoding="utf-8")
    if lookups:
        doc = {key: lookup.to_json() for key, lookup in lookups.items()}
        (out / PREPROCESS_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return os.fspath(directory)


def _serialize(exported: Any, vjp_order: int) -> bytes:
    """``exported.serialize(vjp_order)``, without the VJP where it cannot be exported."""
    if vjp_order > 0:
        try:
            return bytes(exported.serialize(vjp_order=vjp_order))
        except Exception:  # e.g. a primitive without a differentiation rule
            pass
    return bytes(exported.serialize())
