"""Concurrent clients for the tests under load (HTTP or gRPC): count every answer, stop on demand."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx

__all__ = ["Load", "infer_body"]


def infer_body(i: int) -> dict[str, Any]:
    """A one-row v2 infer request for the ``logistic`` test model."""
    return {
        "inputs": [
            {"name": "x1", "shape": [1], "datatype": "FP32", "data": [float(i % 7)]},
            {"name": "x2", "shape": [1], "datatype": "FP32", "data": [0.5]},
            {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["blue"]},
        ]
    }


def _grpc_infer_request(model: str, i: int) -> bytes:
    """The same one-row request as `infer_body`, as a gRPC ModelInferRequest with raw contents."""
    import numpy as np

    from jaxtx.serving._proto import predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name=model)
    for name, dtype in (("x1", "FP32"), ("x2", "FP32"), ("color", "BYTES")):
        req.inputs.add(name=name, datatype=dtype, shape=[1])
    req.raw_input_contents.append(np.float32(i % 7).tobytes())
    req.raw_input_contents.append(np.float32(0.5).tobytes())
    req.raw_input_contents.append(len(b"blue").to_bytes(4, "little") + b"blue")
    return bytes(req.SerializeToString())


class Load:
    """``threads`` clients sending v2 infer requests to ``url`` until `stop` (or a bound).

    Args:
        url: The server's base URL.
        model: Model name.
        threads: Concurrent clients, each on its own keep-alive connection.
        max_seconds: Each client stops after this long at most.
        max_requests: Each client stops after this many requests at most.
        grpc_port: Send the requests as gRPC ModelInfer calls to this port
            instead (one channel per client). A call's status is counted as
            200 when OK, else as 500 + its gRPC code.
    """

    def __init__(
        self,
        url: str,
        model: str = "logistic",
        threads: int = 4,
        max_seconds: float = 120.0,
        max_requests: int = 200_000,
        grpc_port: int | None = None,
    ) -> None:
        self.url, self.model, self.grpc_port = url, model, grpc_port
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        client = self._client if grpc_port is None else self._grpc_client
        self._threads = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Wait (bounded) until ``more`` further requests have been answered."""
        goal = self.total + more
        deadline = time.monotonic() + timeout
        while self.total < goal and time.monotonic() < deadline and self._alive():
            time.sleep(0.01)

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Stop every client and wait for them."""
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _client(self) -> None:
        end = time.monotonic() + self.max_seconds
        path = f"/v2/models/{self.model}/infer"
        with httpx.Client(base_url=self.url, timeout=30) as c:
            for i in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > end:
                    return
                try:
                    r = c.post(path, json=infer_body(i))
                except httpx.HTTPError as exc:
                    self._record(0, f"{type(exc).__name__}: {exc}", None)
                    continue
                ok = r.status_code == 200
                self._record(r.status_code, "" if ok else r.text[:200], ok and r.json())

    def _grpc_client(self) -> None:
        import grpc

        from jaxtx.serving._proto import predict_v2_pb2 as pb

        end = time.monotonic() + self.max_seconds
        bodies = [_grpc_infer_request(self.model, i) for i in range(7)]
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            for i in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > end:
                    return
                try:
                    reply = pb.ModelInferResponse.FromString(infer(bodies[i % 7], timeout=30))
                except grpc.RpcError as exc:
                    code = exc.code()
                    self._record(500 + code.value[0], f"{code.name}: {exc.details()}", None)
                    continue
                self._record(200, "", {"model_version": reply.model_version})

    def _record(self, status: int, failure: str, doc: Any) -> None:
        with self._lock:
            self.statuses[status] += 1  # 0: no answer (a transport error)
            if doc:
                self.versions[doc["model_version"]] += 1
            if failure and len(self.failures) < 20:
                self.failures.append(f"{status}: {failure}")

    @property
    def total(self) -> int:
        """Requests answered (or failed) so far."""
        with self._lock:
            return sum(self.statuses.values())

    def non_2xx(self) -> int:
        """Answers that were not 2xx, and requests that got no answer."""
        with self._lock:
            return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)
