"""Dynamic batching: coalesce concurrent requests into one model call.

Requests for the same loaded model version (and the same feature shapes)
join an open batch. A batch is due when it holds ``max_batch_size`` rows or
its first request has waited ``max_wait_ms``; due batches run, one call of
the exported function each, on a small pool of worker threads so that the
event loop never blocks on JAX. While every worker is busy, due batches keep
accepting requests until they are full, so batches grow with the load.

A batch that fails fails only the requests in it, each with a
`BatchFailedError` naming the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .metrics import ServingMetrics
from .runtime import LoadedModel

__all__ = ["BatchFailedError", "BatchingConfig", "Batcher", "OverloadedError"]


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
    """

    enabled: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    num_threads: int = 1
    max_queued_rows: int = 100_000

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")


class BatchFailedError(RuntimeError):
    """The model call serving a request (and the others batched with it) failed."""


class OverloadedError(RuntimeError):
    """Too many rows are waiting; the client should retry later (HTTP 503)."""


@dataclass(eq=False)
class _Item:
    arrays: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]


@dataclass(eq=False)
class _Batch:
    key: tuple[object, ...]
    model: LoadedModel
    items: list[_Item] = field(default_factory=list)
    rows: int = 0
    due: bool = False
    timer: asyncio.Handle | None = None


class Batcher:
    """Runs model calls for the server, batching them when enabled.

    Create it inside the running event loop (for instance in the ASGI
    lifespan) and `close` it on shutdown.

    Args:
        config: Batching settings.
        metrics: Metrics to record batch sizes and call latency into.
    """

    def __init__(self, config: BatchingConfig, metrics: ServingMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(
            max_workers=config.num_threads, thread_name_prefix="jaxtx-predict"
        )
        self._open: dict[tuple[object, ...], _Batch] = {}
        self._due: deque[_Batch] = deque()
        self._running = 0
        self._queued_rows = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

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
        if self._closed:
            raise OverloadedError("the server is shutting down")
        rows = int(next(iter(arrays.values())).shape[0])
        loop = asyncio.get_running_loop()
        if self._queued_rows + rows > self.config.max_queued_rows:
            raise OverloadedError(
                f"{self._queued_rows} rows are already waiting; retry later or add replicas"
            )
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        item = _Item(arrays=arrays, rows=rows, future=future)
        self._queued_rows += rows
        try:
            if not self.config.enabled or rows >= self.config.max_batch_size:
                batch = _Batch(key=("alone", id(item)), model=model, items=[item], rows=rows)
                self._make_due(batch)
            else:
                self._add(loop, model, item)
            return await future
        finally:
            self._queued_rows -= rows

    def _add(self, loop: asyncio.AbstractEventLoop, model: LoadedModel, item: _Item) -> None:
        key = (
            id(model),
            tuple(
                (name, arr.dtype.str, arr.shape[1:]) for name, arr in sorted(item.arrays.items())
            ),
        )
        batch = self._open.get(key)
        if batch is not None and batch.rows + item.rows > self.config.max_batch_size:
            self._close(batch)
            batch = None
        if batch is None:
            batch = _Batch(key=key, model=model)
            self._open[key] = batch
            delay = self.config.max_wait_ms / 1000.0
            if delay > 0:
                batch.timer = loop.call_later(delay, self._make_due, batch)
            else:
                batch.timer = loop.call_soon(self._make_due, batch)
        batch.items.append(item)
        batch.rows += item.rows
        if batch.rows >= self.config.max_batch_size:
            self._close(batch)

    def _close(self, batch: _Batch) -> None:
        """Stop a batch from accepting requests and make it due."""
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        self._make_due(batch)

    def _make_due(self, batch: _Batch) -> None:
        if not batch.due:
            batch.due = True
            self._due.append(batch)
        self._start_due()

    def _start_due(self) -> None:
        while self._due and self._running < self.config.num_threads:
            batch = self._due.popleft()
            if self._open.get(batch.key) is batch:
                del self._open[batch.key]
            if batch.timer is not None:
                batch.timer.cancel()
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            items = [it for it in batch.items if not it.future.done()]
            if not items:
                return
            loop = asyncio.get_running_loop()
            model = batch.model
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
                outputs = await loop.run_in_executor(self._executor, model.predict_arrays, arrays)
                elapsed = time.perf_counter() - start
            except Exception as exc:
                error = BatchFailedError(
                    f"model '{model.name}' version {model.version} failed on a batch of "
                    f"{len(items)} request(s): {type(exc).__name__}: {exc}"
                )
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(error)
                return
            if self.metrics is not None:
                labels = (model.name, str(model.version))
                self.metrics.batch_size.labels(*labels).observe(rows)
                self.metrics.batch_requests.labels(*labels).observe(len(items))
                self.metrics.inference_latency.labels(*labels).observe(elapsed)
            offset = 0
            for it in items:
                part = {name: out[offset : offset + it.rows] for name, out in outputs.items()}
                offset += it.rows
                if not it.future.done():
                    it.future.set_result(part)
        finally:
            self._running -= 1
            self._start_due()

    async def close(self) -> None:
        """Finish running batches, fail waiting ones and stop the worker threads."""
        self._closed = True
        for batch in list(self._open.values()):
            self._close(batch)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for batch in self._due:
            for it in batch.items:
                if not it.future.done():
                    it.future.set_exception(OverloadedError("the server is shutting down"))
        self._due.clear()
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
