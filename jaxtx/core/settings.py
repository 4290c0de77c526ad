"""Settings: where a run keeps its state and which services it talks to.

One value, passed explicitly. Environment variables and the settings file are
read in one place, :meth:`Settings.resolve`, and only as defaults for what the
caller leaves unset; nothing in jaxtx sets them. Moving a pipeline from a
laptop to a cluster changes these settings only (docs/laptop-to-cluster.md).

Resolution order for each field: the explicit argument, then the environment
variable, then the settings file ``jaxtx.toml``, then the embedded default.

===================  ========================  ===================  ==============================
field                environment variable      ``jaxtx.toml`` key   embedded default
===================  ========================  ===================  ==============================
``home``             ``JAXTX_HOME``            ``home``             ``./.jaxtx`` (absolute)
``tracking_uri``     ``MLFLOW_TRACKING_URI``   ``tracking_uri``     ``sqlite:///<home>/mlflow.db``
``artifact_root``    ``JAXTX_ARTIFACT_ROOT``   ``artifact_root``    ``<home>/artifacts``
``beam_options``     ``JAXTX_BEAM_OPTIONS``    ``[beam]`` table     ``()``: Beam's in-process runner
``task_runner``      ``JAXTX_TASK_RUNNER``     ``task_runner``      ``"threads"``
``prefect_api_url``  ``PREFECT_API_URL``       ``prefect_api_url``  None: Prefect's own default
===================  ========================  ===================  ==============================

The settings file: the ``config`` argument, else ``$JAXTX_CONFIG``, else
``jaxtx.toml`` in the current directory, else ``jaxtx.toml`` in the home
folder (given as an argument or by ``$JAXTX_HOME``). Relative paths in it are
relative to its folder. Unknown keys are an error. Example (a cluster)::

    home = "/shared/jaxtx"
    tracking_uri = "http://mlflow.internal:5000"
    artifact_root = "s3://ml-artifacts/jaxtx"
    task_runner = "dask://dask-scheduler.internal:8786"
    prefect_api_url = "http://prefect.internal:4200/api"

    [beam]
    runner = "dask"                 # or direct, flink, spark, dataflow
    dask_client_address = "tcp://dask-scheduler.internal:8786"

``[beam]`` holds Beam pipeline options by their flag names (without ``--``);
``JAXTX_BEAM_OPTIONS`` holds flags separated by spaces
(``--runner=dask --dask_client_address=tcp://h:8786``). ``task_runner`` is
``threads`` (Prefect's thread pool, in this process) or the address of a Dask
scheduler (``dask://host:8786`` or ``tcp://host:8786``: component tasks run on
its workers through ``prefect-dask``).
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["SETTINGS_FILE", "Settings", "SettingsError", "default_home", "default_tracking_uri"]

SETTINGS_FILE = "jaxtx.toml"

_FILE_KEYS = frozenset(
    {"home", "tracking_uri", "artifact_root", "task_runner", "prefect_api_url", "beam"}
)


class SettingsError(ValueError):
    """A settings file or value that cannot be used (names the file and the key)."""


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
      beam_options: Beam flags every Beam-backed component uses unless given
        its own (``()``: the in-process runner).
      task_runner: ``threads`` or a Dask scheduler address (``dask://h:8786``)
        on whose workers pipeline component tasks run.
      prefect_api_url: the Prefect server's API (None: Prefect's default).
      source: the settings file read, if any.
    """

    home: Path
    tracking_uri: str
    artifact_root: str
    beam_options: tuple[str, ...] = ()
    task_runner: str = "threads"
    prefect_api_url: str | None = None
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def resolve(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        tracking_uri: str | None = None,
        artifact_root: str | os.PathLike[str] | None = None,
        beam_options: Any = None,
        task_runner: str | None = None,
        prefect_api_url: str | None = None,
        config: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Fill what is not given from the environment, the settings file, then defaults.

        Args:
          home: the working folder; default ``$JAXTX_HOME``, the file's
            ``home`` or ``./.jaxtx``.
          tracking_uri: default ``$MLFLOW_TRACKING_URI``, the file's, or the
            SQLite store in ``home``.
          artifact_root: default ``$JAXTX_ARTIFACT_ROOT``, the file's, or
            ``<home>/artifacts``.
          beam_options: Beam flags or mapping; default ``$JAXTX_BEAM_OPTIONS``,
            the file's ``[beam]`` table, or none.
          task_runner: ``threads`` or a Dask address; default
            ``$JAXTX_TASK_RUNNER``, the file's, or ``threads``.
          prefect_api_url: default ``$PREFECT_API_URL``, the file's, or None.
          config: the settings file (default: see the module docstring).
          environ: the environment to read (default ``os.environ``); tests
            pass a dict.

        Raises:
          SettingsError: the settings file is missing (when named), not TOML,
            or holds an unknown key or a value of the wrong type.
        """
        env = os.environ if environ is None else environ
        source, doc = _read_file(config, home, env)
        base = source.parent if source is not None else Path.cwd()

        def pick(arg: Any, var: str, key: str) -> Any:
            if arg is not None:
                return arg
            if env.get(var):
                return env[var]
            return doc.get(key)

        h_raw = pick(home, "JAXTX_HOME", "home")
        h = _path(h_raw, base if home is None and not env.get("JAXTX_HOME") else Path.cwd())
        if h is None:
            h = (Path.cwd() / ".jaxtx").resolve()
        uri = pick(tracking_uri or None, "MLFLOW_TRACKING_URI", "tracking_uri")
        root = pick(artifact_root, "JAXTX_ARTIFACT_ROOT", "artifact_root")
        from_file = artifact_root is None and not env.get("JAXTX_ARTIFACT_ROOT")
        if root is None:
            root_s = str(h / "artifacts")
        elif "://" in str(root):
            root_s = str(root)
        else:
            root_s = str(_path(root, base if from_file else Path.cwd()))
        return cls(
            home=h,
            tracking_uri=str(uri) if uri else default_tracking_uri(h),
            artifact_root=root_s,
            beam_options=_beam_flags(beam_options, env, doc.get("beam"), source),
            task_runner=str(pick(task_runner, "JAXTX_TASK_RUNNER", "task_runner") or "threads"),
            prefect_api_url=pick(prefect_api_url, "PREFECT_API_URL", "prefect_api_url"),
            source=source,
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (``home`` does not re-derive the others)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def dask_address(self) -> str | None:
        """The Dask scheduler of ``task_runner`` (``tcp://h:p``), None for threads."""
        runner = self.task_runner.strip()
        if runner in ("", "threads", "thread", "local"):
            return None
        if runner.startswith("dask://"):
            return "tcp://" + runner.removeprefix("dask://")
        if "://" in runner:
            return runner
        raise SettingsError(
            f"task_runner {runner!r} is neither 'threads' nor a Dask scheduler address; "
            'use task_runner = "threads" or "dask://host:8786".'
        )

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Where a new MLflow experiment keeps run artifacts: ``<home>/mlartifacts``
        for the embedded SQLite store, ``None`` (the server's choice) otherwise."""
        if self.tracking_uri.startswith("sqlite:"):
            return (self.home / "mlartifacts").resolve().as_uri()
        return None


def _path(value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _read_file(
    config: str | os.PathLike[str] | None,
    home: str | os.PathLike[str] | None,
    env: Mapping[str, str],
) -> tuple[Path | None, dict[str, Any]]:
    """The settings file in use and its contents (``(None, {})`` when there is none)."""
    named = config if config is not None else env.get("JAXTX_CONFIG")
    if named:
        path = Path(named).expanduser().resolve()
        if not path.is_file():
            raise SettingsError(
                f"Settings file {path} does not exist; create it or unset JAXTX_CONFIG."
            )
    else:
        candidates = [Path.cwd() / SETTINGS_FILE]
        h = home if home is not None else env.get("JAXTX_HOME")
        if h:
            candidates.append(Path(h).expanduser() / SETTINGS_FILE)
        found = next((c.resolve() for c in candidates if c.is_file()), None)
        if found is None:
            return None, {}
        path = found
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"Settings file {path} is not valid TOML: {e}.") from e
    unknown = sorted(set(doc) - _FILE_KEYS)
    if unknown:
        raise SettingsError(
            f"Settings file {path}: unknown key(s) {', '.join(unknown)}; expected "
            f"{', '.join(sorted(_FILE_KEYS))} (Beam options go in the [beam] table)."
        )
    for key, value in doc.items():
        want = dict if key == "beam" else str
        if not isinstance(value, want):
            raise SettingsError(
                f"Settings file {path}: {key} must be a "
                f"{'table' if want is dict else 'string'}, found {value!r}."
            )
    return path, doc


def _beam_flags(
    given: Any, env: Mapping[str, str], table: Mapping[str, Any] | None, source: Path | None
) -> tuple[str, ...]:
    """Beam options as a tuple of ``--flag=value`` strings."""
    if given is not None:
        if isinstance(given, Mapping):
            return _flags_of(given)
        if isinstance(given, str):
            return tuple(shlex.split(given))
        return tuple(str(f) for f in given)
    if env.get("JAXTX_BEAM_OPTIONS"):
        return tuple(shlex.split(env["JAXTX_BEAM_OPTIONS"]))
    if table:
        for key, value in table.items():
            if isinstance(value, (dict, list)):
                raise SettingsError(
                    f"Settings file {source}: [beam] {key} must be a string, number or "
                    f"boolean, found {value!r}."
                )
        return _flags_of(table)
    return ()


def _flags_of(options: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for key, value in options.items():
        name = str(key).removeprefix("--")
        if value is True:
            out.append(f"--{name}")
        elif value is not False and value is not None:
            out.append(f"--{name}={value}")
    return tuple(out)
