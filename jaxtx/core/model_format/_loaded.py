"""Load an exported model and call it: `LoadedModel`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._spec import (
    _FLOAT_DTYPES,
    _INT_DTYPES,
    EXPORT_FILE,
    PREPROCESS_FILE,
    SIGNATURE_FILE,
    ModelLoadError,
    Signature,
    StringLookup,
    TensorSpec,
    read_lookups,
    read_signature,
)
from ._values import to_model_inputs

__all__ = ["LoadedModel"]


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

    @property
    def exported(self) -> Any:
        """The ``jax.export.Exported`` this model calls."""
        return self._exported

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
        signature = read_signature(path)
        lookups = read_lookups(path, signature)

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
                the same number of rows; or a table, DataFrame or list of row
                dicts (see `prepare`).

        Returns:
            One array per signature output, each with one entry per row.

        Raises:
            InputError: The features do not match the signature.
        """
        return self.predict_arrays(self.prepare(features))

    def prepare(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate features and convert them to what the exported function takes.

        Strings become int32 ids, numbers the signature's dtypes; see
        :func:`~jaxtx.core.model_format.to_model_inputs`, which this calls.

        Args:
            features: One array (or nested list) per signature input, or a
                pyarrow Table/RecordBatch, a pandas DataFrame or a list of row
                dicts holding the inputs as columns (other columns are ignored).

        Returns:
            Arrays keyed by input name, all with the same number of rows.

        Raises:
            InputError: A feature is missing, unknown, of the wrong type or
                shape, ragged, rows disagree, or there are too many rows.
        """
        return to_model_inputs(features, self)

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

    outputs = _check_outputs(exported, signature)
    order = sorted(positions, key=positions.__getitem__)
    return _CallInfo(order=order, dtypes=dtypes, outputs=tuple(outputs), specs=call_specs)


def _check_outputs(exported: Any, signature: Signature) -> list[TensorSpec]:
    """The exported function's real output specs, checked against the signature."""
    import jax

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
    return outputs


def _backend() -> str:
    import jax

    return jax.default_backend()


def _check_x64(exported: Any) -> None:
    import jax

    if jax.config.jax_enable_x64:  # type: ignore[attr-defined]
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
