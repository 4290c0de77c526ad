"""One lock and one client factory for every MLflow call jaxtx makes.

The embedded SQLite store does not like concurrent writers, and components of
one pipeline run log from several threads: every MLflow call in jaxtx (run
tracking, model logging, the registry) holds :data:`MLFLOW_LOCK`. MLflow is
imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["MLFLOW_LOCK", "mlflow_client"]

#: Held around every MLflow call (re-entrant: helpers may nest).
MLFLOW_LOCK = threading.RLock()


def mlflow_client(tracking_uri: str, registry_uri: str | None = None) -> Any:
    """An ``mlflow.MlflowClient`` for explicit URIs (never the process-global one).

    Args:
      tracking_uri: the MLflow tracking URI.
      registry_uri: the model registry URI; default the tracking URI.
    """
    from mlflow import MlflowClient

    with MLFLOW_LOCK:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
