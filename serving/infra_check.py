"""Serve a model in a real server process and check its answers (InfraValidator's library).

:func:`check_served_model` starts ``python -m jaxtx.serving`` on the model (a
subprocess on 127.0.0.1, a free port, no Docker), waits for readiness, sends
rows through the TF Serving REST API and compares the answers with in-process
predictions. Usable without any pipeline machinery.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_served_model", "json_rows"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def json_rows(table: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a pyarrow table as JSON objects of ``names`` (NaN becomes ``None``)."""
    cols = [table[n].to_pylist() for n in names]
    rows = []
    for i in range(table.num_rows):
        values = (c[i] for c in cols)
        rows.append(
            {
                n: (None if isinstance(v, float) and math.isnan(v) else v)
                for n, v in zip(names, values, strict=True)
            }
        )
    return rows


def check_served_model(
    model_dir: str | os.PathLike[str],
    rows: list[dict[str, Any]],
    expected: Mapping[str, np.ndarray],
    *,
    name: str = "model",
    log_path: str | os.PathLike[str],
    timeout_s: float = 120.0,
    rtol: float = 1e-5,
) -> list[dict[str, Any]]:
    """Serve ``model_dir`` in a subprocess and check its predictions over REST.

    Args:
      model_dir: an exported model (``jaxtx.model/1``).
      rows: raw input rows to send in one ``instances`` request.
      expected: in-process predictions for ``rows`` (``{output: array}``).
      name: the model name to serve under.
      log_path: where the server's output goes.
      timeout_s: how long the server may take to become ready.
      rtol: relative tolerance between served and in-process predictions.

    Returns:
      The checks, each ``{"check", "passed", "detail"}``: ``ready``, then
      ``predict`` and ``answers`` when the server came up.
    """
    base = Path(tempfile.mkdtemp(prefix="jaxtx-infra-"))
    shutil.copytree(model_dir, base / name / "1")
    port = _free_port()
    cmd = [sys.executable, "-m", "jaxtx.serving", "--model-base-path", str(base)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        return _run_checks(proc, f"http://127.0.0.1:{port}", name, rows, expected, timeout_s, rtol)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _run_checks(
    proc: subprocess.Popen[Any],
    url: str,
    name: str,
    rows: list[dict[str, Any]],
    expected: Mapping[str, np.ndarray],
    timeout_s: float,
    rtol: float,
) -> list[dict[str, Any]]:
    import httpx

    with httpx.Client(timeout=10) as http:
        ready, ready_s = _wait_ready(proc, http, url, timeout_s)
        detail = (
            f"ready after {ready_s:.1f} s"
            if ready
            else f"not ready within {timeout_s} s (exit code {proc.poll()}); see server.log"
        )
        checks = [{"check": "ready", "passed": ready, "detail": detail}]
        if not ready:
            return checks
        t0 = time.perf_counter()
        r = http.post(f"{url}/v1/models/{name}:predict", json={"instances": rows})
        latency_ms = (time.perf_counter() - t0) * 1000
        ok = r.status_code == 200
        detail = f"HTTP {r.status_code} in {latency_ms:.1f} ms" + (
            "" if ok else f": {r.text[:500]}"
        )
        checks.append({"check": "predict", "passed": ok, "detail": detail})
        if ok:
            checks.append(_compare(r.json()["predictions"], expected, rtol))
        return checks


def _wait_ready(
    proc: subprocess.Popen[Any], http: Any, url: str, timeout_s: float
) -> tuple[bool, float]:
    """Poll readiness until ready, the process exits, or ``timeout_s`` passes."""
    import httpx

    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            break
        try:
            if http.get(f"{url}/v2/health/ready").status_code == 200:
                return True, time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # bounded readiness poll, not synchronization
    return False, time.perf_counter() - start


def _compare(
    predictions: list[Any], expected: Mapping[str, np.ndarray], rtol: float
) -> dict[str, Any]:
    keys = list(expected)
    worst = 0.0
    for i, row in enumerate(predictions):
        values = row if isinstance(row, dict) else {keys[0]: row}
        for k in keys:
            got = np.asarray(values[k], dtype=np.float64)
            want = np.asarray(expected[k][i], dtype=np.float64)
            if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=1e-6):
                return {
                    "check": "answers",
                    "passed": False,
                    "detail": f"row {i} output {k!r}: served {got.tolist()} "
                    f"!= in-process {want.tolist()}",
                }
            worst = max(worst, float(np.max(np.abs(got - want))) if got.size else 0.0)
    return {
        "check": "answers",
        "passed": True,
        "detail": f"{len(predictions)} rows equal in-process predictions (max abs diff {worst:.2e})",
    }
