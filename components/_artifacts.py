"""Artifacts and the artifact store.

An artifact is an immutable directory of open-format payload files plus an
``artifact.json`` that records its type, properties, producer and a manifest
(relative path, size and SHA-256 of every payload file). The fingerprint is a
SHA-256 over the type, the properties and the manifest, so it names *what the
data is*, not where it lies; the store uses it as the directory name.

Writes are atomic. A component writes into a staging directory
(``<root>/.staging/<uuid>``); :meth:`ArtifactStore.commit` hashes the files,
writes ``artifact.json`` last and renames the directory into place. On stores
without an atomic rename (object stores), ``artifact.json`` is uploaded last and
serves as the commit marker. A reader therefore never trusts a half-written
artifact: no ``artifact.json`` means "incomplete", and a manifest that does not
match the files means "tampered"; both raise :class:`ArtifactCorruptError`.

Exceptions::

    ArtifactError
     ├── ArtifactNotFoundError   no artifact at that URI
     ├── ArtifactCorruptError    incomplete, or files differ from artifact.json
     └── ArtifactTypeError       an artifact of another type than expected
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import pyarrow.fs as pafs

from jaxtx.core.settings import Settings, default_home

if TYPE_CHECKING:
    import pyarrow as pa

    from jaxtx.core.model_format import LoadedModel
    from jaxtx.trainer.transform import FittedTransform
    from jaxtx.validation.schema import SchemaSpec

__all__ = [
    "Anomalies",
    "Artifact",
    "InferenceResult",
    "Hyperparameters",
    "InfraBlessing",
    "Model",
    "ModelBlessing",
    "ModelEvaluation",
    "PushedModel",
    "TransformGraph",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "ArtifactTypeError",
    "Examples",
    "Output",
    "Schema",
    "Statistics",
    "artifact_type",
    "default_home",
    "load_artifact",
]

ARTIFACT_JSON = "artifact.json"
FORMAT = "jaxtx.artifact/1"
_CHUNK = 1 << 20


class ArtifactError(Exception):
    """Base class of artifact errors."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """No artifact at the given URI."""


class ArtifactCorruptError(ArtifactError):
    """The artifact is half-written or its files differ from its manifest."""


class ArtifactTypeError(ArtifactError, TypeError):
    """The artifact is of another type than expected."""


_TYPES: dict[str, type[Artifact]] = {}


def artifact_type(name: str) -> type[Artifact]:
    """Return the artifact class registered under ``name`` (e.g. ``"Examples"``)."""
    try:
        return _TYPES[name]
    except KeyError:
        known = ", ".join(sorted(_TYPES))
        raise ArtifactTypeError(
            f"unknown artifact type {name!r}; known types: {known}. "
            "Define a subclass of jaxtx.Artifact with TYPE_NAME set to register one."
        ) from None


@dataclass(frozen=True, eq=False)
class Artifact:
    """An immutable, fingerprinted directory in an artifact store.

    Subclass it to declare a new artifact type; set ``TYPE_NAME``.

    Attributes:
      uri: where the artifact lies (a local path or a ``pyarrow.fs`` URI).
      fingerprint: SHA-256 over type, properties and file manifest.
      properties: small JSON-serializable facts (span, split names, counts).
      producer: which component, node and run made it.
    """

    TYPE_NAME: ClassVar[str] = "Artifact"

    uri: str
    fingerprint: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    producer: Mapping[str, Any] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE_NAME" not in cls.__dict__:
            cls.TYPE_NAME = cls.__name__
        _TYPES[cls.TYPE_NAME] = cls

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Artifact)
            and type(self) is type(other)
            and self.fingerprint == other.fingerprint
            and self.uri == other.uri
        )

    def __hash__(self) -> int:
        return hash((self.TYPE_NAME, self.uri, self.fingerprint))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={self.uri!r}, fingerprint={self.fingerprint[:12]!r})"

    @property
    def path(self) -> Path:
        """The local path of the artifact (only for artifacts on the local disk)."""
        fs, p = _resolve(self.uri)
        if not isinstance(fs, pafs.LocalFileSystem):
            raise ArtifactError(
                f"{self!r} is not on the local disk; open its files through "
                "pyarrow.fs.FileSystem.from_uri(artifact.uri)."
            )
        return Path(p)

    def file(self, relpath: str) -> str:
        """The URI of one payload file, e.g. ``artifact.file("train/statistics.json")``."""
        return _join(self.uri, relpath)

    def read_json(self, relpath: str) -> Any:
        """Read and parse a JSON payload file."""
        return json.loads(self.read_text(relpath))

    def read_text(self, relpath: str) -> str:
        """Read a UTF-8 payload file (on any store the artifact lives on)."""
        fs, p = _resolve(self.file(relpath))
        with fs.open_input_stream(p) as f:
            return f.read().decode("utf-8")

    def list_files(self) -> list[str]:
        """Relative paths of every payload file."""
        return sorted(_scan_manifest(self.uri, hash_files=False))

    def verify(self) -> None:
        """Re-hash every file and compare with ``artifact.json``.

        Raises:
          ArtifactCorruptError: naming the first file that differs.
        """
        load_artifact(self.uri, type(self), verify=True)


class Examples(Artifact):
    """Parquet shards per split (``data/<split>/*.parquet``) and a quarantine folder."""

    @property
    def split_names(self) -> list[str]:
        return list(self.properties.get("split_names", []))

    def split_uri(self, split: str) -> str:
        self._check_split(split)
        return self.file(f"data/{split}")

    def files(self, split: str) -> list[str]:
        """Parquet files of one split, sorted."""
        self._check_split(split)
        prefix = f"data/{split}/"
        return [
            self.file(f)
            for f in self.list_files()
            if f.startswith(prefix) and f.endswith(".parquet")
        ]

    def read(self, split: str, columns: list[str] | None = None) -> pa.Table | None:
        """Read one split into a ``pyarrow.Table`` (``None`` for a split without files)."""
        import pyarrow.parquet as pq

        files = self.files(split)
        tables = [pq.read_table(f, columns=columns) for f in files]
        import pyarrow as pa

        return pa.concat_tables(tables) if tables else None

    def quarantine_files(self) -> list[str]:
        return [self.file(f) for f in self.list_files() if f.startswith("quarantine/")]

    def _check_split(self, split: str) -> None:
        if split not in self.split_names:
            raise KeyError(f"{self!r} has no split {split!r}; its splits are {self.split_names}")


class Statistics(Artifact):
    """Per-split statistics (``<split>/statistics.json``, format ``jaxtx.statistics/1``)."""

    @property
    def split_names(self) -> list[str]:
        return list(self.properties.get("split_names", []))

    def split(self, name: str) -> dict[str, Any]:
        """The statistics of one split."""
        if name not in self.split_names:
            raise KeyError(f"{self!r} has no split {name!r}; its splits are {self.split_names}")
        return self.read_json(f"{name}/statistics.json")


class Schema(Artifact):
    """A curated or inferred schema (``schema.yaml``)."""

    SCHEMA_FILE: ClassVar[str] = "schema.yaml"

    def load(self) -> SchemaSpec:
        """Parse the schema into a ``jaxtx.validation.schema.SchemaSpec``."""
        from jaxtx.validation.schema import load_schema, schema_from_dict

        uri = self.file(self.SCHEMA_FILE)
        fs, p = _resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            return load_schema(p)
        import yaml  # an object store: parse the text, naming the remote file in errors

        with fs.open_input_stream(p) as f:
            return schema_from_dict(yaml.safe_load(f.read().decode("utf-8")), source=uri)


class Anomalies(Artifact):
    """Anomalies found in examples (``anomalies.json``) and an HTML report."""

    def anomalies(self) -> list[dict[str, Any]]:
        return list(self.read_json("anomalies.json"))


class TransformGraph(Artifact):
    """Fitted preprocessing: ``transform_graph.json`` (constants + op graph)."""

    def load(self) -> FittedTransform:
        """The ``jaxtx.trainer.transform.FittedTransform``."""
        from jaxtx.trainer.transform import FittedTransform as Graph

        return Graph.load(str(self.path))


class Model(Artifact):
    """An exported model (``model/``: signature, StableHLO, preprocess) and its history."""

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def load(self) -> LoadedModel:
        """A ``jaxtx.core.model_format.LoadedModel`` (needs no training code)."""
        from jaxtx.core.model_format import LoadedModel

        return LoadedModel.load(str(self.model_dir))

    @property
    def quantized_model_dir(self) -> Path | None:
        """The int8 variant (``model_int8/``, Trainer(quantize_int8=True)), if any."""
        name = self.properties.get("quantized_model")
        return self.path / str(name) if name else None


class ModelEvaluation(Artifact):
    """Sliced metrics, fairness indicators and plots (``evaluation.json``, ``fairness.json``)."""

    def evaluation(self) -> dict[str, Any]:
        return dict(self.read_json("evaluation.json"))


class ModelBlessing(Artifact):
    """Whether a model passed evaluation (``blessing.json``: blessed + every check)."""

    @property
    def blessed(self) -> bool:
        return bool(self.properties.get("blessed"))


class InfraBlessing(Artifact):
    """Whether a model served correctly in a real server (``infra_blessing.json``)."""

    @property
    def blessed(self) -> bool:
        return bool(self.properties.get("blessed"))


class PushedModel(Artifact):
    """Where a model was pushed: registry name/version/alias and serving path."""


class InferenceResult(Examples):
    """Examples with the model's prediction columns added (``data/<split>/*.parquet``)."""


class Hyperparameters(Artifact):
    """Chosen hyperparameters (``hyperparameters.json``), e.g. the Tuner's best trial."""

    FILE: ClassVar[str] = "hyperparameters.json"

    def values(self) -> dict[str, Any]:
        """``{parameter name: value}``, e.g. ``{"learning_rate": 0.01, "hidden": [64]}``."""
        return dict(self.read_json(self.FILE)["values"])


A = TypeVar("A", bound=Artifact)


class Output(Generic[A]):
    """A writable output artifact handed to a component function.

    Annotate a component parameter as ``Output[Statistics]``; the function
    writes its payload files below :attr:`path` and may set :attr:`properties`.
    Files under ``reports/`` (HTML, PNG, ...) are also logged to MLflow.
    """

    def __init__(self, artifact_cls: type[A], path: str | Path) -> None:
        self.artifact_cls = artifact_cls
        self.path = Path(path)
        self.properties: dict[str, Any] = {}

    def __class_getitem__(cls, item: Any) -> Any:
        return _OutputAlias(item)

    @property
    def reports_dir(self) -> Path:
        d = self.path / "reports"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def __repr__(self) -> str:
        return f"Output[{self.artifact_cls.__name__}]({str(self.path)!r})"


class _OutputAlias:
    """What ``Output[T]`` evaluates to in an annotation."""

    def __init__(self, artifact_cls: Any) -> None:
        if not (isinstance(artifact_cls, type) and issubclass(artifact_cls, Artifact)):
            raise TypeError(f"Output[...] takes an Artifact subclass, got {artifact_cls!r}")
        self.artifact_cls: type[Artifact] = artifact_cls

    def __repr__(self) -> str:
        return f"Output[{self.artifact_cls.__name__}]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OutputAlias) and other.artifact_cls is self.artifact_cls

    def __hash__(self) -> int:
        return hash(("Output", self.artifact_cls))


def _process_started(pid: int) -> int | None:
    """When process ``pid`` started (ms since the epoch), ``None`` if it does not exist."""
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _owner_token() -> str:
    """``<pid>.<start ms>``: this process, told apart from a later one with its pid."""
    return f"{os.getpid()}.{_process_started(os.getpid()) or 0}"


def _owner_alive(pid: int, started_ms: int) -> bool:
    now = _process_started(pid)
    return now is not None and abs(now - started_ms) < 1000


class ArtifactStore:
    """Where artifacts live: a local folder or any ``pyarrow.fs`` URI.

    Args:
      root: a local path or a URI such as ``s3://bucket/prefix``. Defaults to
        the artifact root of :meth:`jaxtx.core.settings.Settings.resolve`
        (``$JAXTX_ARTIFACT_ROOT`` or ``<home>/artifacts``).

    Example::

        store = ArtifactStore("/tmp/store")
        out = store.new_output(Statistics, "StatisticsGen", "statistics")
        (out.path / "train").mkdir(); ...
        stats = store.commit(out, producer={"component": "StatisticsGen"})
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        root = str(root) if root is not None else Settings.resolve().artifact_root
        if "://" in root and "?" in root:
            raise ArtifactError(
                f"artifact root {root!r}: options in the URI (?endpoint_override=...) would not "
                "carry over to the artifacts' URIs nor to Beam; give the endpoint and credentials "
                "in the environment instead (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)"
            )
        self.fs, self._base = _resolve(root)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.is_local:
            self._base = str(Path(self._base).resolve())
            self.root = self._base
        else:
            self.root = root.rstrip("/")
        self.fs.create_dir(self._base, recursive=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    @property
    def base_path(self) -> str:
        """The root as a path inside :attr:`fs` (no URI scheme), for direct ``fs`` calls."""
        return self._base

    def _staging_dir(self) -> Path:
        if self.is_local:
            base = Path(self._base) / ".staging"
            base.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"out-{_owner_token()}-", dir=base))
        return Path(tempfile.mkdtemp(prefix=f"jaxtx-out-{_owner_token()}-"))

    def clean_staging(self) -> list[str]:
        """Remove staging folders whose owner process is gone (a killed run's).

        A staging folder is named ``out-<pid>.<process start>-<random>``; one
        whose process no longer exists (or is another process with a reused
        pid) can never be committed. Folders of live processes are kept.

        Returns:
          The removed folders.
        """
        removed: list[str] = []
        base = Path(self._base) / ".staging" if self.is_local else Path(tempfile.gettempdir())
        prefix = "out-" if self.is_local else "jaxtx-out-"
        if not base.is_dir():
            return removed
        for d in base.iterdir():
            owner = d.name.removeprefix(prefix).split("-", 1)[0]
            if not d.name.startswith(prefix) or "." not in owner:
                continue  # not ours, or made before owners were recorded
            pid, _, started = owner.partition(".")
            if pid.isdigit() and started.isdigit() and not _owner_alive(int(pid), int(started)):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(str(d))
        return removed

    def new_output(self, artifact_cls: type[A], component: str, name: str) -> Output[A]:
        """A fresh staging directory for one output of one component."""
        out: Output[A] = Output(artifact_cls, self._staging_dir())
        out._component = component  # type: ignore[attr-defined]
        out._name = name  # type: ignore[attr-defined]
        return out

    def discard(self, out: Output[Any]) -> None:
        """Remove a staging directory (after a failed component)."""
        shutil.rmtree(out.path, ignore_errors=True)

    def commit(self, out: Output[A], producer: Mapping[str, Any] | None = None) -> A:
        """Hash the staged files, write ``artifact.json`` and move into place.

        The final location is ``<root>/<component>/<output>/<fingerprint[:16]>``;
        committing identical content twice yields the same artifact.
        """
        staged = out.path
        if (staged / ARTIFACT_JSON).exists():
            raise ArtifactError(
                f"{staged}: a component may not write {ARTIFACT_JSON} itself; "
                "set Output.properties instead."
            )
        manifest = _scan_manifest(str(staged), hash_files=True)
        props = _jsonable(out.properties, where=f"properties of {out!r}")
        fp = _fingerprint(out.artifact_cls.TYPE_NAME, props, manifest)
        component = getattr(out, "_component", "adhoc")
        name = getattr(out, "_name", "output")
        rel = f"{_safe(component)}/{_safe(name)}/{fp[:16]}"
        meta = {
            "format": FORMAT,
            "type": out.artifact_cls.TYPE_NAME,
            "fingerprint": fp,
            "properties": props,
            "producer": dict(producer or {}),
            "created": time.time(),
            "manifest": manifest,
        }
        final = _join(self._base, rel)
        if self._exists_complete(final):
            # Same content already committed (content-addressed): keep the old copy,
            # unless it was damaged since; then set it aside and install the new one.
            try:
                existing = load_artifact(self._uri(final), out.artifact_cls, verify=True)
            except ArtifactCorruptError:
                self._set_aside(final)
            else:
                shutil.rmtree(staged, ignore_errors=True)
                return existing
        (staged / ARTIFACT_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if self.is_local:
            Path(final).parent.mkdir(parents=True, exist_ok=True)
            if Path(final).exists():  # an incomplete leftover of a crash
                shutil.rmtree(final)
            os.replace(staged, final)
        else:
            self._upload(staged, final)
            shutil.rmtree(staged, ignore_errors=True)
        uri = self._uri(final)
        return out.artifact_cls(
            uri=uri, fingerprint=fp, properties=props, producer=meta["producer"]
        )

    def _set_aside(self, path: str) -> None:
        """Move a damaged artifact to ``<root>/.damaged/`` (kept for inspection, never trusted)."""
        dest = _join(
            self._base, f".damaged/{uuid.uuid4().hex[:12]}-{path.rstrip('/').rsplit('/', 1)[-1]}"
        )
        self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        self.fs.move(path, dest)

    def _uri(self, path: str) -> str:
        if self.is_local:
            return path
        scheme = self.root.split("://", 1)[0]
        return f"{scheme}://{path}"

    def _exists_complete(self, path: str) -> bool:
        info = self.fs.get_file_info(_join(path, ARTIFACT_JSON))
        return info.type == pafs.FileType.File

    def _upload(self, staged: Path, final: str) -> None:
        # Payload first, artifact.json last: its presence marks the commit.
        local = pafs.LocalFileSystem()
        files = [p for p in staged.rglob("*") if p.is_file() and p.name != ARTIFACT_JSON]
        for p in [*files, staged / ARTIFACT_JSON]:
            dest = _join(final, p.relative_to(staged).as_posix())
            self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(p), dest, source_filesystem=local, destination_filesystem=self.fs)

    def load(self, uri: str, artifact_cls: type[A] | None = None, *, verify: bool = True) -> A:
        """Load an artifact from this (or any) store; see :func:`load_artifact`."""
        return load_artifact(uri, artifact_cls, verify=verify)

    def exists(self, uri: str) -> bool:
        fs, p = _resolve(uri)
        return fs.get_file_info(_join(p, ARTIFACT_JSON)).type == pafs.FileType.File


def load_artifact(uri: str, artifact_cls: type[A] | None = None, *, verify: bool = True) -> A:
    """Load the artifact at ``uri``, checking its type and (by default) its files.

    Args:
      uri: the artifact's directory.
      artifact_cls: the expected type; ``None`` accepts any registered type.
      verify: re-hash every payload file against the manifest. With ``False``
        only presence and sizes are checked.

    Raises:
      ArtifactNotFoundError, ArtifactCorruptError, ArtifactTypeError.
    """
    fs, p = _resolve(uri)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.NotFound:
        raise ArtifactNotFoundError(f"no artifact at {uri}: the directory does not exist")
    meta_path = _join(p, ARTIFACT_JSON)
    if fs.get_file_info(meta_path).type != pafs.FileType.File:
        raise ArtifactCorruptError(
            f"{uri} has no {ARTIFACT_JSON}: it is incomplete (a write that crashed or is "
            "still running). Do not use it; delete it and re-run the component that makes it."
        )
    try:
        with fs.open_input_stream(meta_path) as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactCorruptError(
            f"{meta_path} is not valid JSON ({e}); the artifact is damaged"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactCorruptError(
            f"{meta_path}: expected format {FORMAT!r}, found {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r}"
        )
    cls = artifact_type(meta["type"])
    if artifact_cls is not None and not issubclass(cls, artifact_cls):
        raise ArtifactTypeError(
            f"{uri} holds a {meta['type']} artifact, but a {artifact_cls.TYPE_NAME} was expected"
        )
    recorded = meta["manifest"]
    actual = _scan_manifest(p, hash_files=verify, fs=fs)
    _compare_manifests(uri, recorded, actual, check_hash=verify)
    fp = _fingerprint(meta["type"], meta["properties"], recorded)
    if fp != meta["fingerprint"]:
        raise ArtifactCorruptError(
            f"{meta_path}: the recorded fingerprint {meta['fingerprint'][:16]} does not match its "
            f"contents ({fp[:16]}); {ARTIFACT_JSON} was edited. Re-run the producing component."
        )
    return cls(
        uri=uri,
        fingerprint=meta["fingerprint"],
        properties=meta["properties"],
        producer=meta.get("producer", {}),
    )  # type: ignore[return-value]


def _compare_manifests(
    uri: str, recorded: Mapping[str, Any], actual: Mapping[str, Any], *, check_hash: bool
) -> None:
    missing = sorted(set(recorded) - set(actual))
    extra = sorted(set(actual) - set(recorded))
    if missing:
        raise ArtifactCorruptError(
            f"{uri}: file {missing[0]} listed in {ARTIFACT_JSON} is missing"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; the artifact is "
            "damaged. Delete it and re-run the component that makes it."
        )
    if extra:
        raise ArtifactCorruptError(
            f"{uri}: file {extra[0]} is not in {ARTIFACT_JSON}; something wrote into a finished "
            "artifact. Delete it and re-run the component that makes it."
        )
    for rel, rec in recorded.items():
        act = actual[rel]
        if rec["size"] != act["size"] or (check_hash and rec["sha256"] != act["sha256"]):
            raise ArtifactCorruptError(
                f"{uri}: file {rel} differs from what {ARTIFACT_JSON} records "
                f"(size {act['size']} vs {rec['size']}); it was modified after the artifact "
                "was written. Delete the artifact and re-run the component that makes it."
            )


def _scan_manifest(
    root: str, *, hash_files: bool, fs: pafs.FileSystem | None = None
) -> dict[str, dict[str, Any]]:
    if fs is None:
        fs, root = _resolve(root)
    sel = pafs.FileSelector(root, recursive=True)
    out: dict[str, dict[str, Any]] = {}
    prefix = root.rstrip("/") + "/"
    for info in fs.get_file_info(sel):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
        if rel == ARTIFACT_JSON:
            continue
        entry: dict[str, Any] = {"size": info.size}
        if hash_files:
            entry["sha256"] = _sha256(fs, info.path)
        out[rel] = entry
    return out


def _sha256(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(type_name: str, properties: Any, manifest: Mapping[str, Any]) -> str:
    doc = {
        "type": type_name,
        "properties": properties,
        "files": {k: v["sha256"] for k, v in sorted(manifest.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _jsonable(value: Any, *, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{where} must be JSON-serializable: {e}") from e


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serializable")


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).absolute())
    return pafs.FileSystem.from_uri(uri)


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel.lstrip("/")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def iter_artifacts(store: ArtifactStore) -> Iterator[str]:
    """URIs of every committed artifact in a local store."""
    if not store.is_local:
        raise ArtifactError("iter_artifacts supports local stores only")
    for meta in Path(store.root).glob(f"*/*/*/{ARTIFACT_JSON}"):
        yield str(meta.parent)
