"""Dynamic batching: coalesce concurrent requests into one model call.

Requests for the same loaded model version (and the same feature shapes)
wait in one lane. Worker threads, ``num_threads`` of them shared by every
model, take due lanes: a lane is due when it holds ``max_batch_size`` rows
or its first request has waited ``max_wait_ms``. A worker takes as many
requests from the front of the lane as fit in ``max_batch_size`` rows and
runs them as one call of the exported function, so that the event loop
never blocks on JAX. While every worker is busy, requests keep queueing in
their lanes, so batches grow with the load; a worker that finishes a batch
takes the next one at once, without waiting for the event loop.

A fast model skips the workers when they are all idle: with ``max_wait_ms``
0, a batch whose model call last took at most ``inline_max_ms`` at that batch
size (padded to its power-of-two bucket) runs on the event loop itself. Handing
a batch to a worker and its results back costs two thread wake-ups, and on a
machine busy with other work each wake-up waits for a CPU, often longer than a
small model's call; the loop then blocks for at most about ``inline_max_ms``.
The first call at each batch size, and any call whose last run was slower, goes
to a worker (which also measures it), so a compilation or a large model never
runs on the loop.

The event loop hands requests over in bulk: the requests that arrive during
one iteration of the loop are handed to the workers together at its end, and
the results of one batch come back to the loop in one callback.

A batch that fails fails only the requests in it, each with a
`BatchFailedError` naming the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import ServingMetrics
from .runtime import LoadedModel

__all__ = ["BatchFailedError", "BatchingConfig", "Batcher", "OverloadedError"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching settings.

    Attributes:
        enabled: Coalesce requests; when off each request is one model call.
        max_batch_size: Most rows in one model call; larger requests run alone.
        max_wait_ms: Longest a batch waits for more requests before it is due.
            With 0 (the default) a batch is due at once and starts as soon as
            a worker is free; requests that arrive while every worker is busy
            join it, so batches still grow with the load, without adding
            latency when the server is idle.
        num_threads: Worker threads running model calls.
        max_queued_rows: Rows waiting at most; beyond, requests are refused (503).
        inline_max_ms: Run a batch on the event loop instead of a worker when
            every worker is idle, ``max_wait_ms`` is 0 and the model's last
            call at that batch size took at most this long (0: never).
    """

    enabled: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    num_threads: int = 1
    max_queued_rows: int = 100_000
    inline_max_ms: float = 1.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")
        if self.inline_max_ms < 0:
            raise ValueError("inline_max_ms must be >= 0")


class BatchFailedError(RuntimeError):
    """The model call serving a request (and the others batched with it) failed."""


class OverloadedError(RuntimeError):
    """Too many rows are waiting; the client should retry later (HTTP 503)."""


class _Item:
    """One request waiting for its model call."""

    __slots__ = ("arrays", "future", "loop", "model", "rows", "settled", "since")

    def __init__(
        self,
        model: LoadedModel,
        arrays: Mapping[str, np.ndarray],
        rows: int,
        future: asyncio.Future[dict[str, np.ndarray]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.model = model
        self.arrays = arrays
        self.rows = rows
        self.future = future
        self.loop = loop
        self.since = time.monotonic()
        self.settled = False  # its rows given back to the queue's count


class _Lane:
    """Requests that may share a model call, in arrival order."""

    __slots__ = ("items", "rows")

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.rows = 0


class Batcher:
    """Runs model calls for the server, batching them when enabled.

    Use it from a running event loop (for instance the ASGI application's)
    and `close` it on shutdown. The worker threads start with the first
    request.

    Args:
        config: Batching settings.
        metrics: Metrics to record batch sizes and call latency into.
    """

    def __init__(self, config: BatchingConfig, metrics: ServingMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._wait_s = config.max_wait_ms / 1000.0
        # Event loop side: requests of the current loop iteration, handed over at its end.
        self._incoming: dict[asyncio.AbstractEventLoop, list[tuple[tuple[object, ...], _Item]]] = {}
        self._queued_rows = 0
        self._closed = False
        # Shared with the workers, under self._lock.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._lanes: dict[tuple[object, ...], _Lane] = {}
        self._idle_workers = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        # Seconds of each model's last call, by batch bucket (rows rounded up to a
        # power of two); written by whoever ran the call.
        self._inline_s = config.inline_max_ms / 1000.0 if config.max_wait_ms <= 0 else 0.0
        self._call_s: weakref.WeakKeyDictionary[LoadedModel, dict[int, float]] = (
            weakref.WeakKeyDictionary()
        )

    async def predict(
        self, model: LoadedModel, arrays: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run the model on prepared arrays, batched with concurrent requests.

        Args:
            model: The loaded version to call.
            arrays: Arrays from `LoadedModel.prepare` (all with the same rows).

        Returns:
            This request's rows of every output.

        Raises:
            BatchFailedError: The model call failed.
            OverloadedError: Too many rows are queued.
        """
        return await self.submit(model, arrays)

    def submit(
        self, model: LoadedModel, arrays: Mapping[str, np.ndarray]
    ) -> asyncio.Future[dict[str, np.ndarray]]:
        """`predict` without a coroutine: the future of this request's outputs.

        Called in the running event loop; the future is resolved in it.
        Cancelling the future withdraws the request if its batch has not run.

        Raises:
            OverloadedError: Too many rows are queued, or the batcher is closed.
        """
        if self._closed:
            raise OverloadedError("the server is shutting down")
        rows = int(next(iter(arrays.values())).shape[0])
        if self._queued_rows + rows > self.config.max_queued_rows:
            raise OverloadedError(
                f"{self._queued_rows} rows are already waiting; retry later or add replicas"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        item = _Item(model, arrays, rows, future, loop)
        if not self.config.enabled or rows >= self.config.max_batch_size:
            key: tuple[object, ...] = ("alone", id(item))
        else:
            key = (
                id(model),
                *[(name, arr.dtype.str, arr.shape[1:]) for name, arr in arrays.items()],
            )
        if not self._threads:
            self._start_workers()
        incoming = self._incoming.get(loop)
        if incoming is None:
            incoming = self._incoming[loop] = []
            loop.call_soon(self._handover, loop)
        incoming.append((key, item))
        self._queued_rows += rows  # given back when the request is answered (`_deliver`)
        return future

    # ------------------------------------------------------------ event loop
    def _start_workers(self) -> None:
        for i in range(self.config.num_threads):
            thread = threading.Thread(target=self._work, name=f"jaxtx-predict-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handover(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move this loop iteration's requests into their lanes and wake a worker."""
        incoming = self._incoming.pop(loop, None)
        if not incoming:
            return
        if self._inline_s > 0 and not self._lanes and self._idle_workers == len(self._threads):
            incoming = self._run_inline(incoming)
            if not incoming:
                return
        with self._lock:
            lanes = self._lanes
            for key, item in incoming:
                lane = lanes.get(key)
                if lane is None:
                    lane = lanes[key] = _Lane()
                lane.items.append(item)
                lane.rows += item.rows
            if self._idle_workers:
                self._wakeup.notify()

    def _run_inline(
        self, incoming: list[tuple[tuple[object, ...], _Item]]
    ) -> list[tuple[tuple[object, ...], _Item]]:
        """Run on the loop the batches of ``incoming`` whose model is known fast.

        Returns:
            The requests left for the workers, in their order.
        """
        groups: dict[tuple[object, ...], list[_Item]] = {}
        for key, item in incoming:
            groups.setdefault(key, []).append(item)
        left: list[tuple[tuple[object, ...], _Item]] = []
        max_rows = self.config.max_batch_size
        for key, items in groups.items():
            batches: list[list[_Item]] = [[]]
            rows = 0
            for item in items:
                if batches[-1] and rows + item.rows > max_rows:
                    batches.append([])
                    rows = 0
                batches[-1].append(item)
                rows += item.rows
            for batch in batches:
                if not self._fast(batch[0].model, sum(it.rows for it in batch)):
                    left.extend((key, it) for it in batch)
                    continue
                try:
                    self._run(batch, inline=True)
                except Exception as exc:  # never leave a request waiting
                    _log.exception("batch of %d request(s) failed unexpectedly", len(batch))
                    error = BatchFailedError(f"internal error: {type(exc).__name__}: {exc}")
                    self._deliver([it for it in batch if not it.settled], None, error)
        return left

    def _fast(self, model: LoadedModel, rows: int) -> bool:
        """Whether the model's last call at this batch size took at most ``inline_max_ms``."""
        last = self._call_s.get(model, {}).get(_bucket(rows))
        return last is not None and last <= self._inline_s

    def _deliver(
        self,
        items: list[_Item],
        results: list[dict[str, np.ndarray]] | None,
        error: Exception | None,
    ) -> None:
        """Resolve the futures of one batch (on their event loop) and give back their rows.

        With neither ``results`` nor ``error``, only the rows are given back
        (requests withdrawn before their batch ran).
        """
        for it in items:
            if not it.settled:
                it.settled = True
                self._queued_rows -= it.rows
        if error is not None:
            for it in items:
                if not it.future.done():
                    it.future.set_exception(error)
            return
        if results is None:
            return
        for it, result in zip(items, results, strict=True):
            if not it.future.done():
                it.future.set_result(result)

    # --------------------------------------------------------------- workers
    def _take(self) -> list[_Item] | None:
        """Wait for a due batch and take it (None: the batcher is stopping)."""
        max_rows = self.config.max_batch_size
        wait_s = self._wait_s
        with self._lock:
            while True:
                if self._stopping:
                    return None
                lanes = self._lanes
                timeout: float | None = None
                if lanes:
                    now = time.monotonic() if wait_s > 0 else 0.0
                    for key, lane in lanes.items():
                        due = lane.rows >= max_rows or key[0] == "alone" or wait_s <= 0
                        if not due:
                            left = lane.items[0].since + wait_s - now
                            if left > 0:
                                timeout = left if timeout is None else min(timeout, left)
                                continue
                        batch = [lane.items.popleft()]
                        rows = batch[0].rows
                        lane.rows -= rows
                        items = lane.items
                        while items and rows + items[0].rows <= max_rows:
                            it = items.popleft()
                            batch.append(it)
                            rows += it.rows
                            lane.rows -= it.rows
                        del lanes[key]
                        if items:  # to the back of the line, behind the other models
                            lanes[key] = lane
                        return batch
                self._idle_workers += 1
                try:
                    self._wakeup.wait(timeout)
                finally:
                    self._idle_workers -= 1

    def _work(self) -> None:
        """Worker thread: run due batches until the batcher stops."""
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as exc:  # keep the worker alive, whatever happened
                _log.exception("batch of %d request(s) failed unexpectedly", len(batch))
                error = BatchFailedError(f"internal error: {type(exc).__name__}: {exc}")
                for it in batch:
                    self._post(it.loop, [it], None, error)

    def _run(self, batch: list[_Item], inline: bool = False) -> None:
        items = [it for it in batch if not it.future.done()]
        if len(items) < len(batch):  # withdrawn: their rows are given back on their loop
            withdrawn = [it for it in batch if it.future.done()]
            if inline:
                self._deliver(withdrawn, None, None)
            else:
                for it in withdrawn:
                    self._post(it.loop, [it], None, None)
        if not items:
            return
        model = items[0].model
        results: list[dict[str, np.ndarray]] | None = None
        error: Exception | None = None
        try:
            if len(items) == 1:
                arrays = items[0].arrays
            else:
                arrays = {
                    name: np.concatenate([it.arrays[name] for it in items])
                    for name in items[0].arrays
                }
            rows = sum(it.rows for it in items)
            start = time.perf_counter()
            outputs = model.predict_arrays(arrays)
            elapsed = time.perf_counter() - start
            with contextlib.suppress(TypeError):  # a model that takes no weak reference
                self._call_s.setdefault(model, {})[_bucket(rows)] = elapsed
            if len(items) == 1:
                results = [dict(outputs)]
            else:
                results = []
                offset = 0
                for it in items:
                    end = offset + it.rows
                    results.append({name: out[offset:end] for name, out in outputs.items()})
                    offset = end
        except Exception as exc:
            error = BatchFailedError(
                f"model '{model.name}' version {model.version} failed on a batch of "
                f"{len(items)} request(s): {type(exc).__name__}: {exc}"
            )
        else:
            if self.metrics is not None:
                with contextlib.suppress(Exception):
                    size, requests, latency = self._metric_children(model)
                    size.observe(rows)
                    requests.observe(len(items))
                    latency.observe(elapsed)
        loop = items[0].loop
        if inline:  # on the loop of every item (they came in through it)
            self._deliver(items, results, error)
            return
        if all(it.loop is loop for it in items):
            self._post(loop, items, results, error)
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
        for i, it in enumerate(items):
            by_loop.setdefault(it.loop, []).append(i)
        for other, idx in by_loop.items():
            part = None if results is None else [results[i] for i in idx]
            self._post(other, [items[i] for i in idx], part, error)

    def _post(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[_Item],
        results: list[dict[str, np.ndarray]] | None,
        error: Exception | None,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(self._deliver, items, results, error)

    def _metric_children(self, model: LoadedModel) -> tuple[Any, Any, Any]:
        """Metric children labelled for ``model``, bound once."""
        key = (model.name, str(model.version))
        children = self._children.get(key)
        if children is None:
            assert self.metrics is not None
            children = (
                self.metrics.batch_size.labels(*key),
                self.metrics.batch_requests.labels(*key),
                self.metrics.inference_latency.labels(*key),
            )
            self._children[key] = children
        return children

    # -------------------------------------------------------------- shutdown
    async def close(self) -> None:
        """Finish running batches, fail waiting ones and stop the worker threads."""
        self._closed = True
        self._handover(asyncio.get_running_loop())
        with self._lock:
            self._stopping = True
            waiting = [it for lane in self._lanes.values() for it in lane.items]
            self._lanes.clear()
            self._wakeup.notify_all()
        error = OverloadedError("the server is shutting down")
        for it in waiting:
            if it.loop is asyncio.get_running_loop():
                self._deliver([it], None, error)
            else:
                with contextlib.suppress(RuntimeError):
                    it.loop.call_soon_threadsafe(self._deliver, [it], None, error)
        while any(t.is_alive() for t in self._threads):
            await asyncio.sleep(0.005)
        self._threads.clear()
        await asyncio.sleep(0)  # run the deliveries of the last batches


def _bucket(rows: int) -> int:
    """Rows rounded up to a power of two (the sizes the exported function is called with)."""
    return 1 << max(0, rows - 1).bit_length()
