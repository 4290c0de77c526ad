"""The exported-model format ``jaxtx.model/1``: its one owner.

Everything that writes or reads a model directory goes through this package
(see ``docs/formats.md``):

* the format: :data:`MODEL_FORMAT`, the file names, :class:`Signature`,
  :class:`TensorSpec`, :class:`StringLookup` (``preprocess.json`` entries:
  vocabulary, hash, ``source``), :func:`make_signature`;
* writing: :func:`export_function` and :func:`write_model`; an int8
  weight-only variant: :func:`quantize_predict`, :func:`write_quantization`;
* reading and calling: :class:`LoadedModel`;
* converting raw rows (a column dict, a pyarrow Table or RecordBatch, a
  pandas DataFrame, a list of row dicts) to model inputs:
  :func:`to_model_inputs`.

Importing it needs numpy only; jax, pyarrow and pandas are imported when used.

Example:
    >>> model = LoadedModel.load("/models/census/3")  # doctest: +SKIP
    >>> model.predict(pyarrow_table)  # doctest: +SKIP
    {'probabilities': array([0.12, ...], dtype=float32), ...}
"""

from __future__ import annotations

from ._loaded import LoadedModel
from ._quantize import (
    QUANTIZATION_FILE,
    QuantizedArray,
    dequantize,
    quantize_predict,
    read_quantization,
    write_quantization,
)
from ._spec import (
    EXPORT_DTYPES,
    EXPORT_FILE,
    MODEL_FORMAT,
    PREPROCESS_FILE,
    SIGNATURE_FILE,
    InputError,
    ModelLoadError,
    Signature,
    StringLookup,
    TensorSpec,
    make_signature,
    read_lookups,
    read_signature,
)
from ._values import missing_column, table_columns, to_model_inputs
from ._write import export_function, output_avals, write_model

__all__ = [
    "EXPORT_DTYPES",
    "EXPORT_FILE",
    "MODEL_FORMAT",
    "PREPROCESS_FILE",
    "QUANTIZATION_FILE",
    "SIGNATURE_FILE",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "QuantizedArray",
    "Signature",
    "StringLookup",
    "TensorSpec",
    "dequantize",
    "export_function",
    "make_signature",
    "missing_column",
    "output_avals",
    "quantize_predict",
    "read_quantization",
    "read_lookups",
    "read_signature",
    "table_columns",
    "to_model_inputs",
    "write_model",
    "write_quantization",
]
