"""Visible operations: lifecycle log lines from `jaxtx serve`, 503 causes, OOV counts, row limit."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig

StartServer = Callable[..., RunningServer]
CopyModel = Callable[[Path, str, int], Path]
ROW = {"x1": 1.0, "x2": 0.5, "color": "red"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(stream) -> queue.Queue[str]:  # type: ignore[no-untyped-def]
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _expect(q: queue.Queue[str], text: str, seen: list[str], timeout: float = 60.0) -> None:
    """Read log lines (bounded) until one contains ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} in:\n{''.join(seen)}") from None
        seen.append(line)
        if text in line:
            return


def test_jaxtx_serve_logs_the_lifecycle_by_default(tmp_path: Path, copy_model: CopyModel) -> None:
    copy_model(tmp_path, "logistic", 1)
    cmd = [
        sys.executable,
        "-m",
        "jaxtx.pipelines.cli",
        "serve",
        str(tmp_path),
        "--port",
        str(_free_port()),
        "--poll-interval",
        "0.1",
    ]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ.copy()
    )
    seen: list[str] = []
    try:
        q = _lines(proc.stderr)
        _expect(q, "model 'logistic' version 1 loaded", seen)
        _expect(q, "model 'logistic' version 1 is serving", seen)
        copy_model(tmp_path, "logistic", 2)
        _expect(q, "model 'logistic' version 2 is serving", seen)
        _expect(q, "model 'logistic' version 1 unloaded", seen)
        bad = tmp_path / "logistic" / ".staging"
        bad.mkdir()
        (bad / "signature.json").write_text("{}")
        (bad / "predict.jaxexport").write_bytes(b"nope")
        bad.rename(tmp_path / "logistic" / "3")
        _expect(q, "model 'logistic' version 3 failed to load and is not served:", seen)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_503_says_what_is_missing(tmp_path: Path, start_server: StartServer) -> None:
    (tmp_path / "empty" / "1").mkdir(parents=True)  # not a version: no files
    srv = start_server(ServerConfig(base_dir=tmp_path), ready=False)
    _until_polled(srv)
    r = srv.client.post("/v1/models/empty:predict", json={"instances": [ROW]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    message = r.json()["error"]
    assert str(tmp_path / "empty") in message
    assert "signature.json" in message and "predict.jaxexport" in message


def _until_polled(srv: RunningServer) -> None:
    assert srv.repository.wait_polled(30)


def test_metrics_count_out_of_vocabulary_values(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(ServerConfig(base_dir=tmp_path, batching=BatchingConfig(enabled=False)))
    rows = [dict(ROW, color=c) for c in ("red", "purple", "teal", None, "purple")]
    assert srv.client.post("/v1/models/logistic:predict", json={"instances": rows}).is_success
    v2 = {
        "inputs": [
            {"name": "x1", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "x2", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["mauve", "red"]},
        ]
    }
    assert srv.client.post("/v2/models/logistic/infer", json=v2).is_success
    oov = srv.metric("jaxtx_serving_oov_values_total", model="logistic", feature="color")
    assert oov == 5.0  # purple, teal, purple, mauve and null (its default "" is not known)


@pytest.mark.parametrize("protocol", ["v1_rows", "v1_columns", "v2"])
def test_row_limit_is_checked_before_converting(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer, protocol: str
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(ServerConfig(base_dir=tmp_path, max_request_rows=10))
    n = 11
    # Values that would fail conversion: the row limit must be what is reported.
    bad = ["not a number"] * n
    if protocol == "v1_rows":
        url, body = "/v1/models/logistic:predict", {"instances": [dict(ROW, x1="x")] * n}
    elif protocol == "v1_columns":
        url, body = "/v1/models/logistic:predict", {"inputs": {"x1": bad, "x2": bad, "color": bad}}
    else:
        url = "/v2/models/logistic/infer"
        body = {"inputs": [{"name": "x1", "shape": [n], "datatype": "FP32", "data": [0.5] * n}]}
    r = srv.client.post(url, json=body)
    assert r.status_code == 400
    assert "at most 10 rows" in r.json()["error"] and "11 rows" in r.json()["error"]
