"""Scaling of ExampleGen + StatisticsGen: in process vs Beam on Dask with 1 and 2 workers.

    .venv/bin/python bench/bench_scale.py [--rows 1000000 2000000 4000000] [--files 8]

For each row count, generates ``--files`` CSV files (13 columns, as
``bench_ingest_stats.py``: 10 numeric, 3 categorical, ~5% missing), then runs
the ingestion behind ExampleGen (``jaxtx.data.ingest``) and the statistics
behind StatisticsGen (``compute_split_statistics``) on each configuration:

* ``in-process``: Beam's ``FnApiRunner`` (the default runner);
* ``dask-1`` / ``dask-2``: ``--runner=dask`` against a ``dask.distributed``
  LocalCluster of 1 or 2 worker processes (1 thread each) on 127.0.0.1.

Prints per configuration and row count: wall seconds, rows/s and peak memory
(the resident memory of this process plus every descendant, workers included,
sampled every 0.1 s), then the least-squares slope of time against rows
(seconds per million rows) and its intercept (fixed cost per run). The input is
split into several files because ExampleGen reads one file in one task.
Each configuration's cluster is started before its runs and not timed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest_stats import generate_csv


class PeakRss:
    """Peak resident memory of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def runner(name: str) -> Iterator[list[str] | None]:
    """Beam options for a configuration; a LocalCluster lives for the block."""
    if name == "in-process":
        yield None
        return
    from dask.distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the scheduler's INFO lines
    workers = int(name.split("-")[1])
    with LocalCluster(
        silence_logs=logging.WARNING,
        processes=True,
        n_workers=workers,
        threads_per_worker=1,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield ["--runner=dask", f"--dask_client_address={cluster.scheduler_address}"]


def run_once(files: list[str], out: Path, options: list[str] | None) -> int:
    """ExampleGen's ingestion then StatisticsGen's statistics; the rows read."""
    from jaxtx.data import ingest
    from jaxtx.validation.statistics import compute_split_statistics

    result = ingest(files, str(out), beam_options=options)
    stats = compute_split_statistics(
        {s: list(f) for s, f in result.split_files.items()}, beam_options=options
    )
    assert sum(s["num_rows"] for s in stats.values()) == result.num_written
    return result.num_read


def measure(fn: Callable[[], int]) -> tuple[float, int, int]:
    """(seconds, rows, peak bytes) of one call."""
    with PeakRss() as mem:
        start = time.perf_counter()
        rows = fn()
        seconds = time.perf_counter() - start
    return seconds, rows, mem.peak


def slope(rows: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares (seconds per million rows, intercept seconds)."""
    if len(rows) < 2:
        return float("nan"), float("nan")
    a, b = np.polyfit(np.asarray(rows, float) / 1e6, np.asarray(seconds, float), 1)
    return float(a), float(b)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000])
    parser.add_argument("--files", type=int, default=8, help="input CSV files per row count")
    parser.add_argument(
        "--configs", nargs="+", default=["in-process", "dask-1", "dask-2"], help="configurations"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="jaxtx-bench-scale-"))
    results: dict[str, list[tuple[int, float, int]]] = {c: [] for c in args.configs}
    try:
        inputs: dict[int, list[str]] = {}
        for n in args.rows:
            folder = work / f"in-{n}"
            folder.mkdir()
            per_file = -(-n // args.files)
            inputs[n] = []
            for i in range(args.files):
                rows = min(per_file, n - i * per_file)
                if rows <= 0:
                    break
                path = folder / f"part-{i:03d}.csv"
                generate_csv(path, rows, seed=i)
                inputs[n].append(str(path))
        print(f"{'config':<11} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'peak MiB':>9}")
        for config in args.configs:
            with runner(config) as options:
                for n in args.rows:
                    out = work / f"out-{config}-{n}"
                    seconds, rows, peak = measure(partial(run_once, inputs[n], out, options))
                    shutil.rmtree(out, ignore_errors=True)
                    results[config].append((rows, seconds, peak))
                    print(
                        f"{config:<11} {rows:>9} {seconds:>8.1f} {rows / seconds:>9.0f} "
                        f"{peak / 2**20:>9.0f}",
                        flush=True,
                    )
        print()
        print(f"{'config':<11} {'s per 1M rows':>13} {'fixed s':>8}")
        for config, runs in results.items():
            a, b = slope([r for r, _, _ in runs], [s for _, s, _ in runs])
            print(f"{config:<11} {a:>13.1f} {b:>8.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
