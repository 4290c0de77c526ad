"""The local Prefect server of a working folder: started on first use, reused after.

Without ``PREFECT_API_URL``, a pipeline run (and ``jaxtx schedule``) talks to
the Prefect server of its working folder ``<home>``:

* its state lives in ``<home>/prefect/`` (``PREFECT_HOME`` of the server: its
  SQLite database, its log ``server.log``) and ``<home>/prefect/server.json``
  records its pid, port and URL;
* the first run starts it *detached* (its own session, so it outlives that run
  by design and later runs reuse it: no server start per run), under a lock
  (``server.lock``) so concurrent runs start one;
* a recorded server that is gone (crashed, killed, machine restarted) or does
  not answer its health check is replaced (the unhealthy one is stopped first);
* ``jaxtx server status`` says whether it runs and where its UI is;
  ``jaxtx server stop`` stops it (with every process of its session).

An explicit ``PREFECT_API_URL`` always wins: then no local server is started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jaxtx.core.settings import Settings

from ._env import use_working_folder_prefect_home

__all__ = [
    "ServerInfo",
    "ensure_server",
    "prefect_api",
    "recorded_server",
    "server_status",
    "stop_server",
    "wait_healthy",
]

#: Seconds a starting server may take to answer (a loaded 2-core machine is slow).
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ServerInfo:
    """A running local Prefect server."""

    pid: int
    port: int
    home: Path

    @property
    def url(self) -> str:
        """The UI's address."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The value of ``PREFECT_API_URL`` for it."""
        return f"{self.url}/api"


def _state_dir(home: Path) -> Path:
    return Path(home) / "prefect"


def _read(home: Path) -> ServerInfo | None:
    path = _state_dir(home) / "server.json"
    try:
        doc = json.loads(path.read_text())
        return ServerInfo(pid=int(doc["pid"]), port=int(doc["port"]), home=Path(home))
    except (OSError, ValueError, KeyError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _healthy(info: ServerInfo, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{info.api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def recorded_server(home: str | os.PathLike[str]) -> ServerInfo | None:
    """The server recorded for the working folder (running or not)."""
    return _read(Path(home).resolve())


def server_status(home: str | os.PathLike[str]) -> ServerInfo | None:
    """The working folder's server if it runs and answers, else ``None``."""
    info = _read(Path(home))
    if info is None or not _alive(info.pid) or not _healthy(info):
        return None
    return info


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    import fcntl

    d = _state_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(home: Path, port: int) -> int:
    """Start the server detached (own session); its pid."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")  # not imported: its settings are read at import
    assert spec is not None and spec.origin is not None
    d = _state_dir(home)
    env = {
        **os.environ,
        "PREFECT_HOME": str(d),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(spec.origin).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--lifespan",
        "on",
    ]
    with open(d / "server.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(d),
        )
    return proc.pid


def ensure_server(home: str | os.PathLike[str], *, wait: bool = True) -> ServerInfo:
    """The working folder's server, started (detached) if it is not running.

    Args:
      home: the working folder (state in ``<home>/prefect/``).
      wait: wait until it answers (else return once started; see
        :func:`wait_healthy`).

    Raises:
      RuntimeError: it did not answer within :data:`START_TIMEOUT_S`; the
        message names its log.
    """
    h = Path(home).resolve()
    info = server_status(h)
    if info is not None:
        return info
    with _locked(h):
        info = server_status(h)  # another process may have started it meanwhile
        if info is not None:
            return info
        recorded = _read(h)
        if recorded is not None and _alive(recorded.pid):
            with contextlib.suppress(RuntimeError):  # still starting: give it time
                wait_healthy(recorded, timeout=30.0)
                return recorded
        _stop_recorded(h)
        port = _free_port()
        pid = _spawn(h, port)
        info = ServerInfo(pid=pid, port=port, home=h)
        (_state_dir(h) / "server.json").write_text(
            json.dumps({"pid": pid, "port": port, "started": time.time()})
        )
        if wait:
            wait_healthy(info)
        return info


def wait_healthy(info: ServerInfo, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until a started server answers its health check.

    Raises:
      RuntimeError: it exited or did not answer in time (it is then stopped);
        the message names its log.
    """
    deadline = time.monotonic() + timeout
    while not _healthy(info, timeout=1.0):
        if not _alive(info.pid) or time.monotonic() > deadline:
            _kill_session(info.pid)
            log = _state_dir(info.home) / "server.log"
            raise RuntimeError(
                f"the local Prefect server did not start (see {log}); or set "
                "PREFECT_API_URL to use a running Prefect server"
            )
        time.sleep(0.2)


def _kill_session(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the server's session (it and its children), SIGKILL what remains."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if not _alive(pid):
            return


def _stop_recorded(home: Path) -> bool:
    info = _read(home)
    if info is None:
        return False
    running = _alive(info.pid)
    if running:
        _kill_session(info.pid)
    with contextlib.suppress(FileNotFoundError):
        (_state_dir(home) / "server.json").unlink()
    return running


def stop_server(home: str | os.PathLike[str]) -> bool:
    """Stop the working folder's server; ``False`` if none was running."""
    h = Path(home).resolve()
    with _locked(h):
        return _stop_recorded(h)


@contextlib.contextmanager
def prefect_api(settings: Settings) -> Iterator[str | None]:
    """Within the block, Prefect talks to ``PREFECT_API_URL`` when set (in the
    environment or the active Prefect profile), else to
    the working folder's local server (started if needed); yields the UI URL.
    Prefect's client state goes to the working folder too (see
    :func:`use_working_folder_prefect_home`)."""
    use_working_folder_prefect_home(settings.home)
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    explicit = get_current_settings().api.url  # the environment or the active profile
    if explicit:
        yield explicit.removesuffix("/").removesuffix("/api")
        return
    info = ensure_server(settings.home)
    with temporary_settings(updates={PREFECT_API_URL: info.api_url}):
        yield info.url
