"""Open Inference Protocol v2 over gRPC (KServe's ``grpc_predict_v2.proto``).

The service ``inference.GRPCInferenceService`` answers ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer on a
port of its own, in the HTTP server's event loop, sharing its model
repository and batcher: a gRPC request and an HTTP request can land in the
same model call. Inputs come as typed ``contents`` or as
``raw_input_contents`` (what Triton's clients send); outputs go back as
``raw_output_contents``. Tensors are checked exactly as over HTTP
(`jaxtx.serving.v2`); errors are gRPC status codes: INVALID_ARGUMENT (bad
input; the message names the field), NOT_FOUND, UNAVAILABLE (not ready,
overloaded), INTERNAL. Each ModelInfer call is counted in
``jaxtx_serving_requests_total`` with ``api="grpc"`` and the status name as
its code (``OK``, ``INVALID_ARGUMENT``...), and timed in
``jaxtx_serving_request_latency_seconds``, as HTTP requests are.

The calls travel over this package's own HTTP/2 transport (`jaxtx.serving._h2`:
h2c, unary calls, flow control, limits), which runs in the event loop itself;
a call costs about what an HTTP request does (`bench/bench_serving.py`
reports server CPU per request for both).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from ._h2 import GRPCError, H2Limits, H2Server, Method, Pending, Status
from ._http import LogOnce, check_prepared
from ._proto import predict_v2_pb2 as _pb2
from .batching import Batcher, BatchFailedError, OverloadedError
from .metrics import ServingMetrics
from .repository import ModelNotFoundError, ModelNotReadyError, ModelRepository
from .runtime import InputError, LoadedModel
from .v2 import (
    V2_NUMPY,
    V2Request,
    _binary_values,
    _input_plan,
    _json_values,
    _requested_outputs,
    _tensor_head,
    format_v2_outputs,
    model_metadata,
)

# Generated messages are created at import time: typed as Any for checkers.
pb: Any = _pb2

__all__ = ["SERVICE", "GRPCServer", "H2Limits", "parse_infer_request"]

SERVICE = "inference.GRPCInferenceService"
_INFER_REQUEST = pb.ModelInferRequest.FromString
_INFER_RESPONSE = pb.ModelInferResponse
_OUTPUT_TENSOR = pb.ModelInferResponse.InferOutputTensor
_log = logging.getLogger(__name__)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class _Servicer:
    """The RPC handlers, in the server's event loop.

    The small RPCs are coroutines; ModelInfer parses and queues its call at
    once and is answered from the batcher's future (`Pending`).
    """

    def __init__(
        self, repository: ModelRepository, batcher: Batcher, metrics: ServingMetrics, version: str
    ) -> None:
        self.repository = repository
        self.batcher = batcher
        self.metrics = metrics
        self.version = version
        self.log_once = LogOnce(_log)
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}
        self._replies = _ReplyEncoder()

    async def server_live(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.repository.ready)

    async def server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(name="jaxtx", version=self.version, extensions=[])

    async def model_ready(self, request: Any) -> Any:
        try:
            self._resolve(request.name, request.version)
        except ModelNotReadyError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(self, request: Any) -> Any:
        loaded = self._resolve(request.name, request.version)
        doc = model_metadata(loaded, self.repository.serving_versions(request.name))
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["outputs"]],
        )

    def model_infer(self, data: bytes) -> Pending:
        """Parse, check and queue a call now; its reply is written when its batch has run."""
        start = time.perf_counter()
        model = version = ""
        try:
            request = _INFER_REQUEST(data)
            loaded = self._resolve(request.model_name, request.model_version)
            model, version = loaded.name, str(loaded.version)
            parsed = parse_infer_request(request, loaded, self.metrics)
            future = self.batcher.submit(loaded, parsed.arrays)
        except Exception as exc:
            status, message = _status(exc)
            self._count(model, version, status.name, start)
            raise self._error(exc, "ModelInfer", status, message) from None
        finish = functools.partial(self._infer_reply, start, loaded, parsed, request.id)
        return Pending(future, finish)

    def _infer_reply(
        self, start: float, loaded: LoadedModel, parsed: V2Request, request_id: str, future: Any
    ) -> bytes:
        code = "OK"
        try:
            return self._replies.encode(future.result(), loaded, parsed, request_id)
        except BaseException as exc:
            status, message = _status(exc)
            code = status.name
            if isinstance(exc, Exception):
                raise self._error(exc, "ModelInfer", status, message) from None
            raise
        finally:
            self._count(loaded.name, str(loaded.version), code, start)

    def _error(self, exc: Exception, name: str, code: Status, message: str) -> GRPCError:
        """The status a method's error is answered with; unexpected ones are logged."""
        if code is Status.INTERNAL and not isinstance(exc, (BatchFailedError, GRPCError)):
            self.log_once(
                f"grpc:{name}:{type(exc).__name__}",
                logging.ERROR,
                "unexpected error in gRPC %s",
                name,
                exc_info=exc,
            )
        return GRPCError(code, message)

    def _count(self, model: str, version: str, code: str, start: float) -> None:
        """Count a ModelInfer call and time it (label children cached)."""
        key = (model, version, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self.metrics.requests.labels(model, version, "grpc", code)
            self._counters[key] = counter
        counter.inc()
        if model:
            latency = self._latencies.get((model, version))
            if latency is None:
                latency = self.metrics.request_latency.labels(model, version, "grpc")
                self._latencies[model, version] = latency
            latency.observe(time.perf_counter() - start)

    def _resolve(self, name: str, version: str) -> LoadedModel:
        if version and (not version.isdigit() or version.startswith("0") or len(version) > 18):
            raise InputError("model_version", "a positive integer", repr(version)[:40])
        return self.repository.resolve(name, int(version) if version else None)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ID_TAG = b"\x1a"  # ModelInferResponse.id: field 3, length-delimited
_RAW_TAG = b"\x32"  # ModelInferResponse.raw_output_contents: field 6, length-delimited


class _ReplyEncoder:
    """ModelInferResponse bytes, the part that repeats written once per kind of answer.

    A reply is its model name and version and the outputs' names, datatypes
    and shapes (the same for every answer of one version at one row count),
    then the request's id and the raw output data. The repeating part is
    serialized by protobuf once and kept; the id and data are appended as
    fields of their own (protobuf messages concatenate field by field).
    """

    def __init__(self) -> None:
        self._heads: dict[tuple[Any, ...], bytes] = {}

    def encode(
        self, outputs: dict[str, Any], model: LoadedModel, parsed: V2Request, request_id: str
    ) -> bytes:
        payload, blobs = format_v2_outputs(outputs, model, parsed)
        tensors = payload["outputs"]
        key = (
            payload["model_name"],
            payload["model_version"],
            *[(t["name"], t["datatype"], *t["shape"]) for t in tensors],
        )
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= 1024:
                self._heads.clear()
            head = _INFER_RESPONSE(
                model_name=payload["model_name"],
                model_version=payload["model_version"],
                outputs=[
                    _OUTPUT_TENSOR(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                    for t in tensors
                ],
            ).SerializeToString()
            self._heads[key] = head
        parts = [head]
        if request_id:
            text = request_id.encode("utf-8")
            parts += (_ID_TAG, _varint(len(text)), text)
        for blob in blobs:
            parts += (_RAW_TAG, _varint(len(blob)), blob)
        return b"".join(parts)


def parse_infer_request(
    request: Any, model: LoadedModel, metrics: ServingMetrics | None = None
) -> V2Request:
    """Check and convert a ModelInferRequest as the HTTP protocol does its JSON form.

    Args:
        request: The ``ModelInferRequest`` message.
        model: The model that answers.
        metrics: Where to count out-of-vocabulary values.

    Returns:
        The prepared inputs and the outputs asked for (all as raw data).
    """
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InputError(
            "raw_input_contents", f"{len(request.inputs)} entries, one per input", str(len(raw))
        )
    if not request.inputs:
        raise InputError("inputs", "a non-empty list of tensors", "nothing")
    arrays = _plain_raw_inputs(request.inputs, raw, model) if raw else None
    if arrays is None:
        arrays = _checked_inputs(request.inputs, raw, model)
    prepared = model.prepare(arrays)
    check_prepared(model, prepared, metrics)
    requested = [{"name": o.name} for o in request.outputs] or None
    outputs = _requested_outputs(requested, model.signature, True)
    return V2Request(arrays=prepared, request_id=request.id or None, outputs=outputs)


_UINT32 = struct.Struct("<I")


def _plain_raw_inputs(tensors: Any, raw: list[bytes], model: LoadedModel) -> dict[str, Any] | None:
    """The common request's values as plain lists, or None to take the checked path.

    The common request: every input one-dimensional, with the same row count,
    a datatype the input accepts, no parameters, raw contents of exactly the
    right size, numbers for numeric inputs and UTF-8 strings for string
    inputs. Its values become the lists a JSON request would carry, which
    `LoadedModel.prepare` converts fastest. Anything else returns None and
    `_checked_inputs` checks it in full and names what is wrong; whatever
    passes here would pass there with the same values.
    """
    plan = _input_plan(model)
    rows = -1
    arrays: dict[str, Any] = {}
    for tensor, data in zip(tensors, raw, strict=True):
        name = tensor.name
        accepts = plan.accepts.get(name)
        datatype = tensor.datatype
        if accepts is None or datatype not in accepts or name in arrays or tensor.parameters:
            return None
        shape = tensor.shape
        if len(shape) != 1 or len(plan.specs[name].shape) != 1:
            return None
        n = shape[0]
        if rows < 0:
            if not 0 < n <= plan.max_rows:
                return None
            rows = n
        elif n != rows:
            return None
        if datatype == "BYTES":
            if plan.specs[name].dtype != "string":
                return None
            values = _utf8_elements(data, n)
            if values is None:
                return None
        elif datatype in _PLAIN_NUMERIC:
            dtype = V2_NUMPY[datatype]
            if len(data) != n * dtype.itemsize:
                return None
            values = np.frombuffer(data, dtype=dtype).tolist()
        else:
            return None
        arrays[name] = values
    return arrays


_PLAIN_NUMERIC = frozenset(
    ("FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
)


def _utf8_elements(data: bytes, count: int) -> list[str] | None:
    """``count`` length-prefixed BYTES elements as text, or None if they are not exactly that."""
    out: list[str] = []
    offset, end = 0, len(data)
    unpack = _UINT32.unpack_from
    try:
        for _ in range(count):
            if offset + 4 > end:
                return None
            (length,) = unpack(data, offset)
            offset += 4
            if offset + length > end:
                return None
            out.append(data[offset : offset + length].decode("utf-8"))
            offset += length
    except UnicodeDecodeError:
        return None
    return out if offset == end else None


def _checked_inputs(tensors: Any, raw: list[bytes], model: LoadedModel) -> dict[str, Any]:
    """Every input checked against the signature as the HTTP protocol checks its JSON form."""
    arrays: dict[str, Any] = {}
    for i, tensor in enumerate(tensors):
        params = {"binary_data_size": len(raw[i])} if raw else {}
        as_dict = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
            "parameters": params,
        }
        head = _tensor_head(f"inputs[{i}]", as_dict, model, arrays)
        if raw:
            arrays[head.name], _ = _binary_values(head, raw[i], 0)
        else:
            field = _CONTENTS.get(head.datatype)
            if field is None:
                raise InputError(head.name, "raw_input_contents", f"{head.datatype} contents")
            arrays[head.name] = _json_values(head, {"data": list(getattr(tensor.contents, field))})
    return arrays


def _status(exc: BaseException) -> tuple[Status, str]:
    """The gRPC status code and message for an error of a handler."""
    if isinstance(exc, GRPCError):
        return exc.code, exc.message
    if isinstance(exc, InputError):
        return Status.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, DecodeError):
        return Status.INVALID_ARGUMENT, f"the request is not a ModelInferRequest: {exc}"
    if isinstance(exc, ModelNotFoundError):
        return Status.NOT_FOUND, str(exc)
    if isinstance(exc, (ModelNotReadyError, OverloadedError)):
        return Status.UNAVAILABLE, str(exc)
    if isinstance(exc, BatchFailedError):
        return Status.INTERNAL, str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return Status.CANCELLED, "cancelled"
    return Status.INTERNAL, f"internal error: {type(exc).__name__}"


def _guarded(servicer: _Servicer, fn: Callable[[bytes], Awaitable[bytes]], name: str) -> Method:
    """``fn`` with jaxtx's errors turned into gRPC status codes."""

    async def method(data: bytes) -> bytes:
        try:
            return await fn(data)
        except Exception as exc:
            raise servicer._error(exc, name, *_status(exc)) from None

    return method


def _unary(
    fn: Callable[[Any], Awaitable[Any]], message: Any
) -> Callable[[bytes], Awaitable[bytes]]:
    """A handler of typed messages as a method of bytes."""
    parse = message.FromString
    kind = message.DESCRIPTOR.name

    async def method(data: bytes) -> bytes:
        try:
            request = parse(data)
        except DecodeError as exc:
            raise InputError("request", f"a {kind}", f"undecodable bytes ({exc})") from None
        reply = await fn(request)
        return bytes(reply.SerializeToString())

    return method


class GRPCServer:
    """The gRPC endpoint, started and stopped with the application.

    Args:
        repository: The models served (shared with HTTP).
        batcher: Runs model calls (shared with HTTP).
        metrics: The server's metrics.
        version: The server's version.
    """

    def __init__(
        self,
        repository: ModelRepository,
        batcher: Batcher,
        metrics: ServingMetrics,
        version: str,
        limits: H2Limits | None = None,
    ) -> None:
        self._servicer = _Servicer(repository, batcher, metrics, version)
        self._limits = limits or H2Limits()
        self._server: H2Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Start listening (in the running event loop).

        Args:
            host: Address to bind.
            port: TCP port (0: any free port).

        Returns:
            The port bound.
        """
        s = self._servicer
        rpcs = {
            "ServerLive": (s.server_live, pb.ServerLiveRequest),
            "ServerReady": (s.server_ready, pb.ServerReadyRequest),
            "ServerMetadata": (s.server_metadata, pb.ServerMetadataRequest),
            "ModelReady": (s.model_ready, pb.ModelReadyRequest),
            "ModelMetadata": (s.model_metadata, pb.ModelMetadataRequest),
        }
        methods = {
            f"/{SERVICE}/{name}": _guarded(s, _unary(fn, message), name)
            for name, (fn, message) in rpcs.items()
        }
        # ModelInfer: bytes in and out, parsed and written by the handler (errors its own).
        methods[f"/{SERVICE}/ModelInfer"] = s.model_infer
        server = H2Server(methods, self._limits)
        self.port = await server.start(host, port)
        self._server = server
        _log.info("gRPC (Open Inference Protocol v2) on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop, letting calls in progress finish for up to ``grace_s`` seconds."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
