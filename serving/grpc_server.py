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

Cost per call: ModelInfer takes and returns bytes (parsed and written in the
handler). The rest is grpcio's own: a call crosses its I/O threads, its
completion-queue poller thread and the event loop, several thread wake-ups per
call where an HTTP request has about one, so a gRPC call costs the server more
CPU than a whole HTTP request even with an empty handler (measured with
``bench/bench_serving.py``, which reports server CPU per request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ._http import LogOnce, check_prepared
from ._proto import predict_v2_pb2 as _pb2
from .batching import Batcher, BatchFailedError, OverloadedError
from .metrics import ServingMetrics
from .repository import ModelNotFoundError, ModelNotReadyError, ModelRepository
from .runtime import InputError, LoadedModel
from .v2 import (
    V2Request,
    _binary_values,
    _json_values,
    _requested_outputs,
    _tensor_head,
    format_v2_outputs,
    model_metadata,
)

# Generated messages are created at import time: typed as Any for checkers.
pb: Any = _pb2

__all__ = ["SERVER_OPTIONS", "SERVICE", "GRPCServer"]

SERVICE = "inference.GRPCInferenceService"
# Channel arguments of the server: messages up to 64 MiB, at most 1,000 calls
# open at once on a connection, the port never shared with another process.
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_concurrent_streams", 1000),
    ("grpc.so_reuseport", 0),
)
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


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


class _Servicer:
    """The RPC handlers (async, in the server's event loop)."""

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

    async def server_live(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.repository.ready)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="jaxtx", version=self.version, extensions=[])

    async def model_ready(self, request: Any, context: Any) -> Any:
        try:
            self._resolve(request.name, request.version)
        except ModelNotReadyError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(self, request: Any, context: Any) -> Any:
        loaded = self._resolve(request.name, request.version)
        doc = model_metadata(loaded, self.repository.serving_versions(request.name))
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["outputs"]],
        )

    async def model_infer(self, data: bytes, context: Any) -> bytes:
        start = time.perf_counter()
        model, version, code = "", "", "OK"
        try:
            request = _INFER_REQUEST(data)
            loaded = self._resolve(request.model_name, request.model_version)
            model, version = loaded.name, str(loaded.version)
            parsed = parse_infer_request(request, loaded, self.metrics)
            outputs = await self.batcher.predict(loaded, parsed.arrays)
            payload, blobs = format_v2_outputs(outputs, loaded, parsed)
            reply = _INFER_RESPONSE(
                model_name=payload["model_name"],
                model_version=payload["model_version"],
                id=request.id,
                outputs=[
                    _OUTPUT_TENSOR(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                    for t in payload["outputs"]
                ],
                raw_output_contents=blobs,
            )
            return reply.SerializeToString()
        except BaseException as exc:
            code = _status(exc)[0].name
            raise
        finally:
            self._count(model, version, code, start)

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
    arrays: dict[str, Any] = {}
    for i, tensor in enumerate(request.inputs):
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
    prepared = model.prepare(arrays)
    check_prepared(model, prepared, metrics)
    requested = [{"name": o.name} for o in request.outputs] or None
    outputs = _requested_outputs(requested, model.signature, True)
    return V2Request(arrays=prepared, request_id=request.id or None, outputs=outputs)


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for an error of a handler."""
    if isinstance(exc, InputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, DecodeError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a ModelInferRequest: {exc}"
    if isinstance(exc, ModelNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, (ModelNotReadyError, OverloadedError)):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, BatchFailedError):
        return grpc.StatusCode.INTERNAL, str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, "cancelled"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


def _guarded(
    servicer: _Servicer, fn: Callable[[Any, Any], Awaitable[Any]], name: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    """``fn`` with jaxtx's errors turned into gRPC status codes."""

    async def handler(request: Any, context: Any) -> Any:
        try:
            return await fn(request, context)
        except Exception as exc:
            code, message = _status(exc)
            if code is grpc.StatusCode.INTERNAL and not isinstance(exc, BatchFailedError):
                servicer.log_once(
                    f"grpc:{name}:{type(exc).__name__}",
                    logging.ERROR,
                    "unexpected error in gRPC %s",
                    name,
                    exc_info=exc,
                )
        await context.abort(code, message)

    return handler


class GRPCServer:
    """The gRPC endpoint, started and stopped with the application.

    Args:
        repository: The models served (shared with HTTP).
        batcher: Runs model calls (shared with HTTP).
        metrics: The server's metrics.
        version: The server's version.
    """

    def __init__(
        self, repository: ModelRepository, batcher: Batcher, metrics: ServingMetrics, version: str
    ) -> None:
        self._servicer = _Servicer(repository, batcher, metrics, version)
        self._server: Any = None
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
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                _guarded(s, fn, name),
                request_deserializer=message.FromString,
                response_serializer=_serialize,
            )
            for name, (fn, message) in rpcs.items()
        }
        # ModelInfer: bytes in and out, parsed and written by the handler.
        handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
            _guarded(s, s.model_infer, "ModelInfer")
        )
        server = grpc.aio.server(options=list(SERVER_OPTIONS))
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        _log.info("gRPC (Open Inference Protocol v2) on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop, letting calls in progress finish for up to ``grace_s`` seconds."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
