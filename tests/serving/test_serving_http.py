"""The HTTP layer: the protocols `serve` runs, the direct model routes, JSON edge cases."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving_models import expected_outputs
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig, _http_protocol

MAX_BODY = 16 * 1024
ROW = {"x1": 1.0, "x2": 0.5, "color": "red"}


def _config(base: Path) -> ServerConfig:
    return ServerConfig(
        base_dir=base,
        batching=BatchingConfig(max_batch_size=8),
        max_body_bytes=MAX_BODY,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    base = tmp_path_factory.mktemp("http-models")
    shutil.copytree(model_cache / "logistic" / "1", base / "logistic" / "1")
    return base


@pytest.fixture(scope="module", params=["httptools", "h11"])
def served(request: pytest.FixtureRequest, base: Path) -> Iterator[RunningServer]:
    """A server on the protocol `serve` uses (``httptools`` when installed, else ``h11``)."""
    if request.param == "httptools":
        pytest.importorskip("httptools")
    srv = RunningServer(_config(base), http=_http_protocol(request.param))
    srv.wait_ready()
    yield srv
    srv.stop()


def _raw_exchange(port: int, request: bytes, responses: int = 1) -> bytes:
    """Send raw bytes on one connection and read until ``responses`` answers or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while data.count(b"HTTP/1.1 ") < responses or not _complete(data, responses):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _complete(data: bytes, responses: int) -> bool:
    """Whether ``data`` holds ``responses`` full responses framed by Content-Length."""
    pos = 0
    for _ in range(responses):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return False
        head = data[pos:end].lower()
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        pos = end + 4 + length
        if len(data) < pos:
            return False
    return True


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_protocols_answer_predict_and_keep_alive(served: RunningServer) -> None:
    body = json.dumps({"instances": [ROW]}).encode()
    # Three requests sent back to back on one connection (pipelined).
    data = _raw_exchange(served.port, _post("/v1/models/logistic:predict", body) * 3, 3)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    want = expected_outputs([1.0], [0.5], ["red"], 1)["logits"][0]
    for part in data.split(b"HTTP/1.1 ")[1:]:
        head, _, payload = part.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head.lower()
        got = json.loads(payload)["predictions"][0]["logits"]
        assert got == pytest.approx(float(want), rel=1e-5)
    c = served.client
    for _ in range(5):
        assert c.post("/v1/models/logistic:predict", json={"instances": [ROW]}).status_code == 200
    meta = c.get("/v1/models/logistic/metadata")
    assert meta.status_code == 200 and meta.json()["model_spec"]["version"] == "1"
    zipped = gzip.compress(body)
    r = c.post("/v1/models/logistic:predict", content=zipped, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200


def test_protocols_close_after_413(served: RunningServer) -> None:
    big = b'{"instances": [' + b" " * MAX_BODY + b"]}"
    data = _raw_exchange(served.port, _post("/v1/models/logistic:predict", big))
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    assert "larger than" in json.loads(payload)["error"]
    assert served.client.post("/v2/models/logistic/infer", content=big).status_code == 413
    # A fresh connection is served as usual.
    assert served.client.get("/v2/models/logistic/ready").status_code == 200


def test_other_methods_go_through_the_router(served: RunningServer) -> None:
    c = served.client
    r = c.put("/v1/models/logistic:predict", json={})
    assert r.status_code == 405
    assert "method PUT is not allowed" in r.json()["error"]
    assert c.delete("/v2/models/logistic").status_code == 405
    assert c.head("/v1/models/logistic").status_code == 405
    missing = c.get("/v3/anything")
    assert missing.status_code == 404 and "no such endpoint" in missing.json()["error"]


def test_json_the_fast_parser_does_not_read_like_the_json_module(served: RunningServer) -> None:
    c = served.client
    url = "/v1/models/logistic:predict"
    # Integers past 64 bits stay integers (and convert to the float feature).
    big = 123456789012345678901234567890
    r = c.post(url, content=b'{"instances": [{"x1": %d, "x2": 0, "color": "red"}]}' % big)
    assert r.status_code == 200, r.text
    # ... and stay integers in error messages about them.
    r = c.post(url, content=b'{"instances": [{"x1": 1, "x2": 0, "color": %d}]}' % big)
    assert r.status_code == 400 and f"integer {big}"[:30] in r.json()["error"]
    # null is a missing float; the answer is strict JSON.
    r = c.post(url, json={"instances": [{"x1": None, "x2": 1.0, "color": "red"}]})
    assert r.status_code == 200, r.text
    json.loads(r.content, parse_constant=_no_constants)


def _no_constants(text: str) -> None:
    raise AssertionError(f"{text} in a response: not valid JSON")


@pytest.mark.parametrize(
    ("body", "field", "found"),
    [
        (b'{"instances": [{"x1": NaN, "x2": 1.0, "color": "red"}]}', "instances[0].x1", "NaN"),
        (b'{"instances": [{"x1": 1, "x2": 1e400, "color": "red"}]}', "instances[0].x2", "1e400"),
        (b'{"inputs": {"x1": [Infinity], "x2": [1], "color": ["a"]}}', "inputs.x1[0]", "Infinity"),
        (b'{"inputs": {"x1": [1], "x2": [-Infinity], "color": ["a"]}}', "inputs.x2[0]", "-Inf"),
        (
            b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
            "inputs[0].data[0]",
            "input 'x1'",
        ),
    ],
)
def test_non_finite_inputs_are_400_naming_the_field(
    served: RunningServer, body: bytes, field: str, found: str
) -> None:
    url = "/v2/models/logistic/infer" if b'"name"' in body else "/v1/models/logistic:predict"
    r = served.client.post(url, content=body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert field in message and found in message and "not a finite number" in message


def test_out_of_range_and_invalid_unicode_are_400(served: RunningServer) -> None:
    c = served.client
    url = "/v1/models/logistic:predict"
    # Finite in JSON, infinite as the model's float32: rejected naming the feature.
    r = c.post(url, content=b'{"instances": [{"x1": 1e39, "x2": 0, "color": "red"}]}')
    assert r.status_code == 400 and "'x1'" in r.json()["error"], r.text
    # A lone surrogate, as a value or as a key, and bytes that are not UTF-8.
    for body in (
        b'{"instances": [{"x1": 1, "x2": 0, "color": "\\ud800"}]}',
        b'{"instances": [{"x1": 1, "x2": 0, "color": "a", "\\ud800": 1}]}',
        b'{"instances": [{"x1": 1, "x2": 0, "color": "\xed\xa0\x80"}]}',
    ):
        r = c.post(url, content=body)
        assert r.status_code == 400, (body, r.text)
        assert "unicode" in r.json()["error"].lower() or "UTF-8" in r.json()["error"]
        json.loads(r.content)
