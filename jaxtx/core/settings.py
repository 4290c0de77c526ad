"""Settings: where a run keeps its state and which services it talks to.

One value, passed explicitly. Environment variables are read in one place,
:meth:`Settings.resolve`, and only as defaults for what the caller leaves
unset; nothing in jaxtx sets them.

Resolution order for each field: the explicit argument, then the environment
variable, then the embedded default.

=================  =======================  ====================================
field              environment variable     embedded default
=================  =======================  ====================================
``home``           ``JAXTX_HOME``           ``./.jaxtx`` (absolute)
``tracking_uri``   ``MLFLOW_TRACKING_URI``  ``sqlite:///<home>/mlflow.db``
``artifact_root``  ``JAXTX_ARTIFACT_ROOT``  ``<home>/artifacts``
=================  =======================  ====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["Settings", "default_home", "default_tracking_uri"]


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """The working folder: ``$JAXTX_HOME`` or ``./.jaxtx``, made absolute."""
    env = os.environ if environ is None else environ
    return Path(env.get("JAXTX_HOME") or Path.cwd() / ".jaxtx").resolve()


def default_tracking_uri(home: str | os.PathLike[str]) -> str:
    """``sqlite:///<home>/mlflow.db``: the embedded MLflow store, no server needed."""
    return f"sqlite:///{(Path(home) / 'mlflow.db').as_posix()}"


@dataclass(frozen=True)
class Settings:
    """Where a run keeps its state and which services it uses.

    Build one with :meth:`resolve`; derive variants with :meth:`replace`.

    Attributes:
      home: the working folder (artifacts, the embedded MLflow store, the
        serving folder and local service state live under it by default).
      tracking_uri: the MLflow tracking URI.
      artifact_root: the artifact store's root: a local path or a
        ``pyarrow.fs`` URI such as ``s3://bucket/prefix``.
    """

    home: Path
    tracking_uri: str
    artifact_root: str

    @classmethod
    def resolve(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        tracking_uri: str | None = None,
        artifact_root: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Fill what is not given from the environment, then embedded defaults.

        Args:
          home: the working folder; default ``$JAXTX_HOME`` or ``./.jaxtx``.
          tracking_uri: default ``$MLFLOW_TRACKING_URI`` or the SQLite store
            in ``home``.
          artifact_root: default ``$JAXTX_ARTIFACT_ROOT`` or ``<home>/artifacts``.
          environ: the environment to read (default ``os.environ``); tests
            pass a dict.
        """
        env = os.environ if environ is None else environ
        h = Path(home).resolve() if home is not None else default_home(env)
        uri = tracking_uri or env.get("MLFLOW_TRACKING_URI") or default_tracking_uri(h)
        root = artifact_root if artifact_root is not None else env.get("JAXTX_ARTIFACT_ROOT")
        if root is None:
            root_s = str(h / "artifacts")
        elif "://" in str(root):
            root_s = str(root)
        else:
            root_s = str(Path(root).resolve())
        return cls(home=h, tracking_uri=uri, artifact_root=root_s)

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (``home`` does not re-derive the others)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Where a new MLflow experiment keeps run artifacts: ``<home>/mlartifacts``
        for the embedded SQLite store, ``None`` (the server's choice) otherwise."""
        if self.tracking_uri.startswith("sqlite:"):
            return (self.home / "mlartifacts").resolve().as_uri()
        return None
