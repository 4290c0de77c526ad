"""Callbacks for :meth:`TrainLoop.fit`.

A callback implements any of four hooks (the :class:`Callback` base class
provides no-op defaults):

* ``on_train_begin(state, ctx)``: ``ctx`` is the :class:`FitContext` (epochs,
  steps, steps per epoch, the live history); keep it if you need it later.
* ``on_step_end(step, state, metrics) -> bool | None``: after each optimizer
  step; ``metrics`` are the batch means as device scalars (reading one with
  ``float()`` waits for the step, so do it sparingly). Return ``True`` to stop.
  When the trainer runs several steps per compiled call
  (``TrainLoop(steps_per_execution=...)``, automatic by default, and a whole
  epoch per call when the training rows are kept on the device), the hook is
  still called once for every step, in order, once the call has run: with
  that step's own metrics (numpy scalars, copied from the device on first
  read), but with the state at the end of the call, and a stop request takes
  effect after the call. A callback that needs the exact state after certain
  steps says so with ``needs_exact_state(step) -> bool``; the trainer then
  ends a call at each such step (:class:`Checkpoint` does this for its step
  interval).
* ``on_epoch_end(epoch, state, logs) -> bool | None``: after the epoch and its
  evaluation; ``logs`` is the epoch record (``loss``, ``val_loss``, ...) and
  callbacks may add entries to it. Return ``True`` to stop.
* ``on_train_end(state, history)``.

Callbacks run in ascending ``order`` (then as given): :class:`LearningRateLogger`
(-10) adds its entry before the others see the record, and :class:`Checkpoint`
(100) saves after everything else.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, TextIO

import jax
import numpy as np

from ._history import History
from ._state import TrainState

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "FitContext",
    "LearningRateLogger",
    "MetricsCallback",
    "ProgressBar",
]


@dataclasses.dataclass
class FitContext:
    """The fit loop's bookkeeping, shared with callbacks.

    Attributes:
      epochs: requested number of epochs (``None`` if bounded by steps).
      steps: requested number of steps (``None`` if bounded by epochs).
      steps_per_epoch: batches per epoch, when the data knows it.
      batch_size: rows per batch.
      history: the live :class:`History`.
      epoch: the current epoch.
      step: steps taken so far.
      epoch_start_step: the step at which the current epoch started.
      initial_step: the step training (re)started from.
    """

    epochs: int | None
    steps: int | None
    steps_per_epoch: int | None
    batch_size: int | None
    history: History
    epoch: int = 0
    step: int = 0
    epoch_start_step: int = 0
    initial_step: int = 0
    running_sums: Callable[[], dict[str, float]] = dataclasses.field(default=lambda: {}, repr=False)


class Resume(NamedTuple):
    """What a restoring callback hands back to the fit loop."""

    state: TrainState
    history: History
    epoch: int
    epoch_start_step: int
    epoch_done: bool
    sums: dict[str, float]


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    order: ClassVar[int] = 0

    def on_train_begin(self, state: TrainState, ctx: FitContext) -> None:
        """Called once before the first step (after a resume, with the restored state)."""

    def on_step_end(self, step: int, state: TrainState, metrics: Mapping[str, Any]) -> bool | None:
        """Called after every step; return ``True`` to stop training."""
        return None

    def on_epoch_end(self, epoch: int, state: TrainState, logs: dict[str, Any]) -> bool | None:
        """Called after each epoch's evaluation; return ``True`` to stop training."""
        return None

    def needs_exact_state(self, step: int) -> bool:
        """Whether ``on_step_end(step, state, ...)`` must get the state right after ``step``.

        With several steps per compiled call the state is only materialised at
        the end of each call; return ``True`` for the steps at which this
        callback reads or saves ``state`` so that a call ends there. The
        default (``False``) lets calls run over any step.
        """
        return False

    def on_train_end(self, state: TrainState, history: History) -> None:
        """Called once when training ends (also after a stop request)."""


# --------------------------------------------------------------------------- early stopping


class EarlyStopping(Callback):
    """Stop when a monitored metric has not improved for ``patience`` epochs.

    Args:
      monitor: an epoch-record key, e.g. ``"val_loss"`` or ``"val_accuracy"``.
      patience: epochs without improvement to tolerate.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy/auc-like names).
      min_delta: smallest change that counts as an improvement.

    Attributes:
      best: best value seen.
      best_epoch: epoch of ``best``.
      stopped_epoch: epoch at which it asked to stop (``None`` if it did not).

    Example:
      >>> cb = EarlyStopping("val_loss", patience=2)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        mode: str = "auto",
        min_delta: float = 0.0,
    ) -> None:
        if mode == "auto":
            mode = (
                "max" if any(s in monitor for s in ("acc", "auc", "precision", "recall")) else "min"
            )
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def _update(self, epoch: int, logs: Mapping[str, Any]) -> bool:
        if self.monitor not in logs:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r} but the epoch record only has "
                f"{sorted(logs)}; pass eval_data to fit() or monitor one of those"
            )
        value = float(logs[self.monitor])
        better = (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return self.wait >= self.patience

    def on_train_begin(self, state: TrainState, ctx: FitContext) -> None:
        self._reset()
        for rec in ctx.history.epochs:  # replay epochs restored from a checkpoint
            self._update(int(rec.get("epoch", 0)), rec)

    def on_epoch_end(self, epoch: int, state: TrainState, logs: dict[str, Any]) -> bool:
        if self._update(epoch, logs):
            self.stopped_epoch = epoch
            return True
        return False


# --------------------------------------------------------------------------- logging


class LearningRateLogger(Callback):
    """Add the learning rate of an optax schedule to each epoch record.

    Args:
      schedule: the schedule given to the optimizer (``step -> lr``) or a
        constant.
      name: record key.

    Example:
      >>> sched = optax.cosine_decay_schedule(1e-3, decay_steps=1000)
      >>> cb = LearningRateLogger(sched)  # then optax.adam(sched)
    """

    order: ClassVar[int] = -10

    def __init__(self, schedule: Callable[[Any], Any] | float, name: str = "learning_rate") -> None:
        self.schedule, self.name = schedule, name
        self.values: list[float] = []

    def on_epoch_end(self, epoch: int, state: TrainState, logs: dict[str, Any]) -> None:
        lr = self.schedule(int(state.step)) if callable(self.schedule) else self.schedule
        logs[self.name] = float(np.asarray(lr))
        self.values.append(logs[self.name])


class MetricsCallback(Callback):
    """Pass metrics to a function, per epoch or every N steps.

    With ``every="epoch"`` (default) ``fn(epoch, record)`` gets each epoch
    record (train and ``val_`` metrics, floats). With ``every=N`` ``fn(step,
    metrics)`` gets the batch metrics of every N-th step (reading them waits
    for that step). Use two instances for both.

    Args:
      fn: ``fn(index, metrics: dict[str, float])``.
      every: ``"epoch"`` or a step interval.

    Example:
      >>> cb = MetricsCallback(lambda epoch, m: print(epoch, m["loss"]))
    """

    def __init__(
        self, fn: Callable[[int, dict[str, float]], Any], every: str | int = "epoch"
    ) -> None:
        if every != "epoch" and not (isinstance(every, int) and every > 0):
            raise ValueError(f"every must be 'epoch' or a positive int, got {every!r}")
        self.fn, self.every = fn, every

    def on_step_end(self, step: int, state: TrainState, metrics: Mapping[str, Any]) -> None:
        if self.every != "epoch" and step % int(self.every) == 0:
            self.fn(step, {k: float(v) for k, v in metrics.items()})

    def on_epoch_end(self, epoch: int, state: TrainState, logs: dict[str, Any]) -> None:
        if self.every == "epoch":
            self.fn(
                epoch,
                {
                    k: float(v)
                    for k, v in logs.items()
                    if isinstance(v, int | float) and k != "epoch"
                },
            )


class ProgressBar(Callback):
    """Print progress to stderr, at most once per ``interval`` seconds, and each epoch's record.

    Args:
      interval: seconds between progress lines within an epoch.
      stream: where to print (default ``sys.stderr``).

    Example:
      >>> trainer.fit(ds, epochs=3, callbacks=[ProgressBar()])  # doctest: +SKIP
      epoch 1 step 120/391 loss 0.4213 81234 ex/s
    """

    def __init__(self, interval: float = 1.0, stream: TextIO | None = None) -> None:
        self.interval, self.stream = interval, stream
        self._ctx: FitContext | None = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def on_train_begin(self, state: TrainState, ctx: FitContext) -> None:
        self._ctx = ctx
        self._t_epoch = self._t_last = time.monotonic()
        self._epoch_first_step = ctx.step
        if ctx.initial_step:
            self._print(f"resumed from step {ctx.initial_step}")

    def on_step_end(self, step: int, state: TrainState, metrics: Mapping[str, Any]) -> None:
        now = time.monotonic()
        if now - self._t_last < self.interval:
            return
        self._t_last = now
        ctx = self._ctx
        assert ctx is not None
        in_epoch = step - ctx.epoch_start_step
        total = f"/{ctx.steps_per_epoch}" if ctx.steps_per_epoch else ""
        done = step - self._epoch_first_step
        rate = done * (ctx.batch_size or 0) / max(now - self._t_epoch, 1e-9)
        loss = float(metrics["loss"]) if "loss" in metrics else math.nan
        self._print(f"epoch {ctx.epoch + 1} step {in_epoch}{total} loss {loss:.4f} {rate:.0f} ex/s")

    def on_epoch_end(self, epoch: int, state: TrainState, logs: dict[str, Any]) -> None:
        items = " ".join(
            f"{k} {v:.4f}"
            for k, v in logs.items()
            if isinstance(v, float) and k not in ("time", "train_time")
        )
        self._print(f"epoch {epoch + 1} done: {items} ({logs.get('time', 0.0):.1f}s)")
        self._t_epoch = self._t_last = time.monotonic()
        self._epoch_first_step = int(logs.get("step", 0))


# --------------------------------------------------------------------------- checkpoints


class Checkpoint(Callback):
    """Save the train state with Orbax and resume from it.

    Saves every ``every_n_steps`` steps and/or every ``every_n_epochs``
    epochs, plus at the end of training, keeping the newest ``max_to_keep``.
    With it, a run that was killed and is started again with the same
    ``fit`` call continues from the latest complete checkpoint: the state,
    the history of finished epochs and the position inside the epoch are
    restored, and the data of the interrupted epoch is replayed in the same
    order up to that position. Saves are asynchronous (the state is copied to
    host memory, then written in the background); a checkpoint directory
    appears, complete, only when its write has finished.

    Args:
      directory: checkpoint root (``<directory>/<step>/``).
      every_n_steps: step interval (``None``: only per epoch).
      every_n_epochs: epoch interval (``None``: only per step interval).
      max_to_keep: checkpoints kept.
      restore: resume from the latest checkpoint in ``directory`` if there is one.
      async_save: write in a background thread.

    Example:
      >>> cb = Checkpoint("/tmp/run1/ckpt", every_n_steps=500, max_to_keep=3)
    """

    order: ClassVar[int] = 100

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        max_to_keep: int = 3,
        restore: bool = True,
        async_save: bool = True,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.max_to_keep, self.restore_latest, self.async_save = max_to_keep, restore, async_save
        self._manager: Any = None
        self._ctx: FitContext | None = None
        self._last_saved: int | None = None
        self.restored_step: int | None = None

    @property
    def manager(self) -> Any:
        """The ``orbax.checkpoint.CheckpointManager`` (created on first use)."""
        if self._manager is None:
            import orbax.checkpoint as ocp

            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.max_to_keep,
                    create=True,
                    cleanup_tmp_directories=True,
                    enable_async_checkpointing=self.async_save,
                ),
            )
        return self._manager

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or ``None``."""
        return self.manager.latest_step()

    def restore(self, template: TrainState) -> Resume | None:
        """Load the newest checkpoint into the shape and sharding of ``template``.

        Args:
          template: a state with the right structure (its values are unused).

        Returns:
          The restored position, or ``None`` when there is no checkpoint (or
          ``restore=False``).
        """
        if not self.restore_latest:
            return None
        step = self.latest_step()
        if step is None:
            return None
        import orbax.checkpoint as ocp

        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        meta = out.meta
        self.restored_step = step
        self._last_saved = step
        return Resume(
            state=out.state,
            history=History.from_dict(meta["history"]),
            epoch=int(meta["epoch"]),
            epoch_start_step=int(meta["epoch_start_step"]),
            epoch_done=bool(meta["epoch_done"]),
            sums={k: float(v) for k, v in meta.get("sums", {}).items()},
        )

    def save(self, state: TrainState, *, epoch_done: bool) -> None:
        """Save ``state`` with the loop position (called by the hooks)."""
        import orbax.checkpoint as ocp

        ctx = self._ctx
        assert ctx is not None, "Checkpoint.save is called from within fit()"
        step = ctx.step
        if step == self._last_saved:
            return
        meta = {
            "step": step,
            "epoch": ctx.epoch,
            "epoch_start_step": ctx.epoch_start_step,
            "epoch_done": epoch_done,
            "history": ctx.history.to_dict(),
            "sums": {} if epoch_done else ctx.running_sums(),
        }
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._last_saved = step

    def on_train_begin(self, state: TrainState, ctx: FitContext) -> None:
        self._ctx = ctx

    def needs_exact_state(self, step: int) -> bool:
        """The state is saved after every ``every_n_steps``-th step."""
        return bool(self.every_n_steps) and step % self.every_n_steps == 0  # type: ignore[operator]

    def on_step_end(self, step: int, state: TrainState, metrics: Mapping[str, Any]) -> None:
        if self.every_n_steps and step % self.every_n_steps == 0:
            steps_per_epoch = self._ctx.steps_per_epoch if self._ctx else None
            at_epoch_end = bool(steps_per_epoch) and (
                step - self._ctx.epoch_start_step == steps_per_epoch  # type: ignore[union-attr]
            )
            if not at_epoch_end:  # the epoch-end save carries the finished epoch
                self.save(state, epoch_done=False)

    def on_epoch_end(self, epoch: int, state: TrainState, logs: dict[str, Any]) -> None:
        every = self.every_n_epochs
        if (
            every
            and (epoch + 1) % every == 0
            or self.every_n_steps
            and self._ctx
            and self._ctx.step % self.every_n_steps == 0
        ):
            self.save(state, epoch_done=True)

    def on_train_end(self, state: TrainState, history: History) -> None:
        if self._ctx is not None and self._ctx.history.epochs:
            last = self._ctx.history.epochs[-1]
            if int(last.get("step", -1)) == self._ctx.step:
                self.save(state, epoch_done=True)
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending writes and release the manager."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None
