"""HTTP building blocks shared by the protocol modules: errors, replies, JSON, request bodies.

Private to `jaxtx.serving`: `tf_rest`, `v2` and `app` import from here.
"""

from __future__ import annotations

import contextlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope

from .repository import ModelRepository
from .runtime import LoadedModel

__all__ = [
    "JSON_TYPE",
    "RETRY",
    "THREAD_PARSE_BYTES",
    "Call",
    "Ctx",
    "Disconnected",
    "HTTPError",
    "Reply",
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
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


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
    """Serialize as compact JSON; non-finite floats are written NaN/Infinity as before."""
    try:
        body = orjson.dumps(payload)
    except TypeError:  # an integer past 64 bits or a lone surrogate: the slow path copes
        body = b"null"
    if b"null" in body:  # orjson writes NaN and infinities as null
        body = json.dumps(payload, separators=(",", ":"), allow_nan=True).encode("utf-8")
    return body


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


def decode_json(raw: bytes, what: str = "request body") -> Any:
    """Parse JSON text; 400 naming ``what`` when it is not valid JSON."""
    # orjson reads integers past 64 bits as floats: leave long digit runs to the json module.
    if _LONG_DIGITS.search(raw) is None:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(raw)
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise HTTPError(400, f"{what} is not UTF-8 text: {exc}") from exc
    except ValueError as exc:
        raise HTTPError(400, f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPError(400, f"{what} is nested too deeply") from exc


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
