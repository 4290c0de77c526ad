"""Look at jaxtx in a real browser: headless Chromium screenshots of the MLflow
run and registry pages, the Prefect flow-run page and the HTML reports.

    python tools/screenshots.py [--out bench/out/screenshots] [--home DIR] [--rows 3000]

Installs Debian's ``chromium`` when it is absent (``apt-get install -y
chromium``; needs root), runs the demo into a temporary home (or reuses
``--home`` when it already holds a demo run), starts ``mlflow server`` (one
worker, no job runner) and a Prefect server on 127.0.0.1, takes the
screenshots and stops both servers. Prints the PNG paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WINDOW = "1400,1000"
TALL = "1400,2600"


def ensure_chromium() -> str:
    """The chromium executable, installed with apt-get when absent."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0:
        sys.exit("chromium is not installed: run 'sudo apt-get install -y chromium'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing chromium (apt-get install -y chromium) ...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env)
    found = shutil.which("chromium")
    if not found:
        sys.exit("apt-get installed no 'chromium' executable")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def server(argv: list[str], url: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    """Run ``argv`` in its own process group until the block ends; wait (at
    most 180 s) until ``url`` answers 200."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                sys.exit(f"{argv[0]} {' '.join(argv[1:3])} did not start; {log} ends:\n{tail}")
            time.sleep(0.5)  # polling a server that is starting
        yield
    finally:
        with_group = os.getpgid(proc.pid) if proc.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                proc.wait()


def screenshot(
    chromium: str, url: str, png: Path, *, wait_ms: int = 12_000, window: str = WINDOW
) -> Path:
    """A headless screenshot of ``url``; ``wait_ms`` of virtual time lets
    single-page apps fetch and render before the capture."""
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={png}",
            f"--window-size={window}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return png


def run_demo(home: Path, rows: int, env: dict[str, str]) -> None:
    """The demo pipeline into ``home`` (cached when it already ran there)."""
    argv = [str(BIN / "jaxtx"), "demo", "--home", str(home), "--rows", str(rows)]
    argv += ["--epochs", "3", "--no-serve"]
    print("running:", " ".join(argv), file=sys.stderr)
    subprocess.run(argv, check=True, env=env)


def _report(home: Path, node: str, output: str, name: str) -> Path:
    """The newest ``reports/<name>`` that node ``node`` wrote in ``home``."""
    found = []
    for art in (home / "artifacts").glob(f"*/{output}/*/artifact.json"):
        meta = json.loads(art.read_text())
        report = art.parent / "reports" / name
        if meta.get("producer", {}).get("node") == node and report.exists():
            found.append((meta.get("created", 0), report))
    if not found:
        sys.exit(f"no {node} {name} in {home}/artifacts")
    return max(found)[1]


def _prefect_flow_run(api: str) -> str:
    """The id of the newest flow run on the Prefect server at ``api``."""
    body = json.dumps({"sort": "START_TIME_DESC", "limit": 1}).encode()
    req = urllib.request.Request(
        f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        runs = json.loads(r.read())
    if not runs:
        sys.exit(f"the Prefect server at {api} has no flow runs")
    return str(runs[0]["id"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "screenshots"), help="PNG folder")
    p.add_argument("--home", help="jaxtx home to use (default: a new temporary folder)")
    p.add_argument("--rows", type=int, default=3000, help="demo rows per span")
    args = p.parse_args(argv)

    chromium = ensure_chromium()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(args.home or tempfile.mkdtemp(prefix="jaxtx-screens-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("JAXTX_HOME", "MLFLOW_TRACKING_URI")}
    env["PREFECT_HOME"] = str(home / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"

    prefect_port, mlflow_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    # The Prefect UI asks this URL for its API; it defaults to port 4200 whatever --port says.
    env["PREFECT_UI_API_URL"] = api
    prefect_argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    # Services stay on: the task-run recorder is one (without it the flow run shows no tasks).
    prefect_argv += ["--port", str(prefect_port), "--analytics-off"]
    mlflow_argv = [sys.executable, "-m", "mlflow", "server", "--workers", "1"]
    mlflow_argv += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"]
    mlflow_argv += ["--default-artifact-root", (home / "mlartifacts").as_uri()]
    mlflow_argv += ["--host", "127.0.0.1", "--port", str(mlflow_port)]

    shots: list[Path] = []
    with server(prefect_argv, f"{api}/health", home / "prefect-server.log", env):
        run_demo(home, args.rows, {**env, "PREFECT_API_URL": api})
        flow_run = _prefect_flow_run(api)
        shots.append(
            screenshot(
                chromium,
                f"http://127.0.0.1:{prefect_port}/runs/flow-run/{flow_run}",
                out / "prefect-flow-run.png",
                wait_ms=20_000,
            )
        )
        with server(
            mlflow_argv, f"http://127.0.0.1:{mlflow_port}/health", home / "mlflow.log", env
        ):
            from mlflow import MlflowClient

            client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
            exp = client.get_experiment_by_name("census-demo")
            parents = [
                r
                for r in client.search_runs(
                    [exp.experiment_id], order_by=["attributes.start_time DESC"]
                )
                if "mlflow.parentRunId" not in r.data.tags
            ]
            trainer = client.search_runs(
                [exp.experiment_id],
                "attributes.run_name = 'Trainer'",
                order_by=["attributes.start_time DESC"],
            )
            from jaxtx.pipelines._tracking import MLFLOW_UI_QUERY

            ui = f"http://127.0.0.1:{mlflow_port}/#"
            pages = {
                "mlflow-parent-run.png": f"{ui}/experiments/{exp.experiment_id}/runs/"
                f"{parents[0].info.run_id}",
                "mlflow-trainer-run.png": f"{ui}/experiments/{exp.experiment_id}/runs/"
                f"{trainer[0].info.run_id}",
                "mlflow-experiment.png": f"{ui}/experiments/{exp.experiment_id}",
                "mlflow-registry.png": f"{ui}/models/census",
            }
            for name, url in pages.items():
                url += "?" + MLFLOW_UI_QUERY
                shots.append(screenshot(chromium, url, out / name, wait_ms=20_000))
    reports = {
        "report-statistics.png": _report(home, "StatisticsGen", "statistics", "statistics.html"),
        "report-anomalies.png": _report(home, "ExampleValidator", "anomalies", "anomalies.html"),
        "report-evaluation.png": _report(home, "Evaluator", "evaluation", "evaluation.html"),
    }
    for name, html in reports.items():
        # Reports are long pages: a taller window shows the plots below the fold.
        shots.append(screenshot(chromium, html.as_uri(), out / name, wait_ms=2_000, window=TALL))
    for png in shots:
        print(png)
    print(f"home: {home}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
