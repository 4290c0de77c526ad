"""Loopback load test of ``jaxtx`` serving: single-row requests, batching on and off.

For each target (a server started in its own process on 127.0.0.1) and each
concurrency level, a bounded number of single-row ``:predict`` requests (and
at most ``--time-cap`` seconds) is sent over keep-alive HTTP/1.1 connections,
one per concurrent client. Printed: requests/s, p50 and p99 latency, errors,
and the batching ratio (rows per model call, from the server's /metrics).

Usage::

    .venv/bin/python bench/bench_serving.py [--requests 2000] [--concurrency 1 8 32]

Other servers plug in as targets: a `Target` starts a server for a model
directory, says which request to send and stops it. The MLflow comparison is
a factory added to `TARGETS` (see `_mlflow_target`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Result", "Target", "TARGETS", "main", "run_load", "write_model"]

_FEATURES = ("x1", "x2", "color")
_VOCAB = ["red", "green", "blue"]


# --------------------------------------------------------------------- model
def write_model(base: Path, name: str = "bench", version: int = 1) -> Path:
    """Export a small logistic model (two floats, one string) as ``jaxtx.model/1``.

    Args:
        base: Repository root; the model goes to ``<base>/<name>/<version>``.
        name: Model name.
        version: Version number.

    Returns:
        The version directory.
    """
    import jax
    import jax.numpy as jnp
    from jax import export

    w = jnp.array([0.5, -0.25], jnp.float32)
    emb = jnp.array([0.1, -0.2, 0.3, 0.05, -0.05], jnp.float32)

    def predict(f: dict[str, jax.Array]) -> dict[str, jax.Array]:
        logits = w[0] * f["x1"] + w[1] * f["x2"] + emb[f["color"]] + 0.5
        return {"probabilities": jax.nn.sigmoid(logits), "logits": logits}

    (b,) = export.symbolic_shape("b")
    specs = {
        "x1": jax.ShapeDtypeStruct((b,), jnp.float32),
        "x2": jax.ShapeDtypeStruct((b,), jnp.float32),
        "color": jax.ShapeDtypeStruct((b,), jnp.int32),
    }
    out = base / name / str(version)
    out.mkdir(parents=True)
    (out / "predict.jaxexport").write_bytes(export.export(jax.jit(predict))(specs).serialize())
    (out / "signature.json").write_text(
        json.dumps(
            {
                "format": "jaxtx.model/1",
                "name": name,
                "task": "binary_classification",
                "inputs": [
                    {"name": "x1", "dtype": "float32", "shape": [None]},
                    {"name": "x2", "dtype": "float32", "shape": [None]},
                    {"name": "color", "dtype": "string", "shape": [None]},
                ],
                "outputs": [
                    {"name": "probabilities", "dtype": "float32", "shape": [None]},
                    {"name": "logits", "dtype": "float32", "shape": [None]},
                ],
            }
        )
    )
    (out / "preprocess.json").write_text(
        json.dumps(
            {
                "color": {
                    "kind": "vocabulary",
                    "vocabulary": _VOCAB,
                    "num_oov_buckets": 2,
                    "default": "",
                }
            }
        )
    )
    return out


# -------------------------------------------------------------------- targets
@dataclass
class Target:
    """A server under test.

    Attributes:
        name: Label in the report.
        command: Command line that serves the repository on ``port``.
        path: Request path of a single-row prediction.
        body: Builds the JSON body of request ``i``.
        port: TCP port on 127.0.0.1.
        ready_path: Polled with GET until it answers 200.
        metrics_path: Prometheus endpoint for the batching ratio (``None``: none).
        env: Extra environment variables.
    """

    name: str
    command: list[str]
    path: str
    body: Callable[[int], bytes]
    port: int
    ready_path: str = "/v2/health/ready"
    metrics_path: str | None = "/metrics"
    env: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start the server process and wait until it is ready.

        Args:
            timeout: Seconds to wait.
        """
        self._proc = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"{self.name} exited early:\n{err[-2000:]}")
            try:
                with urllib.request.urlopen(self.url(self.ready_path), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout} s")

    def stop(self) -> None:
        """Stop the server process."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this target."""
        return f"http://127.0.0.1:{self.port}{path}"

    def batch_counters(self) -> tuple[float, float] | None:
        """Rows and model calls so far, from the server's metrics (None if unknown)."""
        if self.metrics_path is None:
            return None
        with urllib.request.urlopen(self.url(self.metrics_path), timeout=5) as r:
            text = r.read().decode()
        rows = calls = 0.0
        for line in text.splitlines():
            if line.startswith("jaxtx_serving_batch_size_sum"):
                rows += float(line.rsplit(" ", 1)[1])
            elif line.startswith("jaxtx_serving_batch_size_count"):
                calls += float(line.rsplit(" ", 1)[1])
        return rows, calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row_body(i: int) -> bytes:
    row = {"x1": float(i % 97) / 10.0, "x2": float(i % 13), "color": _VOCAB[i % 3]}
    return json.dumps({"instances": [row]}).encode()


def _jaxtx_target(base: Path, batching: bool, wait_ms: float = 0.0) -> Target:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jaxtx.serving",
        "--model-base-path",
        str(base),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--max-batch-size",
        "32",
        "--batch-timeout-ms",
        str(wait_ms),
    ]
    if not batching:
        cmd.append("--no-batching")
    return Target(
        name=f"jaxtx batching={'on' if batching else 'off'}"
        + (f" wait={wait_ms:g}ms" if batching else ""),
        command=cmd,
        path="/v1/models/bench:predict",
        body=_row_body,
        port=port,
        env={"JAX_PLATFORMS": "cpu"},
    )


def _mlflow_target(base: Path) -> Target:
    """Hook for the MLflow comparison.

    Return a `Target` whose command runs ``mlflow models serve`` on the same
    model (logged as an MLflow pyfunc), with ``path="/invocations"``,
    a ``body`` in MLflow's ``{"dataframe_records": [...]}`` format,
    ``ready_path="/ping"`` and ``metrics_path=None``; then add it to `TARGETS`.
    """
    raise NotImplementedError("the MLflow target is not wired in yet")


TARGETS: dict[str, Callable[[Path], Target]] = {
    "jaxtx-batching": lambda base: _jaxtx_target(base, batching=True),
    "jaxtx-no-batching": lambda base: _jaxtx_target(base, batching=False),
    "jaxtx-batching-wait2ms": lambda base: _jaxtx_target(base, batching=True, wait_ms=2.0),
    # "mlflow": _mlflow_target,
}


# ----------------------------------------------------------------------- load
@dataclass
class Result:
    """One load run.

    Attributes:
        target: Target name.
        concurrency: Concurrent clients.
        ok: Requests answered 200.
        errors: Requests that failed (status or connection).
        seconds: Wall time of the run.
        latencies: Seconds per successful request.
        batch_ratio: Rows per model call during the run (``None``: unknown).
    """

    target: str
    concurrency: int
    ok: int
    errors: int
    seconds: float
    latencies: list[float]
    batch_ratio: float | None = None

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds.

        Args:
            q: Percentile in (0, 100).

        Returns:
            Milliseconds (NaN without data).
        """
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=1000)[int(q * 10) - 1] * 1000.0


async def _client(
    port: int,
    path: str,
    body: Callable[[int], bytes],
    next_index: Callable[[], int | None],
    deadline: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            i = next_index()
            if i is None:
                return
            payload = body(i)
            request = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            ).encode() + payload
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            data = await reader.readexactly(length)
            elapsed = time.perf_counter() - start
            if status == 200 and data.startswith(b'{"predictions"'):
                latencies.append(elapsed)
            else:
                errors.append(f"{status} {data[:200]!r}")
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


async def _run_load_async(
    target: Target, concurrency: int, requests: int, time_cap: float
) -> tuple[list[float], list[str], float]:
    counter = iter(range(requests))

    def next_index() -> int | None:
        return next(counter, None)

    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = time.monotonic() + time_cap
    await asyncio.gather(
        *(
            _client(target.port, target.path, target.body, next_index, deadline, latencies, errors)
            for _ in range(concurrency)
        )
    )
    return latencies, errors, time.perf_counter() - start


def run_load(target: Target, concurrency: int, requests: int, time_cap: float) -> Result:
    """Send ``requests`` single-row requests from ``concurrency`` clients.

    Args:
        target: A started target.
        concurrency: Concurrent keep-alive connections.
        requests: Requests in total (the run stops early at ``time_cap``).
        time_cap: Seconds at most.

    Returns:
        The run's figures.
    """
    before = target.batch_counters()
    latencies, errors, seconds = asyncio.run(
        _run_load_async(target, concurrency, requests, time_cap)
    )
    after = target.batch_counters()
    ratio = None
    if before is not None and after is not None and after[1] > before[1]:
        ratio = (after[0] - before[0]) / (after[1] - before[1])
    return Result(target.name, concurrency, len(latencies), len(errors), seconds, latencies, ratio)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table.

    Args:
        argv: Command-line arguments.

    Returns:
        Exit status (1 when any request failed).
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per run")
    p.add_argument("--warmup", type=int, default=200, help="requests before each target's runs")
    p.add_argument("--time-cap", type=float, default=30.0, help="seconds per run at most")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--targets",
        nargs="+",
        default=["jaxtx-batching", "jaxtx-no-batching"],
        choices=list(TARGETS),
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="jaxtx-bench-") as tmp:
        base = Path(tmp)
        write_model(base)
        for key in args.targets:
            target = TARGETS[key](base)
            target.start()
            try:
                run_load(target, 8, args.warmup, args.time_cap)
                for c in args.concurrency:
                    res = run_load(target, c, args.requests, args.time_cap)
                    results.append(res)
                    print(_row(res), flush=True)
            finally:
                target.stop()

    print()
    print(
        f"{'target':<26} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'rows/call':>9}"
    )
    for r in results:
        print(_row(r))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "target": r.target,
                        "concurrency": r.concurrency,
                        "ok": r.ok,
                        "errors": r.errors,
                        "rps": r.rps,
                        "p50_ms": r.pct(50),
                        "p99_ms": r.pct(99),
                        "batch_ratio": r.batch_ratio,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 1 if any(r.errors for r in results) else 0


def _row(r: Result) -> str:
    ratio = "-" if r.batch_ratio is None else f"{r.batch_ratio:.2f}"
    return (
        f"{r.target:<26} {r.concurrency:>4} {r.rps:>8.0f} {r.pct(50):>8.2f} {r.pct(99):>8.2f} "
        f"{r.errors:>6} {ratio:>9}"
    )


if __name__ == "__main__":
    sys.exit(main())
