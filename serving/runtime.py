"""Load an exported jaxtx model and run predictions with strict input checks.

A model directory (format ``jaxtx.model/1``, see ``docs/formats.md``) holds
``signature.json``, ``predict.jaxexport`` (a `jax.export` serialization with a
symbolic batch dimension) and, when there are string features,
``preprocess.json``. Loading needs nothing else: no training code, no user
module, and nothing is ever unpickled.

Example:
    >>> model = LoadedModel.load("/models/census/3")  # doctest: +SKIP
    >>> model.warmup()  # doctest: +SKIP
    >>> model.predict({"age": [39.0], "workclass": ["Private"]})  # doctest: +SKIP
    {'probabilities': array([0.12], dtype=float32), ...}
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODEL_FORMAT",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "Signature",
    "StringLookup",
    "TensorSpec",
]

MODEL_FORMAT = "jaxtx.model/1"
SIGNATURE_FILE = "signature.json"
EXPORT_FILE = "predict.jaxexport"
PREPROCESS_FILE = "preprocess.json"

_FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_SUPPORTED_DTYPES = _FLOAT_DTYPES | _INT_DTYPES | {"bool", "string"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple | np.ndarray):
        return "a nested list (ragged rows or an extra dimension)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int | np.integer):
        return "integer"
    if isinstance(value, float | np.floating):
        return "float"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(index: tuple[int, ...]) -> str:
    return "row " + "".join(f"[{i}]" for i in index)


class LoadedModel:
    """A loaded, callable model version.

    Use `LoadedModel.load`; the object is immutable and safe to call from
    several threads at once.
    """

    def __init__(
        self,
        *,
        path: Path,
        signature: Signature,
        lookups: Mapping[str, StringLookup],
        exported: Any,
        call: _CallInfo,
        name: str,
        version: int | None,
        max_batch_size: int,
    ) -> None:
        import jax

        self.path = path
        self.signature = signature
        self.lookups = dict(lookups)
        self.name = name
        self.version = version
        self.max_batch_size = max_batch_size
        self.platforms: tuple[str, ...] = tuple(getattr(exported, "platforms", ()))
        self.output_specs: tuple[TensorSpec, ...] = call.outputs
        self._exported = exported
        self._call_order = list(call.order)
        self._call_dtypes = dict(call.dtypes)
        self._call_specs = dict(call.specs)
        self._entries: dict[str, list[str]] = {}  # string input -> its preprocess entries
        for key, lookup in self.lookups.items():
            if key in self._call_dtypes and self._call_specs[key].dtype == "string":
                self._entries.setdefault(lookup.source or key, []).append(key)
        self._fn = jax.jit(exported.call)
        self._out_names = signature.output_names
        self._input_names = signature.input_names
        self._known_inputs = frozenset(self._input_names)
        # What `prepare` does for each signature input: (spec, [(argument, lookup, dtype)]).
        self._plan = [
            (
                spec,
                [
                    (key, self.lookups.get(key), self._call_dtypes[key])
                    for key in (
                        self._entries.get(spec.name, []) if spec.dtype == "string" else [spec.name]
                    )
                ],
            )
            for spec in signature.inputs
        ]
        self._warm_sizes: set[int] = set()

    def __repr__(self) -> str:
        return f"LoadedModel(name={self.name!r}, version={self.version}, path='{self.path}')"

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        name: str | None = None,
        version: int | None = None,
        max_batch_size: int = 8192,
    ) -> LoadedModel:
        """Load a model directory.

        Args:
            model_dir: Directory holding ``signature.json`` and ``predict.jaxexport``.
            name: Model name (default: the signature's, else the parent directory's).
            version: Version number (default: the directory name when it is an integer).
            max_batch_size: Most rows one `predict` call accepts.

        Returns:
            The loaded model (not warmed up; call `warmup`).

        Raises:
            ModelLoadError: A file is missing or malformed, or the exported
                function does not match the signature.
        """
        from jax import export as jax_export

        path = Path(model_dir)
        if not path.is_dir():
            raise ModelLoadError(f"{path}: not a directory")
        signature = Signature.from_json(_read_json(path / SIGNATURE_FILE), SIGNATURE_FILE)

        lookups: dict[str, StringLookup] = {}
        string_inputs = [s.name for s in signature.inputs if s.dtype == "string"]
        if (path / PREPROCESS_FILE).exists():
            pre = _read_json(path / PREPROCESS_FILE)
            if not isinstance(pre, dict):
                raise ModelLoadError(f"{PREPROCESS_FILE}: expected a JSON object")
            for feat, entry in pre.items():
                lookups[feat] = StringLookup.from_json(feat, entry)
        sources = {lookup.source or key for key, lookup in lookups.items()}
        missing = [n for n in string_inputs if n not in sources]
        if missing:
            raise ModelLoadError(
                f"{PREPROCESS_FILE}: string inputs {missing} have no vocabulary entry; "
                "every string input needs one to be mapped to ids"
            )

        export_path = path / EXPORT_FILE
        try:
            blob = export_path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{EXPORT_FILE}: cannot read: {exc}") from exc
        try:
            exported = jax_export.deserialize(bytearray(blob))
        except Exception as exc:
            raise ModelLoadError(
                f"{EXPORT_FILE}: not a jax.export serialization ({type(exc).__name__}: {exc}); "
                "export with jax.export.export(...).serialize()"
            ) from exc

        call = _check_exported(exported, signature, lookups)
        _check_x64(exported)
        if version is None and path.name.isdigit():
            version = int(path.name)
        model_name = name or signature.name or path.parent.name
        return cls(
            path=path,
            signature=signature,
            lookups=lookups,
            exported=exported,
            call=call,
            name=model_name,
            version=version,
            max_batch_size=max_batch_size,
        )

    def warmup(self, batch_sizes: Iterable[int] = (1,)) -> float:
        """Compile and run the model once for each batch-size bucket.

        Args:
            batch_sizes: Row counts to prepare for; each is rounded up to its
                power-of-two bucket, the shapes `predict` actually runs.

        Returns:
            Seconds spent.

        Raises:
            ModelLoadError: The exported function fails to run here (for
                example it was exported for another platform).
        """
        start = time.perf_counter()
        buckets = sorted({_bucket(max(1, int(n))) for n in batch_sizes})
        for size in buckets:
            arrays = {
                name: np.zeros((size, *self._call_specs[name].row_shape), dtype)
                for name, dtype in self._call_dtypes.items()
            }
            try:
                self.predict_arrays(arrays)
            except Exception as exc:
                raise ModelLoadError(
                    f"{EXPORT_FILE}: warm-up call with {size} rows failed "
                    f"({type(exc).__name__}: {exc}); the model was exported for platforms "
                    f"{list(self.platforms)}: check that they include this server's "
                    f"({_backend()})"
                ) from exc
            self._warm_sizes.add(size)
        return time.perf_counter() - start

    def predict(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate features and run the model.

        Args:
            features: One array (or nested list) per signature input, all with
                the same number of rows.

        Returns:
            One array per signature output, each with one entry per row.

        Raises:
            InputError: The features do not match the signature.
        """
        return self.predict_arrays(self.prepare(features))

    def prepare(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate features and convert them to what the exported function takes.

        Strings become int32 ids, numbers the signature's dtypes.

        Args:
            features: One array (or nested list) per signature input.

        Returns:
            Arrays keyed by input name, all with the same number of rows.

        Raises:
            InputError: A feature is missing, unknown, of the wrong type or
                shape, ragged, rows disagree, or there are too many rows.
        """
        if not isinstance(features, Mapping):
            raise InputError(
                "inputs",
                "an object mapping each feature name to its values",
                _type_name(features),
            )
        names = self._input_names
        known = self._known_inputs
        for key in features:
            if key not in known:
                raise InputError.unknown_feature(str(key), names)
        out: dict[str, np.ndarray] = {}
        rows: int | None = None
        first = ""
        for spec, calls in self._plan:
            if spec.name not in features:
                raise InputError(
                    spec.name,
                    spec.describe(),
                    "nothing: the feature is missing",
                    "send every feature of the signature (see the model's metadata)",
                )
            values = features[spec.name]
            for key, lookup, call_dtype in calls:
                arr = _convert(spec, values, lookup, call_dtype)
                out[key] = arr
            n = int(arr.shape[0])
            if rows is None:
                rows, first = n, spec.name
            elif n != rows:
                raise InputError(
                    spec.name,
                    f"{rows} rows like '{first}'",
                    f"{n} rows",
                    "send the same number of values for every feature",
                )
        if rows == 0:
            raise InputError(names[0], "at least one row", "0 rows")
        if rows is not None and rows > self.max_batch_size:
            raise InputError(
                "batch",
                f"at most {self.max_batch_size} rows",
                f"{rows} rows",
                "split the request into smaller ones",
            )
        return out

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the exported function on arrays from `prepare`.

        Rows are padded up to a power-of-two bucket, so that a few compiled
        shapes serve every batch size; padding rows are dropped from the result.

        Args:
            arrays: Arrays keyed by input name, as `prepare` returns them.

        Returns:
            One array per signature output, one entry per row.
        """
        first = arrays[self._call_order[0]]
        n = int(first.shape[0])
        size = _bucket(n)
        args: dict[str, np.ndarray] = {}
        for name in self._call_order:
            arr = np.asarray(arrays[name], dtype=self._call_dtypes[name])
            if size > n:
                arr = np.concatenate([arr, np.repeat(arr[:1], size - n, axis=0)])
            args[name] = arr
        result = self._fn(args)
        return _name_outputs(result, self._out_names, n)


def _bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _name_outputs(result: Any, names: Sequence[str], n: int) -> dict[str, np.ndarray]:
    if isinstance(result, Mapping):
        return {name: np.asarray(result[name])[:n] for name in names}
    if isinstance(result, list | tuple):
        return {name: np.asarray(value)[:n] for name, value in zip(names, result, strict=True)}
    return {names[0]: np.asarray(result)[:n]}


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelLoadError(f"{path.name}: cannot read: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"{path.name}: not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class _CallInfo:
    """How to call the exported function: argument order, dtypes, real output specs."""

    order: list[str]
    dtypes: dict[str, np.dtype]
    outputs: tuple[TensorSpec, ...]
    specs: dict[str, TensorSpec] = field(default_factory=dict)  # argument -> signature input


def _call_specs(signature: Signature, lookups: Mapping[str, StringLookup]) -> dict[str, TensorSpec]:
    """Arguments of the exported function: non-string inputs by name, and one
    argument per ``preprocess.json`` entry of a string input (its ids)."""
    specs = {spec.name: spec for spec in signature.inputs if spec.dtype != "string"}
    inputs = {spec.name: spec for spec in signature.inputs}
    for key, lookup in lookups.items():
        source = lookup.source or key
        spec = inputs.get(source)
        if spec is None or spec.dtype != "string":
            if lookup.source is None:
                continue  # an entry for no string input: unused, as before
            raise ModelLoadError(
                f"{PREPROCESS_FILE}: {key!r} reads source {source!r}, which is not a string "
                f"input of {SIGNATURE_FILE}; use one of "
                f"{[s.name for s in signature.inputs if s.dtype == 'string']}"
            )
        if key in inputs and key != source:
            raise ModelLoadError(
                f"{PREPROCESS_FILE}: {key!r} reads source {source!r} but {key!r} is itself an "
                f"input of {SIGNATURE_FILE}; give the entry another name"
            )
        specs[key] = spec
    return specs


def _family(dtype: np.dtype) -> str:
    name = str(dtype)
    if name in _FLOAT_DTYPES:
        return "float"
    if name in _INT_DTYPES:
        return "int"
    return name


def _check_exported(
    exported: Any, signature: Signature, lookups: Mapping[str, StringLookup] | None = None
) -> _CallInfo:
    """Check the exported function's argument and result trees against the signature.

    Inputs must match by name, row shape and dtype family (the function may
    take a narrower type than clients send, such as int32 for an int64
    feature, or int32 ids for a string feature). String inputs are passed as
    one ids argument per ``preprocess.json`` entry (named after the entry,
    which reads its ``source``). Every signature output must be returned with
    a leading batch dimension; extra outputs are ignored.
    """
    import jax

    n_in = len(exported.in_avals)
    try:
        tree = jax.tree_util.tree_unflatten(exported.in_tree, list(range(n_in)))
    except Exception as exc:  # pragma: no cover - defensive
        raise ModelLoadError(f"{EXPORT_FILE}: unreadable argument structure: {exc}") from exc
    args, kwargs = tree
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        raise ModelLoadError(
            f"{EXPORT_FILE}: the exported function must take one dict {{name: array}}; "
            f"it takes {exported.in_tree}"
        )
    positions: dict[str, int] = args[0]
    call_specs = _call_specs(signature, lookups or {})
    if lookups is None:
        call_specs.update({s.name: s for s in signature.inputs if s.dtype == "string"})
    expected = set(call_specs)
    if set(positions) != expected:
        raise ModelLoadError(
            f"{EXPORT_FILE}: takes features {sorted(positions)} but {SIGNATURE_FILE} lists "
            f"{sorted(expected)}"
            + (f" (with the entries of {PREPROCESS_FILE})" if lookups else "")
            + "; re-export so both agree"
        )
    dtypes: dict[str, np.dtype] = {}
    for key, spec in call_specs.items():
        aval = exported.in_avals[positions[key]]
        dtype = np.dtype(aval.dtype)
        want = "int" if spec.dtype == "string" else _family(np.dtype(spec.dtype))
        if spec.dtype != "string" and spec.dtype == "bfloat16":
            want = "float"
        if _family(dtype) != want:
            raise ModelLoadError(
                f"{EXPORT_FILE}: input {key!r} is {dtype} but {SIGNATURE_FILE} says "
                f"{spec.dtype}"
                + (" (string inputs are passed as integer ids)" if spec.dtype == "string" else "")
            )
        _check_batch_dim(aval.shape, key, "input", spec.row_shape)
        dtypes[key] = dtype

    n_out = len(exported.out_avals)
    out_tree = jax.tree_util.tree_unflatten(exported.out_tree, list(range(n_out)))
    if isinstance(out_tree, dict):
        missing = [n for n in signature.output_names if n not in out_tree]
        if missing:
            raise ModelLoadError(
                f"{EXPORT_FILE}: does not return outputs {missing} that {SIGNATURE_FILE} lists "
                f"(it returns {sorted(out_tree)}); re-export so both agree"
            )
        out_pos = out_tree
    elif isinstance(out_tree, list | tuple) and len(out_tree) == len(signature.outputs):
        out_pos = {spec.name: i for i, spec in enumerate(signature.outputs)}
    elif len(signature.outputs) == 1 and n_out == 1:
        out_pos = {signature.outputs[0].name: 0}
    else:
        raise ModelLoadError(
            f"{EXPORT_FILE}: returns {exported.out_tree} but {SIGNATURE_FILE} lists "
            f"{len(signature.outputs)} outputs; return a dict {{output name: array}}"
        )
    outputs = []
    for spec in signature.outputs:
        aval = exported.out_avals[out_pos[spec.name]]
        _check_batch_dim(aval.shape, spec.name, "output", None)
        outputs.append(
            TensorSpec(spec.name, str(np.dtype(aval.dtype)), (None, *map(int, aval.shape[1:])))
        )
    order = sorted(positions, key=positions.__getitem__)
    return _CallInfo(order=order, dtypes=dtypes, outputs=tuple(outputs), specs=call_specs)


def _backend() -> str:
    import jax

    return jax.default_backend()


def _check_x64(exported: Any) -> None:
    import jax

    if jax.config.jax_enable_x64:
        return
    for aval in (*exported.in_avals, *exported.out_avals):
        if np.dtype(aval.dtype).itemsize == 8 and np.dtype(aval.dtype).kind in "iuf":
            raise ModelLoadError(
                f"{EXPORT_FILE}: the function takes or returns {np.dtype(aval.dtype)} arrays, "
                "but 64-bit types are off in this process; start the server with "
                "JAX_ENABLE_X64=1, or export the model with 32-bit types"
            )


def _check_batch_dim(
    shape: tuple[Any, ...], name: str, kind: str, row_shape: tuple[int, ...] | None
) -> None:
    if not shape or isinstance(shape[0], int):
        raise ModelLoadError(
            f"{EXPORT_FILE}: {kind} {name!r} has shape {shape}, without a symbolic batch "
            "dimension first; export with jax.export.symbolic_shape('b')"
        )
    rest = tuple(shape[1:])
    if any(not isinstance(d, int) for d in rest):
        raise ModelLoadError(
            f"{EXPORT_FILE}: {kind} {name!r} has shape {shape}; only the first (batch) "
            "dimension may be symbolic"
        )
    if row_shape is not None and rest != row_shape:
        raise ModelLoadError(
            f"{EXPORT_FILE}: {kind} {name!r} has shape {shape} but {SIGNATURE_FILE} says "
            f"{[None, *row_shape]}"
        )


def _convert(
    spec: TensorSpec, values: Any, lookup: StringLookup | None, call_dtype: np.dtype
) -> np.ndarray:
    """Validate one feature's values and convert them to the exported function's dtype."""
    if type(values) is list and len(spec.shape) == 1:
        fast = _convert_plain_list(spec, values, lookup, call_dtype)
        if fast is not None:
            return fast
    name = spec.name
    if isinstance(values, np.ndarray):
        arr = values
    elif isinstance(values, list | tuple):
        try:
            arr = np.array(values, dtype=object)
        except (ValueError, TypeError, RecursionError, MemoryError) as exc:
            raise InputError(name, spec.describe(), f"values numpy cannot read ({exc})") from exc
    else:
        raise InputError(
            name,
            f"a list of {spec.describe()} (one entry per row)",
            f"a single {_type_name(values)} {_show(values)}",
            "wrap values in a list, one entry per row",
        )
    if arr.ndim != len(spec.shape) or arr.shape[1:] != spec.row_shape:
        raise InputError(
            name,
            spec.describe(),
            f"shape {list(arr.shape)}",
            "send one value per row" if len(spec.shape) == 1 else "fix the nesting of the values",
        )
    if spec.dtype == "string":
        assert lookup is not None
        return _convert_strings(spec, arr, lookup).astype(call_dtype)
    if spec.dtype in _FLOAT_DTYPES:
        return _convert_floats(spec, arr, call_dtype)
    if spec.dtype in _INT_DTYPES:
        return _convert_ints(spec, arr, call_dtype)
    return _convert_bools(spec, arr)


def _convert_plain_list(
    spec: TensorSpec, values: list[Any], lookup: StringLookup | None, call_dtype: np.dtype
) -> np.ndarray | None:
    """Convert a flat list of plain JSON values of the right type, or return None.

    The common case of a request (one value per row, each of the expected
    type) converts without per-value numpy work; anything else (nulls, mixed
    or wrong types, values out of range) returns None and takes the general
    path, which checks each value and names the first bad one.
    """
    dtype = spec.dtype
    try:
        if dtype in _FLOAT_DTYPES:
            if call_dtype == np.float64:
                for v in values:
                    if type(v) is not float and type(v) is not int:
                        return None
            elif call_dtype == np.float32:
                for v in values:  # within float32's range: no overflow to check for
                    if (type(v) is not float and type(v) is not int) or not (
                        -_FLOAT32_MAX <= v <= _FLOAT32_MAX
                    ):
                        return None
            else:
                return None
            return np.array(values, dtype=call_dtype)
        if dtype == "string":
            if lookup is None:
                return None
            index = lookup._index
            ids: list[int] = []
            for v in values:
                if type(v) is not str:
                    return None
                idx = index.get(v)
                if idx is None:
                    idx = lookup.id_of(v)
                    if idx is None:
                        return None
                ids.append(idx)
            return np.array(ids, dtype=np.int64).astype(call_dtype, copy=False)
        if dtype in _INT_DTYPES:
            for v in values:
                if type(v) is not int:
                    return None
            if values:
                info = np.iinfo(call_dtype)
                if min(values) < info.min or max(values) > info.max:
                    return None
            return np.array(values, dtype=call_dtype)
        if dtype == "bool":
            for v in values:
                if type(v) is not bool:
                    return None
            return np.array(values, dtype=bool)
    except (OverflowError, ValueError, TypeError):
        return None
    return None


def _first_bad(arr: np.ndarray, ok: Any) -> tuple[tuple[int, ...], Any] | None:
    for index, value in np.ndenumerate(arr):
        if not ok(value):
            return index, value
    return None


def _raise_bad(spec: TensorSpec, arr: np.ndarray, ok: Any, hint: str = "") -> None:
    bad = _first_bad(arr, ok)
    if bad is not None:
        index, value = bad
        raise InputError(
            spec.name,
            spec.describe(),
            f"{_type_name(value)} {_show(value)} at {_where(index)}",
            hint,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _convert_floats(spec: TensorSpec, arr: np.ndarray, call_dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(np.float64) if call_dtype == np.float64 else np.dtype(np.float32)
    kind = arr.dtype.kind
    if kind in "fiu":
        return arr.astype(dtype, copy=False).astype(call_dtype, copy=False)
    if kind == "O":
        _raise_bad(
            spec,
            arr,
            lambda v: v is None or _is_number(v),
            "send numbers (null or NaN for a missing value)",
        )
        filled = np.where(_is_none(arr), np.nan, arr)
        try:
            with np.errstate(over="ignore"):
                return filled.astype(dtype).astype(call_dtype, copy=False)
        except OverflowError as exc:
            raise InputError(
                spec.name, spec.describe(), "an integer too large for a float", "send a float"
            ) from exc
    raise InputError(spec.name, spec.describe(), f"an array of {_kind_name(arr)}")


def _is_none(arr: np.ndarray) -> np.ndarray:
    return np.frompyfunc(lambda v: v is None, 1, 1)(arr).astype(bool)


def _convert_ints(spec: TensorSpec, arr: np.ndarray, call_dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(call_dtype)
    info = np.iinfo(dtype)  # the model's own type, which may be narrower than the signature's
    kind = arr.dtype.kind
    hint = f"send whole numbers in [{info.min}, {info.max}]; only float features accept null or NaN"
    if kind == "O":

        def ok(v: Any) -> bool:
            if isinstance(v, bool | np.bool_):
                return False
            if isinstance(v, int | np.integer):
                return info.min <= int(v) <= info.max
            return (
                isinstance(v, float | np.floating)
                and math.isfinite(v)
                and float(v).is_integer()
                and info.min <= int(v) <= info.max
            )

        _raise_bad(spec, arr, ok, hint)
        return arr.astype(dtype)
    if kind in "iu":
        bad = (arr < info.min) | (arr > info.max)
    elif kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.floor(arr)) | (arr < info.min) | (arr > info.max)
    else:
        raise InputError(spec.name, spec.describe(), f"an array of {_kind_name(arr)}", hint)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = arr[index].item()
        raise InputError(
            spec.name,
            spec.describe(),
            f"{_type_name(value)} {_show(value)} at {_where(index)}",
            hint,
        )
    return arr.astype(dtype)


def _convert_bools(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(bool)
    if kind in "iuO":
        _raise_bad(
            spec,
            arr,
            lambda v: (
                isinstance(v, bool | np.bool_)
                or (isinstance(v, int | np.integer) and int(v) in (0, 1))
            ),
            "send true/false (or 0/1)",
        )
        return arr.astype(bool)
    raise InputError(spec.name, spec.describe(), f"an array of {_kind_name(arr)}")


def _convert_strings(spec: TensorSpec, arr: np.ndarray, lookup: StringLookup) -> np.ndarray:
    kind = arr.dtype.kind
    if kind not in "USO":
        raise InputError(
            spec.name, spec.describe(), f"an array of {_kind_name(arr)}", "send strings"
        )
    ids = np.empty(arr.shape, dtype=np.int64)
    for index, value in np.ndenumerate(arr):
        text = _as_text(spec, index, value, lookup)
        idx = lookup.id_of(text)
        if idx is None:
            raise InputError(
                spec.name,
                f"one of the vocabulary values {_show(list(lookup.vocabulary))}",
                f"{_show(text)} at {_where(index)}",
                "this model has no out-of-vocabulary bucket",
            )
        ids[index] = idx
    return ids


def _as_text(spec: TensorSpec, index: tuple[int, ...], value: Any, lookup: StringLookup) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        if lookup.default is None:
            raise InputError(
                spec.name,
                spec.describe(),
                f"null at {_where(index)}",
                "this feature has no default for missing values; send a string",
            )
        return lookup.default
    raw: Any = value
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            raw = base64.b64decode(value["b64"], validate=True)
        except ValueError as exc:
            raise InputError(
                spec.name, "valid base64 in {'b64': ...}", f"invalid base64 at {_where(index)}"
            ) from exc
    if isinstance(raw, bytes | np.bytes_):
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                spec.name, "UTF-8 text", f"undecodable bytes at {_where(index)}"
            ) from exc
    raise InputError(
        spec.name,
        spec.describe(),
        f"{_type_name(value)} {_show(value)} at {_where(index)}",
        "send strings (quote numbers)",
    )


def _kind_name(arr: np.ndarray) -> str:
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "floats",
        "U": "strings",
        "S": "bytes",
        "O": "objects",
        "c": "complex numbers",
        "M": "datetimes",
        "m": "timedeltas",
        "V": "raw records",
    }.get(arr.dtype.kind, str(arr.dtype))
