"""Loopback load test of ``jaxtx`` serving against MLflow's scoring server.

One run measures the same exported model behind three servers, each started in
its own process on 127.0.0.1: ``jaxtx`` serving with batching on (over HTTP and
over gRPC), with batching off, and ``mlflow models serve --env-manager local``
(the model logged as an MLflow pyfunc in a temporary SQLite tracking store).
That model is a logistic one whose call costs next to nothing; batching on and
off are also compared on an MLP whose call costs what a small production
model's does (``jaxtx-mlp-*`` targets, concurrency 32 only). For each target and each
concurrency level, single-row requests are sent over keep-alive connections,
one request at a time per connection. The client shares the machine with the
server, so it is kept cheap and, between protocols, equally cheap:

* ``--client c`` (the default where installed): C load generators with one
  thread, ``wrk`` for HTTP/1.1 and ``h2load`` for gRPC (each call an HTTP/2
  POST to ``/inference.GRPCInferenceService/ModelInfer``), each run lasting
  ``--seconds``; Debian: ``apt-get install wrk nghttp2-client``;
* ``--client python``: the bench's own asyncio clients, ``--requests``
  requests per run (at most ``--time-cap`` seconds): bare protocols on uvloop
  for HTTP, ``grpc.aio`` channels for gRPC (several times the CPU per request
  of the HTTP one, which skews a comparison of the two).

Printed per run: requests/s, p50 and p99 latency, errors (statuses other than
200, connection errors and, for gRPC, calls the server itself counted as not
OK), the batching ratio (rows per model call, from the server's /metrics), and
the CPU time per answered request of the server's processes and of the load
generator.

Then a paced (open-loop) phase offers ``jaxtx`` with batching on half of the
requests/s it reached at concurrency 8, from the Python client (none of the C
tools paces requests), and reports p99 latency from each request's due time,
with what goes into it: how late the client sent, the share of requests the
server's own clock put over 5 ms, and how long the server's threads waited for
a CPU per request (the rest of the machine's load). Every level
(and the paced phase) runs ``--repeats`` times (default 3). All servers are up
together and, within a repeat, each level runs every target in turn, the order
rotated from one repeat to the next, so that a burst of load from elsewhere on
the machine falls on all targets alike; the table shows the median with the
min-max range, and the targets are checked on medians:

* jaxtx (batching on) / MLflow requests/s at concurrency 8: >= 30x;
* jaxtx (batching on) p99 at 50% of its concurrency-8 throughput: <= 5 ms;
* jaxtx batching on / off requests/s at concurrency 32: >= 3x, on an MLP
  (`MLP_HIDDEN`) whose one-row call costs what a small production model's
  does. The same ratio on the logistic model is shown without a target: its
  call costs less than the HTTP and JSON work of the request around it, which
  batching cannot share, so the ratio stays near 1.5x whatever the batcher does;
* jaxtx over gRPC / over HTTP requests/s at concurrency 8: >= 1x;
* jaxtx Open Inference v2 JSON / TF Serving REST requests/s at concurrency 8
  and 32: >= 0.9x. The v2 runs (``jaxtx-v2`` rows) go to the same
  batching-on server, the same row per request, in turn with the other
  targets; ``--no-v2`` skips them.

Usage::

    .venv/bin/python bench/bench_serving.py [--client auto|c|python] [--seconds 3]
        [--concurrency 1 8 32] [--repeats 3]

Other servers plug in as targets: a `Target` starts a server for a model
directory, says which request to send and stops it; factories are in `TARGETS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = [
    "PacedResult",
    "Result",
    "Summary",
    "TARGETS",
    "Target",
    "main",
    "run_load",
    "run_paced",
    "write_model",
]

_T = TypeVar("_T")
_FEATURES = ("x1", "x2", "color")
_VOCAB = ["red", "green", "blue"]


# --------------------------------------------------------------------- model
def write_model(
    base: Path, name: str = "bench", version: int = 1, hidden: tuple[int, ...] = ()
) -> Path:
    """Export a small model (two floats, one string) as ``jaxtx.model/1``.

    Args:
        base: Repository root; the model goes to ``<base>/<name>/<version>``.
        name: Model name.
        version: Version number.
        hidden: Widths of hidden ReLU layers between the three features and
            the logit; none (the default) gives a logistic model, whose call
            costs next to nothing. The weights come from a fixed seed.

    Returns:
        The version directory.
    """
    import jax
    import jax.numpy as jnp
    from jax import export

    w = jnp.array([0.5, -0.25], jnp.float32)
    emb = jnp.array([0.1, -0.2, 0.3, 0.05, -0.05], jnp.float32)
    layers = []
    key = jax.random.PRNGKey(0)
    widths = (3, *hidden, 1) if hidden else ()
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        key, sub = jax.random.split(key)
        scale = jnp.float32(1.0 / fan_in**0.5)
        layers.append(jax.random.normal(sub, (fan_in, fan_out), jnp.float32) * scale)

    def predict(f: dict[str, jax.Array]) -> dict[str, jax.Array]:
        if not layers:
            logits = w[0] * f["x1"] + w[1] * f["x2"] + emb[f["color"]] + 0.5
        else:
            h = jnp.stack([f["x1"], f["x2"], emb[f["color"]]], axis=1)
            for i, weights in enumerate(layers):
                h = h @ weights
                if i < len(layers) - 1:
                    h = jax.nn.relu(h)
            logits = h[:, 0]
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
        cleanup: Paths removed when the target stops (its scratch files).
        grpc_port: Send the load as v2 gRPC ModelInfer calls to this port
            instead of HTTP (``None``: HTTP).
    """

    name: str
    command: list[str]
    path: str
    body: Callable[[int], bytes]
    port: int
    ready_path: str = "/v2/health/ready"
    metrics_path: str | None = "/metrics"
    env: dict[str, str] = field(default_factory=dict)
    cleanup: list[Path] = field(default_factory=list)
    grpc_port: int | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start the server process and wait until it is ready.

        Args:
            timeout: Seconds to wait.
        """
        # stderr goes to a file: an undrained pipe would stall a server that logs.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.name} exited early:\n{err}")
            try:
                with urllib.request.urlopen(self.url(self.ready_path), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout} s")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's output so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]

    def stop(self) -> None:
        """Stop the server's process group and remove its scratch files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            # Children (uvicorn under the mlflow CLI) share the group.
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this target."""
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the server's processes have used so far."""
        import psutil

        if self._proc is None:
            return 0.0
        total = 0.0
        try:
            root = psutil.Process(self._proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for proc in procs:  # the MLflow CLI serves from a uvicorn child
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def run_queue_wait(self) -> float:
        """Seconds the server's threads have waited for a CPU so far (Linux; 0 elsewhere).

        The sum over every thread of the server's processes of the time it was
        runnable but not running (``/proc/<pid>/task/<tid>/schedstat``): what
        the rest of the machine's load costs the server in latency.
        """
        import psutil

        if self._proc is None:
            return 0.0
        try:
            root = psutil.Process(self._proc.pid)
            pids = [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.Error:
            return 0.0
        return sum(_run_queue_wait(pid) for pid in pids)

    def answer_counts(self) -> tuple[float, float] | None:
        """Model requests answered OK and otherwise so far, by the server's count.

        Read from ``jaxtx_serving_requests_total`` (HTTP code 200 or gRPC
        status ``OK`` is OK); calls the client gave up (gRPC ``CANCELLED``,
        HTTP 499: h2load and wrk drop the calls in flight when a run's time
        is up) are neither. ``None`` for a server without that metric.
        """
        if self.metrics_path is None:
            return None
        with urllib.request.urlopen(self.url(self.metrics_path), timeout=5) as r:
            text = r.read().decode()
        ok = other = 0.0
        for line in text.splitlines():
            if line.startswith("jaxtx_serving_requests_total{"):
                labels, value = line.rsplit(" ", 1)
                if 'code="200"' in labels or 'code="OK"' in labels:
                    ok += float(value)
                elif 'code="CANCELLED"' not in labels and 'code="499"' not in labels:
                    other += float(value)
        return ok, other

    def slow_counts(self, bound: float) -> tuple[float, float] | None:
        """Model requests answered within ``bound`` seconds, and all, by the server's clock.

        From the ``jaxtx_serving_request_latency_seconds`` histogram (``bound``
        must be one of its bucket bounds); ``None`` for a server without it.
        """
        if self.metrics_path is None:
            return None
        with urllib.request.urlopen(self.url(self.metrics_path), timeout=5) as r:
            text = r.read().decode()
        within = total = 0.0
        le = f'le="{bound}"'
        for line in text.splitlines():
            if line.startswith("jaxtx_serving_request_latency_seconds_bucket{") and le in line:
                within += float(line.rsplit(" ", 1)[1])
            elif line.startswith("jaxtx_serving_request_latency_seconds_count{"):
                total += float(line.rsplit(" ", 1)[1])
        return within, total

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


def _run_queue_wait(pid: int) -> float:
    """Seconds the threads of process ``pid`` have waited for a CPU (Linux; else 0)."""
    total = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _features(i: int) -> dict[str, float | str]:
    """Feature row of request ``i`` (the same for every server)."""
    return {"x1": float(i % 97) / 10.0, "x2": float(i % 13), "color": _VOCAB[i % 3]}


def _row_body(i: int) -> bytes:
    return json.dumps({"instances": [_features(i)]}).encode()


def _v2_body(i: int) -> bytes:
    """One-row Open Inference v2 JSON body of request ``i`` (the same row as `_row_body`)."""
    row = _features(i)
    tensors = [
        {"name": n, "shape": [1], "datatype": "BYTES" if n == "color" else "FP32", "data": [row[n]]}
        for n in _FEATURES
    ]
    return json.dumps({"inputs": tensors}).encode()


def _v2_variant(target: Target) -> Target:
    """The same running server, sent the same rows as v2 ``/infer`` requests."""
    return replace(
        target,
        name="jaxtx v2 " + target.name.removeprefix("jaxtx "),
        path="/v2/models/bench/infer",
        body=_v2_body,
    )


def _dataframe_split_body(i: int) -> bytes:
    row = _features(i)
    return json.dumps(
        {"dataframe_split": {"columns": list(_FEATURES), "data": [[row[c] for c in _FEATURES]]}}
    ).encode()


def _jaxtx_target(
    base: Path,
    batching: bool,
    wait_ms: float = 0.0,
    grpc: bool = False,
    mlp: bool = False,
    extra: tuple[str, ...] = (),
) -> Target:
    port = _free_port()
    grpc_port = _free_port() if grpc else None
    cmd = [
        sys.executable,
        "-m",
        "jaxtx.serving",
        "--model-base-path",
        str(base.parent / MLP_DIR if mlp else base),
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
    cmd += extra
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    return Target(
        name=("jaxtx gRPC" if grpc else "jaxtx")
        + (" MLP" if mlp else "")
        + f" batching={'on' if batching else 'off'}"
        + (" " + " ".join(extra) if extra else "")
        + (f" wait={wait_ms:g}ms" if batching else ""),
        command=cmd,
        path="/v1/models/bench:predict",
        body=_row_body,
        port=port,
        env={"JAX_PLATFORMS": "cpu"},
        grpc_port=grpc_port,
    )


def _mlflow_target(base: Path, name: str = "bench", version: int = 1) -> Target:
    """MLflow's scoring server on the model ``<base>/<name>/<version>``.

    The model directory is logged as an MLflow pyfunc model
    (`jaxtx.components._mlflow_model.log_jaxtx_model`) in a temporary SQLite
    tracking store, then served from its local artifact directory with
    ``mlflow models serve --env-manager local`` (one uvicorn worker, MLflow's
    default). Uvicorn's per-request access log is turned off, as ``jaxtx`` runs
    at log level ``warning``.

    Args:
        base: Model repository root (as for the ``jaxtx`` targets).
        name: Model name.
        version: Version number.

    Returns:
        The target; its scratch directory is removed when it stops.
    """
    import logging
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    import pandas as pd
    from mlflow import MlflowClient

    from jaxtx.components._mlflow_model import log_jaxtx_model

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="jaxtx-bench-mlflow-"))
    try:
        tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = client.create_experiment(
            "bench-serving", artifact_location=(work / "artifacts").as_uri()
        )
        run = client.create_run(experiment_id)
        model_uri = log_jaxtx_model(
            tracking_uri=tracking_uri,
            run_id=run.info.run_id,
            model_dir=base / name / str(version),
            input_example=pd.DataFrame([_features(0)], columns=list(_FEATURES)),
        )
        client.set_terminated(run.info.run_id)
        model_id = model_uri.rstrip("/").rsplit("/", 1)[-1]
        location = urlparse(client.get_logged_model(model_id).artifact_location)
        model_path = Path(url2pathname(location.path))
        if not (model_path / "MLmodel").is_file():
            raise FileNotFoundError(f"no MLmodel in {model_path} (logged as {model_uri})")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

    port = _free_port()
    # MLflow runs `uvicorn` from PATH: this interpreter's, wherever its
    # console scripts were installed (a venv chained to another has none).
    shim = work / "bin" / "uvicorn"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    shim.chmod(0o755)
    bin_dir = os.pathsep.join([str(shim.parent), str(Path(sys.executable).parent)])
    return Target(
        name="mlflow models serve",
        command=[
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(model_path),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        path="/invocations",
        body=_dataframe_split_body,
        port=port,
        ready_path="/ping",
        metrics_path=None,
        env={
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "UVICORN_ACCESS_LOG": "false",
            "JAX_PLATFORMS": "cpu",
        },
        cleanup=[work],
    )


TARGETS: dict[str, Callable[[Path], Target]] = {
    "jaxtx-batching": lambda base: _jaxtx_target(base, batching=True),
    "jaxtx-no-batching": lambda base: _jaxtx_target(base, batching=False),
    "jaxtx-batching-wait2ms": lambda base: _jaxtx_target(base, batching=True, wait_ms=2.0),
    "jaxtx-grpc": lambda base: _jaxtx_target(base, batching=True, grpc=True),
    "mlflow": _mlflow_target,
    "jaxtx-mlp-batching": lambda base: _jaxtx_target(base, batching=True, mlp=True),
    "jaxtx-mlp-no-batching": lambda base: _jaxtx_target(
        base, batching=False, mlp=True, extra=MLP_UNBATCHED
    ),
}
# The batching comparison on a model whose call costs what a small production
# model's does: three hidden ReLU layers of 1024 (2.1M parameters, 8 MiB of
# float32 weights), about 0.4 ms for a one-row call on this machine's CPU. On
# the logistic model a call costs a few tens of microseconds, less than the
# HTTP and JSON work of the request around it, and batching has little to save.
MLP_HIDDEN = (1024, 1024, 1024)
MLP_DIR = "models-mlp"
# Unbatched, the MLP is served at its best: its one-row calls on 4 worker
# threads, none on the event loop (1.3x the requests/s of the default
# settings on this machine, which run calls this short on the loop).
MLP_UNBATCHED = ("--batch-inline-ms", "0", "--batch-threads", "4")


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
        latencies: Seconds per successful request (may be empty when the
            client reports percentiles only, see ``percentiles``).
        batch_ratio: Rows per model call during the run (``None``: unknown).
        client: The load generator (``wrk``, ``h2load`` or ``python``).
        server_cpu: CPU seconds the server's processes used during the run.
        client_cpu: CPU seconds the load generator used during the run.
        percentiles: Latency percentiles in ms from the client itself, for
            clients that give no per-request latencies (wrk).
        server_errors: Requests the server itself counted as not OK.
    """

    target: str
    concurrency: int
    ok: int
    errors: int
    seconds: float
    latencies: list[float]
    batch_ratio: float | None = None
    client: str = "python"
    server_cpu: float | None = None
    client_cpu: float | None = None
    percentiles: dict[int, float] = field(default_factory=dict)
    server_errors: int = 0

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
        if not self.latencies and q in self.percentiles:
            return self.percentiles[int(q)]
        return _pct(self.latencies, q)

    @property
    def server_us(self) -> float:
        """Server CPU microseconds per answered request (NaN if unknown)."""
        if self.server_cpu is None or self.ok == 0:
            return float("nan")
        return self.server_cpu / self.ok * 1e6

    @property
    def client_us(self) -> float:
        """Load-generator CPU microseconds per answered request (NaN if unknown)."""
        if self.client_cpu is None or self.ok == 0:
            return float("nan")
        return self.client_cpu / self.ok * 1e6


@dataclass
class PacedResult:
    """One paced (open-loop) run.

    Request ``i`` is due at ``start + i / offered_rps`` whatever happened to
    the earlier ones; a pool of connections sends it when due (or as soon as a
    connection is free, if all are busy).

    Attributes:
        offered_rps: Requests per second offered.
        result: The run; its latencies go from sending to the full answer.
        from_schedule: Seconds from the due time to the full answer, per
            successful request (includes any wait for a free connection and the
            client's own timer lateness).
        late: Seconds from the due time to the send, per request sent (the
            client's timer and scheduling lateness, plus any wait for a free
            connection).
        server_over_5ms: Share of the run's requests that the server itself
            took more than 5 ms to answer, from arrival to response (from its
            latency histogram; ``None``: unknown).
        run_queue_wait: Seconds the server's threads waited for a CPU
            (runnable, not running) during the run.
        client_run_queue_wait: The same for the client's own threads.
        load: The machine's 1-minute load average at the end of the run.
    """

    offered_rps: float
    result: Result
    from_schedule: list[float]
    late: list[float] = field(default_factory=list)
    server_over_5ms: float | None = None
    run_queue_wait: float = 0.0
    client_run_queue_wait: float = 0.0
    load: float = float("nan")

    def pct(self, q: float) -> float:
        """Latency percentile from the due time, in milliseconds."""
        return _pct(self.from_schedule, q)

    def late_pct(self, q: float) -> float:
        """Percentile of how late the client sent requests, in milliseconds."""
        return _pct(self.late, q)


def _pct(latencies: list[float], q: float) -> float:
    if len(latencies) < 2:
        return float("nan")
    return statistics.quantiles(latencies, n=1000)[int(q * 10) - 1] * 1000.0


def _request_bytes(port: int, path: str, payload: bytes) -> bytes:
    """A keep-alive HTTP/1.1 POST of ``payload`` to ``path``."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection, one request at a time.

    A bare protocol rather than asyncio streams: the client shares the
    machine with the server under test, so it should spend as little CPU per
    request as it can (and the same for every server). Responses are framed
    by ``Content-Length`` or chunked transfer encoding.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._length: int | None = None  # body bytes expected; -1: chunked
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, port: int) -> _Connection:
        """Connect to 127.0.0.1:``port``."""
        _, conn = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            answer = self._parse()
        except ValueError as exc:
            self._waiter.set_exception(exc)
            return
        if answer is not None:
            self._waiter.set_result(answer)

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if self._length is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            self._status = int(lines[0].split(b" ", 2)[1])
            self._length = 0
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    self._length = int(value)
                elif key == b"transfer-encoding" and b"chunked" in value.lower():
                    self._length = -1
        if self._length >= 0:
            if len(buf) < self._length:
                return None
            body = bytes(buf[: self._length])
            del buf[: self._length]
        else:
            parts: list[bytes] = []
            pos = 0
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                if size == 0:
                    end = buf.find(b"\r\n\r\n", eol)
                    if end < 0:
                        return None
                    del buf[: end + 4]
                    break
                if len(buf) < eol + 2 + size + 2:
                    return None
                parts.append(bytes(buf[eol + 2 : eol + 2 + size]))
                pos = eol + 2 + size + 2
            body = b"".join(parts)
        self._length = None
        return self._status, body

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; returns the response's status and body."""
        if self._lost is not None:
            raise self._lost
        assert self._transport is not None
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await waiter

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.close()


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a client coroutine, on uvloop when it is installed (the cheaper loop).

    The objects alive beforehand (jax, mlflow and pandas, imported to build
    the targets) are frozen out of the garbage collector's view for the run:
    a full collection over them would pause the client for milliseconds and
    count as server latency.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the server
        uvloop = None
    gc.collect()
    gc.freeze()
    try:
        if uvloop is None:  # pragma: no cover
            return asyncio.run(coro)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    finally:
        gc.unfreeze()


def _answered(status: int, data: bytes) -> bool:
    return status == 200 and data.startswith((b'{"predictions"', b'{"model_name"'))  # v1, v2


async def _client(
    conn: _Connection,
    requests: list[bytes],
    next_index: Callable[[], int | None],
    deadline: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    try:
        while time.monotonic() < deadline:
            i = next_index()
            if i is None:
                return
            start = time.perf_counter()
            status, data = await conn.exchange(requests[i])
            elapsed = time.perf_counter() - start
            if _answered(status, data):
                latencies.append(elapsed)
            else:
                errors.append(f"{status} {data[:200]!r}")
    except (OSError, ValueError) as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


async def _run_load_async(
    target: Target, concurrency: int, requests: int, time_cap: float
) -> tuple[list[float], list[str], float]:
    payloads = [_request_bytes(target.port, target.path, target.body(i)) for i in range(requests)]
    conns = [await _Connection.open(target.port) for _ in range(concurrency)]
    counter = iter(range(requests))

    def next_index() -> int | None:
        return next(counter, None)

    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = time.monotonic() + time_cap
    await asyncio.gather(
        *(_client(conn, payloads, next_index, deadline, latencies, errors) for conn in conns)
    )
    return latencies, errors, time.perf_counter() - start


def _grpc_request(i: int) -> bytes:
    """A serialized one-row v2 ModelInferRequest (raw tensor contents), as Triton sends."""
    import struct

    from jaxtx.serving._proto import predict_v2_pb2 as pb

    row = _features(i)
    color = str(row["color"]).encode()
    req = pb.ModelInferRequest(
        model_name="bench",
        raw_input_contents=[
            struct.pack("<f", row["x1"]),
            struct.pack("<f", row["x2"]),
            struct.pack("<I", len(color)) + color,
        ],
    )
    for name, dtype in (("x1", "FP32"), ("x2", "FP32"), ("color", "BYTES")):
        req.inputs.add(name=name, datatype=dtype, shape=[1])
    return req.SerializeToString()


async def _run_grpc_load_async(
    target: Target, concurrency: int, requests: int, time_cap: float
) -> tuple[list[float], list[str], float]:
    """Like `_run_load_async`, over gRPC: one channel (HTTP/2 connection) per client."""
    import grpc

    payloads = [_grpc_request(i) for i in range(requests)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{target.grpc_port}") for _ in range(concurrency)
    ]
    counter = iter(range(requests))
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_cap

    async def client(channel: Any) -> None:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        while time.monotonic() < deadline:
            i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                reply = await call(payloads[i], timeout=30)
            except grpc.RpcError as exc:
                errors.append(repr(exc)[:200])
                continue
            if reply:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append("empty reply")

    for channel in channels:
        await channel.channel_ready()
    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in channels))
    seconds = time.perf_counter() - start
    for channel in channels:
        await channel.close()
    return latencies, errors, seconds


# --------------------------------------------------------- C load generators
# wrk (HTTP/1.1) and h2load (HTTP/2, here gRPC) spend a few microseconds of CPU
# per request where the Python clients spend tens to hundreds (grpc.aio's
# client more than the bare HTTP one): on a 2-core machine shared by client and
# server, a heavy client takes CPU from the server and skews the comparison
# between protocols. Both tools send one fixed row (the server caches nothing).
_WRK_DONE = """
done = function(s, latency, requests)
  io.write(string.format("JAXTX %d %d %d %d %d %d %d %.1f %.1f\\n", s.requests, s.duration,
    s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def c_clients() -> dict[str, str]:
    """The C load generators found on ``PATH``: ``{"http": wrk, "grpc": h2load}``."""
    found = {"http": shutil.which("wrk"), "grpc": shutil.which("h2load")}
    return {k: v for k, v in found.items() if v}


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string


def _run_wrk(target: Target, concurrency: int, seconds: int, work: Path) -> Result:
    """One wrk run (one thread, ``concurrency`` keep-alive connections)."""
    body = work / "body.json"
    body.write_bytes(target.body(1))
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = assert(io.open({_lua_string(str(body))}, "rb"))\n'
        'wrk.body = f:read("*a")\nf:close()\n' + _WRK_DONE
    )
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s"]
    out = _run_client(cmd + ["-s", str(script), target.url(target.path)], seconds)
    line = next((x for x in out.stdout.splitlines() if x.startswith("JAXTX ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    n, duration, connect, read, write, status, timeout, p50, p99 = line.split()[1:]
    errors = int(status) + int(connect) + int(read) + int(write) + int(timeout)
    return Result(
        target.name,
        concurrency,
        int(n) - int(status),
        errors,
        int(duration) / 1e6,
        [],
        client="wrk",
        client_cpu=out.cpu,
        percentiles={50: float(p50) / 1000.0, 99: float(p99) / 1000.0},
    )


def _run_h2load(target: Target, concurrency: int, seconds: int, work: Path) -> Result:
    """One h2load run of gRPC ModelInfer calls (one stream per connection).

    A unary gRPC call is an HTTP/2 POST with ``content-type:
    application/grpc`` and ``te: trailers``, its body the serialized request
    behind a 5-byte prefix (0, then the length, big-endian). The per-request
    log gives each call's latency; a call the server failed is still HTTP 200
    (its status is in the trailers), so the server's own count of non-OK
    calls is added to the errors by `run_load`.
    """
    message = _grpc_request(1)
    body = work / "infer.grpc"
    body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    log = work / "h2load.log"
    cmd = ["h2load", "-t1", f"-c{concurrency}", "-m1", "-D", str(seconds), "-d", str(body)]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log)]
    url = f"http://127.0.0.1:{target.grpc_port}/inference.GRPCInferenceService/ModelInfer"
    out = _run_client(cmd + [url], seconds)
    summary = next((x for x in out.stdout.splitlines() if x.startswith("requests: ")), None)
    finished = next((x for x in out.stdout.splitlines() if x.startswith("finished in ")), None)
    if summary is None or finished is None:
        raise RuntimeError(f"h2load printed no summary:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    counts = {k: int(v) for v, k in (part.split()[:2] for part in summary[10:].split(", "))}
    latencies = []
    for row in log.read_text().splitlines():
        fields = row.split("\t")
        if len(fields) >= 3 and fields[1] == "200":
            latencies.append(int(fields[2]) / 1e6)
    return Result(
        target.name,
        concurrency,
        counts["succeeded"],
        counts["failed"],
        float(finished.split()[2].rstrip("s,")),
        latencies,
        client="h2load",
        client_cpu=out.cpu,
    )


@dataclass
class _ClientRun:
    stdout: str
    stderr: str
    cpu: float


def _run_client(cmd: list[str], seconds: int) -> _ClientRun:
    """Run a load generator to its end; its output and its CPU seconds."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return _ClientRun(proc.stdout, proc.stderr, cpu)


def run_load(
    target: Target,
    concurrency: int,
    requests: int,
    time_cap: float,
    client: str = "python",
    seconds: float = 3.0,
) -> Result:
    """Send single-row requests from ``concurrency`` clients.

    Args:
        target: A started target.
        concurrency: Concurrent keep-alive connections (gRPC: HTTP/2
            connections with one call at a time each).
        requests: Requests in total for the Python client (it stops early at
            ``time_cap``).
        time_cap: Seconds at most (Python client).
        client: ``"python"``, or ``"c"`` for wrk (HTTP) or h2load (gRPC).
        seconds: Length of a run of a C client.

    Returns:
        The run's figures, with the server's CPU time and its own count of
        failed requests.
    """
    before = target.batch_counters()
    answers = target.answer_counts()
    cpu = target.cpu_seconds()
    if client == "python":
        start = time.process_time()
        run = _run_grpc_load_async if target.grpc_port is not None else _run_load_async
        latencies, errors, elapsed = _run_async(run(target, concurrency, requests, time_cap))
        result = Result(target.name, concurrency, len(latencies), len(errors), elapsed, latencies)
        result.client_cpu = time.process_time() - start
    else:
        with tempfile.TemporaryDirectory(prefix="jaxtx-bench-client-") as tmp:
            c_run = _run_h2load if target.grpc_port is not None else _run_wrk
            result = c_run(target, concurrency, max(1, round(seconds)), Path(tmp))
    result.server_cpu = target.cpu_seconds() - cpu
    after = target.batch_counters()
    if before is not None and after is not None and after[1] > before[1]:
        result.batch_ratio = (after[0] - before[0]) / (after[1] - before[1])
    answers_after = target.answer_counts()
    if answers is not None and answers_after is not None:
        # A client sees most failures itself; h2load does not see gRPC ones.
        result.server_errors = round(answers_after[1] - answers[1])
        result.errors = max(result.errors, result.server_errors)
    return result


async def _paced_client(
    conn: _Connection,
    requests: list[bytes],
    next_index: Callable[[], int | None],
    t0: float,
    interval: float,
    end: float,
    latencies: list[float],
    from_schedule: list[float],
    late: list[float],
    errors: list[str],
) -> None:
    try:
        while True:
            i = next_index()
            if i is None:
                return
            due = t0 + i * interval
            if due > end:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            start = time.perf_counter()
            late.append(start - due)
            status, data = await conn.exchange(requests[i])
            done = time.perf_counter()
            if _answered(status, data):
                latencies.append(done - start)
                from_schedule.append(done - due)
            else:
                errors.append(f"{status} {data[:200]!r}")
    except (OSError, ValueError) as exc:
        errors.append(repr(exc))
    finally:
        conn.close()


async def _run_paced_async(
    target: Target, rate: float, requests: int, time_cap: float, connections: int
) -> tuple[list[float], list[float], list[float], list[str], float]:
    payloads = [_request_bytes(target.port, target.path, target.body(i)) for i in range(requests)]
    conns = [await _Connection.open(target.port) for _ in range(connections)]
    counter = iter(range(requests))

    def next_index() -> int | None:
        return next(counter, None)

    latencies: list[float] = []
    from_schedule: list[float] = []
    late: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter() + 0.02
    await asyncio.gather(
        *(
            _paced_client(
                conn,
                payloads,
                next_index,
                t0,
                1.0 / rate,
                t0 + time_cap,
                latencies,
                from_schedule,
                late,
                errors,
            )
            for conn in conns
        )
    )
    return latencies, from_schedule, late, errors, time.perf_counter() - t0


def run_paced(
    target: Target, rate: float, requests: int, time_cap: float, connections: int = 128
) -> PacedResult:
    """Offer ``rate`` single-row requests per second (open loop).

    Args:
        target: A started target.
        rate: Requests per second offered.
        requests: Requests in total (none is sent after ``time_cap``).
        time_cap: Seconds at most (of schedule).
        connections: Keep-alive connections in the pool.

    Returns:
        The run's figures.
    """
    slow = target.slow_counts(0.005)
    wait, own_wait = target.run_queue_wait(), _run_queue_wait(os.getpid())
    cpu, start = target.cpu_seconds(), time.process_time()
    latencies, from_schedule, late, errors, seconds = _run_async(
        _run_paced_async(target, rate, requests, time_cap, connections)
    )
    result = Result(
        f"{target.name} paced", connections, len(latencies), len(errors), seconds, latencies
    )
    result.client_cpu = time.process_time() - start
    result.server_cpu = target.cpu_seconds() - cpu
    wait = target.run_queue_wait() - wait
    own_wait = _run_queue_wait(os.getpid()) - own_wait
    over = None
    slow_after = target.slow_counts(0.005)
    if slow is not None and slow_after is not None and slow_after[1] > slow[1]:
        over = 1.0 - (slow_after[0] - slow[0]) / (slow_after[1] - slow[1])
    return PacedResult(rate, result, from_schedule, late, over, wait, own_wait, os.getloadavg()[0])


def _probe(target: Target) -> dict[str, float] | str:
    """First prediction for request 1 (the answer's text when it is not one)."""
    req = urllib.request.Request(
        target.url(target.path),
        data=target.body(1),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
    except OSError as exc:
        return repr(exc)
    try:
        pred = json.loads(text)["predictions"][0]
        return {k: float(v) for k, v in pred.items()}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return text[:200]


def _grpc_probe(target: Target) -> dict[str, float] | str:
    """First prediction for request 1 over gRPC (the error's text when it fails)."""
    import struct

    import grpc

    from jaxtx.serving._proto import predict_v2_pb2 as pb

    try:
        with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            reply = pb.ModelInferResponse.FromString(infer(_grpc_request(1), timeout=30))
    except grpc.RpcError as exc:
        return repr(exc)[:200]
    out: dict[str, float] = {}
    for tensor, raw in zip(reply.outputs, reply.raw_output_contents, strict=False):
        if tensor.datatype != "FP32" or len(raw) != 4:
            return f"unexpected output {tensor.name}: {tensor.datatype} {list(tensor.shape)}"
        out[tensor.name] = struct.unpack("<f", raw)[0]
    return out


# ----------------------------------------------------------------------- main
_ON, _OFF, _MLFLOW, _GRPC = "jaxtx-batching", "jaxtx-no-batching", "mlflow", "jaxtx-grpc"
_MLP_ON, _MLP_OFF = "jaxtx-mlp-batching", "jaxtx-mlp-no-batching"
_V2 = "jaxtx-v2"  # the batching-on server answering v2 JSON, runs interleaved with its v1 runs


@dataclass
class Summary:
    """Repeated runs of one target at one concurrency.

    Attributes:
        runs: The runs (at least one).
    """

    runs: list[Result]

    @property
    def target(self) -> str:
        """Target name."""
        return self.runs[0].target

    @property
    def concurrency(self) -> int:
        """Concurrent connections."""
        return self.runs[0].concurrency

    @property
    def rps(self) -> float:
        """Median requests per second."""
        return statistics.median(r.rps for r in self.runs)

    @property
    def errors(self) -> int:
        """Failed requests over every run."""
        return sum(r.errors for r in self.runs)

    def spread(self, values: list[float], fmt: str) -> str:
        """``median [min-max]`` of ``values``."""
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

    def row(self) -> str:
        """One line of the table: medians with min-max."""
        ratios = [r.batch_ratio for r in self.runs if r.batch_ratio is not None]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
        return (
            f"{self.target:<26} {self.concurrency:>4} "
            f"{self.spread([r.rps for r in self.runs], '.0f'):>20} "
            f"{self.spread([r.pct(50) for r in self.runs], '.2f'):>20} "
            f"{self.spread([r.pct(99) for r in self.runs], '.2f'):>20} "
            f"{self.errors:>6} {ratio:>9} "
            f"{self.spread([r.server_us for r in self.runs], '.0f'):>16} "
            f"{self.spread([r.client_us for r in self.runs], '.0f'):>16} {self.runs[0].client}"
        )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per run")
    p.add_argument("--warmup", type=int, default=200, help="requests before each target's runs")
    p.add_argument("--time-cap", type=float, default=15.0, help="seconds per run at most")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--repeats", type=int, default=3, help="runs of each target and level (medians shown)"
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=[_ON, _OFF, _GRPC, _MLFLOW, _MLP_ON, _MLP_OFF],
        choices=list(TARGETS),
    )
    p.add_argument(
        "--paced-seconds",
        type=float,
        default=5.0,
        help="length of the paced phase at 50%% of the concurrency-8 throughput",
    )
    p.add_argument(
        "--paced-connections",
        type=int,
        default=128,
        help="connection pool of the paced phase (a request waits when all are busy)",
    )
    p.add_argument(
        "--no-v2",
        dest="v2",
        action="store_false",
        help=f"skip the v2 JSON runs interleaved with {_ON}'s v1 runs",
    )
    p.add_argument(
        "--client",
        choices=["auto", "c", "python"],
        default="auto",
        help="load generator: c = wrk (HTTP) and h2load (gRPC); python = the bench's own "
        "asyncio clients; auto (default) = c where the tool is on PATH",
    )
    p.add_argument(
        "--seconds", type=float, default=3.0, help="length of each run of a C load generator"
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    missing = {"http": "wrk", "grpc": "h2load"}.keys() - c_clients().keys()
    if args.client == "c" and missing:
        p.error(
            "--client c needs wrk and h2load on PATH (Debian: apt-get install wrk nghttp2-client)"
        )
    return args


def _client_for(target: Target, choice: str) -> str:
    """``"c"`` or ``"python"``: the load generator a target gets."""
    protocol = "grpc" if target.grpc_port is not None else "http"
    return "c" if choice != "python" and protocol in c_clients() else "python"


def _clients_line(choice: str) -> str:
    found = c_clients() if choice != "python" else {}
    http = f"wrk ({found['http']}, 1 thread)" if "http" in found else "python (asyncio, uvloop)"
    grpc = f"h2load ({found['grpc']}, 1 thread)" if "grpc" in found else "python (grpc.aio)"
    return f"load generators: HTTP {http}; gRPC {grpc}; paced phase: python (asyncio, uvloop)"


def _start(key: str, base: Path, args: argparse.Namespace) -> tuple[Target, dict[str, Any]]:
    """Start one target, take its first predictions and warm it up."""
    target = TARGETS[key](base)
    target.start()
    try:
        probes: dict[str, Any] = {key: _probe(target)}
        if target.grpc_port is not None:
            probes[f"{key} (gRPC)"] = _grpc_probe(target)
        run_load(target, 8, args.warmup, args.time_cap, _client_for(target, args.client), 1.0)
    except BaseException:
        target.stop()
        raise
    return target, probes


def _levels(key: str, args: argparse.Namespace) -> list[int]:
    if key in (_MLP_ON, _MLP_OFF):
        return [32]  # they are there for the batching comparison only
    levels = list(args.concurrency)
    if key in (_ON, _V2, _GRPC, _MLFLOW) and 8 not in levels:
        levels.append(8)  # the targets compare these at concurrency 8
    return levels


def _bench_targets(
    started: dict[str, Target], args: argparse.Namespace, failures: dict[str, str]
) -> tuple[dict[tuple[str, int], Summary], list[PacedResult]]:
    """Run every level of every started target ``--repeats`` times, interleaved.

    Within a repeat, each level runs every target in turn, the order rotated
    from one repeat to the next, so that a burst of load from elsewhere on
    the machine falls on all targets alike; the paced phase ends each repeat.
    A target that fails is reported in ``failures`` and dropped.
    """
    lanes: list[tuple[str, Target]] = []
    for key, target in started.items():
        lanes.append((key, target))
        if key == _ON and args.v2:
            lanes.append((_V2, _v2_variant(target)))
    levels = list(dict.fromkeys(c for key, _ in lanes for c in _levels(key, args)))
    runs: dict[tuple[str, int], list[Result]] = {}
    paced: list[PacedResult] = []
    for repeat in range(args.repeats):
        for c in levels:
            turn = [(k, t) for k, t in lanes if c in _levels(k, args) and k not in failures]
            shift = repeat % len(turn) if turn else 0
            for key, tgt in turn[shift:] + turn[:shift]:
                client = _client_for(tgt, args.client)
                try:
                    res = run_load(tgt, c, args.requests, args.time_cap, client, args.seconds)
                except Exception as exc:  # reported; the other targets go on
                    failures[key] = f"{type(exc).__name__}: {exc}".strip()
                    print(f"{key}: FAILED: {failures[key]}", flush=True)
                    continue
                runs.setdefault((key, c), []).append(res)
                print(f"[{repeat + 1}/{args.repeats}] {_table_row(res)}", flush=True)
        last = runs.get((_ON, 8))
        if last and last[-1].rps > 0 and _ON not in failures:
            rate = 0.5 * last[-1].rps
            count = max(2, round(rate * args.paced_seconds))
            paced.append(
                run_paced(started[_ON], rate, count, args.paced_seconds, args.paced_connections)
            )
            print(f"[{repeat + 1}/{args.repeats}] {_table_row(paced[-1].result)}", flush=True)
    order = {key: i for i, (key, _) in enumerate(lanes)}
    table = sorted(runs, key=lambda kc: (order[kc[0]], levels.index(kc[1])))
    return {kc: Summary(runs[kc]) for kc in table}, paced


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table of medians and check the targets.

    Args:
        argv: Command-line arguments.

    Returns:
        Exit status (1 when a target failed to run or any request failed).
    """
    args = _parse_args(argv)
    print(_clients_line(args.client), flush=True)
    wall = time.perf_counter()
    results: dict[tuple[str, int], Summary] = {}
    failures: dict[str, str] = {}
    probes: dict[str, dict[str, float] | str] = {}
    paced: list[PacedResult] = []
    with tempfile.TemporaryDirectory(prefix="jaxtx-bench-") as tmp:
        base = Path(tmp) / "models"
        write_model(base)
        if any(key.startswith("jaxtx-mlp") for key in args.targets):
            write_model(base.parent / MLP_DIR, hidden=MLP_HIDDEN)
        started: dict[str, Target] = {}
        try:
            for key in args.targets:
                try:
                    started[key], key_probes = _start(key, base, args)
                except Exception as exc:  # reported; the other targets still run
                    failures[key] = f"{type(exc).__name__}: {exc}".strip()
                    print(f"{key}: FAILED: {failures[key]}", flush=True)
                    continue
                probes.update(key_probes)
            results, paced = _bench_targets(started, args, failures)
        finally:
            for target in started.values():
                target.stop()
    _print_report(results, failures, paced, args)
    print("\nsame row, first prediction per target:")
    for key, pred in probes.items():
        print(f"  {key:<24} {pred}")
    # the MLP model answers differently: its targets are compared with each other
    agree = _predictions_agree([p for k, p in probes.items() if "mlp" not in k])
    agree_mlp = _predictions_agree([p for k, p in probes.items() if "mlp" in k])
    agree = agree and agree_mlp
    print(f"  agree: {'yes' if agree else 'NO'} (the MLP targets with each other)")
    checks = _checks(results, paced, failures)
    print("\ntargets (medians):")
    for label, value, goal, verdict in checks:
        print(f"  {label:<58} {value:>22}  (target {goal})  {verdict}")
    print(f"\nwall time: {time.perf_counter() - wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(_report_json(results, paced, failures, checks), indent=2))
    bad = bool(failures) or any(s.errors for s in results.values())
    bad = bad or any(p.result.errors > 0 for p in paced) or not agree
    return 1 if bad else 0


def _print_report(
    results: dict[tuple[str, int], Summary],
    failures: dict[str, str],
    paced: list[PacedResult],
    args: argparse.Namespace,
) -> None:
    print(f"\nmedian [min-max] over {args.repeats} runs each")
    print(
        f"{'target':<26} {'conc':>4} {'req/s':>20} {'p50 ms':>20} {'p99 ms':>20} "
        f"{'errors':>6} {'rows/call':>9} {'server CPU us/req':>16} {'client CPU us/req':>16} "
        "client"
    )
    for s in results.values():
        print(s.row())
    for key, reason in failures.items():
        print(f"{key:<26} FAILED: {reason.splitlines()[0][:200]}")
    if paced:
        one = Summary([p.result for p in paced])
        due99 = one.spread([p.pct(99) for p in paced], ".2f")
        due50 = one.spread([p.pct(50) for p in paced], ".2f")
        print(
            f"\npaced phase ({_ON}), {len(paced)} runs: offered "
            f"{one.spread([p.offered_rps for p in paced], '.0f')} req/s, achieved "
            f"{one.spread([p.result.rps for p in paced], '.0f')} req/s, {one.errors} errors, "
            f"{args.paced_connections} connections; from due time p50 {due50} ms, p99 {due99} ms"
        )
        sent99 = one.spread([p.result.pct(99) for p in paced], ".2f")
        late99 = one.spread([p.late_pct(99) for p in paced], ".2f")
        overs = [100.0 * p.server_over_5ms for p in paced if p.server_over_5ms is not None]
        over = one.spread(overs, ".2f") if overs else "-"
        print(
            f"  from send p99 {sent99} ms; client sent p99 {late99} ms after due; "
            f"server (its own clock) over 5 ms: {over} % of requests; server CPU "
            f"{one.spread([p.result.server_us for p in paced], '.0f')} us/req; server threads "
            "waited for a CPU "
            f"{one.spread([p.run_queue_wait / max(p.result.ok, 1) * 1e6 for p in paced], '.0f')}"
            f" us/req, the client's "
            f"{one.spread([p.client_run_queue_wait / max(p.result.ok, 1) * 1e6 for p in paced], '.0f')}"
            f" us/req; load average {one.spread([p.load for p in paced], '.1f')} "
            f"on {os.cpu_count()} CPUs"
        )


def _report_json(
    results: dict[tuple[str, int], Summary],
    paced: list[PacedResult],
    failures: dict[str, str],
    checks: list[tuple[str, str, str, str]],
) -> dict[str, object]:
    return {
        "runs": [_result_json(r) for s in results.values() for r in s.runs],
        "medians": [
            {"target": s.target, "concurrency": s.concurrency, "rps": s.rps, "errors": s.errors}
            for s in results.values()
        ],
        "paced": [
            {
                **_result_json(p.result),
                "offered_rps": p.offered_rps,
                "p50_from_due_ms": p.pct(50),
                "p99_from_due_ms": p.pct(99),
                "p99_sent_late_ms": p.late_pct(99),
                "server_over_5ms": p.server_over_5ms,
                "server_run_queue_wait_s": p.run_queue_wait,
                "client_run_queue_wait_s": p.client_run_queue_wait,
                "load_average": p.load,
            }
            for p in paced
        ],
        "failures": failures,
        "checks": [{"check": c[0], "value": c[1], "target": c[2], "verdict": c[3]} for c in checks],
    }


def _predictions_agree(preds: list[dict[str, float] | str]) -> bool:
    if any(not isinstance(p, dict) for p in preds):
        return False
    dicts = [p for p in preds if isinstance(p, dict)]
    return all(
        d.keys() == dicts[0].keys() and all(abs(d[k] - dicts[0][k]) <= 1e-5 for k in d)
        for d in dicts
    )


def _checks(
    results: dict[tuple[str, int], Summary], paced: list[PacedResult], failures: dict[str, str]
) -> list[tuple[str, str, str, str]]:
    """(label, value, target, verdict) for each target of the benchmark, on medians."""

    def missing(*keys: tuple[str, int]) -> str | None:
        for key, c in keys:
            if key in failures:
                return f"{key} failed"
            if (key, c) not in results:
                return f"{key} c={c} not run"
            if results[key, c].rps == 0:
                return f"{key} c={c}: 0 answered"
        return None

    def ratio(label: str, num: tuple[str, int], den: tuple[str, int], goal: float) -> tuple:
        why = missing(num, den)
        if why is not None:
            return (label, "-", f">= {goal:g}x", f"NOT measured ({why})")
        value = results[num].rps / results[den].rps
        errs = results[num].errors + results[den].errors
        note = f" ({errs} errors)" if errs else ""
        verdict = ("met" if value >= goal else "NOT met") + note
        return (label, f"{value:.2f}x", f">= {goal:g}x", verdict)

    out = [ratio("jaxtx (batching on) / MLflow req/s, concurrency 8", (_ON, 8), (_MLFLOW, 8), 30.0)]
    label = "jaxtx (batching on) p99 at 50% of its c=8 req/s (paced)"
    if not paced or any(len(p.from_schedule) < 2 for p in paced):
        why = missing((_ON, 8)) or "paced phase not run"
        out.append((label, "-", "<= 5 ms", f"NOT measured ({why})"))
    else:
        p99 = statistics.median(p.pct(99) for p in paced)
        errs = sum(p.result.errors for p in paced)
        note = f" ({errs} errors)" if errs else ""
        out.append((label, f"{p99:.2f} ms", "<= 5 ms", ("met" if p99 <= 5.0 else "NOT met") + note))
    out.append(
        ratio(
            "jaxtx batching on / off req/s, concurrency 32, MLP",
            (_MLP_ON, 32),
            (_MLP_OFF, 32),
            3.0,
        )
    )
    # On the logistic model a call costs less than the HTTP and JSON work around
    # it, which batching cannot share: shown, with no target.
    label, value, _, verdict = ratio(
        "  the same, logistic model (calls cost next to nothing)", (_ON, 32), (_OFF, 32), 3.0
    )
    out.append((label, value, "-", "" if value != "-" else verdict))
    out.append(
        ratio("jaxtx gRPC / HTTP req/s (batching on), concurrency 8", (_GRPC, 8), (_ON, 8), 1.0)
    )
    if missing((_GRPC, 8), (_ON, 8)) is None:
        cpu = [statistics.median(r.server_us for r in results[key, 8].runs) for key in (_GRPC, _ON)]
        out.append(
            (
                "  server CPU us/request at c=8, gRPC vs HTTP",
                f"{cpu[0]:.0f} vs {cpu[1]:.0f}",
                "-",
                "",
            )
        )
    for c in (8, 32):
        out.append(
            ratio(
                f"jaxtx v2 / v1 JSON req/s (batching on), concurrency {c}", (_V2, c), (_ON, c), 0.9
            )
        )
    return out


def _result_json(r: Result) -> dict[str, object]:
    return {
        "target": r.target,
        "concurrency": r.concurrency,
        "ok": r.ok,
        "errors": r.errors,
        "seconds": r.seconds,
        "rps": r.rps,
        "p50_ms": r.pct(50),
        "p99_ms": r.pct(99),
        "batch_ratio": r.batch_ratio,
        "client": r.client,
        "server_cpu_us_per_request": r.server_us,
        "client_cpu_us_per_request": r.client_us,
        "server_errors": r.server_errors,
    }


def _table_row(r: Result) -> str:
    ratio = "-" if r.batch_ratio is None else f"{r.batch_ratio:.2f}"
    return (
        f"{r.target:<26} {r.concurrency:>4} {r.rps:>8.0f} {r.pct(50):>8.2f} {r.pct(99):>8.2f} "
        f"{r.errors:>6} {ratio:>9} srv {r.server_us:>5.0f} us/req  cli {r.client_us:>5.0f} us/req"
        f"  {r.client}"
    )


if __name__ == "__main__":
    sys.exit(main())
