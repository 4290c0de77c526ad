"""Real services for tests, started on 127.0.0.1 and always stopped.

* :func:`postgres` — a throwaway PostgreSQL cluster (``initdb`` in a temp
  folder, run as the ``postgres`` user when the tests run as root, because
  PostgreSQL refuses to run as root);
* :func:`mlflow_server` — ``mlflow server`` on a database URI with proxied
  artifacts (one worker, no job runner);
* :func:`s3_server` — moto's standalone S3 server, a stand-in for S3/MinIO.

Every helper is a context manager: the processes it starts are stopped and
their folders removed on exit, also when the body or the start-up fails.
Readiness is polled with a deadline; nothing sleeps a fixed time.

When a service cannot be had (no PostgreSQL binaries, no ``postgres`` user),
:func:`unavailable` skips the test locally and FAILS it under CI (``CI`` set),
so a CI machine that lost PostgreSQL does not pass silently.
``.ci/services.sh`` installs PostgreSQL on a fresh Debian machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_MAJOR = "15"
DB_USER = "jaxtx"


def unavailable(reason: str) -> None:
    """Skip (locally) or fail (under CI) a test whose service cannot be started."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping; run .ci/services.sh)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``ready()`` until it is true; fail naming ``what`` after ``timeout`` seconds
    or as soon as ``proc`` exits (with the tail of ``log``)."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        exited = proc is not None and proc.poll() is not None
        if exited or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            state = (
                f"exited with code {proc.returncode}" if exited else f"not ready in {timeout:.0f} s"
            )
            raise RuntimeError(f"{what} {state}; its log ends:\n{tail}")
        time.sleep(0.2)  # polling interval, not a synchronization


def _stop(proc: subprocess.Popen[bytes], sig: int, *, group: bool, timeout: float = 30) -> None:
    """Send ``sig`` (to the process group when ``group``), then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    send = (lambda s: os.killpg(proc.pid, s)) if group else proc.send_signal
    with contextlib.suppress(ProcessLookupError):
        send(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            send(signal.SIGKILL)
        proc.wait(10)
    if group:  # children of the group leader (server workers) that outlived it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def patient_prefect(seconds: int = 180) -> Iterator[None]:
    """Give Prefect's ephemeral API server ``seconds`` to start (its default is 20 s).

    The first flow run in a process starts that server (a uvicorn subprocess that
    creates its SQLite database); on a loaded CI machine, with tests running in
    parallel, this regularly took longer than 20 s and the run failed with "Timed out
    while attempting to connect to ephemeral Prefect API server".
    """
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as TIMEOUT
    from prefect.settings import temporary_settings

    with temporary_settings(updates={TIMEOUT: seconds}):
        yield


# -- PostgreSQL -------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The folder of ``initdb``/``postgres``: ``$JAXTX_PG_BINDIR``, Debian's
    ``/usr/lib/postgresql/15/bin``, another Debian version, or ``PATH``."""
    candidates = [os.environ.get("JAXTX_PG_BINDIR", "")]
    candidates.append(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server."""

    port: int
    version: str
    bindir: Path

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URI (driver psycopg2) for ``database``."""
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def query(self, database: str, sql: str) -> list[tuple[object, ...]]:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


def _run_as() -> dict[str, int]:
    """Popen arguments that drop root to the ``postgres`` user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """Start a throwaway PostgreSQL cluster on a free port of 127.0.0.1 (trust auth)."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL is not installed (no initdb/postgres in /usr/lib/postgresql/*/bin or "
            "on PATH); install it with: apt-get update && apt-get install -y postgresql"
        )
    assert bindir is not None
    as_user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="jaxtx-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if as_user:
            os.chown(base, as_user["user"], as_user["group"])
        data, log, port = base / "data", base / "postgres.log", free_port()
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, cwd=base, timeout=120, **as_user,
        )  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={base}",
                 "-c", "fsync=off", "-c", "full_page_writes=off"],
                stdout=out, stderr=subprocess.STDOUT, cwd=base, **as_user,
            )  # fmt: skip
        isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        wait_until(
            lambda: subprocess.run(isready, timeout=10).returncode == 0,
            what=f"PostgreSQL on 127.0.0.1:{port}",
            timeout=60,
            proc=proc,
            log=log,
        )
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        yield Postgres(port=port, version=version, bindir=bindir)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"initdb failed: {e.stderr.decode(errors='replace')}") from e
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT, group=False)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(base, ignore_errors=True)


# -- MLflow tracking server -------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``."""

    uri: str
    artifacts: Path
    version: str


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path) -> Iterator[MlflowServer]:
    """``mlflow server --serve-artifacts`` on ``backend_store_uri``, artifacts in ``workdir``.

    One uvicorn worker and no job runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``)
    keep it light. The server runs in its own process group, which is killed on exit.
    """
    import mlflow

    port = free_port()
    artifacts = workdir / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env,
            start_new_session=True,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _http_ok(f"{uri}/health"),
            what=f"mlflow server on {uri}",
            timeout=180,
            proc=proc,
            log=log,
        )
        yield MlflowServer(uri=uri, artifacts=artifacts, version=mlflow.__version__)
    finally:
        _stop(proc, signal.SIGTERM, group=True)


# -- S3 (moto) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server."""

    endpoint: str
    version: str


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's standalone S3 server on a free port of 127.0.0.1 (stand-in for S3/MinIO)."""
    try:
        import moto
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        unavailable(f"moto[server] is not installed ({e}); pip install -e '.[test]'")
    # werkzeug logs every request at INFO (it sets that level itself when unset).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _http_ok(f"{endpoint}/moto-api/"), what=f"moto on {endpoint}", timeout=30
        )
        yield S3Server(endpoint=endpoint, version=moto.__version__)
    finally:
        server.stop()
