"""The ``jaxtx.model/1`` format: file names, the signature and the string lookups.

See ``docs/formats.md``. This is the one place that knows what
``signature.json`` and ``preprocess.json`` hold; writers and readers go
through it.
"""

from __future__ import annotations

import difflib
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FORMAT = "jaxtx.model/1"
SIGNATURE_FILE = "signature.json"
EXPORT_FILE = "predict.jaxexport"
PREPROCESS_FILE = "preprocess.json"

_FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_SUPPORTED_DTYPES = _FLOAT_DTYPES | _INT_DTYPES | {"bool", "string"}
#: Export dtypes of signature dtypes: what the exported function takes (strings: their ids).
EXPORT_DTYPES = {
    "float32": "float32",
    "float64": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int32": "int32",
    "int64": "int32",
    "bool": "bool",
    "string": "int32",
}


class InputError(ValueError):
    """A request does not match the model's signature.

    Args:
        field: The feature (or request field) at fault.
        expected: What the signature asks for.
        found: What the request holds instead.
        hint: What to do about it (optional).
    """

    def __init__(self, field: str, expected: str, found: str, hint: str = "") -> None:
        self.field = field
        self.expected = expected
        self.found = found
        self.hint = hint
        message = f"invalid input '{field}': expected {expected}, found {found}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)

    @classmethod
    def unknown_feature(cls, key: str, names: Sequence[str], where: str = "") -> InputError:
        """Error for a feature the signature does not have, suggesting the closest name.

        Args:
            key: The unknown name.
            names: The signature's input names.
            where: Where it was found (e.g. ``instances[3]``), for the message.

        Returns:
            The error (to raise).
        """
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else "remove it"
        found = f"unknown feature '{key}'" + (f" in {where}" if where else "")
        return cls(key, f"one of the features {list(names)}", found, hint)


class ModelLoadError(RuntimeError):
    """A model directory cannot be loaded; the message says which file and why."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model's signature.

    Attributes:
        name: Feature or output name.
        dtype: ``float32``, ``int64``, ``bool``, ``string``...
        shape: Dimensions; ``None`` is the batch dimension (always first).
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...] = (None,)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row (the dimensions after the batch dimension)."""
        return tuple(int(d) for d in self.shape[1:])  # type: ignore[arg-type]

    def describe(self) -> str:
        """Human-readable ``dtype[shape]`` with ``-1`` for the batch dimension.

        Returns:
            For example ``float32 values of shape [-1, 3]``.
        """
        dims = ", ".join("-1" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} values of shape [{dims}]"

    def to_json(self) -> dict[str, Any]:
        """Serialize as in ``signature.json``.

        Returns:
            ``{"name", "dtype", "shape"}`` with ``null`` for the batch dimension.
        """
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of an exported model (``signature.json``).

    Attributes:
        inputs: Raw features a client sends, one value (or fixed-shape array) per row.
        outputs: Named outputs of the exported function.
        name: Model name recorded at export time.
        task: Task recorded at export time (e.g. ``binary_classification``).
        format: Format tag, ``jaxtx.model/1``.
        extra: Any other top-level keys, kept as they are.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str = ""
    task: str = ""
    format: str = MODEL_FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        """Input names in signature order."""
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in signature order."""
        return [spec.name for spec in self.outputs]

    def input(self, name: str) -> TensorSpec:
        """Look up one input.

        Args:
            name: Input name.

        Returns:
            Its spec.

        Raises:
            KeyError: No such input.
        """
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @classmethod
    def from_json(cls, data: Any, source: str = SIGNATURE_FILE) -> Signature:
        """Parse and check the content of ``signature.json``.

        Args:
            data: The decoded JSON document.
            source: File name used in error messages.

        Returns:
            The signature.

        Raises:
            ModelLoadError: The document does not follow ``jaxtx.model/1``.
        """
        if not isinstance(data, dict):
            raise ModelLoadError(f"{source}: expected a JSON object, found {type(data).__name__}")
        fmt = data.get("format", MODEL_FORMAT)
        if not isinstance(fmt, str) or not fmt.startswith("jaxtx.model/"):
            raise ModelLoadError(
                f"{source}: format {fmt!r} is not a jaxtx model; expected {MODEL_FORMAT!r}"
            )
        inputs = _parse_specs(data.get("inputs"), f"{source}: inputs")
        outputs = _parse_specs(data.get("outputs"), f"{source}: outputs")
        for spec in outputs:
            if spec.dtype == "string":
                raise ModelLoadError(f"{source}: output {spec.name!r} cannot be a string")
        known = {"format", "name", "task", "inputs", "outputs"}
        return cls(
            inputs=inputs,
            outputs=outputs,
            name=str(data.get("name", "")),
            task=str(data.get("task", "")),
            format=fmt,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        """Serialize as ``signature.json``.

        Returns:
            The JSON-ready document.
        """
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            {
                "format": self.format,
                "name": self.name,
                "task": self.task,
                "inputs": [spec.to_json() for spec in self.inputs],
                "outputs": [spec.to_json() for spec in self.outputs],
            }
        )
        return doc


def _parse_specs(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ModelLoadError(f"{where}: expected a non-empty list of {{name, dtype, shape}}")
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ModelLoadError(f"{where}[{i}]: expected an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ModelLoadError(f"{where}[{i}]: 'name' must be a non-empty string")
        if name in seen:
            raise ModelLoadError(f"{where}: name {name!r} appears twice")
        seen.add(name)
        dtype = item.get("dtype")
        if dtype not in _SUPPORTED_DTYPES:
            raise ModelLoadError(
                f"{where}[{i}] ({name}): dtype {dtype!r} is not supported; "
                f"use one of {sorted(_SUPPORTED_DTYPES)}"
            )
        shape = item.get("shape", [None])
        if (
            not isinstance(shape, list)
            or not shape
            or shape[0] is not None
            or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape[1:])
        ):
            raise ModelLoadError(
                f"{where}[{i}] ({name}): shape {shape!r} must be [null, d1, ...] with a "
                "null batch dimension first and fixed non-negative sizes after it"
            )
        specs.append(TensorSpec(name=name, dtype=dtype, shape=tuple(shape)))
    return tuple(specs)


@dataclass(frozen=True)
class StringLookup:
    """Maps strings to integer ids as ``preprocess.json`` says.

    id = index in ``vocabulary``, else ``len(vocabulary) + crc32(utf-8) %
    num_oov_buckets``. Missing values (``None``) take ``default`` first. A
    ``"kind": "hash"`` entry is the same with an empty vocabulary and
    ``num_oov_buckets = num_buckets``: id = ``crc32(utf-8) % num_buckets``.

    Attributes:
        vocabulary: Known values, in id order.
        num_oov_buckets: Buckets for values outside the vocabulary (0: reject them).
        default: Value used for missing values (``None``: reject them).
        source: Signature input the strings come from (``None``: the entry's own
            name); several entries may read the same input.
        kind: ``"vocabulary"`` or ``"hash"``.
    """

    vocabulary: tuple[str, ...]
    num_oov_buckets: int = 1
    default: str | None = ""
    source: str | None = None
    kind: str = "vocabulary"
    _index: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.vocabulary)})

    @property
    def num_ids(self) -> int:
        """Number of distinct ids (vocabulary plus OOV buckets)."""
        return len(self.vocabulary) + self.num_oov_buckets

    @classmethod
    def from_json(cls, name: str, data: Any) -> StringLookup:
        """Parse one entry of ``preprocess.json``.

        Args:
            name: Feature name (for error messages).
            data: The entry, ``{"kind": "vocabulary", ...}``.

        Returns:
            The lookup.

        Raises:
            ModelLoadError: The entry is malformed or of an unknown kind.
        """
        where = f"{PREPROCESS_FILE}: {name!r}"
        if not isinstance(data, dict):
            raise ModelLoadError(f"{where}: expected an object")
        kind = data.get("kind", "vocabulary")
        if kind not in ("vocabulary", "hash"):
            raise ModelLoadError(
                f"{where}: kind {kind!r} is not supported; use 'vocabulary' or 'hash'"
            )
        source = data.get("source")
        if source is not None and (not isinstance(source, str) or not source):
            raise ModelLoadError(f"{where}: 'source' must be the name of a string input")
        default = data.get("default", "")
        if default is not None and not isinstance(default, str):
            raise ModelLoadError(f"{where}: 'default' must be a string or null")
        if kind == "hash":
            buckets = data.get("num_buckets")
            if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
                raise ModelLoadError(f"{where}: 'num_buckets' must be an integer >= 1")
            return cls((), num_oov_buckets=buckets, default=default, source=source, kind=kind)
        vocab = data.get("vocabulary")
        if not isinstance(vocab, list) or any(not isinstance(v, str) for v in vocab):
            raise ModelLoadError(f"{where}: 'vocabulary' must be a list of strings")
        oov = data.get("num_oov_buckets", 1)
        if not isinstance(oov, int) or isinstance(oov, bool) or oov < 0:
            raise ModelLoadError(f"{where}: 'num_oov_buckets' must be an integer >= 0")
        return cls(vocabulary=tuple(vocab), num_oov_buckets=oov, default=default, source=source)

    def id_of(self, value: str) -> int | None:
        """Id of one value.

        Args:
            value: The string.

        Returns:
            Its id, or ``None`` when it is outside the vocabulary and there are
            no OOV buckets.
        """
        idx = self._index.get(value)
        if idx is not None:
            return idx
        if self.num_oov_buckets == 0:
            return None
        return len(self.vocabulary) + zlib.crc32(value.encode("utf-8")) % self.num_oov_buckets

    def ids(self, values: Iterable[str | None]) -> np.ndarray:
        """Ids of many values, missing ones (``None``) taking :attr:`default`.

        This is the one string-to-id mapping of jaxtx: the serving runtime,
        ``load_exported`` and the transform graph all use it.

        Args:
            values: Strings (or ``None`` for a missing value).

        Returns:
            ``int64`` ids, one per value.

        Raises:
            ValueError: A value is outside the vocabulary and there are no OOV
                buckets, or missing with no default.
        """
        index, size, buckets = self._index, len(self.vocabulary), self.num_oov_buckets
        out = []
        for v in values:
            if v is None:
                if self.default is None:
                    raise ValueError("a missing value and no 'default' to use for it")
                v = self.default
            idx = index.get(v)
            if idx is None:
                if buckets == 0:
                    raise ValueError(
                        f"{v!r} is outside the vocabulary and there are no OOV buckets"
                    )
                idx = size + zlib.crc32(v.encode("utf-8")) % buckets
            out.append(idx)
        return np.array(out, dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        """Serialize as a ``preprocess.json`` entry.

        Returns:
            ``{"kind": "vocabulary", ...}`` or ``{"kind": "hash", ...}``.
        """
        doc: dict[str, Any]
        if self.kind == "hash":
            doc = {"kind": "hash", "num_buckets": self.num_oov_buckets}
        else:
            doc = {
                "kind": "vocabulary",
                "vocabulary": list(self.vocabulary),
                "num_oov_buckets": self.num_oov_buckets,
            }
        doc["default"] = self.default
        if self.source is not None:
            doc["source"] = self.source
        return doc


def make_signature(
    name: str,
    task: str,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
) -> dict[str, Any]:
    """Build a ``signature.json`` document for one-value-per-row inputs and outputs.

    Args:
        name: Model name.
        task: E.g. ``"binary_classification"``, ``"regression"``.
        inputs: ``{feature: dtype}`` as clients send them (``"float32"``,
            ``"int32"``, ``"string"``).
        outputs: ``{output: dtype}``.

    Returns:
        The signature document.
    """
    return {
        "format": MODEL_FORMAT,
        "name": name,
        "task": task,
        "inputs": [{"name": k, "dtype": v, "shape": [None]} for k, v in inputs.items()],
        "outputs": [{"name": k, "dtype": v, "shape": [None]} for k, v in outputs.items()],
    }


def read_json(path: Path) -> Any:
    """Read one JSON file of a model directory.

    Args:
        path: The file.

    Returns:
        The decoded document.

    Raises:
        ModelLoadError: The file is unreadable or not JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLoadError(f"{path.name}: cannot read: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"{path.name}: not valid JSON: {exc}") from exc


def read_signature(model_dir: str | Path) -> Signature:
    """Read and check ``signature.json``.

    Args:
        model_dir: The model directory.

    Returns:
        The signature.

    Raises:
        ModelLoadError: The file is missing or malformed.
    """
    return Signature.from_json(read_json(Path(model_dir) / SIGNATURE_FILE), SIGNATURE_FILE)


def read_lookups(model_dir: str | Path, signature: Signature) -> dict[str, StringLookup]:
    """Read ``preprocess.json`` (``{}`` when absent) and check it covers every string input.

    Args:
        model_dir: The model directory.
        signature: Its signature.

    Returns:
        ``{entry key: lookup}``.

    Raises:
        ModelLoadError: An entry is malformed, or a string input has none.
    """
    path = Path(model_dir) / PREPROCESS_FILE
    lookups: dict[str, StringLookup] = {}
    if path.exists():
        pre = read_json(path)
        if not isinstance(pre, dict):
            raise ModelLoadError(f"{PREPROCESS_FILE}: expected a JSON object")
        lookups = {feat: StringLookup.from_json(feat, entry) for feat, entry in pre.items()}
    sources = {lookup.source or key for key, lookup in lookups.items()}
    missing = [s.name for s in signature.inputs if s.dtype == "string" and s.name not in sources]
    if missing:
        raise ModelLoadError(
            f"{PREPROCESS_FILE}: string inputs {missing} have no vocabulary entry; "
            "every string input needs one to be mapped to ids"
        )
    return lookups
