"""The transport shim: uvicorn's HTTP protocols writing each response with one system call."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterable
from typing import Any

__all__ = ["http_protocol", "installed"]


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


def http_protocol(name: str) -> type[asyncio.Protocol]:
    """Uvicorn's ``httptools`` or ``h11`` protocol, writing each response at once.

    Args:
        name: ``httptools`` or ``h11``.

    Returns:
        A protocol class for uvicorn's ``http`` setting.
    """
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class Protocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    Protocol.__name__ = Protocol.__qualname__ = f"Coalescing{base.__name__}"
    return Protocol


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None
