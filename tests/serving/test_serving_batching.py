"""Batcher: coalescing, same answers as unbatched, failure isolation, off switch."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _serving_server import metric_value

from jaxtx.serving.batching import Batcher, BatchFailedError, BatchingConfig, OverloadedError
from jaxtx.serving.metrics import ServingMetrics
from jaxtx.serving.runtime import LoadedModel


@pytest.fixture(scope="module")
def model(model_cache: Path) -> LoadedModel:
    m = LoadedModel.load(model_cache / "logistic" / "1")
    m.warmup([1, 2, 4, 8, 16])
    return m


def _rows(n: int, offset: int = 0) -> list[dict[str, list]]:
    colors = ["red", "green", "blue", "other"]
    return [
        {"x1": [float(i + offset)], "x2": [0.5 * i], "color": [colors[i % 4]]} for i in range(n)
    ]


async def _run_all(
    batcher: Batcher, model: LoadedModel, rows: list[dict[str, list]]
) -> list[dict[str, np.ndarray]]:
    return await asyncio.gather(*(batcher.predict(model, model.prepare(r)) for r in rows))


def test_concurrent_requests_coalesce_and_match_unbatched(model: LoadedModel) -> None:
    metrics = ServingMetrics()
    rows = _rows(40)

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(BatchingConfig(max_batch_size=16, max_wait_ms=50), metrics)
        try:
            return await _run_all(batcher, model, rows)
        finally:
            await batcher.close()

    results = asyncio.run(main())
    for row, got in zip(rows, results, strict=True):
        want = model.predict(row)
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
        assert got["logits"].shape == (1,)
    text = metrics.render().decode()
    calls = metric_value(text, "jaxtx_serving_batch_size_count")
    assert metric_value(text, "jaxtx_serving_batch_size_sum") == 40
    assert calls <= 4  # 40 rows in batches of at most 16
    assert metric_value(text, "jaxtx_serving_batch_requests_sum") == 40


def test_batching_off_runs_each_request_alone(model: LoadedModel) -> None:
    metrics = ServingMetrics()

    async def main() -> None:
        batcher = Batcher(BatchingConfig(enabled=False), metrics)
        try:
            await _run_all(batcher, model, _rows(10))
        finally:
            await batcher.close()

    asyncio.run(main())
    text = metrics.render().decode()
    assert metric_value(text, "jaxtx_serving_batch_size_count") == 10
    assert metric_value(text, "jaxtx_serving_batch_size_sum") == 10


def test_multi_row_requests_are_split_back(model: LoadedModel) -> None:
    requests = [
        {"x1": [1.0, 2.0, 3.0], "x2": [0.0, 1.0, 2.0], "color": ["red", "blue", "x"]},
        {"x1": [4.0], "x2": [5.0], "color": ["green"]},
        {"x1": [6.0, 7.0], "x2": [8.0, 9.0], "color": ["y", "red"]},
    ]

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(BatchingConfig(max_batch_size=8, max_wait_ms=50))
        try:
            return await asyncio.gather(
                *(batcher.predict(model, model.prepare(r)) for r in requests)
            )
        finally:
            await batcher.close()

    for req, got in zip(requests, asyncio.run(main()), strict=True):
        want = model.predict(req)
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)


class _Flaky:
    """Wraps a model; fails any call whose batch contains x1 == -1."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.name, self.version = "flaky", 1

    def predict_arrays(self, arrays):
        if (arrays["x1"] == -1).any():
            raise RuntimeError("boom")
        return self._model.predict_arrays(arrays)


def test_failing_batch_fails_only_its_requests(model: LoadedModel) -> None:
    flaky = _Flaky(model)
    good = model.prepare({"x1": [1.0], "x2": [1.0], "color": ["red"]})
    bad = model.prepare({"x1": [-1.0], "x2": [1.0], "color": ["red"]})
    wide = model.prepare({"x1": [1.0] * 4, "x2": [1.0] * 4, "color": ["red"] * 4})

    async def main() -> list[object]:
        batcher = Batcher(BatchingConfig(max_batch_size=4, max_wait_ms=20))
        try:
            first = asyncio.gather(
                batcher.predict(flaky, bad),  # type: ignore[arg-type]
                batcher.predict(flaky, good),  # type: ignore[arg-type]
                return_exceptions=True,
            )
            # Four rows fill a batch on their own: it runs alone and succeeds.
            second = batcher.predict(flaky, wide)  # type: ignore[arg-type]
            return [*(await first), await second]
        finally:
            await batcher.close()

    bad_result, good_result, wide_result = asyncio.run(main())
    assert isinstance(bad_result, BatchFailedError)
    assert isinstance(good_result, BatchFailedError)  # same batch as the bad request
    assert "boom" in str(bad_result)
    assert "2 request(s)" in str(bad_result)
    assert isinstance(wide_result, dict)
    assert wide_result["logits"].shape == (4,)


def test_no_wait_default_still_coalesces_concurrent_requests(model: LoadedModel) -> None:
    metrics = ServingMetrics()
    assert BatchingConfig().max_wait_ms == 0

    async def main() -> float:
        batcher = Batcher(BatchingConfig(max_batch_size=16), metrics)
        try:
            await _run_all(batcher, model, _rows(40))
            start = asyncio.get_running_loop().time()
            for row in _rows(5):  # one at a time: nothing to wait for
                await batcher.predict(model, model.prepare(row))
            return asyncio.get_running_loop().time() - start
        finally:
            await batcher.close()

    sequential_seconds = asyncio.run(main())
    text = metrics.render().decode()
    assert metric_value(text, "jaxtx_serving_batch_size_sum") == 45
    assert metric_value(text, "jaxtx_serving_batch_size_count") == 3 + 5
    assert sequential_seconds < 1.0


def _interleaved(
    config: BatchingConfig,
    metrics: ServingMetrics,
    first: LoadedModel,
    first_rows: list[dict[str, Any]],
    second: LoadedModel,
    second_rows: list[dict[str, Any]],
) -> list[dict[str, np.ndarray]]:
    """Send requests for two models alternately through one batcher; results in send order."""

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(config, metrics)
        try:
            calls = []
            for a, b in zip(first_rows, second_rows, strict=True):
                calls.append(batcher.predict(first, first.prepare(a)))
                calls.append(batcher.predict(second, second.prepare(b)))
            return await asyncio.gather(*calls)
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_requests_for_different_models_are_batched_apart(
    model: LoadedModel, model_cache: Path
) -> None:
    vector = LoadedModel.load(model_cache / "vector" / "1")
    metrics = ServingMetrics()
    vec_rows = [{"n": [i], "vec": [[1.0, 2.0, 3.0]], "flag": [i % 2 == 0]} for i in range(6)]
    log_rows = _rows(6)

    results = _interleaved(
        BatchingConfig(max_batch_size=32, max_wait_ms=20),
        metrics,
        vector,
        vec_rows,
        model,
        log_rows,
    )
    for i, (v, lg) in enumerate(zip(vec_rows, log_rows, strict=True)):
        assert set(results[2 * i]) == {"total"}
        np.testing.assert_allclose(results[2 * i]["total"], vector.predict(v)["total"])
        np.testing.assert_allclose(results[2 * i + 1]["logits"], model.predict(lg)["logits"])
    text = metrics.render().decode()
    assert metric_value(text, "jaxtx_serving_batch_size_count", model="vector") == 1
    assert metric_value(text, "jaxtx_serving_batch_size_count", model="logistic") == 1


def test_close_fails_waiting_requests_and_stops_workers(model: LoadedModel) -> None:
    async def main() -> tuple[list[object], float]:
        batcher = Batcher(BatchingConfig(max_batch_size=16, max_wait_ms=60_000))
        waiting = [
            asyncio.ensure_future(batcher.predict(model, model.prepare(r))) for r in _rows(3)
        ]
        await asyncio.sleep(0.05)  # queued, waiting for the batch to fill
        start = asyncio.get_running_loop().time()
        await batcher.close()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        with pytest.raises(OverloadedError):
            await batcher.predict(model, model.prepare(_rows(1)[0]))
        return results, asyncio.get_running_loop().time() - start

    results, seconds = asyncio.run(main())
    assert all(isinstance(r, OverloadedError) for r in results)
    assert seconds < 5


def test_several_worker_threads_and_models(model: LoadedModel, model_cache: Path) -> None:
    vector = LoadedModel.load(model_cache / "vector" / "1")
    metrics = ServingMetrics()
    vec_rows = [{"n": [i], "vec": [[1.0, 2.0, 3.0]], "flag": [i % 2 == 0]} for i in range(50)]
    log_rows = _rows(50)

    results = _interleaved(
        BatchingConfig(max_batch_size=8, num_threads=3), metrics, vector, vec_rows, model, log_rows
    )
    for i, (v, lg) in enumerate(zip(vec_rows, log_rows, strict=True)):
        np.testing.assert_allclose(results[2 * i]["total"], vector.predict(v)["total"])
        np.testing.assert_allclose(results[2 * i + 1]["logits"], model.predict(lg)["logits"])
    text = metrics.render().decode()
    assert metric_value(text, "jaxtx_serving_batch_size_sum", model="vector") == 50
    assert metric_value(text, "jaxtx_serving_batch_size_count", model="logistic") < 50


class _Recording:
    """A model that records which thread ran each call."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.threads: list[str] = []

    def predict_arrays(self, arrays: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return self._model.predict_arrays(arrays)


def _sequential_calls(config: BatchingConfig, model: LoadedModel, sizes: list[int]) -> _Recording:
    recording = _Recording(model)

    async def main() -> None:
        batcher = Batcher(config)
        try:
            for n in sizes:
                arrays = model.prepare({"x1": [1.0] * n, "x2": [2.0] * n, "color": ["red"] * n})
                got = await batcher.predict(recording, arrays)  # type: ignore[arg-type]
                np.testing.assert_allclose(
                    got["logits"], model.predict_arrays(arrays)["logits"], rtol=1e-6
                )
        finally:
            await batcher.close()

    asyncio.run(main())
    return recording


def test_a_fast_model_runs_on_the_loop_once_measured_at_that_size(model: LoadedModel) -> None:
    loop_thread = threading.current_thread().name  # asyncio.run runs the loop here
    calls = _sequential_calls(BatchingConfig(inline_max_ms=1000.0), model, [1] * 20 + [2])
    one_row, two_rows = calls.threads[:20], calls.threads[20]
    assert one_row[0] == "jaxtx-predict-0"  # first call at a size: a worker measures it
    assert one_row[-1] == loop_thread  # then, with the worker idle, on the loop
    assert two_rows == "jaxtx-predict-0"  # a size not measured yet goes to a worker


@pytest.mark.parametrize("inline_max_ms", [0.0, 1e-9])
def test_inline_off_or_a_slow_model_keeps_calls_on_the_workers(
    model: LoadedModel, inline_max_ms: float
) -> None:
    calls = _sequential_calls(BatchingConfig(inline_max_ms=inline_max_ms), model, [1] * 10)
    assert calls.threads == ["jaxtx-predict-0"] * 10


@pytest.mark.parametrize("inline_max_ms", [0.0, 1000.0])
def test_queued_rows_are_given_back_for_answered_withdrawn_and_failed_requests(
    model: LoadedModel, inline_max_ms: float
) -> None:
    async def main() -> list[int]:
        config = BatchingConfig(max_batch_size=8, max_queued_rows=6, inline_max_ms=inline_max_ms)
        batcher = Batcher(config)
        try:
            seen = []
            arrays = [model.prepare(r) for r in _rows(6)]
            futures = [batcher.submit(model, a) for a in arrays]
            seen.append(batcher._queued_rows)  # 6: the limit is reached
            with pytest.raises(OverloadedError):
                batcher.submit(model, arrays[0])
            futures[0].cancel()  # withdrawn before its batch runs
            # a worker posts the withdrawn row's return before the batch's answers
            await asyncio.gather(*futures[1:])
            seen.append(batcher._queued_rows)
            again = await asyncio.gather(*(batcher.predict(model, a) for a in arrays))
            seen.append(batcher._queued_rows)
            assert len(again) == 6
            return seen
        finally:
            await batcher.close()

    assert asyncio.run(main()) == [6, 0, 0]
