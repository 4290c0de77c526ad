"""Progress of long steps (Beam stages, bulk inference) for the console.

A *board* shows the steps running in this process: a ``rich`` progress bar on
a terminal, plain lines in logs (one every ``interval`` seconds per step, and
one when the step ends). The pipeline runner opens one for a run (see
:func:`open_board`); without a board every call here does nothing, so
libraries report progress unconditionally and cost nothing when used alone.

Libraries count rows in a Beam pipeline with a side branch::

    _ = batches | "Progress" >> progress.counting("reading", rows=num_rows)

The count is kept in this process: with the in-process Beam runner the bar
moves as rows are read; on workers of another process (a Dask cluster, Beam's
multi-processing mode) there is no board and the branch counts nothing.
Steps are labelled by the pipeline node that built them (:func:`node_scope`).

Modes (``JAXTX_PROGRESS``): ``auto`` (rich on a terminal, plain lines
otherwise, nothing under pytest), ``rich``, ``plain``, ``off``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["Board", "counting", "node_scope", "open_board", "progress_mode", "task"]

_NODE: contextvars.ContextVar[tuple[str, list[str]] | None] = contextvars.ContextVar(
    "jaxtx_progress_node", default=None
)
_LOCK = threading.Lock()
_BOARD: Board | None = None
_TASKS: dict[str, _Task] = {}


def progress_mode(stream: TextIO | None = None) -> str:
    """``rich``, ``plain`` or ``off``: from ``JAXTX_PROGRESS`` (default ``auto``).

    Args:
      stream: where progress goes (default ``sys.stderr``): ``auto`` picks
        ``rich`` when it is a terminal and rich is installed.
    """
    mode = os.environ.get("JAXTX_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "rich", "plain", "off"):
        raise ValueError(f"JAXTX_PROGRESS={mode!r}: expected auto, rich, plain or off")
    if mode != "auto":
        return mode
    if "PYTEST_CURRENT_TEST" in os.environ:
        return "off"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            return "plain"
        return "rich"
    return "plain"


class _Task:
    """One step's count, shown by the board."""

    def __init__(self, board: Board, label: str, total: int | None, unit: str) -> None:
        self.id = uuid.uuid4().hex
        self.board, self.label, self.total, self.unit = board, label, total, unit
        self.count = 0
        self.started = time.monotonic()
        self.last_line = self.started
        self.handle: Any = None  # the rich task id

    def line(self, done: bool = False) -> str:
        """``<label>: <count>[/<total>] <unit>`` with the percentage, or the seconds when done."""
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({100 * self.count / self.total:.0f}%)" if self.total and not done else ""
        took = f", {time.monotonic() - self.started:.1f} s" if done else ""
        return f"{self.label}: {self.count:,}{of} {self.unit}{pct}{took}"


class Board:
    """Shows the running steps of this process.

    Args:
      mode: ``rich`` (a live progress bar) or ``plain`` (lines).
      stream: where plain lines go (default ``sys.stderr``).
      console: the ``rich`` console to draw on (default: a new one on stderr);
        lines printed through it appear above the bar.
      interval: seconds between two plain lines of one step.
      prefix: put before each plain line.
    """

    def __init__(
        self,
        mode: str = "plain",
        *,
        stream: TextIO | None = None,
        console: Any = None,
        interval: float = 10.0,
        prefix: str = "[jaxtx]   ",
    ) -> None:
        if mode not in ("rich", "plain"):
            raise ValueError(f"mode {mode!r}: expected 'rich' or 'plain'")
        self.mode, self.interval, self.prefix = mode, interval, prefix
        self.stream = stream
        self._rich: Any = None
        if mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console if console is not None else Console(stderr=True),
            )
        self._open = 0

    def _print(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"{self.prefix}{text}", file=stream, flush=True)

    def add(self, label: str, total: int | None, unit: str) -> _Task:
        """Show a new step (the bar starts with the first one).

        Args:
          label: the step's name on the console.
          total: its final count, if known.
          unit: what it counts.

        Returns:
          The step.
        """
        t = _Task(self, label, total, unit)
        if self._rich is not None:
            if self._open == 0:
                self._rich.start()
            t.handle = self._rich.add_task(f"{label} ({unit})", total=total)
        self._open += 1
        return t

    def advance(self, t: _Task, n: int) -> None:
        """Count ``n`` more: the bar moves; a plain line when ``interval`` has passed."""
        t.count += n
        if self._rich is not None:
            self._rich.update(t.handle, completed=t.count)
            return
        now = time.monotonic()
        if now - t.last_line >= self.interval:
            t.last_line = now
            self._print(t.line())

    def close(self, t: _Task) -> None:
        """End a step: its final plain line, or its bar full (the bar ends with the last step)."""
        self._open -= 1
        if self._rich is not None:
            self._rich.update(t.handle, completed=t.count, total=t.total or t.count)
            if self._open == 0:
                self._rich.stop()
                for handle in list(self._rich.task_ids):
                    self._rich.remove_task(handle)
            return
        self._print(t.line(done=True))


@contextlib.contextmanager
def open_board(board: Board | None) -> Iterator[Board | None]:
    """Within the block, steps of this process are shown on ``board`` (``None``: not shown)."""
    global _BOARD
    with _LOCK:
        previous, _BOARD = _BOARD, board
    try:
        yield board
    finally:
        with _LOCK:
            _BOARD = previous


@contextlib.contextmanager
def node_scope(label: str) -> Iterator[None]:
    """Steps started within the block are labelled ``label`` (a pipeline node's
    id) and end with it."""
    token = _NODE.set((label, []))
    try:
        yield
    finally:
        scope = _NODE.get()
        _NODE.reset(token)
        for task_id in scope[1] if scope else []:
            _close(task_id)


def task(description: str, *, total: int | None = None, unit: str = "rows") -> str | None:
    """Start a step; its id for :func:`advance`, ``None`` without a board.

    The step ends with the enclosing :func:`node_scope` (or :func:`end`).

    Args:
      description: what the step does (``"reading"``), shown after the node's label.
      total: the count when done, if known (a bar with a percentage).
      unit: what one count is.
    """
    with _LOCK:
        board = _BOARD
        if board is None:
            return None
        scope = _NODE.get()
        label = f"{scope[0]} {description}" if scope else description
        t = board.add(label, total, unit)
        _TASKS[t.id] = t
    if scope is not None:
        scope[1].append(t.id)
    return t.id


def advance(task_id: str | None, n: int) -> None:
    """Count ``n`` more for the step (nothing for an unknown step: another process)."""
    if task_id is None:
        return
    with _LOCK:
        t = _TASKS.get(task_id)
        if t is not None:
            t.board.advance(t, n)


def end(task_id: str | None) -> None:
    """End a step now (else it ends with its node scope)."""
    _close(task_id)


def _close(task_id: str | None) -> None:
    with _LOCK:
        t = _TASKS.pop(task_id, None) if task_id is not None else None
        if t is not None:
            t.board.close(t)


def counting(
    description: str,
    *,
    rows: Callable[[Any], int] = len,
    total: int | None = None,
    unit: str = "rows",
) -> Any:
    """A Beam transform that counts a PCollection's rows into a new step (see
    :func:`task`) and outputs nothing: apply it as a side branch.

    Args:
      description: what is counted.
      rows: the rows in one element (e.g. ``lambda batch: batch.num_rows``).
      total: the expected count, if known.
      unit: what one count is.
    """
    import apache_beam as beam

    return beam.FlatMap(_count, task(description, total=total, unit=unit), rows)


def _count(element: Any, task_id: str | None, rows: Callable[[Any], int]) -> tuple[()]:
    if task_id is not None:
        advance(task_id, rows(element))
    return ()
