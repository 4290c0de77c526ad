"""Live behaviour over HTTP: hot swap under load, dynamic batching, a stock v2 client."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from _serving_models import expected_outputs
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig

StartServer = Callable[..., RunningServer]
CopyModel = Callable[[Path, str, int], Path]


def _infer_body(i: int) -> dict:
    return {
        "inputs": [
            {"name": "x1", "shape": [1], "datatype": "FP32", "data": [float(i % 7)]},
            {"name": "x2", "shape": [1], "datatype": "FP32", "data": [0.5]},
            {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["blue"]},
        ],
        "outputs": [{"name": "logits"}],
    }


def test_hot_swap_under_load(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(
        ServerConfig(
            base_dir=tmp_path,
            poll_interval_s=0.05,
            batching=BatchingConfig(max_batch_size=8, max_wait_ms=1.0),
        )
    )
    failures: list[str] = []
    seen: Counter[str] = Counter()
    seen_after_swap: Counter[str] = Counter()
    swapped = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.post("/v2/models/logistic/infer", json=_infer_body(i))
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    with lock:
                        failures.append(f"{r.status_code} {r.text}")
                    continue
                body = r.json()
                version = body["model_version"]
                want = expected_outputs([float(i % 7)], [0.5], ["blue"], int(version))["logits"]
                if not np.allclose(body["outputs"][0]["data"], want, rtol=1e-5):
                    with lock:
                        failures.append(f"version {version} answered {body}")
                with lock:
                    seen[version] += 1
                    if swapped.is_set():
                        seen_after_swap[version] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while seen["1"] < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        copy_model(tmp_path, "logistic", 2)
        while srv.repository.serving_versions("logistic") != [2] and time.monotonic() < deadline:
            time.sleep(0.01)
        swapped.set()
        while seen_after_swap["2"] < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert seen["1"] >= 20
    assert seen_after_swap["2"] >= 40
    # Once the swap is published, no request is answered by the old version.
    assert seen_after_swap["1"] <= 4  # at most the requests in flight at the swap
    status = srv.client.get("/v1/models/logistic").json()["model_version_status"]
    assert {s["version"]: s["state"] for s in status} == {"2": "AVAILABLE", "1": "END"}


def _concurrent_requests(srv: RunningServer, n: int) -> list[dict]:
    barrier = threading.Barrier(n)
    results: list[dict] = [{} for _ in range(n)]

    def one(i: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            barrier.wait()
            row = {"x1": float(i), "x2": -0.5 * i, "color": ["red", "zz", "green"][i % 3]}
            r = c.post("/v1/models/logistic:predict", json={"instances": [row]})
            results[i] = {"status": r.status_code, "row": row, "body": r.json()}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("enabled", [True, False])
def test_http_batching_coalesces_and_matches(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer, enabled: bool
) -> None:
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(
        ServerConfig(
            base_dir=tmp_path,
            batching=BatchingConfig(enabled=enabled, max_batch_size=16, max_wait_ms=30.0),
        ),
        freeze_gc=enabled,
    )
    n = 24
    results = _concurrent_requests(srv, n)
    for res in results:
        assert res["status"] == 200, res
        row = res["row"]
        want = expected_outputs([row["x1"]], [row["x2"]], [row["color"]], 1)
        got = res["body"]["predictions"][0]
        assert got["logits"] == pytest.approx(float(want["logits"][0]), rel=1e-5)
    calls = srv.metric("jaxtx_serving_batch_size_count", model="logistic")
    rows = srv.metric("jaxtx_serving_batch_size_sum", model="logistic")
    assert rows == n
    if enabled:
        assert calls < n  # some requests shared a model call
        assert rows / calls > 1
        assert gc.get_freeze_count() > 0  # long-lived objects were frozen after loading
    else:
        assert calls == n


def test_stock_triton_client(
    tmp_path: Path, copy_model: CopyModel, start_server: StartServer
) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    copy_model(tmp_path, "logistic", 1)
    srv = start_server(ServerConfig(base_dir=tmp_path))
    client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("logistic")
    assert client.get_model_metadata("logistic")["inputs"][2]["datatype"] == "BYTES"
    x1 = np.array([1.0, 2.0], np.float32)
    x2 = np.array([0.5, -0.5], np.float32)
    colors = np.array([b"red", b"unseen"], dtype=object)
    want = expected_outputs(x1.tolist(), x2.tolist(), ["red", "unseen"], 1)
    for binary in (True, False):
        inputs = []
        for name, value, dtype in (
            ("x1", x1, "FP32"),
            ("x2", x2, "FP32"),
            ("color", colors, "BYTES"),
        ):
            tensor = httpclient.InferInput(name, list(value.shape), dtype)
            tensor.set_data_from_numpy(value, binary_data=binary)
            inputs.append(tensor)
        result = client.infer("logistic", inputs, request_id="r1")
        np.testing.assert_allclose(result.as_numpy("logits"), want["logits"], rtol=1e-5)
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), want["probabilities"], rtol=1e-5
        )
        assert result.get_response()["id"] == "r1"
    with pytest.raises(Exception, match="missing"):
        client.infer("logistic", inputs[:2])
    client.close()
