"""Who owns an MLflow run, and closing the runs of owners that are gone.

Every run jaxtx starts carries its owner as tags: ``jaxtx.owner.host``,
``jaxtx.owner.pid`` and ``jaxtx.owner.started`` (the process's start time, ms
since the epoch, so a later process that reuses the pid is not mistaken for
the owner). :func:`reap_dead_runs` marks RUNNING runs of this host whose owner
process is gone as KILLED, with a note (``jaxtx.killed``), together with their
nested runs; a run killed with ``kill -9`` is closed by the next run or the
next ``jaxtx`` command that opens the store.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from jaxtx.core.tracking import MLFLOW_LOCK

__all__ = ["owner_tags", "reap_dead_runs"]

_log = logging.getLogger("jaxtx.runner")


def _started_ms(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def owner_tags() -> dict[str, str]:
    """The MLflow tags naming this process as a run's owner."""
    pid = os.getpid()
    return {
        "jaxtx.owner.host": socket.gethostname(),
        "jaxtx.owner.pid": str(pid),
        "jaxtx.owner.started": str(_started_ms(pid) or 0),
    }


def _alive(tags: dict[str, str]) -> bool:
    try:
        pid, started = int(tags["jaxtx.owner.pid"]), int(tags["jaxtx.owner.started"])
    except (KeyError, ValueError):
        return True  # no owner recorded: not ours to judge
    now = _started_ms(pid)
    return now is not None and abs(now - started) < 1000


def reap_dead_runs(client: Any) -> list[str]:
    """Mark RUNNING runs of this host whose owner process is gone as KILLED.

    Args:
      client: an ``mlflow.MlflowClient`` on the store.

    Returns:
      The ids of the runs marked KILLED (nested runs included).
    """
    host = socket.gethostname()
    killed: list[str] = []
    with MLFLOW_LOCK:
        exps = [e.experiment_id for e in client.search_experiments()]
        if not exps:
            return killed
        runs = client.search_runs(
            exps,
            filter_string=f"attributes.status = 'RUNNING' and tags.`jaxtx.owner.host` = '{host}'",
            max_results=1000,
        )
        for run in runs:
            if _alive(run.data.tags):
                continue
            pid = run.data.tags.get("jaxtx.owner.pid")
            note = f"owner process {pid} on {host} is gone (killed); closed by pid {os.getpid()}"
            client.set_tag(run.info.run_id, "jaxtx.killed", note)
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
            _log.warning("MLflow run %s (%s): %s", run.info.run_id, run.info.run_name, note)
    return killed
