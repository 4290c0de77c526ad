"""Tuner: hyperparameter search over the Trainer's parameters (Optuna, TPE, pruning).

A wrapper over :func:`jaxtx.core.tuning.run_study`: each trial trains the
Trainer's model on the transformed examples for ``epochs`` epochs, reports the
validation metric after every epoch (a median pruner stops hopeless trials)
and is logged as an MLflow run nested under the Tuner's run (parameters,
per-epoch metrics, state). The study is kept in ``study.db`` (SQLite) in the
component's working folder, so a killed search resumes where it stopped. The
best parameters are a :class:`Hyperparameters` artifact the Trainer takes::

    tuner = Tuner(examples=t.outputs.transformed_examples,
                  transform_graph=t.outputs.transform_graph, label="label")
    Trainer(..., hyperparameters=tuner.outputs.best)

Searchable parameters (keys of ``search_space``): ``learning_rate``,
``batch_size``, ``epochs`` (the Trainer's), ``gradient_clip_norm``, and for the
default model ``hidden`` (layer widths) and ``dropout``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._artifacts import Examples, Hyperparameters, Output, TransformGraph
from ._component import RunContext, component

__all__ = ["DEFAULT_SEARCH_SPACE", "SEARCHABLE", "Tuner", "trainer_settings"]

FORMAT = "jaxtx.hyperparameters/1"
SEARCHABLE = ("learning_rate", "batch_size", "epochs", "gradient_clip_norm", "hidden", "dropout")
DEFAULT_SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "hidden": {"type": "categorical", "choices": [[32], [64, 32], [128, 64]]},
    "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
}


def trainer_settings(values: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """The Trainer's settings with hyperparameters applied.

    Args:
      values: hyperparameters (keys in :data:`SEARCHABLE`).
      **defaults: ``learning_rate``, ``batch_size``, ``epochs``,
        ``gradient_clip_norm`` and ``model_def`` as the Trainer has them.

    Returns:
      ``defaults`` with the hyperparameters applied; ``hidden``/``dropout``
      build an ``MLP`` when ``model_def`` is None.

    Raises:
      ValueError: an unknown hyperparameter.
    """
    unknown = sorted(set(values) - set(SEARCHABLE))
    if unknown:
        raise ValueError(f"hyperparameters {unknown} are not Trainer settings; use {SEARCHABLE}")
    out = dict(defaults)
    for key in ("learning_rate", "gradient_clip_norm"):
        if key in values:
            out[key] = float(values[key])
    for key in ("batch_size", "epochs"):
        if key in values:
            out[key] = int(values[key])
    if out.get("model_def") is None and ({"hidden", "dropout"} & set(values)):
        from jaxtx import trainer as jt

        out["model_def"] = jt.MLP(
            hidden=tuple(int(h) for h in values.get("hidden", (64, 32))),
            dropout=float(values.get("dropout", 0.0)),
        )
    return out


def _fit_trial(
    examples: Examples,
    graph: Any,
    settings: Mapping[str, Any],
    *,
    label: str,
    task: str,
    metric: str,
    seed: int,
    on_epoch: Any,
) -> float:
    """Train one trial's model; ``on_epoch(epoch, metrics)`` after each epoch."""
    from jaxtx import trainer as jt

    history = jt.train_transformed(
        graph,
        examples.files("train"),
        examples.files("eval"),
        label=label,
        model_def=settings.get("model_def"),
        task=task,
        epochs=int(settings["epochs"]),
        batch_size=int(settings["batch_size"]),
        learning_rate=settings["learning_rate"],
        gradient_clip_norm=settings.get("gradient_clip_norm"),
        early_stopping_patience=None,
        seed=seed,
        callbacks=[jt.MetricsCallback(lambda epoch, m: on_epoch(int(epoch), m))],
    ).history
    values = history.history.get(metric) or []
    if not values:
        raise ValueError(
            f"Tuner: metric {metric!r} was not reported; epoch metrics are "
            f"{sorted(history.history)}"
        )
    return float(values[-1])


class _TrialRuns:
    """Nested MLflow runs, one per trial, under the component's run (no-op without one)."""

    def __init__(self, ctx: RunContext) -> None:
        self.client = None
        self.parent = ctx.mlflow_run_id
        if ctx.tracking_uri and ctx.mlflow_run_id:
            from jaxtx.core.tracking import MLFLOW_LOCK, mlflow_client

            with MLFLOW_LOCK:
                self.client = mlflow_client(ctx.tracking_uri)
                self.experiment = self.client.get_run(ctx.mlflow_run_id).info.experiment_id

    def start(self, number: int, params: Mapping[str, Any]) -> str | None:
        if self.client is None:
            return None
        from jaxtx.core.tracking import MLFLOW_LOCK

        tags = {"mlflow.parentRunId": self.parent, "jaxtx.trial": str(number)}
        with MLFLOW_LOCK:
            run = self.client.create_run(self.experiment, run_name=f"trial-{number}", tags=tags)
            for key, value in params.items():
                self.client.log_param(run.info.run_id, key, json.dumps(value))
        return str(run.info.run_id)

    def log(self, run_id: str | None, metrics: Mapping[str, float], step: int) -> None:
        if self.client is None or run_id is None:
            return
        from jaxtx.core.tracking import MLFLOW_LOCK

        with MLFLOW_LOCK:
            for key, value in metrics.items():
                if math.isfinite(float(value)):
                    self.client.log_metric(run_id, key, float(value), step=step)

    def end(self, run_id: str | None, state: str) -> None:
        if self.client is None or run_id is None:
            return
        from jaxtx.core.tracking import MLFLOW_LOCK

        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        with MLFLOW_LOCK:
            self.client.set_tag(run_id, "jaxtx.trial_state", state)
            self.client.set_terminated(run_id, status)


def _logged_objective(runs: _TrialRuns, fit: Any, metric: str) -> Any:
    """``objective(number, params, report)`` for run_study: one nested MLflow run per trial."""

    def objective(number: int, params: dict[str, Any], report: Any) -> float:
        run_id = runs.start(number, params)
        state = "FAIL"

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            runs.log(run_id, metrics, epoch)
            report(epoch, metrics[metric])

        try:
            value = float(fit(params, on_epoch))
            state = "COMPLETE"
            runs.log(run_id, {f"final_{metric}": value}, 0)
            return value
        except Exception as exc:
            if type(exc).__name__ == "TrialPruned":
                state = "PRUNED"
            raise
        finally:
            runs.end(run_id, state)

    return objective


@component
def Tuner(
    examples: Examples,
    transform_graph: TransformGraph,
    best: Output[Hyperparameters],
    ctx: RunContext,
    *,
    label: str,
    search_space: dict[str, dict[str, Any]] | None = None,
    task: str = "binary_classification",
    num_trials: int = 20,
    epochs: int = 5,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    metric: str = "val_loss",
    direction: str = "minimize",
    n_jobs: int = 1,
    seed: int = 0,
    study_name: str = "tuner",
) -> dict[str, float]:
    """Search the Trainer's hyperparameters; output the best as ``best``.

    Args:
      examples: Transform's ``transformed_examples`` (features + the label).
      transform_graph: Transform's graph (feature names and vocabularies).
      label: the label column.
      search_space: see :mod:`jaxtx.core.tuning`; keys in :data:`SEARCHABLE`;
        default :data:`DEFAULT_SEARCH_SPACE`.
      task: as the Trainer's.
      num_trials: finished trials wanted (a resumed study counts its old ones).
      epochs, batch_size, learning_rate: values of the parameters not searched.
      metric: epoch metric to optimize and prune on (``val_loss``, ...).
      direction: ``"minimize"`` or ``"maximize"``.
      n_jobs: trials in parallel (threads).
      seed: seeds the sampler and every trial's training.
      study_name: the study's name in ``study.db``.
    """
    from jaxtx import trainer as jt
    from jaxtx.core.tuning import run_study

    jt.loss_for_task(task)  # an unknown task fails before any trial
    space = dict(search_space or DEFAULT_SEARCH_SPACE)
    unknown = sorted(set(space) - set(SEARCHABLE))
    if unknown:
        raise ValueError(
            f"Tuner: search_space keys {unknown} are not Trainer settings; use {SEARCHABLE}"
        )
    for split in ("train", "eval"):
        jt.check_label(examples.files(split), label, what=f"the {split!r} split of {examples.uri}")
    graph = transform_graph.load()
    defaults = {
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "epochs": epochs,
        "gradient_clip_norm": None,
        "model_def": None,
    }
    objective = _logged_objective(
        _TrialRuns(ctx),
        lambda params, on_epoch: _fit_trial(
            examples,
            graph,
            trainer_settings(params, **defaults),
            label=label,
            task=task,
            metric=metric,
            seed=seed,
            on_epoch=on_epoch,
        ),
        metric,
    )
    folder = ctx.work_dir or Path(tempfile.mkdtemp(prefix="jaxtx-tuner-"))
    result = run_study(
        objective,
        space,
        storage=Path(folder) / "study.db",
        study_name=study_name,
        num_trials=num_trials,
        direction=direction,
        seed=seed,
        n_jobs=n_jobs,
    )
    doc = {
        "format": FORMAT,
        "values": result.best_params,
        "metric": metric,
        "direction": direction,
        "best_value": result.best_value,
        "best_trial": result.best_trial,
        "study": study_name,
        "storage": str(Path(folder) / "study.db"),
    }
    (best.path / Hyperparameters.FILE).write_text(json.dumps(doc, indent=2))
    (best.path / "trials.json").write_text(json.dumps(result.trials, indent=2))
    states = [t["state"] for t in result.trials]
    best.properties.update(values=result.best_params, metric=metric, best_value=result.best_value)
    return {
        f"best_{metric}": result.best_value,
        "num_trials": float(states.count("COMPLETE") + states.count("PRUNED")),
        "num_pruned": float(states.count("PRUNED")),
    }
