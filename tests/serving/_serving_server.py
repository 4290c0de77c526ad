"""A real uvicorn server in a background thread, for the serving tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx

from jaxtx.serving.server import ServerConfig, create_app, uvicorn_options

__all__ = ["RunningServer", "metric_value"]


class RunningServer:
    """A uvicorn server on 127.0.0.1 and a free port, in a background thread.

    Args:
        config: Server settings.
        freeze_gc: Let the server call `gc.freeze` (off by default: the server
            shares its process with the whole test session).
        http: Uvicorn's ``http`` setting (a name or a protocol class); default:
            the hardened protocol `serve` uses.
    """

    def __init__(self, config: ServerConfig, freeze_gc: bool = False, http: Any = None) -> None:
        import dataclasses

        import uvicorn

        config = dataclasses.replace(config, freeze_gc=freeze_gc)
        self.config = config
        self.app = create_app(config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = uvicorn_options(self.app)
        options.pop("loop")
        if http is not None:
            options["http"] = http
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="on", **options)
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    @property
    def repository(self):
        return self.app.state.repository

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until /v2/health/ready answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server at {self.url} not ready after {timeout} s")

    def wait_started(self, timeout: float = 30.0) -> None:
        """Wait until the server answers /v2/health/live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/v2/health/live").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server at {self.url} did not start after {timeout} s")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        text = self.client.get("/metrics").text
        return metric_value(text, name, **labels)

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        self.client.close()
        self._server.should_exit = True
        self._thread.join(30)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` in a Prometheus exposition whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
