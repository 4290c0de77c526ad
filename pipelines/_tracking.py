"""MLflow tracking: one parent run per pipeline run, one nested run per component.

Uses :class:`mlflow.MlflowClient` with explicit run ids (never the fluent API's
thread-local active run), so components running concurrently in threads log to
their own runs. Calls hold :data:`jaxtx.core.tracking.MLFLOW_LOCK` (the one
lock of every MLflow call jaxtx makes): the embedded SQLite store does not
like concurrent writers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxtx.core.tracking import MLFLOW_LOCK as _LOCK
from jaxtx.core.tracking import mlflow_client

from ._owner import owner_tags

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "Tracker"]

#: The experiment tag MLflow's UI reads to choose its mode, and the value that
#: opens it on model training (runs, metrics, models) rather than GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Query of jaxtx's MLflow UI links: MLflow 3's UI opens every experiment in its
#: GenAI view (traces, "Evaluation runs") unless the link asks for the model
#: training view; the experiment's kind tag alone does not switch it.
MLFLOW_UI_QUERY = "workflowType=machine_learning"
EXPERIMENT_KIND = "custom_model_development"

_log = logging.getLogger("jaxtx.tracking")
_MAX_PARAM = 6000


class Tracker:
    """Logs a pipeline run to MLflow.

    Args:
      tracking_uri: any MLflow tracking URI.
      experiment: experiment name (the pipeline's name).
      artifact_location: where a new experiment keeps run artifacts.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None) -> None:
        self.tracking_uri = tracking_uri
        self._artifact_uris: dict[str, str] = {}
        with _LOCK:
            self.client = mlflow_client(tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=artifact_location
                    )
                except Exception:  # created concurrently by another process
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
                    self.experiment_id = exp.experiment_id
            else:
                self.experiment_id = exp.experiment_id
            if exp is None or EXPERIMENT_KIND_TAG not in exp.tags:
                # Without it MLflow 3's UI opens the experiment in GenAI mode (traces).
                self.client.set_experiment_tag(
                    self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )

    def next_run_number(self, pipeline: str) -> int:
        """The number of this pipeline's next parent run (``<pipeline> #<n>``)."""
        with _LOCK:
            last = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`jaxtx.pipeline` = '{pipeline}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        if not last:
            return 1
        try:
            return int(last[0].data.tags.get("jaxtx.run_number", "0")) + 1
        except ValueError:
            return 1

    def ui_url(self, run_id: str | None = None) -> str:
        """The run's (or the experiment's) page in the MLflow UI; for the embedded
        store, where ``jaxtx ui`` serves it by default."""
        base = self.tracking_uri.rstrip("/")
        if not base.startswith(("http://", "https://")):
            base = "http://127.0.0.1:5000"
        url = f"{base}/#/experiments/{self.experiment_id}"
        return f"{url}/runs/{run_id}?{MLFLOW_UI_QUERY}" if run_id else f"{url}?{MLFLOW_UI_QUERY}"

    def start_run(
        self,
        name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        all_tags = {**owner_tags(), **dict(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        with _LOCK:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.log_batch(run_id, params=params)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_batch(run_id, metrics=metrics, step=step)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.log_batch(run_id, tags=tags)

    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        """Parameters, metrics (at ``step``) and tags in one store transaction
        (each call is a commit of the SQLite store: a node logs with as few as it can).
        """
        from mlflow.entities import Metric, Param, RunTag

        ts = int(time.time() * 1000)
        p = [Param(str(k)[:250], _param_value(v)) for k, v in (params or {}).items()]
        m = [Metric(_metric_key(k), float(v), ts, step) for k, v in (metrics or {}).items()]
        t = [RunTag(str(k), str(v)[:5000]) for k, v in (tags or {}).items()]
        if p or m or t:
            with _LOCK:
                self.client.log_batch(run_id, metrics=m, params=p, tags=t)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        with _LOCK:
            self._artifact_repo(run_id).log_artifacts(str(local_dir), artifact_path)

    def log_artifact(self, run_id: str, local_file: Path, artifact_path: str | None = None) -> None:
        with _LOCK:
            self._artifact_repo(run_id).log_artifact(str(local_file), artifact_path)

    def _artifact_repo(self, run_id: str) -> Any:
        """The run's artifact repository: for runs this tracker started, made from the
        artifact URI ``create_run`` returned (the client would read the run again)."""
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self.client.get_run(run_id).info.artifact_uri
            self._artifact_uris[run_id] = uri
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(uri, tracking_uri=self.tracking_uri)

    def log_dataset(
        self,
        run_id: str,
        *,
        name: str,
        digest: str,
        source: str,
        context: str,
        schema: str | None = None,
        profile: str | None = None,
    ) -> None:
        """Record an input dataset (MLflow's "Datasets used" panel) for lineage."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(
            name=name,
            digest=digest[:36],
            source_type="local",
            source=json.dumps({"uri": source}),
            schema=schema,
            profile=profile,
        )
        with _LOCK:
            self.client.log_inputs(
                run_id, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])]
            )

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        with _LOCK:
            self.client.set_terminated(run_id, status=status)

    def run_url_hint(self, run_id: str) -> str:
        return f"run {run_id} in experiment {self.experiment_id} ({self.tracking_uri})"


def _short(o: Any) -> str:
    name = getattr(o, "__qualname__", None)
    return f"{getattr(o, '__module__', '')}.{name}" if name else repr(o)


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=_short)
    return s if len(s) <= _MAX_PARAM else s[: _MAX_PARAM - 3] + "..."


def _metric_key(k: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(k))[:250]
