"""Quiet, offline-safe defaults for the embedded services (set only when unset)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_DEFAULTS = {
    # No phoning home: the machine may be offline, and a failed attempt costs time.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    # A component's failure is reported by jaxtx; Prefect need not print it twice in full.
    "PREFECT_LOGGING_LEVEL": "WARNING",
}

#: Variables by which a user points Prefect at a configuration of their own.
_USER_PREFECT = ("PREFECT_HOME", "PREFECT_PROFILES_PATH", "PREFECT_PROFILE")


def apply_defaults() -> None:
    for k, v in _DEFAULTS.items():
        os.environ.setdefault(k, v)


def use_working_folder_prefect_home(home: str | os.PathLike[str]) -> bool:
    """Keep Prefect's client state (profiles, caches) in ``<home>/prefect``,
    beside the local server's, instead of ``~/.prefect``.

    Sets ``PREFECT_HOME`` for this process (and the processes it starts) unless
    the user configured Prefect: ``PREFECT_HOME``, ``PREFECT_PROFILES_PATH`` or
    ``PREFECT_PROFILE`` set, or a ``~/.prefect/profiles.toml`` (made by
    ``prefect profile`` / ``prefect config set``) whose active profile may name
    a server. Prefect reads it at import, so once Prefect is imported this does
    nothing.

    Args:
      home: the jaxtx working folder.

    Returns:
      Whether ``PREFECT_HOME`` was set.
    """
    if "prefect" in sys.modules or any(os.environ.get(k) for k in _USER_PREFECT):
        return False
    if (Path.home() / ".prefect" / "profiles.toml").exists():
        return False
    target = Path(home).resolve() / "prefect"
    target.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(target)
    return True
