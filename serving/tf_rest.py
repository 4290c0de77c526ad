"""TF Serving's REST API: ``/v1/models/{m}[/versions/{v}|/labels/{l}][/metadata|:predict]``.

``:predict`` takes ``{"instances": [{feature: value}, ...]}`` (rows),
answered with ``{"predictions": [...]}``, or ``{"inputs": {feature: [values]}}``
(columns), answered with ``{"outputs": {...}}``. With a single output the
output name is left out, as TF Serving does. String features may also be
sent as ``{"b64": "..."}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from ._http import (
    THREAD_PARSE_BYTES,
    Call,
    Ctx,
    HTTPError,
    ProtocolAPI,
    Reply,
    check_json_type,
    check_prepared,
    check_rows,
    decode_json,
    encode,
    json_reply,
    parse_version,
    read_body,
)
from .metrics import ServingMetrics
from .repository import ModelNotFoundError, ModelNotReadyError
from .runtime import InputError, LoadedModel, Signature, TensorSpec

__all__ = ["TFRestAPI", "format_v1_outputs", "parse_v1_predict", "v1_metadata"]

_V1_APIS = {a: f"v1_{a}" for a in ("status", "metadata", "predict")}
_TF_DTYPES = {
    "bool": "DT_BOOL",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "float16": "DT_HALF",
    "bfloat16": "DT_BFLOAT16",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "string": "DT_STRING",
}


class TFRestAPI(ProtocolAPI):
    """Handler of ``/v1/models/...`` requests (see :class:`ProtocolAPI` for the arguments)."""

    async def __call__(self, call: Call, ctx: Ctx) -> Reply:
        """Answer one request; errors are raised for the caller to turn into replies."""
        rest = call.rest
        model, version, label, action = _parse_v1_path(rest)
        ctx.api = _V1_APIS[action]
        ctx.known(self.repository, model)
        want = "POST" if action == "predict" else "GET"
        if call.method != want:
            raise HTTPError(405, f"use {want} for /v1/models/{rest}", {"Allow": want})
        if action == "status":
            return self._status(ctx, model, version, label)
        loaded = ctx.bind(self.repository.resolve(model, version, label))
        if action == "metadata":
            return json_reply(v1_metadata(loaded))
        return await self._predict(call, loaded)

    def _status(self, ctx: Ctx, model: str, version: int | None, label: str | None) -> Reply:
        repo = self.repository
        statuses = repo.statuses(model, version, label)
        if statuses:
            with contextlib.suppress(ModelNotFoundError, ModelNotReadyError):
                ctx.bind(repo.resolve(model, version, label))
        return json_reply(
            {
                "model_version_status": [
                    {
                        "version": str(s.version),
                        "state": s.state,
                        "status": {
                            "error_code": "UNKNOWN" if s.error else "OK",
                            "error_message": s.error,
                        },
                    }
                    for s in statuses
                ]
            }
        )

    async def _predict(self, call: Call, loaded: LoadedModel) -> Reply:
        check_json_type(call)
        body = await read_body(call, self.max_body_bytes)
        if len(body) <= THREAD_PARSE_BYTES:
            arrays, row_format = parse_v1_predict(body, loaded, self.metrics)
            outputs = await self.batcher.predict(loaded, arrays)
            return json_reply(format_v1_outputs(outputs, loaded.signature, row_format))
        arrays, row_format = await run_in_threadpool(parse_v1_predict, body, loaded, self.metrics)
        outputs = await self.batcher.predict(loaded, arrays)
        payload = await run_in_threadpool(format_v1_outputs, outputs, loaded.signature, row_format)
        return Reply(await run_in_threadpool(encode, payload))


def _parse_v1_path(rest: str) -> tuple[str, int | None, str | None, str]:
    usage = "use /v1/models/<model>[/versions/<n>|/labels/<label>][/metadata|:predict]"
    verb = None
    colon = rest.find(":", rest.rfind("/") + 1)
    if colon != -1:
        rest, verb = rest[:colon], rest[colon + 1 :]
    parts = rest.split("/")
    action = "status"
    if verb is not None:
        if verb != "predict":
            raise HTTPError(
                404 if verb not in ("classify", "regress") else 400,
                f"':{verb[:40]}' is not supported; jaxtx models answer ':predict'",
            )
        action = "predict"
    elif len(parts) in (2, 4) and parts[-1] == "metadata":
        parts.pop()
        action = "metadata"
    version: int | None = None
    label: str | None = None
    if len(parts) == 3 and parts[1] == "versions":
        version = parse_version(parts[2])
    elif len(parts) == 3 and parts[1] == "labels" and parts[2]:
        label = parts[2]
    elif len(parts) != 1:
        raise HTTPError(404, f"no such endpoint: /v1/models/{rest[:200]}; {usage}")
    if not parts[0]:
        raise HTTPError(404, f"no model named in the path; {usage}")
    return parts[0], version, label, action


def _tf_tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": _TF_DTYPES.get(spec.dtype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": spec.name,
    }


def v1_metadata(model: LoadedModel) -> dict[str, Any]:
    """The ``/metadata`` answer: TF Serving's signature_def plus jaxtx's own signature.

    Args:
        model: The loaded model.

    Returns:
        The JSON document.
    """
    sig = model.signature
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {s.name: _tf_tensor_info(s) for s in sig.inputs},
                        "outputs": {s.name: _tf_tensor_info(s) for s in model.output_specs},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            },
            "jaxtx_signature": sig.to_json(),
        },
    }


def parse_v1_predict(
    body: bytes, model: LoadedModel, metrics: ServingMetrics | None = None
) -> tuple[dict[str, np.ndarray], bool]:
    """Decode a ``:predict`` body into prepared arrays; also say whether it used rows.

    The row limit is checked before any value is converted.

    Args:
        body: The request body (JSON).
        model: The model that answers.
        metrics: Where to count out-of-vocabulary values.

    Returns:
        The model's input arrays and True for the row (``instances``) format.
    """
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise InputError(
            "body", 'a JSON object {"instances": [...]} or {"inputs": {...}}', "other JSON"
        )
    allowed = ("instances", "inputs", "signature_name")
    for key in doc:
        if key not in allowed:
            raise InputError.unknown_feature(str(key), allowed, "the request body")
    name = doc.get("signature_name", "serving_default")
    if name not in ("serving_default", ""):
        raise InputError("signature_name", "'serving_default'", repr(name)[:60])
    sig = model.signature
    if ("instances" in doc) == ("inputs" in doc):
        raise InputError(
            "instances",
            'exactly one of "instances" (rows) or "inputs" (columns)',
            "both" if "instances" in doc else "neither",
        )
    if "inputs" in doc:
        inputs = doc["inputs"]
        if not isinstance(inputs, dict):
            if len(sig.inputs) != 1:
                raise InputError(
                    "inputs", "an object {feature: [values per row]}", type(inputs).__name__
                )
            inputs = {sig.inputs[0].name: inputs}
        for values in inputs.values():
            if isinstance(values, list):
                check_rows(len(values), model)
        arrays = model.prepare(inputs)
        check_prepared(model, arrays, metrics)
        return arrays, False
    instances = doc["instances"]
    if isinstance(instances, list):
        check_rows(len(instances), model)
    arrays = model.prepare(_rows_to_columns(instances, sig))
    check_prepared(model, arrays, metrics)
    return arrays, True


def _rows_to_columns(instances: Any, sig: Signature) -> dict[str, list[Any]]:
    if not isinstance(instances, list):
        raise InputError(
            "instances", "a list of objects {feature: value}, one per row", type(instances).__name__
        )
    if not instances:
        raise InputError("instances", "at least one row", "an empty list")
    names = sig.input_names
    if not isinstance(instances[0], dict) and len(names) == 1:
        return {names[0]: instances}
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise InputError(
                f"instances[{i}]",
                "an object {feature: value}",
                "a list" if isinstance(row, list) else type(row).__name__,
            )
        for key in row:
            if key not in columns:
                raise InputError.unknown_feature(str(key), names, f"instances[{i}]")
        for n in names:
            if n not in row:
                raise InputError(
                    n,
                    sig.input(n).describe(),
                    f"nothing: the feature is missing from instances[{i}]",
                    "send every feature in every row (null for a missing value)",
                )
            columns[n].append(row[n])
    return columns


def format_v1_outputs(
    outputs: Mapping[str, np.ndarray], sig: Signature, row_format: bool
) -> dict[str, Any]:
    """The ``:predict`` answer.

    Args:
        outputs: The model's outputs by name.
        sig: The model's signature.
        row_format: The request used ``instances``.

    Returns:
        ``{"predictions": ...}`` for rows, ``{"outputs": ...}`` for columns.
    """
    names = sig.output_names
    lists = {n: outputs[n].tolist() for n in names}
    if row_format:
        if len(names) == 1:
            return {"predictions": lists[names[0]]}
        rows = len(lists[names[0]])
        return {"predictions": [{n: lists[n][i] for n in names} for i in range(rows)]}
    if len(names) == 1:
        return {"outputs": lists[names[0]]}
    return {"outputs": lists}
