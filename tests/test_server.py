"""The working folder's local Prefect server: started once, reused, stopped, replaced after a crash.

These tests manage servers of their own home (not the test session's server).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from jaxtx.pipelines._server import ensure_server, recorded_server, server_status, stop_server
from jaxtx.pipelines.cli import main

pytestmark = pytest.mark.slow


def _session(pid: int) -> list[psutil.Process]:
    """Live processes of the session ``pid`` leads."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == pid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return out


def test_server_is_reused_stopped_and_replaced_after_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert server_status(home) is None
    first = ensure_server(home)
    try:
        assert (home / "prefect" / "server.json").exists()
        assert (home / "prefect" / "prefect.db").exists()  # its state is inside the home
        assert ensure_server(home) == first  # reused, not started again
        assert main(["server", "status", "--home", str(home)]) == 0
        assert first.url in capsys.readouterr().out

        os.killpg(first.pid, signal.SIGKILL)  # a crash: the whole session dies
        psutil.wait_procs([psutil.Process(p.pid) for p in _session(first.pid)], timeout=10)
        assert server_status(home) is None
        assert main(["server", "status", "--home", str(home)]) == 1
    finally:
        stop_server(home)
    assert recorded_server(home) is None
    assert not _session(first.pid), "processes of the stopped server remain"
    assert main(["server", "stop", "--home", str(home)]) == 0
    assert "no Prefect server running" in capsys.readouterr().out
