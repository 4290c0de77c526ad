"""A model repository over ``<base>/<model>/<version>/`` with hot reloading.

Every subdirectory of the base directory is a model; every positive-integer
subdirectory of a model holding ``signature.json`` and ``predict.jaxexport``
is a version. A version policy picks which versions serve; labels
(``<base>/<model>/labels.json`` such as ``{"stable": 3, "canary": 4}``, or
the configuration) name versions.

A poller thread rescans the directory. Every transition preserves
availability, as TF Serving's policy does: a version leaves service only once
its replacement is loaded and warmed up, then the two swap in one assignment;
requests already running keep their reference to the old version, so none
fails during a swap. This holds for new versions, rollbacks (the served
version's directory removed or renamed aside while an older one remains),
deletes and policy changes. A version that fails to load is reported (status,
metrics, log) and never replaces one that works; it is retried when its files
change.

A model whose directory disappears, or has no loadable version left, keeps
serving what it served for ``removal_grace_s`` seconds (a move or copy in
progress, an unmounted volume); an error reading a directory (``EACCES``,
``EIO``) is transient the same way. Either is logged once, retried with
backoff, and logged again when it clears; a model gone for longer than the
grace period is unloaded.

Lifecycle lines (loading, loaded, serving, unloaded, failed, with the reason)
go to the ``jaxtx.serving.repository`` logger at INFO (failures at ERROR).

Write new versions atomically: build them in a hidden directory (a name
starting with ``.``) beside the versions, then rename it to the version number.
A version's files are read once, when it loads: publish changes as a new version.
A model directory with no loadable version keeps the server not ready.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from .metrics import ServingMetrics
from .runtime import EXPORT_FILE, PREPROCESS_FILE, SIGNATURE_FILE, LoadedModel, ModelLoadError

__all__ = [
    "LABELS_FILE",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelRepository",
    "VersionPolicy",
    "VersionState",
    "VersionStatus",
]

LABELS_FILE = "labels.json"

_log = logging.getLogger(__name__)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_MAX_ENDED = 32
_MAX_BACKOFF_S = 10.0

VersionState = Literal["LOADING", "AVAILABLE", "UNLOADING", "END"]


class ModelNotFoundError(LookupError):
    """No such model, version or label (HTTP 404)."""


class ModelNotReadyError(RuntimeError):
    """The model exists but has no version ready to serve yet (HTTP 503)."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions to serve.

    Attributes:
        kind: ``latest`` (the ``num_versions`` highest), ``all`` or ``specific``.
        num_versions: How many versions ``latest`` serves.
        versions: The versions ``specific`` serves.
    """

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"version policy {self.kind!r}: use 'latest', 'all' or 'specific'")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError("version policy 'latest' needs num_versions >= 1")
        if self.kind == "specific" and (not self.versions or any(v < 1 for v in self.versions)):
            raise ValueError("version policy 'specific' needs one or more positive versions")

    @classmethod
    def latest(cls, num_versions: int = 1) -> VersionPolicy:
        """Serve the ``num_versions`` highest versions.

        Args:
            num_versions: How many.

        Returns:
            The policy.
        """
        return cls("latest", num_versions=num_versions)

    @classmethod
    def all(cls) -> VersionPolicy:
        """Serve every version found.

        Returns:
            The policy.
        """
        return cls("all")

    @classmethod
    def specific(cls, *versions: int) -> VersionPolicy:
        """Serve exactly these versions (those that exist).

        Args:
            *versions: Version numbers.

        Returns:
            The policy.
        """
        return cls("specific", versions=frozenset(int(v) for v in versions))

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Parse ``latest``, ``latest:N``, ``all`` or ``specific:1,3``.

        Args:
            text: The policy as written on a command line.

        Returns:
            The policy.

        Raises:
            ValueError: The text is none of the forms above.
        """
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "latest":
                return cls.latest(int(arg) if arg else 1)
            if kind == "all" and not arg:
                return cls.all()
            if kind == "specific" and arg:
                return cls.specific(*(int(v) for v in arg.split(",")))
        except ValueError as exc:
            raise ValueError(f"version policy {text!r}: {exc}") from exc
        raise ValueError(f"version policy {text!r}: use 'latest[:N]', 'all' or 'specific:1,2'")

    def select(self, available: Iterable[int]) -> set[int]:
        """Pick the versions to serve among those available.

        Args:
            available: Versions that can be loaded.

        Returns:
            The chosen versions.
        """
        versions = set(available)
        if self.kind == "all":
            return versions
        if self.kind == "specific":
            return versions & set(self.versions)
        return set(sorted(versions)[-self.num_versions :])


@dataclass(frozen=True)
class VersionStatus:
    """Where one version stands.

    Attributes:
        version: Version number.
        state: ``LOADING``, ``AVAILABLE``, ``UNLOADING`` or ``END`` (TF Serving's names).
        error: Why loading failed; empty when it did not.
    """

    version: int
    state: VersionState
    error: str = ""


@dataclass(frozen=True)
class _ModelState:
    """Immutable snapshot of one model; replaced whole on every change."""

    versions: Mapping[int, LoadedModel]
    statuses: Mapping[int, VersionStatus]
    labels: Mapping[str, int]
    missing: str = ""  # why no version serves (for 503 messages)


@dataclass
class _Bookkeeping:
    """Poller-only state of one model (never read by request threads)."""

    failed: dict[int, tuple[object, str]] = field(default_factory=dict)
    ended: dict[int, VersionStatus] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    labels_fingerprint: object = None
    trouble_since: float | None = None  # when the model's files went missing or unreadable
    trouble: str = ""


_EMPTY = _ModelState(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))


class ModelRepository:
    """Loads, serves and hot-reloads the versions of every model under a directory.

    Args:
        base_dir: ``<base>`` of ``<base>/<model>/<version>/``.
        policy: Version policy of models without one in ``policies``.
        policies: Version policy by model name.
        labels: Labels by model name (``{"census": {"stable": 3}}``); they take
            precedence over the model's ``labels.json``.
        models: Serve only these models (default: every directory found).
        poll_interval_s: Seconds between scans of ``base_dir``.
        warmup_batch_sizes: Batch sizes to compile before a version serves.
        max_batch_size: Most rows one request may hold.
        metrics: Metrics to update (load failures, loaded versions).
        removal_grace_s: Seconds a model keeps serving after its directory,
            or every loadable version in it, disappeared or became unreadable.
    """

    def __init__(
        self,
        base_dir: str | Path,
        *,
        policy: VersionPolicy | None = None,
        policies: Mapping[str, VersionPolicy] | None = None,
        labels: Mapping[str, Mapping[str, int]] | None = None,
        models: Iterable[str] | None = None,
        poll_interval_s: float = 2.0,
        warmup_batch_sizes: Iterable[int] = (1,),
        max_batch_size: int = 8192,
        metrics: ServingMetrics | None = None,
        removal_grace_s: float = 30.0,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0")
        self.base_dir = Path(base_dir)
        self.policy = policy or VersionPolicy.latest()
        self.policies = dict(policies or {})
        self.config_labels = {m: dict(ls) for m, ls in (labels or {}).items()}
        self.only_models = None if models is None else set(models)
        self.poll_interval_s = poll_interval_s
        self.warmup_batch_sizes = tuple(warmup_batch_sizes)
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.removal_grace_s = removal_grace_s
        self._base_trouble = ""
        self._models: Mapping[str, _ModelState] = MappingProxyType({})
        self._books: dict[str, _Bookkeeping] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polled = threading.Event()

    # ------------------------------------------------------------------ reads
    @property
    def polled(self) -> bool:
        """Whether the first scan has finished."""
        return self._polled.is_set()

    @property
    def ready(self) -> bool:
        """Whether the first scan has finished and every model has a version serving."""
        return self.polled and all(state.versions for state in self._models.values())

    def wait_polled(self, timeout: float | None = None) -> bool:
        """Block until the first scan has finished.

        Args:
            timeout: Seconds to wait at most (``None``: forever).

        Returns:
            Whether it has finished.
        """
        return self._polled.wait(timeout)

    def has_model(self, model: str) -> bool:
        """Whether a model of this name was found.

        Args:
            model: Model name.

        Returns:
            True when the last scan found it.
        """
        return model in self._models

    def model_names(self) -> list[str]:
        """Names of the models found.

        Returns:
            Sorted names.
        """
        return sorted(self._models)

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        """Find the version a request asks for.

        Args:
            model: Model name.
            version: Version number (default: the highest serving version).
            label: Version label, instead of ``version``.

        Returns:
            The loaded version; hold on to it for the whole request.

        Raises:
            ModelNotFoundError: No such model, version or label.
            ModelNotReadyError: The model has no version serving yet.
        """
        state = self._state(model)
        if label is not None:
            version = self._label_version(model, state, label)
        if version is None:
            if not state.versions:
                raise ModelNotReadyError(self._not_ready_message(model, state))
            return state.versions[max(state.versions)]
        loaded = state.versions.get(version)
        if loaded is not None:
            return loaded
        status = state.statuses.get(version)
        if status is not None and status.state == "LOADING":
            raise ModelNotReadyError(
                f"version {version} of model '{model}' is still loading; retry shortly"
            )
        serving = sorted(state.versions)
        raise ModelNotFoundError(
            f"version {version} of model '{model}' is not serving; serving versions: {serving}"
            + (f" ({status.error})" if status is not None and status.error else "")
        )

    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Status of a model's versions (TF Serving's GetModelStatus).

        Args:
            model: Model name.
            version: Only this version.
            label: Only the version this label names.

        Returns:
            Statuses, highest version first.

        Raises:
            ModelNotFoundError: No such model, version or label.
        """
        state = self._state(model)
        if label is not None:
            version = self._label_version(model, state, label)
        if version is not None:
            status = state.statuses.get(version)
            if status is None:
                raise ModelNotFoundError(f"model '{model}' has no version {version}")
            return [status]
        return [state.statuses[v] for v in sorted(state.statuses, reverse=True)]

    def serving_versions(self, model: str) -> list[int]:
        """Versions of a model now serving.

        Args:
            model: Model name.

        Returns:
            Sorted versions.

        Raises:
            ModelNotFoundError: No such model.
        """
        return sorted(self._state(model).versions)

    def labels(self, model: str) -> dict[str, int]:
        """Labels of a model.

        Args:
            model: Model name.

        Returns:
            Label to version.

        Raises:
            ModelNotFoundError: No such model.
        """
        return dict(self._state(model).labels)

    def _state(self, model: str) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            if not self.polled:
                raise ModelNotReadyError("the server is still scanning its models; retry shortly")
            raise ModelNotFoundError(
                f"model '{model}' not found; models served: {self.model_names()}"
            )
        return state

    @staticmethod
    def _label_version(model: str, state: _ModelState, label: str) -> int:
        version = state.labels.get(label)
        if version is None:
            raise ModelNotFoundError(
                f"model '{model}' has no label '{label}'; labels: {sorted(state.labels)}"
            )
        return version

    @staticmethod
    def _not_ready_message(model: str, state: _ModelState) -> str:
        loading = sorted(s.version for s in state.statuses.values() if s.state == "LOADING")
        if loading:
            return (
                f"model '{model}' has no version serving yet: version {loading[-1]} is "
                "loading; retry shortly"
            )
        return f"model '{model}' has no version serving: {state.missing or 'retry shortly'}"

    @property
    def troubled_models(self) -> dict[str, str]:
        """Models kept serving through a transient problem, with the problem.

        Returns:
            Model name to a description (missing directory, read error).
        """
        return {n: b.trouble for n, b in self._books.items() if b.trouble_since is not None}

    # ---------------------------------------------------------------- polling
    def start(self) -> None:
        """Start the poller thread (the first scan runs at once, in that thread)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="jaxtx-model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the poller thread.

        Args:
            timeout: Seconds to wait for a scan in progress to end.
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                _log.exception("model repository scan of %s failed", self.base_dir)
            troubled = bool(self._base_trouble) or any(
                b.trouble_since is not None for b in self._books.values()
            )
            failures = failures + 1 if troubled else 0
            # Back off while something is missing or unreadable (up to 10 s, or the interval).
            wait = self.poll_interval_s * (2 ** min(failures, 6))
            self._stop.wait(min(wait, max(_MAX_BACKOFF_S, self.poll_interval_s)))

    def poll_once(self) -> None:
        """Scan the base directory once and load, swap and unload versions."""
        with self._poll_lock:
            try:
                names = self._discover_models()
                if names is None:  # the base directory is unreadable or gone
                    for name in sorted(self._models):
                        self._remove_model(name, self._base_trouble)
                    return
                for name in names:
                    if self._stop.is_set():
                        break
                    self._sync_model(name)
                for gone in sorted(set(self._models) - set(names)):
                    self._remove_model(gone, f"its directory {self.base_dir / gone} is missing")
            finally:
                self._polled.set()

    def _discover_models(self) -> list[str] | None:
        """Model names under the base directory; None when it cannot be read."""
        try:
            children = [c for c in self.base_dir.iterdir() if _MODEL_NAME.match(c.name)]
            names = [c.name for c in children if c.is_dir()]
        except OSError as exc:
            problem = f"cannot read the model base directory {self.base_dir}: {exc}"
            if problem != self._base_trouble:
                _log.warning("%s; serving what was loaded, retrying", problem)
                self._count_scan_error("base_dir")
            self._base_trouble = problem
            return None
        if self._base_trouble:
            _log.info("model base directory %s is readable again", self.base_dir)
            self._base_trouble = ""
        if self.only_models is not None:
            names = [n for n in names if n in self.only_models]
        return sorted(names)

    def _scan_versions(self, model_dir: Path) -> dict[int, Path]:
        """Loadable version directories; raises OSError when the directory cannot be read."""
        found: dict[int, Path] = {}
        for child in model_dir.iterdir():
            if not _VERSION.match(child.name):
                continue
            if (child / SIGNATURE_FILE).is_file() and (child / EXPORT_FILE).is_file():
                found[int(child.name)] = child
        return found

    def _count_scan_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.scan_errors.labels(kind).inc()

    def _keep_through_trouble(self, name: str, books: _Bookkeeping, problem: str) -> bool:
        """Whether a model whose files are missing or unreadable keeps serving (grace period).

        The first time logs a warning; every time counts toward the grace period.
        """
        state = self._models.get(name, _EMPTY)
        if not state.versions:
            return False
        now = time.monotonic()
        if books.trouble_since is None:
            books.trouble_since, books.trouble = now, problem
            self._count_scan_error("model")
            _log.warning(
                "model '%s': %s; still serving version(s) %s, retrying for up to %.0f s",
                name,
                problem,
                sorted(state.versions),
                self.removal_grace_s,
            )
        return now - books.trouble_since < self.removal_grace_s

    def _clear_trouble(self, name: str, books: _Bookkeeping, recovered: bool) -> None:
        if books.trouble_since is not None:
            took = time.monotonic() - books.trouble_since
            if recovered:
                _log.info("model '%s': recovered after %.1f s (%s)", name, took, books.trouble)
            else:
                _log.warning(
                    "model '%s': %s for %.0f s, past the grace period; unloading",
                    name,
                    books.trouble,
                    took,
                )
            books.trouble_since, books.trouble = None, ""

    def _remove_model(self, name: str, problem: str) -> None:
        """Unload a model whose directory is gone, once its grace period is over."""
        books = self._books.get(name)
        if books is not None and self._keep_through_trouble(name, books, problem):
            return
        for version in self.serving_versions(name):
            _log.info("model '%s' version %d unloaded: %s", name, version, problem)
        self._publish_remove(name)

    def _sync_model(self, name: str) -> None:
        model_dir = self.base_dir / name
        books = self._books.setdefault(name, _Bookkeeping())
        state = self._models.get(name, _EMPTY)
        try:
            on_disk = self._scan_versions(model_dir)
        except OSError as exc:
            if self._keep_through_trouble(name, books, f"cannot read {model_dir}: {exc}"):
                return
            on_disk = {}
        if not on_disk and self._keep_through_trouble(
            name, books, f"no loadable version left in {model_dir}"
        ):
            return
        labels = self._read_labels(name, model_dir, books)
        for version in list(books.failed):
            if version not in on_disk or books.failed[version][0] != _fingerprint(on_disk[version]):
                del books.failed[version]
        policy = self.policies.get(name, self.policy)
        newly = self._load_targets(name, on_disk, state, labels, books, policy)
        target = policy.select(set(on_disk) - set(books.failed))
        serving = {v: m for v, m in {**state.versions, **newly}.items() if v in target}
        if not serving and self._keep_through_trouble(
            name, books, "every version that could replace the served one failed to load"
        ):
            self._publish(name, state.versions, labels, books)
            return
        self._clear_trouble(name, books, recovered=bool(serving))
        self._retire(name, state, serving, newly, books)
        self._publish(name, serving, labels, books, missing=self._why_empty(model_dir, books))

    def _load_targets(
        self,
        name: str,
        on_disk: Mapping[int, Path],
        state: _ModelState,
        labels: Mapping[str, int],
        books: _Bookkeeping,
        policy: VersionPolicy,
    ) -> dict[int, LoadedModel]:
        """Load and warm up every version the policy wants that is not serving yet.

        What serves keeps serving meanwhile (published with the version loading).
        """
        newly: dict[int, LoadedModel] = {}
        while True:
            target = policy.select(set(on_disk) - set(books.failed))
            todo = sorted(target - set(state.versions) - set(newly), reverse=True)
            if not todo or self._stop.is_set():
                return newly
            version = todo[0]
            self._publish(name, state.versions, labels, books, loading={version})
            model = self._load(name, version, on_disk[version], books)
            if model is not None:
                newly[version] = model

    def _retire(
        self,
        name: str,
        state: _ModelState,
        serving: Mapping[int, LoadedModel],
        newly: Mapping[int, LoadedModel],
        books: _Bookkeeping,
    ) -> None:
        """Log and record the versions that start and stop serving."""
        for version in sorted(newly):
            if version in serving:
                _log.info("model '%s' version %d is serving", name, version)
        now = sorted(serving)
        for version in sorted(set(state.versions) - set(serving)):
            books.ended[version] = VersionStatus(version, "END")
            if not _exists(state.versions[version].path):
                why = "its directory was removed or cannot be read"
            else:
                why = f"replaced by version(s) {now}" if newly else "the version policy"
            _log.info("model '%s' version %d unloaded: %s; serving %s", name, version, why, now)
        for version in serving:
            books.ended.pop(version, None)
        if len(books.ended) > _MAX_ENDED:
            for version in sorted(books.ended)[: len(books.ended) - _MAX_ENDED]:
                del books.ended[version]

    def _why_empty(self, model_dir: Path, books: _Bookkeeping) -> str:
        if books.failed:
            failed = "; ".join(
                f"version {v} failed to load: {r}" for v, (_, r) in books.failed.items()
            )
            return failed
        return (
            f"no version directory in {model_dir} (a positive integer holding "
            f"{SIGNATURE_FILE} and {EXPORT_FILE})"
        )

    def _load(self, name: str, version: int, path: Path, books: _Bookkeeping) -> LoadedModel | None:
        start = time.perf_counter()
        fingerprint = _fingerprint(path)
        _log.info("model '%s' version %d loading from %s", name, version, path)
        try:
            model = LoadedModel.load(
                path, name=name, version=version, max_batch_size=self.max_batch_size
            )
            model.warmup(self.warmup_batch_sizes)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            books.failed[version] = (fingerprint, reason)
            _log.error(
                "model '%s' version %d failed to load and is not served: %s", name, version, reason
            )
            if self.metrics is not None:
                self.metrics.load_failures.labels(name, str(version)).inc()
            return None
        took = time.perf_counter() - start
        _log.info("model '%s' version %d loaded and warmed up in %.2f s", name, version, took)
        if self.metrics is not None:
            self.metrics.load_latency.labels(name).observe(took)
        return model

    def _read_labels(self, name: str, model_dir: Path, books: _Bookkeeping) -> dict[str, int]:
        path = model_dir / LABELS_FILE
        fingerprint = _file_fingerprint(path)
        if fingerprint != books.labels_fingerprint:
            books.labels_fingerprint = fingerprint
            if fingerprint is None:
                books.labels = {}
            else:
                try:
                    books.labels = _parse_labels(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError) as exc:
                    _log.error(
                        "%s of model '%s' is invalid, keeping the previous labels: %s; write "
                        'it as {"label": version, ...}',
                        LABELS_FILE,
                        name,
                        exc,
                    )
        labels = dict(books.labels)
        labels.update(self.config_labels.get(name, {}))
        return labels

    def _publish(
        self,
        name: str,
        serving: Mapping[int, LoadedModel],
        labels: Mapping[str, int],
        books: _Bookkeeping,
        loading: Iterable[int] = (),
        missing: str = "",
    ) -> None:
        statuses: dict[int, VersionStatus] = dict(books.ended)
        for version, (_, reason) in books.failed.items():
            statuses[version] = VersionStatus(version, "END", reason)
        for version in loading:
            statuses[version] = VersionStatus(version, "LOADING")
        for version in serving:
            statuses[version] = VersionStatus(version, "AVAILABLE")
        new = _ModelState(
            versions=MappingProxyType(dict(serving)),
            statuses=MappingProxyType(statuses),
            labels=MappingProxyType(dict(labels)),
            missing=missing,
        )
        models = dict(self._models)
        models[name] = new
        self._models = MappingProxyType(models)
        if self.metrics is not None:
            self.metrics.loaded_versions.labels(name).set(len(serving))

    def _publish_remove(self, name: str) -> None:
        models = dict(self._models)
        models.pop(name, None)
        self._models = MappingProxyType(models)
        self._books.pop(name, None)
        _log.info("model '%s' is no longer served", name)
        if self.metrics is not None:
            self.metrics.loaded_versions.labels(name).set(0)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _parse_labels(data: object) -> dict[str, int]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    labels: dict[str, int] = {}
    for key, value in data.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"label {key!r} must map to a positive integer version")
        labels[str(key)] = value
    return labels


def _file_fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _fingerprint(version_dir: Path) -> object:
    return tuple(
        _file_fingerprint(version_dir / f) for f in (SIGNATURE_FILE, EXPORT_FILE, PREPROCESS_FILE)
    )
