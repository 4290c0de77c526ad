"""The transport shim: uvicorn's HTTP protocols, hardened, writing each response at once.

`http_protocol` subclasses uvicorn's ``httptools`` or ``h11`` protocol:

* writes of one event loop iteration go out as one (`_CoalescingTransport`);
* a request head (request line and headers) over `EdgeLimits.max_header_bytes`
  or with more than `EdgeLimits.max_headers` headers is answered 431;
* a head not complete within `EdgeLimits.header_timeout_s` of its first byte
  (or of the connection opening), or a body not complete within
  `EdgeLimits.body_timeout_s` of its head, is answered 408 and the connection closed;
* beyond `EdgeLimits.max_connections` open connections, a new one is answered
  503 with ``Retry-After`` at once and closed.

Every answer given here is JSON ``{"error": ...}`` with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import resource
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["EdgeLimits", "http_protocol", "installed"]


def _default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft - 128))


@dataclass(frozen=True)
class EdgeLimits:
    """Limits on each connection, enforced before a request reaches the application.

    Attributes:
        max_header_bytes: Largest request head (request line and headers).
        max_headers: Most header lines in one request.
        header_timeout_s: Longest a request head may take to arrive.
        body_timeout_s: Longest a request body may take to arrive, from the
            end of its head.
        max_connections: Most connections open at once (default: 1024, or
            fewer when the file-descriptor limit is lower).
    """

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 0

    def connections(self) -> int:
        """The connection bound in force."""
        return self.max_connections or _default_max_connections()


def _canned(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


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


class _Edge:
    """Per-connection bookkeeping of the request head: bytes, lines, the pending timer."""

    __slots__ = ("bytes", "in_head", "lines", "tail", "timer")

    def __init__(self) -> None:
        self.in_head = True
        self.bytes = 0
        self.lines = 0
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None

    def restart(self) -> None:
        self.in_head, self.bytes, self.lines, self.tail = True, 0, 0, b""

    def feed_head(self, data: bytes) -> bool:
        """Count ``data`` into the head; True when it completes the head."""
        seen = self.tail + data
        end = seen.find(b"\r\n\r\n")
        head = seen if end == -1 else seen[: end + 4]
        self.bytes += len(head) - len(self.tail)
        self.lines += head.count(b"\n") - self.tail.count(b"\n")
        if end == -1:
            self.tail = seen[-3:]
            return False
        self.in_head = False
        return True


class _Hardened:
    """The edge limits, mixed in ahead of uvicorn's protocol class by `http_protocol`.

    Class attributes set there: ``_limits``, ``_max_connections``, ``_answers``
    (canned responses by kind), ``_on_reject``.
    """

    _limits: EdgeLimits
    _max_connections: int
    _answers: dict[str, bytes]
    _on_reject: Callable[[], None] | None
    _edge: _Edge | None = None
    _rejected = False
    # Provided by uvicorn's protocol:
    connections: Any
    loop: Any
    transport: Any
    cycle: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self._max_connections:
            # Answer once the request arrives (closing with it unread would reset the
            # connection and lose the answer), or after a second at the latest.
            self._rejected = True
            self.transport = transport
            if self._on_reject is not None:
                self._on_reject()
            self.loop.call_later(1.0, self._refuse, "busy")
            return
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[misc, arg-type]
        self._edge = _Edge()
        self._arm(self._limits.header_timeout_s, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._rejected:
            return
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self, seconds: float, what: str) -> None:
        edge = self._edge
        if edge is not None and edge.timer is None:
            edge.timer = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        edge = self._edge
        if edge is not None and edge.timer is not None:
            edge.timer.cancel()
            edge.timer = None

    def _expired(self, what: str) -> None:
        if self._edge is not None:
            self._edge.timer = None
        cycle = self.cycle
        if what == "body" and (cycle is None or not cycle.more_body or cycle.response_started):
            return  # the body arrived, or the application answered without it
        self._refuse(what)

    def _refuse(self, what: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(self._answers[what])
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_canned(400, "Bad Request", f"invalid HTTP request: {msg}"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            self._refuse("busy")
            return
        edge, lim = self._edge, self._limits
        if edge is None:
            super().data_received(data)  # type: ignore[misc]
            return
        if not edge.in_head and (self.cycle is None or self.cycle.response_complete):
            edge.restart()  # the first bytes of the next request
        if edge.in_head:
            done = edge.feed_head(data)
            if edge.bytes > lim.max_header_bytes or edge.lines > lim.max_headers + 2:
                self._refuse("big")
                return
            if not done:
                self._arm(lim.header_timeout_s, "head")
                super().data_received(data)  # type: ignore[misc]
                return
            self._disarm()
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            self._arm(lim.body_timeout_s, "body")
        elif edge.timer is not None:
            self._disarm()


def http_protocol(
    name: str,
    limits: EdgeLimits | None = None,
    on_reject: Callable[[], None] | None = None,
) -> type[asyncio.Protocol]:
    """Uvicorn's ``httptools`` or ``h11`` protocol, hardened, writing each response at once.

    No timer runs for a request that arrives in one read (the usual case):
    the head and body timers are armed only when a read leaves them incomplete.

    Args:
        name: ``httptools`` or ``h11``.
        limits: Connection limits (default: `EdgeLimits()`).
        on_reject: Called for each connection turned away by the connection bound.

    Returns:
        A protocol class for uvicorn's ``http`` setting.
    """
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    lim = limits or EdgeLimits()
    max_connections = lim.connections()
    attrs = {
        "_limits": lim,
        "_max_connections": max_connections,
        "_answers": _answers(lim, max_connections),
        "_on_reject": staticmethod(on_reject) if on_reject is not None else None,
    }
    return type(f"Hardened{base.__name__}", (_Hardened, base), attrs)


def _answers(lim: EdgeLimits, max_connections: int) -> dict[str, bytes]:
    return {
        "busy": _canned(
            503,
            "Service Unavailable",
            f"the server has {max_connections} connections open; retry shortly",
            "retry-after: 1\r\n",
        ),
        "big": _canned(
            431,
            "Request Header Fields Too Large",
            f"the request head is over {lim.max_header_bytes} bytes or "
            f"{lim.max_headers} header lines",
        ),
        "head": _canned(
            408,
            "Request Timeout",
            f"the request head did not arrive within {lim.header_timeout_s} s",
        ),
        "body": _canned(
            408,
            "Request Timeout",
            f"the request body did not arrive within {lim.body_timeout_s} s",
        ),
    }


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None
