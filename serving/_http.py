"""HTTP building blocks shared by the protocol modules: errors, replies, JSON, request bodies.

Private to `jaxtx.serving`: `tf_rest`, `v2` and `app` import from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope

from .batching import Batcher
from .metrics import ServingMetrics
from .repository import ModelRepository
from .runtime import InputError, LoadedModel

__all__ = [
    "JSON_TYPE",
    "RETRY",
    "THREAD_PARSE_BYTES",
    "Call",
    "Ctx",
    "Disconnected",
    "HTTPError",
    "LogOnce",
    "RepeatFilter",
    "Reply",
    "check_json_type",
    "check_prepared",
    "check_rows",
    "decode_json",
    "encode",
    "error",
    "json_reply",
    "json_response",
    "parse_version",
    "read_body",
]

THREAD_PARSE_BYTES = 64 * 1024
JSON_TYPE = b"application/json"
RETRY = {"Retry-After": "1"}
# A run of 19 digits (past what orjson reads exactly) shows as 19 zeros once every
# digit is mapped to "0" and everything else to " ": a C-speed scan, unlike a regex.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_INF = math.inf


class ProtocolAPI:
    """What a protocol handler (TF REST, Open Inference v2) answers requests with.

    Args:
        repository: The models served.
        batcher: Runs model calls.
        max_body_bytes: Largest request body accepted.
        metrics: Where to count out-of-vocabulary values.
    """

    def __init__(
        self,
        repository: ModelRepository,
        batcher: Batcher,
        max_body_bytes: int,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.batcher = batcher
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics


class HTTPError(Exception):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Disconnected(Exception):
    """The client went away before its request body arrived."""


@dataclass
class Ctx:
    """What a request resolved to, for metrics."""

    api: str
    model: str = ""
    version: str = ""

    def known(self, repository: ModelRepository, model: str) -> None:
        """Label metrics with the model name, once it is known to exist."""
        if repository.has_model(model):
            self.model = model

    def bind(self, model: LoadedModel) -> LoadedModel:
        """Label metrics with the model and version that answer; return ``model``."""
        self.model, self.version = model.name, str(model.version)
        return model


class Reply:
    """A response of the model endpoints: status, body, content type, other headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: bytes | None = JSON_TYPE,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers


class Call:
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


def encode(payload: Any) -> bytes:
    """Serialize as compact, strictly valid JSON: non-finite floats become null.

    Args:
        payload: JSON-compatible data.

    Returns:
        UTF-8 JSON text.
    """
    try:
        return orjson.dumps(payload)  # writes NaN and infinities as null
    except TypeError:  # an integer past 64 bits or a lone surrogate: the slow path copes
        return json.dumps(_strict(payload), separators=(",", ":"), allow_nan=False).encode()


def _strict(value: Any) -> Any:
    """``value`` with non-finite floats as None and lone surrogates replaced."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_strict(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def json_reply(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON `Reply`."""
    return Reply(encode(payload), status, JSON_TYPE, headers)


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON Starlette response (for the routes behind the router)."""
    return Response(
        encode(payload), status_code=status, media_type="application/json", headers=headers
    )


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """``{"error": message}`` with ``status``."""
    return json_reply({"error": message}, status, headers)


def _too_big(limit: int) -> HTTPError:
    return HTTPError(
        413,
        f"request body is larger than {limit} bytes; send fewer rows per request",
        {"Connection": "close"},
    )


def parse_version(text: str) -> int:
    """A version number from a path segment; 400 unless a positive integer."""
    if not text.isdigit() or text.startswith("0") or len(text) > 18:
        raise HTTPError(400, f"version '{text}' is not a positive integer; use e.g. /versions/3")
    return int(text)


class _NonFinite:
    """Stands for NaN, Infinity or a number out of range while a document is checked."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _first_invalid(doc: Any) -> tuple[str, str] | None:
    """Where ``doc`` holds a non-finite number or a lone surrogate, and which."""
    stack: list[tuple[Any, str, str]] = [(doc, "", "")]
    while stack:
        value, path, tensor = stack.pop()
        if isinstance(value, _NonFinite):
            return path or "body", f"{value.text} is not a finite number" + tensor
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body", "invalid unicode (a lone UTF-16 surrogate)" + tensor
        elif isinstance(value, dict):
            name = value.get("name")
            if isinstance(name, str) and "data" in value and not tensor:
                tensor = f" (input {name!r})"
            for key, item in reversed(list(value.items())):
                sub = f"{path}.{key}" if path else str(key)
                stack.append((item, sub, tensor))
                stack.append((key, sub, tensor))
        elif isinstance(value, list):
            stack.extend(
                (item, f"{path}[{i}]", tensor) for i, item in reversed(list(enumerate(value)))
            )
    return None


def decode_json(raw: bytes, what: str = "request body") -> Any:
    """Parse JSON text; 400 naming ``what`` when it is not valid JSON.

    Strict: NaN, Infinity, numbers beyond the float range and lone
    surrogates are rejected with 400 naming where they are.

    Args:
        raw: The JSON text.
        what: What the text is, for messages.

    Returns:
        The document.
    """
    # orjson reads integers past 64 bits as floats: leave long digit runs to the json module.
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_ONLY):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(raw)  # strict already: no NaN, no infinities, no surrogates
    doc = _slow_decode(raw, what)
    found = _first_invalid(doc)
    if found is not None:
        where, problem = found
        raise InputError(
            where,
            "finite numbers and valid UTF-8 text",
            problem,
            "JSON has no NaN or Infinity: send null for a missing value",
        )
    return doc


def _slow_decode(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_NonFinite, parse_float=_parse_float)
    except UnicodeDecodeError as exc:
        raise HTTPError(400, f"{what} is not UTF-8 text: {exc}") from exc
    except ValueError as exc:
        raise HTTPError(400, f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPError(400, f"{what} is nested too deeply") from exc


def check_json_type(call: Call, binary: bool = False) -> None:
    """415 unless the body is declared JSON (or sent without a Content-Type).

    A JSON content type makes browsers ask before sending a cross-origin
    request (a preflight this server never approves), so a page cannot
    post to it. Clients that send no Content-Type (Triton's) are accepted.

    Args:
        call: The request.
        binary: The v2 binary tensor extension is in use, which also
            accepts ``application/octet-stream``.
    """
    raw = call.header(b"content-type")
    if raw is None:
        return
    media = raw.partition(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return
    if binary and media == "application/octet-stream":
        return
    also = " (or application/octet-stream with Inference-Header-Content-Length)" if binary else ""
    raise HTTPError(415, f"Content-Type {raw[:60]!r} is not accepted: send application/json{also}")


def check_rows(rows: int, model: LoadedModel) -> None:
    """400 when a request holds more rows than the model takes (checked before converting).

    Args:
        rows: Rows in the request.
        model: The model that answers.
    """
    if rows > model.max_batch_size:
        raise InputError(
            "batch",
            f"at most {model.max_batch_size} rows",
            f"{rows} rows",
            "split the request into smaller ones",
        )


def check_prepared(
    model: LoadedModel, arrays: Mapping[str, np.ndarray], metrics: ServingMetrics | None
) -> None:
    """Reject infinities in the prepared inputs; count out-of-vocabulary strings.

    Args:
        model: The model the arrays are for.
        arrays: What `LoadedModel.prepare` returned.
        metrics: Where to count out-of-vocabulary values (per feature).
    """
    cached = _PLANS.get(id(model))
    if cached is not None and cached[0]() is model:
        plan = cached[1]
    else:
        if len(_PLANS) > 256:
            _PLANS.clear()
        plan = _check_plan(model, arrays)
        _PLANS[id(model)] = (weakref.ref(model), plan)  # does not keep unloaded models alive
    for name, known, oov_counter in plan:
        arr = arrays[name]
        small = arr.size <= 64  # below this, Python on a list beats numpy's call overhead
        values = arr.ravel().tolist() if small else None
        if known < 0:
            if (_INF in values or -_INF in values) if values is not None else np.isinf(arr).any():
                row = int(np.argwhere(np.isinf(arr))[0][0])
                raise InputError(
                    name,
                    f"finite numbers within the range of {arr.dtype}",
                    f"a value out of range (infinite as {arr.dtype}) at row {row}",
                    "send smaller numbers",
                )
        elif metrics is not None:
            if values is not None:
                oov = sum(1 for i in values if i >= known)
            else:
                oov = int(np.count_nonzero(arr >= known))
            if oov:
                oov_counter(metrics).inc(oov)


_PLANS: dict[int, tuple[weakref.ref[LoadedModel], list[tuple[str, int, Any]]]] = {}


def _check_plan(model: LoadedModel, arrays: Mapping[str, np.ndarray]) -> list[tuple[str, int, Any]]:
    """What `check_prepared` looks at: float inputs (known -1), vocabulary ids (vocab size)."""
    plan: list[tuple[str, int, Any]] = []
    for name, arr in arrays.items():
        lookup = model.lookups.get(name)
        if arr.dtype.kind == "f":
            plan.append((name, -1, None))
        elif lookup is not None and lookup.kind == "vocabulary" and lookup.num_oov_buckets:
            labels = (model.name, str(model.version), name)
            plan.append((name, len(lookup.vocabulary), lambda m, k=labels: m.oov_values.labels(*k)))
    return plan


class RepeatFilter(logging.Filter):
    """A logging filter that passes each message template once per interval.

    Attach it to a logger whose messages a client can cause (uvicorn's
    "Invalid HTTP request received."), so that a flood of bad requests
    does not become a flood of log lines.

    Args:
        interval_s: Seconds between two records of one template.
    """

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to pass the record.

        Args:
            record: The record.
        """
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.interval_s:
            return False
        self._last[key] = now
        return True


class LogOnce:
    """Logs each kind of message at most once per interval, with a count of the rest.

    Args:
        logger: Where to log.
        interval_s: Seconds between two records of one kind.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, level: int, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log unless ``kind`` was logged less than an interval ago; say whether it logged.

        Args:
            kind: What makes two messages the same kind.
            level: Logging level.
            msg: Message format string.
            *args: Its arguments.
            exc_info: Traceback to attach (only to the logged record).
        """
        now = time.monotonic()
        with self._lock:
            last, skipped = self._seen.get(kind, (-math.inf, 0))
            if now - last < self.interval_s:
                self._seen[kind] = (last, skipped + 1)
                return False
            self._seen[kind] = (now, 0)
        if skipped:
            msg += f" ({skipped} more like it in the last {self.interval_s:.0f} s not logged)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True


async def _receive_all(call: Call, limit: int) -> bytes:
    declared = call.header(b"content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPError(400, f"invalid Content-Length header {declared[:40]!r}")
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
            raise Disconnected
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        data = inflater.decompress(body, limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise _too_big(limit)
        data += inflater.flush()
    except zlib.error as exc:
        raise HTTPError(400, f"request body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit:
        raise _too_big(limit)
    return data


async def read_body(call: Call, limit: int) -> bytes:
    """The request body, decompressed, at most ``limit`` bytes (413 beyond).

    How long the body may take is the transport's limit (`EdgeLimits.body_timeout_s`).

    Args:
        call: The request.
        limit: Most bytes accepted, before and after decompression.

    Returns:
        The body.
    """
    body = await _receive_all(call, limit)
    encoding = call.header(b"content-encoding")
    if encoding is None:
        return body
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise HTTPError(
            415, f"Content-Encoding {encoding[:40]!r} is not supported; use gzip or deflate"
        )
    return _inflate(body, encoding, limit)
