"""Quiet, offline-safe defaults for the embedded services (set only when unset)."""

from __future__ import annotations

import os

_DEFAULTS = {
    # No phoning home: the machine may be offline, and a failed attempt costs time.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    # A component's failure is reported by jaxtx; Prefect need not print it twice in full.
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def apply_defaults() -> None:
    for k, v in _DEFAULTS.items():
        os.environ.setdefault(k, v)
