"""Value conversion: request or table values -> the arrays the exported function takes."""

from __future__ import annotations

import base64
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._spec import _FLOAT_DTYPES, _INT_DTYPES, InputError, StringLookup, TensorSpec

_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    if arr.ndim == 1:
        values = arr.tolist()
        if all(v is None or type(v) is str for v in values):
            try:
                return lookup.ids(values)
            except ValueError:
                pass  # the loop below names the bad value
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


# ----------------------------------------------------------- tables -> columns


def to_model_inputs(data: Any, model: Any) -> dict[str, np.ndarray]:
    """Convert raw rows to the arrays a loaded model's exported function takes.

    The one conversion of jaxtx: the HTTP server, bulk inference, the
    evaluator, the MLflow pyfunc and ``jaxtx.trainer.load_exported`` all call
    it (through :meth:`LoadedModel.prepare`). Strings become ids through the
    model's :class:`StringLookup` entries (vocabulary or hash), numbers the
    dtypes the function takes; nulls become NaN (floats) or the lookup's
    default (strings).

    Args:
        data: One of

            * ``{name: values}``: a column dict (a request); every key must be
              a signature input;
            * a ``pyarrow.Table`` or ``pyarrow.RecordBatch``, a
              ``pandas.DataFrame`` or a list of row dicts: the signature's
              inputs are taken from its columns, other columns are ignored.
        model: A :class:`LoadedModel`.

    Returns:
        ``{argument name: array}``, all with the same number of rows.

    Raises:
        InputError: A column is missing (the message names it and the
            closest existing column), a value has the wrong type, rows
            disagree, or there are too many rows.
    """
    if not isinstance(data, Mapping):
        data = table_columns(data, model.signature.input_names)
    return _prepare_columns(model, data)


def table_columns(data: Any, names: Sequence[str]) -> dict[str, Any]:
    """Pick columns ``names`` out of a table, DataFrame or list of row dicts.

    Args:
        data: A ``pyarrow.Table``/``RecordBatch``, a ``pandas.DataFrame`` or a
            list of row dicts (a key absent from one row is a null there).
        names: The columns to take.

    Returns:
        ``{name: numpy array}``: numbers as numeric arrays (nulls: NaN),
        anything else as object arrays (nulls: ``None``).

    Raises:
        InputError: A column is missing; the message names it and the
            closest existing column.
    """
    available, get = _column_reader(data)
    for name in names:
        if name not in available:
            raise missing_column(name, available)
    return {name: get(name) for name in names}


def _column_reader(data: Any) -> tuple[list[str], Callable[[str], np.ndarray]]:
    """(column names, read one column) for a table, a DataFrame or a list of row dicts."""
    kind = type(data).__module__.split(".")[0]
    if kind == "pyarrow" and hasattr(data, "schema"):
        return list(data.schema.names), lambda n: _arrow_values(data.column(n))
    if kind == "pandas" and hasattr(data, "columns"):
        return [str(c) for c in data.columns], lambda n: _pandas_values(data[n])
    if isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
        names = sorted({str(k) for r in data for k in r})
        return names, lambda n: np.array([r.get(n) for r in data], dtype=object)
    raise InputError(
        "inputs",
        "a column dict, a pyarrow Table or RecordBatch, a pandas DataFrame or a list of row dicts",
        _type_name(data),
    )


def missing_column(name: str, available: Sequence[str]) -> InputError:
    """Error for a model input the data lacks, suggesting the closest column.

    Args:
        name: The missing input.
        available: The columns the data has.

    Returns:
        The error (to raise).
    """
    close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"the columns are {list(available)}"
    return InputError(name, f"a column {name!r}", "no such column", hint)


def _arrow_values(col: Any) -> np.ndarray:
    import pyarrow as pa

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return col.to_numpy(zero_copy_only=False)  # nulls: NaN
    if pa.types.is_boolean(t) and col.null_count == 0:
        return col.to_numpy(zero_copy_only=False)
    return np.array(col.to_pylist(), dtype=object)


def _pandas_values(s: Any) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_bool_dtype(s.dtype) and not s.hasnans:
        return s.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        if s.hasnans:
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        return s.to_numpy()
    return np.array([None if _is_na(v) else v for v in s], dtype=object)


def _is_na(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or _is_pd_na(value)


def _is_pd_na(value: Any) -> bool:
    import pandas as pd

    return value is pd.NA or value is pd.NaT


def _prepare_columns(model: Any, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check a column dict against the model's plan and convert each column."""
    names = model._input_names
    known = model._known_inputs
    for key in features:
        if key not in known:
            raise InputError.unknown_feature(str(key), names)
    out: dict[str, np.ndarray] = {}
    rows: int | None = None
    first = ""
    for spec, calls in model._plan:
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
    if rows is not None and rows > model.max_batch_size:
        raise InputError(
            "batch",
            f"at most {model.max_batch_size} rows",
            f"{rows} rows",
            "split the request into smaller ones",
        )
    return out
