"""Open Inference Protocol v2 over gRPC, with Triton's stock client (tritonclient.grpc)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _serving_models import expected_outputs
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("grpc-models")
    shutil.copytree(model_cache / "logistic" / "1", base / "logistic" / "1")
    srv = RunningServer(
        ServerConfig(base_dir=base, batching=BatchingConfig(max_batch_size=8), grpc_port=0)
    )
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(served: RunningServer) -> Iterator[object]:
    port = served.app.state.grpc_port
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    yield c
    c.close()


def _inputs(x1: list[float], x2: list[float], color: list[str]) -> list:
    n = len(x1)
    a = grpcclient.InferInput("x1", [n], "FP32")
    a.set_data_from_numpy(np.array(x1, dtype=np.float32))
    b = grpcclient.InferInput("x2", [n], "FP32")
    b.set_data_from_numpy(np.array(x2, dtype=np.float32))
    c = grpcclient.InferInput("color", [n], "BYTES")
    c.set_data_from_numpy(np.array([s.encode() for s in color], dtype=object))
    return [a, b, c]


def test_health_and_metadata(client) -> None:  # type: ignore[no-untyped-def]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("logistic")
    meta = client.get_model_metadata("logistic")
    assert meta.name == "logistic" and list(meta.versions) == ["1"]
    assert {t.name: t.datatype for t in meta.inputs} == {
        "x1": "FP32",
        "x2": "FP32",
        "color": "BYTES",
    }
    assert client.get_server_metadata().name == "jaxtx"


def test_infer_matches_the_reference(client) -> None:  # type: ignore[no-untyped-def]
    x1, x2, color = [1.0, -2.0, 0.5], [0.5, 1.5, 0.0], ["red", "teal", "blue"]
    result = client.infer(
        "logistic",
        _inputs(x1, x2, color),
        outputs=[grpcclient.InferRequestedOutput("logits")],
        request_id="r1",
    )
    want = expected_outputs(x1, x2, color, 1)["logits"]
    np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=1e-6)
    response = result.get_response()
    assert response.id == "r1" and response.model_version == "1"
    everything = client.infer("logistic", _inputs(x1, x2, color))
    assert set(o.name for o in everything.get_response().outputs) == {"logits", "probabilities"}


def test_errors_are_status_codes_naming_the_field(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException, match="not found"):
        client.infer("nope", _inputs([1.0], [1.0], ["red"]))
    bad = _inputs([1.0], [1.0], ["red"])
    bad[0] = grpcclient.InferInput("x1", [1], "FP32")
    bad[0].set_data_from_numpy(np.array([np.inf], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="x1") as info:
        client.infer("logistic", bad)
    assert "INVALID_ARGUMENT" in str(info.value.status())
    unknown = grpcclient.InferInput("x9", [1], "FP32")
    unknown.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="x9"):
        client.infer("logistic", [unknown])


def test_grpc_and_http_share_the_model_and_metrics(served: RunningServer, client) -> None:  # type: ignore[no-untyped-def]
    before = served.metric("jaxtx_serving_batch_size_count", model="logistic")
    client.infer("logistic", _inputs([1.0], [1.0], ["red"]))
    http = served.client.post(
        "/v1/models/logistic:predict", json={"instances": [{"x1": 1.0, "x2": 1.0, "color": "red"}]}
    )
    assert http.status_code == 200
    assert served.metric("jaxtx_serving_batch_size_count", model="logistic") >= before + 1


def test_model_infer_calls_are_counted_by_status(served: RunningServer, client) -> None:  # type: ignore[no-untyped-def]
    def count(code: str, **labels: str) -> float:
        return served.metric("jaxtx_serving_requests_total", api="grpc", code=code, **labels)

    ok, bad = count("OK", model="logistic", version="1"), count("NOT_FOUND")
    client.infer("logistic", _inputs([1.0], [1.0], ["red"]))
    with pytest.raises(InferenceServerException):
        client.infer("nope", _inputs([1.0], [1.0], ["red"]))
    assert count("OK", model="logistic", version="1") == ok + 1
    assert count("NOT_FOUND") == bad + 1


def test_a_body_that_is_not_a_request_is_invalid_argument(served: RunningServer) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{served.app.state.grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            infer(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelInferRequest" in (info.value.details() or "")


def _raw_request(x1: list[float], color: list[bytes], x2_shape: list[int] | None = None) -> bytes:
    """A ModelInferRequest with raw contents, built by hand (any shape, any bytes)."""
    from jaxtx.serving._proto import predict_v2_pb2 as pb

    n = len(x1)
    req = pb.ModelInferRequest(model_name="logistic")
    for name, dtype, shape in (
        ("x1", "FP32", [n]),
        ("x2", "FP32", x2_shape or [n]),
        ("color", "BYTES", [n]),
    ):
        req.inputs.add(name=name, datatype=dtype, shape=shape)
    req.raw_input_contents.append(np.array(x1, np.float32).tobytes())
    req.raw_input_contents.append(np.zeros(n, np.float32).tobytes())
    req.raw_input_contents.append(b"".join(len(c).to_bytes(4, "little") + c for c in color))
    return bytes(req.SerializeToString())


def test_raw_inputs_off_the_common_path_are_checked_in_full(served: RunningServer) -> None:
    import grpc

    from jaxtx.serving._proto import predict_v2_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{served.app.state.grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        common = pb.ModelInferResponse.FromString(
            infer(_raw_request([1.0, 2.0], [b"red", b"blue"]))
        )
        # the same values as typed contents take the checked path: the same answer
        typed = pb.ModelInferRequest(model_name="logistic")
        typed.inputs.add(name="x1", datatype="FP32", shape=[2]).contents.fp32_contents.extend(
            [1.0, 2.0]
        )
        typed.inputs.add(name="x2", datatype="FP32", shape=[2]).contents.fp32_contents.extend(
            [0.0, 0.0]
        )
        typed.inputs.add(name="color", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
            [b"red", b"blue"]
        )
        checked = pb.ModelInferResponse.FromString(infer(typed.SerializeToString()))
        assert [o.name for o in checked.outputs] == [o.name for o in common.outputs]
        assert list(checked.raw_output_contents) == list(common.raw_output_contents)
        bad_cases = {
            "color": _raw_request([1.0], [b"\xff\xfe"]),  # not UTF-8
            "x2": _raw_request([1.0], [b"red"], x2_shape=[2]),  # rows disagree
        }
        for field, body in bad_cases.items():
            with pytest.raises(grpc.RpcError) as info:
                infer(body, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in (info.value.details() or ""), info.value.details()
