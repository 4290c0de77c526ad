"""Pusher: register a blessed model in the MLflow Model Registry and copy it for serving.

* Only a blessed model is pushed (and infra-blessed, when an InfraBlessing is given).
* The model version is registered under ``registered_model_name``; the alias
  (``champion`` by default) moves to it, and the version records the previous
  holder in its tag ``jaxtx.previous_version`` (what :func:`rollback` uses).
* The export is copied atomically to ``<serving_dir>/<name>/<version>/`` (the
  registry's version number), which ``jaxtx serve`` picks up while serving.
* Idempotent: a blessed model that is the same model as the current alias
  holder (same content hash of its exported program, signature and
  preprocessing files: :func:`model_content_hash`, never its URI) registers
  nothing and copies nothing; the PushedModel says ``pushed=False`` with the
  reason and ``same_as_version``. An unchanged re-run never adds a version.
* The registered version's source run is the Trainer's run; tags
  ``jaxtx.trainer_run``, ``jaxtx.evaluator_run`` and ``jaxtx.pusher_run``
  link the runs, and its description holds the training metrics, the
  blessing checks and the data fingerprints.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ._artifacts import InfraBlessing, Model, ModelBlessing, Output, PushedModel
from ._component import RunContext, component
from ._registry import registry_client as _client

__all__ = ["Pusher", "RollbackError", "model_content_hash", "rollback"]

#: Files of an export that do not change what it computes (training history).
_NOT_CONTENT = ("history.json",)


def model_content_hash(model_dir: str | os.PathLike[str]) -> str:
    """A SHA-256 over an export's files (relative names and bytes, sorted), except
    its training history: equal hashes mean the same exported program, signature
    and preprocessing."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel in _NOT_CONTENT:
            continue
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class RollbackError(RuntimeError):
    """Nothing to roll back to, or the serving directory does not match the registry."""


def _resolve_source(client: Any, source: str) -> tuple[str, str | None, str | None]:
    """``(storage location, model id, source run id)`` of a ``models:/<model_id>``
    source, asked of ``client``: given the ``models:/`` URI itself, the registry
    would resolve it through MLflow's process-wide tracking URI."""
    if source.startswith("models:/m-"):
        logged = client.get_logged_model(source.removeprefix("models:/"))
        return str(logged.artifact_location), logged.model_id, logged.source_run_id
    return source, None, None


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(src, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


@component
def Pusher(
    model: Model,
    model_blessing: ModelBlessing,
    pushed_model: Output[PushedModel],
    ctx: RunContext,
    infra_blessing: InfraBlessing | None = None,
    *,
    serving_dir: str,
    registered_model_name: str | None = None,
    alias: str = "champion",
) -> dict[str, float]:
    """Push a blessed model: registry version + alias, and a versioned serving copy.

    Args:
      model: the Trainer's model (logged as an MLflow model in a pipeline run).
      model_blessing: the Evaluator's verdict; not blessed -> nothing is pushed.
      infra_blessing: the InfraValidator's verdict, when it ran.
      serving_dir: the base directory a ``jaxtx serve`` process serves.
      registered_model_name: registry name (default: the model's name).
      alias: the registry alias that marks the served version.
    """
    name = registered_model_name or str(model.properties.get("name", "model"))
    reasons = []
    if not model_blessing.blessed:
        reasons.append(f"model not blessed ({model_blessing.uri})")
    if infra_blessing is not None and not infra_blessing.blessed:
        reasons.append(f"model not infra-blessed ({infra_blessing.uri})")
    if reasons:
        pushed_model.properties.update(pushed=False, reason="; ".join(reasons), name=name)
        return {"pushed": 0}

    client, uri = _client(ctx.settings.tracking_uri)
    content = model_content_hash(model.model_dir)
    champion = _champion(client, name, alias)
    if champion is not None and _content_of(champion) == content:
        reason = (
            f"same model as {name} version {champion.version} ({alias}): "
            "nothing registered, nothing copied"
        )
        pushed_model.properties.update(
            pushed=False, reason=reason, name=name, same_as_version=int(champion.version)
        )
        return {"pushed": 0}
    previous = champion.version if champion is not None else None
    return _push(
        client,
        uri,
        model,
        pushed_model,
        ctx,
        name,
        alias,
        serving_dir,
        previous,
        content,
        model_blessing,
    )


def _champion(client: Any, name: str, alias: str) -> Any:
    """The model version holding ``alias``, ``None`` when there is none yet."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # no registered model or no alias yet: this is the first push
        return None


def _content_of(version: Any) -> str | None:
    """The content hash of a registered version: its tag, else its serving copy's."""
    tags = getattr(version, "tags", None) or {}
    if tags.get("jaxtx.model_content"):
        return str(tags["jaxtx.model_content"])
    path = tags.get("jaxtx.serving_path")
    if path and Path(path).is_dir():
        return model_content_hash(path)
    return None


def _description(model: Model, blessing: ModelBlessing) -> str:
    """A registered version's description: metrics, checks and data fingerprints."""
    final = model.properties.get("final_metrics") or {}
    lines = ["Training (final epoch): " + ", ".join(f"{k} {v:.4g}" for k, v in final.items())]
    try:
        checks = blessing.read_json("blessing.json").get("checks", [])
        lines += [f"Check: {c.get('reason')}" for c in checks if c.get("reason")]
    except Exception:  # a blessing without its file: the link tags still say where
        pass
    lines.append(f"Model fingerprint: {model.fingerprint}")
    for key in ("examples_fingerprint", "transform_fingerprint"):
        if model.properties.get(key):
            lines.append(f"{key.replace('_', ' ').capitalize()}: {model.properties[key]}")
    return "\n".join(lines)


def _push(
    client: Any,
    uri: str,
    model: Model,
    pushed_model: Output[PushedModel],
    ctx: RunContext,
    name: str,
    alias: str,
    serving_dir: str,
    previous: str | None,
    content: str,
    blessing: ModelBlessing,
) -> dict[str, float]:
    source = model.properties.get("mlflow_model_uri")
    if not source:
        raise ValueError(
            f"Pusher: model {model.uri} was not logged to MLflow (no mlflow_model_uri); "
            "train it inside a pipeline run (jaxtx run) so that it has an MLflow model"
        )
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name, description="Pushed by jaxtx Pusher")
    location, model_id, source_run = _resolve_source(client, source)
    trainer_run = model.producer.get("mlflow_run_id") or source_run
    run_id = trainer_run or ctx.mlflow_run_id
    tags = {
        "jaxtx.model_fingerprint": model.fingerprint,
        "jaxtx.model_uri": model.uri,
        "jaxtx.model_content": content,
        "jaxtx.trainer_run": trainer_run or "",
        "jaxtx.evaluator_run": blessing.producer.get("mlflow_run_id") or "",
        "jaxtx.pusher_run": ctx.mlflow_run_id or "",
    }
    version = client.create_model_version(
        name,
        location,
        run_id=run_id,
        model_id=model_id if run_id else None,
        tags={k: v for k, v in tags.items() if v},
        description=_description(model, blessing),
    ).version
    target = Path(serving_dir).resolve() / name / str(version)
    _copy_atomic(model.model_dir, target)
    client.set_model_version_tag(name, version, "jaxtx.serving_path", str(target))
    if previous is not None:
        client.set_model_version_tag(name, version, "jaxtx.previous_version", str(previous))
    client.set_registered_model_alias(name, alias, version)
    pushed_model.properties.update(
        pushed=True,
        name=name,
        version=int(version),
        alias=alias,
        previous_version=int(previous) if previous is not None else None,
        serving_path=str(target),
        registry_uri=uri,
    )
    return {"pushed": 1, "version": int(version)}


def rollback(
    name: str,
    *,
    serving_dir: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
) -> tuple[int, int]:
    """Move ``alias`` and the served version back to the previous holder.

    The rolled-back version's serving directory is moved aside to
    ``<serving_dir>/<name>/.rolled-back/<version>`` (kept, not deleted), so a
    server with the default "latest" policy serves the previous version again.

    Returns:
      ``(from_version, to_version)``.

    Raises:
      RollbackError: no alias, or no previous version recorded.
    """
    client, _ = _client(tracking_uri)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except Exception as e:
        raise RollbackError(f"model {name!r} has no alias {alias!r} in the registry: {e}") from e
    prev = current.tags.get("jaxtx.previous_version")
    if not prev:
        raise RollbackError(
            f"{name} version {current.version} ({alias}) records no previous version: "
            "it was the first push, there is nothing to roll back to"
        )
    base = Path(serving_dir).resolve() / name
    if not (base / prev).is_dir():
        raise RollbackError(f"the previous version's serving copy {base / prev} is missing")
    client.set_registered_model_alias(name, alias, prev)
    client.set_model_version_tag(name, current.version, "jaxtx.rolled_back", "true")
    cur_dir = base / str(current.version)
    if cur_dir.exists():
        aside = base / ".rolled-back" / str(current.version)
        aside.parent.mkdir(parents=True, exist_ok=True)
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(cur_dir, aside)
    return int(current.version), int(prev)
