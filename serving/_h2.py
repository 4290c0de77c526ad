"""gRPC's wire: unary calls over HTTP/2 without TLS (h2c, "prior knowledge").

Private to `jaxtx.serving`: `grpc_server` registers the methods and answers
the calls; this module owns the framing. It is the part of HTTP/2 (RFC 9113)
and of gRPC over HTTP/2 that a unary call needs: frames, HPACK header blocks
(decoded with the ``hpack`` package; answers use literal fields only, so the
encoder keeps no state), flow control in both directions, SETTINGS, PING,
GOAWAY and RST_STREAM, the 5-byte gRPC message prefix with gzip/deflate
request compression, ``grpc-timeout`` deadlines, and trailers carrying
``grpc-status`` and a percent-encoded ``grpc-message``.

Why not grpcio's server: a grpcio call crosses its I/O threads, its completion
queue poller and the event loop, costing more server CPU than a whole HTTP
request even with an empty handler; here a call is parsed in the event loop
that runs the HTTP server and the batcher, in one or two wake-ups.

Limits, all enforced per connection: the preface and every request must arrive
in time (`H2Limits`), idle connections are closed, a request message is at
most `H2Limits.max_message_bytes`, at most `H2Limits.max_streams` calls run at
once, header lists are bounded, and floods of resets, pings or settings end
the connection with ENHANCE_YOUR_CALM. Beyond `H2Limits.max_connections`, a
new connection gets GOAWAY at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import hpack

__all__ = ["GRPCError", "H2Limits", "H2Server", "Method", "Pending", "Status"]

_log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11
_MAX_WINDOW = 2**31 - 1
_MAX_FRAME = 16384  # the frame size this side accepts (the protocol's default)
_STREAM_WINDOW = 1 << 20  # what each call may send before it is read
_CONN_WINDOW = 16 << 20
_HEAD = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")


class Status(enum.IntEnum):
    """gRPC status codes (the ones this server answers with)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class GRPCError(Exception):
    """A call's failure: answered with ``grpc-status`` ``code`` and ``message``."""

    def __init__(self, code: Status, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Pending:
    """A call answered once ``future`` is done: ``finish(future)`` gives the reply bytes.

    What a method returns to answer later without a task of its own (cheaper
    than a coroutine for a call that waits on one future). ``finish`` is
    called once in every case, also when the future was cancelled (by the
    client, a deadline or shutdown), and raises `GRPCError` for a failed call.
    """

    __slots__ = ("finish", "future")

    def __init__(self, future: asyncio.Future[Any], finish: Callable[[asyncio.Future[Any]], bytes]):
        self.future = future
        self.finish = finish


# A method: request message bytes in; the reply message bytes out, now or
# later (a coroutine or a `Pending`); failures raise GRPCError.
Method = Callable[[bytes], "bytes | Pending | Awaitable[bytes]"]


@dataclass(frozen=True)
class H2Limits:
    """Limits on each gRPC connection.

    Attributes:
        max_message_bytes: Largest request message (after decompression).
        max_streams: Most calls open at once on one connection
            (``SETTINGS_MAX_CONCURRENT_STREAMS``; more are refused).
        max_header_bytes: Largest request header list (HPACK-decoded size).
        header_timeout_s: Longest the connection preface, or a request's
            headers, may take to arrive.
        body_timeout_s: Longest a request message may take to arrive, from its headers.
        idle_timeout_s: A connection with no call open for this long is sent
            GOAWAY and closed (clients reconnect on their next call).
        max_connections: Most connections open at once.
    """

    max_message_bytes: int = 64 * 1024 * 1024
    max_streams: int = 1000
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 300.0
    max_connections: int = 1024


def _int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) whose first byte starts with the bits of ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes | int, value: bytes) -> bytes:
    """A header field "without indexing": the encoder's table is never used."""
    # an int is an index of the static table
    head = _int(name, 4, 0x00) if isinstance(name, int) else b"\x00" + _int(len(name), 7, 0) + name
    return head + _int(len(value), 7, 0) + value


_STATUS_200 = b"\x88"  # ":status: 200", index 8 of the static table
_CONTENT_TYPE = _literal(31, b"application/grpc")  # content-type is static index 31
_REPLY_HEAD = _STATUS_200 + _CONTENT_TYPE
_OK_TRAILERS = _literal(b"grpc-status", b"0")
_ACCEPT_ENCODING = b"identity,deflate,gzip"
_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def _grpc_message(text: str) -> bytes:
    """``grpc-message``: UTF-8, percent-encoded outside printable ASCII (and ``%``)."""
    raw = text.encode("utf-8", "replace")[:4096]
    return b"".join(bytes([b]) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


def _status_fields(code: int, message: str) -> bytes:
    fields = _literal(b"grpc-status", str(int(code)).encode())
    if message:
        fields += _literal(b"grpc-message", _grpc_message(message))
    return fields


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def _goaway(last_sid: int, code: int, debug: bytes) -> bytes:
    """A GOAWAY frame: the last stream taken, the error code, debug data for people."""
    return _frame(GOAWAY, 0, 0, _U32.pack(last_sid) + _U32.pack(code) + debug)


_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def _timeout(value: bytes) -> float | None:
    """Seconds of a ``grpc-timeout`` value (``"100m"``); ``None`` when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _result(future: asyncio.Future[bytes]) -> bytes:
    return future.result()


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Stream:
    """One call: its request as it arrives, then its answer."""

    __slots__ = (
        "sid",
        "path",
        "encoding",
        "deadline",
        "body",
        "recv_window",
        "send_window",
        "pending",
        "task",
        "opened",
        "state",
        "timer",
        "expired",
    )

    # state: 0 receiving, 1 running, 2 answered (later request data is dropped)

    def __init__(self, sid: int, send_window: int, opened: float) -> None:
        self.sid = sid
        self.path = b""
        self.encoding = b""
        self.deadline: float | None = None
        self.body = bytearray()
        self.recv_window = _STREAM_WINDOW
        self.send_window = send_window
        self.pending: bytes | None = None  # reply data waiting for flow-control credit
        self.task: asyncio.Future[Any] | None = None  # the call's task or `Pending` future
        self.opened = opened
        self.state = 0
        self.timer: asyncio.TimerHandle | None = None  # the deadline's
        self.expired = False


class _Connection(asyncio.Protocol):
    """One client connection: frames in, calls dispatched, answers framed out."""

    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.preface = False
        self.streams: dict[int, _Stream] = {}
        self.last_sid = 0
        self.decoder = hpack.Decoder(max_header_list_size=server.limits.max_header_bytes)
        self.decoder.max_allowed_table_size = 4096
        self.header_cache: dict[bytes, dict[bytes, bytes]] = {}
        self.continuation: tuple[int, int, list[bytes], int] | None = None
        self.peer_window = 65535  # the peer's initial stream window
        self.peer_frame = 16384
        self.send_window = 65535  # connection-level credit for answers
        self.recv_window = _CONN_WINDOW  # after the WINDOW_UPDATE sent with the settings
        self.recv_unacked = 0
        self.buffered = 0  # bytes of request messages held
        self.table_update = b""  # a table size update owed at the next header block
        self.going_away = False
        self.closed = False
        self.opened = self.last_active = self.loop.time()
        self.resets = 0
        self.control = 0  # pings and settings received (a flood ends the connection)
        self.control_since = self.opened

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        settings = b"".join(
            _SETTING.pack(k, v)
            for k, v in (
                (0x3, server.limits.max_streams),
                (0x4, _STREAM_WINDOW),
                (0x6, server.limits.max_header_bytes),
            )
        )
        head = _frame(SETTINGS, 0, 0, settings)
        head += _frame(WINDOW_UPDATE, 0, 0, _U32.pack(_CONN_WINDOW - 65535))
        if len(server.connections) >= server.limits.max_connections:
            debug = b"too many connections; retry later"
            transport.write(head + _goaway(0, NO_ERROR, debug))
            transport.close()
            self.closed = True
            server.log_once(
                "connections", "gRPC: refused a connection: %d open", server.limits.max_connections
            )
            return
        server.connections.add(self)
        transport.write(head)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self.server.drained()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_active = self.loop.time()
        if self.buf:
            data = self.buf + data
        pos = 0
        try:
            if not self.preface:
                if len(data) < 24:
                    if not PREFACE.startswith(data):
                        raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self.buf = data
                    return
                if data[:24] != PREFACE:
                    raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface = True
                pos = 24
            pos = self._frames(data, pos)
        except _ConnectionError as exc:
            self._fail(exc.code, str(exc))
            return
        except Exception as exc:  # a bug here must not take the server's loop down
            self.server.log_once(
                f"bug:{type(exc).__name__}", "gRPC: error reading a connection", exc_info=exc
            )
            self._fail(INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            return
        self.buf = data[pos:] if pos < len(data) else b""

    # -- frames in --------------------------------------------------------------

    def _frames(self, data: bytes, pos: int) -> int:
        n = len(data)
        unpack = _HEAD.unpack_from
        while n - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(data, pos)
            length = hi << 8 | lo
            if length > _MAX_FRAME:
                raise _ConnectionError(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            end = pos + 9 + length
            if end > n:
                break
            payload = data[pos + 9 : end]
            pos = end
            sid &= 0x7FFFFFFF
            if self.continuation is not None and ftype != CONTINUATION:
                raise _ConnectionError(PROTOCOL_ERROR, "a header block was interrupted")
            if ftype == DATA:
                self._data(sid, flags, payload)
            elif ftype == HEADERS:
                self._headers(sid, flags, payload)
            elif ftype == CONTINUATION:
                self._continuation(sid, flags, payload)
            elif ftype == WINDOW_UPDATE:
                self._window_update(sid, payload)
            elif ftype == PING:
                self._ping(sid, flags, payload)
            elif ftype == SETTINGS:
                self._settings(sid, flags, payload)
            elif ftype == RST_STREAM:
                self._rst_stream(sid, payload)
            elif ftype == GOAWAY:
                self.going_away = True
                if not self.streams:
                    self._close()
            elif ftype == PUSH_PROMISE:
                raise _ConnectionError(PROTOCOL_ERROR, "a client may not push")
            elif ftype == PRIORITY and (sid == 0 or length != 5):
                raise _ConnectionError(PROTOCOL_ERROR, "a malformed PRIORITY frame")
            # other frame types (and PRIORITY) are ignored, as the protocol asks
        return pos

    def _headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if end < start:
            raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
        block = payload[start:end]
        if flags & END_HEADERS:
            self._header_block(sid, flags, block)
        else:
            self.continuation = (sid, flags, [block], len(block))

    def _continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if self.continuation is None or self.continuation[0] != sid:
            raise _ConnectionError(PROTOCOL_ERROR, "a CONTINUATION frame out of place")
        first, first_flags, parts, size = self.continuation
        size += len(payload)
        if size > 2 * self.server.limits.max_header_bytes:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "a header block too large")
        parts.append(payload)
        if flags & END_HEADERS:
            self.continuation = None
            self._header_block(sid, first_flags, b"".join(parts))
        else:
            self.continuation = (first, first_flags, parts, size)

    def _decode(self, block: bytes) -> dict[bytes, bytes]:
        """Decode a header block; a block that changes no table state is decoded once."""
        cached = self.header_cache.get(block)
        if cached is not None:
            return cached
        table = self.decoder.header_table.dynamic_entries
        size, first = len(table), table[0] if table else None
        try:
            fields = self.decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"a header block: {exc}") from None
        headers = {bytes(k): bytes(v) for k, v in fields}
        # an insertion puts a new tuple first, an eviction alone shortens the table
        if len(table) == size and (table[0] if table else None) is first:
            if len(self.header_cache) >= 64:
                self.header_cache.clear()
            self.header_cache[block] = headers
        else:  # the table changed: blocks cached earlier may now mean something else
            self.header_cache.clear()
        return headers

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        headers = self._decode(block)  # always, to keep the HPACK table in step
        stream = self.streams.get(sid)
        if stream is not None:  # trailers of a request
            if not flags & END_STREAM:
                raise _ConnectionError(PROTOCOL_ERROR, f"a second header block on stream {sid}")
            if stream.state == 0:
                self._dispatch(stream)
            return
        if sid <= self.last_sid:  # a stream this side answered or reset early: ignored
            return
        self.last_sid = sid
        if self.going_away or len(self.streams) >= self.server.limits.max_streams:
            self._write(_frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
            return
        stream = _Stream(sid, self.peer_window, self.loop.time())
        self.streams[sid] = stream
        if headers.get(b":method") != b"POST":
            self._answer_http(stream, b"405", flags)
            return
        if not headers.get(b"content-type", b"").startswith(b"application/grpc"):
            self._answer_http(stream, b"415", flags)
            return
        stream.path = headers.get(b":path", b"")
        if stream.path not in self.server.methods:  # answered now: it may be a streaming call
            if flags & END_STREAM:
                stream.state = 1
            name = stream.path.decode("latin-1")
            self._answer_status(stream, Status.UNIMPLEMENTED, f"unknown method {name}")
            return
        stream.encoding = headers.get(b"grpc-encoding", b"identity")
        timeout = headers.get(b"grpc-timeout")
        if timeout is not None:
            seconds = _timeout(timeout)
            if seconds is not None:
                stream.deadline = stream.opened + seconds
        if flags & END_STREAM:
            self._dispatch(stream)

    def _data(self, sid: int, flags: int, payload: bytes) -> None:
        length = len(payload)
        self.recv_window -= length
        if self.recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "data beyond the connection window")
        self.recv_unacked += length
        stream = self.streams.get(sid)
        if stream is None:
            if sid == 0 or sid > self.last_sid:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self._credit()  # a stream reset or answered: its data is dropped
            return
        start, end = 0, length
        if flags & PADDED:
            if not payload or payload[0] >= length:
                raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
            start, end = 1, length - payload[0]
        stream.recv_window -= length
        if stream.recv_window < 0:
            self._reset(stream, FLOW_CONTROL_ERROR)
            self._credit()
            return
        if stream.state == 0:
            stream.body += payload[start:end] if start or end != length else payload
            self.buffered += end - start
            if len(stream.body) > self.server.limits.max_message_bytes + 5:
                limit = self.server.limits.max_message_bytes
                self._answer_status(
                    stream,
                    Status.RESOURCE_EXHAUSTED,
                    f"the request message is over {limit} bytes (the server's limit)",
                )
            elif flags & END_STREAM:
                self._dispatch(stream)
            elif stream.recv_window < _STREAM_WINDOW // 2:
                self._write(
                    _frame(WINDOW_UPDATE, 0, sid, _U32.pack(_STREAM_WINDOW - stream.recv_window))
                )
                stream.recv_window = _STREAM_WINDOW
        self._credit()

    def _credit(self) -> None:
        """Give the connection's window back once half is used, while little is held."""
        if (
            self.recv_unacked >= _CONN_WINDOW // 2
            and self.buffered < self.server.limits.max_message_bytes
            and not self.closed
        ):
            self._write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.recv_unacked)))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "a WINDOW_UPDATE frame not of 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > _MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "the connection window overflowed")
            self._flush_pending()
            return
        stream = self.streams.get(sid)
        if stream is None:
            return
        if increment == 0:
            self._reset(stream, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > _MAX_WINDOW:
            self._reset(stream, FLOW_CONTROL_ERROR)
            return
        if stream.pending is not None:
            self._send_pending(stream)

    def _ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0 or len(payload) != 8:
            raise _ConnectionError(PROTOCOL_ERROR, "a malformed PING frame")
        if not flags & ACK:
            self._control()
            self._write(_frame(PING, ACK, 0, payload))

    def _settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "a SETTINGS frame not in 6-byte entries")
        self._control()
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == 0x1:  # the peer's decoder table: ours is never used, only shrunk
                self.table_update = _int(min(value, 4096), 5, 0x20)
            elif key == 0x2 and value > 1:
                raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif key == 0x4:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == 0x5:
                if not 16384 <= value <= 16777215:
                    raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE")
                self.peer_frame = value
        self._write(_frame(SETTINGS, ACK, 0))
        self._flush_pending()

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0 or len(payload) != 4:
            raise _ConnectionError(PROTOCOL_ERROR, "a malformed RST_STREAM frame")
        if sid > self.last_sid:
            raise _ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        self.buffered -= len(stream.body)
        self.resets += 1
        if self.resets > 1000 and self.resets > self.server.completed:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "too many streams reset")
        if stream.task is not None:
            stream.state = 2
            stream.task.cancel()
        self._maybe_close()

    def _control(self) -> None:
        now = self.last_active
        if now - self.control_since > 1.0:
            self.control, self.control_since = 0, now
        self.control += 1
        if self.control > 1000:
            raise _ConnectionError(
                ENHANCE_YOUR_CALM, "more than 1000 PING/SETTINGS frames a second"
            )

    # -- calls ------------------------------------------------------------------

    def _dispatch(self, stream: _Stream) -> None:
        """The request is complete: check its message and start the method."""
        body = stream.body
        self.buffered -= len(body)
        stream.body = bytearray()
        stream.state = 1
        method = self.server.methods[stream.path]
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            what = (
                "no message" if not body else f"{len(body)} bytes, not one length-prefixed message"
            )
            self._answer_status(
                stream, Status.INTERNAL, f"a unary call needs one message; got {what}"
            )
            return
        message = bytes(body[5:])
        if body[0]:
            try:
                message = self._decompress(stream.encoding, message)
            except GRPCError as exc:
                self._answer_status(stream, exc.code, exc.message)
                return
        self._credit()
        try:
            result = method(message)
        except GRPCError as exc:
            self._answer_status(stream, exc.code, exc.message)
            return
        except Exception as exc:  # the method maps its own errors; this is a bug
            self._internal(stream, exc)
            return
        if type(result) is bytes:
            self._answer(stream, result)
            return
        if isinstance(result, Pending):
            future, finish = result.future, result.finish
        else:  # a coroutine: its task is the future
            future, finish = asyncio.ensure_future(cast(Awaitable[bytes], result)), _result
        stream.task = future
        future.add_done_callback(functools.partial(self._settle, stream, finish))
        if stream.deadline is not None:
            stream.timer = self.loop.call_at(stream.deadline, self._expire, stream)

    def _decompress(self, encoding: bytes, message: bytes) -> bytes:
        if encoding == b"gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == b"deflate":
            inflater = zlib.decompressobj()
        else:
            raise GRPCError(
                Status.UNIMPLEMENTED,
                f"message compression {encoding.decode('latin-1')!r} is not supported "
                f"(supported: {_ACCEPT_ENCODING.decode()})",
            )
        limit = self.server.limits.max_message_bytes
        try:
            out = inflater.decompress(message, limit + 1)
        except zlib.error as exc:
            raise GRPCError(
                Status.INTERNAL, f"the message is not valid {encoding.decode()}: {exc}"
            ) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"the request message is over {limit} bytes once decompressed (the server's limit)",
            )
        if not inflater.eof or inflater.unused_data:
            raise GRPCError(
                Status.INTERNAL,
                f"the message is not valid {encoding.decode()}: "
                + ("it is cut short" if not inflater.eof else "data follows its end"),
            )
        return out

    def _expire(self, stream: _Stream) -> None:
        stream.expired = True
        if stream.task is not None:
            stream.task.cancel()

    def _internal(self, stream: _Stream, exc: Exception) -> None:
        self.server.log_once(
            f"internal:{type(exc).__name__}",
            "gRPC: unexpected error in %s",
            stream.path,
            exc_info=exc,
        )
        self._answer_status(stream, Status.INTERNAL, f"internal error: {type(exc).__name__}")

    def _cancelled(self, stream: _Stream) -> None:
        if stream.state == 2 or self.closed:
            return  # reset by the client, or the connection is gone
        if stream.expired:
            self._answer_status(stream, Status.DEADLINE_EXCEEDED, "the call's deadline passed")
        else:
            self._answer_status(stream, Status.UNAVAILABLE, "the server is shutting down")

    def _settle(
        self,
        stream: _Stream,
        finish: Callable[[asyncio.Future[Any]], bytes],
        future: asyncio.Future[Any],
    ) -> None:
        """A call's future (or task) is done: answer it."""
        if stream.timer is not None:
            stream.timer.cancel()
        try:
            reply = finish(future)
        except GRPCError as exc:
            self._answer_status(stream, exc.code, exc.message)
        except asyncio.CancelledError:
            self._cancelled(stream)
        except Exception as exc:
            self._internal(stream, exc)
        else:
            self._answer(stream, reply)

    # -- frames out -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _header_frames(self, sid: int, flags: int, block: bytes) -> bytes:
        if self.table_update:
            block = self.table_update + block
            self.table_update = b""
        if len(block) <= self.peer_frame:
            return _frame(HEADERS, flags | END_HEADERS, sid, block)
        size = self.peer_frame
        chunks = [block[i : i + size] for i in range(0, len(block), size)]
        out = [_frame(HEADERS, flags, sid, chunks[0])]
        out += [_frame(CONTINUATION, 0, sid, c) for c in chunks[1:-1]]
        out.append(_frame(CONTINUATION, END_HEADERS, sid, chunks[-1]))
        return b"".join(out)

    def _answer(self, stream: _Stream, reply: bytes) -> None:
        """Headers, the reply message and ``grpc-status: 0``, as credit allows."""
        if stream.state == 2 or self.closed:
            return
        stream.state = 2
        data = b"\x00" + len(reply).to_bytes(4, "big") + reply
        head = self._header_frames(stream.sid, 0, _REPLY_HEAD)
        n = len(data)
        if n <= self.peer_frame and n <= stream.send_window and n <= self.send_window:
            stream.send_window -= n
            self.send_window -= n
            trailers = self._header_frames(stream.sid, END_STREAM, _OK_TRAILERS)
            self._write(head + _frame(DATA, 0, stream.sid, data) + trailers)
            self._finish(stream)
            return
        self._write(head)
        stream.pending = data
        self._send_pending(stream)

    def _send_pending(self, stream: _Stream) -> None:
        data = stream.pending
        assert data is not None
        out = []
        sent = 0
        while sent < len(data):
            size = min(len(data) - sent, self.peer_frame, stream.send_window, self.send_window)
            if size <= 0:
                break
            out.append(_frame(DATA, 0, stream.sid, data[sent : sent + size]))
            sent += size
            stream.send_window -= size
            self.send_window -= size
        if sent == len(data):
            stream.pending = None
            out.append(self._header_frames(stream.sid, END_STREAM, _OK_TRAILERS))
            self._write(b"".join(out))
            self._finish(stream)
        else:
            stream.pending = data[sent:]
            self._write(b"".join(out))

    def _flush_pending(self) -> None:
        for stream in [s for s in self.streams.values() if s.pending is not None]:
            if self.send_window <= 0:
                return
            self._send_pending(stream)

    def _answer_status(self, stream: _Stream, code: Status, message: str) -> None:
        """A trailers-only answer: the call failed with ``code``."""
        if stream.state == 2 or self.closed:
            return
        received = stream.state == 1
        stream.state = 2
        self.buffered -= len(stream.body)
        stream.body = bytearray()
        block = _REPLY_HEAD + _status_fields(code, message)
        if code == Status.UNIMPLEMENTED:
            block += _literal(b"grpc-accept-encoding", _ACCEPT_ENCODING)
        self._write(self._header_frames(stream.sid, END_STREAM, block))
        if not received:  # the client may still be sending: ask it to stop
            self._write(_frame(RST_STREAM, 0, stream.sid, _U32.pack(NO_ERROR)))
        self._finish(stream)

    def _answer_http(self, stream: _Stream, status: bytes, flags: int) -> None:
        """An answer that is not gRPC's (405, 415): the request was not a gRPC call."""
        stream.state = 2
        block = b"\x08" + _int(len(status), 7, 0) + status  # ":status", static index 8 as name
        self._write(self._header_frames(stream.sid, END_STREAM, block))
        if not flags & END_STREAM:
            self._write(_frame(RST_STREAM, 0, stream.sid, _U32.pack(NO_ERROR)))
        self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        self.streams.pop(stream.sid, None)
        self.last_active = self.loop.time()
        self.server.completed += 1
        self._maybe_close()

    def _reset(self, stream: _Stream, code: int) -> None:
        self._write(_frame(RST_STREAM, 0, stream.sid, _U32.pack(code)))
        self.streams.pop(stream.sid, None)
        self.buffered -= len(stream.body)
        if stream.task is not None:
            stream.state = 2
            stream.task.cancel()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.going_away and not self.streams:
            self._close()
        if not self.streams:
            self.server.drained()

    def goaway(self, code: int = NO_ERROR, debug: bytes = b"") -> None:
        """Tell the client no new call will be taken; close once the open ones end."""
        if self.closed:
            return
        self.going_away = True
        self._write(_goaway(self.last_sid, code, debug))
        if not self.streams:
            self._close()

    def _fail(self, code: int, message: str) -> None:
        self.server.log_once(f"conn:{code}", "gRPC: closed a connection: %s", message)
        self._write(_goaway(self.last_sid, code, message.encode()[:256]))
        self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def sweep(self, now: float) -> None:
        """Enforce the time limits (called about once a second)."""
        limits = self.server.limits
        if not self.preface or self.continuation is not None:
            since = self.opened if not self.preface else self.last_active
            if now - since > limits.header_timeout_s:
                self._fail(PROTOCOL_ERROR, "the request headers did not arrive in time")
            return
        if not self.streams:
            if now - self.last_active > limits.idle_timeout_s:
                self.goaway(NO_ERROR, b"idle")
            return
        for stream in list(self.streams.values()):
            if stream.state == 0 and now - stream.opened > limits.body_timeout_s:
                self._answer_status(
                    stream, Status.DEADLINE_EXCEEDED, "the request message did not arrive in time"
                )


class H2Server:
    """A listening gRPC endpoint: HTTP/2 connections whose calls go to ``methods``.

    Args:
        methods: Method by path (``"/package.Service/Method"``).
        limits: Limits on each connection.
    """

    def __init__(self, methods: Mapping[str, Method], limits: H2Limits | None = None) -> None:
        self.methods = {k.encode(): v for k, v in methods.items()}
        self.limits = limits or H2Limits()
        self.connections: set[_Connection] = set()
        self.completed = 0  # calls answered (a flood of resets is judged against them)
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None
        self._logged: dict[str, float] = {}

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); return the port bound."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        return int(self._server.sockets[0].getsockname()[1])

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            connection.sweep(now)
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def log_once(self, kind: str, message: str, *args: Any, exc_info: Any = None) -> None:
        """Log a warning of one kind at most once a minute."""
        now = time.monotonic()
        if now - self._logged.get(kind, -1e9) >= 60.0:
            self._logged[kind] = now
            _log.warning(message, *args, exc_info=exc_info)

    def drained(self) -> None:
        if self._drained is not None and not any(c.streams for c in self.connections):
            self._drained.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening; let calls in progress finish for up to ``grace_s`` seconds."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._drained = asyncio.Event()
        for connection in list(self.connections):
            connection.goaway(NO_ERROR, b"the server is shutting down")
        self.drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace_s)
        for connection in list(self.connections):
            connection.connection_lost(None)
            if connection.transport is not None:
                connection.transport.abort()
        self.connections.clear()
        await self._server.wait_closed()
        self._server = None
