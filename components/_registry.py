"""The MLflow model registry as the Evaluator and the Pusher use it.

Every registry call holds :data:`jaxtx.core.tracking.MLFLOW_LOCK` (the client
returned here takes it around each method call).
"""

from __future__ import annotations

import functools
from typing import Any

from jaxtx.core.settings import Settings
from jaxtx.core.tracking import MLFLOW_LOCK, mlflow_client

from ._artifacts import Model, load_artifact

__all__ = ["registry_client", "resolve_baseline"]


class _LockedClient:
    """An ``MlflowClient`` whose every method call holds ``MLFLOW_LOCK``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with MLFLOW_LOCK:
                return attr(*args, **kwargs)

        return locked


def registry_client(tracking_uri: str | None) -> tuple[Any, str]:
    """A registry client for ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI`` or the home's store).

    Args:
        tracking_uri: The run's tracking URI, or ``None`` for the default.

    Returns:
        ``(client, uri)``: the client takes ``MLFLOW_LOCK`` around each call.
    """
    uri = Settings.resolve(tracking_uri=tracking_uri).tracking_uri
    return _LockedClient(mlflow_client(uri)), uri


def resolve_baseline(
    registered_model_name: str | None, alias: str, tracking_uri: str | None
) -> tuple[Model | None, str]:
    """The Model artifact behind ``models:/<name>@<alias>``, or ``(None, why)``.

    Args:
        registered_model_name: The registry name (``None``: no baseline).
        alias: The alias that marks the baseline, e.g. ``champion``.
        tracking_uri: The registry's URI (``None``: the default).

    Returns:
        ``(model, why)``; ``model`` is ``None`` when there is no baseline yet.
    """
    if not registered_model_name:
        return None, "no registered model name given"
    client, _ = registry_client(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(registered_model_name, alias)
    except Exception:
        return None, f"no {registered_model_name}@{alias} in the registry yet (first model)"
    art_uri = mv.tags.get("jaxtx.model_uri")
    if not art_uri:
        return None, f"{registered_model_name} version {mv.version} has no jaxtx.model_uri tag"
    return load_artifact(art_uri, Model), f"{registered_model_name}@{alias} = version {mv.version}"
