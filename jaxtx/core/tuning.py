"""Hyperparameter search with Optuna: a search space, a resumable study, pruning.

:func:`run_study` minimizes (or maximizes) ``objective(number, params, report)`` over a
search space with Optuna's TPE sampler (seeded). ``report(step, value)`` gives
the validation metric after each epoch; it raises ``optuna.TrialPruned`` when
the median pruner judges the trial hopeless, which ends the trial as pruned.
The study lives in an SQLite file (Optuna's RDB storage): a search that was
killed resumes where it stopped when :func:`run_study` is called again with
the same file and name (trials left running by the killed process are marked
failed; trial numbers continue; only the missing trials are run).

Search space (JSON-friendly)::

    {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.3, "log": true},
     "batch_size": {"type": "int", "low": 32, "high": 256, "step": 32},
     "hidden": {"type": "categorical", "choices": [[32], [64, 32]]}}

Categorical choices may be lists (stored by Optuna as their JSON text, given
back as lists).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ParamSpec", "StudyResult", "parse_search_space", "run_study"]

Report = Callable[[int, float], None]
#: ``objective(trial_number, params, report) -> value``.
Objective = Callable[[int, dict[str, Any], Report], float]
_KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter (see the module docstring)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value for an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            low, high = int(self.low or 0), int(self.high or 0)
            return trial.suggest_int(self.name, low, high, log=self.log, step=int(self.step or 1))
        encoded = [json.dumps(c) if isinstance(c, list | tuple | dict) else c for c in self.choices]
        value = trial.suggest_categorical(self.name, encoded)
        return decode(value)


def decode(value: Any) -> Any:
    """A categorical value as given in the search space (lists come back as lists)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_search_space(space: Mapping[str, Mapping[str, Any]]) -> list[ParamSpec]:
    """Check and parse a search space.

    Args:
      space: parameter name -> ``{"type": "float"|"int"|"categorical", ...}``.

    Returns:
      The parameters, in the order given.

    Raises:
      ValueError: naming the parameter and the field that is wrong.
    """
    if not space:
        raise ValueError("search space is empty; give at least one parameter")
    out = []
    for name, spec in space.items():
        kind = spec.get("type")
        if kind not in _KINDS:
            raise ValueError(f"search space {name!r}: type must be one of {_KINDS}, got {kind!r}")
        if kind == "categorical":
            choices = tuple(spec.get("choices") or ())
            if not choices:
                raise ValueError(f"search space {name!r}: categorical needs non-empty 'choices'")
            out.append(ParamSpec(str(name), kind, choices=choices))
            continue
        low, high = spec.get("low"), spec.get("high")
        if low is None or high is None or not float(low) < float(high):
            raise ValueError(
                f"search space {name!r}: needs numbers low < high, got low={low!r} high={high!r}"
            )
        log = bool(spec.get("log", False))
        if log and float(low) <= 0:
            raise ValueError(f"search space {name!r}: log=true needs low > 0, got {low!r}")
        out.append(ParamSpec(str(name), kind, float(low), float(high), log, spec.get("step")))
    return out


@dataclass(frozen=True)
class StudyResult:
    """The outcome of a study: the best trial and every trial."""

    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    trials: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "best_params": self.best_params,
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "trials": self.trials,
        }


def _load_study(storage: Path, name: str, direction: str, seed: int, warmup: int) -> Any:
    import optuna

    storage.parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        storage=optuna.storages.RDBStorage(f"sqlite:///{storage}"),
        study_name=name,
        direction=optuna.study.StudyDirection[direction.upper()],
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup),
        load_if_exists=True,
    )


def _fail_stale(study: Any, storage: str | Path) -> int:
    """Mark the trials a killed process left running as failed; how many there were."""
    import optuna
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if stale:
        rdb = optuna.storages.RDBStorage(f"sqlite:///{storage}")
        study_id = rdb.get_study_id_from_name(study.study_name)
        for trial in stale:
            trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            rdb.set_trial_state_values(trial_id, state=TrialState.FAIL)
    return len(stale)


def run_study(
    objective: Objective,
    space: Mapping[str, Mapping[str, Any]],
    *,
    storage: str | Path,
    study_name: str = "study",
    num_trials: int = 20,
    direction: str = "minimize",
    seed: int = 0,
    n_jobs: int = 1,
    pruning_warmup_steps: int = 1,
) -> StudyResult:
    """Run (or resume) a study until it has ``num_trials`` finished trials.

    Args:
      objective: ``objective(trial_number, params, report) -> value``; call
        ``report(epoch, metric)`` after each epoch so that hopeless trials are pruned.
      space: the search space (see the module docstring).
      storage: the SQLite file holding the study (created when missing).
      study_name: the study's name in that file.
      num_trials: finished (complete or pruned) trials wanted in all, resumed ones included.
      direction: ``"minimize"`` or ``"maximize"``.
      seed: seed of the TPE sampler.
      n_jobs: trials run in parallel threads.
      pruning_warmup_steps: epochs reported before a trial may be pruned.

    Returns:
      The :class:`StudyResult`.

    Raises:
      ValueError: a bad search space or direction; RuntimeError: no trial completed.
    """
    import optuna
    from optuna.trial import TrialState

    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    params = parse_search_space(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _load_study(Path(storage), study_name, direction, seed, pruning_warmup_steps)
    _fail_stale(study, storage)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def run_trial(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in params}

        def report(step: int, value: float) -> None:
            trial.report(float(value), int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {value:.6g}")

        return float(objective(trial.number, values, report))

    remaining = max(0, int(num_trials) - len(done))
    if remaining:
        study.optimize(run_trial, n_trials=remaining, n_jobs=int(n_jobs), catch=())
    return _result(study)


def _result(study: Any) -> StudyResult:
    from optuna.trial import TrialState

    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": {k: decode(v) for k, v in t.params.items()},
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        }
        for t in study.get_trials(deepcopy=False)
    ]
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(f"study {study.study_name!r}: no trial completed; see its trials")
    best = study.best_trial
    return StudyResult(
        {k: decode(v) for k, v in best.params.items()}, float(best.value), best.number, trials
    )
