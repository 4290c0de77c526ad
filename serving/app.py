"""The ASGI application: settings, routing, limits, errors and metrics around the protocols.

Endpoints (``{m}`` a model, ``{v}`` a version, ``{l}`` a label):

TF Serving REST API (`jaxtx.serving.tf_rest`)
    ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]``            model status
    ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata``   signature
    ``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict``    predictions

Open Inference Protocol v2 (`jaxtx.serving.v2`)
    ``GET  /v2``, ``/v2/health/live``, ``/v2/health/ready``
    ``GET  /v2/models/{m}[/versions/{v}]``          model metadata
    ``GET  /v2/models/{m}[/versions/{v}]/ready``    model readiness
    ``POST /v2/models/{m}[/versions/{v}]/infer``    inference

``GET /metrics``: Prometheus text format. ``GET /openapi.json``: the OpenAPI
document of both REST protocols (`jaxtx.serving.openapi`).

Errors are ``{"error": "..."}`` with status 400 (bad request; the message
names the field), 404 (unknown model, version, label or endpoint), 405,
413 (body over ``max_body_bytes``), 415 (unknown content encoding),
500 (model call failed) or 503 (not ready, overloaded). Health endpoints
answer 200 for true and 400 for false, as the v2 protocol says.

The model endpoints are answered by a plain ASGI handler ahead of
Starlette's router (JSON through orjson, falling back to the json module
wherever the two would read or write differently).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._http import (
    RETRY,
    Call,
    Ctx,
    Disconnected,
    HTTPError,
    LogOnce,
    RepeatFilter,
    Reply,
    error,
    json_response,
)
from .batching import Batcher, BatchFailedError, BatchingConfig, OverloadedError
from .metrics import CONTENT_TYPE, ServingMetrics
from .openapi import openapi_document
from .repository import ModelNotFoundError, ModelNotReadyError, ModelRepository, VersionPolicy
from .runtime import InputError
from .tf_rest import TFRestAPI
from .transport import EdgeLimits
from .v2 import V2API

__all__ = ["DEFAULT_MAX_BODY_BYTES", "LOOPBACK_HOSTS", "ServerConfig", "create_app"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_log = logging.getLogger("jaxtx.serving.server")


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
        removal_grace_s: Seconds a model keeps serving after its files went
            missing or unreadable (see `ModelRepository`).
        batching: Dynamic batching settings.
        max_body_bytes: Largest request body accepted (after decompression).
        max_request_rows: Most rows in one request.
        keep_alive_timeout_s: An idle keep-alive connection is closed after this long.
        edge: Limits on each connection (request head size and time, body
            time, open connections); see `EdgeLimits`.
        grpc_port: Also serve the Open Inference Protocol v2 over gRPC on this
            port (0: any free port; ``None``: no gRPC), sharing the repository
            and batcher; ``app.state.grpc_port`` is the port bound.
        grpc_host: Address the gRPC port binds (loopback by default).
        allowed_hosts: ``Host`` header values answered (the port is ignored;
            ``None``: any). By default loopback names only, against DNS
            rebinding; `serve` drops the default when binding another address.
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
    removal_grace_s: float = 30.0
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_request_rows: int = 8192
    keep_alive_timeout_s: float = 5.0
    edge: EdgeLimits = field(default_factory=EdgeLimits)
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS
    grpc_port: int | None = None
    grpc_host: str = "127.0.0.1"
    freeze_gc: bool = True


def _warmup_sizes(batching: BatchingConfig) -> list[int]:
    """Batch sizes to compile before a version serves: 1, powers of two, the largest batch."""
    warm = [1]
    if batching.enabled:
        size = 2
        while size < batching.max_batch_size:
            warm.append(size)
            size *= 2
        warm.append(batching.max_batch_size)
    return warm


class _App:
    """Request handlers sharing one repository, batcher and metrics registry."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServingMetrics()
        self.repository = ModelRepository(
            config.base_dir,
            policy=config.version_policy,
            policies=config.model_policies,
            labels=config.labels,
            models=config.models,
            poll_interval_s=config.poll_interval_s,
            warmup_batch_sizes=_warmup_sizes(config.batching),
            max_batch_size=config.max_request_rows,
            metrics=self.metrics,
            removal_grace_s=config.removal_grace_s,
        )
        self.batcher = Batcher(config.batching, self.metrics)
        self._counters: dict[tuple[str, str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str, str], Any] = {}
        limits = (config.max_body_bytes, self.metrics)
        self._apis: dict[str, Callable[[Call, Ctx], Awaitable[Reply]]] = {
            "v1": TFRestAPI(self.repository, self.batcher, *limits),
            "v2": V2API(self.repository, self.batcher, *limits),
        }
        self.log_once = LogOnce(_log)
        try:
            from importlib.metadata import version

            self.version = version("jaxtx")
        except Exception:  # pragma: no cover - not installed
            self.version = "0"

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
        ctx = Ctx(api=api)
        reply = await self._answer(scope, receive, api, rest, ctx)
        self._count(ctx, reply.status, start)
        await _send_reply(send, reply)

    async def _answer(self, scope: Scope, receive: Receive, api: str, rest: str, ctx: Ctx) -> Reply:
        """Run the protocol's handler and turn every error into a reply."""
        try:
            return await self._apis[api](Call(scope, receive, rest), ctx)
        except HTTPError as exc:
            return error(exc.status, exc.message, exc.headers)
        except InputError as exc:
            return error(400, str(exc))
        except ModelNotFoundError as exc:
            return error(404, str(exc))
        except (ModelNotReadyError, OverloadedError) as exc:
            return error(503, str(exc), RETRY)
        except BatchFailedError as exc:
            return error(500, str(exc))
        except Disconnected:
            return Reply(b"", 499, None)  # nobody is left to read it
        except Exception as exc:
            self.log_once(
                f"{api}:{type(exc).__name__}",
                logging.ERROR,
                "unexpected error serving %s %s",
                scope["method"],
                scope["path"],
                exc_info=exc,
            )
            return error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _count(self, ctx: Ctx, status: int, start: float) -> None:
        """Count the request and observe its latency (label children cached)."""
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

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {
            404: f"no such endpoint: {request.url.path}; see /v1/models/<model> or /v2",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return json_response({"error": message}, exc.status_code, exc.headers)

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(self.version, self.repository.model_names()))

    async def v2_server(self, request: Request) -> Response:
        return json_response(
            {"name": "jaxtx", "version": self.version, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        ready = self.repository.ready
        return json_response({"ready": ready}, 200 if ready else 400)


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
        hosts = handlers.config.allowed_hosts
        self._hosts = None if hosts is None else _HostCheck(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._hosts is not None:
            refusal = self._hosts.refusal(scope)
            if refusal is not None:
                await _send_reply(send, refusal)
                return
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


class _HostCheck:
    """The Host allowlist (against DNS rebinding); verdicts cached by header value."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.allowed = frozenset(h.lower() for h in hosts)
        self._verdicts: dict[bytes, bool] = {}

    def refusal(self, scope: Scope) -> Reply | None:
        """A 400 reply when the Host header names a host not allowed, else None."""
        for key, value in scope["headers"]:
            if key == b"host":
                ok = self._verdicts.get(value)
                if ok is None:
                    ok = self._allowed(value)
                    if len(self._verdicts) < 256:
                        self._verdicts[value] = ok
                if ok:
                    return None
                return error(
                    400,
                    f"Host {value.decode('latin-1')[:100]!r} is not allowed; this server "
                    f"answers {sorted(self.allowed)} (set allowed_hosts to serve other names)",
                )
        return None

    def _allowed(self, value: bytes) -> bool:
        text = value.decode("latin-1").strip().lower()
        host = text[: text.find("]") + 1] if text.startswith("[") else text.partition(":")[0]
        return host in self.allowed


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [(b"content-length", str(len(reply.body)).encode())]
    if reply.content_type is not None:
        headers.append((b"content-type", reply.content_type))
    if reply.headers:
        headers.extend(
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
        )
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _start_grpc(handlers: _App, app: Starlette) -> Any:
    from .grpc_server import GRPCServer, H2Limits

    config = handlers.config
    edge = config.edge
    limits = H2Limits(
        max_header_bytes=edge.max_header_bytes,
        header_timeout_s=edge.header_timeout_s,
        body_timeout_s=edge.body_timeout_s,
        max_connections=edge.connections(),
    )
    server = GRPCServer(
        handlers.repository, handlers.batcher, handlers.metrics, handlers.version, limits
    )
    app.state.grpc_port = await server.start(config.grpc_host, config.grpc_port or 0)
    return server


async def _freeze_gc(repository: ModelRepository) -> None:
    while not repository.polled:
        await asyncio.sleep(0.05)
    gc.collect()
    gc.freeze()
    _log.debug("froze %d objects out of the garbage collector's view", gc.get_freeze_count())


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
        repeats = RepeatFilter()
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addFilter(repeats)  # a client can make it log a line per request
        handlers.repository.start()
        grpc_server = await _start_grpc(handlers, app) if config.grpc_port is not None else None
        freezer = asyncio.create_task(_freeze_gc(handlers.repository)) if config.freeze_gc else None
        try:
            yield
        finally:
            if freezer is not None:
                freezer.cancel()
            if grpc_server is not None:
                await grpc_server.stop()
            await run_in_threadpool(handlers.repository.stop)
            await handlers.batcher.close()
            uvicorn_log.removeFilter(repeats)

    routes = [
        Route("/v1/models/{rest:path}", _ModelAPI(handlers, "v1"), methods=["GET", "POST"]),
        Route("/v2", handlers.v2_server, methods=["GET"]),
        Route("/v2/health/live", handlers.v2_live, methods=["GET"]),
        Route("/v2/health/ready", handlers.v2_ready, methods=["GET"]),
        Route("/v2/models/{rest:path}", _ModelAPI(handlers, "v2"), methods=["GET", "POST"]),
        Route("/metrics", handlers.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", handlers.openapi, methods=["GET"]),
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
