"""The model server: TF Serving REST and Open Inference Protocol v2 over ASGI.

Endpoints (``{m}`` a model, ``{v}`` a version, ``{l}`` a label):

TF Serving REST API
    ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]``            model status
    ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata``   signature
    ``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict``    predictions;
    body ``{"instances": [{feature: value}, ...]}`` (rows) answered with
    ``{"predictions": [...]}``, or ``{"inputs": {feature: [values]}}``
    (columns) answered with ``{"outputs": {...}}``. With a single output the
    output name is left out, as TF Serving does. String features may also be
    sent as ``{"b64": "..."}``.

Open Inference Protocol v2 (KServe v2, Triton)
    ``GET  /v2``, ``/v2/health/live``, ``/v2/health/ready``
    ``GET  /v2/models/{m}[/versions/{v}]``          model metadata
    ``GET  /v2/models/{m}[/versions/{v}]/ready``    model readiness
    ``POST /v2/models/{m}[/versions/{v}]/infer``    inference with JSON tensors,
    or the binary tensor data extension that Triton clients use by default
    (``Inference-Header-Content-Length``); shared memory is not supported.

``GET /metrics``: Prometheus text format.

Errors are ``{"error": "..."}`` with status 400 (bad request; the message
names the field), 404 (unknown model, version, label or endpoint), 405,
413 (body over ``max_body_bytes``), 415 (unknown content encoding),
500 (model call failed) or 503 (not ready, overloaded). Health endpoints
answer 200 for true and 400 for false, as the v2 protocol says.

The model endpoints are answered by a plain ASGI handler ahead of
Starlette's router (JSON through orjson, falling back to the json module
wherever the two would read or write differently); `serve` runs uvicorn with
httptools and uvloop when they are installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .batching import Batcher, BatchFailedError, BatchingConfig, OverloadedError
from .metrics import CONTENT_TYPE, ServingMetrics
from .repository import ModelNotFoundError, ModelNotReadyError, ModelRepository, VersionPolicy
from .runtime import InputError, LoadedModel, Signature, TensorSpec

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ServerConfig", "create_app", "serve"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
_THREAD_PARSE_BYTES = 64 * 1024
_HEADER_LENGTH = b"inference-header-content-length"
_JSON_TYPE = b"application/json"
_RETRY = {"Retry-After": "1"}
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_V1_APIS = {a: f"v1_{a}" for a in ("status", "metadata", "predict")}
_V2_APIS = {a: f"v2_{a}" for a in ("metadata", "ready", "infer")}
_log = logging.getLogger(__name__)

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
_V2_DTYPES = {
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
_V2_NUMPY = {
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


@dataclass(frozen=True)
class ServerConfig:
    """Everything `create_app` needs.

    Attributes:
        base_dir: Model repository root, ``<base>/<model>/<version>/``.
        version_policy: Versions to serve for models without their own policy.
        model_policies: Version policy by model name.
        labels: Version labels by model (``{"census": {"stable": 3}}``); they
            take precedence over each model's ``labels.json``.
        models: Serve only these models (default: every one found).
        poll_interval_s: Seconds between scans for new or removed versions.
        batching: Dynamic batching settings.
        max_body_bytes: Largest request body accepted (after decompression).
        max_request_rows: Most rows in one request.
        freeze_gc: After the first scan has loaded the models, move every
            object allocated so far out of the garbage collector's view
            (`gc.freeze`): full collections then skip the large, long-lived
            heap of jax and the loaded models, which otherwise stalls requests
            for tens of milliseconds.
    """

    base_dir: str | Path
    version_policy: VersionPolicy = field(default_factory=VersionPolicy.latest)
    model_policies: Mapping[str, VersionPolicy] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    models: Sequence[str] | None = None
    poll_interval_s: float = 2.0
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_request_rows: int = 8192
    freeze_gc: bool = True


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


@dataclass
class _Ctx:
    """What a request resolved to, for metrics."""

    api: str
    model: str = ""
    version: str = ""

    def known(self, repository: ModelRepository, model: str) -> None:
        """Label metrics with the model name, once it is known to exist."""
        if repository.has_model(model):
            self.model = model

    def bind(self, model: LoadedModel) -> LoadedModel:
        self.model, self.version = model.name, str(model.version)
        return model


class _Reply:
    """A response of the model endpoints: status, body, content type, other headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: bytes | None = _JSON_TYPE,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers


class _Call:
    """The parts of an ASGI request the model endpoints read."""

    __slots__ = ("method", "receive", "rest", "scope")

    def __init__(self, scope: Scope, receive: Receive, rest: str) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.rest = rest

    def header(self, name: bytes) -> str | None:
        """The first value of a header (``name`` in lower case, as ASGI servers send), or None."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None


def _encode(payload: Any) -> bytes:
    """Serialize as compact JSON; non-finite floats are written NaN/Infinity as before."""
    try:
        body = orjson.dumps(payload)
    except TypeError:  # an integer past 64 bits or a lone surrogate: the slow path copes
        body = b"null"
    if b"null" in body:  # orjson writes NaN and infinities as null
        body = json.dumps(payload, separators=(",", ":"), allow_nan=True).encode("utf-8")
    return body


def _json_reply(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> _Reply:
    return _Reply(_encode(payload), status, _JSON_TYPE, headers)


def _json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        _encode(payload), status_code=status, media_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> _Reply:
    return _json_reply({"error": message}, status, headers)


def _too_big(limit: int) -> _HTTPError:
    return _HTTPError(
        413,
        f"request body is larger than {limit} bytes; send fewer rows per request",
        {"Connection": "close"},
    )


def _parse_version(text: str) -> int:
    if not text.isdigit() or text.startswith("0") or len(text) > 18:
        raise _HTTPError(400, f"version '{text}' is not a positive integer; use e.g. /versions/3")
    return int(text)


def _decode_json(raw: bytes, what: str = "request body") -> Any:
    # orjson reads integers past 64 bits as floats: leave long digit runs to the json module.
    if _LONG_DIGITS.search(raw) is None:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(raw)
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise _HTTPError(400, f"{what} is not UTF-8 text: {exc}") from exc
    except ValueError as exc:
        raise _HTTPError(400, f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise _HTTPError(400, f"{what} is nested too deeply") from exc


class _App:
    """Request handlers sharing one repository, batcher and metrics registry."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServingMetrics()
        batching = config.batching
        warm = [1]
        if batching.enabled:
            size = 2
            while size < batching.max_batch_size:
                warm.append(size)
                size *= 2
            warm.append(batching.max_batch_size)
        self.repository = ModelRepository(
            config.base_dir,
            policy=config.version_policy,
            policies=config.model_policies,
            labels=config.labels,
            models=config.models,
            poll_interval_s=config.poll_interval_s,
            warmup_batch_sizes=warm,
            max_batch_size=config.max_request_rows,
            metrics=self.metrics,
        )
        self.batcher = Batcher(batching, self.metrics)
        self._counters: dict[tuple[str, str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str, str], Any] = {}
        self._apis: dict[str, Callable[[_Call, _Ctx], Awaitable[_Reply]]] = {
            "v1": self._v1,
            "v2": self._v2,
        }
        try:
            from importlib.metadata import version

            self.version = version("jaxtx")
        except Exception:  # pragma: no cover - not installed
            self.version = "0"

    # ------------------------------------------------------------ framework
    async def serve_model_api(
        self, scope: Scope, receive: Receive, send: Send, api: str, rest: str
    ) -> None:
        """Answer one request of the model endpoints (``/v1/models/...``, ``/v2/models/...``).

        Args:
            scope: The ASGI scope.
            receive: The ASGI receive channel.
            send: The ASGI send channel.
            api: ``v1`` or ``v2``.
            rest: The path after ``/v1/models/`` or ``/v2/models/``.
        """
        start = time.perf_counter()
        ctx = _Ctx(api=api)
        try:
            reply = await self._apis[api](_Call(scope, receive, rest), ctx)
        except _HTTPError as exc:
            reply = _error(exc.status, exc.message, exc.headers)
        except InputError as exc:
            reply = _error(400, str(exc))
        except ModelNotFoundError as exc:
            reply = _error(404, str(exc))
        except (ModelNotReadyError, OverloadedError) as exc:
            reply = _error(503, str(exc), _RETRY)
        except BatchFailedError as exc:
            reply = _error(500, str(exc))
        except _Disconnected:
            reply = _Reply(b"", 499, None)  # nobody is left to read it
        except Exception as exc:
            _log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            reply = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        status = reply.status
        key = (ctx.model, ctx.version, ctx.api, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self.metrics.requests.labels(ctx.model, ctx.version, ctx.api, str(status))
            self._counters[key] = counter
        counter.inc()
        if ctx.model:
            lkey = (ctx.model, ctx.version, ctx.api)
            latency = self._latencies.get(lkey)
            if latency is None:
                latency = self.metrics.request_latency.labels(*lkey)
                self._latencies[lkey] = latency
            latency.observe(time.perf_counter() - start)
        body = reply.body
        headers = [(b"content-length", str(len(body)).encode())]
        if reply.content_type is not None:
            headers.append((b"content-type", reply.content_type))
        if reply.headers:
            headers.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, call: _Call) -> bytes:
        limit = self.config.max_body_bytes
        declared = call.header(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _HTTPError(400, f"invalid Content-Length header {declared[:40]!r}")
            if int(declared) > limit:
                raise _too_big(limit)
        chunks: list[bytes] = []
        total = 0
        receive = call.receive
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    total += len(chunk)
                    if total > limit:
                        raise _too_big(limit)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            elif kind == "http.disconnect":
                raise _Disconnected
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = call.header(b"content-encoding")
        if encoding is None:
            return body
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            raise _HTTPError(
                415, f"Content-Encoding {encoding[:40]!r} is not supported; use gzip or deflate"
            )
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        try:
            inflater = zlib.decompressobj(wbits)
            data = inflater.decompress(body, limit + 1)
            if len(data) > limit or inflater.unconsumed_tail:
                raise _too_big(limit)
            data += inflater.flush()
        except zlib.error as exc:
            raise _HTTPError(400, f"request body is not valid {encoding} data: {exc}") from exc
        if len(data) > limit:
            raise _too_big(limit)
        return data

    async def _offload(self, size: int, fn: Callable[[], Any]) -> Any:
        """Run CPU-heavy parsing in a thread when the body is large."""
        if size > _THREAD_PARSE_BYTES:
            return await run_in_threadpool(fn)
        return fn()

    # ------------------------------------------------------------------ misc
    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {
            404: f"no such endpoint: {request.url.path}; see /v1/models/<model> or /v2",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return _json_response({"error": message}, exc.status_code, exc.headers)

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        return _json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

    # ---------------------------------------------------------------- TF REST
    async def _v1(self, call: _Call, ctx: _Ctx) -> _Reply:
        rest = call.rest
        model, version, label, action = _parse_v1_path(rest)
        ctx.api = _V1_APIS[action]
        ctx.known(self.repository, model)
        want = "POST" if action == "predict" else "GET"
        if call.method != want:
            raise _HTTPError(
                405,
                f"use {want} for /v1/models/{rest}",
                {"Allow": want},
            )
        repo = self.repository
        if action == "status":
            statuses = repo.statuses(model, version, label)
            if statuses:
                with contextlib.suppress(ModelNotFoundError, ModelNotReadyError):
                    ctx.bind(repo.resolve(model, version, label))
            return _json_reply(
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
        loaded = ctx.bind(repo.resolve(model, version, label))
        if action == "metadata":
            return _json_reply(_v1_metadata(loaded))
        body = await self._read_body(call)
        if len(body) <= _THREAD_PARSE_BYTES:
            arrays, row_format = _parse_v1_predict(body, loaded)
            outputs = await self.batcher.predict(loaded, arrays)
            return _json_reply(_format_v1_outputs(outputs, loaded.signature, row_format))
        arrays, row_format = await run_in_threadpool(_parse_v1_predict, body, loaded)
        outputs = await self.batcher.predict(loaded, arrays)
        payload = await run_in_threadpool(_format_v1_outputs, outputs, loaded.signature, row_format)
        return _Reply(await run_in_threadpool(_encode, payload))

    # -------------------------------------------------------------- v2 / OIP
    async def v2_server(self, request: Request) -> Response:
        return _json_response(
            {"name": "jaxtx", "version": self.version, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Request) -> Response:
        return _json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        ready = self.repository.ready
        return _json_response({"ready": ready}, 200 if ready else 400)

    async def _v2(self, call: _Call, ctx: _Ctx) -> _Reply:
        rest = call.rest
        model, version, action = _parse_v2_path(rest)
        ctx.api = _V2_APIS[action]
        ctx.known(self.repository, model)
        want = "POST" if action == "infer" else "GET"
        if call.method != want:
            raise _HTTPError(405, f"use {want} for /v2/models/{rest}", {"Allow": want})
        repo = self.repository
        if action == "ready":
            try:
                ctx.bind(repo.resolve(model, version))
            except ModelNotReadyError:
                return _json_reply({"name": model, "ready": False}, 400)
            return _json_reply({"name": model, "ready": True})
        loaded = ctx.bind(repo.resolve(model, version))
        if action == "metadata":
            return _json_reply(
                {
                    "name": model,
                    "versions": [str(v) for v in repo.serving_versions(model)],
                    "platform": "jax_export",
                    "inputs": [_v2_tensor_meta(s) for s in loaded.signature.inputs],
                    "outputs": [_v2_tensor_meta(s) for s in loaded.output_specs],
                }
            )
        body = await self._read_body(call)
        header_length = call.header(_HEADER_LENGTH)
        parsed = await self._offload(
            len(body), lambda: _parse_v2_infer(body, header_length, loaded)
        )
        outputs = await self.batcher.predict(loaded, parsed.arrays)
        payload, blobs = await self._offload(
            len(body), lambda: _format_v2_outputs(outputs, loaded, parsed)
        )
        text = await self._offload(len(body), lambda: _encode(payload))
        if not blobs:
            return _Reply(text)
        return _Reply(
            b"".join([text, *blobs]),
            content_type=b"application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(text))},
        )


class _ModelAPI:
    """ASGI endpoint of ``/v1/models/{rest}`` or ``/v2/models/{rest}`` behind the router."""

    def __init__(self, handlers: _App, api: str) -> None:
        self.handlers = handlers
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rest: str = scope["path_params"]["rest"]
        await self.handlers.serve_model_api(scope, receive, send, self.api, rest)


class _ServingApp(Starlette):
    """The application: model endpoints answered directly, the rest through Starlette.

    ``GET`` and ``POST`` requests under ``/v1/models/`` and ``/v2/models/``
    skip the router and middleware (their handler catches every error
    itself); everything else, other methods on those paths included, goes
    through Starlette's routes and error handlers.
    """

    def __init__(self, handlers: _App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "GET"):
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
                path = path[len(root) :]
            if path.startswith("/v1/models/"):
                await self._handlers.serve_model_api(scope, receive, send, "v1", path[11:])
                return
            if path.startswith("/v2/models/"):
                await self._handlers.serve_model_api(scope, receive, send, "v2", path[11:])
                return
        await super().__call__(scope, receive, send)


# ------------------------------------------------------------------- TF REST
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
            raise _HTTPError(
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
        version = _parse_version(parts[2])
    elif len(parts) == 3 and parts[1] == "labels" and parts[2]:
        label = parts[2]
    elif len(parts) != 1:
        raise _HTTPError(404, f"no such endpoint: /v1/models/{rest[:200]}; {usage}")
    if not parts[0]:
        raise _HTTPError(404, f"no model named in the path; {usage}")
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


def _v1_metadata(model: LoadedModel) -> dict[str, Any]:
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


def _parse_v1_predict(body: bytes, model: LoadedModel) -> tuple[dict[str, np.ndarray], bool]:
    """Decode a :predict body into prepared arrays; also say whether it used rows."""
    doc = _decode_json(body)
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
        return model.prepare(inputs), False
    return model.prepare(_rows_to_columns(doc["instances"], sig)), True


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


def _format_v1_outputs(
    outputs: Mapping[str, np.ndarray], sig: Signature, row_format: bool
) -> dict[str, Any]:
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


# ---------------------------------------------------------------------- v2
def _parse_v2_path(rest: str) -> tuple[str, int | None, str]:
    usage = "use /v2/models/<model>[/versions/<n>][/ready|/infer]"
    parts = rest.split("/")
    action = "metadata"
    if len(parts) in (2, 4) and parts[-1] in ("ready", "infer"):
        action = parts.pop()
    version = None
    if len(parts) == 3 and parts[1] == "versions":
        version = _parse_version(parts[2])
    elif len(parts) != 1:
        raise _HTTPError(404, f"no such endpoint: /v2/models/{rest[:200]}; {usage}")
    if not parts[0]:
        raise _HTTPError(404, f"no model named in the path; {usage}")
    return parts[0], version, action


def _v2_tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": _V2_DTYPES.get(spec.dtype, spec.dtype.upper()),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


@dataclass
class _V2Request:
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


def _parse_v2_infer(body: bytes, header_length: str | None, model: LoadedModel) -> _V2Request:
    binary = b""
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise _HTTPError(
                400,
                f"Inference-Header-Content-Length {header_length[:40]!r} is not a length "
                "within the body",
            )
        n = int(header_length)
        body, binary = body[:n], body[n:]
    doc = _decode_json(body, "inference request")
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
    sig = model.signature
    names = sig.input_names
    arrays: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(tensors):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise InputError(
                where, "a tensor object {name, shape, datatype, data}", type(tensor).__name__
            )
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InputError(f"{where}.name", "a string", type(name).__name__)
        if name not in names:
            raise InputError.unknown_feature(name, names, "inputs")
        if name in arrays:
            raise InputError(name, "each input once", "the input twice")
        spec = sig.input(name)
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or not _accepts(spec, datatype):
            allowed = "BYTES" if spec.dtype == "string" else _V2_DTYPES[spec.dtype]
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
        size = tparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InputError(
                    f"{name}.parameters.binary_data_size", "a byte count", repr(size)[:40]
                )
            raw = binary[offset : offset + size]
            if len(raw) != size:
                raise InputError(
                    name, f"{size} bytes of binary data", f"{len(raw)} bytes left in the body"
                )
            offset += size
            if datatype == "BYTES":
                values: Any = np.array(_decode_bytes_tensor(name, raw, count) or [], dtype=object)
            elif datatype == "BF16":
                raise InputError(name, "FP32 data", "BF16 binary data", "send FP32 instead")
            else:
                dtype = _V2_NUMPY[datatype]
                if size != count * dtype.itemsize:
                    raise InputError(
                        name, f"{count * dtype.itemsize} bytes for shape {shape}", f"{size} bytes"
                    )
                values = np.frombuffer(raw, dtype=dtype)
            arr = values.reshape(shape)
        else:
            if "data" not in tensor:
                raise InputError(f"{name}.data", "the tensor's values", "nothing")
            try:
                flat = _flatten(tensor["data"])
            except ValueError as exc:
                raise InputError(f"{name}.data", "a (nested) list of values", str(exc)) from exc
            if len(flat) != count:
                raise InputError(name, f"{count} values for shape {shape}", f"{len(flat)} values")
            _check_v2_values(name, datatype, flat)
            if len(shape) == 1:
                arr = flat  # one value per row: `prepare` converts a plain list fastest
            else:
                arr = np.empty(count, dtype=object)
                arr[:] = flat
                arr = arr.reshape(shape)
        arrays[name] = arr
    if offset != len(binary):
        raise InputError(
            "body",
            f"{offset} bytes of binary tensor data",
            f"{len(binary)} bytes after the JSON header",
        )
    prepared = model.prepare(arrays)
    default_binary = params.get("binary_data_output") is True
    outputs: list[tuple[str, bool]] = []
    requested = doc.get("outputs")
    if requested is None:
        outputs = [(n, default_binary) for n in sig.output_names]
    else:
        if not isinstance(requested, list):
            raise InputError("outputs", "a list of {name}", type(requested).__name__)
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
            binary_out = oparams.get("binary_data", default_binary) is True
            outputs.append((oname, binary_out))
    return _V2Request(arrays=prepared, request_id=request_id, outputs=outputs)


def _format_v2_outputs(
    outputs: Mapping[str, np.ndarray], model: LoadedModel, request: _V2Request
) -> tuple[dict[str, Any], list[bytes]]:
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in request.outputs:
        arr = outputs[name]
        datatype = _V2_DTYPES.get(str(arr.dtype))
        if datatype is None or datatype == "BF16":
            arr, datatype = arr.astype(np.float32), "FP32"
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr, dtype=_V2_NUMPY[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        tensors.append(tensor)
    payload: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
    }
    if request.request_id is not None:
        payload["id"] = request.request_id
    payload["outputs"] = tensors
    return payload, blobs


async def _freeze_gc(repository: ModelRepository) -> None:
    while not repository.polled:
        await asyncio.sleep(0.05)
    gc.collect()
    gc.freeze()
    _log.debug("froze %d objects out of the garbage collector's view", gc.get_freeze_count())


# ------------------------------------------------------------------- public
def create_app(config: ServerConfig) -> Starlette:
    """Build the ASGI application.

    The repository poller starts with the application's lifespan and the
    first scan runs in the background: `/v2/health/ready` turns true once
    every model found has a version serving.

    Args:
        config: Server settings.

    Returns:
        A Starlette application; ``app.state.repository``,
        ``app.state.batcher`` and ``app.state.metrics`` give access to its parts.
    """
    handlers = _App(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        handlers.repository.start()
        freezer = asyncio.create_task(_freeze_gc(handlers.repository)) if config.freeze_gc else None
        try:
            yield
        finally:
            if freezer is not None:
                freezer.cancel()
            await run_in_threadpool(handlers.repository.stop)
            await handlers.batcher.close()

    routes = [
        Route("/v1/models/{rest:path}", _ModelAPI(handlers, "v1"), methods=["GET", "POST"]),
        Route("/v2", handlers.v2_server, methods=["GET"]),
        Route("/v2/health/live", handlers.v2_live, methods=["GET"]),
        Route("/v2/health/ready", handlers.v2_ready, methods=["GET"]),
        Route("/v2/models/{rest:path}", _ModelAPI(handlers, "v2"), methods=["GET", "POST"]),
        Route("/metrics", handlers.metrics_endpoint, methods=["GET"]),
    ]
    app = _ServingApp(
        handlers,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: handlers.http_exception,
            Exception: handlers.internal_error,
        },
    )
    app.state.repository = handlers.repository
    app.state.batcher = handlers.batcher
    app.state.metrics = handlers.metrics
    app.state.config = config
    return app


def serve(
    base_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    *,
    config: ServerConfig | None = None,
    log_level: str = "info",
    **overrides: Any,
) -> None:
    """Serve the models under ``base_dir`` until interrupted.

    Args:
        base_dir: Model repository root, ``<base>/<model>/<version>/``.
        host: Address to bind; loopback by default. The server has no
            authentication: put it behind a proxy that has before binding
            anything else.
        port: TCP port.
        config: Settings (``base_dir`` and ``overrides`` replace its fields).
        log_level: Uvicorn log level.
        **overrides: `ServerConfig` fields, e.g. ``batching=BatchingConfig(enabled=False)``.
    """
    import uvicorn

    cfg = replace(config or ServerConfig(base_dir=base_dir), base_dir=base_dir, **overrides)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        _log.warning(
            "binding %s: the server has no authentication; anyone who can reach it can query "
            "the models",
            host,
        )
    uvicorn.run(
        create_app(cfg),
        host=host,
        port=port,
        # The C HTTP parser and event loop when installed: several times the
        # requests per second of the pure-Python h11 parser and asyncio loop.
        http=_http_protocol("httptools" if _installed("httptools") else "h11"),
        loop="uvloop" if _installed("uvloop") else "asyncio",
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


class _CoalescingTransport:
    """A transport whose writes of one event loop iteration go out as one.

    Uvicorn writes a response's status line and headers, then its body, each
    with a write of its own: two system calls and two TCP segments for every
    small response, and two wake-ups of the client. Joining the writes made
    while one loop iteration runs halves that. Everything else is the
    wrapped transport's.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        """Queue ``data``; it is written at the end of this loop iteration."""
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        """Queue several chunks."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write what is queued now."""
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent, queued here or in the transport."""
        queued = sum(len(c) for c in self._pending) if self._pending else 0
        return queued + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        """Flush, then close the write side."""
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Flush, then close (the transport sends what it holds first)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _http_protocol(name: str) -> type[asyncio.Protocol]:
    """Uvicorn's ``httptools`` or ``h11`` protocol, writing each response at once."""
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class Protocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    Protocol.__name__ = Protocol.__qualname__ = f"Coalescing{base.__name__}"
    return Protocol


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
