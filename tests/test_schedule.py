"""``jaxtx schedule``: a pipeline served as a scheduled Prefect deployment, tracked in MLflow."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from jaxtx.pipelines._schedule import FLOW_NAME, scheduled_pipeline
from jaxtx.pipelines.cli import main

PIPELINE_FILE = """
import json

from jaxtx import Artifact, Output, Pipeline, component


class Numbers(Artifact):
    \"\"\"A JSON list of numbers.\"\"\"


@component
def Make(nums: Output[Numbers], *, n: int = 3) -> dict[str, float]:
    (nums.path / "nums.json").write_text(json.dumps(list(range(n))))
    return {"made": n}


@component
def Scale(nums: Numbers, scaled: Output[Numbers], *, factor: float = 2.0) -> None:
    if factor < 0:
        raise ValueError(f"factor must not be negative, got {factor}")
    xs = nums.read_json("nums.json")
    (scaled.path / "nums.json").write_text(json.dumps([x * factor for x in xs]))


def create_pipeline(n: int = 3):
    with Pipeline("sched-test") as p:
        Scale(nums=Make(n=n))
    return p
"""

STARTUP_TIMEOUT_S = 90
RUNS_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """The test process's environment with its own Prefect home and no Prefect API URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_UI_ENABLED="false",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 20) -> None:
    """SIGTERM the process, then SIGKILL its whole session (it leads one) if anything is left."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """A real Prefect server on a free port with its own home; yields its API URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "prefect-server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            env=_child_env(tmp_path / "prefect-server-home"),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"prefect server not healthy after {STARTUP_TIMEOUT_S} s:\n{_tail(log)}"
                )
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


def _flow_runs(url: str, deployment: str) -> tuple[object, list[object]]:
    """The deployment and its flow runs, read from the server at ``url``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: url}),
        get_client(sync_client=True) as client,
    ):
        dep = client.read_deployment_by_name(f"{FLOW_NAME}/{deployment}")
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])),
            # explicit: this server rejects a null sort
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return dep, runs


@pytest.mark.slow
def test_scheduled_runs_show_in_prefect_and_mlflow(tmp_path: Path, prefect_server: str) -> None:
    pipeline_file = tmp_path / "sched_pipeline.py"
    pipeline_file.write_text(PIPELINE_FILE)
    home = tmp_path / "home"
    jaxtx = Path(sys.executable).parent / "jaxtx"
    log = tmp_path / "schedule.log"
    env = _child_env(
        tmp_path / "prefect-client-home",
        PREFECT_API_URL=prefect_server,
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        JAXTX_HOME=str(home),
    )
    cmd = [str(jaxtx), "schedule", str(pipeline_file), "--interval", "3"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "-p", "n=4", "-p", "Scale.factor=3"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    completed: list[object] = []
    try:
        deadline = time.monotonic() + RUNS_TIMEOUT_S
        while len(completed) < 2:
            if proc.poll() is not None:
                pytest.fail(f"jaxtx schedule exited with {proc.returncode}:\n{_tail(log)}")
            if "Can't evaluate bulk DML statement" in _tail(tmp_path / "prefect-server.log", 10**6):
                import sqlalchemy

                pytest.fail(
                    "the Prefect server cannot create scheduled flow runs with SQLAlchemy "
                    f"{sqlalchemy.__version__} (prefect 3.8.8 needs sqlalchemy<2.1):\n"
                    + _tail(tmp_path / "prefect-server.log")
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"fewer than 2 completed scheduled runs after {RUNS_TIMEOUT_S} s.\n"
                    f"jaxtx schedule:\n{_tail(log)}\n"
                    f"prefect server:\n{_tail(tmp_path / 'prefect-server.log')}"
                )
            time.sleep(2)
            try:
                dep, runs = _flow_runs(prefect_server, "sched-test-schedule")
            except Exception:  # not registered yet
                continue
            failed = [r for r in runs if r.state and r.state.is_failed()]
            assert not failed, f"a scheduled run failed: {failed[0].state.message}\n{_tail(log)}"
            completed = [r for r in runs if r.state and r.state.is_completed()]
    finally:
        _stop(proc)
    assert "stopped serving" in _tail(log)
    dep, _ = _flow_runs(prefect_server, "sched-test-schedule")
    assert dep.paused, "stopping jaxtx schedule should pause the deployment's schedule"

    # the deployment: its parameters and tags are what the Prefect UI shows
    assert dep.parameters == {
        "target": str(pipeline_file.resolve()),
        "params": {"n": 4, "Scale.factor": 3},
        "home": str(home.resolve()),
    }
    assert "jaxtx" in dep.tags and "sched-test" in (dep.description or "")
    assert dep.schedules and dep.schedules[0].schedule.interval.total_seconds() == 3

    # MLflow: one parent run per completed flow run, each with a nested run per component
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sched-test")
    assert exp is not None, f"no MLflow experiment 'sched-test' in {home}"
    all_runs = client.search_runs([exp.experiment_id])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    finished = [r for r in parents if r.info.status == "FINISHED"]
    assert len(finished) >= 2
    flow_run_names = {r.name for r in completed}
    assert flow_run_names & {r.info.run_name for r in finished}
    for parent in finished[:2]:
        children = [
            r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        ]
        assert sorted(r.data.tags["jaxtx.node"] for r in children) == ["Make", "Scale"]
        scale = next(r for r in children if r.data.tags["jaxtx.node"] == "Scale")
        assert scale.data.params["param.factor"] == "3"


def test_a_failing_pipeline_fails_the_flow_run(tmp_path: Path, home: Path) -> None:
    pipeline_file = tmp_path / "failing_pipeline.py"
    pipeline_file.write_text(PIPELINE_FILE)
    state = scheduled_pipeline(
        target=str(pipeline_file),
        params={"Scale.factor": -1},
        home=str(home),
        return_state=True,
    )
    assert state.is_failed()
    assert "factor must not be negative, got -1" in (state.message or "")


def test_schedule_usage_errors_start_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text(PIPELINE_FILE)
    monkeypatch.setenv("JAXTX_HOME", str(tmp_path / "home"))
    assert main(["schedule", str(pipeline_file), "--interval", "0"]) == 2
    assert "positive number of seconds" in capsys.readouterr().err
    assert main(["schedule", str(tmp_path / "missing.py"), "--interval", "5"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["schedule", str(pipeline_file)])  # neither --cron nor --interval
    assert exc.value.code == 2
    assert not (tmp_path / "home" / "prefect" / "server.json").exists()


def test_schedule_names_an_explicit_server_that_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text(PIPELINE_FILE)
    url = f"http://127.0.0.1:{_free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        assert main(["schedule", str(pipeline_file), "--interval", "60"]) == 2
    err = capsys.readouterr().err
    assert f"no Prefect server answers at PREFECT_API_URL={url}" in err
