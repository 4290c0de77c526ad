"""Shared fixtures. Every test gets its own jaxtx home (artifacts + MLflow SQLite store)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Prefect reads its settings at import: give the test session its own home and
# database, and keep it offline and quiet.
_PREFECT_HOME = tempfile.mkdtemp(prefix="jaxtx-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A loaded 2-core machine can take longer than the default 20 s to start the
# temporary API server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.pop("MLFLOW_TRACKING_URI", None)


_SERVER_HOME_VAR = "JAXTX_TEST_PREFECT_SERVER_HOME"
_SERVER_PID_VAR = "JAXTX_TEST_PREFECT_SERVER_PID"


def _owns_server() -> bool:
    """This process started the Prefect server named in the environment (an
    xdist worker inherits the variables of its controller, which starts none)."""
    return os.environ.get(_SERVER_PID_VAR) == str(os.getpid())


def pytest_configure(config: object) -> None:
    """ONE Prefect server per test process that runs tests (each xdist worker;
    the xdist controller runs none and starts none), started before test modules
    import Prefect (it reads PREFECT_API_URL at import). The ``_prefect_server``
    fixture waits for it and stops it at the end of the session."""
    inherited = os.environ.get(_SERVER_HOME_VAR)
    if os.environ.get("PREFECT_API_URL") and not inherited:
        return  # an explicit server wins
    if inherited and _owns_server():
        return  # configured already
    option = getattr(config, "option", None)
    if getattr(option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop("PREFECT_API_URL", None)  # the controller: workers start their own
        return
    from jaxtx.pipelines._server import ensure_server

    home = tempfile.mkdtemp(prefix="jaxtx-test-prefect-server-")
    info = ensure_server(home, wait=False)
    os.environ["PREFECT_API_URL"] = info.api_url
    os.environ[_SERVER_HOME_VAR] = home
    os.environ[_SERVER_PID_VAR] = str(os.getpid())


# absl (imported by optax/orbax) keeps a handler on the sys.stderr of import time,
# which under pytest is a capture buffer. Prefect's logging.config.dictConfig
# closes all existing handlers, and absl's close() closes that stream unless it
# is the current sys.stderr: pytest's capture then fails with "I/O operation on
# closed file". Point absl at the real stderr, which it never closes.
import absl.logging  # noqa: E402
import pytest  # noqa: E402

absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh jaxtx home: ``<tmp>/home`` with artifacts and an SQLite MLflow store."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("JAXTX_HOME", str(h))
    return h


@pytest.fixture
def store(home: Path):
    from jaxtx import ArtifactStore

    return ArtifactStore(home / "artifacts")


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri():
    """Tests that call mlflow.set_tracking_uri (which also sets MLFLOW_TRACKING_URI)
    must not redirect later tests' pipelines to their store."""
    yield
    import mlflow

    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session", autouse=True)
def _prefect_server():
    """Wait for this process's Prefect server; stop it (and its children) at the end."""
    server_home = os.environ.get(_SERVER_HOME_VAR)
    if not server_home or not _owns_server():
        yield None
        return
    from jaxtx.pipelines._server import recorded_server, stop_server, wait_healthy

    info = recorded_server(server_home)
    try:
        if info is not None:
            wait_healthy(info)
        yield info
    finally:
        stop_server(server_home)
