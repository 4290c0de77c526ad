"""Load an exported jaxtx model and run predictions with strict input checks.

The model format (``jaxtx.model/1``), `LoadedModel` and the value conversion
live in :mod:`jaxtx.core.model_format`, their one owner; this module keeps the
serving names importable.

Example:
    >>> model = LoadedModel.load("/models/census/3")  # doctest: +SKIP
    >>> model.warmup()  # doctest: +SKIP
    >>> model.predict({"age": [39.0], "workclass": ["Private"]})  # doctest: +SKIP
    {'probabilities': array([0.12], dtype=float32), ...}
"""

from __future__ import annotations

from jaxtx.core.model_format import (
    EXPORT_FILE,
    MODEL_FORMAT,
    PREPROCESS_FILE,
    SIGNATURE_FILE,
    InputError,
    LoadedModel,
    ModelLoadError,
    Signature,
    StringLookup,
    TensorSpec,
    to_model_inputs,
)

__all__ = [
    "EXPORT_FILE",
    "MODEL_FORMAT",
    "PREPROCESS_FILE",
    "SIGNATURE_FILE",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "Signature",
    "StringLookup",
    "TensorSpec",
    "to_model_inputs",
]
