"""Per-epoch training history, JSON round trip and PNG training curves."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["History"]

_NON_METRICS = ("epoch", "step", "time", "train_time")
#: Schedules rather than measurements: drawn on a log scale, and left out of the
#: default panels (named in the figure title instead) when constant.
_SCHEDULES = ("learning_rate", "lr")


@dataclasses.dataclass
class History:
    """What :meth:`TrainLoop.fit` returns: one record per epoch.

    Each record holds ``epoch``, ``step`` (optimizer steps so far), the train
    metrics (``loss``, ``accuracy``, ...), the eval metrics prefixed with
    ``val_``, whatever callbacks added (``learning_rate``), ``train_time`` and
    ``time`` in seconds.

    Attributes:
      epochs: the records, oldest first.
      initial_step: the step training started from (non-zero when it resumed
        from a checkpoint).

    Example:
      >>> h = History([{"epoch": 0, "step": 10, "loss": 0.7, "val_loss": 0.69}])
      >>> h.history["loss"]
      [0.7]
    """

    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    initial_step: int = 0

    @property
    def history(self) -> dict[str, list[Any]]:
        """``{metric: [value per epoch]}`` (Keras' ``History.history`` layout)."""
        keys: list[str] = []
        for rec in self.epochs:
            keys += [k for k in rec if k not in keys]
        return {k: [rec.get(k) for rec in self.epochs] for k in keys}

    @property
    def last(self) -> dict[str, Any]:
        """The latest record (empty before the first epoch ends)."""
        return dict(self.epochs[-1]) if self.epochs else {}

    def append(self, record: dict[str, Any]) -> None:
        """Add an epoch record."""
        self.epochs.append(record)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``{"epochs": [...], "initial_step": n}``)."""
        return {"epochs": [dict(r) for r in self.epochs], "initial_step": self.initial_step}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls([dict(r) for r in data.get("epochs", [])], int(data.get("initial_step", 0)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (the model artifact's ``history.json``)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a file written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def metric_names(self) -> list[str]:
        """Train metric names that have a value in some epoch (``loss`` first)."""
        names = []
        for k in self.history:
            base = k.removeprefix("val_")
            if base not in _NON_METRICS and base not in names:
                names.append(base)
        return sorted(names, key=lambda n: (n != "loss", n))

    def plot(self, path: str | os.PathLike[str], metrics: Sequence[str] | None = None) -> None:
        """Draw training curves to a PNG: one panel per metric, train and ``val_`` curves.

        Uses matplotlib's Agg canvas directly, so it works without a display and
        leaves pyplot's global state alone.

        Epochs are numbered from 1, as on the console. A learning-rate
        schedule is drawn on a log scale; when it is constant it gets no panel
        (unless named in ``metrics``) and its value goes in the figure title.

        Args:
          path: output file (``.png``).
          metrics: metric names to draw (default: every metric recorded).

        Example:
          >>> history.plot("curves.png")  # doctest: +SKIP
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        cols = self.history
        names = list(metrics) if metrics is not None else self.metric_names()
        constant = {
            n: v for n in names if n in _SCHEDULES and (v := _constant(cols.get(n))) is not None
        }
        if metrics is None:
            names = [n for n in names if n not in constant]
        if not names:
            raise ValueError("nothing to plot: the history has no metrics yet")
        # Records count epochs from 0; the console and the figure count from 1.
        epochs = [e + 1 for e in cols.get("epoch", list(range(len(self.epochs))))]
        fig = Figure(figsize=(5 * len(names), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        for i, name in enumerate(names):
            ax = fig.add_subplot(1, len(names), i + 1)
            single = f"val_{name}" not in cols
            for key, label in ((name, name if single else "train"), (f"val_{name}", "eval")):
                if key in cols:
                    pts = [(e, v) for e, v in zip(epochs, cols[key], strict=False) if v is not None]
                    if pts:
                        xs, ys = zip(*pts, strict=True)
                        ax.plot(xs, ys, marker="o", markersize=3, label=label)
            if name in _SCHEDULES and name not in constant:
                ax.set_yscale("log")
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend()
        if constant:
            fig.suptitle(
                ", ".join(f"{n} {v:g} (constant)" for n, v in constant.items()), fontsize=10
            )
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png")


def _constant(values: Sequence[Any] | None) -> float | None:
    """The single value of a series that never changes, else ``None``."""
    seen = {float(v) for v in values or () if v is not None}
    return seen.pop() if len(seen) == 1 else None
