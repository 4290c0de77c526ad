"""The HTTP server over real uvicorn: TF Serving REST, v2 protocol, errors, metrics."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from _serving_models import expected_outputs
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.repository import VersionPolicy
from jaxtx.serving.server import ServerConfig

MAX_BODY = 64 * 1024
ROWS = [
    {"x1": 1.0, "x2": 0.5, "color": "red"},
    {"x1": -2.0, "x2": 3, "color": "purple"},
    {"x1": 0.25, "x2": -1.0, "color": None},
]


def _reference(version: int, rows: list[dict] = ROWS) -> dict[str, np.ndarray]:
    return expected_outputs(
        [r["x1"] for r in rows], [r["x2"] for r in rows], [r["color"] for r in rows], version
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("models")
    for v in (1, 2):
        shutil.copytree(model_cache / "logistic" / str(v), base / "logistic" / str(v))
    shutil.copytree(model_cache / "vector" / "1", base / "vector" / "1")
    (base / "logistic" / "labels.json").write_text(json.dumps({"stable": 1, "canary": 2}))
    config = ServerConfig(
        base_dir=base,
        version_policy=VersionPolicy.latest(2),
        poll_interval_s=0.5,
        batching=BatchingConfig(max_batch_size=8, max_wait_ms=1.0),
        max_body_bytes=MAX_BODY,
        max_request_rows=100,
    )
    srv = RunningServer(config)
    srv.wait_ready()
    yield srv
    srv.stop()


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


# ------------------------------------------------------------------ TF REST
def test_v1_model_status(server: RunningServer) -> None:
    c = server.client
    body = c.get("/v1/models/logistic").json()
    assert body == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    one = c.get("/v1/models/logistic/versions/1").json()["model_version_status"]
    assert [s["version"] for s in one] == ["1"]
    canary = c.get("/v1/models/logistic/labels/canary").json()["model_version_status"]
    assert [s["version"] for s in canary] == ["2"]
    assert "'nope' not found" in _error(c.get("/v1/models/nope"), 404)
    assert "no version 9" in _error(c.get("/v1/models/logistic/versions/9"), 404)
    assert "no label 'prod'" in _error(c.get("/v1/models/logistic/labels/prod"), 404)
    assert "positive integer" in _error(c.get("/v1/models/logistic/versions/x1"), 400)
    assert "no such endpoint" in _error(c.get("/v1/models/logistic/whatever/1"), 404)


def test_v1_metadata(server: RunningServer) -> None:
    c = server.client
    meta = c.get("/v1/models/logistic/metadata").json()
    assert meta["model_spec"] == {"name": "logistic", "signature_name": "", "version": "2"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig["inputs"]) == {"x1", "x2", "color"}
    assert sig["inputs"]["x1"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["color"]["dtype"] == "DT_STRING"
    assert sig["inputs"]["x1"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert meta["metadata"]["jaxtx_signature"]["inputs"][0]["name"] == "x1"
    v1 = c.get("/v1/models/logistic/versions/1/metadata").json()
    assert v1["model_spec"]["version"] == "1"
    stable = c.get("/v1/models/logistic/labels/stable/metadata").json()
    assert stable["model_spec"]["version"] == "1"


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/logistic:predict", 2),
        ("/v1/models/logistic/versions/1:predict", 1),
        ("/v1/models/logistic/labels/stable:predict", 1),
        ("/v1/models/logistic/labels/canary:predict", 2),
    ],
)
def test_v1_predict_rows(server: RunningServer, path: str, version: int) -> None:
    response = server.client.post(path, json={"instances": ROWS})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    want = _reference(version)
    assert len(predictions) == len(ROWS)
    for i, row in enumerate(predictions):
        assert set(row) == {"probabilities", "logits"}
        assert row["logits"] == pytest.approx(float(want["logits"][i]), rel=1e-5)
        assert row["probabilities"] == pytest.approx(float(want["probabilities"][i]), rel=1e-5)


def test_v1_predict_columns(server: RunningServer) -> None:
    columns = {name: [r[name] for r in ROWS] for name in ("x1", "x2", "color")}
    response = server.client.post(
        "/v1/models/logistic:predict", json={"signature_name": "serving_default", "inputs": columns}
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    want = _reference(2)
    np.testing.assert_allclose(outputs["logits"], want["logits"], rtol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], want["probabilities"], rtol=1e-5)


def test_v1_single_output_is_unnamed(server: RunningServer) -> None:
    c = server.client
    rows = [
        {"n": 1, "vec": [1.0, 2.0, 3.0], "flag": True},
        {"n": 2, "vec": [0, 0, 0], "flag": False},
    ]
    assert c.post("/v1/models/vector:predict", json={"instances": rows}).json() == {
        "predictions": [8.0, 2.0]
    }
    columns = {"n": [1], "vec": [[1.0, 1.0, 1.0]], "flag": [False]}
    assert c.post("/v1/models/vector:predict", json={"inputs": columns}).json() == {
        "outputs": [4.0]
    }


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"instances": [{"x1": 1.0, "x2": 2.0}]}, "color", "missing from instances[0]"),
        (
            {"instances": [{"x1": 1.0, "x2": 2.0, "color": "red", "colr": "x"}]},
            "colr",
            "did you mean 'color'?",
        ),
        ({"instances": [{"x1": "one", "x2": 2.0, "color": "red"}]}, "x1", "string 'one'"),
        ({"instances": [{"x1": [1.0, 2.0], "x2": 2.0, "color": "red"}]}, "x1", "shape [1, 2]"),
        ({"inputs": {"x1": [1.0, 2.0], "x2": [2.0], "color": ["a", "b"]}}, "x2", "1 rows"),
        ({"inputs": {"x1": [[1.0], [2.0, 3.0]], "x2": [2, 3], "color": ["a", "b"]}}, "x1", ""),
        ({"inputs": {"x1": [1], "x2": [2], "color": [5]}}, "color", "integer 5"),
        ({"instances": [], "inputs": {}}, "instances", "both"),
        ({}, "instances", "neither"),
        ({"instances": []}, "instances", "empty list"),
        ({"instance": []}, "instance", "did you mean 'instances'?"),
        ({"instances": [1, 2]}, "instances[0]", "an object"),
        ({"signature_name": "other", "instances": ROWS}, "signature_name", "other"),
        ({"inputs": {"x1": [0.0] * 101, "x2": [0.0] * 101, "color": ["a"] * 101}}, "batch", "101"),
    ],
)
def test_v1_bad_input_is_400_naming_field(
    server: RunningServer, body: dict, field: str, text: str
) -> None:
    message = _error(server.client.post("/v1/models/logistic:predict", json=body), 400)
    assert message.startswith(f"invalid input '{field}'"), message
    assert text in message


def test_v1_transport_errors(server: RunningServer) -> None:
    c = server.client
    url = "/v1/models/logistic:predict"
    assert "not valid JSON" in _error(c.post(url, content=b"{nope"), 400)
    assert "nested too deeply" in _error(c.post(url, content=b"[" * 50000), 400)
    assert "use POST" in _error(c.get(url), 405)
    assert "use GET" in _error(c.post("/v1/models/logistic"), 405)
    assert "'nope' not found" in _error(c.post("/v1/models/nope:predict", json={}), 404)
    assert "':classify' is not supported" in _error(c.post("/v1/models/logistic:classify"), 400)
    assert "not supported; use gzip" in _error(
        c.post(url, content=b"{}", headers={"Content-Encoding": "br"}), 415
    )
    zipped = gzip.compress(json.dumps({"instances": ROWS[:1]}).encode())
    ok = c.post(url, content=zipped, headers={"Content-Encoding": "gzip"})
    assert ok.status_code == 200
    assert len(ok.json()["predictions"]) == 1


def test_body_limit_is_413(server: RunningServer) -> None:
    c = server.client
    url = "/v1/models/logistic:predict"
    big = b'{"instances": [' + b" " * MAX_BODY + b"]}"
    assert "larger than" in _error(c.post(url, content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts streamed bytes
        for _ in range(4):
            yield b" " * (MAX_BODY // 2)

    assert "larger than" in _error(c.post(url, content=chunks()), 413)
    bomb = gzip.compress(b" " * (MAX_BODY * 8))
    assert "larger than" in _error(
        c.post(url, content=bomb, headers={"Content-Encoding": "gzip"}), 413
    )
    # The server still answers afterwards.
    assert c.post(url, json={"instances": ROWS}).status_code == 200


# ----------------------------------------------------------------------- v2
def test_v2_server_and_health(server: RunningServer) -> None:
    c = server.client
    assert c.get("/v2/health/live").status_code == 200
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    meta = c.get("/v2").json()
    assert meta["name"] == "jaxtx"
    assert "binary_tensor_data" in meta["extensions"]


def test_v2_model_metadata_and_ready(server: RunningServer) -> None:
    c = server.client
    meta = c.get("/v2/models/logistic").json()
    assert meta["name"] == "logistic"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [
        {"name": "x1", "datatype": "FP32", "shape": [-1]},
        {"name": "x2", "datatype": "FP32", "shape": [-1]},
        {"name": "color", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1]}
    vec = c.get("/v2/models/vector/versions/1").json()
    assert {i["name"]: (i["datatype"], i["shape"]) for i in vec["inputs"]} == {
        "n": ("INT32", [-1]),
        "vec": ("FP32", [-1, 3]),
        "flag": ("BOOL", [-1]),
    }
    assert c.get("/v2/models/logistic/ready").json() == {"name": "logistic", "ready": True}
    assert c.get("/v2/models/logistic/versions/1/ready").status_code == 200
    assert "not found" in _error(c.get("/v2/models/nope/ready"), 404)
    assert "not serving" in _error(c.get("/v2/models/logistic/versions/5"), 404)


def _v2_inputs(rows: list[dict] = ROWS) -> list[dict]:
    n = len(rows)
    return [
        {"name": "x1", "shape": [n], "datatype": "FP32", "data": [r["x1"] for r in rows]},
        {"name": "x2", "shape": [n], "datatype": "FP32", "data": [r["x2"] for r in rows]},
        {"name": "color", "shape": [n], "datatype": "BYTES", "data": [r["color"] for r in rows]},
    ]


def test_v2_infer_json(server: RunningServer) -> None:
    c = server.client
    response = c.post("/v2/models/logistic/infer", json={"id": "req-7", "inputs": _v2_inputs()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "logistic"
    assert body["model_version"] == "2"
    assert body["id"] == "req-7"
    want = _reference(2)
    assert [o["name"] for o in body["outputs"]] == ["probabilities", "logits"]
    for out in body["outputs"]:
        assert out["datatype"] == "FP32"
        assert out["shape"] == [3]
        np.testing.assert_allclose(out["data"], want[out["name"]], rtol=1e-5)
    only = c.post(
        "/v2/models/logistic/versions/1/infer",
        json={"inputs": _v2_inputs(), "outputs": [{"name": "logits"}]},
    ).json()
    assert only["model_version"] == "1"
    assert [o["name"] for o in only["outputs"]] == ["logits"]
    np.testing.assert_allclose(only["outputs"][0]["data"], _reference(1)["logits"], rtol=1e-5)


def test_v2_infer_nested_data_and_fixed_width(server: RunningServer) -> None:
    body = {
        "inputs": [
            {"name": "n", "shape": [2], "datatype": "INT32", "data": [1, 2]},
            {"name": "vec", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [0, 0, 1]]},
            {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        ]
    }
    out = server.client.post("/v2/models/vector/infer", json=body).json()["outputs"]
    assert out == [{"name": "total", "datatype": "FP32", "shape": [2], "data": [8.0, 3.0]}]


def test_v2_binary_tensors(server: RunningServer) -> None:
    x1 = np.array([r["x1"] for r in ROWS], np.float32).tobytes()
    x2 = np.array([r["x2"] for r in ROWS], np.float32).tobytes()
    colors = b"".join(
        struct.pack("<I", len(s)) + s for s in (b"red", b"purple", b"")
    )  # the third row's missing color is the default ""
    header = {
        "inputs": [
            {
                "name": "x1",
                "shape": [3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 12},
            },
            {
                "name": "x2",
                "shape": [3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 12},
            },
            {
                "name": "color",
                "shape": [3],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(colors)},
            },
        ],
        "outputs": [
            {"name": "logits", "parameters": {"binary_data": True}},
            {"name": "probabilities"},
        ],
    }
    head = json.dumps(header).encode()
    response = server.client.post(
        "/v2/models/logistic/infer",
        content=head + x1 + x2 + colors,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    n = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:n])
    logits_meta, probs_meta = meta["outputs"]
    assert logits_meta["parameters"] == {"binary_data_size": 12}
    assert "data" not in logits_meta
    logits = np.frombuffer(response.content[n:], dtype="<f4")
    want = _reference(2)
    np.testing.assert_allclose(logits, want["logits"], rtol=1e-5)
    np.testing.assert_allclose(probs_meta["data"], want["probabilities"], rtol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "field", "text"),
    [
        (lambda b: b["inputs"][0].update(datatype="BYTES"), "x1", "datatype FP32"),
        (lambda b: b["inputs"][0].update(shape=[2]), "x1", "2 values for shape [2]"),
        (lambda b: b["inputs"][0].update(name="x_1"), "x_1", "did you mean 'x1'?"),
        (lambda b: b["inputs"].pop(), "color", "missing"),
        (lambda b: b["inputs"][1].update(data=[1, "a", 2]), "x2", "str 'a'"),
        (lambda b: b["inputs"][0].update(datatype="INT32"), "x1", "whole numbers"),
        (lambda b: b.update(outputs=[{"name": "logit"}]), "outputs[0]", "did you mean 'logits'?"),
        (lambda b: b.update(inputs="x"), "inputs", "non-empty list"),
    ],
)
def test_v2_bad_input_is_400_naming_field(
    server: RunningServer, mutate: Callable[[dict], object], field: str, text: str
) -> None:
    body = {"inputs": _v2_inputs()}
    mutate(body)
    message = _error(server.client.post("/v2/models/logistic/infer", json=body), 400)
    assert message.startswith(f"invalid input '{field}'"), message
    assert text in message


def test_v2_infer_not_found(server: RunningServer) -> None:
    c = server.client
    body = {"inputs": _v2_inputs()}
    assert "'nope' not found" in _error(c.post("/v2/models/nope/infer", json=body), 404)
    assert "not serving" in _error(c.post("/v2/models/logistic/versions/7/infer", json=body), 404)
    assert "use POST" in _error(c.get("/v2/models/logistic/infer"), 405)


def test_garbage_never_breaks_the_server(server: RunningServer) -> None:
    c = server.client
    junk = [
        b"\xff\xfe\x00",
        b'{"inputs": [{"name": "x1", "shape": [1e400], "datatype": "FP32", "data": []}]}',
        b'{"inputs": [{"name": "x1", "shape": [99999999999], "datatype": "FP32", "data": [1]}]}',
        b'{"inputs": {"x1": [1e999], "x2": [NaN], "color": [{"b64": "!!"}]}}',
        b'{"instances": [{"x1": 1, "x2": 1, "color": 123456789012345678901234567890}]}',
        json.dumps({"inputs": {"x1": [[[[[[1]]]]]] * 2, "x2": [1, 2], "color": "ab"}}).encode(),
    ]
    for body in junk:
        for url in ("/v1/models/logistic:predict", "/v2/models/logistic/infer"):
            r = c.post(url, content=body)
            assert 400 <= r.status_code < 500, (url, body, r.text)
            assert "error" in r.json()
    r = c.post(
        "/v2/models/logistic/infer",
        content=b'{"inputs": []}xx',
        headers={"Inference-Header-Content-Length": "999"},
    )
    assert r.status_code == 400
    assert c.post("/v1/models/logistic:predict", json={"instances": ROWS}).status_code == 200


# -------------------------------------------------------------------- metrics
def test_metrics_exposition(server: RunningServer) -> None:
    c = server.client
    c.post("/v1/models/logistic:predict", json={"instances": ROWS})
    c.post("/v1/models/logistic:predict", json={"instances": [{}]})
    c.post("/v1/models/unknown-model:predict", json={})
    response = c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = server.metric(
        "jaxtx_serving_requests_total", model="logistic", version="2", api="v1_predict", code="200"
    )
    assert ok >= 1
    assert server.metric("jaxtx_serving_requests_total", model="logistic", code="400") >= 1
    # Names a client invents never become label values.
    assert "unknown-model" not in text
    assert server.metric("jaxtx_serving_requests_total", model="", code="404") >= 1
    assert server.metric("jaxtx_serving_loaded_versions", model="logistic") == 2
    assert server.metric("jaxtx_serving_batch_size_count", model="logistic") >= 1
    assert "jaxtx_serving_request_latency_seconds_bucket" in text
    assert "jaxtx_serving_inference_latency_seconds_bucket" in text


# ------------------------------------------------------------------ not ready
def test_not_ready_server(
    tmp_path: Path, model_cache: Path, start_server: Callable[..., RunningServer]
) -> None:
    bad = tmp_path / "broken" / "1"
    shutil.copytree(model_cache / "logistic" / "1", bad)
    (bad / "predict.jaxexport").write_bytes(b"junk")
    srv = start_server(ServerConfig(base_dir=tmp_path, poll_interval_s=0.2), ready=False)
    assert srv.repository.wait_polled(20)
    c = srv.client
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 400 and ready.json() == {"ready": False}
    assert c.get("/v2/models/broken/ready").json() == {"name": "broken", "ready": False}
    message = _error(c.post("/v1/models/broken:predict", json={"instances": ROWS}), 503)
    assert "no version serving" in message and "predict.jaxexport" in message
    status = c.get("/v1/models/broken").json()["model_version_status"]
    assert status[0]["state"] == "END"
    assert status[0]["status"]["error_code"] == "UNKNOWN"
    assert "not a jax.export" in status[0]["status"]["error_message"]
