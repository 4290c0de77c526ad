"""The hardened edge, over raw sockets and real clients: limits, timeouts, types, hosts."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving_server import RunningServer

from jaxtx.serving._http import LogOnce
from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig
from jaxtx.serving.transport import EdgeLimits, http_protocol

ROW = {"x1": 1.0, "x2": 0.5, "color": "red"}
PREDICT = "/v1/models/logistic:predict"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    base = tmp_path_factory.mktemp("edge-models")
    shutil.copytree(model_cache / "logistic" / "1", base / "logistic" / "1")
    return base


def _config(base: Path, **kw: object) -> ServerConfig:
    return ServerConfig(
        base_dir=base,
        batching=BatchingConfig(max_batch_size=8),
        keep_alive_timeout_s=0.5,
        edge=EdgeLimits(
            max_header_bytes=4096, max_headers=20, header_timeout_s=0.5, body_timeout_s=0.5
        ),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module", params=["httptools", "h11"])
def served(request: pytest.FixtureRequest, base: Path) -> Iterator[RunningServer]:
    if request.param == "httptools":
        pytest.importorskip("httptools")
    config = _config(base)
    srv = RunningServer(config, http=http_protocol(request.param, config.edge))
    srv.wait_ready()
    yield srv
    srv.stop()


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; read until the server closes it (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def _split(response: bytes) -> tuple[int, bytes, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.lower(), json.loads(body)


def _post(body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


def test_oversized_and_too_many_headers_are_431(served: RunningServer) -> None:
    body = json.dumps({"instances": [ROW]}).encode()
    for request in (
        _post(body, "X-Big: " + "a" * 100_000),
        _post(body, *(f"X-H{i}: {i}" for i in range(50))),
    ):
        status, head, doc = _split(_exchange(served.port, request))
        assert status == 431 and b"connection: close" in head
        assert "request head" in doc["error"]
    assert _split(_exchange(served.port, _post(body)))[0] == 200


def test_slow_head_and_slow_body_time_out(served: RunningServer) -> None:
    start = time.monotonic()
    status, _, doc = _split(
        _exchange(served.port, b"POST /v1/models/logistic:predict HTTP/1.1\r\n")
    )
    assert status == 408 and "request head" in doc["error"]
    head_only = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    status, _, doc = _split(_exchange(served.port, head_only))
    assert status == 408 and "request body" in doc["error"]
    # A connection that sends nothing at all is closed too.
    assert _split(_exchange(served.port, b""))[0] == 408
    assert time.monotonic() - start < 8


def test_idle_keep_alive_connection_is_closed(served: RunningServer) -> None:
    body = json.dumps({"instances": [ROW]}).encode()
    request = _post(body).replace(b"Connection: close\r\n", b"")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while not data.endswith(b"}"):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert sock.recv(65536) == b""  # the server closes the idle connection
        assert time.monotonic() - start < 5


def test_connection_bound_answers_503_fast(base: Path) -> None:
    config = ServerConfig(base_dir=base, edge=EdgeLimits(max_connections=4, header_timeout_s=30.0))
    srv = RunningServer(config)
    try:
        srv.wait_ready()
        srv.client.close()
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(4)]
        try:
            start = time.monotonic()
            status, head, doc = _split(
                _exchange(srv.port, _post(json.dumps({"instances": [ROW]}).encode()))
            )
            assert status == 503 and b"retry-after: 1" in head and "connections" in doc["error"]
            assert time.monotonic() - start < 1.0
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # bounded wait for the server to see the closes
            if (
                _split(_exchange(srv.port, _post(json.dumps({"instances": [ROW]}).encode())))[0]
                == 200
            ):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not take connections again")
        import httpx

        metrics = httpx.get(f"{srv.url}/metrics").text
        assert "jaxtx_serving_rejected_connections_total 1.0" in metrics
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_non_json_content_type_is_415(served: RunningServer, ctype: str) -> None:
    c = served.client
    body = json.dumps({"instances": [ROW]})
    r = c.post(PREDICT, content=body, headers={"Content-Type": ctype})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    v2 = {"inputs": [{"name": "x1", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    r = c.post("/v2/models/logistic/infer", content=json.dumps(v2), headers={"Content-Type": ctype})
    assert r.status_code == 415
    ok = c.post(PREDICT, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_host_allowlist_on_loopback(served: RunningServer) -> None:
    c = served.client
    for host in ("evil.example", "evil.example:8501", "127.0.0.1.nip.io"):
        r = c.get("/v2/health/live", headers={"Host": host})
        assert r.status_code == 400 and "not allowed" in r.json()["error"]
        r = c.post(PREDICT, json={"instances": [ROW]}, headers={"Host": host})
        assert r.status_code == 400
    for host in ("localhost", f"localhost:{served.port}", "127.0.0.1:1", "[::1]:8501", "[::1]"):
        assert c.get("/v2/health/live", headers={"Host": host}).status_code == 200


def test_open_allowlist(base: Path) -> None:
    srv = RunningServer(ServerConfig(base_dir=base, allowed_hosts=None))
    try:
        srv.wait_started()
        assert srv.client.get("/v2/health/live", headers={"Host": "any.example"}).status_code == 200
    finally:
        srv.stop()


def test_invalid_http_is_json_and_logged_once(
    served: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        for _ in range(20):
            status, _, doc = _split(_exchange(served.port, b"GARBAGE / HTTP/1.1\r\n\r\n"))
            assert status == 400 and "invalid HTTP request" in doc["error"]
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    invalid = [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
    assert len({id(r) for r in invalid}) <= 1  # the same record may reach caplog twice


def test_log_once_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.log_once")
    once = LogOnce(log, interval_s=3600)
    with caplog.at_level(logging.ERROR, logger="test.log_once"):
        results = [once("kind-a", logging.ERROR, "boom %d", i) for i in range(100)]
        once("kind-b", logging.ERROR, "other")
    assert results.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == ["boom 0", "other"]
