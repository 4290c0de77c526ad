"""InfraValidator: serve the candidate in a real server process and check its answers.

Starts ``python -m jaxtx.serving`` on the candidate (a subprocess on
127.0.0.1, a free port, no Docker), waits for readiness, sends eval examples
through the TF Serving REST API and compares the answers with in-process
predictions. Writes an InfraBlessing with every check.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._artifacts import Examples, InfraBlessing, Model, Output
from ._component import component

__all__ = ["InfraValidator"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _json_rows(table: Any, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    cols = {n: table[n].to_pylist() for n in names}
    for i in range(table.num_rows):
        row = {}
        for n in names:
            v = cols[n][i]
            if isinstance(v, float) and math.isnan(v):
                v = None
            row[n] = v
        rows.append(row)
    return rows


@component
def InfraValidator(
    model: Model,
    examples: Examples,
    infra_blessing: Output[InfraBlessing],
    *,
    split: str = "eval",
    num_examples: int = 64,
    timeout_s: float = 120.0,
    rtol: float = 1e-5,
) -> dict[str, float]:
    """Serve ``model`` in a subprocess and check predictions over REST.

    Args:
      model: the candidate.
      examples: raw examples (ExampleGen's output) to send.
      split: which split to take examples from.
      num_examples: how many rows to send (one request, row format).
      timeout_s: how long the server may take to become ready.
      rtol: relative tolerance between served and in-process predictions.
    """
    import httpx

    loaded = model.load()
    names = [s.name for s in loaded.signature.inputs]
    table = examples.read(split).slice(0, num_examples)
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"InfraValidator: examples {examples.uri} lack the model's inputs {missing}"
        )
    rows = _json_rows(table, names)
    expected = loaded.predict({n: [r[n] for r in rows] for n in names})

    checks: list[dict[str, Any]] = []
    base = Path(tempfile.mkdtemp(prefix="jaxtx-infra-"))
    name = str(model.properties.get("name", "model"))
    shutil.copytree(model.model_dir, base / name / "1")
    port = _free_port()
    log_path = infra_blessing.path / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "jaxtx.serving",
        "--model-base-path",
        str(base),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        ready = False
        with httpx.Client(timeout=10) as http:
            while time.perf_counter() - start < timeout_s:
                if proc.poll() is not None:
                    break
                try:
                    if http.get(f"{url}/v2/health/ready").status_code == 200:
                        ready = True
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            ready_s = time.perf_counter() - start
            checks.append(
                {
                    "check": "ready",
                    "passed": ready,
                    "detail": f"ready after {ready_s:.1f} s"
                    if ready
                    else f"not ready within {timeout_s} s (exit code {proc.poll()}); see server.log",
                }
            )
            if ready:
                t0 = time.perf_counter()
                r = http.post(f"{url}/v1/models/{name}:predict", json={"instances": rows})
                latency_ms = (time.perf_counter() - t0) * 1000
                ok = r.status_code == 200
                checks.append(
                    {
                        "check": "predict",
                        "passed": ok,
                        "detail": f"HTTP {r.status_code} in {latency_ms:.1f} ms"
                        + ("" if ok else f": {r.text[:500]}"),
                    }
                )
                if ok:
                    checks.append(_compare(r.json()["predictions"], expected, rtol))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    blessed = all(c["passed"] for c in checks)
    (infra_blessing.path / "infra_blessing.json").write_text(
        json.dumps({"blessed": blessed, "checks": checks}, indent=2)
    )
    infra_blessing.properties.update(blessed=blessed, num_examples=len(rows), model=model.uri)
    return {"blessed": float(blessed)}


def _compare(
    predictions: list[Any], expected: dict[str, np.ndarray], rtol: float
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
                    "detail": f"row {i} output {k!r}: served {got.tolist()} != in-process {want.tolist()}",
                }
            worst = max(worst, float(np.max(np.abs(got - want))) if got.size else 0.0)
    return {
        "check": "answers",
        "passed": True,
        "detail": f"{len(predictions)} rows equal in-process predictions (max abs diff {worst:.2e})",
    }
