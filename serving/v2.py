"""Open Inference Protocol v2 (KServe v2, Triton) over HTTP.

``GET  /v2/models/{m}[/versions/{v}]``          model metadata
``GET  /v2/models/{m}[/versions/{v}]/ready``    model readiness
``POST /v2/models/{m}[/versions/{v}]/infer``    inference with JSON tensors,
or the binary tensor data extension that Triton clients use by default
(``Inference-Header-Content-Length``); shared memory is not supported.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from .repository import ModelNotReadyError
from .runtime import InputError, LoadedModel, Signature, TensorSpec

__all__ = [
    "V2API",
    "V2_DTYPES",
    "V2Request",
    "format_v2_outputs",
    "model_metadata",
    "parse_v2_infer",
]

HEADER_LENGTH = b"inference-header-content-length"
_V2_APIS = {a: f"v2_{a}" for a in ("metadata", "ready", "infer")}
V2_DTYPES = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}
V2_NUMPY = {
    "BOOL": np.dtype(bool),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_V2_INTS = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_V2_FLOATS = {"FP16", "FP32", "FP64"}
# Output dtypes answered as they are, by numpy dtype (``str(dtype)`` is slow per request).
_OUTPUT_DTYPES = {np.dtype(k): v for k, v in V2_DTYPES.items() if k not in ("string", "bfloat16")}


class V2API(ProtocolAPI):
    """Handler of ``/v2/models/...`` requests (see :class:`ProtocolAPI` for the arguments)."""

    async def __call__(self, call: Call, ctx: Ctx) -> Reply:
        """Answer one request; errors are raised for the caller to turn into replies."""
        rest = call.rest
        model, version, action = _parse_v2_path(rest)
        ctx.api = _V2_APIS[action]
        ctx.known(self.repository, model)
        want = "POST" if action == "infer" else "GET"
        if call.method != want:
            raise HTTPError(405, f"use {want} for /v2/models/{rest}", {"Allow": want})
        repo = self.repository
        if action == "ready":
            try:
                ctx.bind(repo.resolve(model, version))
            except ModelNotReadyError:
                return json_reply({"name": model, "ready": False}, 400)
            return json_reply({"name": model, "ready": True})
        loaded = ctx.bind(repo.resolve(model, version))
        if action == "metadata":
            return json_reply(model_metadata(loaded, repo.serving_versions(model)))
        return await self._infer(call, loaded)

    async def _infer(self, call: Call, loaded: LoadedModel) -> Reply:
        header_length = call.header(HEADER_LENGTH)
        check_json_type(call, binary=header_length is not None)
        body = await read_body(call, self.max_body_bytes)
        metrics = self.metrics
        if len(body) <= THREAD_PARSE_BYTES:
            parsed = parse_v2_infer(body, header_length, loaded, metrics)
            outputs = await self.batcher.predict(loaded, parsed.arrays)
            payload, blobs = format_v2_outputs(outputs, loaded, parsed)
            text = encode(payload)
        else:  # CPU-heavy parsing and encoding off the event loop
            parsed = await run_in_threadpool(parse_v2_infer, body, header_length, loaded, metrics)
            outputs = await self.batcher.predict(loaded, parsed.arrays)
            payload, blobs = await run_in_threadpool(format_v2_outputs, outputs, loaded, parsed)
            text = await run_in_threadpool(encode, payload)
        if not blobs:
            return Reply(text)
        return Reply(
            b"".join([text, *blobs]),
            content_type=b"application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(text))},
        )


def _parse_v2_path(rest: str) -> tuple[str, int | None, str]:
    usage = "use /v2/models/<model>[/versions/<n>][/ready|/infer]"
    parts = rest.split("/")
    action = "metadata"
    if len(parts) in (2, 4) and parts[-1] in ("ready", "infer"):
        action = parts.pop()
    version = None
    if len(parts) == 3 and parts[1] == "versions":
        version = parse_version(parts[2])
    elif len(parts) != 1:
        raise HTTPError(404, f"no such endpoint: /v2/models/{rest[:200]}; {usage}")
    if not parts[0]:
        raise HTTPError(404, f"no model named in the path; {usage}")
    return parts[0], version, action


def _v2_tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": V2_DTYPES.get(spec.dtype, spec.dtype.upper()),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def model_metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    """The v2 model metadata document.

    Args:
        model: The version that answers.
        versions: Every version served.

    Returns:
        ``{name, versions, platform, inputs, outputs}``.
    """
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "jax_export",
        "inputs": [_v2_tensor_meta(s) for s in model.signature.inputs],
        "outputs": [_v2_tensor_meta(s) for s in model.output_specs],
    }


@dataclass
class V2Request:
    """A parsed inference request: prepared inputs, its id, the outputs asked for."""

    arrays: dict[str, np.ndarray]
    request_id: str | None
    outputs: list[tuple[str, bool]]


def _accepts(spec: TensorSpec, datatype: str) -> bool:
    if spec.dtype == "string":
        return datatype == "BYTES"
    if spec.dtype == "bool":
        return datatype == "BOOL"
    if spec.dtype in ("float16", "bfloat16", "float32", "float64"):
        return datatype in _V2_FLOATS or datatype in _V2_INTS
    return datatype in _V2_INTS


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if all(not isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    depth_limit = 64
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) >= depth_limit:
                    raise ValueError("tensor data is nested too deeply")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _check_v2_values(name: str, datatype: str, values: list[Any]) -> None:
    if datatype == "BYTES":
        return
    if datatype == "BOOL":
        ok: Callable[[Any], bool] = lambda v: isinstance(v, bool)  # noqa: E731
        what = "true/false"
    elif datatype in _V2_INTS:
        ok = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        what = "whole numbers"
    else:
        ok = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
        what = "numbers"
    for i, v in enumerate(values):
        if not ok(v):
            raise InputError(
                name,
                f"{datatype} data ({what})",
                f"{type(v).__name__} {repr(v)[:40]} at flat index {i}",
                "make the data match the declared datatype",
            )


def _decode_bytes_tensor(name: str, raw: bytes, count: int) -> list[bytes]:
    out: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InputError(name, "4-byte length prefixes", "truncated BYTES data")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InputError(name, f"an element of {length} bytes", "truncated BYTES data")
        out.append(raw[offset : offset + length])
        offset += length
    if len(out) != count:
        raise InputError(name, f"{count} elements (the shape's product)", f"{len(out)} elements")
    return out


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise HTTPError(
            400,
            f"Inference-Header-Content-Length {header_length[:40]!r} is not a length "
            "within the body",
        )
    n = int(header_length)
    return body[:n], body[n:]


def _read_envelope(doc: Any) -> tuple[str | None, dict[str, Any], list[Any]]:
    """The request's id, parameters and input tensors, type-checked."""
    if not isinstance(doc, dict):
        raise InputError("body", "a JSON object with an 'inputs' list", type(doc).__name__)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("id", "a string", type(request_id).__name__)
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise InputError("parameters", "an object", type(params).__name__)
    tensors = doc.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InputError(
            "inputs",
            "a non-empty list of tensors {name, shape, datatype, data}",
            "nothing" if tensors is None else type(tensors).__name__,
        )
    return request_id, params, tensors


@dataclass
class _TensorHead:
    name: str
    datatype: str
    shape: list[int]
    count: int
    params: dict[str, Any]


def _tensor_head(
    where: str, tensor: Any, model: LoadedModel, seen: Mapping[str, Any]
) -> _TensorHead:
    """Check a tensor's name, datatype, shape and parameters against the signature."""
    sig = model.signature
    if not isinstance(tensor, dict):
        raise InputError(
            where, "a tensor object {name, shape, datatype, data}", type(tensor).__name__
        )
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InputError(f"{where}.name", "a string", type(name).__name__)
    plan = _input_plan(model)
    spec = plan.specs.get(name)
    if spec is None:
        raise InputError.unknown_feature(name, sig.input_names, "inputs")
    if name in seen:
        raise InputError(name, "each input once", "the input twice")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in plan.accepts[name]:
        allowed = "BYTES" if spec.dtype == "string" else V2_DTYPES[spec.dtype]
        raise InputError(
            name,
            f"datatype {allowed} (the model's input is {spec.dtype})",
            f"datatype {str(datatype)[:20]}",
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape)
    ):
        raise InputError(
            name,
            f"a shape like {[-1 if d is None else d for d in spec.shape]} "
            "with the batch size first",
            f"shape {str(shape)[:60]}",
        )
    check_rows(shape[0], model)
    count = 1
    for d in shape:
        count *= d
    tparams = tensor.get("parameters", {})
    if not isinstance(tparams, dict):
        raise InputError(f"{name}.parameters", "an object", type(tparams).__name__)
    if "shared_memory_region" in tparams:
        raise InputError(
            name,
            "data in the request",
            "a shared memory region",
            "shared memory is not supported; send the data in the request",
        )
    return _TensorHead(name, datatype, shape, count, tparams)


def _binary_values(head: _TensorHead, binary: bytes, offset: int) -> tuple[Any, int]:
    """The tensor's values from the binary section; also the offset after them."""
    name, size = head.name, head.params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{name}.parameters.binary_data_size", "a byte count", repr(size)[:40])
    raw = binary[offset : offset + size]
    if len(raw) != size:
        raise InputError(name, f"{size} bytes of binary data", f"{len(raw)} bytes left in the body")
    if head.datatype == "BYTES":
        values: Any = np.array(_decode_bytes_tensor(name, raw, head.count) or [], dtype=object)
    elif head.datatype == "BF16":
        raise InputError(name, "FP32 data", "BF16 binary data", "send FP32 instead")
    else:
        dtype = V2_NUMPY[head.datatype]
        if size != head.count * dtype.itemsize:
            raise InputError(
                name, f"{head.count * dtype.itemsize} bytes for shape {head.shape}", f"{size} bytes"
            )
        values = np.frombuffer(raw, dtype=dtype)
    return values.reshape(head.shape), offset + size


def _json_values(head: _TensorHead, tensor: dict[str, Any]) -> Any:
    """The tensor's values from its ``data`` field."""
    name = head.name
    if "data" not in tensor:
        raise InputError(f"{name}.data", "the tensor's values", "nothing")
    try:
        flat = _flatten(tensor["data"])
    except ValueError as exc:
        raise InputError(f"{name}.data", "a (nested) list of values", str(exc)) from exc
    if len(flat) != head.count:
        raise InputError(name, f"{head.count} values for shape {head.shape}", f"{len(flat)} values")
    _check_v2_values(name, head.datatype, flat)
    if len(head.shape) == 1:
        return flat  # one value per row: `prepare` converts a plain list fastest
    arr = np.empty(head.count, dtype=object)
    arr[:] = flat
    return arr.reshape(head.shape)


# What a plain JSON tensor's values may be, by datatype (the fast path's check).
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    **{d: (int,) for d in _V2_INTS},
    **{d: (float, int) for d in _V2_FLOATS},
    "BOOL": (bool,),
    "BYTES": (str,),
}


@dataclass(frozen=True)
class _InputPlan:
    """Per model: each input's spec and accepted datatypes (looked up per request)."""

    specs: dict[str, TensorSpec]
    accepts: dict[str, frozenset[str]]
    max_rows: int


_INPUT_PLANS: dict[int, tuple[weakref.ref[LoadedModel], _InputPlan]] = {}


def _input_plan(model: LoadedModel) -> _InputPlan:
    """The model's `_InputPlan`, built once per loaded model."""
    cached = _INPUT_PLANS.get(id(model))
    if cached is not None and cached[0]() is model:
        return cached[1]
    if len(_INPUT_PLANS) > 256:
        _INPUT_PLANS.clear()
    datatypes = [*_PLAIN_TYPES, "BF16"]  # every datatype `_accepts` can say yes to
    plan = _InputPlan(
        specs={s.name: s for s in model.signature.inputs},
        accepts={
            s.name: frozenset(d for d in datatypes if _accepts(s, d))
            for s in model.signature.inputs
        },
        max_rows=model.max_batch_size,
    )
    _INPUT_PLANS[id(model)] = (weakref.ref(model), plan)  # unloaded models are not kept alive
    return plan


def _plain_values(tensor: Any, plan: _InputPlan, seen: Mapping[str, Any]) -> list[Any] | None:
    """A plain one-dimensional JSON tensor's values, or None to take the checked path.

    The common request (``{name, datatype, shape: [n], data: [n values]}``,
    values of the datatype's plain JSON type, no parameters) passes with a
    few checks; anything else returns None and `_tensor_head` and
    `_json_values` check it in full and name what is wrong. Whatever passes
    here would pass there with the same values.
    """
    if type(tensor) is not dict or "parameters" in tensor:
        return None
    name = tensor.get("name")
    if type(name) is not str or name in seen:
        return None
    accepts = plan.accepts.get(name)
    datatype = tensor.get("datatype")
    if accepts is None or type(datatype) is not str or datatype not in accepts:
        return None
    shape = tensor.get("shape")
    data = tensor.get("data")
    if type(shape) is not list or len(shape) != 1 or type(data) is not list:
        return None
    rows = shape[0]
    if type(rows) is not int or not 0 <= rows <= plan.max_rows or len(data) != rows:
        return None
    allowed = _PLAIN_TYPES[datatype]
    for value in data:
        if type(value) not in allowed:
            return None
    return data


def _read_tensors(tensors: list[Any], model: LoadedModel, binary: bytes) -> dict[str, Any]:
    """Every input tensor's values by name (not yet converted for the model)."""
    arrays: dict[str, Any] = {}
    offset = 0
    plan = _input_plan(model)
    for i, tensor in enumerate(tensors):
        plain = _plain_values(tensor, plan, arrays)
        if plain is not None:
            arrays[tensor["name"]] = plain
            continue
        head = _tensor_head(f"inputs[{i}]", tensor, model, arrays)
        if head.params.get("binary_data_size") is not None:
            arrays[head.name], offset = _binary_values(head, binary, offset)
        else:
            arrays[head.name] = _json_values(head, tensor)
    if offset != len(binary):
        raise InputError(
            "body",
            f"{offset} bytes of binary tensor data",
            f"{len(binary)} bytes after the JSON header",
        )
    return arrays


def _requested_outputs(
    requested: Any, sig: Signature, default_binary: bool
) -> list[tuple[str, bool]]:
    """The outputs asked for, each with whether it goes back as binary data."""
    if requested is None:
        return [(n, default_binary) for n in sig.output_names]
    if not isinstance(requested, list):
        raise InputError("outputs", "a list of {name}", type(requested).__name__)
    outputs: list[tuple[str, bool]] = []
    for i, item in enumerate(requested):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InputError(f"outputs[{i}]", "an object {name, parameters}", repr(item)[:60])
        oname = item["name"]
        if oname not in sig.output_names:
            close = InputError.unknown_feature(oname, sig.output_names)
            raise InputError(
                f"outputs[{i}]",
                f"one of the outputs {sig.output_names}",
                f"unknown output '{oname}'",
                close.hint,
            )
        oparams = item.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise InputError(f"outputs[{i}].parameters", "an object", type(oparams).__name__)
        if "shared_memory_region" in oparams:
            raise InputError(
                f"outputs[{i}]",
                "outputs in the response",
                "a shared memory region",
                "shared memory is not supported",
            )
        outputs.append((oname, oparams.get("binary_data", default_binary) is True))
    return outputs


def parse_v2_infer(
    body: bytes,
    header_length: str | None,
    model: LoadedModel,
    metrics: ServingMetrics | None = None,
) -> V2Request:
    """Decode an ``/infer`` body (JSON, or JSON plus binary tensor data).

    The row limit is checked before any value is converted.

    Args:
        body: The request body.
        header_length: The ``Inference-Header-Content-Length`` header, if sent.
        model: The model that answers.
        metrics: Where to count out-of-vocabulary values.

    Returns:
        The prepared inputs, the request id and the outputs asked for.
    """
    header, binary = _split_binary(body, header_length)
    doc = decode_json(header, "inference request")
    request_id, params, tensors = _read_envelope(doc)
    sig = model.signature
    prepared = model.prepare(_read_tensors(tensors, model, binary))
    check_prepared(model, prepared, metrics)
    default_binary = params.get("binary_data_output") is True
    outputs = _requested_outputs(doc.get("outputs"), sig, default_binary)
    return V2Request(arrays=prepared, request_id=request_id, outputs=outputs)


def format_v2_outputs(
    outputs: Mapping[str, np.ndarray], model: LoadedModel, request: V2Request
) -> tuple[dict[str, Any], list[bytes]]:
    """The ``/infer`` answer: the JSON document and the binary output sections.

    Args:
        outputs: The model's outputs by name.
        model: The model that answered.
        request: The parsed request.

    Returns:
        The JSON payload and the binary blobs that follow it (in order).
    """
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in request.outputs:
        arr = outputs[name]
        datatype = _OUTPUT_DTYPES.get(arr.dtype)
        if datatype is None:
            datatype = V2_DTYPES.get(str(arr.dtype))
            if datatype is None or datatype == "BF16":
                arr, datatype = arr.astype(np.float32), "FP32"
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr, dtype=V2_NUMPY[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = (arr if arr.ndim == 1 else arr.reshape(-1)).tolist()
        tensors.append(tensor)
    payload: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
    }
    if request.request_id is not None:
        payload["id"] = request.request_id
    payload["outputs"] = tensors
    return payload, blobs
