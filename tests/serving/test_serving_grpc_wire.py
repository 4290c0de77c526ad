"""gRPC's HTTP/2 transport (`jaxtx.serving._h2`) on its own, with real clients.

grpcio's channels check what a gRPC client sees (status codes, compression,
many calls multiplexed on one connection); the ``h2`` package's client
checks the HTTP/2 side frame by frame (flow control, PING, limits, GOAWAY).
The server runs in its own event loop thread on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from jaxtx.serving._h2 import GRPCError, H2Limits, H2Server, Pending, Status

grpc = pytest.importorskip("grpc")
h2_connection = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402


class ServerThread:
    """An `H2Server` in an event loop of its own thread."""

    def __init__(self, methods: dict[str, Any], limits: H2Limits) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = H2Server(methods, limits)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self.call(self.server.start("127.0.0.1", 0))

    def call(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.call(self.server.stop(1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Methods:
    """Test methods; ``gate`` holds the Slow calls until set."""

    loop: asyncio.AbstractEventLoop | None = None
    gate: asyncio.Event | None = None
    pending: list[asyncio.Future[bytes]] = field(default_factory=list)

    def table(self) -> dict[str, Callable[[bytes], Any]]:
        async def echo(data: bytes) -> bytes:
            return data

        def upper(data: bytes) -> bytes:
            return data.upper()

        async def fail(data: bytes) -> bytes:
            raise GRPCError(Status.INVALID_ARGUMENT, "bad 'x': expected ✓, got %")

        async def slow(data: bytes) -> bytes:
            assert self.gate is not None
            await self.gate.wait()
            return b"late"

        def later(data: bytes) -> Pending:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.pending.append(future)
            return Pending(future, lambda f: f.result() + data)

        def big(data: bytes) -> bytes:
            return bytes(range(256)) * (int(data) // 256)

        async def crash(data: bytes) -> bytes:
            raise RuntimeError("a bug")

        return {
            "/t.S/Echo": echo,
            "/t.S/Upper": upper,
            "/t.S/Fail": fail,
            "/t.S/Slow": slow,
            "/t.S/Later": later,
            "/t.S/Big": big,
            "/t.S/Crash": crash,
        }


def _start(limits: H2Limits | None = None) -> tuple[ServerThread, Methods]:
    methods = Methods()
    srv = ServerThread(methods.table(), limits or H2Limits())
    methods.loop = srv.loop

    async def make_gate() -> asyncio.Event:
        return asyncio.Event()

    methods.gate = srv.call(make_gate())
    return srv, methods


@pytest.fixture
def server() -> Iterator[tuple[ServerThread, Methods]]:
    srv, methods = _start()
    yield srv, methods
    srv.call(_release(methods))
    srv.close()


async def _release(methods: Methods) -> None:
    assert methods.gate is not None
    methods.gate.set()


def _identity(b: bytes) -> bytes:
    return b


def _unary(channel: Any, method: str) -> Any:
    return channel.unary_unary(
        method, request_serializer=_identity, response_deserializer=_identity
    )


# -- grpcio: what a gRPC client sees ------------------------------------------------


def test_calls_multiplexed_on_one_connection_get_their_own_answers(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        echo, upper = _unary(channel, "/t.S/Echo"), _unary(channel, "/t.S/Upper")
        futures = []
        for i in range(300):  # metadata varies: HPACK's dynamic table keeps changing
            stub = echo if i % 2 else upper
            futures.append((i, stub.future(f"call-{i}".encode(), metadata=[("x-n", str(i))])))
        for i, f in futures:
            expected = f"call-{i}".encode()
            assert f.result(timeout=30) == (expected if i % 2 else expected.upper())


def test_status_codes_and_messages_reach_the_client(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        with pytest.raises(grpc.RpcError) as bad:
            _unary(channel, "/t.S/Fail")(b"", timeout=10)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad.value.details() == "bad 'x': expected ✓, got %"  # percent-encoded on the wire
        with pytest.raises(grpc.RpcError) as unknown:
            _unary(channel, "/t.S/Nope")(b"", timeout=10)
        assert unknown.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "/t.S/Nope" in unknown.value.details()
        with pytest.raises(grpc.RpcError) as bug:
            _unary(channel, "/t.S/Crash")(b"", timeout=10)
        assert bug.value.code() is grpc.StatusCode.INTERNAL
        assert bug.value.details() == "internal error: RuntimeError"
        # the connection still serves after every failure
        assert _unary(channel, "/t.S/Echo")(b"ok", timeout=10) == b"ok"


@pytest.mark.parametrize("compression", ["Gzip", "Deflate"])
def test_compressed_requests_are_read(server, compression: str) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    algorithm = getattr(grpc.Compression, compression)
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}", compression=algorithm) as channel:
        payload = b"abc" * 50_000
        assert _unary(channel, "/t.S/Echo")(payload, timeout=10) == payload


def test_large_messages_cross_the_flow_control_windows(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=options) as channel:
        payload = bytes(range(256)) * (12 << 12)  # 12 MiB in: past the 1 MiB stream window
        assert _unary(channel, "/t.S/Echo")(payload, timeout=60) == payload
        reply = _unary(channel, "/t.S/Big")(b"%d" % (3 << 20), timeout=60)  # 3 MiB out
        assert reply == bytes(range(256)) * (3 << 12)


def test_a_message_over_the_limit_is_resource_exhausted() -> None:
    srv, methods = _start(H2Limits(max_message_bytes=1000))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            with pytest.raises(grpc.RpcError) as over:
                _unary(channel, "/t.S/Echo")(b"x" * 200_000, timeout=10)
            assert over.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "1000 bytes" in over.value.details()
            assert _unary(channel, "/t.S/Echo")(b"x" * 1000, timeout=10) == b"x" * 1000
    finally:
        srv.close()


def test_pending_calls_are_answered_when_their_future_is_done(server) -> None:  # type: ignore[no-untyped-def]
    srv, methods = server
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        later = _unary(channel, "/t.S/Later")
        calls = [later.future(b"-%d" % i) for i in range(3)]

        async def resolve() -> int:
            while len(methods.pending) < 3:
                await asyncio.sleep(0.01)
            for f in methods.pending:
                f.set_result(b"done")
            return len(methods.pending)

        assert srv.call(resolve()) == 3
        assert [c.result(timeout=10) for c in calls] == [b"done-0", b"done-1", b"done-2"]


def test_shutdown_lets_open_calls_finish_and_refuses_new_ones() -> None:
    srv, methods = _start()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        slow = _unary(channel, "/t.S/Slow").future(b"")
        assert _unary(channel, "/t.S/Echo")(b"up", timeout=10) == b"up"

        async def stop_after_release() -> None:
            stopping = asyncio.ensure_future(srv.server.stop(10.0))
            await asyncio.sleep(0)  # GOAWAY is out before the call can finish
            await _release(methods)
            await stopping

        srv.call(stop_after_release())
        assert slow.result(timeout=10) == b"late"
        with pytest.raises(grpc.RpcError) as refused:
            _unary(channel, "/t.S/Echo")(b"", timeout=5, wait_for_ready=False)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        srv.loop.call_soon_threadsafe(srv.loop.stop)


# -- the HTTP/2 side, frame by frame ----------------------------------------------


class H2Client:
    """A blocking HTTP/2 client on the ``h2`` package (h2c, prior knowledge)."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2_connection.H2Connection(config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.auto_ack = True

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        message: bytes | None,
        content_type: str = "application/grpc",
        end: bool = True,
        extra: list[tuple[str, str]] | None = None,
        compressed: bool = False,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [*self.headers(path, content_type), *(extra or [])]
        self.conn.send_headers(sid, headers, end_stream=message is None and end)
        if message is not None:
            flag = b"\1" if compressed else b"\0"
            body = flag + len(message).to_bytes(4, "big") + message
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    @staticmethod
    def headers(path: str, content_type: str = "application/grpc") -> list[tuple[str, str]]:
        """The request headers of a gRPC call to ``path``."""
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", content_type),
            ("te", "trailers"),
        ]

    def events(self) -> list[Any]:
        """The events of the next read (an empty list: the server closed the connection)."""
        data = self.sock.recv(1 << 20)
        if not data:
            return []
        events = self.conn.receive_data(data)
        for ev in events:
            if isinstance(ev, h2.events.DataReceived) and self.auto_ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        try:
            self.flush()  # acknowledgements: the server may have closed after what was read
        except (BrokenPipeError, ConnectionResetError):
            if not any(isinstance(ev, h2.events.ConnectionTerminated) for ev in events):
                raise
        return events

    def answer(self, sid: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """Headers, body and trailers of stream ``sid``."""
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        body = bytearray()
        while True:
            events = self.events()
            assert events, "the server closed the connection"
            for ev in events:
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = {str(k): str(v) for k, v in ev.headers}
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = {str(k): str(v) for k, v in ev.headers}
                elif isinstance(ev, h2.events.StreamEnded):
                    return headers, bytes(body), trailers

    def until(self, kind: type) -> Any:
        """Read until an event of ``kind`` (None if the connection closes first)."""
        while True:
            events = self.events()
            if not events:
                return None
            for ev in events:
                if isinstance(ev, kind):
                    return ev

    def close(self) -> None:
        self.sock.close()


def test_answers_respect_a_small_client_window(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    client = H2Client(srv.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    try:
        size = 300_000
        sid = client.request("/t.S/Big", b"%d" % size)
        received = 0
        done = False
        while not done:
            for ev in client.events():
                if isinstance(ev, h2.events.DataReceived):
                    assert ev.flow_controlled_length <= 1000  # never past the window granted
                    received += len(ev.data)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
        assert received == 5 + (size // 256) * 256
    finally:
        client.close()


def test_ping_and_settings_are_acknowledged(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    client = H2Client(srv.port)
    try:
        client.conn.ping(b"12345678")
        client.flush()
        ack = client.until(h2.events.PingAckReceived)
        assert ack is not None and ack.ping_data == b"12345678"
        client.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 32768})
        client.flush()
        assert client.until(h2.events.SettingsAcknowledged) is not None
        sid = client.request("/t.S/Echo", b"after")
        headers, body, trailers = client.answer(sid)
        assert headers[":status"] == "200" and trailers["grpc-status"] == "0"
        assert body[5:] == b"after"
    finally:
        client.close()


def test_requests_that_are_not_grpc_calls_get_http_statuses(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    client = H2Client(srv.port)
    try:
        headers, _, _ = client.answer(client.request("/t.S/Echo", b"x", content_type="text/plain"))
        assert headers[":status"] == "415"
        no_message = client.request("/t.S/Echo", None)
        headers, _, trailers = client.answer(no_message)
        assert trailers == {} and headers["grpc-status"] == str(int(Status.INTERNAL))
        assert "no message" in headers["grpc-message"]
        brotli = client.request("/t.S/Echo", b"x", extra=[("grpc-encoding", "br")], compressed=True)
        headers, _, _ = client.answer(brotli)
        assert headers["grpc-status"] == str(int(Status.UNIMPLEMENTED))
        assert headers["grpc-accept-encoding"] == "identity,deflate,gzip"
        not_gzip = client.request(
            "/t.S/Echo", b"x", extra=[("grpc-encoding", "gzip")], compressed=True
        )
        headers, _, _ = client.answer(not_gzip)
        assert headers["grpc-status"] == str(int(Status.INTERNAL))
        assert "not valid gzip" in headers["grpc-message"]
    finally:
        client.close()


def test_a_deadline_passed_in_the_server_is_deadline_exceeded(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    client = H2Client(srv.port)
    try:
        sid = client.request("/t.S/Slow", b"", extra=[("grpc-timeout", "200m")])
        headers, _, trailers = client.answer(sid)
        status = trailers.get("grpc-status", headers.get("grpc-status"))
        assert status == str(int(Status.DEADLINE_EXCEEDED))
    finally:
        client.close()


def test_a_client_without_a_preface_is_closed() -> None:
    srv, _ = _start(H2Limits(header_timeout_s=0.2))
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n")  # half a preface, then nothing
            got = b""
            while chunk := sock.recv(1 << 16):  # SETTINGS, then GOAWAY and the end
                got += chunk
            assert b"did not arrive in time" in got  # GOAWAY's debug data
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while chunk := sock.recv(1 << 16):
                got += chunk
            assert b"not an HTTP/2 connection preface" in got
    finally:
        srv.close()


def test_idle_connections_are_sent_goaway() -> None:
    srv, _ = _start(H2Limits(idle_timeout_s=0.3))
    client = H2Client(srv.port)
    try:
        sid = client.request("/t.S/Echo", b"x")
        assert client.answer(sid)[1][5:] == b"x"
        ev = client.until(h2.events.ConnectionTerminated)
        assert ev is not None and ev.error_code == 0 and ev.additional_data == b"idle"
    finally:
        client.close()
        srv.close()


def test_connections_beyond_the_limit_are_refused_at_once() -> None:
    srv, _ = _start(H2Limits(max_connections=2))
    clients = [H2Client(srv.port) for _ in range(2)]
    try:
        for c in clients:
            c.answer(c.request("/t.S/Echo", b"x"))
        extra = H2Client(srv.port)
        ev = extra.until(h2.events.ConnectionTerminated)
        assert ev is not None and b"too many connections" in ev.additional_data
        extra.close()
        clients.pop().close()

        async def open_count() -> int:
            while len(srv.server.connections) > 1:
                await asyncio.sleep(0.01)
            return len(srv.server.connections)

        assert srv.call(open_count()) == 1
        again = H2Client(srv.port)
        assert again.answer(again.request("/t.S/Echo", b"y"))[1][5:] == b"y"
        again.close()
    finally:
        for c in clients:
            c.close()
        srv.close()


def test_a_flood_of_reset_streams_ends_the_connection(server, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="jaxtx.serving._h2")
    srv, _ = server
    client = H2Client(srv.port)
    headers = H2Client.headers("/t.S/Echo")
    try:
        for _ in range(1100):  # open a call, reset it, again and again
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, headers)
            client.conn.reset_stream(sid)
        try:
            client.flush()
            ev = client.until(h2.events.ConnectionTerminated)
        except (ConnectionResetError, BrokenPipeError):
            ev = None  # closed while frames were still coming: the kernel resets the connection
        assert ev is None or ev.error_code == 11  # ENHANCE_YOUR_CALM
        assert "closed a connection: too many streams reset" in caplog.text
    finally:
        client.close()


def test_an_unknown_streaming_method_is_answered_before_the_client_finishes(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    client = H2Client(srv.port)
    try:
        sid = client.request("/inference.GRPCInferenceService/ModelStreamInfer", b"x", end=False)
        seen: dict[type, Any] = {}
        while h2.events.StreamReset not in seen:  # the request stream is still open
            events = client.events()
            assert events, "the server closed the connection"
            seen.update((type(ev), ev) for ev in events if getattr(ev, "stream_id", 0) == sid)
        headers = {str(k): str(v) for k, v in seen[h2.events.ResponseReceived].headers}
        assert headers["grpc-status"] == str(int(Status.UNIMPLEMENTED))
        assert h2.events.StreamEnded in seen and seen[h2.events.StreamReset].error_code == 0
    finally:
        client.close()


def _random_frames(rng: Any, count: int) -> bytes:
    """Frames of every type with random flags, stream ids and payloads (some truncated)."""
    out = bytearray()
    for _ in range(count):
        ftype = rng.randrange(11)
        payload = rng.randbytes(rng.choice([0, 1, 4, 5, 6, 8, 9, 12, rng.randrange(64)]))
        if ftype == 1 and rng.random() < 0.5:  # a HEADERS frame with a plausible HPACK block
            payload = bytes([0x83, 0x86, 0x84, 0x41, 3]) + b"a.b" + rng.randbytes(rng.randrange(8))
        sid = rng.choice([0, 1, 2, 3, 5, rng.randrange(1 << 31)])
        n = len(payload)
        out += bytes([n >> 16, (n >> 8) & 0xFF, n & 0xFF, ftype, rng.randrange(256)])
        out += sid.to_bytes(4, "big") + payload
    return bytes(out)


def test_random_frames_never_break_the_server(server, caplog) -> None:  # type: ignore[no-untyped-def]
    import random

    caplog.set_level(logging.WARNING, logger="jaxtx.serving._h2")
    srv, _ = server
    rng = random.Random(20261202)
    errors: list[dict[str, Any]] = []
    srv.loop.call_soon_threadsafe(srv.loop.set_exception_handler, lambda _, ctx: errors.append(ctx))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for case in range(300):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(preface + _random_frames(rng, 1 + case % 12))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):  # the server answers and closes, or waits for more
                pass
    assert errors == []
    bugs = [r for r in caplog.records if "error reading a connection" in r.getMessage()]
    assert bugs == [], bugs[0].exc_info if bugs else None
    closed = [r.getMessage() for r in caplog.records if "closed a connection" in r.getMessage()]
    assert closed  # protocol errors were seen (and answered with GOAWAY)
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        assert _unary(channel, "/t.S/Echo")(b"still up", timeout=10) == b"still up"
